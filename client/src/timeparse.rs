//! Time on the command line: deadlines, durations, the clock, display.
//!
//! The protocol takes `now` and deadlines as Unix seconds and never reads a
//! clock; the client is where "2h from now" and "2026-12-01T12:00:00Z" become
//! those numbers, and where numbers become readable instants again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use vtp_protocol::Timestamp;

const DEADLINE_FORMS: &str = "give a duration from now (e.g. 2h, 30m, 7days, 1h 30m) \
or an RFC 3339 instant (e.g. 2026-12-01T12:00:00Z)";

/// A `--deadline` as the user wrote it; resolved against the clock only when
/// the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineSpec {
    In(Duration),
    At(Timestamp),
}

impl DeadlineSpec {
    pub fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            DeadlineSpec::In(d) => now.saturating_add(d.as_secs()),
            DeadlineSpec::At(t) => t,
        }
    }
}

/// Parse a deadline: a humantime duration from now or an RFC 3339 instant.
pub fn parse_deadline(s: &str) -> Result<DeadlineSpec, String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        if d.as_secs() == 0 {
            return Err(format!("`{s}` is no time at all: {DEADLINE_FORMS}"));
        }
        return Ok(DeadlineSpec::In(d));
    }
    match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => {
            let secs = t.unix_timestamp();
            if secs < 0 {
                return Err(format!("`{s}` is before 1970"));
            }
            Ok(DeadlineSpec::At(secs as Timestamp))
        }
        Err(_) => Err(format!("`{s}` is not a deadline: {DEADLINE_FORMS}")),
    }
}

/// Parse a duration (`--min-time-left`, `--timeout`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("`{s}` is not a duration ({e}): give e.g. 30s, 10m, 2h, 7days or 1h 30m")
    })
}

/// The system clock in Unix seconds.
pub fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A timestamp as RFC 3339 (UTC), or `@<seconds>` if it is out of range.
pub fn format_timestamp(t: Timestamp) -> String {
    i64::try_from(t)
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{t}"))
}

/// A span of seconds, for messages ("90days", "1h 59m 58s"), in units that
/// `--deadline` accepts back (no months: their length is ambiguous).
pub fn format_span(secs: u64) -> String {
    vtp_protocol::error::span(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines() {
        assert_eq!(
            parse_deadline("2h").unwrap(),
            DeadlineSpec::In(Duration::from_secs(7200))
        );
        assert_eq!(
            parse_deadline("7days").unwrap(),
            DeadlineSpec::In(Duration::from_secs(7 * 86400))
        );
        assert_eq!(
            parse_deadline("2026-12-01T12:00:00Z").unwrap(),
            DeadlineSpec::At(1_796_126_400)
        );
        assert_eq!(
            parse_deadline("2026-12-01T14:00:00+02:00").unwrap(),
            DeadlineSpec::At(1_796_126_400)
        );
        let e = parse_deadline("tomorrow").unwrap_err();
        assert!(e.contains("duration") && e.contains("RFC 3339"), "{e}");
        assert!(parse_deadline("0s").is_err());
        assert_eq!(DeadlineSpec::In(Duration::from_secs(60)).resolve(100), 160);
    }

    #[test]
    fn display() {
        assert_eq!(format_timestamp(1_796_126_400), "2026-12-01T12:00:00Z");
        assert_eq!(format_timestamp(u64::MAX), format!("@{}", u64::MAX));
        assert!(parse_duration("10 parsecs").is_err());
        assert_eq!(format_span(90 * 86400), "90days");
        assert_eq!(format_span(86400 + 7199), "1day 1h 59m 59s");
        assert_eq!(format_span(0), "0s");
        for s in [60, 3600 + 1, 90 * 86400 + 5] {
            assert_eq!(parse_duration(&format_span(s)).unwrap().as_secs(), s);
        }
    }
}
