//! Opening the token, logging in, and lending sessions to operations.
//!
//! PKCS#11 login state belongs to the process and vanishes when its last
//! session closes, so [`Token`] keeps one logged-in **anchor** session for its
//! whole life. Operations borrow other sessions from a small pool; those are
//! logged in through the anchor. A session whose operation failed is closed
//! instead of being returned, so no half-finished operation state (or a
//! session object that failed to be destroyed) is ever reused.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::AtomicU8;
use std::sync::{Mutex, MutexGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::config::{TokenConfig, TokenSelector};
use crate::error::DeviceError;
use crate::keys::{KeyId, OaepHash};

/// Idle sessions kept for reuse; more are closed when returned.
const MAX_IDLE_SESSIONS: usize = 32;

/// What the token says about itself (blank padding removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfoSummary {
    pub label: String,
    pub serial: String,
    pub manufacturer: String,
    pub model: String,
}

/// A private key handle found once and kept (C_FindObjects gets slower with
/// every object on the token).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CachedKey {
    pub(crate) handle: ObjectHandle,
    /// `Some` for encryption keys.
    pub(crate) oaep: Option<OaepHash>,
}

/// An open, logged-in token. `Send + Sync`: share it with `Arc<Token>`.
///
/// Dropping it closes its sessions (and so logs out) but does not call
/// `C_Finalize`: the module stays initialized for the rest of the process.
pub struct Token {
    pkcs11: Pkcs11,
    slot: Slot,
    info: TokenInfoSummary,
    /// The anchor session: keeps the login alive. Also the session used for
    /// key management and lookups, whose lock serializes them (SoftHSM races
    /// when token objects are created concurrently).
    anchor: Mutex<Session>,
    pool: Mutex<Vec<Session>>,
    pub(crate) cache: Mutex<HashMap<KeyId, CachedKey>>,
    /// See `ops::UNKNOWN`: does C_UnwrapKey take CKA_VALUE_LEN?
    pub(crate) value_len_in_template: AtomicU8,
}

// Compile-time guarantee that a Token can be shared between threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Token>();
};

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Lock a mutex, ignoring poisoning: the protected values (sessions, a handle
/// cache) stay consistent even if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The return value inside a cryptoki error, if it is one.
pub(crate) fn rv_of(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

impl Token {
    /// Load the module, find the token by label or serial, open the anchor
    /// session and log in as the user. Does not read or change the
    /// environment (SoftHSM reads `SOFTHSM2_CONF` itself at `C_Initialize`).
    pub fn open(config: &TokenConfig) -> Result<Token, DeviceError> {
        // Read the PIN first: a misconfigured PIN source should not cost a
        // module load, and we never want to hold a session without it.
        let pin = config.pin.read()?;

        let module_err = |reason: String| DeviceError::ModuleLoad {
            path: config.module.clone(),
            reason,
        };
        if !config.module.exists() {
            return Err(module_err("no such file".into()));
        }
        let pkcs11 = Pkcs11::new(&config.module).map_err(|e| module_err(e.to_string()))?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            // Another Token in this process initialized the same module.
            Err(e) if rv_of(&e) == Some(RvError::CryptokiAlreadyInitialized) => {
                tracing::debug!("PKCS#11 module already initialized in this process")
            }
            Err(e) => {
                return Err(module_err(format!(
                    "C_Initialize: {}",
                    crate::error::describe(&e)
                )))
            }
        }

        let (slot, info) = find_slot(&pkcs11, &config.token)?;
        let anchor = pkcs11
            .open_rw_session(slot)
            .map_err(|e| DeviceError::pkcs11("C_OpenSession", e))?;
        let auth = AuthPin::from(pin.expose().to_owned());
        match anchor.login(UserType::User, Some(&auth)) {
            Ok(()) => {}
            // Login state is per process: another Token already logged in.
            // (The PIN is then not re-checked by the token.)
            Err(e) if rv_of(&e) == Some(RvError::UserAlreadyLoggedIn) => {
                tracing::debug!("user already logged in to this token in this process")
            }
            Err(e) if rv_of(&e) == Some(RvError::PinIncorrect) => {
                return Err(DeviceError::WrongPin { token: info.label })
            }
            Err(e) if rv_of(&e) == Some(RvError::PinLocked) => {
                return Err(DeviceError::PinLocked { token: info.label })
            }
            Err(e) => return Err(DeviceError::pkcs11("C_Login", e)),
        }
        tracing::info!(label = %info.label, serial = %info.serial, "token opened and logged in");
        Ok(Token {
            pkcs11,
            slot,
            info,
            anchor: Mutex::new(anchor),
            pool: Mutex::new(Vec::new()),
            cache: Mutex::new(HashMap::new()),
            value_len_in_template: AtomicU8::new(crate::ops::UNKNOWN),
        })
    }

    /// Label, serial, manufacturer and model of the token, as read at open.
    pub fn info(&self) -> TokenInfoSummary {
        self.info.clone()
    }

    /// The anchor session, locked: used for key management and lookups.
    pub(crate) fn management_session(&self) -> MutexGuard<'_, Session> {
        lock(&self.anchor)
    }

    /// Borrow a session from the pool (or open one). Return it with
    /// [`PooledSession::release`] after a successful operation; dropping the
    /// guard without releasing closes the session.
    pub(crate) fn session(&self) -> Result<PooledSession<'_>, DeviceError> {
        let reused = lock(&self.pool).pop();
        let session = match reused {
            Some(s) => s,
            None => self
                .pkcs11
                .open_rw_session(self.slot)
                .map_err(|e| DeviceError::pkcs11("C_OpenSession", e))?,
        };
        Ok(PooledSession {
            token: self,
            session: Some(session),
        })
    }
}

fn find_slot(
    pkcs11: &Pkcs11,
    selector: &TokenSelector,
) -> Result<(Slot, TokenInfoSummary), DeviceError> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| DeviceError::pkcs11("C_GetSlotList", e))?;
    let mut seen = Vec::new();
    let mut matches = Vec::new();
    for slot in slots {
        let ti = match pkcs11.get_token_info(slot) {
            Ok(ti) => ti,
            Err(e) => {
                tracing::debug!(slot = slot.id(), err = %e, "C_GetTokenInfo failed; skipping slot");
                continue;
            }
        };
        let summary = TokenInfoSummary {
            label: ti.label().trim_end_matches([' ', '\0']).to_owned(),
            serial: ti.serial_number().trim_end_matches([' ', '\0']).to_owned(),
            manufacturer: ti
                .manufacturer_id()
                .trim_end_matches([' ', '\0'])
                .to_owned(),
            model: ti.model().trim_end_matches([' ', '\0']).to_owned(),
        };
        if !ti.token_initialized() {
            continue;
        }
        let hit = match selector {
            TokenSelector::Label(l) => summary.label == l.trim_end(),
            TokenSelector::Serial(s) => summary.serial == s.trim_end(),
        };
        seen.push(format!("\"{}\" (serial {})", summary.label, summary.serial));
        if hit {
            matches.push((slot, summary));
        }
    }
    match matches.len() {
        0 => Err(DeviceError::TokenNotFound {
            selector: selector.to_string(),
            available: seen,
        }),
        1 => Ok(matches.pop().expect("one match")),
        count => Err(DeviceError::TokenAmbiguous {
            selector: selector.to_string(),
            count,
        }),
    }
}

/// A session lent by the pool; see [`Token::session`].
pub(crate) struct PooledSession<'t> {
    token: &'t Token,
    session: Option<Session>,
}

impl PooledSession<'_> {
    /// The operation succeeded: give the session back for reuse.
    pub(crate) fn release(mut self) {
        if let Some(s) = self.session.take() {
            let mut pool = lock(&self.token.pool);
            if pool.len() < MAX_IDLE_SESSIONS {
                pool.push(s);
            }
        }
    }
}

impl Deref for PooledSession<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session
            .as_ref()
            .expect("session present until released")
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        if self.session.is_some() {
            tracing::debug!("closing a session after a failed operation");
        }
        // Dropping the cryptoki Session calls C_CloseSession, which also
        // destroys any session objects left in it.
    }
}
