//! Opening the token, logging in, and lending sessions to operations.
//!
//! PKCS#11 login state belongs to the process and vanishes when its last
//! session closes, so [`Token`] keeps one logged-in **anchor** session for its
//! whole life. Operations borrow other sessions from a small pool; those are
//! logged in through the anchor. A session whose operation failed is closed
//! instead of being returned, so no half-finished operation state (or a
//! session object that failed to be destroyed) is ever reused; one whose
//! handle the token no longer knows (`CKR_SESSION_HANDLE_INVALID`,
//! `CKR_SESSION_CLOSED`) is forgotten without `C_CloseSession`, because
//! tokens reuse handle numbers and the close could hit a newer session.
//!
//! The anchor, which is never closed while it works, obeys the same rule
//! for searches: one that failed may have left its search active on the
//! session (SoftHSM 2.6 does when logged out during `C_FindObjectsInit`), so
//! the anchor is replaced by a fresh session ([`ManagementSession::find_objects`]).
//!
//! Lost login: if the anchor session dies or the user is logged out (another
//! module user called `C_Logout` or `C_CloseAllSessions`, the token was
//! reset), an operation that fails with a session or login error (or finds no
//! key) calls [`Token::recover_login`], which checks the anchor, opens a new
//! one if needed and logs in again with the PIN re-read from its source, then
//! retries once. If that fails the caller gets [`DeviceError::Relogin`].

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use vtp_protocol::KeyId;

use crate::config::{Pin, PinSource, TokenConfig, TokenSelector};
use crate::error::DeviceError;
use crate::oaep::OaepHash;
use crate::rv::{describe, handle_gone, rv_of};

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

/// Token-specific behaviour the device layer must know about (measured; see
/// `docs/tokens.md`). Chosen from the token's manufacturer at open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Quirks {
    /// `C_UnwrapKey` reports bad OAEP padding (and a wrapped key of the wrong
    /// length) as `CKR_DEVICE_ERROR`: kryoptic 1.5 maps every OpenSSL failure
    /// to it. Elsewhere that value stays a device error.
    pub(crate) unwrap_device_error_is_bad_input: bool,
}

impl Quirks {
    fn for_token(info: &TokenInfoSummary) -> Quirks {
        match info.manufacturer.as_str() {
            "Kryoptic Project" => Quirks {
                unwrap_device_error_is_bad_input: true,
            },
            _ => Quirks::default(),
        }
    }
}

/// A private key handle found once and kept (C_FindObjects gets slower with
/// every object on the token).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CachedKey {
    pub(crate) handle: ObjectHandle,
    /// `Some` for encryption keys.
    pub(crate) oaep: Option<OaepHash>,
    /// A bank's brand key (raw RSA signing, `crate::blind`).
    pub(crate) brand: bool,
}

/// An open, logged-in token. `Send + Sync`: share it with `Arc<Token>`.
///
/// Dropping it closes its sessions (and so logs out) but does not call
/// `C_Finalize`: the module stays initialized for the rest of the process.
pub struct Token {
    pkcs11: Pkcs11,
    /// The module's path (test faults reach C_CloseAllSessions through it).
    module: std::path::PathBuf,
    slot: Slot,
    info: TokenInfoSummary,
    /// The anchor session: keeps the login alive. Also the session used for
    /// key management and lookups, whose lock serializes them (SoftHSM races
    /// when token objects are created concurrently).
    anchor: Mutex<Session>,
    pool: Mutex<Vec<Session>>,
    pub(crate) cache: Mutex<HashMap<KeyId, CachedKey>>,
    pub(crate) quirks: Quirks,
    /// Where the PIN came from: re-read to log in again (the PIN itself is
    /// not kept in memory).
    pin: PinSource,
    /// Set once an operation found OAEP-SHA-256 usable or not (see
    /// `Token::preferred_oaep_hash`): 0 unknown, 1 SHA-1, 2 SHA-256.
    pub(crate) preferred_oaep: AtomicU8,
    /// Held shared by every lent session, exclusively by
    /// [`Token::recover_login`] around `C_Login`: kryoptic 1.5's `C_Login`
    /// (and `C_Logout`) lock the token, then every session, while an
    /// operation holds its session and waits for the token, so a login
    /// during an operation deadlocks the process (seen in tests). Taken
    /// exclusively only with the anchor's lock held (which keeps lookups
    /// out too), never the other way round.
    gate: RwLock<()>,
    /// Counts successful [`Token::recover_login`]s, so that an operation that
    /// failed while another thread restored the login retries too.
    login_epoch: AtomicU64,
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

/// Log in as the user on `session`; already logged in (login state is per
/// process) counts as success.
fn login(session: &Session, pin: &Pin, label: &str) -> Result<(), DeviceError> {
    let auth = AuthPin::from(pin.expose().to_owned());
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) => Ok(()),
        // Login state is per process: another Token already logged in.
        // (The PIN is then not re-checked by the token.)
        Err(e) if rv_of(&e) == Some(RvError::UserAlreadyLoggedIn) => {
            tracing::debug!("user already logged in to this token in this process");
            Ok(())
        }
        Err(e) if rv_of(&e) == Some(RvError::PinIncorrect) => Err(DeviceError::WrongPin {
            token: label.to_owned(),
        }),
        Err(e) if rv_of(&e) == Some(RvError::PinLocked) => Err(DeviceError::PinLocked {
            token: label.to_owned(),
        }),
        Err(e) => Err(DeviceError::pkcs11("C_Login", e)),
    }
}

impl Token {
    /// Load the module, find the token by label or serial, open the anchor
    /// session and log in as the user. Does not read or change the
    /// environment (SoftHSM and kryoptic read `SOFTHSM2_CONF` / `KRYOPTIC_CONF`
    /// themselves at `C_Initialize`). Keeps the PIN *source* (not the PIN) to
    /// log in again if the login is lost.
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
            Err(e) => return Err(module_err(format!("C_Initialize: {}", describe(&e)))),
        }

        let (slot, info) = find_slot(&pkcs11, &config.token)?;
        let anchor = pkcs11
            .open_rw_session(slot)
            .map_err(|e| DeviceError::pkcs11("C_OpenSession", e))?;
        login(&anchor, &pin, &info.label)?;
        drop(pin);
        let quirks = Quirks::for_token(&info);
        tracing::info!(label = %info.label, serial = %info.serial, quirks = ?quirks, "token opened and logged in");
        Ok(Token {
            pkcs11,
            module: config.module.clone(),
            slot,
            info,
            anchor: Mutex::new(anchor),
            pool: Mutex::new(Vec::new()),
            cache: Mutex::new(HashMap::new()),
            quirks,
            pin: config.pin.clone(),
            preferred_oaep: AtomicU8::new(0),
            gate: RwLock::new(()),
            login_epoch: AtomicU64::new(0),
        })
    }

    /// Make sure the anchor session is alive and logged in as the user. If
    /// it is, do nothing and return `false`. If the user was logged out, log
    /// in again on it; if the anchor is gone (its handle invalid), forget it
    /// and every idle session (never closing them: the token may have reused
    /// their handle numbers), open a new anchor and log in. The PIN is read
    /// again from its source. Returns `true` when the login was restored;
    /// the key handle cache is then cleared.
    pub fn recover_login(&self) -> Result<bool, DeviceError> {
        let mut anchor = lock(&self.anchor);
        let alive = match anchor.get_session_info() {
            Ok(info) if info.session_state() == SessionState::RwUser => return Ok(false),
            Ok(info) => {
                tracing::warn!(state = ?info.session_state(), "the token logged out; logging in again");
                true
            }
            Err(e) => {
                tracing::warn!(err = %describe(&e), "the anchor session is gone; opening a new one and logging in again");
                false
            }
        };
        let fail = |reason: String| DeviceError::Relogin {
            token: self.info.label.clone(),
            reason,
        };
        let pin = self.pin.read().map_err(|e| fail(e.to_string()))?;
        // No operation in flight while logging in (see `gate`). Callers
        // hold no lent session here.
        let _exclusive = self.gate.write().unwrap_or_else(|p| p.into_inner());
        if !alive {
            let fresh = self
                .pkcs11
                .open_rw_session(self.slot)
                .map_err(|e| fail(format!("C_OpenSession: {}", describe(&e))))?;
            std::mem::forget(std::mem::replace(&mut *anchor, fresh));
            for s in lock(&self.pool).drain(..) {
                std::mem::forget(s);
            }
        }
        login(&anchor, &pin, &self.info.label).map_err(|e| fail(e.to_string()))?;
        lock(&self.cache).clear();
        self.login_epoch.fetch_add(1, Ordering::AcqRel);
        tracing::info!(label = %self.info.label, "logged in to the token again");
        Ok(true)
    }

    /// The current count of restored logins (see `recovered_since`).
    pub(crate) fn login_epoch(&self) -> u64 {
        self.login_epoch.load(Ordering::Acquire)
    }

    /// Whether the login was (possibly) lost and is now restored since
    /// `epoch` was read: [`Token::recover_login`] restored it now, or another
    /// thread did in the meantime. Either way an operation that failed is
    /// worth one more try.
    pub(crate) fn recovered_since(&self, epoch: u64) -> Result<bool, DeviceError> {
        Ok(self.recover_login()? || self.login_epoch() != epoch)
    }

    /// Run `op`; if it failed in a way a lost session or login may explain
    /// and [`Token::recover_login`] restored the login, run it once more.
    /// Not only [`DeviceError::SessionLost`]: logged out, private keys are
    /// invisible (`KeyNotFound`), and kryoptic answers operations with cached
    /// key handles with `CKR_GENERAL_ERROR` (a `Pkcs11` or `SelfTest` error).
    /// The check costs one `C_GetSessionInfo`, on failure paths only.
    pub(crate) fn with_recovery<T>(
        &self,
        mut op: impl FnMut() -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        let epoch = self.login_epoch();
        match op() {
            Err(
                e @ (DeviceError::SessionLost { .. }
                | DeviceError::KeyNotFound { .. }
                | DeviceError::Pkcs11 { .. }
                | DeviceError::SelfTest { .. }),
            ) => {
                if self.recovered_since(epoch)? {
                    op()
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    /// TEST HOOK (see `crate::test_faults`): `C_Logout` from a side session,
    /// which logs the whole process out, while no operation is in flight:
    /// like [`Token::recover_login`], it holds the anchor (key lookups run
    /// on it), then the gate (lent sessions). With the gate alone, kryoptic
    /// deadlocked when the logout met a lookup on the anchor (`fn_logout`
    /// against `fn_find_objects_init`, seen with gdb).
    pub(crate) fn test_fault_logout(&self) -> Result<(), DeviceError> {
        let _anchor = lock(&self.anchor);
        let _exclusive = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let s = self
            .pkcs11
            .open_rw_session(self.slot)
            .map_err(|e| DeviceError::pkcs11("C_OpenSession", e))?;
        match s.logout() {
            Ok(()) => Ok(()),
            Err(e) if rv_of(&e) == Some(RvError::UserNotLoggedIn) => Ok(()),
            Err(e) => Err(DeviceError::pkcs11("C_Logout", e)),
        }
    }

    /// TEST HOOK (see `crate::test_faults`): `C_CloseAllSessions` on the
    /// token's slot, while no operation is in flight (the anchor, then the
    /// gate, as for a logout). Every session of the process, the anchor and
    /// the pooled ones included, becomes invalid.
    /// `cryptoki` does not expose the call, so it is reached through the
    /// module's function list (`dlopen` returns the module already loaded).
    pub(crate) fn test_fault_close_all_sessions(&self) -> Result<(), DeviceError> {
        let _anchor = lock(&self.anchor);
        let _exclusive = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let fail = |rv: String| DeviceError::Pkcs11 {
            op: "C_CloseAllSessions (test fault)",
            rv,
        };
        // SAFETY: the library is the PKCS#11 module this process already
        // loaded and initialized; C_GetFunctionList and C_CloseAllSessions
        // are called as the PKCS#11 specification defines them.
        unsafe {
            let lib = libloading::Library::new(&self.module).map_err(|e| fail(e.to_string()))?;
            let get: libloading::Symbol<
                unsafe extern "C" fn(
                    *mut *mut cryptoki_sys::CK_FUNCTION_LIST,
                ) -> cryptoki_sys::CK_RV,
            > = lib
                .get(b"C_GetFunctionList\0")
                .map_err(|e| fail(e.to_string()))?;
            let mut list = std::ptr::null_mut();
            let rv = get(&mut list);
            if rv != cryptoki_sys::CKR_OK || list.is_null() {
                return Err(fail(format!("C_GetFunctionList returned {rv:#x}")));
            }
            let close_all = (*list)
                .C_CloseAllSessions
                .ok_or_else(|| fail("no C_CloseAllSessions in the function list".into()))?;
            let rv = close_all(self.slot.id());
            if rv != cryptoki_sys::CKR_OK {
                return Err(fail(format!("returned {rv:#x}")));
            }
        }
        Ok(())
    }

    /// Label, serial, manufacturer and model of the token, as read at open.
    pub fn info(&self) -> TokenInfoSummary {
        self.info.clone()
    }

    /// The anchor session, locked: used for key management and lookups.
    pub(crate) fn management_session(&self) -> ManagementSession<'_> {
        ManagementSession {
            token: self,
            session: lock(&self.anchor),
        }
    }

    /// Borrow a session from the pool (or open one). Return it with
    /// [`PooledSession::release`] after a successful operation; dropping the
    /// guard without releasing closes the session.
    pub(crate) fn session(&self) -> Result<PooledSession<'_>, DeviceError> {
        let gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
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
            gone: std::cell::Cell::new(false),
            _gate: gate,
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

/// The anchor session, locked; see [`Token::management_session`].
pub(crate) struct ManagementSession<'t> {
    token: &'t Token,
    session: MutexGuard<'t, Session>,
}

impl ManagementSession<'_> {
    /// `C_FindObjects` for `template` on the anchor. A failed search may
    /// still be active on its session: SoftHSM 2.6's `C_FindObjectsInit`,
    /// when the user is logged out while it runs, returns
    /// `CKR_GENERAL_ERROR` with its search left open (and `cryptoki` calls
    /// `C_FindObjectsFinal` only after a successful init), after which every
    /// search on that session fails with `CKR_OPERATION_ACTIVE`. The anchor
    /// would stay broken for the life of the process, so, as a lent session
    /// whose operation failed is closed, it is replaced by a fresh session
    /// and the search runs once more there. (The login stays: the fresh
    /// session is open before the old one closes.)
    pub(crate) fn find_objects(
        &mut self,
        template: &[Attribute],
    ) -> Result<Vec<ObjectHandle>, CkError> {
        match self.session.find_objects(template) {
            Ok(found) => Ok(found),
            // A gone anchor is replaced by `Token::recover_login`, with the
            // idle sessions it forgets.
            Err(e) if rv_of(&e).is_some_and(handle_gone) => Err(e),
            Err(e) => {
                let t = self.token;
                let fresh = match t.pkcs11.open_rw_session(t.slot) {
                    Ok(s) => s,
                    Err(open) => {
                        tracing::warn!(err = %describe(&e), open = %describe(&open), "a search failed on the anchor session and no fresh session opens");
                        return Err(e);
                    }
                };
                tracing::warn!(err = %describe(&e), "a search failed on the anchor session; replacing the session");
                // C_CloseSession ends whatever search was left active.
                drop(std::mem::replace(&mut *self.session, fresh));
                self.session.find_objects(template)
            }
        }
    }
}

impl Deref for ManagementSession<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

/// A session lent by the pool; see [`Token::session`].
pub(crate) struct PooledSession<'t> {
    token: &'t Token,
    session: Option<Session>,
    /// The token no longer knows this session's handle: forget it on drop.
    gone: std::cell::Cell<bool>,
    /// Shared hold on `Token::gate`, released after the session is returned
    /// or closed (fields drop after `Drop::drop`). Never call
    /// `Token::recover_login` while holding a lent session.
    _gate: RwLockReadGuard<'t, ()>,
}

impl PooledSession<'_> {
    /// Pass through the result of an operation on this session, noting an
    /// error that says the session handle is gone.
    pub(crate) fn check<T>(
        &self,
        r: Result<T, cryptoki::error::Error>,
    ) -> Result<T, cryptoki::error::Error> {
        if let Err(e) = &r {
            if rv_of(e).is_some_and(handle_gone) {
                self.gone.set(true);
            }
        }
        r
    }

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
        if let Some(s) = self.session.take() {
            if self.gone.get() {
                // Closing could hit a newer session that reuses the number.
                tracing::debug!("forgetting a session whose handle is gone");
                std::mem::forget(s);
            } else {
                tracing::debug!("closing a session after a failed operation");
                // C_CloseSession also destroys any session objects left in it.
                drop(s);
            }
        }
    }
}
