//! Logouts that meet the device layer's threads at work. Meanwhile no
//! answer is wrong; once they stop, everything works again on the same
//! `Token`: nothing is left broken behind the recovery.
//!
//! - Threads resolve claims, as the daemon's device threads do, while the
//!   test fault `logout_every` logs the token out after every second
//!   decryption (`logout-every` in `tests/tests/faults.rs`); each claim
//!   resolves within a few retries. On kryoptic this hung when the fault's
//!   `C_Logout` met a key lookup on the anchor session, and a second logout
//!   during the retry of a decryption gave honest claims invalid-envelope
//!   affidavits.
//! - Another user of the module logs the process out at random moments while
//!   threads look keys up on the anchor session (SoftHSM2 only: a foreign
//!   `C_Logout` during an operation deadlocks kryoptic, docs/tokens.md).
//!   SoftHSM 2.6's `C_FindObjectsInit`, logged out while it runs, returns
//!   `CKR_GENERAL_ERROR` with its search still active; every later search on
//!   the anchor then failed with `CKR_OPERATION_ACTIVE`, for the rest of the
//!   process (the daemon answered `Unavailable` until restarted).
//!
//! Its own test binary and token: the faults are installed for the whole
//! process, and both tests log it out (`serial`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::session::Session;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use vtp_device::devtoken::{DevToken, DevTokenKind};
use vtp_device::test_faults::{self, TestFaults};
use vtp_device::{generate_tp_keys, Token, TpKeys, TrustedParty};
use vtp_protocol::affidavit::ChainPosition;
use vtp_protocol::claim::Claim;
use vtp_protocol::decide::ResolvableClaim;
use vtp_protocol::encoding::CmHasher;
use vtp_protocol::envelope;
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::message::MessageSealer;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::Policy;
use vtp_protocol::wire::ClaimOutcome;
use vtp_protocol::Digest32;

mod common;

const NOW: u64 = 1_800_000_000;
const AT: ChainPosition = ChainPosition {
    seq: 7,
    prev: Digest32([7; 32]),
};
/// Threads resolving claims at once (the daemon runs one per CPU).
const THREADS: usize = 3;
/// Claims each thread resolves; every second decryption logs the token out.
const ROUNDS: usize = 60;
/// Failed attempts in a row after which a claim counts as stuck.
const ATTEMPTS: usize = 10;
/// Foreign logouts, each after a random pause of up to 1 ms.
const LOGOUTS: usize = 1000;
/// Extra P-256 keys on the token: SoftHSM decrypts the `CKA_ID` of every
/// private key of the searched type in `C_FindObjectsInit`, so they widen
/// the window in which a logout meets a lookup of the signing key.
const EXTRA_KEYS: usize = 16;

struct Fixture {
    _dir: tempfile::TempDir,
    dev: DevToken,
    token: Arc<Token>,
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
        let token = Arc::new(Token::open(&dev.token_config()).unwrap());
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

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
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

fn ident(name: &str, seed: u8) -> IdentitySecret {
    IdentitySecret::generate(name, NOW, &mut ChaCha20Rng::from_seed([seed; 32])).unwrap()
}

/// An honest claim, ready for the device (the decision core let it through).
fn claim(tp: &TrustedParty, seed: u8) -> ResolvableClaim {
    let (alice, bob) = (ident("alice", seed), ident("bob", seed + 100));
    let msg = b"a message for the logout race".to_vec();
    let prep =
        envelope::prepare(&alice, bob.card(), tp.card(), NOW + 3600, NOW, [seed; 32]).unwrap();
    let mut s = MessageSealer::new(prep.message_key(), msg.len() as u64);
    let cm = s.seal_chunk(&msg).unwrap();
    let mut h = CmHasher::default();
    h.update(&cm);
    let env = prep
        .finish(
            &alice,
            h.finish(),
            cm.len() as u64,
            Digest32(Sha256::digest(&msg).into()),
        )
        .unwrap();
    let venv = env.verify(tp.card()).unwrap();
    let receipt = Receipt::issue(&bob, &venv, NOW + 1).verify(&venv).unwrap();
    Claim::new(&bob, &venv, &receipt, NOW + 2)
        .decide_fresh(tp.card(), NOW + 10)
        .unwrap()
}

#[test]
fn claims_resolve_while_other_threads_log_the_token_out() {
    let _g = serial();
    let f = fixture();
    let tp = TrustedParty::open(
        f.token.clone(),
        f.keys.clone(),
        "test TP",
        Policy::default(),
        NOW,
    )
    .unwrap();
    let claims: Vec<ResolvableClaim> = (0..THREADS as u8).map(|i| claim(&tp, i + 1)).collect();
    test_faults::install(TestFaults {
        logout_every: Some(2),
        ..TestFaults::default()
    });
    let failed = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for (worker, vc) in claims.iter().enumerate() {
            let (tp, failed) = (&tp, &failed);
            sc.spawn(move || {
                for round in 0..ROUNDS {
                    for attempt in 1.. {
                        match tp.resolve(vc, AT) {
                            Ok(ClaimOutcome::Resolved { .. }) => break,
                            Ok(other) => {
                                panic!("worker {worker}, round {round}: a good claim got {other:?}")
                            }
                            // Retryable (nothing was released): the daemon
                            // answers `Unavailable` and the client retries.
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                assert!(
                                    attempt < ATTEMPTS,
                                    "worker {worker}, round {round}: stuck, {attempt} failures \
                                     in a row, the last: {e}"
                                );
                            }
                        }
                    }
                }
            });
        }
    });
    eprintln!(
        "{} claims resolved, {} attempts failed and were retried",
        THREADS * ROUNDS,
        failed.load(Ordering::Relaxed)
    );
    everything_works(f);
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
    let _g = serial();
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
