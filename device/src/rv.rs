//! PKCS#11 return values: what a `cryptoki` error means to the device layer.
//!
//! One place decides which return values mean "the session or login is
//! gone", "this session handle must not be closed" or "this cached object
//! handle is stale", and how a `cryptoki` error becomes a [`DeviceError`].
//! It sits just above [`crate::error`] so that the token, key and operation
//! layers can all ask the same questions without importing one another.

use cryptoki::error::{Error as CkError, RvError};

use crate::error::DeviceError;

/// The return value inside a cryptoki error, if it is one.
pub(crate) fn rv_of(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Return values that mean the session or the login is gone.
pub(crate) fn session_lost(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid | RvError::SessionClosed | RvError::UserNotLoggedIn
    )
}

/// Return values after which a session handle must not be closed.
pub(crate) fn handle_gone(rv: RvError) -> bool {
    matches!(rv, RvError::SessionHandleInvalid | RvError::SessionClosed)
}

/// Return values that mean a cached object handle is no longer valid: find
/// the object again instead of failing.
pub(crate) fn stale_handle(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::ObjectHandleInvalid
            | RvError::KeyHandleInvalid
            | RvError::UnwrappingKeyHandleInvalid
    )
}

/// Short description of a cryptoki error: the return value's name
/// (e.g. `PinIncorrect`) rather than the spec's paragraph-long text.
pub(crate) fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, func) => format!("{func:?}: {rv:?}"),
        other => other.to_string(),
    }
}

impl DeviceError {
    /// Wrap a `cryptoki` error from operation `op`: a lost session or login
    /// becomes [`DeviceError::SessionLost`] (which callers retry after
    /// logging in again), anything else [`DeviceError::Pkcs11`].
    pub(crate) fn pkcs11(op: &'static str, e: CkError) -> Self {
        let rv = describe(&e);
        if rv_of(&e).is_some_and(session_lost) {
            DeviceError::SessionLost { op, rv }
        } else {
            DeviceError::Pkcs11 { op, rv }
        }
    }
}
