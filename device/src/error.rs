//! Errors of the device layer.
//!
//! Every [`DeviceError`] renders as one line that tells an operator what went
//! wrong and, where there is one, what to check. [`DoesNotDecrypt`] is kept
//! apart on purpose: it is the *only* outcome the decryption path reports for
//! bad input, so callers cannot learn why a ciphertext was refused (no padding
//! or tag oracle).

use std::path::PathBuf;

/// A failure of the token layer that is not "this ciphertext does not decrypt".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The PKCS#11 shared library could not be loaded or initialized.
    #[error("cannot load PKCS#11 module {}: {reason} (check `module` in the config)", path.display())]
    ModuleLoad { path: PathBuf, reason: String },

    /// No token matches the configured label or serial.
    #[error(
        "no token with {selector} (tokens present: {}) (check `token` in the config)",
        list_or_none(available)
    )]
    TokenNotFound {
        selector: String,
        /// `label (serial S)` of every token that was seen.
        available: Vec<String>,
    },

    /// More than one token matches a label; select by serial instead.
    #[error("{count} tokens have {selector}; select the token by serial instead")]
    TokenAmbiguous { selector: String, count: usize },

    /// C_Login refused the user PIN.
    #[error("wrong user PIN for token \"{token}\" (check the PIN file or variable; repeated failures lock the PIN)")]
    WrongPin { token: String },

    /// The token's user PIN is locked after too many failures.
    #[error("the user PIN of token \"{token}\" is locked; the security officer must reset it")]
    PinLocked { token: String },

    /// The PIN could not be read from its configured source.
    #[error("cannot read the token PIN from {from}: {problem}")]
    PinSource { from: String, problem: String },

    /// No key of the wanted kind has this id.
    #[error(
        "no {what} key with id {id_hex} on the token (list the token's keys to see which exist)"
    )]
    KeyNotFound { what: &'static str, id_hex: String },

    /// A key exists but its attributes fail vtp's key policy; it is never used.
    #[error("key {id_hex} fails the key policy and is refused: {problem}")]
    KeyPolicy { id_hex: String, problem: String },

    /// A key could not be used as vtp will use it (see
    /// `Token::self_test_encryption_key`): usually a mechanism or parameter
    /// the token does not support.
    #[error("key {id_hex} failed its self-test on this token: {problem}")]
    SelfTest { id_hex: String, problem: String },

    /// A caller passed a value the device layer does not accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {op} failed: {rv}")]
    Pkcs11 { op: &'static str, rv: String },

    /// The session or the login was lost (the session was closed, the token
    /// logged out or was removed). Operations that see this re-login once
    /// (see `Token`); it reaches a caller only if the retry saw it again.
    #[error("PKCS#11 {op} failed: {rv} (the token session or login was lost)")]
    SessionLost { op: &'static str, rv: String },

    /// The login was lost and logging in again failed.
    #[error("lost the login to token \"{token}\" and could not log in again: {reason}")]
    Relogin { token: String, reason: String },

    /// Creating a development token failed (see `devtoken.rs`).
    #[error("cannot create the development token: {step}: {reason}")]
    DevToken { step: String, reason: String },
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// The ciphertext (wrapped key, nonce, associated data or GCM ciphertext) does
/// not decrypt under the key. Deliberately opaque: bad OAEP padding, a wrong
/// tag, wrong AAD or a wrong key length all produce this same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("does not decrypt")]
pub struct DoesNotDecrypt;
