//! The deterministic, verifiable encryption of the inside of z.
//!
//! Everything about one envelope is derived from one 32-byte *opening secret*
//! `s` (HKDF-SHA256 with distinct labels):
//! - `K_z`, the AES-256 key that seals the inside (GCM, zero nonce: the key is
//!   used once), and the OAEP seed that wraps `K_z` to the TP's RSA key, so
//!   that anyone holding `s` can recompute z byte for byte (seed 000's
//!   "E_PO(...) = z" check) while only the TP's token can open z without it;
//! - `k_m`, the message key, and the ephemeral ECDH key that wraps `k_m` to Bob,
//!   so a verifier holding `s` can also check that the wrapped key Bob gets from
//!   the TP is the one that opens the message;
//! - the salt of the message commitment in the header.
//!
//! The TP sees the inside (never `s`, never `k_m`): it learns who, when, and the
//! SHA-256 of the message, which it needs to certify delivery of a specific
//! message; it cannot read the message.
//!
//! `s` itself is derived by Alice from her identity's master seed and the
//! envelope's public nonce, so she has nothing extra to remember.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use hkdf::Hkdf;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::encoding::{canonical, decode_body, domain, tagged_hash, Kind};
use crate::tp_card::{OaepHash, TpEncKey};
use crate::{Digest32, EcPoint, IdentityId, KeyId, ProtocolError, Timestamp, TpId};

/// z's AES-GCM nonce. `K_z` is fresh per envelope, so a fixed nonce is safe,
/// and it keeps z a pure function of `s` and the inside.
pub const Z_NONCE: [u8; 12] = [0u8; 12];
const WRAP_NONCE: [u8; 12] = [0u8; 12];
/// Largest inside we accept (it is small and fixed-size in practice).
pub const MAX_INSIDE: usize = 4096;

/// The secret Alice reveals in A2.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct OpeningSecret(pub(crate) [u8; 32]);

impl OpeningSecret {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        OpeningSecret(b)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Alice's derivation: `HKDF(master_seed, salt = nonce)`.
    pub(crate) fn derive(master_seed: &[u8; 32], nonce: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(nonce), master_seed);
        let mut s = [0u8; 32];
        hk.expand(b"vtp/v1/opening-secret", &mut s)
            .expect("32 bytes is a valid HKDF length");
        OpeningSecret(s)
    }
}

impl std::fmt::Debug for OpeningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpeningSecret(***)")
    }
}

/// Per-envelope secrets derived from `s`; wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Derived {
    pub kz: [u8; 32],
    pub oaep_seed: [u8; 32],
    pub km: [u8; 32],
    pub wrap_eph: [u8; 32],
    pub commit_salt: [u8; 32],
}

impl Derived {
    pub fn from_secret(s: &OpeningSecret) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"vtp/v1/opening"), &s.0);
        let mut d = Derived {
            kz: [0; 32],
            oaep_seed: [0; 32],
            km: [0; 32],
            wrap_eph: [0; 32],
            commit_salt: [0; 32],
        };
        let ok = hk.expand(b"z-key", &mut d.kz).is_ok()
            && hk.expand(b"oaep-seed", &mut d.oaep_seed).is_ok()
            && hk.expand(b"message-key", &mut d.km).is_ok()
            && hk.expand(b"wrap-ephemeral", &mut d.wrap_eph).is_ok()
            && hk.expand(b"commit-salt", &mut d.commit_salt).is_ok();
        assert!(ok, "32 bytes is a valid HKDF length");
        d
    }
}

/// The TP-encrypted part of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Z {
    /// `K_z` wrapped with RSA-OAEP to the TP key named in the header.
    pub wrapped_key: Vec<u8>,
    /// AES-256-GCM(`K_z`, nonce 0, aad, inside) including the 16-byte tag.
    pub sealed: Vec<u8>,
}

impl Z {
    pub fn hash(&self) -> Digest32 {
        tagged_hash(domain::Z_HASH, &[&canonical(self)])
    }
}

/// What z contains. The TP checks every field against the signed header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize)]
pub struct Inside {
    #[zeroize(skip)]
    pub tp: TpId,
    #[zeroize(skip)]
    pub key_id: KeyId,
    #[zeroize(skip)]
    pub sender: IdentityId,
    #[zeroize(skip)]
    pub recipient: IdentityId,
    pub deadline: Timestamp,
    #[zeroize(skip)]
    pub cm_hash: Digest32,
    #[zeroize(skip)]
    pub message_sha256: Digest32,
    pub commit_salt: [u8; 32],
    /// `E_B(k_m)`: the message key wrapped to the recipient (ECDH P-256).
    pub wrapped_km: Vec<u8>,
}

impl Inside {
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        if bytes.len() > MAX_INSIDE {
            return Err(ProtocolError::malformed("inside of z", "too long"));
        }
        decode_body(Kind::Envelope, bytes)
    }
    pub fn wrapped_km_hash(&self) -> Digest32 {
        wrapped_km_hash(&self.wrapped_km)
    }
}

/// The hash by which a resolved affidavit names the `E_B(k_m)` the TP
/// released; the one definition the TP, the journal check and the client use.
pub fn wrapped_km_hash(wrapped_km: &[u8]) -> Digest32 {
    tagged_hash(domain::WRAPPED_KM, &[wrapped_km])
}

/// The header fields bound into z's associated data.
#[derive(Serialize)]
struct AadFields<'a> {
    tp: &'a TpId,
    key_id: &'a KeyId,
    sender: &'a IdentityId,
    recipient: &'a IdentityId,
    deadline: Timestamp,
    cm_hash: &'a Digest32,
    message_commitment: &'a Digest32,
}

/// The AES-GCM associated data of z: a hash over the header fields that the
/// inside must agree with. A z lifted into another header fails to decrypt.
#[allow(clippy::too_many_arguments)]
pub fn z_aad(
    tp: &TpId,
    key_id: &KeyId,
    sender: &IdentityId,
    recipient: &IdentityId,
    deadline: Timestamp,
    cm_hash: &Digest32,
    message_commitment: &Digest32,
) -> Vec<u8> {
    let f = AadFields {
        tp,
        key_id,
        sender,
        recipient,
        deadline,
        cm_hash,
        message_commitment,
    };
    tagged_hash(domain::Z_AAD, &[&canonical(&f)]).0.to_vec()
}

/// `H(salt || SHA-256(m))`: the header's hiding commitment to the message.
pub fn message_commitment(salt: &[u8; 32], message_sha256: &Digest32) -> Digest32 {
    tagged_hash(domain::MESSAGE_COMMITMENT, &[salt, &message_sha256.0])
}

fn oaep_encrypt(key: &TpEncKey, seed: &[u8; 32], kz: &[u8; 32]) -> Result<Vec<u8>, ProtocolError> {
    let pk = key.public_key()?;
    // The OAEP seed is drawn from a ChaCha20 stream keyed by the derived seed,
    // which makes the encryption a function of `s`. Pinned by known-answer tests.
    let mut rng = ChaCha20Rng::from_seed(*seed);
    let r = match key.oaep {
        OaepHash::Sha1 => pk.encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), kz),
        OaepHash::Sha256 => pk.encrypt(&mut rng, rsa::Oaep::new::<Sha256>(), kz),
    };
    r.map_err(|e| ProtocolError::malformed("TP encryption key", e))
}

/// Build z (Alice, A1) — and recompute it (Bob and judges, B2).
pub(crate) fn seal_z(
    key: &TpEncKey,
    d: &Derived,
    inside: &Inside,
    aad: &[u8],
) -> Result<Z, ProtocolError> {
    let wrapped_key = oaep_encrypt(key, &d.oaep_seed, &d.kz)?;
    let plain = Zeroizing::new(canonical(inside));
    let cipher = Aes256Gcm::new(&d.kz.into());
    let sealed = cipher
        .encrypt(&Z_NONCE.into(), Payload { msg: &plain, aad })
        .map_err(|_| ProtocolError::malformed("inside of z", "cannot encrypt"))?;
    Ok(Z {
        wrapped_key,
        sealed,
    })
}

/// Open z with the opening secret and check it recomputes to exactly the same
/// bytes. Any failure is the single opaque `DoesNotDecrypt`.
pub(crate) fn open_z_with_secret(
    key: &TpEncKey,
    z: &Z,
    d: &Derived,
    aad: &[u8],
) -> Result<Inside, ProtocolError> {
    let cipher = Aes256Gcm::new(&d.kz.into());
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                &Z_NONCE.into(),
                Payload {
                    msg: &z.sealed,
                    aad,
                },
            )
            .map_err(|_| ProtocolError::DoesNotDecrypt)?,
    );
    let inside = Inside::decode(&plain).map_err(|_| ProtocolError::DoesNotDecrypt)?;
    let again = seal_z(key, d, &inside, aad)?;
    if again != *z {
        return Err(ProtocolError::DoesNotDecrypt);
    }
    Ok(inside)
}

/// Context bound into the wrap of `k_m` to the recipient.
pub(crate) fn wrap_context(
    sender: &IdentityId,
    recipient: &IdentityId,
    nonce: &[u8; 32],
) -> Vec<u8> {
    tagged_hash(domain::WRAPPED_KM, &[&sender.0 .0, &recipient.0 .0, nonce])
        .0
        .to_vec()
}

fn wrap_cipher(eph_pub: &[u8], recipient: &EcPoint, shared: &[u8], context: &[u8]) -> Aes256Gcm {
    let mut salt = eph_pub.to_vec();
    salt.extend_from_slice(&recipient.compressed());
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut k = Zeroizing::new([0u8; 32]);
    let mut info = b"vtp/v1/wrap-km".to_vec();
    info.extend_from_slice(context);
    hk.expand(&info, k.as_mut()).expect("valid HKDF length");
    Aes256Gcm::new(&(*k).into())
}

/// `E_B(k_m)`: ECDH-P256 + HKDF + AES-256-GCM; output `eph_pub(33) || ct(48)`.
pub(crate) fn wrap_message_key(
    recipient: &EcPoint,
    eph_secret: &[u8; 32],
    km: &[u8; 32],
    context: &[u8],
) -> Result<Vec<u8>, ProtocolError> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let eph = p256::SecretKey::from_slice(eph_secret)
        .map_err(|_| ProtocolError::malformed("ephemeral key", "derived scalar out of range"))?;
    let eph_pub = eph.public_key().to_encoded_point(true).as_bytes().to_vec();
    let shared =
        p256::ecdh::diffie_hellman(eph.to_nonzero_scalar(), recipient.public_key().as_affine());
    let cipher = wrap_cipher(&eph_pub, recipient, shared.raw_secret_bytes(), context);
    let ct = cipher
        .encrypt(
            &WRAP_NONCE.into(),
            Payload {
                msg: km,
                aad: context,
            },
        )
        .map_err(|_| ProtocolError::malformed("message key", "cannot wrap"))?;
    let mut out = eph_pub;
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Recipient side of [`wrap_message_key`].
pub(crate) fn unwrap_message_key(
    secret: &p256::SecretKey,
    wrapped: &[u8],
    context: &[u8],
) -> Result<Zeroizing<[u8; 32]>, ProtocolError> {
    if wrapped.len() != 33 + 48 {
        return Err(ProtocolError::DoesNotDecrypt);
    }
    let eph = p256::PublicKey::from_sec1_bytes(&wrapped[..33])
        .map_err(|_| ProtocolError::DoesNotDecrypt)?;
    let me = EcPoint::from_public(secret.public_key());
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), eph.as_affine());
    let cipher = wrap_cipher(&wrapped[..33], &me, shared.raw_secret_bytes(), context);
    let km = Zeroizing::new(
        cipher
            .decrypt(
                &WRAP_NONCE.into(),
                Payload {
                    msg: &wrapped[33..],
                    aad: context,
                },
            )
            .map_err(|_| ProtocolError::DoesNotDecrypt)?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&km);
    Ok(out)
}
