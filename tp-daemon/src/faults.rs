//! **TEST HOOKS ONLY**: labelled fault points that make the daemon die (or
//! its token or journal fail) at a chosen moment, so crash safety and
//! recovery can be tested with real processes. Read once when `serve`
//! starts; when set, the daemon logs a loud warning. They are compiled into
//! every build (the binaries under test are the binaries that ship) and do
//! nothing unless the variables are set. Never set them in production.
//!
//! `VTP_TEST_FAULT` — a comma-separated list of:
//! - `after-decrypt[@N]`: abort (`std::process::abort()`: no cleanup, like
//!   `kill -9`) inside the device operation, after the token decrypted the
//!   N-th claim's z and before anything is checked or signed;
//! - `after-sign[@N]`: abort after the N-th affidavit was signed at its
//!   journal position, before it is queued for the journal writer;
//! - `after-commit[@N]`: abort after the N-th batch was committed to the
//!   journal, before any of its claims is answered;
//! - `before-reply[@N]`: abort when the N-th committed claim answer is about
//!   to be handed to its connection;
//! - `fail-commit-every:N`: every N-th journal batch fails instead of
//!   committing (rolled back), as a full disk or I/O error would.
//!
//! `N` defaults to 1 (the first time). `VTP_TEST_DEVICE_FAULT` — a
//! comma-separated list of `error-every:N`, `sign-error-every:N`,
//! `logout-every:N`, `close-sessions-every:N`, `delay-ms:M`; see
//! [`vtp_device::test_faults`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tracing::warn;
use vtp_device::test_faults::TestFaults;

/// Crash points and journal faults.
pub const FAULT_ENV: &str = "VTP_TEST_FAULT";
/// Device faults.
pub const DEVICE_FAULT_ENV: &str = "VTP_TEST_DEVICE_FAULT";

/// A labelled place in the daemon where a test may make it die.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    AfterSign = 0,
    AfterCommit = 1,
    BeforeReply = 2,
}

impl Point {
    pub fn label(self) -> &'static str {
        match self {
            Point::AfterSign => "after-sign",
            Point::AfterCommit => "after-commit",
            Point::BeforeReply => "before-reply",
        }
    }
}

/// The daemon's part of the faults (the device's part goes to the device
/// crate).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Abort at the N-th time a point is reached.
    pub crash: Vec<(Point, u64)>,
    pub fail_commit_every: Option<u64>,
}

static PLAN: OnceLock<Plan> = OnceLock::new();
static HITS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
static BATCHES: AtomicU64 = AtomicU64::new(0);

/// A fault variable that does not parse: the daemon refuses to start (a
/// test that asked for a fault must not run without it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultSpecError {
    #[error("{item}: expected a positive number, got {value:?}")]
    NotACount { item: String, value: String },
    #[error(
        "{FAULT_ENV}: unknown fault {0:?} (known: after-decrypt, after-sign, after-commit, \
         before-reply, each with an optional @N; fail-commit-every:N)"
    )]
    UnknownFault(String),
    #[error(
        "{DEVICE_FAULT_ENV}: unknown fault {0:?} (known: error-every:N, sign-error-every:N, \
         logout-every:N, close-sessions-every:N, delay-ms:M)"
    )]
    UnknownDeviceFault(String),
}

fn count(item: &str, value: Option<&str>) -> Result<u64, FaultSpecError> {
    match value {
        None => Ok(1),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(FaultSpecError::NotACount {
                item: item.to_owned(),
                value: v.to_owned(),
            }),
        },
    }
}

/// Parse the two variables' values.
pub fn parse(fault: &str, device: &str) -> Result<(Plan, TestFaults), FaultSpecError> {
    let mut plan = Plan::default();
    let mut dev = TestFaults::default();
    for item in fault.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(n) = item.strip_prefix("fail-commit-every:") {
            plan.fail_commit_every = Some(count(item, Some(n))?);
            continue;
        }
        let (name, n) = match item.split_once('@') {
            Some((name, n)) => (name, count(item, Some(n))?),
            None => (item, 1),
        };
        match name {
            "after-decrypt" => dev.abort_after_decrypt = Some(n),
            "after-sign" => plan.crash.push((Point::AfterSign, n)),
            "after-commit" => plan.crash.push((Point::AfterCommit, n)),
            "before-reply" => plan.crash.push((Point::BeforeReply, n)),
            other => return Err(FaultSpecError::UnknownFault(other.to_owned())),
        }
    }
    for item in device.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, v) = item.split_once(':').unwrap_or((item, ""));
        // Every device fault needs its number.
        let v = Some(v);
        match name {
            "error-every" => dev.error_every = Some(count(item, v)?),
            "sign-error-every" => dev.sign_error_every = Some(count(item, v)?),
            "logout-every" => dev.logout_every = Some(count(item, v)?),
            "close-sessions-every" => dev.close_sessions_every = Some(count(item, v)?),
            "delay-ms" => dev.delay = Some(Duration::from_millis(count(item, v)?)),
            other => return Err(FaultSpecError::UnknownDeviceFault(other.to_owned())),
        }
    }
    Ok((plan, dev))
}

/// Read `VTP_TEST_FAULT` and `VTP_TEST_DEVICE_FAULT` (once, at start-up),
/// install what they ask for and warn loudly. Returns whether any fault is
/// set; an unparsable value is an error (a test that asked for a fault must
/// not run without it).
pub fn install_from_env() -> Result<bool, FaultSpecError> {
    let fault = std::env::var(FAULT_ENV).unwrap_or_default();
    let device = std::env::var(DEVICE_FAULT_ENV).unwrap_or_default();
    let (plan, dev) = parse(&fault, &device)?;
    let any = plan != Plan::default() || !dev.is_empty();
    if any {
        warn!(
            fault = %fault,
            device_fault = %device,
            "!!! {FAULT_ENV} / {DEVICE_FAULT_ENV} is set: this daemon WILL CRASH OR FAIL ON \
             PURPOSE. This is a TEST HOOK; never set it in production. !!!"
        );
    }
    let _ = PLAN.set(plan);
    vtp_device::test_faults::install(dev);
    Ok(any)
}

/// A labelled fault point: abort the process here if a test asked for it.
pub fn point(p: Point) {
    let Some(plan) = PLAN.get() else {
        return;
    };
    if plan.crash.is_empty() {
        return;
    }
    let n = HITS[p as usize].fetch_add(1, Ordering::SeqCst) + 1;
    if plan.crash.iter().any(|&(q, at)| q == p && at == n) {
        // Straight to stderr: the log pipeline may not flush before abort.
        eprintln!(
            "vtp test fault: {} reached (time {n}); aborting the process",
            p.label()
        );
        std::process::abort();
    }
}

/// Whether the journal batch being written must fail (`fail-commit-every`).
pub fn fail_this_commit() -> bool {
    match PLAN.get().and_then(|p| p.fail_commit_every) {
        Some(n) => (BATCHES.fetch_add(1, Ordering::SeqCst) + 1).checked_rem(n) == Some(0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_counts_and_device_faults() {
        let (plan, dev) = parse(
            "after-sign@3, before-reply,fail-commit-every:2,after-decrypt@2",
            "error-every:5,logout-every:7,close-sessions-every:9,delay-ms:20,sign-error-every:4",
        )
        .unwrap();
        assert_eq!(
            plan.crash,
            vec![(Point::AfterSign, 3), (Point::BeforeReply, 1)]
        );
        assert_eq!(plan.fail_commit_every, Some(2));
        assert_eq!(dev.abort_after_decrypt, Some(2));
        assert_eq!(dev.error_every, Some(5));
        assert_eq!(dev.sign_error_every, Some(4));
        assert_eq!(dev.logout_every, Some(7));
        assert_eq!(dev.close_sessions_every, Some(9));
        assert_eq!(dev.delay, Some(Duration::from_millis(20)));
        assert_eq!(
            parse("", "").unwrap(),
            (Plan::default(), TestFaults::default())
        );
        for (f, d) in [
            ("after-lunch", ""),
            ("after-sign@0", ""),
            ("after-sign@x", ""),
            ("", "error-every:"),
            ("", "melt"),
        ] {
            assert!(parse(f, d).is_err(), "{f:?} {d:?}");
        }
    }
}
