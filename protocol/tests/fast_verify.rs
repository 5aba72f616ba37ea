//! The fast verification path (ring over `domain || 0 || body`) agrees with
//! the digest path (p256 over the signing digest), and remembering checked
//! cards never lets a bad card through.

use p256::ecdsa::signature::hazmat::PrehashSigner;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use vtp_protocol::encoding::{canonical, signing_digest, Kind};
use vtp_protocol::identity::{IdentityCard, IdentitySecret};
use vtp_protocol::{EcPoint, ProtocolError, Signature};

const DOMAIN: &str = "vtp/v1/test-statement";

fn key(seed: u8) -> (p256::ecdsa::SigningKey, EcPoint) {
    let sk = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
    let point = EcPoint::from_public(p256::PublicKey::from(sk.verifying_key()));
    (sk, point)
}

fn sign(sk: &p256::ecdsa::SigningKey, body: &[u8]) -> p256::ecdsa::Signature {
    sk.sign_prehash(&signing_digest(DOMAIN, &body).0).unwrap()
}

fn both(point: &EcPoint, body: &[u8], sig: &Signature) -> (bool, bool) {
    let fast = point
        .verify_statement(DOMAIN, &canonical(&body), sig, "test")
        .is_ok();
    let slow = point
        .verify(&signing_digest(DOMAIN, &body), sig, "test")
        .is_ok();
    (fast, slow)
}

#[test]
fn fast_and_digest_verification_agree() {
    let (sk, point) = key(7);
    let (_, other) = key(8);
    for i in 0..20u8 {
        let body = vec![i; 10 + i as usize * 37];
        let sig = sign(&sk, &body);
        let low = Signature(sig.normalize_s().unwrap_or(sig).to_bytes().into());
        assert_eq!(both(&point, &body, &low), (true, true));
        // Both accept the high-S twin (neither path enforces low S).
        let (r, s) = sig.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let high = Signature(high.to_bytes().into());
        assert_eq!(both(&point, &body, &high), (true, true));
        // Wrong key, wrong body, flipped bits, zero signature: both refuse.
        assert_eq!(both(&other, &body, &low), (false, false));
        let mut wrong = body.clone();
        wrong[0] ^= 1;
        assert_eq!(both(&point, &wrong, &low), (false, false));
        for bit in [0usize, 100, 263, 511] {
            let mut bad = low;
            bad.0[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(both(&point, &body, &bad), (false, false), "bit {bit}");
        }
        assert_eq!(both(&point, &body, &Signature([0; 64])), (false, false));
    }
}

#[test]
fn a_remembered_card_does_not_vouch_for_a_changed_one() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let alice = IdentitySecret::generate("alice", 1_800_000_000, &mut rng).unwrap();
    let file = alice.card().to_file();
    // Decoded twice: the second decode is answered from the memo.
    let a = IdentityCard::from_file(&file).unwrap();
    let b = IdentityCard::from_file(&file).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.id(), alice.id());
    // Any changed byte after the prefix (body or signature) is refused or,
    // where postcard still parses it, fails the self-signature check.
    let prefix = vtp_protocol::encoding::PREFIX_LEN;
    let mut refused = 0;
    for i in prefix..file.len() {
        let mut bad = file.clone();
        bad[i] ^= 0x01;
        match IdentityCard::from_file(&bad) {
            Ok(card) => panic!("byte {i} changed, still accepted: {card:?}"),
            Err(
                ProtocolError::Malformed { .. }
                | ProtocolError::Truncated { .. }
                | ProtocolError::BadSignature { .. },
            ) => refused += 1,
            Err(e) => panic!("byte {i}: unexpected {e}"),
        }
    }
    assert_eq!(refused, file.len() - prefix);
    // And the good card still decodes.
    assert_eq!(IdentityCard::from_file(&file).unwrap(), a);
    assert_eq!(Kind::IdentityCard as u8, file[3]);
}
