//! The transaction log's rules: one outcome per transaction id, COMMIT
//! before the deadline, ABORT at or after it, INVALID from a dispute; with
//! a stand-in log and bank (see `bank_kit`).

mod bank_kit;

use bank_kit::*;
use vtp_protocol::affidavit::ChainPosition;
use vtp_protocol::bank::BankStatement;
use vtp_protocol::txlog::{
    AbortRequest, CommitRequest, LogRefusal, Outcome, TxnOutcome, TxnOutcomeBody,
};
use vtp_protocol::{Digest32, ProtocolError};

const DEADLINE: u64 = NOW + DAY;

fn paid(w: &mut World, txn: u8) -> BankStatement {
    let coins = w.withdraw(&["EUR1"]);
    w.pay(&coins, w.terms(txn, 100, DEADLINE)).unwrap()
}

#[test]
fn commit_before_the_deadline_then_the_same_answer_and_no_abort() {
    let mut w = World::new();
    let p = paid(&mut w, 1);
    let c = w.commit(&p, DEADLINE - 1).unwrap();
    assert!(matches!(c.body.outcome, Outcome::Commit { .. }));
    c.verify(&w.log.card).unwrap();
    // Again, even after the deadline: the recorded bytes.
    assert_eq!(w.commit(&p, DEADLINE + 10).unwrap(), c);
    // ABORT after COMMIT: refused with the COMMIT as proof.
    match w.abort(&p, DEADLINE + 10).unwrap_err().log() {
        LogRefusal::AlreadyDecided { recorded } => assert_eq!(*recorded, c),
        r => panic!("{r:?}"),
    }
    // INVALID after COMMIT: refused too.
    assert!(matches!(
        w.log
            .invalid(&p, &w.bank.card, DEADLINE - 1)
            .unwrap_err()
            .log(),
        LogRefusal::AlreadyDecided { .. }
    ));
    assert_eq!(w.log.outcomes.len(), 1);
}

#[test]
fn abort_at_the_deadline_then_no_commit() {
    let mut w = World::new();
    let p = paid(&mut w, 1);
    assert!(matches!(
        w.abort(&p, DEADLINE - 1).unwrap_err().log(),
        LogRefusal::TooEarly { .. }
    ));
    let a = w.abort(&p, DEADLINE).unwrap();
    assert_eq!(a.body.outcome, Outcome::Abort);
    assert_eq!(a.body.at, DEADLINE);
    a.verify(&w.log.card).unwrap();
    assert_eq!(w.abort(&p, DEADLINE + 5).unwrap(), a);
    // COMMIT after ABORT: the ABORT is the proof.
    match w.commit(&p, DEADLINE - 5).unwrap_err().log() {
        LogRefusal::AlreadyDecided { recorded } => assert_eq!(*recorded, a),
        r => panic!("{r:?}"),
    }
}

#[test]
fn no_commit_at_or_after_the_deadline() {
    let mut w = World::new();
    let p = paid(&mut w, 1);
    for now in [DEADLINE, DEADLINE + 1] {
        assert!(matches!(
            w.commit(&p, now).unwrap_err().log(),
            LogRefusal::DeadlinePassed { .. }
        ));
    }
    assert!(w.log.outcomes.is_empty());
}

#[test]
fn invalid_before_the_deadline_answers_later_aborts() {
    let mut w = World::new();
    let p = paid(&mut w, 1);
    let i = w.log.invalid(&p, &w.bank.card, DEADLINE - 10).unwrap();
    assert_eq!(i.body.outcome, Outcome::Invalid);
    assert_eq!(
        w.abort(&p, DEADLINE).unwrap(),
        i,
        "INVALID stands; it frees the coins"
    );
    assert!(matches!(
        w.commit(&p, DEADLINE - 5).unwrap_err().log(),
        LogRefusal::AlreadyDecided { .. }
    ));
    let p2 = paid(&mut w, 2);
    assert!(matches!(
        w.log
            .invalid(&p2, &w.bank.card, DEADLINE)
            .unwrap_err()
            .log(),
        LogRefusal::DeadlinePassed { .. }
    ));
}

#[test]
fn no_abort_past_the_logs_retention() {
    let mut w = World::new();
    let p = paid(&mut w, 1);
    let late = DEADLINE + w.log.policy.retention_secs;
    assert!(matches!(
        w.abort(&p, late).unwrap_err().log(),
        LogRefusal::PastRetention { .. }
    ));
    w.abort(&p, late - 1).unwrap();
}

#[test]
fn an_outcome_is_about_its_terms_only() {
    let mut w = World::new();
    let p = paid(&mut w, 1);
    let c = w.commit(&p, NOW + 10).unwrap();
    // A corrupt bank signs a second payment for the same transaction id
    // with an earlier deadline; an abort with it is refused, not answered.
    let mut terms = p.payment_terms().unwrap().clone();
    terms.deadline = NOW + 20;
    let mut body = p.body.clone();
    body.kind = vtp_protocol::bank::BankStatementKind::Payment {
        terms,
        lock: Digest32([0; 32]),
    };
    let forged = w.bank.sign(body);
    match w.abort(&forged, NOW + 30).unwrap_err().log() {
        LogRefusal::TermsConflict { recorded } => assert_eq!(*recorded, c),
        r => panic!("{r:?}"),
    }
}

#[test]
fn only_the_merchant_commits_and_only_with_a_payment_of_a_known_bank() {
    let mut w = World::new();
    let p = paid(&mut w, 1);
    let mallory = ident("Mallory", 66);
    let req = CommitRequest::new(&mallory, &p, b"k".to_vec(), NOW);
    assert!(matches!(
        w.log
            .commit(&req, &w.bank.card, NOW)
            .unwrap_err()
            .protocol(),
        ProtocolError::Mismatch {
            what: "commit request",
            ..
        }
    ));
    // A payment of a bank the log does not serve (checked against its card).
    let mut other = StandInBank::new("other bank", 0x52, &brand_specs());
    other.book.operator_credit(w.alice.id(), &eur_cents(1000));
    let req = CommitRequest::new(&w.merchant, &p, b"k".to_vec(), NOW);
    assert!(w.log.commit(&req, &other.card, NOW).is_err());
    // A payment naming another log.
    let coins = w.withdraw(&["EUR1"]);
    let mut terms = w.terms(2, 100, DEADLINE);
    terms.log = StandInLog::new(0x62).card.id();
    let p2 = w.pay(&coins, terms).unwrap();
    let req = CommitRequest::new(&w.merchant, &p2, b"k".to_vec(), NOW);
    assert!(matches!(
        w.log
            .commit(&req, &w.bank.card, NOW)
            .unwrap_err()
            .protocol(),
        ProtocolError::Mismatch {
            what: "payment",
            ..
        }
    ));
    assert!(matches!(
        w.log
            .abort(&AbortRequest { payment: p2 }, &w.bank.card, DEADLINE)
            .unwrap_err()
            .protocol(),
        ProtocolError::Mismatch {
            what: "payment",
            ..
        }
    ));
    // A tampered commit request.
    let mut req = CommitRequest::new(&w.merchant, &p, b"k".to_vec(), NOW);
    req.body.release = b"other".to_vec();
    assert!(matches!(
        w.log
            .commit(&req, &w.bank.card, NOW)
            .unwrap_err()
            .protocol(),
        ProtocolError::BadSignature { .. }
    ));
    assert!(w.log.outcomes.is_empty());
}

#[test]
fn outcomes_that_break_the_logs_time_rules_are_no_evidence() {
    let mut w = World::new();
    let p = paid(&mut w, 1);
    let terms = p.payment_terms().unwrap().clone();
    let at = |outcome, at| -> TxnOutcome {
        w.log.sign(TxnOutcomeBody {
            log: w.log.card.id(),
            terms: terms.clone(),
            outcome,
            at,
            journal: ChainPosition {
                seq: 1,
                prev: Digest32([0; 32]),
            },
        })
    };
    let commit = || Outcome::Commit {
        release: Digest32([0; 32]),
    };
    assert!(at(commit(), DEADLINE - 1).verify(&w.log.card).is_ok());
    assert!(matches!(
        at(commit(), DEADLINE).verify(&w.log.card),
        Err(ProtocolError::Deadline(_))
    ));
    assert!(at(Outcome::Abort, DEADLINE).verify(&w.log.card).is_ok());
    assert!(at(Outcome::Abort, DEADLINE - 1)
        .verify(&w.log.card)
        .is_err());
    assert!(at(Outcome::Invalid, DEADLINE).verify(&w.log.card).is_err());
    let mut o = at(Outcome::Abort, DEADLINE);
    o.body.journal.seq = 0;
    o = w.log.sign(o.body);
    assert!(o.verify(&w.log.card).is_err());
    let other = StandInLog::new(0x62);
    assert!(at(Outcome::Abort, DEADLINE).verify(&other.card).is_err());
    let o = at(Outcome::Abort, DEADLINE);
    assert_eq!(TxnOutcome::from_file(&o.to_file()).unwrap(), o);
}
