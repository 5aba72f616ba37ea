//! The whole certified-mail exchange in pure logic, with the stand-in TP of
//! `common` (host keys, because this crate is sans-IO).

mod common;

use sha2::{Digest, Sha256};

use common::{
    forge_envelope, ident, open_message, seal_message, send, sha, Tp, DEADLINE, FIRST_RECORD, NOW,
};
use vtp_protocol::affidavit::{Affidavit, AffidavitBody, Statement};
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding::{self, Kind};
use vtp_protocol::envelope::{self, Envelope};
use vtp_protocol::evidence::{judge, judge_group, DeliveredVia};
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::opening::{
    message_key_from_shares, unwrap_released_key, unwrap_released_share, Opening,
};
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::{Policy, TpCard};
use vtp_protocol::ProtocolError;

#[test]
fn honest_exchange_and_tp_resolution_agree() {
    let tp = Tp::new();
    let alice = ident("alice", 1);
    let bob = ident("bob", 2);
    let msg = b"the quarterly report".repeat(5000);
    let (env, cm) = send(&alice, bob.card(), &tp.card, &msg, 9);

    // B1
    let venv = env.verify(&tp.card).unwrap();
    venv.check_for_recipient(bob.id(), std::slice::from_ref(&tp.card), NOW, 60)
        .unwrap();
    let receipt = Receipt::issue(&bob, &venv, NOW + 1);
    // A2
    let vr = receipt.verify(&venv).unwrap();
    let opening = Opening::reveal(&alice, &venv, &vr).unwrap();
    // B2
    let opened = opening.check(&venv, bob.card()).unwrap();
    assert_eq!(open_message(&opened.message_key, &cm).unwrap(), msg);

    // TP path yields the same key for Bob.
    let claim = Claim::new(&bob, &venv, &vr, NOW + 5);
    let (aff, released) = tp.resolve(&claim).unwrap();
    let km = unwrap_released_key(&bob, &venv, &released.unwrap()).unwrap();
    assert_eq!(*km, *opened.message_key);

    // Judge: both kinds of evidence prove delivery of exactly msg.
    let v = judge(
        &tp.card,
        &env,
        &receipt,
        Some(&opening),
        None,
        Some(sha(&msg)),
    );
    assert!(v.valid, "{v:?}");
    assert_eq!(v.delivered_via, Some(DeliveredVia::Opening));
    let v = judge(&tp.card, &env, &receipt, None, Some(&aff), Some(sha(&msg)));
    assert!(v.valid, "{v:?}");
    assert_eq!(v.delivered_via, Some(DeliveredVia::TrustedParty));
    assert_eq!(v.message_sha256, Some(sha(&msg).to_hex()));
    // ... and not of another message.
    let v = judge(
        &tp.card,
        &env,
        &receipt,
        None,
        Some(&aff),
        Some(sha(b"other")),
    );
    assert!(!v.valid);

    // Files round-trip.
    let back = Envelope::from_file_prefix(&env.to_file_prefix()).unwrap();
    assert_eq!(back, env);
    assert_eq!(Receipt::from_file(&receipt.to_file()).unwrap(), receipt);
    assert_eq!(Opening::from_file(&opening.to_file()).unwrap(), opening);
    assert_eq!(Affidavit::from_file(&aff.to_file()).unwrap(), aff);
    let alice2 = IdentitySecret::from_file(&alice.to_file()).unwrap();
    assert_eq!(alice2.card(), alice.card());
}

#[test]
fn wrong_opening_is_refused() {
    let tp = Tp::new();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let (env, _) = send(&alice, bob.card(), &tp.card, b"hello", 3);
    let venv = env.verify(&tp.card).unwrap();
    let mut o = Opening::reveal(
        &alice,
        &venv,
        &Receipt::issue(&bob, &venv, NOW).verify(&venv).unwrap(),
    )
    .unwrap();
    o.secret[0] ^= 1;
    assert!(o.check(&venv, bob.card()).is_err());
}

#[test]
fn chris_attack_gets_nothing_decrypted() {
    // Chris lifts Alice's z (made for Bob) into his own envelope to himself.
    let tp = Tp::new();
    let (alice, bob, chris) = (ident("alice", 1), ident("bob", 2), ident("chris", 3));
    let (env, _) = send(&alice, bob.card(), &tp.card, b"secret for bob", 4);
    let mut h = env.header.clone();
    h.sender = chris.id();
    h.recipient = chris.id();
    // Chris signs this header himself (he cannot sign as Alice).
    let forged = forge_envelope(&chris, h, env.zs.clone());
    let venv = forged.verify(&tp.card).unwrap();
    let receipt = Receipt::issue(&chris, &venv, NOW).verify(&venv).unwrap();
    let claim = Claim::new(&chris, &venv, &receipt, NOW + 1);
    let (aff, released) = tp.resolve(&claim).unwrap();
    assert!(released.is_none());
    assert_eq!(aff.body.kind(), "invalid-envelope");
}

#[test]
fn malformed_z_gets_invalid_envelope_and_voids_receipt() {
    let tp = Tp::new();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let (env, _) = send(&alice, bob.card(), &tp.card, b"hello", 6);
    // Alice (cheating) corrupts z and signs the header over the new hash.
    let mut z = env.zs[0].clone();
    let n = z.sealed.len();
    z.sealed[n - 1] ^= 1;
    let mut h = env.header.clone();
    h.trustees[0].z_hash = z.hash();
    let bad = forge_envelope(&alice, h, vec![z]);
    let venv = bad.verify(&tp.card).unwrap();
    let receipt = Receipt::issue(&bob, &venv, NOW);
    let vr = receipt.verify(&venv).unwrap();
    assert!(Opening::reveal(&alice, &venv, &vr).is_err());
    let (aff, released) = tp.resolve(&Claim::new(&bob, &venv, &vr, NOW + 1)).unwrap();
    assert!(released.is_none());
    let v = judge(&tp.card, &bad, &receipt, None, Some(&aff), None);
    assert!(!v.valid);
    assert!(v.reason.unwrap().contains("void"));
}

#[test]
fn tampering_is_detected_everywhere() {
    let tp = Tp::new();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let (env, _) = send(&alice, bob.card(), &tp.card, b"hello", 7);
    let file = env.to_file_prefix();
    // Flip every byte of the envelope file in turn: never accepted as valid.
    for i in 0..file.len() {
        let mut f = file.clone();
        f[i] ^= 0x01;
        let ok = Envelope::from_file_prefix(&f).and_then(|e| e.verify(&tp.card).map(|_| e));
        assert!(ok.is_err(), "flipped byte {i} accepted");
    }
    // A receipt file flipped anywhere fails to parse or verify.
    let venv = env.verify(&tp.card).unwrap();
    let rfile = Receipt::issue(&bob, &venv, NOW).to_file();
    for i in 0..rfile.len() {
        let mut f = rfile.clone();
        f[i] ^= 0x80;
        let ok = Receipt::from_file(&f).and_then(|r| r.verify(&venv).map(|_| ()));
        assert!(ok.is_err(), "flipped receipt byte {i} accepted");
    }
    // Wrong kind is named.
    let err = Receipt::from_file(&env.to_file_prefix()).unwrap_err();
    assert!(matches!(err, ProtocolError::WrongKind { .. }), "{err}");
    // Truncated and garbage inputs are errors, not panics.
    for n in 0..rfile.len() {
        assert!(Receipt::from_file(&rfile[..n]).is_err());
    }
    assert!(encoding::decode::<Receipt>(Kind::Receipt, b"VTP\x05\x01\xff\xff\xff").is_err());
}

#[test]
fn deadline_rules() {
    let tp = Tp::new();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    assert!(envelope::prepare(&alice, bob.card(), &tp.card, NOW, NOW, [0; 32]).is_err());
    assert!(envelope::prepare(&alice, bob.card(), &tp.card, NOW + 10, NOW, [0; 32]).is_err());
    let far = NOW + Policy::default().max_deadline_secs + 10_000;
    assert!(envelope::prepare(&alice, bob.card(), &tp.card, far, NOW, [0; 32]).is_err());
    let (env, _) = send(&alice, bob.card(), &tp.card, b"x", 8);
    let venv = env.verify(&tp.card).unwrap();
    // Bob wants at least 2 hours left: refused.
    assert!(venv
        .check_for_recipient(bob.id(), std::slice::from_ref(&tp.card), NOW, 7200)
        .is_err());
    // Not for Alice.
    assert!(venv
        .check_for_recipient(alice.id(), std::slice::from_ref(&tp.card), NOW, 60)
        .is_err());
    // A claim at or after the deadline is refused by the TP checks.
    let vr = Receipt::issue(&bob, &venv, NOW).verify(&venv).unwrap();
    let claim = Claim::new(&bob, &venv, &vr, DEADLINE);
    assert!(matches!(
        claim.decide_fresh(&tp.card, DEADLINE),
        Err(ProtocolError::Deadline(_))
    ));
    assert!(claim.decide_fresh(&tp.card, DEADLINE - 1).is_ok());
}

/// Known answers: the encoding and the derivations are pinned, so a change in
/// a dependency or in the code that alters bytes on the wire fails here.
#[test]
fn known_answers() {
    let tp = Tp::new();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let (env, cm) = send(&alice, bob.card(), &tp.card, b"known answer", 0x11);
    let got = format!(
        "alice={} bob={} tp={} z={} cm={} env={}",
        alice.id(),
        bob.id(),
        tp.card.id(),
        env.header.trustees[0].z_hash,
        hex::encode(Sha256::digest(&cm)),
        env.envelope_id()
    );
    let expect = include_str!("data/known-answers.txt").trim();
    assert_eq!(got, expect);
    // SHA-256 of "abc" through the tagged hash with an empty domain prefix is
    // not SHA-256("abc"): domains always separate.
    assert_ne!(
        encoding::tagged_hash("", &[b"abc"]).0,
        <[u8; 32]>::from(Sha256::digest(b"abc"))
    );
}

/// Three trustees, any two of which must act: an opening still works without
/// any of them, any two resolutions give Bob the message key, one does not,
/// and the judge counts distinct trustees.
#[test]
fn two_of_three_trustees() {
    let tps: Vec<Tp> = (0..3)
        .map(|i| Tp::trustee(&format!("trustee {i}"), 0x50 + i, Policy::default()))
        .collect();
    let cards: Vec<TpCard> = tps.iter().map(|t| t.card.clone()).collect();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let msg = b"shared among trustees".repeat(100);
    let prep =
        envelope::prepare_group(&alice, bob.card(), &cards, 2, DEADLINE, NOW, [7; 32]).unwrap();
    let cm = seal_message(prep.message_key(), &msg);
    let mut hasher = encoding::CmHasher::default();
    hasher.update(&cm);
    let env = prep
        .finish(&alice, hasher.finish(), cm.len() as u64, sha(&msg))
        .unwrap();
    assert_eq!(env.zs.len(), 3);

    let venv = env.verify_trusted(&cards).unwrap();
    venv.check_for_recipient(bob.id(), &cards, NOW, 60).unwrap();
    // Bob trusts only two of the three: refused.
    assert!(env.verify_trusted(&cards[..2]).is_err());
    // Each trustee accepts it as addressed to itself; an outsider does not.
    for c in &cards {
        env.verify(c).unwrap();
    }
    assert!(env.verify(&Tp::new().card).is_err());

    let receipt = Receipt::issue(&bob, &venv, NOW + 1);
    let vr = receipt.verify(&venv).unwrap();
    let opening = Opening::reveal(&alice, &venv, &vr).unwrap();
    let opened = opening.check(&venv, bob.card()).unwrap();
    assert_eq!(open_message(&opened.message_key, &cm).unwrap(), msg);

    // Every trustee resolves its own z and releases its own share.
    let claim = Claim::new(&bob, &venv, &vr, NOW + 5);
    let mut shares = Vec::new();
    let mut affs = Vec::new();
    for (i, tp) in tps.iter().enumerate() {
        let (aff, released) = tp.resolve(&claim).unwrap();
        assert_eq!(aff.body.kind(), "resolved");
        assert_eq!(aff.body.z_hash, env.header.trustees[i].z_hash);
        let share = unwrap_released_share(&bob, &venv, i, &released.unwrap()).unwrap();
        shares.push(share);
        affs.push(aff);
    }
    for pair in [[0, 1], [0, 2], [1, 2]] {
        let pick = [shares[pair[0]].clone(), shares[pair[1]].clone()];
        let km = message_key_from_shares(&venv, &pick).unwrap();
        assert_eq!(*km, *opened.message_key, "{pair:?}");
    }
    // One share is not enough, and no single share is the key.
    assert!(message_key_from_shares(&venv, &shares[..1]).is_err());
    for s in &shares {
        let as_if_alone =
            vtp_protocol::seal::message_key_from_shares(std::slice::from_ref(s), 1).unwrap();
        assert!(open_message(&as_if_alone, &cm).is_err());
    }

    // The judge: one trustee's resolution proves nothing, two do; the same
    // trustee twice counts once.
    let v = judge_group(&cards, &env, &receipt, None, &affs[..1], Some(sha(&msg)));
    assert!(!v.valid);
    assert!(v.reason.unwrap().contains("1 of the 2 trustees"));
    let v = judge_group(
        &cards,
        &env,
        &receipt,
        None,
        &[affs[1].clone(), affs[1].clone()],
        None,
    );
    assert!(!v.valid);
    let v = judge_group(&cards, &env, &receipt, None, &affs[1..], Some(sha(&msg)));
    assert!(v.valid, "{v:?}");
    assert_eq!(v.delivered_via, Some(DeliveredVia::TrustedParty));
    assert_eq!(v.resolved_by.len(), 2);
    let v = judge_group(&cards, &env, &receipt, Some(&opening), &[], Some(sha(&msg)));
    assert!(v.valid, "{v:?}");
    // A judge who was not given every trustee's card refuses.
    let v = judge_group(&cards[..2], &env, &receipt, Some(&opening), &[], None);
    assert!(!v.valid);

    // Unclaimed for the group: two of three trustees certifying that they
    // never resolved means at most one could have, so it was never completed.
    let unclaimed: Vec<Affidavit> = tps[..2]
        .iter()
        .map(|tp| {
            let slot = venv.header().slot_of(&tp.card.id()).unwrap();
            let body = AffidavitBody::about(
                &venv,
                slot,
                DEADLINE + 1,
                Statement::Unclaimed,
                FIRST_RECORD,
            );
            let signature = Tp::sign_digest(&tp.sign, &body.signing_digest());
            Affidavit { body, signature }
        })
        .collect();
    let v = judge_group(&cards, &env, &receipt, None, &unclaimed, None);
    assert!(!v.valid);
    assert!(
        v.reason.unwrap().contains("never completed"),
        "group unclaimed"
    );
    // A trustee that says both is named and counts for nothing.
    let v = judge_group(
        &cards,
        &env,
        &receipt,
        None,
        &[unclaimed[0].clone(), affs[0].clone()],
        None,
    );
    assert!(!v.valid);
    assert_eq!(v.contradicted_by, [cards[0].id().to_string()]);
    assert!(v.reason.unwrap().contains("count for nothing"));
}

/// A trustee's z is bound to its slot and group: moved elsewhere it does not
/// decrypt; a bad z in one slot is certified invalid by that trustee only.
#[test]
fn group_slots_are_bound() {
    let tps: Vec<Tp> = (0..3)
        .map(|i| Tp::trustee(&format!("trustee {i}"), 0x60 + i, Policy::default()))
        .collect();
    let cards: Vec<TpCard> = tps.iter().map(|t| t.card.clone()).collect();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let prep =
        envelope::prepare_group(&alice, bob.card(), &cards, 2, DEADLINE, NOW, [8; 32]).unwrap();
    let cm = seal_message(prep.message_key(), b"x");
    let mut hasher = encoding::CmHasher::default();
    hasher.update(&cm);
    let env = prep
        .finish(&alice, hasher.finish(), cm.len() as u64, sha(b"x"))
        .unwrap();
    // Alice (cheating) swaps the z of slots 0 and 1 and re-signs.
    let mut h = env.header.clone();
    let mut zs = env.zs.clone();
    zs.swap(0, 1);
    h.trustees[0].z_hash = zs[0].hash();
    h.trustees[1].z_hash = zs[1].hash();
    let digest = encoding::signing_digest(encoding::domain::ENVELOPE, &h);
    let bad = Envelope {
        signature: vtp_protocol::identity::test_sign(&alice, &digest),
        header: h,
        zs,
        sender_card: alice.card().clone(),
        tp_cards: cards.clone(),
    };
    let venv = bad.verify_trusted(&cards).unwrap();
    let vr = Receipt::issue(&bob, &venv, NOW).verify(&venv).unwrap();
    let claim = Claim::new(&bob, &venv, &vr, NOW + 1);
    let kinds: Vec<&str> = tps
        .iter()
        .map(|tp| tp.resolve(&claim).unwrap().0.body.kind())
        .collect();
    assert_eq!(kinds, ["invalid-envelope", "invalid-envelope", "resolved"]);
    assert!(Opening::reveal(&alice, &venv, &vr).is_err());
}

/// Trustees' cards bound the groups they act in.
#[test]
fn group_policy_is_enforced() {
    let strict = Policy {
        min_threshold: 2,
        max_trustees: 3,
        ..Policy::default()
    };
    let tps: Vec<Tp> = (0..4)
        .map(|i| Tp::trustee(&format!("trustee {i}"), 0x70 + i, strict.clone()))
        .collect();
    let cards: Vec<TpCard> = tps.iter().map(|t| t.card.clone()).collect();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let err = |r: Result<envelope::PreparedEnvelope, ProtocolError>| match r {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    };
    let e = err(envelope::prepare_group(
        &alice,
        bob.card(),
        &cards[..3],
        1,
        DEADLINE,
        NOW,
        [1; 32],
    ));
    assert!(e.contains("at least 2 trustees must act"), "{e}");
    let e = err(envelope::prepare_group(
        &alice,
        bob.card(),
        &cards,
        2,
        DEADLINE,
        NOW,
        [1; 32],
    ));
    assert!(e.contains("at most 3 trustees"), "{e}");
    let e = err(envelope::prepare_group(
        &alice,
        bob.card(),
        &[cards[0].clone(), cards[0].clone()],
        2,
        DEADLINE,
        NOW,
        [1; 32],
    ));
    assert!(e.contains("given twice"), "{e}");
    assert!(
        envelope::prepare_group(&alice, bob.card(), &cards[..3], 2, DEADLINE, NOW, [1; 32]).is_ok()
    );
    assert!(
        envelope::prepare_group(&alice, bob.card(), &cards[..3], 4, DEADLINE, NOW, [1; 32])
            .is_err()
    );
}

/// B1 (audit finding 3): Bob accepts only an envelope sealed to the current
/// key of the card he trusts, with a deadline within the horizon counted
/// from now, from the envelope's `created` and from the card's signing; the
/// judge still accepts old evidence sealed to a key the card merely lists.
#[test]
fn recipient_accepts_only_the_current_key_within_the_card_horizon() {
    use vtp_protocol::tp_card::TpCardBody;
    use vtp_protocol::KeyId;
    let tp = Tp::new();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let p = Policy::default();
    let resign = |edit: &dyn Fn(&mut TpCardBody)| {
        let mut b = tp.card.body().clone();
        edit(&mut b);
        let sig = Tp::sign_digest(&tp.sign, &b.signing_digest());
        TpCard::assemble(b, sig).unwrap()
    };
    let k1 = tp.card.body().current_key;
    let k2 = KeyId([9; 8]);
    // The TP rotated: its new card names K2 current and still lists K1.
    let rotated = resign(&|b| {
        let mut k = b.enc_keys[0].clone();
        k.id = k2;
        b.enc_keys.push(k);
        b.current_key = k2;
        b.created = NOW - 10;
    });
    // Alice seals to K1 with the old card (the superseded key).
    let (env, _) = send(&alice, bob.card(), &tp.card, b"x", 8);
    assert_eq!(env.header.trustees[0].key_id, k1);
    let venv = env.verify_trusted(std::slice::from_ref(&rotated)).unwrap();
    let e = venv
        .check_for_recipient(bob.id(), std::slice::from_ref(&rotated), NOW, 60)
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!("sealed to key {k1}"))
            && text.contains("not the current key")
            && text.contains("send it again with the TP's current card"),
        "{text}"
    );
    // With the old card (K1 current) Bob accepts it...
    venv.check_for_recipient(bob.id(), std::slice::from_ref(&tp.card), NOW, 60)
        .unwrap();
    // ...and the judge, with the new card, still checks evidence for K1.
    let vr = Receipt::issue(&bob, &venv, NOW).verify(&venv).unwrap();
    let opening = Opening::reveal(&alice, &venv, &vr).unwrap();
    let v = judge(
        &rotated,
        &env,
        vr.receipt(),
        Some(&opening),
        None,
        Some(sha(b"x")),
    );
    assert!(v.valid, "{v:?}");

    // A card signed long ago covers deadlines only up to its signing plus
    // the horizon: a stale card cannot stretch how long its key is needed.
    let old = resign(&|b| b.created = NOW - p.max_deadline_secs);
    assert_eq!(old.latest_deadline(), NOW + p.clock_skew_secs);
    let e = envelope::prepare(&alice, bob.card(), &old, NOW + 3600, NOW, [1; 32])
        .err()
        .expect("beyond the old card's horizon");
    assert!(
        e.to_string().contains("later than this TP card allows"),
        "{e}"
    );
    let e = venv
        .check_for_recipient(bob.id(), std::slice::from_ref(&old), NOW, 60)
        .unwrap_err();
    assert!(matches!(e, ProtocolError::Deadline(_)), "{e}");

    // `created` in the future, or a deadline beyond the horizon from it.
    let future = common::forge_envelope(
        &alice,
        {
            let mut h = env.header.clone();
            h.created = NOW + p.clock_skew_secs + 1;
            h
        },
        env.zs.clone(),
    );
    let e = future
        .verify_embedded()
        .unwrap()
        .check_for_recipient(bob.id(), std::slice::from_ref(&tp.card), NOW, 60)
        .unwrap_err();
    assert!(e.to_string().contains("in the future"), "{e}");
    let stretched = common::forge_envelope(
        &alice,
        {
            let mut h = env.header.clone();
            h.created = NOW - 2 * p.max_deadline_secs;
            h
        },
        env.zs.clone(),
    );
    let e = stretched
        .verify_embedded()
        .unwrap()
        .check_for_recipient(bob.id(), std::slice::from_ref(&tp.card), NOW, 60)
        .unwrap_err();
    assert!(e.to_string().contains("after the envelope was made"), "{e}");
    // A trusted card of another TP: refused.
    let other = Tp::trustee("other", 0x43, Policy::default());
    assert!(venv
        .check_for_recipient(bob.id(), std::slice::from_ref(&other.card), NOW, 60)
        .is_err());
}

#[test]
fn card_refresh_keeps_the_offered_horizon() {
    let p = Policy::default();
    assert_eq!(p.card_refresh_secs(), 24 * 3600);
    let short = Policy {
        max_deadline_secs: 160,
        ..Policy::default()
    };
    assert_eq!(short.card_refresh_secs(), 10);
}
