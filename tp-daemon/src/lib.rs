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
//! | [`pkcs11_uri`] | RFC 7512 PKCS#11 URIs naming keys in the config and in output |
//! | [`daemon`] | `serve`: root check, start-up, SIGTERM drain, SIGHUP reload |
//! | [`metrics`] | `/healthz` and Prometheus `/metrics` on `metrics_listen` |
//! | [`server`] | TCP accept loop, length-delimited frames, connection limits, idle timeouts, graceful shutdown |
//! | [`rate_limit`] | per-identity token buckets (claimant / requester), checked before and charged after an answer |
//! | [`service`] | one decoded [`Request`](vtp_protocol::wire::Request) in, one [`Response`](vtp_protocol::wire::Response) out: locks, pools, journal and metrics around the decision core ([`vtp_protocol::decide`], where the TP's rules live) |
//! | [`device_pool`] | the fixed set of threads (one per CPU by default) on which claims use the journal and the token, in arrival order |
//! | [`single_flight`] | the per-z lock that makes concurrent identical claims wait for one resolution |
//! | [`journal`] | embedded SQLite: resolutions, invalid-envelope verdicts, unclaimed certificates, committed durably before any answer |
//! | [`chain`] | the journal as a tamper-evident hash chain: record format, hashes, `journal verify` |
//! | [`writer`] | the sequencer (chain positions, in order) and the single journal writer (group commit) |
//! | [`faults`] | TEST HOOKS ONLY: labelled crash points and injected token/journal faults |
//! | [`keyring`] | in the journal: the encryption key ring, the audit log, the subscribers |
//! | [`operator`] | opening the token, resolving key URIs, building the TP, the `keys` and `subscribers` commands |
//! | [`clock`] | the daemon's clock and its test hook (`VTP_TEST_CLOCK_OFFSET_SECS`) |
//! | [`bench`] | `tp-daemon bench`: device, optimistic path, claims through a real daemon, memory; JSON lines + a table |
//! | [`init`] | `tp-daemon init --softhsm`: a development token, keys, a commented `tp.toml` |
//!
//! `main.rs` is only the command line: it wires these together.

pub mod bench;
pub mod chain;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod device_pool;
pub mod faults;
pub mod init;
pub mod journal;
pub mod keyring;
pub mod metrics;
pub mod operator;
pub mod pkcs11_uri;
pub mod rate_limit;
pub mod server;
pub mod service;
pub mod single_flight;
pub mod writer;
