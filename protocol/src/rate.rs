//! Rates written the way operators write them: `"100/s"`, `"20000/h"`, `"5/m"`, `"1000/d"`.
//! Used by campaign rate caps and the shaping file, on both sides of the wire.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of events per period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per period (at least 1).
    pub count: u32,
    /// The period.
    pub per: Duration,
}

/// Why a rate string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate {input:?}: {reason} (write e.g. \"100/s\", \"20000/h\", \"5/m\", \"1000/d\")"
)]
pub struct RateError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Rate {
    /// Events per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }

    /// This rate multiplied by `factor` (e.g. a farm share), never below 1 event per period.
    pub fn scaled(&self, factor: f64) -> Rate {
        let scaled = (f64::from(self.count) * factor).floor();
        if scaled >= 1.0 {
            Rate {
                count: scaled.min(f64::from(u32::MAX)) as u32,
                per: self.per,
            }
        } else {
            // Keep one event but stretch the period instead of rounding up to more than allowed.
            let stretch = if factor > 0.0 {
                1.0 / (f64::from(self.count) * factor)
            } else {
                1e6
            };
            Rate {
                count: 1,
                per: self.per.mul_f64(stretch.min(1e6)),
            }
        }
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| RateError {
            input: input.to_owned(),
            reason,
        };
        let (count, unit) = input
            .trim()
            .split_once('/')
            .ok_or_else(|| err("missing '/'"))?;
        let count: u32 = count
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| err("the count is not a whole number"))?;
        if count == 0 {
            return Err(err("the count must be at least 1"));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return Err(err("the unit must be s, m, h or d")),
        };
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            3600 => "h",
            86_400 => "d",
            _ => return write!(f, "{}/{}ms", self.count, self.per.as_millis()),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.count, self.per.as_millis() as u64).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (count, ms) = <(u32, u64)>::deserialize(deserializer)?;
        if count == 0 || ms == 0 {
            return Err(serde::de::Error::custom(
                "rate count and period must be positive",
            ));
        }
        Ok(Rate {
            count,
            per: Duration::from_millis(ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_rates() {
        assert_eq!("100/s".parse::<Rate>().unwrap().per_second(), 100.0);
        assert_eq!("20000/h".parse::<Rate>().unwrap().count, 20000);
        assert_eq!("20_000/h".parse::<Rate>().unwrap().count, 20000);
        assert_eq!(
            " 5 / m ".parse::<Rate>().unwrap().per,
            Duration::from_secs(60)
        );
        for bad in ["", "100", "0/s", "-1/s", "1.5/s", "10/w", "x/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        assert_eq!("100/s".parse::<Rate>().unwrap().to_string(), "100/s");
    }

    #[test]
    fn scaling_never_exceeds_the_share() {
        let r: Rate = "50/s".parse().unwrap();
        assert_eq!(r.scaled(1.0 / 3.0).count, 16);
        let tiny: Rate = "1/s".parse().unwrap();
        let share = tiny.scaled(0.25);
        assert_eq!(share.count, 1);
        assert!((share.per_second() - 0.25).abs() < 1e-9);
    }
}
