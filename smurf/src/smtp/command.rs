//! Parsing of SMTP commands on the receiving side (RFC 5321 §4.1).
//!
//! Separate from the capture server because the same grammar serves any
//! receiver we write (the future inbound MX role): it turns one untrusted
//! command line into a typed [`Command`] or a [`CommandError`] that maps to a
//! 500/501 reply.

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain`.
    Ehlo(String),
    /// `HELO domain`.
    Helo(String),
    /// `MAIL FROM:<path> [params]`; `path` is empty for the null sender `<>`.
    Mail {
        /// The reverse-path without brackets (source route removed).
        path: String,
        /// ESMTP parameters, e.g. `SIZE=123`.
        params: Vec<Param>,
    },
    /// `RCPT TO:<path> [params]`.
    Rcpt {
        /// The forward-path without brackets (source route removed).
        path: String,
        /// ESMTP parameters.
        params: Vec<Param>,
    },
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy,
    /// `HELP [string]`.
    Help,
    /// A known SMTP verb this receiver does not implement (STARTTLS, AUTH,
    /// BDAT, EXPN, ETRN, ...), upper-cased: answer 502.
    NotImplemented(String),
}

/// One ESMTP `KEYWORD[=VALUE]` parameter of MAIL or RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Upper-cased keyword.
    pub keyword: String,
    /// The value after `=`, if any (case preserved).
    pub value: Option<String>,
}

/// Why a line is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Unknown verb, binary junk or invalid UTF-8: reply 500 5.5.2.
    #[error("command not recognized")]
    Unrecognized,
    /// Known verb with bad arguments: reply 501 5.5.4 with this hint.
    #[error("syntax: {0}")]
    Syntax(&'static str),
}

/// Parses one command line (without its CRLF).
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::Unrecognized)?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(CommandError::Unrecognized);
    }
    let line = line.trim_end();
    let (verb, args) = match line.split_once(' ') {
        Some((v, a)) => (v, a.trim()),
        None => (line, ""),
    };
    if verb.len() > 10 {
        return Err(CommandError::Unrecognized);
    }
    let verb = verb.to_ascii_uppercase();
    let no_args = |cmd: Command, hint| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax(hint))
        }
    };
    match verb.as_str() {
        "EHLO" | "HELO" => {
            let domain = args
                .split_ascii_whitespace()
                .next()
                .ok_or(CommandError::Syntax(if verb == "EHLO" {
                    "EHLO hostname"
                } else {
                    "HELO hostname"
                }))?;
            Ok(if verb == "EHLO" {
                Command::Ehlo(domain.to_owned())
            } else {
                Command::Helo(domain.to_owned())
            })
        }
        "MAIL" => {
            let rest = strip_prefix_ci(args, "FROM:")
                .ok_or(CommandError::Syntax("MAIL FROM:<address>"))?;
            let (path, params) = parse_path(rest, "MAIL FROM:<address>")?;
            Ok(Command::Mail { path, params })
        }
        "RCPT" => {
            let rest =
                strip_prefix_ci(args, "TO:").ok_or(CommandError::Syntax("RCPT TO:<address>"))?;
            let (path, params) = parse_path(rest, "RCPT TO:<address>")?;
            Ok(Command::Rcpt { path, params })
        }
        "DATA" => no_args(Command::Data, "DATA"),
        "RSET" => no_args(Command::Rset, "RSET"),
        "QUIT" => no_args(Command::Quit, "QUIT"),
        "NOOP" => Ok(Command::Noop),
        "VRFY" => Ok(Command::Vrfy),
        "HELP" => Ok(Command::Help),
        "STARTTLS" | "AUTH" | "BDAT" | "EXPN" | "ETRN" | "TURN" | "ATRN" | "XCLIENT"
        | "XFORWARD" | "LHLO" | "SEND" | "SOML" | "SAML" => Ok(Command::NotImplemented(verb)),
        _ => Err(CommandError::Unrecognized),
    }
}

/// Whether a `RCPT TO:` or `MAIL FROM:` line carries a source route
/// (`<@a,@b:user@c>`), which [`parse`] removes: receivers that must never
/// relay refuse such paths.
pub fn has_source_route(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let rest = line[colon + 1..].trim_ascii_start();
    let rest = rest.strip_prefix(b"<").unwrap_or(rest);
    rest.first() == Some(&b'@')
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Parses `<path> params` (tolerating a space after the colon and a missing
/// pair of brackets).
fn parse_path(rest: &str, hint: &'static str) -> Result<(String, Vec<Param>), CommandError> {
    let rest = rest.trim_start();
    let (path, params) = if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>').ok_or(CommandError::Syntax(hint))?;
        (&inner[..end], &inner[end + 1..])
    } else {
        match rest.split_once(' ') {
            Some((p, tail)) => (p, tail),
            None => (rest, ""),
        }
    };
    if path.contains(['<', '>']) || (path.is_empty() && !rest.starts_with('<')) {
        return Err(CommandError::Syntax(hint));
    }
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(CommandError::Syntax(hint));
    }
    // RFC 5321 §4.1.1.3: accept and ignore a source route "@a,@b:user@c".
    let path = match path.split_once(':') {
        Some((_route, mailbox)) if path.starts_with('@') => mailbox,
        _ => path,
    };
    if path.contains(char::is_whitespace) && !path.starts_with('"') {
        return Err(CommandError::Syntax(hint));
    }
    let mut out = Vec::new();
    for word in params.split_ascii_whitespace() {
        let (keyword, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        if keyword.is_empty()
            || !keyword
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || value.is_some_and(str::is_empty)
        {
            return Err(CommandError::Syntax(hint));
        }
        out.push(Param {
            keyword: keyword.to_ascii_uppercase(),
            value: value.map(str::to_owned),
        });
    }
    Ok((path.to_owned(), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: Option<&str>) -> Param {
        Param {
            keyword: k.into(),
            value: v.map(Into::into),
        }
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse(b"EHLO client.example").unwrap(),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(parse(b"helo x").unwrap(), Command::Helo("x".into()));
        assert_eq!(
            parse(b"MAIL FROM:<a@b.c> SIZE=12 BODY=8BITMIME smtputf8").unwrap(),
            Command::Mail {
                path: "a@b.c".into(),
                params: vec![
                    p("SIZE", Some("12")),
                    p("BODY", Some("8BITMIME")),
                    p("SMTPUTF8", None)
                ]
            }
        );
        assert_eq!(
            parse(b"mail from: <>").unwrap(),
            Command::Mail {
                path: String::new(),
                params: vec![]
            }
        );
        assert_eq!(
            parse(b"RCPT TO:<@relay.x,@r2:user@d.e>").unwrap(),
            Command::Rcpt {
                path: "user@d.e".into(),
                params: vec![]
            }
        );
        assert_eq!(
            parse("RCPT TO:<élise@exemple.fr>".as_bytes()).unwrap(),
            Command::Rcpt {
                path: "élise@exemple.fr".into(),
                params: vec![]
            }
        );
        assert_eq!(
            parse(b"RCPT TO:bare@x.y").unwrap(),
            Command::Rcpt {
                path: "bare@x.y".into(),
                params: vec![]
            }
        );
        assert_eq!(parse(b"data").unwrap(), Command::Data);
        assert_eq!(parse(b"QUIT ").unwrap(), Command::Quit);
        assert_eq!(parse(b"NOOP hello").unwrap(), Command::Noop);
        assert_eq!(
            parse(b"STARTTLS").unwrap(),
            Command::NotImplemented("STARTTLS".into())
        );
    }

    #[test]
    fn source_routes_are_seen() {
        assert!(has_source_route(b"RCPT TO:<@a,@b:user@c>"));
        assert!(has_source_route(b"RCPT TO: @a:user@c"));
        assert!(!has_source_route(b"RCPT TO:<user@c>"));
        assert!(!has_source_route(b"RCPT TO:<\"@a:b\"@c>"));
        assert!(!has_source_route(b"QUIT"));
    }

    #[test]
    fn rejects_garbage() {
        for (line, err) in [
            (&b"FOO"[..], CommandError::Unrecognized),
            (b"\x00\x01\x02", CommandError::Unrecognized),
            (b"\xff\xfe", CommandError::Unrecognized),
            (b"", CommandError::Unrecognized),
            (b"EHLO", CommandError::Syntax("EHLO hostname")),
            (
                b"MAIL TO:<a@b>",
                CommandError::Syntax("MAIL FROM:<address>"),
            ),
            (
                b"MAIL FROM:<a@b",
                CommandError::Syntax("MAIL FROM:<address>"),
            ),
            (b"MAIL FROM:", CommandError::Syntax("MAIL FROM:<address>")),
            (
                b"MAIL FROM:<a@b>SIZE=1",
                CommandError::Syntax("MAIL FROM:<address>"),
            ),
            (
                b"MAIL FROM:<a@b> SIZE=",
                CommandError::Syntax("MAIL FROM:<address>"),
            ),
            (b"RCPT TO:<a<b>", CommandError::Syntax("RCPT TO:<address>")),
            (b"DATA now", CommandError::Syntax("DATA")),
            (b"MAIL FROM:<a\rb@c>", CommandError::Unrecognized),
        ] {
            assert_eq!(parse(line), Err(err), "{line:?}");
        }
    }
}
