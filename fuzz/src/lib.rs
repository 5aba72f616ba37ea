//! Shared fixtures and checks for the vtp fuzz targets.
//!
//! The fixture is one honest exchange built once per process, with host keys
//! standing in for the TP's token exactly as in `protocol/tests/flow.rs`
//! (the test RSA key is a copy of `protocol/tests/data/test-tp-rsa2048.pem`).
//! Targets mutate encoded pieces of it, so the fuzzer starts from inputs that
//! pass every check and can be steered into the deep branches.

use std::fmt::Debug;
use std::sync::LazyLock;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::SigningKey;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use vtp_protocol::affidavit::{Affidavit, AffidavitBody, ChainPosition, Statement};
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding::{self, CmHasher, Kind};
use vtp_protocol::envelope::{self, Envelope, VerifiedEnvelope};
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::message::{MessageOpener, MessageSealer};
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::seal::Inside;
use vtp_protocol::tp_card::{OaepHash, Policy, TpCard, TpCardBody, TpEncKey};
use vtp_protocol::wire::{FetchRequest, UnclaimedRequest};
use vtp_protocol::{Digest32, EcPoint, KeyId, ProtocolError, Signature};

/// The fixture's clock: the envelope is made at `NOW`.
pub const NOW: u64 = 1_800_000_000;
pub const DEADLINE: u64 = NOW + 3600;
/// When the fixture TP resolved the claim.
pub const RESOLVED_AT: u64 = NOW + 10;
/// When the fixture asks for an unclaimed certificate.
pub const UNCLAIMED_AT: u64 = DEADLINE + 10;
/// When the fixture's sender fetches her receipts.
pub const FETCH_AT: u64 = NOW + 20;

pub const MESSAGE: &[u8] = b"fuzzing vtp: the quarterly report, page 1 of 1";

/// One complete, honest exchange and every object it produces.
pub struct Fixture {
    pub tp_sign: SigningKey,
    pub tp: TpCard,
    pub alice: IdentitySecret,
    pub bob: IdentitySecret,
    pub message_sha256: Digest32,
    /// The message key `k_m` and the message ciphertext `c_m`.
    pub km: [u8; 32],
    pub cm: Vec<u8>,
    pub envelope: Envelope,
    pub venv: VerifiedEnvelope,
    pub receipt: Receipt,
    pub opening: Opening,
    pub inside: Inside,
    pub claim: Claim,
    pub aff_resolved: Affidavit,
    pub aff_invalid: Affidavit,
    pub aff_unclaimed: Affidavit,
    pub fetch: FetchRequest,
    pub unclaimed: UnclaimedRequest,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(Fixture::build);

/// The process-wide fixture (built on first use).
pub fn fixture() -> &'static Fixture {
    &FIXTURE
}

/// ECDSA over a prehashed digest with a host key (what the TP's token does).
pub fn sign_with(key: &SigningKey, digest: &Digest32) -> Signature {
    let s: p256::ecdsa::Signature = key.sign_prehash(&digest.0).expect("32-byte prehash");
    let s = s.normalize_s().unwrap_or(s);
    Signature(s.to_bytes().into())
}

/// Seal a message with `k_m`, chunk by chunk.
pub fn seal_message(km: &[u8; 32], msg: &[u8]) -> Vec<u8> {
    let mut s = MessageSealer::new(km, msg.len() as u64);
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(n) = s.next_len() {
        out.extend(s.seal_chunk(&msg[off..off + n]).expect("sized as asked"));
        off += n;
    }
    out
}

/// Open a whole ciphertext the well-behaved way.
pub fn open_message(km: &[u8; 32], cm: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut o = MessageOpener::new(km, cm.len() as u64)?;
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(n) = o.next_len() {
        let piece = cm.get(off..off + n).ok_or(ProtocolError::DoesNotDecrypt)?;
        out.extend(o.open_chunk(piece)?);
        off += n;
    }
    Ok(out)
}

impl Fixture {
    fn build() -> Fixture {
        let rsa = RsaPrivateKey::from_pkcs8_pem(include_str!("../data/test-tp-rsa2048.pem"))
            .expect("test RSA key");
        let tp_sign = SigningKey::from_slice(&[0x42; 32]).expect("test TP signing key");
        let key_id = KeyId([1, 2, 3, 4, 5, 6, 7, 8]);
        let body = TpCardBody {
            name: "fuzz TP".into(),
            sign_key: EcPoint::from_public(p256::PublicKey::from(tp_sign.verifying_key())),
            enc_keys: vec![TpEncKey {
                id: key_id,
                modulus: rsa.n().to_bytes_be(),
                exponent: rsa.e().to_bytes_be(),
                oaep: OaepHash::Sha1,
            }],
            current_key: key_id,
            policy: Policy::default(),
            created: NOW - 100,
        };
        let sig = sign_with(&tp_sign, &body.signing_digest());
        let tp = TpCard::assemble(body, sig).expect("fixture TP card");

        let ident = |name: &str, seed: u8| {
            IdentitySecret::generate(name, NOW - 1000, &mut ChaCha20Rng::from_seed([seed; 32]))
                .expect("fixture identity")
        };
        let alice = ident("alice", 1);
        let bob = ident("bob", 2);

        let prep = envelope::prepare(&alice, bob.card(), &tp, DEADLINE, NOW, [9; 32])
            .expect("fixture envelope");
        let km = *prep.message_key();
        let cm = seal_message(&km, MESSAGE);
        let mut h = CmHasher::default();
        h.update(&cm);
        let message_sha256 = Digest32(Sha256::digest(MESSAGE).into());
        let envelope = prep
            .finish(&alice, h.finish(), cm.len() as u64, message_sha256)
            .expect("fixture envelope");
        let venv = envelope.verify(&tp).expect("fixture envelope verifies");
        let receipt = Receipt::issue(&bob, &venv, NOW + 1);
        let vr = receipt.verify(&venv).expect("fixture receipt verifies");
        let opening = Opening::reveal(&alice, &venv, &vr).expect("fixture opening");
        let opened = opening
            .check(&venv, bob.card())
            .expect("fixture opening opens");
        let inside = opened.inside.clone();
        let claim = Claim::new(&bob, &venv, &vr, NOW + 5);
        let vc = claim
            .decide_fresh(&tp, RESOLVED_AT)
            .expect("fixture claim is resolvable");
        let tp_affidavit = |body: AffidavitBody| Affidavit {
            signature: sign_with(&tp_sign, &body.signing_digest()),
            body,
        };
        // Journal positions: the fixture TP's first records (any positions
        // with seq > 0 would do; the judge does not read the journal).
        let at = |seq: u64, prev: u8| ChainPosition {
            seq,
            prev: if seq == 1 {
                ChainPosition::GENESIS_PREV
            } else {
                Digest32([prev; 32])
            },
        };
        let aff_resolved =
            tp_affidavit(AffidavitBody::resolved(&vc, &inside, at(1, 0)));
        let aff_invalid = tp_affidavit(AffidavitBody::invalid_envelope(&vc, at(2, 0x11)));
        let aff_unclaimed =
            tp_affidavit(AffidavitBody::about(
                &venv,
                0,
                UNCLAIMED_AT,
                Statement::Unclaimed,
                at(3, 0x22),
            ));
        let fetch = FetchRequest::new(&alice, tp.id(), FETCH_AT, 0, std::num::NonZeroU32::MAX);
        let unclaimed = UnclaimedRequest::new(&bob, &venv, tp.id(), UNCLAIMED_AT);
        Fixture {
            tp_sign,
            tp,
            alice,
            bob,
            message_sha256,
            km,
            cm,
            envelope,
            venv,
            receipt,
            opening,
            inside,
            claim,
            aff_resolved,
            aff_invalid,
            aff_unclaimed,
            fetch,
            unclaimed,
        }
    }

    /// The three affidavits the fixture TP signed.
    pub fn affidavits(&self) -> [&Affidavit; 3] {
        [&self.aff_resolved, &self.aff_invalid, &self.aff_unclaimed]
    }
}

/// The layout of every self-signed object on disk (`RawCard`, `RawTpCard`
/// are private to the protocol crate): postcard encodes a struct as its
/// fields in order, so this mirror reads and writes the same bytes.
#[derive(Debug, Serialize, Deserialize)]
pub struct RawSigned<B> {
    pub body: B,
    pub signature: Signature,
}

/// Encode `value` as a file of `kind` (prefix + postcard body).
pub fn file_of<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    encoding::encode(kind, value)
}

/// Whether to insist that accepted bytes are exactly the canonical encoding.
pub const STRICT_CANONICAL: bool = cfg!(feature = "strict-canonical");

/// Round-trip property for a decoded value: its encoding decodes to an equal
/// value, re-encoding is a fixed point, and — where the format has a single
/// encoding per value (`one_encoding`), or with `--features strict-canonical`
/// — the accepted input was that encoding.
pub fn check_roundtrip<T, E, D>(
    what: &str,
    input: &[u8],
    value: &T,
    encode: E,
    decode: D,
    one_encoding: bool,
) where
    T: PartialEq + Debug,
    E: Fn(&T) -> Vec<u8>,
    D: Fn(&[u8]) -> Result<T, ProtocolError>,
{
    let enc = encode(value);
    let again = match decode(&enc) {
        Ok(v) => v,
        Err(e) => panic!("{what}: the re-encoded value does not decode: {e}"),
    };
    assert_eq!(&again, value, "{what}: decode(encode(v)) != v");
    assert_eq!(encode(&again), enc, "{what}: encoding is not a fixed point");
    if one_encoding || STRICT_CANONICAL {
        assert_eq!(
            enc.as_slice(),
            input,
            "{what}: accepted bytes that are not the canonical encoding of what they decode to"
        );
    }
}

/// A small cursor over fuzz bytes that yields zeros when exhausted.
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
