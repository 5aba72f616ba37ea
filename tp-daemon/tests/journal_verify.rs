//! `tp-daemon journal verify` on a real journal (resolutions, an
//! invalid-envelope verdict, an unclaimed certificate, two TP identities
//! after a signing-key rotation), then on copies tampered with plain SQL:
//! each tampering is reported at the first bad record, exit 1.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rusqlite::{params, Connection};
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding::{domain, signing_digest};
use vtp_protocol::envelope::Envelope;
use vtp_protocol::identity::test_sign;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{ClaimOutcome, Request, Response, UnclaimedRequest};
use vtp_protocol::Digest32;
use vtp_tp_daemon::journal::chain::{record_hash, JournalRecord};

fn resolved(r: Response) -> ClaimOutcome {
    match r {
        Response::Claim(o @ ClaimOutcome::Resolved { .. }) => o,
        other => panic!("expected a resolution, got {other:?}"),
    }
}

/// A journal of 9 records: #1-#5 resolutions, #6 an invalid-envelope
/// verdict, #7 an unclaimed certificate (clock shifted past its deadline),
/// then a new TP identity (signing key rotated) with #8-#9 resolutions.
/// Returns the TP and the first identity's card file.
fn build() -> (TestTp, PathBuf) {
    let tp = TestTp::new();
    let d = tp.start();
    let card = card_of(&d);
    for _ in 0..5 {
        resolved(d.ask(&Exchange::new(&card, 3600).claim()));
    }
    // #6: Mallory re-signs Alice's z under her own name.
    let x = Exchange::new(&card, 3600);
    let mallory = identity("mallory");
    let mut forged: Envelope = x.envelope.clone();
    forged.header.sender = mallory.id();
    forged.sender_card = mallory.card().clone();
    forged.signature = test_sign(&mallory, &signing_digest(domain::ENVELOPE, &forged.header));
    let fv = forged.verify(&card).unwrap();
    let receipt = Receipt::issue(&x.bob, &fv, now()).verify(&fv).unwrap();
    let r = d.ask(&Request::Claim(Claim::new(&x.bob, &fv, &receipt, now())));
    assert!(
        matches!(r, Response::Claim(ClaimOutcome::InvalidEnvelope { .. })),
        "{r:?}"
    );
    let late = Exchange::new(&card, 400);
    drop(d);
    // #7: an hour later on the TP's clock.
    let d = tp.start_with_env(&[("VTP_TEST_CLOCK_OFFSET_SECS", "3600")]);
    let req = UnclaimedRequest::new(
        &late.alice,
        &late.verified,
        late.verified.header().trustees[0].tp,
        now() + 3600,
    );
    assert!(matches!(
        d.ask(&Request::Unclaimed(req)),
        Response::Unclaimed(_)
    ));
    drop(d);
    let old_card = tp.path().join("old-card.vtp");
    std::fs::write(&old_card, card.to_file()).unwrap();

    // A new TP identity: #8, #9.
    tp.cli(&["keys", "rotate", "--signing", "--new-identity"])
        .ok();
    let d = tp.start();
    let card2 = card_of(&d);
    assert_ne!(card2.id(), card.id());
    for _ in 0..2 {
        resolved(d.ask(&Exchange::new(&card2, 3600).claim()));
    }
    assert!(d.terminate().success());
    (tp, old_card)
}

fn db_path(tp: &TestTp) -> PathBuf {
    tp.path().join("journal.sqlite3")
}

/// Fold the WAL into the main file, so one file is the whole journal.
fn checkpoint(p: &Path) {
    let c = Connection::open(p).unwrap();
    let _: (i64, i64, i64) = c
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
}

fn body(c: &Connection, seq: i64) -> Vec<u8> {
    c.query_row("SELECT body FROM records WHERE seq = ?1", [seq], |r| {
        r.get(0)
    })
    .unwrap()
}

/// Recompute `prev_hash` and `hash` from record `from` on, as someone
/// without the TP's key would to hide a change.
fn rehash_from(c: &Connection, from: i64) {
    let mut prev: Digest32 = if from == 1 {
        Digest32([0; 32])
    } else {
        let h: Vec<u8> = c
            .query_row("SELECT hash FROM records WHERE seq = ?1", [from - 1], |r| {
                r.get(0)
            })
            .unwrap();
        Digest32(h.try_into().unwrap())
    };
    let max: i64 = c
        .query_row("SELECT MAX(seq) FROM records", [], |r| r.get(0))
        .unwrap();
    for seq in from..=max {
        let b = body(c, seq);
        let h = record_hash(seq as u64, &prev, &b);
        c.execute(
            "UPDATE records SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            params![&prev.0[..], &h.0[..], seq],
        )
        .unwrap();
        prev = h;
    }
}

/// Flip one byte of the affidavit signature stored in record `seq`.
fn flip_signature_byte(c: &Connection, seq: i64) {
    let mut b = body(c, seq);
    let rec = JournalRecord::decode(&b).unwrap();
    let sig = rec.affidavit().signature.0;
    let at = b
        .windows(sig.len())
        .position(|w| w == sig)
        .expect("the signature is in the stored bytes");
    b[at + 5] ^= 0x01;
    c.execute(
        "UPDATE records SET body = ?1 WHERE seq = ?2",
        params![b, seq],
    )
    .unwrap();
}

/// Verify must fail, naming `seq` as the first bad record and saying
/// something containing `why`.
#[track_caller]
fn reports(tp: &TestTp, seq: u64, why: &str) {
    let r = tp.cli(&["journal", "verify"]).fails();
    assert_eq!(r.status, 1);
    let needle = format!("FIRST BAD RECORD #{seq}: ");
    assert!(r.stdout.contains(&needle), "{needle:?} not in {r:?}");
    assert!(r.stdout.contains(why), "{why:?} not in {r:?}");
    assert!(
        r.stderr
            .contains(&format!("fails verification at record #{seq}")),
        "{r:?}"
    );
}

#[test]
fn verify_passes_a_good_journal_and_names_the_first_bad_record_of_a_tampered_one() {
    let (tp, old_card) = build();
    let out = tp.cli(&["journal", "verify"]).ok().stdout;
    assert!(out.contains("journal OK: 9 records; head #9 "), "{out}");
    assert!(out.contains(": 7 affidavits verified"), "{out}");
    assert!(out.contains(": 2 affidavits verified"), "{out}");
    let kinds: Vec<String> = tp
        .journal_db()
        .prepare("SELECT kind FROM records ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|k| k.unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "resolved",
            "resolved",
            "resolved",
            "resolved",
            "resolved",
            "invalid-envelope",
            "unclaimed",
            "resolved",
            "resolved"
        ]
    );

    // Trusting only the first identity's card: the first record signed by
    // the second one is reported.
    let r = tp
        .cli(&["journal", "verify", "--card", old_card.to_str().unwrap()])
        .fails();
    assert!(r.stdout.contains("FIRST BAD RECORD #8: "), "{r:?}");
    assert!(r.stdout.contains("not among the trusted"), "{r:?}");
    let old = TpCard::from_file(&std::fs::read(&old_card).unwrap()).unwrap();
    assert!(r.stdout.contains(&old.id().0.to_hex()), "{r:?}");

    let db = db_path(&tp);
    checkpoint(&db);
    let pristine = std::fs::read(&db).unwrap();
    let tamper = |f: &dyn Fn(&Connection)| {
        for ext in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
        }
        std::fs::write(&db, &pristine).unwrap();
        let c = Connection::open(&db).unwrap();
        f(&c);
        drop(c);
        checkpoint(&db);
    };

    // A byte of a stored affidavit flipped.
    tamper(&|c| flip_signature_byte(c, 3));
    reports(&tp, 3, "its hash does not match its contents");

    // The same, with every hash from there on recomputed: the signature
    // still gives it away.
    tamper(&|c| {
        flip_signature_byte(c, 3);
        rehash_from(c, 3);
    });
    reports(&tp, 3, "signature does not verify");

    // A record deleted.
    tamper(&|c| {
        c.execute("DELETE FROM records WHERE seq = 4", []).unwrap();
    });
    reports(&tp, 4, "missing");

    // A record and its index row deleted, the rest renumbered and rehashed.
    tamper(&|c| {
        c.execute("DELETE FROM records WHERE seq = 4", []).unwrap();
        c.execute("DELETE FROM resolved WHERE seq = 4", []).unwrap();
        // (In two steps: sequence numbers are unique at every row.)
        for t in ["records", "resolved", "invalid", "unclaimed"] {
            c.execute(
                &format!("UPDATE {t} SET seq = seq + 1000 WHERE seq > 4"),
                [],
            )
            .unwrap();
            c.execute(
                &format!("UPDATE {t} SET seq = seq - 1001 WHERE seq > 1000"),
                [],
            )
            .unwrap();
        }
        rehash_from(c, 4);
    });
    reports(&tp, 4, "its affidavit names journal position #5");

    // Two records swapped (contents only).
    tamper(&|c| {
        let (b5, b6) = (body(c, 5), body(c, 6));
        c.execute(
            "UPDATE records SET body = ?1, kind = 'invalid-envelope' WHERE seq = 5",
            params![b6],
        )
        .unwrap();
        c.execute(
            "UPDATE records SET body = ?1, kind = 'resolved' WHERE seq = 6",
            params![b5],
        )
        .unwrap();
    });
    reports(&tp, 5, "its hash does not match");

    // Two whole rows swapped (sequence numbers with their hashes).
    tamper(&|c| {
        c.execute("UPDATE records SET seq = 100 WHERE seq = 5", [])
            .unwrap();
        c.execute("UPDATE records SET seq = 5 WHERE seq = 6", [])
            .unwrap();
        c.execute("UPDATE records SET seq = 6 WHERE seq = 100", [])
            .unwrap();
    });
    reports(&tp, 5, "prev_hash");

    // The index no longer finds a record.
    tamper(&|c| {
        c.execute("DELETE FROM resolved WHERE seq = 2", []).unwrap();
    });
    reports(&tp, 2, "no row in the `resolved` index");

    // An index row pointing at another record.
    tamper(&|c| {
        c.execute("UPDATE unclaimed SET seq = 1000 WHERE seq = 7", [])
            .unwrap();
    });
    reports(&tp, 7, "no row in the `unclaimed` index");

    // Back to the original: good again.
    tamper(&|_| {});
    assert!(tp
        .cli(&["journal", "verify"])
        .ok()
        .stdout
        .contains("journal OK: 9 records"));
}

#[test]
fn an_old_journal_with_answers_is_refused_and_an_empty_one_upgraded() {
    // Empty version-2 journal (as `init` made them): upgraded in place.
    let tp = TestTp::new();
    let d = tp.start();
    drop(d);
    let db = db_path(&tp);
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "DROP TABLE records; DROP TABLE resolved; DROP TABLE tp_cards;
             CREATE TABLE resolved (z_hash BLOB PRIMARY KEY NOT NULL, outcome BLOB);
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let d = tp.start();
    assert!(
        d.log_text()
            .contains("journal upgraded to schema version 3"),
        "{}",
        d.log_text()
    );
    let card = card_of(&d);
    resolved(d.ask(&Exchange::new(&card, 3600).claim()));
    drop(d);
    assert!(tp
        .cli(&["journal", "verify"])
        .ok()
        .stdout
        .contains("journal OK: 1 records"));

    // A version-2 journal holding answers: refused, with the reason.
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "DROP TABLE records; DROP TABLE resolved;
             CREATE TABLE resolved (z_hash BLOB PRIMARY KEY NOT NULL, outcome BLOB);
             INSERT INTO resolved VALUES (x'00', x'00');
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let (_, stderr) = tp.serve_expecting_failure();
    assert!(
        stderr.contains("schema version 2 and holds 1 answers"),
        "{stderr}"
    );
    let r = tp.cli(&["journal", "verify"]).fails();
    assert!(r.stderr.contains("schema version 2"), "{r:?}");
}
