//! The units the command line speaks, and its small typed choices: rates (`2/s`, `150/min`) and
//! durations (`15m`, `250ms`), parsed the same way for `run` and `mock`; and the switches that
//! `config` sets and the output phases read ([`Existing`] for `--replace`, [`ProgressMode`] for
//! `--no-progress`), kept here in the core so that `config` need not import `output`.

use std::num::NonZeroU32;
use std::time::Duration;

/// A request rate: `count` requests every `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl Rate {
    pub fn per_second(count: NonZeroU32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(1),
        }
    }

    /// The spacing between two requests at this rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count.get()
    }

    /// Requests per second, for display and arithmetic.
    pub fn per_second_f64(&self) -> f64 {
        f64::from(self.count.get()) / self.per.as_secs_f64()
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.per.as_secs() {
            60 => write!(f, "{}/min", self.count),
            3600 => write!(f, "{}/h", self.count),
            _ => write!(f, "{}/s", self.count),
        }
    }
}

/// Whether a file to write that already exists (and is no run's record) may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// The default: an existing file is refused, naming `--replace`.
    #[default]
    Refuse,
    /// `--replace`: an existing file that is no run's record is replaced.
    Replace,
}

/// Whether to draw the progress bar (`--no-progress` turns it off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// On a terminal only.
    Auto,
    Off,
}

/// Parses `N/s`, `N/sec`, `N/min`, `N/h` or a bare `N` (per second).
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let text = text.trim();
    let (count, unit) = match text.split_once('/') {
        Some((count, unit)) => (count.trim(), unit.trim()),
        None => (text, "s"),
    };
    let per = match unit.to_ascii_lowercase().as_str() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => {
            return Err(format!(
                "unknown rate unit {other:?}: write the rate as N/s or N/min, e.g. 2/s"
            ));
        }
    };
    let count: u32 = count
        .parse()
        .map_err(|_| format!("{text:?} is not a rate: write N/s or N/min, e.g. 2/s or 150/min"))?;
    let count = NonZeroU32::new(count).ok_or_else(|| "the rate must be above zero".to_owned())?;
    Ok(Rate { count, per })
}

/// Parses a human duration such as `60s`, `15m`, `250ms` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 60s, 15m or 250ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_per_second_and_minute() {
        assert_eq!(
            parse_rate("2/s").unwrap().interval(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_rate("150/min").unwrap().interval(),
            Duration::from_millis(400)
        );
        assert_eq!(parse_rate("10").unwrap().per_second_f64(), 10.0);
        assert_eq!(parse_rate(" 3 / MIN ").unwrap().to_string(), "3/min");
    }

    #[test]
    fn refuses_zero_garbage_and_unknown_units() {
        assert!(parse_rate("0/s").unwrap_err().contains("above zero"));
        assert!(parse_rate("fast").is_err());
        assert!(
            parse_rate("5/day")
                .unwrap_err()
                .contains("unknown rate unit")
        );
        assert!(parse_rate("-1/s").is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }
}
