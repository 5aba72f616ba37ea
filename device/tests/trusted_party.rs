//! The TP's atomic operation on a real token (SoftHSM2 or kryoptic, see
//! `common`): a claim built with the
//! protocol crate is resolved in the token; malformed envelopes get an
//! invalid-envelope affidavit; unknown keys are refused, not "invalid".

use std::sync::{Arc, OnceLock};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use vtp_device::{generate_tp_keys, DeviceError, KeyId, Token, TpKeys, TrustedParty};
use vtp_protocol::affidavit::ChainPosition;
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding::CmHasher;
use vtp_protocol::envelope::{self, Envelope};
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::message::MessageSealer;
use vtp_protocol::opening::unwrap_released_key;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::seal::Inside;
use vtp_protocol::tp_card::Policy;
use vtp_protocol::wire::ClaimOutcome;
use vtp_protocol::Digest32;

mod common;

const NOW: u64 = 1_800_000_000;
/// A journal position for the affidavits (the daemon assigns real ones).
const AT: ChainPosition = ChainPosition {
    seq: 7,
    prev: Digest32([7; 32]),
};

struct Fixture {
    _dir: tempfile::TempDir,
    token: Arc<Token>,
    keys: TpKeys,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("vtp-tp-token-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let dev = common::dev_token(dir.path(), "vtp-tp-test");
        let token = Arc::new(Token::open(&dev.token_config()).unwrap());
        let oaep = dev.kind.preferred_oaep();
        let keys = generate_tp_keys(&token, 2048, oaep).unwrap();
        Fixture {
            _dir: dir,
            token,
            keys,
        }
    })
}

fn tp() -> TrustedParty {
    let f = fixture();
    TrustedParty::open(
        f.token.clone(),
        f.keys.clone(),
        "test TP",
        Policy::default(),
        NOW,
    )
    .unwrap()
}

fn ident(name: &str, seed: u8) -> IdentitySecret {
    IdentitySecret::generate(name, NOW, &mut ChaCha20Rng::from_seed([seed; 32])).unwrap()
}

fn envelope(
    tp: &TrustedParty,
    alice: &IdentitySecret,
    bob: &IdentitySecret,
    nonce: u8,
    tamper: impl FnOnce(&mut Inside),
) -> Envelope {
    let msg = b"a message of some length".repeat(40);
    let prep =
        envelope::prepare(alice, bob.card(), tp.card(), NOW + 3600, NOW, [nonce; 32]).unwrap();
    let mut s = MessageSealer::new(prep.message_key(), msg.len() as u64);
    let cm = s.seal_chunk(&msg).unwrap();
    let mut h = CmHasher::default();
    h.update(&cm);
    let sha = Digest32(Sha256::digest(&msg).into());
    prep.finish_cheating(alice, h.finish(), cm.len() as u64, sha, tamper)
        .unwrap()
}

fn claim_for(tp: &TrustedParty, env: &Envelope, bob: &IdentitySecret) -> Claim {
    let venv = env.verify(tp.card()).unwrap();
    let receipt = Receipt::issue(bob, &venv, NOW + 1).verify(&venv).unwrap();
    Claim::new(bob, &venv, &receipt, NOW + 2)
}

#[test]
fn resolves_an_honest_claim_in_the_token() {
    let tp = tp();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let env = envelope(&tp, &alice, &bob, 1, |_| {});
    let claim = claim_for(&tp, &env, &bob);
    let vc = claim.decide_fresh(tp.card(), NOW + 10).unwrap();
    match tp.resolve(&vc, AT).unwrap() {
        ClaimOutcome::Resolved {
            affidavit,
            wrapped_km,
        } => {
            affidavit.verify(tp.card(), vc.envelope()).unwrap();
            assert_eq!(affidavit.body.kind(), "resolved");
            assert_eq!(affidavit.body.journal, AT, "signed at its journal position");
            unwrap_released_key(&bob, vc.envelope(), &wrapped_km).unwrap();
        }
        other => panic!("expected resolution, got {other:?}"),
    }
}

#[test]
fn inside_that_disagrees_gets_an_invalid_envelope_affidavit() {
    let tp = tp();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let env = envelope(&tp, &alice, &bob, 2, |i| i.deadline += 1);
    let vc = claim_for(&tp, &env, &bob)
        .decide_fresh(tp.card(), NOW + 10)
        .unwrap();
    match tp.resolve(&vc, AT).unwrap() {
        ClaimOutcome::InvalidEnvelope { affidavit } => {
            affidavit.verify(tp.card(), vc.envelope()).unwrap();
            assert_eq!(affidavit.body.kind(), "invalid-envelope");
        }
        other => panic!("expected invalid envelope, got {other:?}"),
    }
}

#[test]
fn undecryptable_z_gets_an_invalid_envelope_affidavit() {
    let tp = tp();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let mut env = envelope(&tp, &alice, &bob, 3, |_| {});
    env.zs[0].wrapped_key[10] ^= 1;
    env.header.trustees[0].z_hash = env.zs[0].hash();
    env.signature = vtp_protocol::identity::test_sign(
        &alice,
        &vtp_protocol::encoding::signing_digest(
            vtp_protocol::encoding::domain::ENVELOPE,
            &env.header,
        ),
    );
    let vc = claim_for(&tp, &env, &bob)
        .decide_fresh(tp.card(), NOW + 10)
        .unwrap();
    assert!(matches!(
        tp.resolve(&vc, AT).unwrap(),
        ClaimOutcome::InvalidEnvelope { .. }
    ));
}

#[test]
fn a_key_not_in_the_tp_set_is_refused_not_judged() {
    let f = fixture();
    let tp = tp();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let env = envelope(&tp, &alice, &bob, 4, |_| {});
    let vc = claim_for(&tp, &env, &bob)
        .decide_fresh(tp.card(), NOW + 10)
        .unwrap();
    // The same token, but a TP configured without that key (as after `retire`).
    let other = f
        .token
        .generate_encryption_key(2048, common::kind().preferred_oaep())
        .unwrap();
    let narrowed = TpKeys {
        signing: f.keys.signing,
        encryption: vec![other],
        current: other,
    };
    let tp2 =
        TrustedParty::open(f.token.clone(), narrowed, "test TP", Policy::default(), NOW).unwrap();
    assert!(matches!(
        tp2.resolve(&vc, AT),
        Err(DeviceError::KeyNotFound { .. })
    ));
}

#[test]
fn opening_with_a_missing_key_fails_clearly() {
    let f = fixture();
    let bogus = TpKeys {
        signing: f.keys.signing,
        encryption: vec![KeyId([9; 8])],
        current: KeyId([9; 8]),
    };
    let err = TrustedParty::open(f.token.clone(), bogus, "x", Policy::default(), NOW)
        .err()
        .expect("a missing key must be refused");
    assert!(err.to_string().contains("0909090909090909"), "{err}");
}

#[test]
fn decide_then_sign_places_the_affidavit_and_refuses_position_zero() {
    let tp = tp();
    let (alice, bob) = (ident("alice", 1), ident("bob", 2));
    let env = envelope(&tp, &alice, &bob, 5, |_| {});
    let vc = claim_for(&tp, &env, &bob)
        .decide_fresh(tp.card(), NOW + 10)
        .unwrap();
    let d = tp.decide(&vc).unwrap();
    assert_eq!(d.kind(), "resolved");
    assert_eq!(d.z_hash(), vc.subject().z_hash);
    // Position 0 is "not recorded": refused, and the decision is gone.
    assert!(matches!(
        tp.sign_decision(
            d,
            ChainPosition {
                seq: 0,
                prev: Digest32([0; 32])
            }
        ),
        Err(DeviceError::InvalidArgument(_))
    ));
    let d = tp.decide(&vc).unwrap();
    let at = ChainPosition {
        seq: 42,
        prev: Digest32([4; 32]),
    };
    match tp.sign_decision(d, at).unwrap() {
        ClaimOutcome::Resolved {
            affidavit,
            wrapped_km,
        } => {
            affidavit.verify(tp.card(), vc.envelope()).unwrap();
            assert_eq!(affidavit.body.journal, at);
            unwrap_released_key(&bob, vc.envelope(), &wrapped_km).unwrap();
        }
        other => panic!("expected resolution, got {other:?}"),
    }
}
