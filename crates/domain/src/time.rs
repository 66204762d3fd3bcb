//! Time as integer milliseconds since the Unix epoch: the same column type and the same
//! comparisons on both engines.

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The wall clock, for the edges (handlers and jobs): use cases take `now` as a parameter.
    pub fn now() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self(millis)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_seconds(self, seconds: i64) -> Self {
        Self(self.0.saturating_add(seconds.saturating_mul(1000)))
    }

    /// The hour that holds this instant.
    pub fn hour(self) -> Hour {
        Hour(self.0.div_euclid(3_600_000))
    }
}

i64_newtype! {
    /// An hour, counted from the Unix epoch: the bucket of the sales figures.
    Hour;
}

impl Timestamp {
    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-25T10:30:00.123Z`.
    pub fn to_rfc3339(self) -> String {
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
    }

    /// An RFC 3339 instant (any offset; below a millisecond is cut off), e.g. a product's
    /// `sale_starts_at`. `what` names the field in the `VALIDATION_FAILED` detail.
    pub fn parse_rfc3339(text: &str, what: &str) -> Result<Self, crate::Error> {
        let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|_| crate::Error::validation(format!("{what} must be an RFC 3339 date-time")))?;
        let millis = parsed.unix_timestamp_nanos().div_euclid(1_000_000);
        // Also in range once in UTC (years 0000 to 9999), so that it is answered as sent.
        i64::try_from(millis)
            .ok()
            .filter(|&m| {
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(m) * 1_000_000)
                    .is_ok_and(|t| (0..=9999).contains(&t.year()))
            })
            .map(Self)
            .ok_or_else(|| crate::Error::validation(format!("{what} is out of range")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(1_795_000_000_123).to_rfc3339(), "2026-11-18T11:06:40.123Z");
    }

    #[test]
    fn parses_rfc3339_with_any_offset() {
        let parse = |t| Timestamp::parse_rfc3339(t, "at");
        assert_eq!(parse("2026-11-18T11:06:40.123Z").unwrap(), Timestamp(1_795_000_000_123));
        assert_eq!(
            parse("2026-11-18T20:06:40.123+09:00").unwrap(),
            Timestamp(1_795_000_000_123)
        );
        assert_eq!(parse("1970-01-01T00:00:00Z").unwrap(), Timestamp(0));
        for bad in [
            "",
            "2026-11-18",
            "2026-13-01T00:00:00Z",
            "tomorrow",
            "2026-11-18T11:06:40",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse("9999-12-31T23:59:59-01:00").is_err(), "year 10000 in UTC");
        assert!(parse("0000-01-01T00:00:00+01:00").is_err(), "year -1 in UTC");
        assert!(parse("9999-12-31T23:59:59Z").is_ok());
        let text = Timestamp(1_795_000_000_123).to_rfc3339();
        assert_eq!(parse(&text).unwrap(), Timestamp(1_795_000_000_123));
    }

    #[test]
    fn hour_buckets() {
        assert_eq!(Timestamp(3_599_999).hour(), Hour(0));
        assert_eq!(Timestamp(3_600_000).hour(), Hour(1));
    }
}
