//! A wrap Bob cannot open voids Alice's receipt, in pure logic: a cheating
//! sender puts into z a wrap (or a key) that gives Bob nothing, the trustee
//! signs "resolved" all the same, and Bob's void evidence — his proven ECDH
//! results for the released wraps — makes the judge recompute what he got.
//! With an honest envelope the same evidence is refused: the released key
//! opens the message, so Bob cannot frame Alice.

mod common;

use common::{cards, ident, seal_message, send_group, sha, trustees, Tp, DEADLINE, NOW};
use vtp_protocol::affidavit::Affidavit;
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding;
use vtp_protocol::envelope::{self, Envelope, VerifiedEnvelope};
use vtp_protocol::evidence::{
    judge_group, judge_with_void, CiphertextBytes, DeliveredVia, Verdict, VoidClaim,
};
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::opening::{unwrap_released_key, unwrap_released_share, Opening};
use vtp_protocol::receipt::Receipt;
use vtp_protocol::seal::Inside;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wrap_proof::VoidEvidence;
use vtp_protocol::EcPoint;

const MSG: &[u8] = b"the deed to the house, signed and sealed";

/// One exchange through `n` trustees, `t` of which must act.
struct World {
    tps: Vec<Tp>,
    cards: Vec<TpCard>,
    alice: IdentitySecret,
    bob: IdentitySecret,
    env: Envelope,
    cm: Vec<u8>,
    venv: VerifiedEnvelope,
    receipt: Receipt,
    claim: Claim,
}

impl World {
    /// `tamper` alters each slot's inside (a cheating sender).
    fn new(n: u8, t: usize, tamper: impl FnMut(usize, &mut Inside)) -> World {
        let tps = if n == 1 {
            vec![Tp::new()]
        } else {
            trustees(n, 0x60)
        };
        let cards = cards(&tps);
        let (alice, bob) = (ident("alice", 1), ident("bob", 2));
        let (env, cm) = send_group(&alice, bob.card(), &cards, t, MSG, 9, tamper);
        World::finish(tps, cards, alice, bob, env, cm)
    }
    /// Honest wraps, but the ciphertext is `cm_of(k_m)` while the header
    /// commits to `MSG` (a cheating sender's `c_m`).
    fn with_cm(n: u8, t: usize, cm_of: impl FnOnce(&[u8; 32]) -> Vec<u8>) -> World {
        let tps = if n == 1 {
            vec![Tp::new()]
        } else {
            trustees(n, 0x60)
        };
        let cards = cards(&tps);
        let (alice, bob) = (ident("alice", 1), ident("bob", 2));
        let prep =
            envelope::prepare_group(&alice, bob.card(), &cards, t, DEADLINE, NOW, [9; 32]).unwrap();
        let cm = cm_of(prep.message_key());
        let mut h = encoding::CmHasher::default();
        h.update(&cm);
        let env = prep
            .finish(&alice, h.finish(), cm.len() as u64, sha(MSG))
            .unwrap();
        World::finish(tps, cards, alice, bob, env, cm)
    }
    fn finish(
        tps: Vec<Tp>,
        cards: Vec<TpCard>,
        alice: IdentitySecret,
        bob: IdentitySecret,
        env: Envelope,
        cm: Vec<u8>,
    ) -> World {
        let venv = env.verify_trusted(&cards).unwrap();
        let receipt = Receipt::issue(&bob, &venv, NOW + 1);
        let claim = Claim::new(&bob, &venv, &receipt.verify(&venv).unwrap(), NOW + 5);
        World {
            tps,
            cards,
            alice,
            bob,
            env,
            cm,
            venv,
            receipt,
            claim,
        }
    }
    /// Trustee `i` resolves Bob's claim: its affidavit and the wrap it
    /// releases.
    fn resolve(&self, i: usize) -> (Affidavit, Vec<u8>) {
        let (aff, wrap) = self.tps[i].resolve(&self.claim).unwrap();
        assert_eq!(aff.body.kind(), "resolved");
        (aff, wrap.unwrap())
    }
    /// Bob's evidence over the wraps of `slots` (what `vtp claim` writes).
    fn evidence(&self, slots: &[usize]) -> VoidEvidence {
        let released: Vec<(usize, Vec<u8>)> =
            slots.iter().map(|&i| (i, self.resolve(i).1)).collect();
        VoidEvidence::build(&self.bob, &self.venv, &released, &mut rand_core::OsRng).unwrap()
    }
    fn affidavits(&self, slots: &[usize]) -> Vec<Affidavit> {
        slots.iter().map(|&i| self.resolve(i).0).collect()
    }
    fn judge(&self, affs: &[Affidavit], ev: Option<&VoidEvidence>) -> Verdict {
        self.judge_cm(affs, ev, &self.cm)
    }
    fn judge_cm(&self, affs: &[Affidavit], ev: Option<&VoidEvidence>, cm: &[u8]) -> Verdict {
        let mut ct = CiphertextBytes(cm);
        judge_with_void(
            &self.cards,
            &self.env,
            &self.receipt,
            None,
            affs,
            ev.map(|evidence| VoidClaim {
                evidence,
                ciphertext: &mut ct,
            }),
            None,
        )
    }
    fn name(&self, i: usize) -> String {
        self.cards[i].id().to_string()
    }
}

/// A wrap whose sealed share is altered: it no longer decrypts.
fn corrupt(inside: &mut Inside) {
    let last = inside.wrapped_km.len() - 1;
    inside.wrapped_km[last] ^= 1;
}

#[track_caller]
fn void_reason(v: &Verdict) -> String {
    assert!(!v.valid, "{v:?}");
    let r = v.reason.clone().expect("an invalid verdict says why");
    assert!(!r.contains('\n'), "one line: {r}");
    assert!(
        r.starts_with("receipt void: the message key the")
            && r.contains(
                "released for the recipient does not open the message (the sender's fault): "
            ),
        "{r}"
    );
    r
}

#[track_caller]
fn refused(v: &Verdict, why: &str) {
    assert!(!v.valid, "{v:?}");
    let r = v.reason.as_deref().unwrap();
    assert!(r.contains("void evidence") && r.contains(why), "{r}");
}

#[track_caller]
fn delivered(v: &Verdict) {
    assert!(v.valid, "{v:?}");
    assert_eq!(v.delivered_via, Some(DeliveredVia::TrustedParty));
    assert_eq!(v.message_sha256, Some(sha(MSG).to_hex()));
}

/// The audit's gap, one TP: a wrap Bob cannot open gets a resolution that
/// alone proves delivery; with Bob's evidence the receipt is void, naming
/// the step.
#[test]
fn one_tp_a_wrap_that_does_not_decrypt_voids_the_receipt() {
    let w = World::new(1, 1, |_, inside| corrupt(inside));
    let (aff, wrap) = w.resolve(0);
    assert!(unwrap_released_key(&w.bob, &w.venv, &wrap).is_err());
    // Without the evidence, the resolution stands.
    delivered(&w.judge(std::slice::from_ref(&aff), None));
    let ev = w.evidence(&[0]);
    // The evidence survives its file.
    let ev = VoidEvidence::from_file(&ev.to_file()).unwrap();
    let r = void_reason(&w.judge(&[aff], Some(&ev)));
    assert!(
        r.contains(
            "the wrap the TP released does not decrypt with the recipient's proven ECDH result"
        ),
        "{r}"
    );
}

/// A wrap without an ephemeral point needs no proof: the judge sees it is
/// no wrap at all.
#[test]
fn one_tp_a_malformed_wrap_voids_the_receipt() {
    let w = World::new(1, 1, |_, inside| inside.wrapped_km = vec![2; 20]);
    let ev = w.evidence(&[0]);
    assert!(ev.wraps[0].shared.is_none());
    let r = void_reason(&w.judge(&w.affidavits(&[0]), Some(&ev)));
    assert!(r.contains("the wrap the TP released is malformed"), "{r}");
}

/// Honest wraps around a ciphertext that is not the committed message under
/// `k_m`: the key Bob recovers does not decrypt it, or decrypts it to
/// another message.
#[test]
fn one_tp_a_key_that_does_not_open_the_ciphertext_voids_the_receipt() {
    let w = World::with_cm(1, 1, |_| seal_message(&[7; 32], MSG));
    let km = unwrap_released_key(&w.bob, &w.venv, &w.resolve(0).1).unwrap();
    assert!(common::open_message(&km, &w.cm).is_err());
    let r = void_reason(&w.judge(&w.affidavits(&[0]), Some(&w.evidence(&[0]))));
    assert!(
        r.contains("the released key does not decrypt the message ciphertext (chunk 0 fails authentication)"),
        "{r}"
    );

    let other = b"a different deed".to_vec();
    let w = World::with_cm(1, 1, |km| seal_message(km, &other));
    let r = void_reason(&w.judge(&w.affidavits(&[0]), Some(&w.evidence(&[0]))));
    assert!(
        r.contains(&format!(
            "the released key decrypts the message ciphertext to a message with SHA-256 {}, not the {} certified",
            sha(&other),
            sha(MSG)
        )),
        "{r}"
    );
}

/// An honest envelope: Bob's evidence is a false accusation. It is refused
/// and the resolution proves delivery; forging the proof, the shared point
/// or the wrap gets the evidence refused outright.
#[test]
fn with_an_honest_envelope_bob_cannot_void_the_receipt() {
    let w = World::new(1, 1, |_, _| {});
    let affs = w.affidavits(&[0]);
    let ev = w.evidence(&[0]);
    let v = w.judge(&affs, Some(&ev));
    delivered(&v);
    let why = v
        .accusation_refused
        .as_deref()
        .expect("the accusation is refused");
    assert!(why.contains("false accusation"), "{why}");
    assert!(v.reason.is_none());

    // Bob's proof does not carry over to another point for S.
    let mut forged = ev.clone();
    let other = ident("mallory", 3);
    let bogus = VoidEvidence::build(
        &w.bob,
        &w.venv,
        &[(0, w.resolve(0).1)],
        &mut rand_core::OsRng,
    )
    .unwrap();
    let s = forged.wraps[0].shared.as_mut().unwrap();
    s.point = other.card().enc_key().clone();
    refused(
        &w.judge(&affs, Some(&forged)),
        "is not the recipient's ECDH result",
    );
    // A proof from another run for the right point verifies (proofs are
    // randomized, both are valid); a proof moved onto another point does not.
    let mut swapped = ev.clone();
    swapped.wraps[0].shared = bogus.wraps[0].shared.clone();
    delivered(&w.judge(&affs, Some(&swapped)));
    let mut moved = ev.clone();
    moved.wraps[0].shared.as_mut().unwrap().point =
        EcPoint::from_sec1(&w.resolve(0).1[..33]).unwrap();
    refused(
        &w.judge(&affs, Some(&moved)),
        "is not the recipient's ECDH result",
    );
    // A wrap Bob made up is not the one the TP certified releasing.
    let mut made_up = ev.clone();
    let last = made_up.wraps[0].wrap.len() - 1;
    made_up.wraps[0].wrap[last] ^= 1;
    refused(
        &w.judge(&affs, Some(&made_up)),
        "is not the one that trustee certified releasing",
    );
    // No proof for a well-formed wrap.
    let mut bare = ev.clone();
    bare.wraps[0].shared = None;
    refused(
        &w.judge(&affs, Some(&bare)),
        "without the recipient's shared point",
    );
    // Without the resolution it names, it proves nothing.
    refused(&w.judge(&[], Some(&ev)), "no resolution");
    // About another envelope.
    let mut elsewhere = ev.clone();
    elsewhere.envelope_id.0[0] ^= 1;
    refused(&w.judge(&affs, Some(&elsewhere)), "another envelope");
    // A valid opening outweighs it: it is not even weighed.
    let vr = w.receipt.verify(&w.venv).unwrap();
    let opening = Opening::reveal(&w.alice, &w.venv, &vr).unwrap();
    let mut ct = CiphertextBytes(&w.cm);
    let v = judge_with_void(
        &w.cards,
        &w.env,
        &w.receipt,
        Some(&opening),
        &affs,
        Some(VoidClaim {
            evidence: &ev,
            ciphertext: &mut ct,
        }),
        None,
    );
    assert!(v.valid && v.accusation_refused.is_none(), "{v:?}");
    // An altered ciphertext is blamed on the file, not on the sender.
    let mut altered = w.cm.clone();
    altered[3] ^= 1;
    let v = w.judge_cm(&affs, Some(&ev), &altered);
    assert!(!v.valid);
    assert!(v.reason.unwrap().contains("the file was altered"));
}

/// 2 of 3: Alice corrupts two trustees' wraps. Bob's evidence over the two
/// that resolved voids the receipt; once the third trustee's resolution is
/// shown, the evidence must weigh it too.
#[test]
fn two_of_three_bad_shares_void_the_receipt() {
    let w = World::new(3, 2, |slot, inside| {
        if slot < 2 {
            corrupt(inside)
        }
    });
    let affs = w.affidavits(&[0, 1]);
    // Without the evidence, two resolutions prove delivery.
    delivered(&judge_group(
        &w.cards, &w.env, &w.receipt, None, &affs, None,
    ));
    let r = void_reason(&w.judge(&affs, Some(&w.evidence(&[0, 1]))));
    for i in 0..2 {
        assert!(
            r.contains(&format!(
                "the wrap trustee {} ({}) released does not decrypt",
                i + 1,
                w.name(i)
            )),
            "{r}"
        );
    }
    assert!(
        r.contains("only 0 of the 2 shares needed can be recovered"),
        "{r}"
    );

    // The third trustee resolved too (its share is good): evidence that
    // leaves it out is refused, evidence over all three still voids (one
    // good share is not enough).
    let all = w.affidavits(&[0, 1, 2]);
    refused(
        &w.judge(&all, Some(&w.evidence(&[0, 1]))),
        &format!("does not weigh the resolution of trustee 3 ({})", w.name(2)),
    );
    let r = void_reason(&w.judge(&all, Some(&w.evidence(&[0, 1, 2]))));
    assert!(r.contains("only 1 of the 2 shares needed"), "{r}");
    // Fewer wraps than the threshold prove nothing.
    refused(
        &w.judge(&affs[..1], Some(&w.evidence(&[0]))),
        "2 trustees must have released",
    );
}

/// 2 of 3 with honest wraps but a ciphertext the shared key does not open:
/// the judge combines the shares and names whose key fails.
#[test]
fn two_of_three_a_key_that_does_not_open_the_ciphertext_voids_the_receipt() {
    let w = World::with_cm(3, 2, |_| seal_message(&[7; 32], MSG));
    let r = void_reason(&w.judge(&w.affidavits(&[0, 2]), Some(&w.evidence(&[0, 2]))));
    assert!(
        r.contains(&format!(
            "the key from the shares of trustee 1 ({}), trustee 3 ({}) does not decrypt the message ciphertext",
            w.name(0),
            w.name(2)
        )),
        "{r}"
    );
}

/// 2 of 3 with one bad wrap: the other two shares open the message, so
/// evidence over all three released wraps is a false accusation.
#[test]
fn two_of_three_one_bad_share_among_good_ones_is_no_proof() {
    let w = World::new(3, 2, |slot, inside| {
        if slot == 0 {
            corrupt(inside)
        }
    });
    assert!(unwrap_released_share(&w.bob, &w.venv, 0, &w.resolve(0).1).is_err());
    let v = w.judge(&w.affidavits(&[0, 1, 2]), Some(&w.evidence(&[0, 1, 2])));
    delivered(&v);
    assert!(v.accusation_refused.is_some(), "{v:?}");
    // An honest group: any two wraps open the message.
    let w = World::new(3, 2, |_, _| {});
    let v = w.judge(&w.affidavits(&[1, 2]), Some(&w.evidence(&[1, 2])));
    delivered(&v);
    assert!(v.accusation_refused.is_some(), "{v:?}");
}
