//! Another user of the module logs the process out at random moments while
//! threads look keys up on the anchor session; once the logouts stop, every
//! operation works again on the same `Token`: nothing is left broken behind
//! the recovery.
//!
//! Regression: SoftHSM 2.6's `C_FindObjectsInit`, logged out while it runs,
//! returns `CKR_GENERAL_ERROR` with its search still active; every later
//! search on the anchor then failed with `CKR_OPERATION_ACTIVE`, for the rest
//! of the process (the daemon answered `Unavailable` until restarted, in the
//! `logout-every` fault test of `tests/tests/faults.rs`).
//!
//! SoftHSM2 only: a foreign `C_Logout` during an operation deadlocks
//! kryoptic (docs/tokens.md). Its own test binary and token: it logs the
//! whole process out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::session::Session;
use rand_core::{OsRng, RngCore};
use vtp_device::devtoken::{DevToken, DevTokenKind};
use vtp_device::{generate_tp_keys, Token, TpKeys};

mod common;

/// Threads looking keys up at once.
const THREADS: usize = 3;
/// Foreign logouts, each after a random pause of up to 1 ms.
const LOGOUTS: usize = 1000;
/// Extra P-256 keys on the token: SoftHSM decrypts the `CKA_ID` of every
/// private key of the searched type in `C_FindObjectsInit`, so they widen
/// the window in which a logout meets a lookup of the signing key.
const EXTRA_KEYS: usize = 16;

struct Fixture {
    _dir: tempfile::TempDir,
    dev: DevToken,
    token: Token,
    keys: TpKeys,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("vtp-device-logout-race-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let dev = common::dev_token(dir.path(), "vtp-logout-race");
        let token = Token::open(&dev.token_config()).unwrap();
        let keys = generate_tp_keys(&token, 2048, dev.kind.preferred_oaep()).unwrap();
        for _ in 0..EXTRA_KEYS {
            token.generate_signing_key().unwrap();
        }
        Fixture {
            _dir: dir,
            dev,
            token,
            keys,
        }
    })
}

/// A session of the module outside vtp-device: its `C_Logout` logs the
/// whole process out, whatever `Token` is doing.
fn foreign_session(f: &Fixture) -> Session {
    let pkcs11 = Pkcs11::new(&f.dev.module).unwrap();
    // Already initialized by the Token in this process.
    let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label() == f.dev.label)
        .unwrap();
    pkcs11.open_rw_session(slot).unwrap()
}

/// Without further logouts, every operation works.
fn everything_works(f: &Fixture) {
    let t = &f.token;
    assert_eq!(t.list_keys().unwrap().len(), 2 + EXTRA_KEYS);
    t.rsa_public(f.keys.current).unwrap();
    t.ec_public(f.keys.signing).unwrap();
    t.self_test_encryption_key(f.keys.current).unwrap();
    t.sign_p256(f.keys.signing, &[6; 32]).unwrap();
}

#[test]
fn a_logout_during_a_key_lookup_leaves_the_lookups_working() {
    if common::kind() != DevTokenKind::SoftHsm {
        eprintln!(
            "not run on {}: a foreign C_Logout during an operation deadlocks it",
            common::kind()
        );
        return;
    }
    let f = fixture();
    let t = &f.token;
    let foreign = foreign_session(f);
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        for _ in 0..THREADS {
            let stop = &stop;
            // Only the anchor: lookups, public halves, attributes. Errors
            // are allowed while logouts keep coming.
            sc.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = t.rsa_public(f.keys.current);
                    let _ = t.ec_public(f.keys.signing);
                }
            });
        }
        for _ in 0..LOGOUTS {
            std::thread::sleep(Duration::from_micros(OsRng.next_u64() % 1000));
            match foreign.logout() {
                Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserNotLoggedIn, _)) => {}
                Err(e) => panic!("C_Logout: {e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    everything_works(f);
}
