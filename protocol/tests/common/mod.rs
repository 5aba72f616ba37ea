//! Shared by the pure-logic tests (`flow.rs`, `judge.rs`): parties, a
//! stand-in TP and envelopes. The TP's token is stood in for by host
//! RSA/ECDSA keys here ONLY because this crate is sans-IO; the real token is
//! exercised by the device and end-to-end tests.

// Each test file uses its own part of this kit.
#![allow(dead_code)]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};

use vtp_protocol::affidavit::{Affidavit, AffidavitBody, ChainPosition};
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding;
use vtp_protocol::envelope::{self, Envelope};
use vtp_protocol::identity::{IdentityCard, IdentitySecret};
use vtp_protocol::message::{MessageOpener, MessageSealer};
use vtp_protocol::seal::{Inside, Z_NONCE};
use vtp_protocol::tp_card::{OaepHash, Policy, TpCard, TpCardBody, TpEncKey};
use vtp_protocol::{Digest32, EcPoint, KeyId, ProtocolError, Signature};

/// Where the stand-in TP says it recorded its affidavits.
pub const FIRST_RECORD: ChainPosition = ChainPosition {
    seq: 1,
    prev: ChainPosition::GENESIS_PREV,
};

pub const NOW: u64 = 1_800_000_000;
pub const DEADLINE: u64 = NOW + 3600;

pub struct Tp {
    pub card: TpCard,
    pub rsa: RsaPrivateKey,
    pub sign: p256::ecdsa::SigningKey,
}

impl Tp {
    pub fn new() -> Tp {
        Tp::trustee("test TP", 0x42, Policy::default())
    }
    /// Another TP (its own signing key, so its own id). All stand-ins share
    /// one RSA key: these files test the logic, not key separation.
    pub fn trustee(name: &str, sign_seed: u8, policy: Policy) -> Tp {
        let rsa =
            RsaPrivateKey::from_pkcs8_pem(include_str!("../data/test-tp-rsa2048.pem")).unwrap();
        let sign = p256::ecdsa::SigningKey::from_slice(&[sign_seed; 32]).unwrap();
        let body = TpCardBody {
            name: name.into(),
            sign_key: EcPoint::from_public(p256::PublicKey::from(sign.verifying_key())),
            enc_keys: vec![TpEncKey {
                id: KeyId([1, 2, 3, 4, 5, 6, 7, 8]),
                modulus: rsa.n().to_bytes_be(),
                exponent: rsa.e().to_bytes_be(),
                oaep: OaepHash::Sha1,
            }],
            current_key: KeyId([1, 2, 3, 4, 5, 6, 7, 8]),
            policy,
            created: NOW - 100,
        };
        let sig = Tp::sign_digest(&sign, &body.signing_digest());
        Tp {
            card: TpCard::assemble(body, sig).unwrap(),
            rsa,
            sign,
        }
    }
    pub fn sign_digest(k: &p256::ecdsa::SigningKey, d: &Digest32) -> Signature {
        let s: p256::ecdsa::Signature = k.sign_prehash(&d.0).unwrap();
        Signature(s.to_bytes().into())
    }
    /// Sign any statement with this TP's key: what an honest TP signs, or
    /// what a corrupt one chooses to.
    pub fn sign(&self, body: AffidavitBody) -> Affidavit {
        let signature = Tp::sign_digest(&self.sign, &body.signing_digest());
        Affidavit { body, signature }
    }
    /// What the device does: decrypt in "the token", check, sign.
    pub fn resolve(&self, claim: &Claim) -> Result<(Affidavit, Option<Vec<u8>>), ProtocolError> {
        let vc = claim.verify(&self.card, NOW + 10)?;
        let z = vc.z();
        let plain = self
            .rsa
            .decrypt(rsa::Oaep::new::<sha1::Sha1>(), &z.wrapped_key)
            .ok()
            .and_then(|kz| {
                let c = Aes256Gcm::new_from_slice(&kz).ok()?;
                c.decrypt(
                    &Z_NONCE.into(),
                    Payload {
                        msg: &z.sealed,
                        aad: &vc.aad(),
                    },
                )
                .ok()
            });
        let (body, released) = match plain.map(|p| vc.check_inside(&p)) {
            Some(Ok(inside)) => (
                AffidavitBody::resolved(&vc, &inside, NOW + 10, FIRST_RECORD),
                Some(inside.wrapped_km.clone()),
            ),
            _ => (
                AffidavitBody::invalid_envelope(&vc, NOW + 10, FIRST_RECORD),
                None,
            ),
        };
        Ok((self.sign(body), released))
    }
}

/// `n` stand-in trustees with distinct signing keys (seeds from `seed`).
pub fn trustees(n: u8, seed: u8) -> Vec<Tp> {
    (0..n)
        .map(|i| Tp::trustee(&format!("trustee {i}"), seed + i, Policy::default()))
        .collect()
}

pub fn cards(tps: &[Tp]) -> Vec<TpCard> {
    tps.iter().map(|t| t.card.clone()).collect()
}

pub fn ident(name: &str, seed: u8) -> IdentitySecret {
    IdentitySecret::generate(name, NOW - 1000, &mut ChaCha20Rng::from_seed([seed; 32])).unwrap()
}

pub fn seal_message(km: &[u8; 32], msg: &[u8]) -> Vec<u8> {
    let mut s = MessageSealer::new(km, msg.len() as u64);
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(n) = s.next_len() {
        out.extend(s.seal_chunk(&msg[off..off + n]).unwrap());
        off += n;
    }
    out
}

pub fn open_message(km: &[u8; 32], cm: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut o = MessageOpener::new(km, cm.len() as u64)?;
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(n) = o.next_len() {
        out.extend(o.open_chunk(&cm[off..off + n])?);
        off += n;
    }
    Ok(out)
}

pub fn send(
    alice: &IdentitySecret,
    bob: &IdentityCard,
    tp: &TpCard,
    msg: &[u8],
    nonce: u8,
) -> (Envelope, Vec<u8>) {
    send_group(
        alice,
        bob,
        std::slice::from_ref(tp),
        1,
        msg,
        nonce,
        |_, _| {},
    )
}

/// A1 with a group of trustees, `threshold` of which must act; `tamper`
/// may alter the inside of any slot's z (a cheating sender; leave it empty
/// for an honest one).
pub fn send_group(
    alice: &IdentitySecret,
    bob: &IdentityCard,
    tps: &[TpCard],
    threshold: usize,
    msg: &[u8],
    nonce: u8,
    tamper: impl FnMut(usize, &mut Inside),
) -> (Envelope, Vec<u8>) {
    let prep =
        envelope::prepare_group(alice, bob, tps, threshold, DEADLINE, NOW, [nonce; 32]).unwrap();
    let cm = seal_message(prep.message_key(), msg);
    let mut h = encoding::CmHasher::default();
    h.update(&cm);
    let env = prep
        .finish_cheating_slots(alice, h.finish(), cm.len() as u64, sha(msg), tamper)
        .unwrap();
    (env, cm)
}

pub fn sha(msg: &[u8]) -> Digest32 {
    Digest32(Sha256::digest(msg).into())
}

/// A cheater's envelope: `signer` signs an arbitrary header over an arbitrary z.
pub fn forge_envelope(
    signer: &IdentitySecret,
    header: envelope::EnvelopeHeader,
    zs: Vec<vtp_protocol::seal::Z>,
) -> Envelope {
    let digest = encoding::signing_digest(encoding::domain::ENVELOPE, &header);
    Envelope {
        signature: vtp_protocol::identity::test_sign(signer, &digest),
        header,
        zs,
        sender_card: signer.card().clone(),
        tp_cards: vec![Tp::new().card],
    }
}
