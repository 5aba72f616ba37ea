//! # vtp-testkit — the one kit of vtp's test suites and the bench
//!
//! Every suite that runs real processes (`tp-daemon/tests`, the end-to-end
//! `tests/`, `client/tests`) and `tp-daemon bench` need the same few jobs:
//! find the workspace binaries, make a TP token with `tp-daemon init`, start
//! `tp-daemon serve` and learn its address, talk frames to it, run a command
//! line and judge its output, read the clock. Each job is done here once, in
//! one style; the suites keep only their scenarios (the end-to-end parties
//! and cheaters, the daemon suite's in-process exchanges, the client's
//! host-key stand-in TP).
//!
//! | module | the job | why it is its own module |
//! |---|---|---|
//! | [`bins`] | where `tp-daemon` and `vtp` are: next to the test executable, as cargo builds them | every suite runs the real binaries; one place says "not built: run `cargo build --workspace --bins`" |
//! | [`token`] | a TP data directory (token, keys, `tp.toml`, card, journal) from `tp-daemon init`, made once per test process and copied per test; SoftHSM2, or kryoptic with `VTP_TEST_TOKEN=kryoptic` | `init` is the slow step (key generation on the token); copies keep tests parallel and fast, and TPs alive at the same time still get keys of their own |
//! | [`tp`] | [`TestTp`]: one test's TP — its config, its `tp-daemon` commands, starting its daemon, its journal | what the daemon and end-to-end suites do with a TP, written once |
//! | [`daemon`] | a `serve` process: spawn, read `listening on ADDR` (and `metrics on ADDR`), keep its log, signals, exit, kill on drop, metrics over HTTP | the fallible [`daemon::Serve::spawn`] serves the bench (an operator tool that must not panic); the tests' conveniences panic on top of it |
//! | [`frame`] | frame I/O over `std` sockets: a 4-byte big-endian length and a [`vtp_protocol::wire`] body; [`Conn`] | tests send malformed and half frames on purpose, so they frame by hand, but only here |
//! | [`cli`] | running `vtp` or `tp-daemon` with args, environment, directory and stdin into a [`Run`], and the assertions on it (`ok`, `fails`, `fails_with`, one error line) | every command promises "exit 0, or exit 1 with one `PROGRAM: error:` line"; the suites check that promise the same way |
//!
//! [`now`] is the wall clock in Unix seconds, as the protocol takes it.

pub mod bins;
pub mod cli;
pub mod daemon;
pub mod frame;
pub mod token;
pub mod tp;

pub use bins::{bin, bin_dir, try_bin};
pub use cli::{vtp, vtp_in, Cli, Run};
pub use daemon::{wait_timeout, Daemon, Serve, StartError};
pub use frame::{frame, read_frame, write_frame, Conn};
pub use token::TokenKind;
pub use tp::TestTp;

/// The wall clock in Unix seconds (what the protocol calls `now`).
pub fn now() -> vtp_protocol::Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
