//! # vtp-device — the secure-device boundary
//!
//! The only crate that opens the PKCS#11 token holding the trusted party's
//! keys (docs/tokens.md), and the only one that links `cryptoki`. This is the
//! low-level token layer; the atomic `resolve` operation is built on it.
//!
//! The modules form layers: each imports only modules of the layers above it
//! in this list, never one of its own layer or a later one, so the crate's
//! import graph has no cycle. [`Token`] is one type whose methods are written
//! in three layers (`token`, `keys`, `ops`); each later layer adds methods
//! and calls the earlier ones, never the reverse.
//!
//! 1. Plain values, no other module of the crate:
//!    - [`error`]: [`DeviceError`] (one-line, operator-readable) and the
//!      opaque [`DoesNotDecrypt`].
//!    - [`oaep`]: [`OaepHash`] and the PKCS#11 mechanism parameters it picks.
//!    - [`KeyId`] is not defined here: it is `vtp_protocol::KeyId`, the id
//!      cards, envelopes and the journal carry, so no layer converts ids.
//! 2. Mapping and configuration, on top of `error`:
//!    - `rv` (crate-private): what a PKCS#11 return value means (session
//!      lost, session handle gone, stale object handle) and how a `cryptoki`
//!      error becomes a [`DeviceError`] (`DeviceError::pkcs11`). The token,
//!      key and operation layers share it instead of importing each other.
//!    - [`config`]: which module, token (by label or serial, never slot id)
//!      and PIN source (file or environment, never argv) to use.
//! 3. [`token`]: [`Token`]: load + `C_Initialize`, find the token, log in on
//!    a long-lived anchor session, pool sessions for operations, recover a
//!    lost login; the private-key handle cache.
//! 4. [`keys`]: on-token key generation (RSA-OAEP unwrap keys, P-256 ECDSA
//!    keys), the key policy checks, key lookup, listing, public-key export.
//! 5. [`ops`]: the primitive operations: OAEP unwrap + AES-GCM decrypt (with
//!    its two-layer result: `DoesNotDecrypt` for bad input, `DeviceError` for
//!    everything else), ECDSA signing, and the encryption-key self-test.
//!    [`blind`]: a bank's raw RSA signature on a blinded coin
//!    (`C_Sign(CKM_RSA_X_509)` on a brand key), with its input and fault
//!    checks, and the entry point for the bank's issuances.
//! 6. [`test_faults`]: TEST HOOKS ONLY — crash and device faults injected
//!    inside `resolve`, inert unless a program installs them.
//! 7. [`trusted_party`]: the TP's operations: `resolve` (in two halves,
//!    `decide` and `sign_decision`, so the daemon can fix the journal
//!    position before the affidavit is signed) and `unclaimed`.
//!
//! Apart, for development and tests only (`VTP_TEST_TOKEN` picks the kind in
//! tests; `docs/tokens.md` lists how the two differ), using `config`,
//! `error` and `oaep` only:
//! - `devbase` (crate-private, its types re-exported by [`devtoken`]): the
//!   [`devtoken::DevTokenKind`] and [`devtoken::DevToken`] types and the
//!   directory and PIN-file helpers both backends share;
//! - [`softhsm`], [`kryoptic`]: creating a SoftHSM2 or kryoptic token;
//! - [`devtoken`]: the public face that picks the backend for a kind.

pub mod blind;
pub mod config;
mod devbase;
pub mod devtoken;
pub mod error;
pub mod keys;
pub mod kryoptic;
pub mod oaep;
pub mod ops;
mod rv;
pub mod softhsm;
pub mod test_faults;
pub mod token;
pub mod trusted_party;

pub use blind::{BlindSignError, BrandPublic, Day};
pub use config::{Pin, PinSource, TokenConfig, TokenSelector};
pub use error::{DeviceError, DoesNotDecrypt};
pub use keys::{BrandKeyInfo, KeyInfo, KeyKind, RsaPublic};
pub use oaep::OaepHash;
pub use token::{Token, TokenInfoSummary};
pub use trusted_party::{generate_tp_keys, Decision, TpKeys, TrustedParty};
/// The key id is the protocol's own type: the `CKA_ID` the token stores is
/// the id cards, envelopes and the journal carry, with no conversion.
pub use vtp_protocol::KeyId;
