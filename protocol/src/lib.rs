//! # vtp-protocol — the protocols as data and checks (sans-IO)
//!
//! Everything a party, the trusted party (TP) or a judge computes lives here as
//! pure functions over bytes: no files, no sockets, no tokens, no clock, no
//! randomness (callers pass `now` and fresh nonces in). That keeps every rule
//! testable in isolation and lets the device, daemon and client agree by
//! construction.
//!
//! | module | what lives there |
//! |---|---|
//! | [`encoding`] | versioned postcard encoding, file/frame magic, hashes, domain tags |
//! | [`primitives`] | typed keys, signatures and digests that are valid once parsed |
//! | [`identity`] | a party's secret identity and public, self-signed card (A, B) |
//! | [`tp_card`] | the TP's public card: RSA encryption keys, signing key, policy |
//! | [`seal`] | the deterministic, verifiable encryption of the inside of each trustee's z |
//! | [`shares`] | t-of-n sharing of the message key across trustees (Shamir over the P-256 scalar field) |
//! | [`message`] | chunked AEAD for the message body `c_m` (streams, bounded memory) |
//! | [`envelope`] | A1: the signed envelope header, z and its checks by Bob (B1) |
//! | [`receipt`] | B1: Bob's receipt and Alice's check of it |
//! | [`opening`] | A2/B2: the opening of z and its check |
//! | [`contract`] | contract signing over certified mail: preliminary agreement, Alice's contract signature, the executed-contract bundle and its check |
//! | [`claim`] | Bob's claim to the TP and its authentication |
//! | [`decide`] | the TP's decision core: what a trustee does with a claim or an unclaimed request, given its journal and clock |
//! | [`affidavit`] | the TP's signed statements: resolved, invalid envelope, unclaimed |
//! | [`answer`] | the parties' checks of the TP's answers (the client-side mirror of [`decide`]) |
//! | [`evidence`] | the judge: offline verification of delivery evidence |
//! | [`wrap_proof`] | the recipient's proof that a released wrap does not open the message (Chaum–Pedersen over P-256), and his void-evidence file |
//! | [`bank`] | anonymous coins (RFC 9474 blind signatures on coin keys): bank card, withdraw, lock, deposit, refresh, coin states, the money invariant, the judge's view |
//! | [`txlog`] | the transaction log: one COMMIT, ABORT or INVALID per transaction id |
//! | [`wire`] | requests and responses between clients and the TP daemon |
//! | [`error`] | one error enum with context for every check above |
//! | `cache` | memo of card and public-key checks already passed (decoding the same card again is cheap) |
//!
//! Every signature is ECDSA P-256 over `SHA-256(domain tag || 0x00 || body)`
//! (see [`encoding::signing_digest`]); each message kind has its own tag, so
//! no signature can be replayed as another kind of statement.

pub mod affidavit;
pub mod answer;
pub mod bank;
mod cache;
pub mod claim;
pub mod contract;
pub mod decide;
pub mod encoding;
pub mod envelope;
pub mod error;
pub mod evidence;
pub mod identity;
pub mod message;
pub mod opening;
pub mod primitives;
pub mod receipt;
pub mod seal;
pub mod shares;
pub mod tp_card;
pub mod txlog;
pub mod wire;
pub mod wrap_proof;

pub use error::ProtocolError;
pub use primitives::{Digest32, EcPoint, IdentityId, KeyId, Signature, TpId};

/// Seconds since the Unix epoch. The protocol never reads a clock itself.
pub type Timestamp = u64;
