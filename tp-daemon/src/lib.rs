//! # vtp-tp-daemon — the trusted party (TP) as a network service
//!
//! The TP is invisible in honest exchanges and acts only when a recipient
//! claims (docs/protocol.md). This crate puts the device crate's atomic
//! `resolve` operation behind a TCP socket and adds what a token cannot give:
//! a durable journal, so every claim is answered exactly once and the same
//! way forever, and the rule that nothing is released before it is recorded
//! (commit before release).
//!
//! What lives where (one concern per module, in the order a request meets
//! them):
//!
//! | module | what lives there |
//! |---|---|
//! | [`config`] | `tp.toml`: parsing, defaults, validation with file/line in errors; one file per section |
//! | [`daemon`] | `serve`: root check, start-up, SIGTERM drain, SIGHUP reload |
//! | [`data_lock`] | one daemon per data directory (`tp-daemon.lock`) |
//! | [`server`] | the front end: TCP accept loop, length-delimited frames, connection table and limits, timeouts, graceful shutdown |
//! | [`rate_limit`] | per-identity token buckets (claimant / requester), checked before and charged after an answer |
//! | [`service`] | the roles: one decoded [`Request`](vtp_protocol::wire::Request) in, one [`Response`](vtp_protocol::wire::Response) out, a file per request kind (`claim`, `unclaimed`, `receipts`) wiring the decision core ([`vtp_protocol::decide`], where the TP's rules live); with [`service::device_pool`] (the device threads) and [`service::single_flight`] (the per-z lock) |
//! | [`journal`] | everything stored, all SQL: resolutions, verdicts, certificates ([`journal::chain`]: the tamper-evident record chain and `journal verify`; [`journal::writer`]: the sequencer and group commit; [`journal::keyring`], [`journal::audit`], [`journal::subscribers`]: the key ring, its audit log, the subscribers) |
//! | [`operator`] | opening the token, key URIs ([`operator::pkcs11_uri`]), the PIN file policy ([`operator::pin_file`]), building the TP, the `keys` and `subscribers` commands, `init` ([`operator::init`]), `check` ([`operator::check`]) |
//! | [`metrics`] | `/healthz` and Prometheus `/metrics` on `metrics_listen` |
//! | [`health`] | the periodic token and journal-writer probe behind `/healthz` |
//! | [`notify`] | systemd readiness (`READY=1`, `STOPPING=1`) over `NOTIFY_SOCKET` |
//! | [`faults`] | TEST HOOKS ONLY: labelled crash points and injected token/journal faults |
//! | [`clock`] | the daemon's clock and its test hook (`VTP_TEST_CLOCK_OFFSET_SECS`) |
//! | [`bench`] | `tp-daemon bench`: what the `vtp-bench` crate needs from this daemon (config, token, key ring, a throwaway config for the measured daemon); the measurement is that crate |
//!
//! A new role (a bank, a log, a catalog) is a sans-IO core in `protocol/`,
//! a file in [`service`], its records in [`journal`] and, where it needs the
//! token, one narrow operation in the device crate (docs/architecture.md).
//!
//! `main.rs` is only the command line: it wires these together.

pub mod bench;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod data_lock;
pub mod faults;
pub mod health;
pub mod journal;
pub mod metrics;
pub mod notify;
pub mod operator;
pub mod rate_limit;
pub mod server;
pub mod service;
