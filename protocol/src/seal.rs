//! The deterministic, verifiable encryption of the inside of z.
//!
//! An envelope names one or more trustees (TPs); each has its own z. Every
//! secret of an envelope is derived from one 32-byte *opening secret* `s`
//! (HKDF-SHA256 with distinct labels, per trustee slot where it says so):
//! - per slot, `K_z`, the AES-256 key that seals that trustee's inside (GCM,
//!   zero nonce: the key is used once), and the OAEP seed that wraps `K_z` to
//!   the trustee's RSA key, so anyone holding `s` can recompute every z byte
//!   for byte (Micali's Simultaneous Electronic Transactions' "E_PO(...) = z" check) while only the trustee's
//!   token can open its z without it;
//! - the share polynomial ([`crate::shares`]): `k_m = HKDF(σ)`, and slot i's
//!   inside carries `E_B(P(i))`, wrapped with an ephemeral key derived per
//!   slot, so a verifier holding `s` can also check what each trustee would
//!   release;
//! - the salt of the message commitment in the header.
//!
//! A trustee sees its inside (never `s`, never `k_m`): it learns who, when,
//! and the SHA-256 of the message, which it needs to certify delivery of a
//! specific message; it cannot read the message.
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

/// Per-envelope secrets derived from `s`; wiped on drop. Secrets of one
/// trustee's z come from [`Derived::slot`].
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Derived {
    /// The message key `k_m = HKDF(σ)` (see [`crate::shares`]).
    pub km: [u8; 32],
    pub commit_salt: [u8; 32],
    /// Seeds the share polynomial; its first draw is σ.
    share_seed: [u8; 32],
    prk: [u8; 32],
}

/// Secrets of trustee slot i's z; wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct SlotSecrets {
    pub kz: [u8; 32],
    pub oaep_seed: [u8; 32],
    pub wrap_eph: [u8; 32],
}

fn expand(prk: &[u8; 32], label: &[u8], slot: Option<usize>) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::from_prk(prk).expect("32-byte PRK is valid");
    let mut info = label.to_vec();
    if let Some(i) = slot {
        info.push(b'/');
        info.push(i as u8);
    }
    let mut out = [0u8; 32];
    hk.expand(&info, &mut out)
        .expect("32 bytes is a valid HKDF length");
    out
}

impl Derived {
    pub fn from_secret(s: &OpeningSecret) -> Self {
        let (prk, _) = Hkdf::<Sha256>::extract(Some(b"vtp/v1/opening"), &s.0);
        let mut prk_bytes = [0u8; 32];
        prk_bytes.copy_from_slice(&prk);
        let share_seed = expand(&prk_bytes, b"share-polynomial", None);
        let (sigma, _) = crate::shares::deal(&share_seed, 1, 1).expect("1 of 1 is a valid group");
        Derived {
            km: message_key_from_sigma(&sigma),
            commit_salt: expand(&prk_bytes, b"commit-salt", None),
            share_seed,
            prk: prk_bytes,
        }
    }

    /// The secrets of trustee slot `i`'s z.
    pub fn slot(&self, i: usize) -> SlotSecrets {
        SlotSecrets {
            kz: expand(&self.prk, b"z-key", Some(i)),
            oaep_seed: expand(&self.prk, b"oaep-seed", Some(i)),
            wrap_eph: expand(&self.prk, b"wrap-ephemeral", Some(i)),
        }
    }

    /// The shares of σ for a group of `trustees` with this threshold.
    pub fn shares(
        &self,
        threshold: usize,
        trustees: usize,
    ) -> Result<Vec<crate::shares::Share>, ProtocolError> {
        Ok(crate::shares::deal(&self.share_seed, threshold, trustees)?.1)
    }
}

/// `k_m` from the shared secret σ.
fn message_key_from_sigma(sigma: &[u8; 32]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"vtp/v1/message-key"), sigma);
    let mut km = [0u8; 32];
    hk.expand(b"message-key", &mut km)
        .expect("32 bytes is a valid HKDF length");
    km
}

/// The recipient's side: `k_m` from `threshold` released shares.
pub fn message_key_from_shares(
    shares: &[crate::shares::Share],
    threshold: usize,
) -> Result<Zeroizing<[u8; 32]>, ProtocolError> {
    let sigma = crate::shares::combine(shares, threshold)?;
    Ok(Zeroizing::new(message_key_from_sigma(&sigma)))
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
    /// `E_B(share)`: this trustee's share of the message key wrapped to the
    /// recipient (ECDH P-256); see [`crate::shares`].
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

/// A trustee as named in z's associated data.
#[derive(Serialize)]
pub(crate) struct AadTrustee<'a> {
    pub tp: &'a TpId,
    pub key_id: &'a KeyId,
}

/// The header fields bound into z's associated data.
#[derive(Serialize)]
pub(crate) struct AadFields<'a> {
    /// Every trustee of the group (tp, key) in slot order, and the threshold:
    /// a trustee's z cannot be moved into another group or another slot.
    pub trustees: Vec<AadTrustee<'a>>,
    pub threshold: u8,
    /// The slot this z belongs to.
    pub slot: u8,
    pub sender: &'a IdentityId,
    pub recipient: &'a IdentityId,
    pub deadline: Timestamp,
    pub cm_hash: &'a Digest32,
    pub message_commitment: &'a Digest32,
}

/// The AES-GCM associated data of one trustee's z: a hash over the header
/// fields that the inside must agree with. A z lifted into another header
/// (or slot) fails to decrypt.
pub(crate) fn z_aad(f: &AadFields<'_>) -> Vec<u8> {
    tagged_hash(domain::Z_AAD, &[&canonical(f)]).0.to_vec()
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
    d: &SlotSecrets,
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
    d: &SlotSecrets,
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

/// Context bound into the wrap of slot `slot`'s key share to the recipient.
pub(crate) fn wrap_context(
    sender: &IdentityId,
    recipient: &IdentityId,
    nonce: &[u8; 32],
    slot: u8,
) -> Vec<u8> {
    tagged_hash(
        domain::WRAP_CONTEXT,
        &[&sender.0 .0, &recipient.0 .0, nonce, &[slot]],
    )
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

/// `E_B(share)`: ECDH-P256 + HKDF + AES-256-GCM; output `eph_pub(33) || ct(48)`.
/// With one trustee the share is σ, from which `k_m` follows.
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

/// Length of a wrap: the ephemeral point (compressed) and the sealed share.
pub const WRAP_LEN: usize = 33 + 48;

/// The ephemeral point `E` of a wrap, if the wrap has the shape of one (its
/// length, and a curve point first). A wrap that does not opens for nobody.
pub fn wrap_ephemeral(wrapped: &[u8]) -> Result<EcPoint, ProtocolError> {
    if wrapped.len() != WRAP_LEN {
        return Err(ProtocolError::malformed(
            "wrap",
            format!("{} bytes, a wrap has {WRAP_LEN}", wrapped.len()),
        ));
    }
    EcPoint::from_sec1(&wrapped[..33])
        .map_err(|_| ProtocolError::malformed("wrap", "its ephemeral key is not a curve point"))
}

/// Open a wrap from the ECDH result `shared = b·E` (its x-coordinate is the
/// Diffie-Hellman secret): the recipient computes `shared` with his key, a
/// judge takes it from the recipient's proven claim
/// ([`crate::wrap_proof`]), and both decrypt exactly alike.
pub(crate) fn unwrap_with_shared(
    recipient: &EcPoint,
    wrapped: &[u8],
    shared: &EcPoint,
    context: &[u8],
) -> Result<Zeroizing<[u8; 32]>, ProtocolError> {
    wrap_ephemeral(wrapped).map_err(|_| ProtocolError::DoesNotDecrypt)?;
    let x = &shared.compressed()[1..];
    let cipher = wrap_cipher(&wrapped[..33], recipient, x, context);
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

/// `b·E` for the recipient's secret `b` and the wrap's ephemeral point.
pub(crate) fn ecdh_point(secret: &p256::SecretKey, eph: &EcPoint) -> EcPoint {
    let e = p256::ProjectivePoint::from(*eph.public_key().as_affine());
    let s = (e * *secret.to_nonzero_scalar()).to_affine();
    EcPoint::from_public(
        p256::PublicKey::from_affine(s).expect("b·E is not the identity for b ≠ 0 and E ≠ O"),
    )
}

/// Recipient side of [`wrap_message_key`].
pub(crate) fn unwrap_message_key(
    secret: &p256::SecretKey,
    wrapped: &[u8],
    context: &[u8],
) -> Result<Zeroizing<[u8; 32]>, ProtocolError> {
    let eph = wrap_ephemeral(wrapped).map_err(|_| ProtocolError::DoesNotDecrypt)?;
    let me = EcPoint::from_public(secret.public_key());
    unwrap_with_shared(&me, wrapped, &ecdh_point(secret, &eph), context)
}
