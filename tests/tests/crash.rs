//! Crash safety, tested by killing: the real daemon under concurrent claims is
//! SIGKILLed at random moments and restarted, 50 times. After every restart:
//! every claim that got an answer is in the journal with its receipt for
//! Alice and is answered identically; unanswered claims succeed on retry; each
//! z has at most one record; SQLite's integrity check passes.
//!
//! `VTP_KILL_ROUNDS` raises the number of kills for a longer soak
//! (`scripts/soak.sh`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use vtp_e2e::{bulk, cheat, Tp};
use vtp_protocol::encoding::canonical;
use vtp_protocol::identity::IdentitySecret;

fn integrity_ok(tp: &Tp) {
    let conn = tp.journal_db();
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
    let claims = Arc::new(bulk::make_claims(
        &card,
        &IdentitySecret::generate("alice", cheat::now(), &mut OsRng).unwrap(),
        8 * rounds.max(10),
    ));
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
                    tp.resolved_rows(&claims[i].body.envelope.header.trustees[0].z_hash),
                    1,
                    "answered claim {i} not in the journal"
                );
                let again = bulk::send_claim(&tp.addr, &claims[i]).expect("daemon just started");
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
                        if let Some(o) = bulk::send_claim(&addr, &claims[i]) {
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
        let o = bulk::send_claim(&tp.addr, &claims[i]).expect("answer");
        if let Some(bytes) = answered.get(&i) {
            assert_eq!(&canonical(&o), bytes, "claim {i} changed after restarts");
        }
        assert_eq!(
            tp.resolved_rows(&claims[i].body.envelope.header.trustees[0].z_hash),
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
