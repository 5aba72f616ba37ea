//! The daemon's clock. Deadlines are judged on the TP's clock (docs/protocol.md, "Fairness"),
//! so every `now` the service uses comes from here.
//!
//! **Test hook:** if `VTP_TEST_CLOCK_OFFSET_SECS` is set when the daemon
//! starts, its clock is shifted by that many seconds (may be negative). The
//! end-to-end tests use it to exercise deadlines without sleeping. It lets
//! whoever controls the daemon's environment move deadlines, so the daemon
//! logs a loud warning when it is set; never set it in production.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vtp_protocol::Timestamp;

/// Name of the test-hook environment variable.
pub const OFFSET_ENV: &str = "VTP_TEST_CLOCK_OFFSET_SECS";

/// The test hook is set but unusable (the daemon then refuses to start:
/// silently ignoring it would run tests against the wrong clock).
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("{OFFSET_ENV} is not valid Unicode")]
    NotUnicode,
    #[error("{OFFSET_ENV}={value:?} is not a number of seconds: {source}")]
    NotSeconds {
        value: String,
        source: std::num::ParseIntError,
    },
}

/// System time plus a fixed offset (zero unless the test hook is set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    offset_secs: i64,
}

impl Clock {
    /// The real system clock.
    pub fn system() -> Clock {
        Clock { offset_secs: 0 }
    }

    /// A clock shifted by `offset_secs` (tests).
    pub fn with_offset(offset_secs: i64) -> Clock {
        Clock { offset_secs }
    }

    /// Read the test hook from the environment. `Err` if it is set but not an
    /// integer.
    pub fn from_env() -> Result<Clock, ClockError> {
        match std::env::var(OFFSET_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(Clock::system()),
            Err(std::env::VarError::NotUnicode(_)) => Err(ClockError::NotUnicode),
            Ok(v) => match v.trim().parse::<i64>() {
                Ok(n) => Ok(Clock::with_offset(n)),
                Err(source) => Err(ClockError::NotSeconds { value: v, source }),
            },
        }
    }

    pub fn offset_secs(&self) -> i64 {
        self.offset_secs
    }

    /// Seconds since the Unix epoch on the TP's clock.
    pub fn now(&self) -> Timestamp {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        real.saturating_add_signed(self.offset_secs)
    }
}

/// A timestamp as RFC 3339 UTC, for messages to people.
pub fn rfc3339(t: Timestamp) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_shifts_now() {
        let a = Clock::system().now();
        let b = Clock::with_offset(3600).now();
        let c = Clock::with_offset(-3600).now();
        assert!(b >= a + 3600 && b <= a + 3602);
        assert!(c + 3600 >= a && c + 3598 <= a);
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
    }
}
