//! Timestamps are stored as integer milliseconds since the Unix epoch so the same
//! column type works on MySQL and SQLite; they become RFC 3339 only at the edge.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

pub fn rfc3339(millis: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// [`rfc3339`] for many times in a row, formatting each second once: a log
/// writer stamping a batch of lines pays for the date once, then three
/// digits per line.
#[derive(Default)]
pub struct Rfc3339Stamps {
    /// The second last formatted and its text up to the milliseconds
    /// (`2026-01-01T00:00:00.`).
    second: Option<i64>,
    prefix: String,
}

impl Rfc3339Stamps {
    /// Appends `millis` as [`rfc3339`] would write it.
    pub fn push(&mut self, out: &mut String, millis: i64) {
        let (second, ms) = (millis.div_euclid(1000), millis.rem_euclid(1000));
        if self.second != Some(second) {
            let full = rfc3339(second.saturating_mul(1000));
            // `….000Z` (whole seconds) without its `000Z`.
            self.prefix = full.strip_suffix("000Z").unwrap_or(&full).to_owned();
            self.second = Some(second);
        }
        out.push_str(&self.prefix);
        for digit in [ms / 100, ms / 10 % 10, ms % 10] {
            // 0..=9: always a digit.
            out.push(char::from_digit(digit as u32, 10).unwrap_or('0'));
        }
        out.push('Z');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_stamps_read_like_rfc3339() {
        let mut stamps = Rfc3339Stamps::default();
        let mut out = String::new();
        for millis in [
            1_767_225_600_000,
            1_767_225_600_007,
            1_767_225_600_999,
            1_767_225_601_050,
            1_767_225_600_500,
            0,
            -1,
            -1_001,
        ] {
            out.clear();
            stamps.push(&mut out, millis);
            assert_eq!(out, rfc3339(millis), "{millis}");
        }
    }
}
