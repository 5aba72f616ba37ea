//! The judge against lying and self-contradicting trustees, in pure logic
//! (the stand-in TPs of `common` sign whatever a test makes them sign).
//! Each test is an attack from the audit that the attacker must lose:
//! fewer than t trustees never decide the verdict, a valid opening refutes
//! any invalid-envelope statement, t consistent resolutions prove delivery
//! whatever the others said, and an affidavit must be about the receipt it
//! is weighed with.

mod common;

use common::{cards, ident, send, send_group, sha, trustees, Tp, DEADLINE, FIRST_RECORD, NOW};
use vtp_protocol::affidavit::{Affidavit, AffidavitBody, Statement};
use vtp_protocol::claim::Claim;
use vtp_protocol::envelope::{Envelope, VerifiedEnvelope};
use vtp_protocol::evidence::{judge, judge_group, DeliveredVia, Verdict};
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::Digest32;

const MSG: &[u8] = b"the signed lease, all 12 pages";

/// A 2-of-3 exchange: trustees, envelope, Bob's receipt and claim, and
/// Alice's opening when her envelope is honest.
struct Group {
    tps: Vec<Tp>,
    cards: Vec<TpCard>,
    alice: IdentitySecret,
    bob: IdentitySecret,
    env: Envelope,
    venv: VerifiedEnvelope,
    receipt: Receipt,
    claim: Claim,
}

impl Group {
    fn new(seed: u8, tamper: impl FnMut(usize, &mut vtp_protocol::seal::Inside)) -> Group {
        let tps = trustees(3, seed);
        let cards = cards(&tps);
        let (alice, bob) = (ident("alice", 1), ident("bob", 2));
        let (env, _) = send_group(&alice, bob.card(), &cards, 2, MSG, seed, tamper);
        let venv = env.verify_trusted(&cards).unwrap();
        let receipt = Receipt::issue(&bob, &venv, NOW + 1);
        let claim = Claim::new(&bob, &venv, &receipt.verify(&venv).unwrap(), NOW + 5);
        Group {
            tps,
            cards,
            alice,
            bob,
            env,
            venv,
            receipt,
            claim,
        }
    }
    fn honest(seed: u8) -> Group {
        Group::new(seed, |_, _| {})
    }
    fn opening(&self) -> Opening {
        let vr = self.receipt.verify(&self.venv).unwrap();
        Opening::reveal(&self.alice, &self.venv, &vr).unwrap()
    }
    /// Trustee `i` answers Bob's claim honestly.
    fn resolve(&self, i: usize) -> Affidavit {
        self.tps[i].resolve(&self.claim).unwrap().0
    }
    /// Trustee `i` re-signs its resolution as an invalid-envelope statement
    /// (same receipt, same journal record): a lie only an opening exposes.
    fn lie_invalid(&self, i: usize) -> Affidavit {
        let mut body = self.resolve(i).body;
        let Statement::Resolved {
            key_id,
            receipt_hash,
            ..
        } = body.statement
        else {
            panic!("an honest trustee resolves this envelope");
        };
        body.statement = Statement::InvalidEnvelope {
            key_id,
            receipt_hash,
        };
        self.tps[i].sign(body)
    }
    /// Trustee `i` certifies after the deadline that it never resolved.
    fn unclaimed(&self, i: usize) -> Affidavit {
        self.tps[i].sign(AffidavitBody::about(
            &self.venv,
            i,
            DEADLINE + 1,
            Statement::Unclaimed,
            FIRST_RECORD,
        ))
    }
    fn judge(&self, opening: Option<&Opening>, affs: &[Affidavit]) -> Verdict {
        judge_group(
            &self.cards,
            &self.env,
            &self.receipt,
            opening,
            affs,
            Some(sha(MSG)),
        )
    }
    fn id(&self, i: usize) -> String {
        self.cards[i].id().to_string()
    }
}

#[track_caller]
fn assert_valid(v: &Verdict, via: DeliveredVia) {
    assert!(v.valid, "{v:?}");
    assert_eq!(v.delivered_via, Some(via), "{v:?}");
    assert_eq!(v.message_sha256, Some(sha(MSG).to_hex()));
    assert!(v.reason.is_none(), "{v:?}");
}

#[track_caller]
fn reason(v: &Verdict) -> &str {
    assert!(!v.valid, "{v:?}");
    let r = v.reason.as_deref().expect("an invalid verdict says why");
    assert!(!r.contains('\n'), "one line: {r}");
    r
}

/// Finding 7: one corrupt trustee of a 2-of-3 group re-signs its resolution
/// as invalid-envelope. With Alice's valid opening the receipt is not void:
/// the opening recomputes every z, proves delivery, and names the liar.
#[test]
fn a_valid_opening_refutes_one_trustees_invalid_envelope_statement() {
    let g = Group::honest(0x10);
    let opening = g.opening();
    let lie = g.lie_invalid(1);

    let v = g.judge(Some(&opening), std::slice::from_ref(&lie));
    assert_valid(&v, DeliveredVia::Opening);
    assert_eq!(v.contradicted_by, [g.id(1)]);
    assert_eq!(v.contradictions.len(), 1);
    assert!(
        v.contradictions[0].contains("trustee 2") && v.contradictions[0].contains("recomputes"),
        "{v:?}"
    );
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["contradicted_by"][0], g.id(1));
    assert_eq!(json["delivered_via"], "opening");

    // Without the opening, one statement of 3 decides nothing: it is not
    // enough to void the receipt (that takes more than n - t = 1).
    let v = g.judge(None, std::slice::from_ref(&lie));
    let r = reason(&v);
    assert!(!r.contains("receipt is void"), "{r}");
    assert!(r.contains("0 of the 2 trustees needed"), "{r}");
    assert!(r.contains("1 certified their part invalid"), "{r}");
    assert!(v.contradicted_by.is_empty(), "nothing proves it a lie yet");

    // The two honest trustees' resolutions prove delivery despite the lie;
    // with the opening as well, the lie is named.
    let honest = [g.resolve(0), lie.clone(), g.resolve(2)];
    let v = g.judge(None, &honest);
    assert_valid(&v, DeliveredVia::TrustedParty);
    assert_eq!(v.resolved_by, [g.id(0), g.id(2)]);
    let v = g.judge(Some(&opening), &honest);
    assert_valid(&v, DeliveredVia::TrustedParty);
    assert_eq!(v.contradicted_by, [g.id(1)]);
}

/// More than n - t invalid-envelope statements void the receipt without an
/// opening (fewer than t trustees could ever resolve); with the opening all
/// of them are refuted and named.
#[test]
fn void_needs_more_than_n_minus_t_statements_and_yields_to_an_opening() {
    let g = Group::honest(0x20);
    let lies = [g.lie_invalid(0), g.lie_invalid(2)];
    let v = g.judge(None, &lies);
    let r = reason(&v);
    assert!(r.contains("the receipt is void"), "{r}");
    assert!(r.contains("2 of the 3 trustees"), "{r}");
    assert!(
        r.contains(&g.id(0)) && r.contains(&g.id(2)),
        "names them: {r}"
    );

    let v = g.judge(Some(&g.opening()), &lies);
    assert_valid(&v, DeliveredVia::Opening);
    assert_eq!(v.contradicted_by, [g.id(0), g.id(2)]);
}

/// One TP (n = t = 1): its invalid-envelope statement alone voids the
/// receipt, as before; a valid opening refutes it.
#[test]
fn one_tp_invalid_statement_voids_unless_the_opening_refutes_it() {
    let tp = Tp::new();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let (env, _) = send(&alice, bob.card(), &tp.card, MSG, 0x30);
    let venv = env.verify(&tp.card).unwrap();
    let receipt = Receipt::issue(&bob, &venv, NOW + 1);
    let vr = receipt.verify(&venv).unwrap();
    let claim = Claim::new(&bob, &venv, &vr, NOW + 5);
    let mut body = tp.resolve(&claim).unwrap().0.body;
    let Statement::Resolved {
        key_id,
        receipt_hash,
        ..
    } = body.statement
    else {
        panic!("resolves");
    };
    body.statement = Statement::InvalidEnvelope {
        key_id,
        receipt_hash,
    };
    let lie = tp.sign(body);

    let v = judge(&tp.card, &env, &receipt, None, Some(&lie), None);
    assert!(reason(&v).contains("receipt is void"), "{v:?}");
    let opening = Opening::reveal(&alice, &venv, &vr).unwrap();
    let v = judge(&tp.card, &env, &receipt, Some(&opening), Some(&lie), None);
    assert!(v.valid, "{v:?}");
    assert_eq!(v.delivered_via, Some(DeliveredVia::Opening));
    assert_eq!(v.contradicted_by, [tp.card.id().to_string()]);
    assert!(v.contradictions[0].starts_with("the TP ("), "{v:?}");

    // A TP that says both resolved and never resolved: named, and with
    // nothing else shown nothing proves delivery.
    let resolved = tp.resolve(&claim).unwrap().0;
    let never = tp.sign(AffidavitBody::about(
        &venv,
        0,
        DEADLINE + 1,
        Statement::Unclaimed,
        FIRST_RECORD,
    ));
    let v = judge_group(
        std::slice::from_ref(&tp.card),
        &env,
        &receipt,
        None,
        &[resolved, never],
        None,
    );
    let r = reason(&v);
    assert!(
        r.contains("never resolved it") && r.contains("count for nothing"),
        "{r}"
    );
    assert_eq!(v.contradicted_by, [tp.card.id().to_string()]);
}

/// Finding 8: Alice corrupts trustee 1's z; trustee 1 certifies it invalid
/// (and, after the deadline, that it never resolved it); trustees 2 and 3
/// resolve and Bob has the message. The four statements together prove
/// delivery through the two resolutions.
#[test]
fn t_resolutions_prove_delivery_whatever_another_trustee_certified() {
    let g = Group::new(0x40, |slot, inside| {
        if slot == 0 {
            inside.deadline += 1;
        }
    });
    let invalid = g.resolve(0);
    assert_eq!(invalid.body.kind(), "invalid-envelope");
    let four = [invalid, g.resolve(1), g.resolve(2), g.unclaimed(0)];
    let v = g.judge(None, &four);
    assert_valid(&v, DeliveredVia::TrustedParty);
    assert_eq!(v.resolved_by, [g.id(1), g.id(2)]);
    assert!(
        v.contradicted_by.is_empty(),
        "invalid and unclaimed from one trustee agree: {v:?}"
    );
    // Any order, and the pair alone is not a contradiction either.
    let mut rev = four.clone();
    rev.reverse();
    assert_valid(&g.judge(None, &rev), DeliveredVia::TrustedParty);
    let v = g.judge(None, &[four[0].clone(), four[3].clone()]);
    assert!(!reason(&v).contains("receipt is void"), "{v:?}");
    assert!(v.contradicted_by.is_empty());
}

/// A trustee that signs both a resolution and a certificate that it never
/// resolved is named and counts for nothing; it never makes the whole
/// evidence invalid.
#[test]
fn a_self_contradicting_trustee_is_named_and_ignored() {
    let g = Group::honest(0x50);
    let both = [g.resolve(0), g.unclaimed(0)];
    let v = g.judge(
        None,
        &[both[1].clone(), g.resolve(1), g.resolve(2), both[0].clone()],
    );
    assert_valid(&v, DeliveredVia::TrustedParty);
    assert_eq!(v.resolved_by, [g.id(1), g.id(2)]);
    assert_eq!(v.contradicted_by, [g.id(0)]);
    assert!(v.contradictions[0].contains("never resolved"), "{v:?}");

    // Its resolution does not count towards t.
    let v = g.judge(None, &[both[0].clone(), both[1].clone(), g.resolve(2)]);
    let r = reason(&v);
    assert!(r.contains("1 of the 2 trustees needed"), "{r}");
    assert!(r.contains("count for nothing"), "{r}");
    assert_eq!(v.contradicted_by, [g.id(0)]);

    // Resolved and invalid-envelope from one trustee: the same.
    let v = g.judge(
        None,
        &[g.lie_invalid(0), g.resolve(0), g.resolve(1), g.resolve(2)],
    );
    assert_valid(&v, DeliveredVia::TrustedParty);
    assert_eq!(v.contradicted_by, [g.id(0)]);
}

/// A corrupt trustee's resolution naming another message does not open the
/// envelope's commitment: it is named and ignored, and cannot spoil the
/// honest resolutions.
#[test]
fn a_resolution_for_another_message_is_named_and_ignored() {
    let g = Group::honest(0x60);
    let mut body = g.resolve(0).body;
    if let Statement::Resolved { message_sha256, .. } = &mut body.statement {
        *message_sha256 = sha(b"a message Bob never got");
    }
    let fake = g.tps[0].sign(body);
    let v = g.judge(None, &[fake.clone(), g.resolve(1), g.resolve(2)]);
    assert_valid(&v, DeliveredVia::TrustedParty);
    assert_eq!(v.contradicted_by, [g.id(0)]);
    assert!(v.contradictions[0].contains("commitment"), "{v:?}");
    let v = g.judge(None, &[fake, g.resolve(1)]);
    assert!(reason(&v).contains("1 of the 2 trustees needed"), "{v:?}");
}

/// Finding 6 (judge side): a resolution or invalid-envelope statement names
/// the receipt the trustee holds; weighed with another receipt for the
/// same envelope it is refused, in one line naming the trustee.
#[test]
fn an_affidavit_about_another_receipt_is_refused() {
    let g = Group::honest(0x70);
    let other = Receipt::issue(&g.bob, &g.venv, NOW + 2);
    assert_ne!(other.hash(), g.receipt.hash());
    let weigh =
        |affs: &[Affidavit]| judge_group(&g.cards, &g.env, &other, None, affs, Some(sha(MSG)));
    let v = weigh(&[g.resolve(0), g.resolve(1)]);
    let r = reason(&v);
    assert!(r.contains("another receipt"), "{r}");
    assert!(r.contains("trustee 1") && r.contains(&g.id(0)), "{r}");
    let r = weigh(&[g.lie_invalid(2)]).reason.unwrap();
    assert!(r.contains("another receipt"), "{r}");
    assert!(r.contains("invalid-envelope"), "{r}");
    // An unclaimed certificate names no receipt: weighed with any.
    let v = weigh(&[g.unclaimed(0)]);
    assert!(!reason(&v).contains("another receipt"), "{v:?}");
    // The receipt the trustees hold: valid.
    assert_valid(
        &g.judge(None, &[g.resolve(0), g.resolve(1)]),
        DeliveredVia::TrustedParty,
    );
}

/// An opening that does not check is no proof, but it cannot spoil t
/// resolutions either; alone it is refused with its own reason.
#[test]
fn a_bad_opening_neither_proves_nor_spoils() {
    let g = Group::honest(0x80);
    let mut bad = g.opening();
    bad.secret[0] ^= 1;
    let v = g.judge(Some(&bad), &[g.resolve(0), g.resolve(2)]);
    assert_valid(&v, DeliveredVia::TrustedParty);
    let v = g.judge(Some(&bad), &[]);
    assert!(reason(&v).contains("opening"), "{v:?}");
    // Nor is a message the evidence does not deliver accepted.
    let v = judge_group(
        &g.cards,
        &g.env,
        &g.receipt,
        Some(&g.opening()),
        &[],
        Some(Digest32([0; 32])),
    );
    assert!(reason(&v).contains("not the one delivered"));
}
