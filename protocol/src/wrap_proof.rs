//! The recipient's proof that a released wrap does not open the message.
//!
//! A trustee cannot check the wrap `E_B(share)` it finds in z: it is
//! encrypted to Bob. So a sender can put a wrap into z that Bob cannot open
//! (or that opens to a share that gives no working message key); the trustee
//! then signs a *resolved* affidavit and Alice's receipt would stand although
//! Bob has nothing. This module lets Bob prove it to a judge who holds none
//! of his secrets:
//!
//! - For each wrap, Bob publishes the ECDH result `S = b·E` (b his encryption
//!   secret, E the wrap's ephemeral point) with a Chaum–Pedersen proof
//!   ([`DleqProof`]) that `log_G(B) = log_E(S)`: S is the one point his key
//!   gives, so the judge can derive the wrap key exactly as Bob does. The
//!   proof reveals nothing about b; S opens only that one wrap.
//! - [`VoidEvidence`] is Bob's file: every wrap the trustees released to him,
//!   each with its S and proof. The judge ([`crate::evidence`]) ties each wrap
//!   to a trustee's signed resolution by its hash, checks every proof,
//!   decrypts the wraps, combines the shares and decrypts `c_m`; only if no
//!   step gives the committed message is Alice's receipt void.
//!
//! Randomness comes from the caller (the protocol is sans-IO); the secret
//! scalar and the proof nonce are wiped after use.

use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::{Field, PrimeField};
use p256::{FieldBytes, ProjectivePoint, Scalar, U256};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::encoding::{self, domain, tagged_hash, Kind};
use crate::envelope::VerifiedEnvelope;
use crate::identity::IdentitySecret;
use crate::seal;
use crate::shares::Share;
use crate::{Digest32, EcPoint, ProtocolError};

/// A non-interactive Chaum–Pedersen proof that `log_G(B) = log_E(S)`:
/// challenge `c` and response `z = k + c·b` (Fiat–Shamir over G, B, E, S
/// and the commitments `k·G`, `k·E`). Both are canonical scalars once
/// parsed.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct DleqProof {
    c: Scalar,
    z: Scalar,
}

impl std::fmt::Debug for DleqProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes: Vec<u8> = (*self).into();
        write!(f, "DleqProof({}…)", &hex::encode(bytes)[..16])
    }
}

impl TryFrom<Vec<u8>> for DleqProof {
    type Error = ProtocolError;
    fn try_from(v: Vec<u8>) -> Result<Self, Self::Error> {
        // Remembered for the decoder's message (see `encoding::failed_check`).
        (|| -> Result<Self, ProtocolError> {
            let bad = || ProtocolError::malformed("proof of the shared point", "not two scalars");
            if v.len() != 64 {
                return Err(bad());
            }
            let scalar = |b: &[u8]| {
                let b: [u8; 32] = b.try_into().map_err(|_| bad())?;
                Option::<Scalar>::from(Scalar::from_repr(b.into())).ok_or_else(bad)
            };
            Ok(DleqProof {
                c: scalar(&v[..32])?,
                z: scalar(&v[32..])?,
            })
        })()
        .map_err(crate::encoding::failed_check)
    }
}

impl From<DleqProof> for Vec<u8> {
    fn from(p: DleqProof) -> Vec<u8> {
        let mut out = p.c.to_repr().to_vec();
        out.extend_from_slice(&p.z.to_repr());
        out
    }
}

fn projective(p: &EcPoint) -> ProjectivePoint {
    ProjectivePoint::from(*p.public_key().as_affine())
}

/// The compressed encoding of a point that may be the identity (a forged
/// proof's commitments can be); the identity encodes as one zero byte.
fn encode(p: &ProjectivePoint) -> Vec<u8> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    p.to_affine().to_encoded_point(true).as_bytes().to_vec()
}

/// The Fiat–Shamir challenge over the statement and the commitments.
fn challenge(
    b: &EcPoint,
    e: &EcPoint,
    s: &EcPoint,
    a1: &ProjectivePoint,
    a2: &ProjectivePoint,
) -> Scalar {
    let g = encode(&ProjectivePoint::GENERATOR);
    let d = tagged_hash(
        domain::WRAP_DLEQ,
        &[
            &g,
            &b.compressed(),
            &e.compressed(),
            &s.compressed(),
            &encode(a1),
            &encode(a2),
        ],
    );
    <Scalar as Reduce<U256>>::reduce_bytes(&FieldBytes::from(d.0))
}

impl DleqProof {
    /// Prove `S = secret·E` for `B = secret·G`. Nothing checks that S is
    /// right: a proof for a wrong S simply does not verify.
    pub(crate) fn prove(
        secret: &p256::SecretKey,
        e: &EcPoint,
        s: &EcPoint,
        rng: &mut impl CryptoRngCore,
    ) -> DleqProof {
        let b_pub = EcPoint::from_public(secret.public_key());
        let mut b: Scalar = *secret.to_nonzero_scalar();
        let mut k = Scalar::random(&mut *rng);
        let a1 = ProjectivePoint::GENERATOR * k;
        let a2 = projective(e) * k;
        let c = challenge(&b_pub, e, s, &a1, &a2);
        let z = k + c * b;
        k.zeroize();
        b.zeroize();
        DleqProof { c, z }
    }

    /// Check the proof that `log_G(B) = log_E(S)`.
    pub fn verify(&self, b: &EcPoint, e: &EcPoint, s: &EcPoint) -> Result<(), ProtocolError> {
        let a1 = ProjectivePoint::GENERATOR * self.z - projective(b) * self.c;
        let a2 = projective(e) * self.z - projective(s) * self.c;
        if challenge(b, e, s, &a1, &a2) == self.c {
            Ok(())
        } else {
            Err(ProtocolError::mismatch(
                "proof of the shared point",
                "the point is not the recipient's ECDH result for this wrap",
            ))
        }
    }
}

/// Bob's ECDH result for one wrap and its proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedPoint {
    /// `S = b·E`; its x-coordinate is the Diffie-Hellman secret of the wrap.
    pub point: EcPoint,
    pub proof: DleqProof,
}

/// One wrap a trustee released to Bob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedWrap {
    /// The trustee's slot in the envelope (0-based; the CLI says 1-based).
    pub slot: u8,
    /// The wrap exactly as released (its hash is in the trustee's resolution).
    pub wrap: Vec<u8>,
    /// Absent only when the wrap has no ephemeral point at all (wrong
    /// length, not a curve point): then nobody can open it, and the judge
    /// sees that from the wrap itself.
    pub shared: Option<SharedPoint>,
}

/// The recipient's evidence that the key the trustees released for him
/// does not open the message: a file of its own kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidEvidence {
    pub envelope_id: Digest32,
    /// Every wrap the recipient weighs, in slot order, one per trustee.
    pub wraps: Vec<ReleasedWrap>,
}

/// What recomputing one wrap from its proven shared point gives.
pub(crate) enum WrapOutcome {
    /// The share, ready to combine.
    Share(Share),
    /// Why this wrap yields no share (the sender's doing).
    Fails(&'static str),
}

impl VoidEvidence {
    /// Bob's side: the evidence for the wraps `released` (slot, wrap bytes)
    /// of an envelope addressed to `me`. Nothing is checked about whether
    /// they open: a judge recomputes that.
    pub fn build(
        me: &IdentitySecret,
        env: &VerifiedEnvelope,
        released: &[(usize, Vec<u8>)],
        rng: &mut impl CryptoRngCore,
    ) -> Result<VoidEvidence, ProtocolError> {
        let h = env.header();
        if h.recipient != me.id() {
            return Err(ProtocolError::Refused(
                "this envelope is not addressed to this identity".into(),
            ));
        }
        let mut wraps: Vec<ReleasedWrap> = Vec::with_capacity(released.len());
        for (slot, wrap) in released {
            if *slot >= h.trustees.len() || wraps.iter().any(|w| usize::from(w.slot) == *slot) {
                return Err(ProtocolError::malformed(
                    "released wraps",
                    format!("slot {slot} is out of range or repeated"),
                ));
            }
            let shared = seal::wrap_ephemeral(wrap).ok().map(|e| {
                let point = seal::ecdh_point(me.enc_secret(), &e);
                let proof = DleqProof::prove(me.enc_secret(), &e, &point, rng);
                SharedPoint { point, proof }
            });
            wraps.push(ReleasedWrap {
                slot: *slot as u8,
                wrap: wrap.clone(),
                shared,
            });
        }
        wraps.sort_by_key(|w| w.slot);
        Ok(VoidEvidence {
            envelope_id: h.envelope_id(),
            wraps,
        })
    }

    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::VoidEvidence, self)
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(Kind::VoidEvidence, bytes)
    }
}

impl ReleasedWrap {
    /// What Bob gets from this wrap, recomputed from the proven shared point
    /// exactly as [`crate::opening::unwrap_released_share`] derives it.
    /// `Err` when the evidence itself is wrong (a missing or false proof):
    /// then it proves nothing.
    pub(crate) fn reopen(
        &self,
        env: &VerifiedEnvelope,
        recipient: &EcPoint,
    ) -> Result<WrapOutcome, ProtocolError> {
        let slot = usize::from(self.slot);
        let Ok(e) = seal::wrap_ephemeral(&self.wrap) else {
            return Ok(WrapOutcome::Fails(
                "is malformed (not the length of a wrap, or no curve point where its ephemeral key goes)",
            ));
        };
        let Some(shared) = &self.shared else {
            return Err(ProtocolError::mismatch(
                "void evidence",
                "a well-formed wrap comes without the recipient's shared point and its proof",
            ));
        };
        shared.proof.verify(recipient, &e, &shared.point)?;
        let context = env.header().wrap_context(slot);
        let Ok(y) = seal::unwrap_with_shared(recipient, &self.wrap, &shared.point, &context) else {
            return Ok(WrapOutcome::Fails(
                "does not decrypt with the recipient's proven ECDH result",
            ));
        };
        let in_field = bool::from(Scalar::from_repr((*y).into()).is_some());
        if !in_field {
            return Ok(WrapOutcome::Fails(
                "holds a value that is not a key share (not a field element)",
            ));
        }
        Ok(WrapOutcome::Share(Share::new(self.slot + 1, *y)))
    }
}

/// Every distinct message key that some `threshold` of the `shares` give
/// (Lagrange interpolation of each subset). An honest sender's shares all
/// lie on one polynomial, so they give one key; inconsistent shares may give
/// several, and Bob has the message if any of them opens it.
pub(crate) fn candidate_keys(shares: &[Share], threshold: usize) -> Vec<Zeroizing<[u8; 32]>> {
    let mut keys: Vec<Zeroizing<[u8; 32]>> = Vec::new();
    let n = shares.len();
    if threshold == 0 || n < threshold {
        return keys;
    }
    // Subsets of size `threshold`, as increasing index vectors.
    let mut pick: Vec<usize> = (0..threshold).collect();
    loop {
        let subset: Vec<Share> = pick.iter().map(|&i| shares[i].clone()).collect();
        if let Ok(km) = seal::message_key_from_shares(&subset, threshold) {
            if !keys.iter().any(|k| **k == *km) {
                keys.push(km);
            }
        }
        // Next subset in lexicographic order.
        let Some(i) = (0..threshold).rev().find(|&i| pick[i] < n - threshold + i) else {
            return keys;
        };
        pick[i] += 1;
        for j in i + 1..threshold {
            pick[j] = pick[j - 1] + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn setup() -> (p256::SecretKey, EcPoint, EcPoint, EcPoint, ChaCha20Rng) {
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let b = p256::SecretKey::random(&mut rng);
        let e = EcPoint::from_public(p256::SecretKey::random(&mut rng).public_key());
        let s = seal::ecdh_point(&b, &e);
        let b_pub = EcPoint::from_public(b.public_key());
        (b, b_pub, e, s, rng)
    }

    #[test]
    fn a_proof_of_the_right_point_verifies() {
        let (b, b_pub, e, s, mut rng) = setup();
        let p = DleqProof::prove(&b, &e, &s, &mut rng);
        p.verify(&b_pub, &e, &s).unwrap();
        // It survives its encoding.
        let back = DleqProof::try_from(Vec::<u8>::from(p)).unwrap();
        back.verify(&b_pub, &e, &s).unwrap();
        // S is what ECDH gives: its x-coordinate is the shared secret.
        let shared = p256::ecdh::diffie_hellman(b.to_nonzero_scalar(), e.public_key().as_affine());
        assert_eq!(&s.compressed()[1..], &shared.raw_secret_bytes()[..]);
    }

    #[test]
    fn a_proof_for_a_wrong_point_fails() {
        let (b, b_pub, e, s, mut rng) = setup();
        // Another point: b·E for another E, or another key's result.
        let other = EcPoint::from_public(p256::SecretKey::random(&mut rng).public_key());
        let wrong = seal::ecdh_point(&b, &other);
        let p = DleqProof::prove(&b, &e, &wrong, &mut rng);
        assert!(p.verify(&b_pub, &e, &wrong).is_err());
        // A valid proof for S does not carry over to another point.
        let p = DleqProof::prove(&b, &e, &s, &mut rng);
        assert!(p.verify(&b_pub, &e, &wrong).is_err());
        assert!(p.verify(&b_pub, &other, &s).is_err());
    }

    #[test]
    fn a_tampered_proof_fails() {
        let (b, b_pub, e, s, mut rng) = setup();
        let p = DleqProof::prove(&b, &e, &s, &mut rng);
        let bytes: Vec<u8> = p.into();
        for i in [0, 31, 32, 63] {
            let mut t = bytes.clone();
            t[i] ^= 1;
            // A byte that makes no scalar is refused when parsed.
            if let Ok(q) = DleqProof::try_from(t) {
                assert!(q.verify(&b_pub, &e, &s).is_err(), "byte {i}");
            }
        }
        let forged = DleqProof {
            c: p.c,
            z: p.z + Scalar::ONE,
        };
        assert!(forged.verify(&b_pub, &e, &s).is_err());
        assert!(DleqProof::try_from(vec![0xff; 64]).is_err());
        assert!(DleqProof::try_from(vec![0; 63]).is_err());
    }

    #[test]
    fn a_proof_for_another_key_fails() {
        let (b, _, e, s, mut rng) = setup();
        let p = DleqProof::prove(&b, &e, &s, &mut rng);
        let other = EcPoint::from_public(p256::SecretKey::random(&mut rng).public_key());
        assert!(p.verify(&other, &e, &s).is_err());
        // Someone who knows another key cannot prove S for B.
        let c = p256::SecretKey::random(&mut rng);
        let p = DleqProof::prove(&c, &e, &s, &mut rng);
        assert!(p
            .verify(&EcPoint::from_public(b.public_key()), &e, &s)
            .is_err());
    }

    #[test]
    fn candidate_keys_are_every_distinct_subset_key() {
        let (sigma, shares) = crate::shares::deal(&[3; 32], 2, 3).unwrap();
        // Consistent shares give one key, the dealt one.
        let keys = candidate_keys(&shares, 2);
        assert_eq!(keys.len(), 1);
        let from_sigma = seal::message_key_from_shares(&[Share::new(1, *sigma)], 1).unwrap();
        assert_eq!(*keys[0], *from_sigma);
        // One bad share: {1,2} and {1,3} give other keys, {2,3} the dealt one.
        let mut bad = shares.clone();
        bad[0] = Share::new(1, [7; 32]);
        let keys = candidate_keys(&bad, 2);
        assert_eq!(keys.len(), 3);
        assert!(keys.iter().any(|k| **k == *from_sigma));
        // Fewer shares than the threshold give none.
        assert!(candidate_keys(&shares[..1], 2).is_empty());
    }
}
