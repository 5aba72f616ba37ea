//! **TEST HOOKS ONLY**: injected faults inside the TP's device operation, to
//! prove crash safety and recovery with real processes and a real token.
//!
//! Nothing here runs unless a program calls [`install`] (the daemon does so
//! only when `VTP_TEST_FAULT` or `VTP_TEST_DEVICE_FAULT` is set, and then
//! logs a loud warning). The hooks are compiled into release builds too, so
//! the binaries under test are exactly the binaries that ship; without
//! [`install`] each hook is one load of an empty `OnceLock`.
//!
//! What can be injected, and where (see [`crate::TrustedParty::decide`] and
//! [`crate::TrustedParty::sign_decision`]):
//! - `abort_after_decrypt`: `std::process::abort()` (no cleanup, like
//!   `kill -9`) the n-th time the token has decrypted a claim's z, before
//!   anything is checked or signed;
//! - `error_every`: every n-th decryption "fails" after the token decrypted
//!   (the plaintext is wiped; the caller gets a [`DeviceError`]);
//! - `sign_error_every`: every n-th affidavit signature fails;
//! - `logout_every`: every n-th decryption is followed by a `C_Logout` of the
//!   whole process (as if another module user logged out), so that this
//!   claim's signature and other threads' operations meet a logged-out token;
//! - `close_sessions_every`: same, with `C_CloseAllSessions` (every session
//!   of the process, the anchor included, becomes invalid);
//! - `delay`: every decryption first sleeps this long (a slow token).
//!
//! Logout and close-all are done while no other operation holds a session,
//! the anchor included (its lock and the token's gate, as for a re-login),
//! because kryoptic deadlocks otherwise; the operations that follow meet the
//! lost login or sessions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::DeviceError;
use crate::token::Token;

/// Which faults to inject (all off by default). `n` values count from 1:
/// `Some(3)` means the 3rd, 6th, 9th... operation (for `abort_after_decrypt`:
/// the 3rd one only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestFaults {
    pub abort_after_decrypt: Option<u64>,
    pub error_every: Option<u64>,
    pub sign_error_every: Option<u64>,
    pub logout_every: Option<u64>,
    pub close_sessions_every: Option<u64>,
    pub delay: Option<Duration>,
}

impl TestFaults {
    pub fn is_empty(&self) -> bool {
        *self == TestFaults::default()
    }
}

static FAULTS: OnceLock<TestFaults> = OnceLock::new();
static DECRYPTS: AtomicU64 = AtomicU64::new(0);
static SIGNS: AtomicU64 = AtomicU64::new(0);

/// Turn the faults on for the rest of the process. Only the first call has
/// an effect; returns whether it was this one.
pub fn install(faults: TestFaults) -> bool {
    if faults.is_empty() {
        return false;
    }
    let installed = FAULTS.set(faults.clone()).is_ok();
    if installed {
        tracing::warn!(
            ?faults,
            "!!! TEST FAULTS INJECTED into the TP's device operation. This is a TEST HOOK; \
             never in production. !!!"
        );
    }
    installed
}

fn every(n: Option<u64>, count: u64) -> bool {
    // (`checked_rem`: no `is_multiple_of` before Rust 1.87.)
    n.and_then(|n| count.checked_rem(n)) == Some(0)
}

fn injected(op: &'static str, what: &str) -> DeviceError {
    DeviceError::Pkcs11 {
        op,
        rv: format!("CKR_DEVICE_ERROR (injected test fault: {what})"),
    }
}

/// Before the token decrypts a claim's z.
pub(crate) fn before_decrypt() {
    if let Some(d) = FAULTS.get().and_then(|f| f.delay) {
        std::thread::sleep(d);
    }
}

/// After the token decrypted a claim's z (successfully or not), before the
/// inside is checked and anything is signed.
pub(crate) fn after_decrypt(token: &Token) -> Result<(), DeviceError> {
    let Some(f) = FAULTS.get() else {
        return Ok(());
    };
    let n = DECRYPTS.fetch_add(1, Ordering::SeqCst) + 1;
    if f.abort_after_decrypt == Some(n) {
        eprintln!("vtp test fault: after-decrypt reached (decryption {n}); aborting the process");
        std::process::abort();
    }
    if every(f.logout_every, n) {
        tracing::warn!(n, "test fault: logging the token out after a decryption");
        token.test_fault_logout()?;
    }
    if every(f.close_sessions_every, n) {
        tracing::warn!(
            n,
            "test fault: closing every session of the token after a decryption"
        );
        token.test_fault_close_all_sessions()?;
    }
    if every(f.error_every, n) {
        tracing::warn!(n, "test fault: failing a decryption");
        return Err(injected("C_Decrypt (AES-GCM)", "error-every"));
    }
    Ok(())
}

/// Before the token signs an affidavit.
pub(crate) fn before_sign() -> Result<(), DeviceError> {
    let Some(f) = FAULTS.get() else {
        return Ok(());
    };
    let n = SIGNS.fetch_add(1, Ordering::SeqCst) + 1;
    if every(f.sign_error_every, n) {
        tracing::warn!(n, "test fault: failing a signature");
        return Err(injected("C_Sign (ECDSA)", "sign-error-every"));
    }
    Ok(())
}
