//! A token whose session or login is lost behind the device layer's back:
//! operations log in again (re-reading the PIN file) and carry on, or fail
//! with a clear error when they cannot.
//!
//! Its own test binary and token: the tests here log the whole process out,
//! so they run one at a time (`serial`) and share nothing with other files.

use std::sync::{Mutex, MutexGuard, OnceLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::session::{Session, SessionState};
use cryptoki::slot::Slot;
use rand_core::{OsRng, RngCore};
use rsa::{BigUint, Oaep, RsaPublicKey};
use vtp_device::devtoken::DevToken;
use vtp_device::{DeviceError, KeyId, OaepHash, Token};

mod common;

struct Fixture {
    _dir: tempfile::TempDir,
    dev: DevToken,
    token: Token,
    enc: KeyId,
    sign: KeyId,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("vtp-device-recovery-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let dev = common::dev_token(dir.path(), "vtp-recovery");
        let token = Token::open(&dev.token_config()).unwrap();
        let enc = token
            .generate_encryption_key(2048, dev.kind.preferred_oaep())
            .unwrap();
        let sign = token.generate_signing_key().unwrap();
        Fixture {
            _dir: dir,
            dev,
            token,
            enc,
            sign,
        }
    })
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The module and the test token's slot, outside vtp-device.
fn raw() -> (Pkcs11, Slot) {
    let f = fixture();
    let pkcs11 = Pkcs11::new(&f.dev.module).unwrap();
    // Already initialized by the Token in this process.
    let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label() == f.dev.label)
        .unwrap();
    (pkcs11, slot)
}

/// `C_Logout` from another session: logs the whole process out. (Already
/// logged out: SoftHSM says OK, kryoptic CKR_USER_NOT_LOGGED_IN.)
fn log_out_behind_its_back() {
    let (pkcs11, slot) = raw();
    let s: Session = pkcs11.open_rw_session(slot).unwrap();
    match s.logout() {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserNotLoggedIn, _)) => {}
        Err(e) => panic!("C_Logout: {e}"),
    }
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwPublic
    );
}

/// `C_CloseAllSessions`: every session of the process on the slot, the
/// Token's anchor and pooled sessions included, is closed (and so the login
/// is gone). cryptoki does not expose it, so call it through the module's
/// function list (dlopen returns the already loaded module).
fn close_all_sessions() {
    let f = fixture();
    let (_pkcs11, slot) = raw();
    unsafe {
        let lib = libloading::Library::new(&f.dev.module).unwrap();
        let get: libloading::Symbol<
            unsafe extern "C" fn(*mut *mut cryptoki_sys::CK_FUNCTION_LIST) -> cryptoki_sys::CK_RV,
        > = lib.get(b"C_GetFunctionList\0").unwrap();
        let mut list = std::ptr::null_mut();
        assert_eq!(get(&mut list), cryptoki_sys::CKR_OK);
        let close_all = (*list).C_CloseAllSessions.unwrap();
        assert_eq!(close_all(slot.id()), cryptoki_sys::CKR_OK);
    }
}

/// A wrapped key, nonce and ciphertext of "still here" (AAD "aad").
fn seal(f: &Fixture) -> (Vec<u8>, [u8; 12], Vec<u8>) {
    let public = f.token.rsa_public(f.enc).unwrap();
    let mut k = [0u8; 32];
    OsRng.fill_bytes(&mut k);
    let n = BigUint::from_bytes_be(&public.modulus);
    let e = BigUint::from_bytes_be(&public.exponent);
    let pk = RsaPublicKey::new(n, e).unwrap();
    let wrapped = match public.oaep {
        OaepHash::Sha1 => pk.encrypt(&mut OsRng, Oaep::new::<sha1::Sha1>(), &k),
        OaepHash::Sha256 => pk.encrypt(&mut OsRng, Oaep::new::<sha2::Sha256>(), &k),
    }
    .unwrap();
    let nonce = [9u8; 12];
    let ct = Aes256Gcm::new_from_slice(&k)
        .unwrap()
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: b"still here",
                aad: b"aad",
            },
        )
        .unwrap();
    (wrapped, nonce, ct)
}

/// Everything the TP does: decrypt, sign, list, export.
fn everything_works() {
    let f = fixture();
    let t = &f.token;
    let (wrapped, nonce, ct) = seal(f);
    let out = t
        .unwrap_and_decrypt(f.enc, &wrapped, &nonce, b"aad", &ct)
        .unwrap()
        .unwrap();
    assert_eq!(&out[..], b"still here");
    t.sign_p256(f.sign, &[1; 32]).unwrap();
    let keys = t.list_keys().unwrap();
    assert!(keys.iter().any(|k| k.id == f.enc) && keys.iter().any(|k| k.id == f.sign));
    t.ec_public(f.sign).unwrap();
    assert!(t.has_encryption_key(f.enc));
}

#[test]
fn a_logout_is_repaired_for_every_operation() {
    let _g = serial();
    everything_works();
    // Each kind of operation first meets the lost login.
    type Op = fn(&Fixture);
    let ops: [(&str, Op); 5] = [
        ("sign", |f| {
            f.token.sign_p256(f.sign, &[2; 32]).unwrap();
        }),
        ("list", |f| {
            let keys = f.token.list_keys().unwrap();
            assert!(keys.iter().any(|k| k.id == f.enc), "{keys:?}");
        }),
        ("rsa_public", |f| {
            f.token.rsa_public(f.enc).unwrap();
        }),
        ("has_encryption_key (from the handle cache)", |f| {
            assert!(f.token.has_encryption_key(f.enc));
        }),
        ("self-test", |f| {
            f.token.self_test_encryption_key(f.enc).unwrap();
        }),
    ];
    for (what, op) in ops {
        log_out_behind_its_back();
        op(fixture());
        eprintln!("{what}: recovered from a logout");
    }
    // Logged out, kryoptic answers C_UnwrapKey with CKR_GENERAL_ERROR (SoftHSM
    // with CKR_UNWRAPPING_KEY_HANDLE_INVALID): neither may read as "does not
    // decrypt". Sealed before the logout (rsa_public would log in again).
    let f = fixture();
    let (wrapped, nonce, ct) = seal(f);
    log_out_behind_its_back();
    let out = f
        .token
        .unwrap_and_decrypt(f.enc, &wrapped, &nonce, b"aad", &ct)
        .unwrap()
        .expect("decrypts after logging in again");
    assert_eq!(&out[..], b"still here");
    // Bad input while logged out: still "does not decrypt", after the login.
    let mut bad = wrapped.clone();
    bad[7] ^= 1;
    log_out_behind_its_back();
    let r = f
        .token
        .unwrap_and_decrypt(f.enc, &bad, &nonce, b"aad", &ct)
        .unwrap();
    assert_eq!(r, Err(vtp_device::DoesNotDecrypt));
    log_out_behind_its_back();
    everything_works();
}

#[test]
fn closed_sessions_are_replaced_and_the_login_restored() {
    let _g = serial();
    everything_works();
    close_all_sessions();
    // The anchor and every pooled session are gone; a decryption finds out.
    everything_works();
    close_all_sessions();
    fixture().token.sign_p256(fixture().sign, &[3; 32]).unwrap();
    everything_works();
}

#[test]
fn a_login_that_cannot_be_restored_is_a_clear_error() {
    let _g = serial();
    let f = fixture();
    everything_works();
    let pin = std::fs::read(&f.dev.pin_file).unwrap();
    std::fs::write(&f.dev.pin_file, "not-the-pin\n").unwrap();
    log_out_behind_its_back();
    let e = f.token.sign_p256(f.sign, &[4; 32]).unwrap_err();
    std::fs::write(&f.dev.pin_file, &pin).unwrap();
    assert!(matches!(e, DeviceError::Relogin { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&f.dev.label) && msg.contains("wrong user PIN"),
        "{msg}"
    );
    // A logged-out token lists no private keys: an error, not an empty list.
    std::fs::write(&f.dev.pin_file, "not-the-pin\n").unwrap();
    let e = f.token.list_keys().unwrap_err();
    std::fs::write(&f.dev.pin_file, &pin).unwrap();
    assert!(matches!(e, DeviceError::Relogin { .. }), "{e}");
    // With the right PIN back, the next operation logs in again.
    everything_works();
}

/// Two threads meet a logout at the same moment: one logs in again while
/// the other's operation is in flight. (The logout itself happens while no
/// operation runs: kryoptic 1.5 deadlocks when C_Logout or C_Login meets an
/// operation in another thread; `Token` keeps its own C_Login apart from its
/// operations for that reason, and this test would hang if it did not.)
#[test]
fn concurrent_operations_survive_a_logout() {
    let _g = serial();
    let f = fixture();
    let (wrapped, nonce, ct) = seal(f);
    let barrier = std::sync::Barrier::new(3);
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| {
                for round in 0..4 {
                    barrier.wait(); // the main thread logs out
                    barrier.wait();
                    for i in 0..10 {
                        let out = f
                            .token
                            .unwrap_and_decrypt(f.enc, &wrapped, &nonce, b"aad", &ct)
                            .unwrap_or_else(|e| panic!("round {round}, op {i}: {e}"))
                            .unwrap_or_else(|e| panic!("round {round}, op {i}: {e}"));
                        assert_eq!(&out[..], b"still here");
                        f.token
                            .sign_p256(f.sign, &[5; 32])
                            .unwrap_or_else(|e| panic!("round {round}, op {i}: {e}"));
                    }
                }
            });
        }
        for _ in 0..4 {
            barrier.wait();
            log_out_behind_its_back();
            barrier.wait();
        }
    });
}
