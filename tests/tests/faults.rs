//! The TP's fault points and device faults end to end, on whichever token
//! the suite runs on (`VTP_TEST_TOKEN`: SoftHSM2 or kryoptic). The detailed
//! tests are in `tp-daemon/tests/faults.rs` (SoftHSM2); these repeat the
//! essentials so that the second token's recovery paths are exercised too:
//! - each crash point (`VTP_TEST_FAULT`): the daemon aborts there, the claim
//!   gets no answer, a restarted daemon resolves it once, the journal
//!   verifies;
//! - each device fault (`VTP_TEST_DEVICE_FAULT`): claims are answered or
//!   refused `Unavailable` (with nothing recorded) and succeed on retry, on
//!   the same daemon process; the journal verifies.

use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use vtp_e2e::{cheat, Tp};
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding::CmHasher;
use vtp_protocol::envelope;
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::message::MessageSealer;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{ClaimOutcome, ErrorCode, Request, Response};
use vtp_protocol::Digest32;

/// A claim by a fresh Bob for a fresh Alice's envelope.
fn new_claim(tp: &TpCard) -> Claim {
    let now = cheat::now();
    let alice = IdentitySecret::generate("alice", now, &mut OsRng).unwrap();
    let bob = IdentitySecret::generate("bob", now, &mut OsRng).unwrap();
    let msg = b"a message for the fault tests".to_vec();
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    let prep = envelope::prepare(&alice, bob.card(), tp, now + 3600, now, nonce).unwrap();
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
    let venv = env.verify(tp).unwrap();
    let receipt = Receipt::issue(&bob, &venv, now).verify(&venv).unwrap();
    Claim::new(&bob, &venv, &receipt, now)
}

/// One claim on a fresh connection; `None` if no answer came.
fn send(addr: &str, claim: &Claim) -> Option<Response> {
    vtp_testkit::frame::try_ask(addr, &Request::Claim(claim.clone()))
}

#[track_caller]
fn journal_verifies(tp: &Tp, records: usize) {
    let r = tp.cli(&["journal", "verify"]).ok();
    assert!(
        r.stdout.contains(&format!("journal OK: {records} records")),
        "{}",
        r.stdout
    );
}

fn resolved(r: &Option<Response>) -> bool {
    matches!(r, Some(Response::Claim(ClaimOutcome::Resolved { .. })))
}

#[test]
fn each_crash_point_then_a_restart_resolves_the_claim_once() {
    let mut tp = Tp::init();
    let card = cheat::tp_card(&tp.card());
    let points = [
        "after-decrypt",
        "after-sign",
        "after-commit",
        "before-reply",
    ];
    for (i, point) in points.iter().enumerate() {
        let claim = new_claim(&card);
        tp.env = vec![("VTP_TEST_FAULT".into(), point.to_string())];
        tp.start();
        assert!(send(&tp.addr, &claim).is_none(), "{point}: answered");
        let started = Instant::now();
        while tp.is_running() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{point}: alive"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        tp.kill();
        let committed = tp.resolved_rows(&claim.body.envelope.header.trustees[0].z_hash);
        assert_eq!(
            committed,
            i64::from(matches!(*point, "after-commit" | "before-reply")),
            "{point}"
        );
        journal_verifies(&tp, i + committed as usize);

        tp.env.clear();
        tp.start();
        let first = send(&tp.addr, &claim);
        assert!(resolved(&first), "{point}: {first:?}");
        assert_eq!(send(&tp.addr, &claim), first, "{point}: repeated");
        assert_eq!(
            tp.resolved_rows(&claim.body.envelope.header.trustees[0].z_hash),
            1,
            "{point}"
        );
        tp.kill();
        journal_verifies(&tp, i + 1);
    }
}

#[test]
fn device_faults_are_survived_without_a_restart() {
    let mut tp = Tp::init();
    let card = cheat::tp_card(&tp.card());
    let faults = [
        "logout-every:2",
        "close-sessions-every:2",
        "error-every:3",
        "sign-error-every:3",
        "delay-ms:50",
    ];
    let mut total = 0;
    for fault in faults {
        tp.env = vec![("VTP_TEST_DEVICE_FAULT".into(), fault.into())];
        tp.start();
        let claims: Vec<Claim> = (0..8).map(|_| new_claim(&card)).collect();
        let addr = tp.addr.clone();
        let unavailable: usize = std::thread::scope(|s| {
            let hs: Vec<_> = claims
                .chunks(2)
                .map(|chunk| {
                    let (addr, tp) = (&addr, &tp);
                    s.spawn(move || {
                        let mut unavailable = 0;
                        for c in chunk {
                            for attempt in 1.. {
                                let r = send(addr, c);
                                if resolved(&r) {
                                    break;
                                }
                                match &r {
                                    Some(Response::Error(e))
                                        if e.code == ErrorCode::Unavailable =>
                                    {
                                        assert_eq!(
                                            tp.resolved_rows(
                                                &c.body.envelope.header.trustees[0].z_hash
                                            ),
                                            0,
                                            "{fault}"
                                        );
                                    }
                                    other => panic!("{fault}: {other:?}"),
                                }
                                unavailable += 1;
                                assert!(attempt < 20, "{fault}: retries keep failing");
                            }
                        }
                        unavailable
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert!(tp.is_running(), "{fault}: the daemon must keep serving");
        for c in &claims {
            assert_eq!(
                tp.resolved_rows(&c.body.envelope.header.trustees[0].z_hash),
                1,
                "{fault}"
            );
        }
        tp.kill();
        total += claims.len();
        journal_verifies(&tp, total);
        eprintln!("{fault}: {unavailable} Unavailable answers, all retried");
    }
}
