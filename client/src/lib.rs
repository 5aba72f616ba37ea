//! # vtp-client — the `vtp` command and its library
//!
//! Everything a user of vtp does (Alice sending, Bob accepting and opening or
//! claiming, a judge weighing evidence) is a short function over files and, on
//! the TP path only, one TCP round trip. The protocol itself (what is signed,
//! what is checked) lives in `vtp_protocol`; this crate adds what the
//! protocol crate deliberately leaves out: files, streams, clocks, randomness
//! and sockets.
//!
//! | module | what lives there |
//! |---|---|
//! | [`armor`] | ASCII armor (`--armor`): `-----BEGIN VTP ENVELOPE-----`, streaming for envelopes |
//! | [`files`] | reading every file kind with errors that name the path; atomic, no-clobber writes; `0600` secret identities |
//! | [`timeparse`] | `--deadline` / duration parsing (humantime or RFC 3339), the system clock, timestamp display |
//! | [`stream`] | bounded-memory message encryption (two passes for `send`) and envelope-file reading / decryption |
//! | [`tp_client`] | the blocking, length-framed TCP client that talks to the TP daemon |
//! | [`cli`] | the clap definitions of every command and flag (the help text lives there) |
//! | [`error`] | the classes of failure, their exit statuses and JSON names |
//! | [`report`] | where output goes: the report, notes, warnings, `--json` objects |
//! | [`commands`] | one function per command, gluing the modules above to `vtp_protocol` |
//!
//! The binary (`src/main.rs`) only parses the command line, runs it, and turns
//! an error into the single line `vtp: error: …` with its class's exit
//! status ([`error::ErrorClass`]).

pub mod armor;
pub mod cli;
pub mod commands;
pub mod error;
pub mod files;
pub mod report;
pub mod stream;
pub mod timeparse;
pub mod tp_client;
