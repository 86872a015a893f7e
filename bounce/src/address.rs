//! Finding and cleaning e-mail addresses in the free text of bounces, where they come wrapped in
//! `<>`, quotes, `rfc822;` prefixes and trailing punctuation.

/// Bytes that may appear in an unquoted address (local part or domain) as bounces write them.
fn is_addr_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'.' | b'_'
                | b'-'
                | b'+'
                | b'='
                | b'%'
                | b'!'
                | b'#'
                | b'$'
                | b'&'
                | b'\''
                | b'*'
                | b'/'
                | b'?'
                | b'^'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
        )
}

/// Cleans one address: strips `rfc822;`, angle brackets, quotes around the whole, a trailing
/// dot or colon. Returns `None` unless it looks like `local@domain`.
pub(crate) fn clean(text: &str) -> Option<String> {
    let mut s = text.trim();
    if let Some((kind, rest)) = s.split_once(';') {
        if !kind.contains('@') {
            s = rest.trim();
        }
    }
    if let Some(start) = s.find('<') {
        if let Some(len) = s[start + 1..].find('>') {
            s = &s[start + 1..start + 1 + len];
        }
    }
    let s = s
        .trim()
        .trim_matches(|c| matches!(c, '<' | '>' | '(' | ')' | '[' | ']' | ',' | ';' | ':'))
        .trim_end_matches('.')
        .trim_start_matches("mailto:");
    let (local, domain) = s.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || local.len() > 256 || domain.len() > 255 {
        return None;
    }
    let local_ok = (local.starts_with('"') && local.ends_with('"') && local.len() >= 2)
        || local.bytes().all(is_addr_byte);
    let domain_ok = domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':'))
        && !domain.starts_with('.')
        && domain.bytes().any(|b| b.is_ascii_alphabetic() || b == b'[');
    if !(local_ok && domain_ok) {
        return None;
    }
    Some(format!("{local}@{domain}"))
}

/// Every address in a line of free text, in order (unquoted local parts only, plus quoted ones
/// inside `<>`).
pub(crate) fn find_all(line: &str) -> Vec<String> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|&b| b == b'@') {
        let at = i + off;
        let mut start = at;
        if at > 0 && bytes[at - 1] == b'"' {
            // Quoted local part: back to the opening quote.
            if let Some(q) = bytes[..at - 1].iter().rposition(|&b| b == b'"') {
                start = q;
            }
        } else {
            while start > 0 && is_addr_byte(bytes[start - 1]) {
                start -= 1;
            }
        }
        let mut end = at + 1;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'.' | b'-' | b'_'))
        {
            end += 1;
        }
        if start < at && end > at + 1 {
            if let Some(addr) = line.get(start..end).and_then(clean) {
                out.push(addr);
            }
        }
        i = end.max(at + 1);
    }
    out
}

/// True for addresses of mail systems rather than people (`MAILER-DAEMON@`, `postmaster@`).
pub(crate) fn is_system(addr: &str) -> bool {
    let local = addr
        .split('@')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    matches!(
        local.as_str(),
        "mailer-daemon" | "postmaster" | "mail-daemon" | "mailerdaemon" | "mdaemon" | "root"
    ) || local.starts_with("mailer-daemon")
}

/// Compares two addresses, the domain without regard to case and the local part exactly, as
/// RFC 5321 wants (in practice local parts are case-insensitive too; this errs to "same").
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_addresses_in_bounce_text() {
        assert_eq!(
            find_all("550 5.1.1 <kijitora@example.jp>... User Unknown"),
            vec!["kijitora@example.jp"]
        );
        assert_eq!(
            find_all("RCPT TO:<a@b.example>: host mx [1.2.3.4]"),
            vec!["a@b.example"]
        );
        assert_eq!(find_all("foo@ bar @baz"), Vec::<String>::new());
        assert_eq!(
            clean("rfc822; <Neko@Example.ORG>").as_deref(),
            Some("Neko@Example.ORG")
        );
        assert_eq!(clean("rfc822;"), None);
        assert!(is_system("MAILER-DAEMON@example.org"));
    }
}
