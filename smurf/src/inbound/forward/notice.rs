//! Change-of-address notices: whether a forwarded message may get one (RFC 3834: never answer
//! the null sender nor automatic mail), and the notice itself. Sans-IO: the rules are tested
//! on header bytes.

/// Why no notice goes for a message, decided on the node (the coordinator adds
/// `already-sent` and `no-notice-list`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalSuppression {
    /// The envelope sender is `<>`.
    NullSender,
    /// `Auto-Submitted` with a value other than `no`.
    AutoSubmitted,
    /// `Precedence: bulk`, `list` or `junk`.
    Precedence,
    /// A `List-Id` header: mailing-list traffic.
    ListId,
}

impl LocalSuppression {
    /// The counter name.
    pub fn reason(self) -> &'static str {
        match self {
            LocalSuppression::NullSender => "null-sender",
            LocalSuppression::AutoSubmitted => "auto-submitted",
            LocalSuppression::Precedence => "precedence",
            LocalSuppression::ListId => "list-id",
        }
    }
}

/// The header section of a message (up to the first empty line), unfolded, as
/// (lower-case name, value) pairs. Lines that are not headers are skipped.
pub fn headers(message: &[u8]) -> Vec<(String, String)> {
    let end = find(message, b"\r\n\r\n")
        .map(|i| i + 2)
        .or_else(|| find(message, b"\n\n").map(|i| i + 1))
        .unwrap_or(message.len());
    let text = String::from_utf8_lossy(&message[..end]);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            if !name.is_empty() && !name.contains([' ', '\t']) {
                out.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The first word of a header value, comments and parameters left out, lower case.
fn keyword(value: &str) -> String {
    let mut depth = 0u32;
    let mut clean = String::new();
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    clean
        .split([';', ' ', '\t'])
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Whether a message from `sender` with these headers may get a notice (RFC 3834 §2).
pub fn check(sender: &str, headers: &[(String, String)]) -> Result<(), LocalSuppression> {
    if sender.is_empty() {
        return Err(LocalSuppression::NullSender);
    }
    for (name, value) in headers {
        match name.as_str() {
            "auto-submitted" if keyword(value) != "no" => {
                return Err(LocalSuppression::AutoSubmitted)
            }
            "precedence" if matches!(keyword(value).as_str(), "bulk" | "list" | "junk") => {
                return Err(LocalSuppression::Precedence)
            }
            "list-id" => return Err(LocalSuppression::ListId),
            _ => {}
        }
    }
    Ok(())
}

/// What a notice says.
#[derive(Clone, Debug)]
pub struct Notice<'a> {
    /// Its From (the forward domain's postmaster, or the configured address).
    pub from: &'a str,
    /// The original sender.
    pub to: &'a str,
    /// The moved address.
    pub old: &'a str,
    /// Its new address.
    pub new: &'a str,
    /// The original message's Message-ID, for In-Reply-To.
    pub in_reply_to: Option<&'a str>,
    /// A unique id for the Message-ID's left part.
    pub id: &'a str,
    /// Now, seconds since the Unix epoch.
    pub now_secs: u64,
}

impl Notice<'_> {
    /// The complete message (CRLF line endings).
    pub fn render(&self) -> Vec<u8> {
        let domain = self.from.rsplit_once('@').map_or("localhost", |(_, d)| d);
        let id: String = self
            .id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '.' })
            .collect();
        let mut m = String::with_capacity(1024);
        m.push_str(&format!("From: <{}>\r\n", self.from));
        m.push_str(&format!("To: <{}>\r\n", self.to));
        m.push_str(&format!(
            "Subject: Address change: {} is now {}\r\n",
            self.old, self.new
        ));
        m.push_str(&format!("Date: {}\r\n", rfc5322_date(self.now_secs)));
        m.push_str(&format!("Message-ID: <notice.{id}@{domain}>\r\n"));
        if let Some(original) = self.in_reply_to {
            let original = original.trim();
            if original.starts_with('<') && original.ends_with('>') && original.len() < 500 {
                m.push_str(&format!(
                    "In-Reply-To: {original}\r\nReferences: {original}\r\n"
                ));
            }
        }
        m.push_str("Auto-Submitted: auto-replied\r\n");
        m.push_str("MIME-Version: 1.0\r\n");
        m.push_str("Content-Type: text/plain; charset=utf-8\r\n");
        m.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
        m.push_str(&format!(
            "Hello,\r\n\r\nYou sent a message to {old}.\r\n\
             That address has moved: its mail now goes to\r\n\r\n    {new}\r\n\r\n\
             Your message was forwarded there; nothing was lost.\r\n\
             Please write to {new} from now on, and update your address book.\r\n\r\n\
             You get this notice at most once a day for this address. It was sent\r\n\
             automatically; replies to it are not read.\r\n\r\n-- \r\n{from}\r\n",
            old = self.old,
            new = self.new,
            from = self.from,
        ));
        m.into_bytes()
    }
}

/// An RFC 5322 date in UTC.
pub fn rfc5322_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(text: &str) -> Vec<(String, String)> {
        headers(text.as_bytes())
    }

    #[test]
    fn rfc3834_rules() {
        let plain = h("From: a@b.test\r\nSubject: hi\r\n\r\nAuto-Submitted: auto-generated\r\n");
        assert_eq!(
            check("a@b.test", &plain),
            Ok(()),
            "body lines are not headers"
        );
        assert_eq!(check("", &plain), Err(LocalSuppression::NullSender));
        let no = h("Auto-Submitted: No (a person wrote this)\r\n\r\n");
        assert_eq!(check("a@b.test", &no), Ok(()));
        for (text, why) in [
            (
                "Auto-Submitted: auto-replied\r\n\r\n",
                LocalSuppression::AutoSubmitted,
            ),
            (
                "auto-submitted:\r\n auto-generated; x=y\r\n\r\n",
                LocalSuppression::AutoSubmitted,
            ),
            ("Precedence: BULK\r\n\r\n", LocalSuppression::Precedence),
            ("Precedence: junk\n\n", LocalSuppression::Precedence),
            ("Precedence: list\r\n\r\n", LocalSuppression::Precedence),
            (
                "List-Id: <news.example.test>\r\n\r\n",
                LocalSuppression::ListId,
            ),
        ] {
            assert_eq!(check("a@b.test", &h(text)), Err(why), "{text}");
        }
        let first_class = h("Precedence: first-class\r\n\r\n");
        assert_eq!(check("a@b.test", &first_class), Ok(()));
    }

    #[test]
    fn notice_is_auto_replied_and_names_the_new_address() {
        let notice = Notice {
            from: "postmaster@fwd.test",
            to: "s@sender.test",
            old: "old@x.test",
            new: "new@y.test",
            in_reply_to: Some("<m1@sender.test>"),
            id: "f/1:2",
            now_secs: 0,
        }
        .render();
        let text = String::from_utf8(notice).unwrap();
        assert!(text.contains("\r\nAuto-Submitted: auto-replied\r\n"));
        assert!(text.contains("new@y.test"));
        assert!(text.contains("In-Reply-To: <m1@sender.test>"));
        assert!(text.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000"));
        // A notice is itself auto-submitted: it never gets a notice.
        assert_eq!(
            check("postmaster@fwd.test", &headers(text.as_bytes())),
            Err(LocalSuppression::AutoSubmitted)
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }
}
