//! Crash safety, tested by killing: the real daemon under concurrent claims is
//! SIGKILLed at random moments and restarted, 50 times. After every restart:
//! every claim that got an answer is in the journal with its receipt for
//! Alice and is answered identically; unanswered claims succeed on retry; each
//! z has at most one record; SQLite's integrity check passes.
//!
//! `VTP_KILL_ROUNDS` raises the number of kills for a longer soak
//! (`scripts/soak.sh`).

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use vtp_e2e::{cheat, read_frame, Tp};
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding::{canonical, CmHasher};
use vtp_protocol::envelope;
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::message::MessageSealer;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{self, ClaimOutcome, Request, Response};
use vtp_protocol::Digest32;

fn make_claims(tp: &TpCard, n: usize) -> Vec<Claim> {
    let now = cheat::now();
    let alice = IdentitySecret::generate("alice", now, &mut OsRng).unwrap();
    let bob = IdentitySecret::generate("bob", now, &mut OsRng).unwrap();
    (0..n)
        .map(|i| {
            let msg = format!("message number {i}").into_bytes();
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
        })
        .collect()
}

/// Send one claim; `None` if the connection died before an answer.
fn send_claim(addr: &str, claim: &Claim) -> Option<ClaimOutcome> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let payload = wire::encode_request(&Request::Claim(claim.clone()));
    use std::io::Write;
    s.write_all(&(payload.len() as u32).to_be_bytes()).ok()?;
    s.write_all(&payload).ok()?;
    match wire::decode_response(&read_frame(&mut s).ok()?).ok()? {
        Response::Claim(o) => Some(o),
        Response::Error(e) => panic!("claim refused: {e}"),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn resolved_rows_for(tp: &Tp, z: &Digest32) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        vtp_e2e::journal_path(&tp.data_dir()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM resolved WHERE z_hash = ?1",
        [&z.0[..]],
        |r| r.get(0),
    )
    .unwrap()
}

fn integrity_ok(tp: &Tp) {
    let conn = rusqlite::Connection::open_with_flags(
        vtp_e2e::journal_path(&tp.data_dir()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let r: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(r, "ok", "journal integrity check failed");
}

#[test]
fn kill_minus_nine_under_load_never_loses_an_answer() {
    let rounds: usize = std::env::var("VTP_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut tp = Tp::init();
    // One recipient sends hundreds of claims in seconds here: this test is
    // about crash safety, not the per-identity rate limit, so switch it off.
    let config = std::fs::read_to_string(tp.config()).unwrap();
    assert!(
        config.contains("\n[limits]\n"),
        "no [limits] section in tp.toml"
    );
    std::fs::write(
        tp.config(),
        config.replace("\n[limits]\n", "\n[limits]\nidentity_rate_per_sec = 0\n"),
    )
    .unwrap();
    let card = cheat::tp_card(&tp.card());
    let claims = Arc::new(make_claims(&card, 8 * rounds.max(10)));
    // What each claim was answered, the first time it was answered.
    let answered: Arc<Mutex<HashMap<usize, Vec<u8>>>> = Arc::default();
    let mut kills = 0;
    // The kill must land both after some answers and before others, or the
    // test proves nothing: count rounds of each kind.
    let (mut answered_before, mut rounds_with_answers, mut rounds_with_losses) = (0, 0, 0);

    for round in 0..rounds {
        tp.start();
        // Every answer given before the last kill must still be in the journal
        // and must be repeated identically.
        {
            let answered = answered.lock().unwrap().clone();
            for (&i, bytes) in answered.iter().filter(|(i, _)| *i % 7 == round % 7) {
                assert_eq!(
                    resolved_rows_for(&tp, &claims[i].body.envelope.header.trustees[0].z_hash),
                    1,
                    "answered claim {i} not in the journal"
                );
                let again = send_claim(&tp.addr, &claims[i]).expect("daemon just started");
                assert_eq!(
                    &canonical(&again),
                    bytes,
                    "claim {i} answered differently after a crash"
                );
            }
        }
        // Load: 4 threads, each sending claims from this round's slice plus a
        // few older ones, while we kill the daemon at a random moment.
        let base = round * 8;
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (claims, answered, addr) = (claims.clone(), answered.clone(), tp.addr.clone());
                std::thread::spawn(move || {
                    for k in 0..4 {
                        let i = (base + t * 2 + k) % claims.len();
                        if let Some(o) = send_claim(&addr, &claims[i]) {
                            let bytes = canonical(&o);
                            let mut a = answered.lock().unwrap();
                            let first = a.entry(i).or_insert_with(|| bytes.clone());
                            assert_eq!(first, &bytes, "claim {i} got two different answers");
                        }
                    }
                })
            })
            .collect();
        let delay = OsRng.next_u32() % 150;
        std::thread::sleep(Duration::from_millis(delay as u64));
        tp.kill();
        kills += 1;
        for h in handles {
            h.join().expect("client thread");
        }
        let now_answered = answered.lock().unwrap().len();
        if now_answered > answered_before {
            rounds_with_answers += 1;
        }
        if now_answered < answered_before + 16 {
            rounds_with_losses += 1;
        }
        answered_before = now_answered;
        integrity_ok(&tp);
    }

    // Finally: every claim ever sent is retried to completion, exactly once.
    tp.start();
    let answered = answered.lock().unwrap().clone();
    let sent: Vec<usize> = (0..rounds * 8).map(|i| i % claims.len()).collect();
    for &i in &sent {
        let o = send_claim(&tp.addr, &claims[i]).expect("answer");
        if let Some(bytes) = answered.get(&i) {
            assert_eq!(&canonical(&o), bytes, "claim {i} changed after restarts");
        }
        assert_eq!(
            resolved_rows_for(&tp, &claims[i].body.envelope.header.trustees[0].z_hash),
            1
        );
    }
    integrity_ok(&tp);
    assert!(kills >= rounds);
    eprintln!(
        "{kills} kills; {} claims answered before a kill; {rounds_with_answers} rounds killed after answers, \
         {rounds_with_losses} rounds killed with claims in flight; all {} retried claims resolved once",
        answered.len(),
        sent.len()
    );
    assert!(
        rounds_with_answers > 0 && rounds_with_losses > 0,
        "kills never landed mid-load"
    );
}
