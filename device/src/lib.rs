//! # vtp-device — the secure-device boundary
//!
//! The only crate that opens the PKCS#11 token holding the trusted party's
//! keys (docs/tokens.md). This is the low-level token layer; the atomic
//! `resolve` operation is built on it.
//!
//! What lives where:
//! - [`config`]: which module, token (by label or serial, never slot id) and
//!   PIN source (file or environment, never argv) to use.
//! - [`error`]: [`DeviceError`] (one-line, operator-readable) and the opaque
//!   [`DoesNotDecrypt`].
//! - [`token`]: [`Token`]: load + `C_Initialize`, find the token, log in on a
//!   long-lived anchor session, pool sessions for operations.
//! - [`keys`]: on-token key generation (RSA-OAEP unwrap keys, P-256 ECDSA
//!   keys), the key policy checks, handle cache, listing, public-key export.
//! - [`ops`]: the primitive operations: OAEP unwrap + AES-GCM decrypt (with
//!   its two-layer result: `DoesNotDecrypt` for bad input, `DeviceError` for
//!   everything else), ECDSA signing, and the encryption-key self-test.
//! - [`trusted_party`]: the TP's operations: `resolve` (in two halves,
//!   `decide` and `sign_decision`, so the daemon can fix the journal position
//!   before the affidavit is signed) and `unclaimed`.
//! - [`test_faults`]: TEST HOOKS ONLY — crash and device faults injected
//!   inside `resolve`, inert unless a program installs them.
//! - [`devtoken`], [`softhsm`], [`kryoptic`]: creating SoftHSM2 or kryoptic
//!   tokens for development and tests only (`VTP_TEST_TOKEN` picks one in
//!   tests; `docs/tokens.md` lists how the two differ).

pub mod config;
pub mod devtoken;
pub mod error;
pub mod keys;
pub mod kryoptic;
pub mod ops;
pub mod softhsm;
pub mod test_faults;
pub mod token;
pub mod trusted_party;

pub use config::{Pin, PinSource, TokenConfig, TokenSelector};
pub use error::{DeviceError, DoesNotDecrypt};
pub use keys::{KeyId, KeyInfo, KeyKind, OaepHash, ParseKeyIdError, RsaPublic};
pub use token::{Token, TokenInfoSummary};
pub use trusted_party::{generate_tp_keys, Decision, TpKeys, TrustedParty};
