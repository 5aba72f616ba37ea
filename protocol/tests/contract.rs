//! Contract signing in pure logic: agreements, the bound exchange, and the
//! judge of contract bundles under tampering. As in `flow.rs`, the TP's token
//! is stood in for by host keys only because this crate is sans-IO.

mod common;

use common::{ident, sha, Tp, DEADLINE, FIRST_RECORD, NOW};
use vtp_protocol::affidavit::{Affidavit, AffidavitBody, Statement};
use vtp_protocol::claim::Claim;
use vtp_protocol::contract::{
    envelope_nonce, judge_bundle, Agreement, ContractBundle, ContractSignature, Outcome, Proposal,
};
use vtp_protocol::encoding::{self, Kind};
use vtp_protocol::envelope::{self, Envelope};
use vtp_protocol::evidence::DeliveredVia;
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::message::MessageSealer;
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::seal::Inside;
use vtp_protocol::ProtocolError;

/// The stand-in TP's unclaimed statement about `env` (slot 0), after the
/// deadline.
fn unclaimed(tp: &Tp, env: &Envelope) -> Affidavit {
    let venv = env.verify(&tp.card).unwrap();
    tp.sign(AffidavitBody::about(
        &venv,
        0,
        DEADLINE + 5,
        Statement::Unclaimed,
        FIRST_RECORD,
    ))
}

const CONTRACT: &[u8] = b"Alice sells Bob her car for 1000 EUR.\n";

struct World {
    tp: Tp,
    alice: IdentitySecret,
    bob: IdentitySecret,
}

fn world() -> World {
    World {
        tp: Tp::new(),
        alice: ident("alice", 1),
        bob: ident("bob", 2),
    }
}

impl World {
    fn agreement(&self, contract: &[u8], nonce: u8) -> Agreement {
        let p = Proposal::new(
            &self.alice,
            self.bob.card(),
            &self.tp.card,
            sha(contract),
            DEADLINE,
            NOW,
            [nonce; 32],
        )
        .unwrap();
        let p = Proposal::from_file(&p.to_file()).unwrap();
        let a = p
            .accept(
                &self.bob,
                &self.tp.card,
                sha(contract),
                self.alice.id(),
                NOW + 1,
                600,
            )
            .unwrap();
        Agreement::from_file(&a.to_file()).unwrap()
    }

    /// Alice's A1 for an agreement, with `message` as m and `nonce` as the
    /// envelope nonce (the honest one unless a test says otherwise).
    fn envelope_with(
        &self,
        a: &Agreement,
        message: &[u8],
        nonce: [u8; 32],
        tamper: impl FnOnce(&mut Inside),
    ) -> (Envelope, Vec<u8>) {
        let prep = envelope::prepare(
            &self.alice,
            &a.counterparty_card,
            &self.tp.card,
            a.body.deadline,
            NOW + 2,
            nonce,
        )
        .unwrap();
        let mut s = MessageSealer::new(prep.message_key(), message.len() as u64);
        let cm = s.seal_chunk(message).unwrap();
        assert!(s.next_len().is_none());
        let mut h = encoding::CmHasher::default();
        h.update(&cm);
        let env = prep
            .finish_cheating(
                &self.alice,
                h.finish(),
                cm.len() as u64,
                sha(message),
                tamper,
            )
            .unwrap();
        (env, cm)
    }

    fn sign(&self, a: &Agreement) -> (ContractSignature, Envelope, Vec<u8>) {
        let va = a.verify(&self.tp.card).unwrap();
        let sig = ContractSignature::sign(&self.alice, &va).unwrap();
        let nonce = envelope_nonce(&a.id(), &self.tp.card.current_key().id);
        let (env, cm) = self.envelope_with(a, &sig.to_file(), nonce, |_| {});
        (sig, env, cm)
    }

    /// Bob's B1 for contracts: the envelope must be the agreement's exchange.
    fn commit(&self, a: &Agreement, env: &Envelope) -> Result<Receipt, ProtocolError> {
        let va = a.verify(&self.tp.card)?;
        let venv = env.verify(&self.tp.card)?;
        venv.check_for_recipient(
            self.bob.id(),
            std::slice::from_ref(&self.tp.card),
            NOW + 3,
            60,
        )?;
        va.check_envelope(venv.header())?;
        Ok(Receipt::issue(&self.bob, &venv, NOW + 3))
    }

    /// An executed bundle, completed directly (Alice's opening).
    fn direct(&self) -> ContractBundle {
        let a = self.agreement(CONTRACT, 9);
        let (sig, env, cm) = self.sign(&a);
        let receipt = self.commit(&a, &env).unwrap();
        let venv = env.verify(&self.tp.card).unwrap();
        let vr = receipt.verify(&venv).unwrap();
        let opening = Opening::reveal(&self.alice, &venv, &vr).unwrap();
        ContractBundle {
            agreement: a,
            envelope: env,
            message_ciphertext: cm,
            receipt: Some(receipt),
            opening: Some(opening),
            affidavit: None,
            contract_signature: Some(sig),
        }
    }
}

fn verdict(w: &World, b: &ContractBundle) -> vtp_protocol::contract::ContractVerdict {
    // Round-trip through the file format, as `vtp contract verify` does.
    let b = ContractBundle::from_file(&b.to_file()).unwrap();
    judge_bundle(&w.tp.card, sha(CONTRACT), &b)
}

#[track_caller]
fn assert_invalid(w: &World, b: &ContractBundle, why: &str) {
    let v = verdict(w, b);
    assert!(!v.valid, "should be invalid ({why})");
    assert!(!v.executed());
    let reason = v.reason.unwrap();
    assert!(
        reason.contains(why),
        "reason {reason:?} should mention {why:?}"
    );
}

#[test]
fn direct_completion_is_executed() {
    let w = world();
    let b = w.direct();
    let v = verdict(&w, &b);
    assert!(v.executed(), "{v:?}");
    assert_eq!(v.completed_via, Some(DeliveredVia::Opening));
    assert_eq!(v.proposer, w.alice.id().to_string());
    assert_eq!(v.counterparty, w.bob.id().to_string());
    assert_eq!(v.deadline, DEADLINE);
    assert_eq!(v.contract_sha256, sha(CONTRACT).to_string());
}

#[test]
fn completion_through_the_tp_is_executed() {
    let w = world();
    let mut b = w.direct();
    let venv = b.envelope.verify(&w.tp.card).unwrap();
    let vr = b.receipt.as_ref().unwrap().verify(&venv).unwrap();
    let (aff, released) =
        w.tp.resolve(&Claim::new(&w.bob, &venv, &vr, NOW + 5))
            .unwrap();
    assert!(released.is_some());
    b.opening = None;
    b.affidavit = Some(aff);
    let v = verdict(&w, &b);
    assert!(v.executed(), "{v:?}");
    assert_eq!(v.completed_via, Some(DeliveredVia::TrustedParty));
    assert_eq!(v.tp_statement_at, Some(NOW + 10));
}

#[test]
fn signing_again_gives_the_same_exchange() {
    let w = world();
    let a = w.agreement(CONTRACT, 9);
    let (s1, e1, c1) = w.sign(&a);
    let (s2, e2, c2) = w.sign(&a);
    assert_eq!(s1, s2);
    assert_eq!(
        e1.zs, e2.zs,
        "one z per agreement (and TP key): claims are keyed by it"
    );
    assert_eq!(c1, c2);
}

#[test]
fn tampered_bundles_are_refused() {
    let w = world();
    let good = w.direct();

    // The contract shown is another one.
    let v = judge_bundle(&w.tp.card, sha(b"another contract"), &good);
    assert!(!v.valid && v.reason.unwrap().contains("not the agreed one"));

    // Agreement body altered after both signed (later deadline).
    let mut b = good.clone();
    b.agreement.body.deadline += 1;
    assert_invalid(&w, &b, "bad signature");

    // Bob's countersignature missing: Alice's own signature twice.
    let mut b = good.clone();
    b.agreement.counterparty_signature = b.agreement.proposer_signature;
    assert_invalid(&w, &b, "counterparty's signature");

    // The contract signature altered.
    let mut b = good.clone();
    b.contract_signature.as_mut().unwrap().signature.0[10] ^= 1;
    assert_invalid(&w, &b, "contract signature");

    // Message ciphertext altered.
    let mut b = good.clone();
    b.message_ciphertext[0] ^= 1;
    assert_invalid(&w, &b, "message ciphertext");

    // No delivery proof at all.
    let mut b = good.clone();
    b.opening = None;
    assert_invalid(&w, &b, "nothing proves delivery");

    // No receipt, no signature.
    let mut b = good.clone();
    b.receipt = None;
    assert_invalid(&w, &b, "no receipt");
    let mut b = good.clone();
    b.contract_signature = None;
    assert_invalid(&w, &b, "no contract signature");

    // A receipt by someone else (Chris) for the same envelope.
    let chris = ident("chris", 3);
    let mut b = good.clone();
    let venv = b.envelope.verify(&w.tp.card).unwrap();
    b.receipt = Some(Receipt::issue(&chris, &venv, NOW + 3));
    assert_invalid(&w, &b, "receipt");

    // Opening flipped.
    let mut b = good.clone();
    b.opening.as_mut().unwrap().secret[0] ^= 1;
    assert_invalid(&w, &b, "opening");

    // Agreement from another TP card (the judge's card differs).
    let other = Tp::trustee("test TP", 0x43, w.tp.card.policy().clone()).card;
    let v = judge_bundle(&other, sha(CONTRACT), &good);
    assert!(!v.valid && v.reason.unwrap().contains("another TP"));
}

/// Replay 1: Alice lifts her contract signature from an earlier agreement
/// (same contract, same parties) into the exchange of a new agreement. Bob
/// cannot see m before he commits, but his receipt binds him to nothing: the
/// delivered message is not a signature under the agreement he countersigned.
#[test]
fn lifted_contract_signature_does_not_execute() {
    let w = world();
    let old = w.agreement(CONTRACT, 1);
    let new = w.agreement(CONTRACT, 2);
    assert_ne!(old.id(), new.id());
    let (old_sig, _, _) = w.sign(&old);
    let nonce = envelope_nonce(&new.id(), &w.tp.card.current_key().id);
    let (env, cm) = w.envelope_with(&new, &old_sig.to_file(), nonce, |_| {});
    let receipt = w.commit(&new, &env).unwrap();
    let venv = env.verify(&w.tp.card).unwrap();
    let vr = receipt.verify(&venv).unwrap();
    let opening = Opening::reveal(&w.alice, &venv, &vr).unwrap();
    let b = ContractBundle {
        agreement: new.clone(),
        envelope: env.clone(),
        message_ciphertext: cm.clone(),
        receipt: Some(receipt.clone()),
        opening: Some(opening.clone()),
        affidavit: None,
        contract_signature: Some(old_sig.clone()),
    };
    assert_invalid(&w, &b, "under another agreement");
    // Nor can the old agreement be paired with the new exchange.
    let b = ContractBundle {
        agreement: old,
        ..b
    };
    assert_invalid(&w, &b, "not the exchange of this agreement");
}

/// Replay 2: an envelope that is not the agreement's exchange (its nonce is
/// not derived from the agreement id: e.g. made for an earlier agreement or
/// as plain certified mail) is refused by Bob before he commits and by the
/// judge; so are wrong deadlines and parties.
#[test]
fn envelope_must_be_the_agreements_exchange() {
    let w = world();
    let a = w.agreement(CONTRACT, 9);
    let va = a.verify(&w.tp.card).unwrap();
    let sig = ContractSignature::sign(&w.alice, &va).unwrap();
    let (env, _) = w.envelope_with(&a, &sig.to_file(), [5; 32], |_| {});
    let e = w.commit(&a, &env).unwrap_err();
    assert!(e.to_string().contains("nonce"), "{e}");

    // A different deadline (same nonce): refused.
    let nonce = envelope_nonce(&a.id(), &w.tp.card.current_key().id);
    let prep = envelope::prepare(
        &w.alice,
        &a.counterparty_card,
        &w.tp.card,
        DEADLINE + 60,
        NOW + 2,
        nonce,
    )
    .unwrap();
    let m = sig.to_file();
    let mut s = MessageSealer::new(prep.message_key(), m.len() as u64);
    let cm = s.seal_chunk(&m).unwrap();
    let mut h = encoding::CmHasher::default();
    h.update(&cm);
    let env = prep
        .finish(&w.alice, h.finish(), cm.len() as u64, sha(&m))
        .unwrap();
    let e = w.commit(&a, &env).unwrap_err();
    assert!(e.to_string().contains("deadline"), "{e}");

    // A message of the wrong size (e.g. the whole contract instead of a signature).
    let (env, _) = w.envelope_with(&a, CONTRACT, nonce, |_| {});
    let e = w.commit(&a, &env).unwrap_err();
    assert!(e.to_string().contains("size"), "{e}");
}

/// The TP dilemma (Bao, Wang, Zhou, Zhu): Alice sends a z whose inside
/// disagrees with its header. Bob's receipt exists, Alice cannot open z, and
/// the TP's invalid-envelope affidavit voids the receipt for any judge.
#[test]
fn malformed_z_voids_bobs_commitment() {
    let w = world();
    let a = w.agreement(CONTRACT, 9);
    let va = a.verify(&w.tp.card).unwrap();
    let sig = ContractSignature::sign(&w.alice, &va).unwrap();
    let nonce = envelope_nonce(&a.id(), &w.tp.card.current_key().id);
    let (env, cm) = w.envelope_with(&a, &sig.to_file(), nonce, |inside| {
        inside.deadline += 3600;
    });
    let receipt = w
        .commit(&a, &env)
        .expect("Bob cannot tell before the TP decrypts");
    let venv = env.verify(&w.tp.card).unwrap();
    let vr = receipt.verify(&venv).unwrap();
    assert!(
        Opening::reveal(&w.alice, &venv, &vr).is_err(),
        "Alice has no valid opening"
    );
    let (aff, released) =
        w.tp.resolve(&Claim::new(&w.bob, &venv, &vr, NOW + 5))
            .unwrap();
    assert!(released.is_none());
    let mut b = ContractBundle {
        agreement: a,
        envelope: env,
        message_ciphertext: cm,
        receipt: Some(receipt),
        opening: None,
        affidavit: Some(aff),
        contract_signature: Some(sig),
    };
    let v = verdict(&w, &b);
    assert!(v.valid && !v.executed(), "{v:?}");
    assert_eq!(v.outcome, Some(Outcome::ReceiptVoid));
    assert!(v.reason.unwrap().contains("void"));
    // Without the affidavit, Alice's receipt alone proves nothing either.
    b.affidavit = None;
    assert_invalid(&w, &b, "nothing proves delivery");
}

#[test]
fn unclaimed_means_never_completed_unless_alice_opened() {
    let w = world();
    let mut b = w.direct();
    let aff = unclaimed(&w.tp, &b.envelope);
    let opening = b.opening.take();
    b.affidavit = Some(aff);
    let v = verdict(&w, &b);
    assert!(v.valid && !v.executed(), "{v:?}");
    assert_eq!(v.outcome, Some(Outcome::NeverCompleted));
    // Alice chose to reveal anyway (she holds Bob's receipt): executed, as in
    // certified mail, and her signature is in the bundle, so both are bound.
    b.opening = opening;
    assert!(verdict(&w, &b).executed());
    // An unclaimed certificate about another envelope counts for nothing.
    let mut other = w.direct();
    other.agreement = w.agreement(CONTRACT, 10);
    let (_, env2, _) = w.sign(&other.agreement);
    b.opening = None;
    b.affidavit = Some(unclaimed(&w.tp, &env2));
    assert_invalid(&w, &b, "another envelope");
}

#[test]
fn proposals_are_checked_before_bob_countersigns() {
    let w = world();
    let chris = ident("chris", 3);
    let p = Proposal::new(
        &w.alice,
        w.bob.card(),
        &w.tp.card,
        sha(CONTRACT),
        DEADLINE,
        NOW,
        [1; 32],
    )
    .unwrap();
    let acc = |who: &IdentitySecret, c: &[u8], from, now| {
        p.accept(who, &w.tp.card, sha(c), from, now, 600)
            .unwrap_err()
            .to_string()
    };
    assert!(acc(&chris, CONTRACT, w.alice.id(), NOW).contains("someone else"));
    assert!(acc(&w.bob, CONTRACT, chris.id(), NOW).contains("expected proposer"));
    assert!(acc(&w.bob, b"other", w.alice.id(), NOW).contains("another contract"));
    // An old proposal, its deadline passed (or too close): refused.
    assert!(acc(&w.bob, CONTRACT, w.alice.id(), DEADLINE + 1).contains("deadline"));
    assert!(acc(&w.bob, CONTRACT, w.alice.id(), DEADLINE - 30).contains("deadline"));
    // A forged proposal in Alice's name.
    let mut forged = p.clone();
    forged.body.contract_sha256 = sha(b"other");
    assert!(forged
        .accept(&w.bob, &w.tp.card, sha(b"other"), w.alice.id(), NOW, 600)
        .unwrap_err()
        .to_string()
        .contains("bad signature"));
    // Only the proposer signs the contract in the exchange.
    let a = w.agreement(CONTRACT, 9);
    let va = a.verify(&w.tp.card).unwrap();
    assert!(ContractSignature::sign(&w.bob, &va).is_err());
    // Files of one kind are not taken for another.
    let e = Agreement::from_file(&p.to_file()).unwrap_err();
    assert!(e.to_string().contains("contract proposal"), "{e}");
    assert!(encoding::decode::<Agreement>(Kind::ContractAgreement, &a.to_file()).is_ok());
}

/// Audit finding 7 for contracts: a (corrupt) TP's invalid-envelope
/// statement about an envelope whose opening recomputes z does not void
/// the contract the opening proves executed; the verdict names the false
/// statement. Without the opening the statement stands.
#[test]
fn a_valid_opening_refutes_an_invalid_envelope_statement() {
    let w = world();
    let mut b = w.direct();
    let venv = b.envelope.verify(&w.tp.card).unwrap();
    let receipt = b.receipt.clone().unwrap();
    let body = AffidavitBody::about(
        &venv,
        0,
        NOW + 10,
        Statement::InvalidEnvelope {
            key_id: venv.header().trustees[0].key_id,
            receipt_hash: receipt.hash(),
        },
        FIRST_RECORD,
    );
    b.affidavit = Some(w.tp.sign(body));
    let v = verdict(&w, &b);
    assert!(v.executed(), "{v:?}");
    assert!(!v.contradictions.is_empty(), "{v:?}");
    b.opening = None;
    let v = verdict(&w, &b);
    assert_eq!(v.outcome, Some(Outcome::ReceiptVoid), "{v:?}");
}
