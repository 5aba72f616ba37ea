//! Reliability of the trusted party, with real daemon processes on a real
//! SoftHSM token and the test hooks of `tp_daemon::faults`:
//! - each labelled crash point (`after-decrypt`, `after-sign`,
//!   `after-commit`, `before-reply`): the daemon aborts there; no claim was
//!   ever answered without its committed record; after a restart every claim
//!   retried succeeds exactly once (one record, the same answer as any
//!   answer given before); the journal passes SQLite's integrity check and
//!   `tp-daemon journal verify`;
//! - device faults (token errors while decrypting or signing, a logout,
//!   every session closed, a slow token): the daemon answers `Unavailable`
//!   with nothing recorded, or recovers transparently; it keeps serving
//!   without a restart and a retry succeeds;
//! - a failed journal batch: its claims answer `Unavailable`, the chain
//!   continues after the last committed record, retries succeed;
//! - group commit: 64 concurrent claims, all committed, in fewer batches.

mod common;

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::*;
use vtp_protocol::wire::{ClaimOutcome, ErrorCode, Request, Response, WireError};
use vtp_protocol::Digest32;
use vtp_tp_daemon::journal::chain::JournalRecord;

fn z_of(x: &Exchange) -> Digest32 {
    x.envelope.header.trustees[0].z_hash
}

/// The record the journal holds for z (resolved), read with plain SQL.
fn recorded(tp: &TestTp, z: &Digest32) -> Option<ClaimOutcome> {
    let db = tp.journal_db();
    let mut st = db
        .prepare(
            "SELECT r.body FROM resolved x JOIN records r ON r.seq = x.seq WHERE x.z_hash = ?1",
        )
        .unwrap();
    let mut rows = st.query([&z.0[..]]).unwrap();
    let row = rows.next().unwrap()?;
    let body: Vec<u8> = row.get(0).unwrap();
    assert!(rows.next().unwrap().is_none(), "two records for one z");
    match JournalRecord::decode(&body).unwrap() {
        JournalRecord::Claim { outcome, .. } => Some(outcome),
        other => panic!("not a claim record: {other:?}"),
    }
}

/// SQLite's integrity check and `tp-daemon journal verify` both pass.
#[track_caller]
fn journal_is_sound(tp: &TestTp) -> String {
    let ok: String = tp
        .journal_db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let out = tp.cli(&["journal", "verify"]).ok().stdout;
    assert!(out.contains("journal OK"), "{out}");
    out
}

fn is_resolved(r: &Response) -> bool {
    matches!(r, Response::Claim(ClaimOutcome::Resolved { .. }))
}

fn is_unavailable(r: &Response) -> bool {
    matches!(
        r,
        Response::Error(WireError {
            code: ErrorCode::Unavailable,
            ..
        })
    )
}

/// The daemon died by `abort()` at `point`.
#[track_caller]
fn died_at(d: Daemon, point: &str) {
    let log = d.log.clone();
    let status = d.wait_exit(Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}\n{text}");
    assert!(
        text.contains(&format!("vtp test fault: {point} reached")),
        "{text}"
    );
    assert!(text.contains("TEST HOOK"), "a loud warning:\n{text}");
}

/// Crash point `point`: first with one claim, dying the first time the
/// point is reached (`committed`: whether that claim's record is durable
/// then); then with four clients sending claims, dying the `nth` time (at
/// least `min_answered` answers were sent by then); after each crash a
/// restart, and every claim retried.
fn crash_point(point: &str, committed: bool, nth: u32, min_answered: usize) {
    let tp = TestTp::new();
    let card = card_of(&tp.start());

    // One claim; the daemon dies before answering.
    let first = Exchange::new(&card, 3600);
    let d = tp.start_with_env(&[("VTP_TEST_FAULT", point)]);
    assert!(try_ask(d.addr, &first.claim()).is_none(), "no answer");
    died_at(d, point);
    let stored = recorded(&tp, &z_of(&first));
    assert_eq!(
        stored.is_some(),
        committed,
        "{point}: record after the crash"
    );
    journal_is_sound(&tp);

    // Restarted: the retry succeeds, exactly once, with the stored answer.
    let d = tp.start();
    let answer = d.ask(&first.claim());
    assert!(is_resolved(&answer), "{answer:?}");
    let Response::Claim(answer) = answer else {
        unreachable!()
    };
    if let Some(s) = stored {
        assert_eq!(
            answer, s,
            "the answer is the record committed before the crash"
        );
    }
    assert_eq!(d.ask(&first.claim()), Response::Claim(answer.clone()));
    assert_eq!(tp.resolved_rows(&z_of(&first)), 1);
    drop(d);

    // Under load: four clients, the daemon dies the third time the point is
    // reached. Every answer given must be committed, and equal its record.
    let d = tp.start_with_env(&[("VTP_TEST_FAULT", &format!("{point}@{nth}"))]);
    let xs: Vec<Exchange> = (0..16).map(|_| Exchange::new(&card, 3600)).collect();
    let addr = d.addr;
    let answers: Vec<Option<Response>> = std::thread::scope(|s| {
        let handles: Vec<_> = xs
            .chunks(4)
            .map(|chunk| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut alive = true;
                    for x in chunk {
                        let r = if alive {
                            try_ask(addr, &x.claim())
                        } else {
                            None
                        };
                        alive = r.is_some();
                        out.push(r);
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    died_at(d, point);
    let mut answered = 0;
    for (x, a) in xs.iter().zip(&answers) {
        let stored = recorded(&tp, &z_of(x));
        match a {
            Some(Response::Claim(o)) => {
                answered += 1;
                assert_eq!(
                    stored.as_ref(),
                    Some(o),
                    "{point}: an answer was sent for a claim without a committed record"
                );
            }
            Some(other) => panic!("{point}: unexpected answer {other:?}"),
            None => {}
        }
    }
    assert!(
        answered < xs.len(),
        "{point}: the crash came after every answer"
    );
    assert!(
        answered >= min_answered,
        "{point}: {answered} answers before the crash"
    );
    journal_is_sound(&tp);

    // Restarted: every claim retried succeeds exactly once.
    let d = tp.start();
    for (x, a) in xs.iter().zip(&answers) {
        let r = d.ask(&x.claim());
        assert!(is_resolved(&r), "{point}: retry: {r:?}");
        if let Some(before) = a {
            assert_eq!(&r, before, "{point}: the retry changed the answer");
        }
        assert_eq!(tp.resolved_rows(&z_of(x)), 1);
    }
    drop(d);
    let out = journal_is_sound(&tp);
    assert!(out.contains("journal OK: 17 records"), "{out}");
    eprintln!(
        "{point}: {answered} of {} claims answered before the crash; all retried once",
        xs.len()
    );
}

#[test]
fn crash_after_decrypt() {
    // Four clients: the 7th decryption starts after 3 answers.
    crash_point("after-decrypt", false, 7, 3);
}

#[test]
fn crash_after_sign() {
    crash_point("after-sign", false, 7, 3);
}

#[test]
fn crash_after_commit() {
    // (Batches vary in size: no lower bound on the answers.)
    crash_point("after-commit", true, 3, 0);
}

#[test]
fn crash_before_reply() {
    crash_point("before-reply", true, 5, 1);
}

/// Claims sent one at a time, each retried while the daemon answers
/// `Unavailable` (which must leave no record); returns how many
/// `Unavailable` answers there were. The daemon is never restarted.
fn claims_with_retries(tp: &TestTp, d: &Daemon, xs: &[Exchange]) -> usize {
    let mut unavailable = 0;
    for x in xs {
        let mut tries = 0;
        loop {
            tries += 1;
            let r = d.ask(&x.claim());
            if is_resolved(&r) {
                break;
            }
            assert!(is_unavailable(&r), "{r:?}");
            assert_eq!(tp.resolved_rows(&z_of(x)), 0, "Unavailable, yet recorded");
            unavailable += 1;
            assert!(tries < 20, "the retries never succeed");
        }
        assert_eq!(tp.resolved_rows(&z_of(x)), 1);
    }
    unavailable
}

/// Four clients at once, each claim retried after `Unavailable`.
fn concurrent_claims_with_retries(tp: &TestTp, d: &Daemon, xs: &[Exchange]) -> usize {
    let addr = d.addr;
    let unavailable: usize = std::thread::scope(|s| {
        let hs: Vec<_> = xs
            .chunks(xs.len().div_ceil(4))
            .map(|chunk| {
                s.spawn(move || {
                    let mut unavailable = 0;
                    for x in chunk {
                        let mut tries = 0;
                        loop {
                            tries += 1;
                            let r = try_ask(addr, &x.claim()).expect("an answer");
                            if is_resolved(&r) {
                                break;
                            }
                            assert!(is_unavailable(&r), "{r:?}");
                            unavailable += 1;
                            assert!(tries < 20, "the retries never succeed");
                        }
                    }
                    unavailable
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    for x in xs {
        assert_eq!(tp.resolved_rows(&z_of(x)), 1);
    }
    unavailable
}

#[test]
fn token_errors_while_decrypting_answer_unavailable_and_retries_succeed() {
    let tp = TestTp::new();
    let d = tp.start_with_env(&[("VTP_TEST_DEVICE_FAULT", "error-every:3")]);
    let card = card_of(&d);
    let xs: Vec<Exchange> = (0..9).map(|_| Exchange::new(&card, 3600)).collect();
    let unavailable = claims_with_retries(&tp, &d, &xs);
    assert!(unavailable >= 3, "{unavailable}");
    let log = d.log_text();
    assert!(log.contains("TEST FAULTS INJECTED"), "{log}");
    assert!(log.contains("test fault: failing a decryption"), "{log}");
    assert!(log.contains("device failure; nothing released"), "{log}");
    // Same process, still serving.
    card_of(&d);
    drop(d);
    assert!(journal_is_sound(&tp).contains("journal OK: 9 records"));
}

#[test]
fn token_errors_while_signing_leave_no_gap_in_the_chain() {
    let tp = TestTp::new();
    let d = tp.start_with_env(&[("VTP_TEST_DEVICE_FAULT", "sign-error-every:2")]);
    let card = card_of(&d);
    let xs: Vec<Exchange> = (0..8).map(|_| Exchange::new(&card, 3600)).collect();
    let unavailable = concurrent_claims_with_retries(&tp, &d, &xs);
    assert!(unavailable >= 4, "{unavailable}");
    assert!(d.log_text().contains("test fault: failing a signature"));
    card_of(&d);
    drop(d);
    // The positions of failed signatures were reused: no gaps.
    assert!(journal_is_sound(&tp).contains("journal OK: 8 records"));
}

/// Logged out / sessions closed mid-operation: recovered inside the device
/// layer (or, at worst, `Unavailable` and a successful retry).
fn device_recovers(fault: &str, expect_in_log: &str) {
    let tp = TestTp::new();
    let d = tp.start_with_env(&[("VTP_TEST_DEVICE_FAULT", fault)]);
    let card = card_of(&d);
    let xs: Vec<Exchange> = (0..12).map(|_| Exchange::new(&card, 3600)).collect();
    let unavailable = concurrent_claims_with_retries(&tp, &d, &xs);
    let log = d.log_text();
    assert!(log.contains(expect_in_log), "{log}");
    assert!(log.contains("logged in to the token again"), "{log}");
    // And once more, sequentially, on the same process.
    let more: Vec<Exchange> = (0..4).map(|_| Exchange::new(&card, 3600)).collect();
    let unavailable = unavailable + claims_with_retries(&tp, &d, &more);
    card_of(&d);
    drop(d);
    assert!(journal_is_sound(&tp).contains("journal OK: 16 records"));
    eprintln!("{fault}: {unavailable} Unavailable answers (retried)");
}

#[test]
fn a_logged_out_token_is_logged_in_again_without_a_restart() {
    device_recovers(
        "logout-every:3",
        "test fault: logging the token out after a decryption",
    );
}

#[test]
fn closed_sessions_are_replaced_without_a_restart() {
    device_recovers(
        "close-sessions-every:3",
        "the anchor session is gone; opening a new one",
    );
}

#[test]
fn a_slow_token_slows_claims_but_not_the_daemon() {
    let tp = TestTp::new();
    let d = tp.start_with_env(&[("VTP_TEST_DEVICE_FAULT", "delay-ms:400")]);
    let card = card_of(&d);
    let xs: Vec<Exchange> = (0..8).map(|_| Exchange::new(&card, 3600)).collect();
    let addr = d.addr;
    std::thread::scope(|s| {
        let claims: Vec<_> = xs
            .iter()
            .map(|x| s.spawn(move || try_ask(addr, &x.claim()).expect("an answer")))
            .collect();
        // While eight claims wait for the slow token, other requests are
        // answered at once.
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        card_of(&d);
        let took = started.elapsed();
        assert!(took < Duration::from_millis(300), "GetCard took {took:?}");
        for c in claims {
            let r = c.join().unwrap();
            assert!(is_resolved(&r), "{r:?}");
        }
    });
    drop(d);
    assert!(journal_is_sound(&tp).contains("journal OK: 8 records"));
}

#[test]
fn a_failed_journal_batch_releases_nothing_and_the_chain_continues() {
    let tp = TestTp::new();
    let d = tp.start_with_env(&[("VTP_TEST_FAULT", "fail-commit-every:3")]);
    let card = card_of(&d);
    let xs: Vec<Exchange> = (0..9).map(|_| Exchange::new(&card, 3600)).collect();
    let unavailable = claims_with_retries(&tp, &d, &xs);
    assert!(unavailable >= 3, "{unavailable}");
    let log = d.log_text();
    assert!(log.contains("journal batch failed"), "{log}");
    // Concurrent claims too: a failed batch also fails what was queued on it.
    let ys: Vec<Exchange> = (0..12).map(|_| Exchange::new(&card, 3600)).collect();
    concurrent_claims_with_retries(&tp, &d, &ys);
    drop(d);
    assert!(journal_is_sound(&tp).contains("journal OK: 21 records"));
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}")) as u64
}

/// Send every claim at once, each on its own connection (released by one
/// barrier), and collect the answers in order.
fn all_at_once(addr: SocketAddr, claims: &[Request]) -> Vec<Response> {
    let barrier = std::sync::Barrier::new(claims.len());
    std::thread::scope(|s| {
        let hs: Vec<_> = claims
            .iter()
            .map(|c| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut conn = Conn::connect(addr);
                    barrier.wait();
                    conn.request(c)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn group_commit_64_concurrent_claims_in_fewer_batches() {
    let tp = TestTp::new();
    let d = tp.start_with(&["--allow-root", "--metrics-listen", "127.0.0.1:0"], &[]);
    let card = card_of(&d);
    let xs: Vec<Exchange> = (0..64).map(|_| Exchange::new(&card, 3600)).collect();
    let claims: Vec<Request> = xs.iter().map(|x| x.claim()).collect();
    let answers = all_at_once(d.addr, &claims);
    for (x, a) in xs.iter().zip(&answers) {
        assert!(is_resolved(a), "{a:?}");
        assert_eq!(
            recorded(&tp, &z_of(x)).as_ref(),
            Some(&match a {
                Response::Claim(o) => o.clone(),
                _ => unreachable!(),
            })
        );
    }
    let (_, m) = d.http_get("/metrics");
    let batches = metric(&m, "vtp_journal_batches_total{result=\"committed\"}");
    let records = metric(&m, "vtp_journal_records_total{result=\"committed\"}");
    assert_eq!(records, 64, "{m}");
    assert!(batches < 64, "{batches} batches for 64 records");
    // The same, in the log at shutdown.
    let log = d.log.clone();
    assert!(d.terminate().success());
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.contains(&format!(
            "journal writer stopped: 64 records in {batches} batches"
        )),
        "{text}"
    );
    assert!(journal_is_sound(&tp).contains("journal OK: 64 records"));
    eprintln!("64 concurrent claims committed in {batches} batches");
}

/// Group commit under load (`Writer::hold_batches`, `service/commit_hold.rs`):
/// with one device thread the records arrive one by one, each a device
/// operation after the last, so without holding every one would get its own
/// commit. While claims are queued for the device thread, the writer holds
/// a commit open for two measured device operations, so they share a few.
/// The token is slowed to 30 ms per operation (labelled test fault
/// `delay-ms`) so that the operation time, not the machine's load, sets the
/// pace: each held commit then gathers about three records.
#[test]
fn queued_claims_share_held_commits() {
    let tp = TestTp::new();
    tp.edit_config(|t| {
        t.replacen(
            "[limits]",
            "[limits]\ndevice_threads = 1\ncommit_delay_us = 100000",
            1,
        )
    });
    let d = tp.start_with(
        &["--allow-root", "--metrics-listen", "127.0.0.1:0"],
        &[("VTP_TEST_DEVICE_FAULT", "delay-ms:30")],
    );
    assert!(
        d.log_text().contains("device_threads=1"),
        "{}",
        d.log_text()
    );
    let card = card_of(&d);
    let n = 16;
    let xs: Vec<Exchange> = (0..n).map(|_| Exchange::new(&card, 3600)).collect();
    let claims: Vec<Request> = xs.iter().map(|x| x.claim()).collect();
    let answers = all_at_once(d.addr, &claims);
    for a in &answers {
        assert!(is_resolved(a), "{a:?}");
    }
    let (_, m) = d.http_get("/metrics");
    let batches = metric(&m, "vtp_journal_batches_total{result=\"committed\"}");
    let records = metric(&m, "vtp_journal_records_total{result=\"committed\"}");
    assert_eq!(records, n as u64, "{m}");
    assert!(
        batches <= 10,
        "{batches} commits for {n} claims queued behind one device thread"
    );
    assert!(d.terminate().success());
    assert!(journal_is_sound(&tp).contains(&format!("journal OK: {n} records")));
    eprintln!("{n} queued claims committed in {batches} batches");
}
