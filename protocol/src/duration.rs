//! The one way mailfarm reads a duration written by a person (config files, the shaping file,
//! `--start-in`): humantime's grammar, so `250ms`, `30s`, `1.5m`, `2h`, `3d`, `1h 30m` and `0`
//! all mean what they say, and the coordinator and the smurfs agree on every value.

use std::time::Duration;

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {reason} (write e.g. 250ms, 30s, 1.5m, 2h, 3d or 1h30m)")]
pub struct DurationError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses a duration such as `"250ms"`, `"30s"`, `"1.5m"`, `"2h"`, `"3d"`, `"1h30m"` or `"0"`
/// (surrounding spaces are ignored).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text.trim()).map_err(|e| DurationError {
        text: text.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_both_old_parsers_read() {
        for (text, expected) in [
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("2h", Duration::from_secs(7200)),
            ("3d", Duration::from_secs(3 * 86_400)),
            ("250ms", Duration::from_millis(250)),
            ("1.5m", Duration::from_secs(90)),
            ("0", Duration::ZERO),
            (" 10s ", Duration::from_secs(10)),
            ("1h30m", Duration::from_secs(5400)),
            ("0.5d", Duration::from_secs(43_200)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in ["", "10", "s", "ten seconds", "-1s", "5 parsecs"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.to_string().contains("write e.g."), "{err}");
        }
    }
}
