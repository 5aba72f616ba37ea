//! `[limits]`: the server's resource limits (frame size, connection counts
//! and times, per-identity rates, device threads, group commit). Kept apart
//! because [`Limits`] is what the server, the rate limiter and the device
//! pool read, and `init` writes its defaults into new config files.

use std::time::Duration;

use serde::Deserialize;
use vtp_protocol::wire::DEFAULT_MAX_FRAME;

use super::fields::{Source, S};
use super::ConfigError;

/// Smallest accepted `limits.max_frame_bytes`: a claim carries two cards, an
/// envelope with the TP card and z, and a receipt; a few KiB are needed.
pub const MIN_FRAME_BYTES: usize = 8 * 1024;
/// Largest accepted `limits.max_frame_bytes`.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Default `[limits] first_frame_timeout_secs`: ample for a client to send
/// a claim of a few KiB over a slow link, short enough that idle
/// connections opened in bulk free their slots quickly.
pub const DEFAULT_FIRST_FRAME_TIMEOUT_SECS: u64 = 5;
/// The most device threads `[limits] device_threads` may ask for.
pub const MAX_DEVICE_THREADS: usize = 1024;
/// Default `[limits] commit_delay_us`, the most a batch is held open: a
/// little over two RSA-3072 device operations on SoftHSM (the hold itself
/// is two measured operation times; see `service::commit_hold`).
pub const DEFAULT_COMMIT_DELAY_US: u64 = 10_000;
/// The most `[limits] commit_delay_us` may be (it adds to claims' latency
/// under load).
pub const MAX_COMMIT_DELAY_US: u64 = 100_000;

/// Resource limits of the server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request frame; a bigger one closes the connection.
    pub max_frame_bytes: usize,
    /// Connections served at once. When all are taken, a new connection
    /// evicts a waiting one of the address holding the most, or is answered
    /// `Busy` and closed (see [`crate::server`]).
    pub max_connections: usize,
    /// A connection that completes no request frame for this long is closed.
    /// It bounds a whole frame, however slowly its bytes arrive.
    pub idle_timeout_secs: u64,
    /// A new connection whose first request frame is not complete this long
    /// after it was accepted is closed (`idle_timeout_secs` if that is
    /// shorter), so idle connections opened in bulk do not hold slots.
    pub first_frame_timeout_secs: u64,
    /// Connections served at once from one client address (IPv4 address or
    /// IPv6 /64); more are answered `Busy` and closed.
    pub max_connections_per_ip: usize,
    /// A connection is closed after this long, once its current request is
    /// answered (clients reconnect; the `vtp` client uses one connection
    /// per request).
    pub max_connection_secs: u64,
    /// Requests answered per second on average for one identity (the
    /// claimant or requester); 0 turns per-identity limiting off. See
    /// [`crate::rate_limit`].
    pub identity_rate_per_sec: u32,
    /// Requests one identity may make in a burst above that rate.
    pub identity_burst: u32,
    /// Device operations (claims' decryptions and signatures) run at once,
    /// on that many threads; 0 means one per CPU. See
    /// [`crate::service::device_pool`].
    pub device_threads: usize,
    /// Group commit: while claims wait for a device thread, the journal
    /// writer holds a batch open for about two device operations (measured),
    /// at most this long (0: never). See [`crate::service::commit_hold`].
    pub commit_delay_us: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: DEFAULT_MAX_FRAME,
            max_connections: 1024,
            idle_timeout_secs: 30,
            first_frame_timeout_secs: DEFAULT_FIRST_FRAME_TIMEOUT_SECS,
            max_connections_per_ip: 256,
            max_connection_secs: 600,
            identity_rate_per_sec: 10,
            identity_burst: 50,
            device_threads: 0,
            commit_delay_us: DEFAULT_COMMIT_DELAY_US,
        }
    }
}

impl Limits {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    /// How long a new connection may take to send its first request frame.
    pub fn first_frame_timeout(&self) -> Duration {
        Duration::from_secs(self.first_frame_timeout_secs.min(self.idle_timeout_secs))
    }
    pub fn max_connection_time(&self) -> Duration {
        Duration::from_secs(self.max_connection_secs)
    }
    pub fn commit_delay(&self) -> Duration {
        Duration::from_micros(self.commit_delay_us)
    }
    /// The device threads to start: `device_threads`, or one per CPU.
    pub fn device_threads(&self) -> usize {
        match self.device_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

/// `[limits]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_frame_bytes: Option<S<usize>>,
    max_connections: Option<S<usize>>,
    idle_timeout_secs: Option<S<u64>>,
    first_frame_timeout_secs: Option<S<u64>>,
    max_connections_per_ip: Option<S<usize>>,
    max_connection_secs: Option<S<u64>>,
    identity_rate_per_sec: Option<S<u32>>,
    identity_burst: Option<S<u32>>,
    device_threads: Option<S<usize>>,
    commit_delay_us: Option<S<u64>>,
}

impl RawLimits {
    /// Checked in this order, so that of several bad values the same one is
    /// reported as always.
    pub(super) fn validate(self, src: &Source) -> Result<Limits, ConfigError> {
        let l = self;
        let d = Limits::default();
        let max_frame_bytes = src.setting(
            &l.max_frame_bytes,
            d.max_frame_bytes,
            MIN_FRAME_BYTES..=MAX_FRAME_BYTES,
            |v| {
                format!(
                    "[limits] `max_frame_bytes` is {v}; must be between {MIN_FRAME_BYTES} and \
                     {MAX_FRAME_BYTES}"
                )
            },
        )?;
        let max_connections =
            src.setting(&l.max_connections, d.max_connections, 1..=1_000_000, |_| {
                "[limits] `max_connections` must be between 1 and 1000000".into()
            })?;
        let idle_timeout_secs =
            src.setting(&l.idle_timeout_secs, d.idle_timeout_secs, 1..=3600, |_| {
                "[limits] `idle_timeout_secs` must be between 1 and 3600".into()
            })?;
        let first_frame_timeout_secs = src.setting(
            &l.first_frame_timeout_secs,
            d.first_frame_timeout_secs,
            1..=idle_timeout_secs,
            |v| {
                format!(
                    "[limits] `first_frame_timeout_secs` is {v}; must be between 1 and \
                     `idle_timeout_secs` ({idle_timeout_secs})"
                )
            },
        )?;
        let max_connections_per_ip = src.setting(
            &l.max_connections_per_ip,
            d.max_connections_per_ip,
            1..=1_000_000,
            |_| "[limits] `max_connections_per_ip` must be between 1 and 1000000".into(),
        )?;
        let max_connection_secs = src.setting(
            &l.max_connection_secs,
            d.max_connection_secs,
            idle_timeout_secs..=86_400,
            |_| {
                format!(
                    "[limits] `max_connection_secs` must be between `idle_timeout_secs` \
                     ({idle_timeout_secs}) and 86400"
                )
            },
        )?;
        let identity_rate_per_sec = src.setting(
            &l.identity_rate_per_sec,
            d.identity_rate_per_sec,
            ..=1_000_000,
            |_| {
                "[limits] `identity_rate_per_sec` must be at most 1000000 (0: no \
                 per-identity limit)"
                    .into()
            },
        )?;
        let identity_burst =
            src.setting(&l.identity_burst, d.identity_burst, 1..=1_000_000, |_| {
                "[limits] `identity_burst` must be between 1 and 1000000".into()
            })?;
        let commit_delay_us = src.setting(
            &l.commit_delay_us,
            d.commit_delay_us,
            ..=MAX_COMMIT_DELAY_US,
            |v| {
                format!(
                    "[limits] `commit_delay_us` is {v}; must be between 0 (commit every \
                     batch at once) and {MAX_COMMIT_DELAY_US} (microseconds)"
                )
            },
        )?;
        let device_threads = src.setting(
            &l.device_threads,
            d.device_threads,
            ..=MAX_DEVICE_THREADS,
            |v| {
                format!(
                    "[limits] `device_threads` is {v}; must be between 0 (one per CPU) and \
                     {MAX_DEVICE_THREADS}"
                )
            },
        )?;
        Ok(Limits {
            max_frame_bytes,
            max_connections,
            idle_timeout_secs,
            first_frame_timeout_secs,
            max_connections_per_ip,
            max_connection_secs,
            identity_rate_per_sec,
            identity_burst,
            device_threads,
            commit_delay_us,
        })
    }
}
