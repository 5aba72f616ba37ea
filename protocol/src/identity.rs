//! A party's identity: a secret file (signing key, encryption key, and a
//! master seed from which per-envelope secrets are derived) and the public,
//! self-signed card derived from it.

use p256::ecdsa::SigningKey;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::cache;
use crate::encoding::{self, canonical, domain, signing_digest, tagged_hash, Kind};
use crate::primitives::sign_digest;
use crate::{Digest32, EcPoint, IdentityId, ProtocolError, Signature, Timestamp};

/// The public part of an identity, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardBody {
    /// Human-readable name; informative only (identities are compared by id).
    pub name: String,
    /// ECDSA P-256 key that signs envelopes, receipts, claims.
    pub sign_key: EcPoint,
    /// ECDH P-256 key that message keys are wrapped to.
    pub enc_key: EcPoint,
    pub created: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct RawCard {
    body: CardBody,
    signature: Signature,
}

/// A self-signed identity card. Decoding checks the self-signature, so every
/// `IdentityCard` value in memory is internally consistent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCard", into = "RawCard")]
pub struct IdentityCard {
    body: CardBody,
    signature: Signature,
    id: IdentityId,
}

impl TryFrom<RawCard> for IdentityCard {
    type Error = ProtocolError;
    fn try_from(raw: RawCard) -> Result<Self, ProtocolError> {
        // Remembered for the decoder's message (see `encoding::failed_check`).
        (|| -> Result<Self, ProtocolError> {
            let body = canonical(&raw.body);
            // The same card comes back in exchange after exchange: check its
            // self-signature once per process (see `crate::cache`).
            let memo = cache::card_key(MEMO_DOMAIN, &body, &raw.signature.0);
            if cache::cards().get(&memo).is_none() {
                raw.body.sign_key.verify_statement(
                    domain::IDENTITY_CARD,
                    &body,
                    &raw.signature,
                    "identity card (self-signature)",
                )?;
                cache::cards().insert(memo, ());
            }
            let id = IdentityId(tagged_hash(domain::IDENTITY_ID, &[&body]));
            Ok(IdentityCard {
                body: raw.body,
                signature: raw.signature,
                id,
            })
        })()
        .map_err(crate::encoding::failed_check)
    }
}
/// Memo domain of identity cards (see `crate::cache`).
const MEMO_DOMAIN: &str = "vtp/v1/memo/identity-card";

impl From<IdentityCard> for RawCard {
    fn from(c: IdentityCard) -> RawCard {
        RawCard {
            body: c.body,
            signature: c.signature,
        }
    }
}

impl IdentityCard {
    pub fn id(&self) -> IdentityId {
        self.id
    }
    pub fn name(&self) -> &str {
        &self.body.name
    }
    pub fn body(&self) -> &CardBody {
        &self.body
    }
    pub fn sign_key(&self) -> &EcPoint {
        &self.body.sign_key
    }
    pub fn enc_key(&self) -> &EcPoint {
        &self.body.enc_key
    }
    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::IdentityCard, self)
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(Kind::IdentityCard, bytes)
    }
    /// Verify a statement of kind `domain` signed by this identity (the
    /// fast path: see [`EcPoint::verify_statement`]).
    pub fn verify_statement<T: Serialize>(
        &self,
        domain: &str,
        body: &T,
        sig: &Signature,
        what: &'static str,
    ) -> Result<(), ProtocolError> {
        self.body
            .sign_key
            .verify_statement(domain, &canonical(body), sig, what)
    }

    /// Verify a statement signed by this identity, given its signing digest.
    pub fn verify(
        &self,
        digest: &Digest32,
        sig: &Signature,
        what: &'static str,
    ) -> Result<(), ProtocolError> {
        self.body.sign_key.verify(digest, sig, what)
    }
}

/// Secret key material as stored in an identity file.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct SecretFile {
    #[zeroize(skip)]
    name: String,
    #[zeroize(skip)]
    created: Timestamp,
    sign_sk: [u8; 32],
    enc_sk: [u8; 32],
    master_seed: [u8; 32],
}

/// A party's secret identity. The card is derived from it deterministically.
pub struct IdentitySecret {
    file: SecretFile,
    signing: SigningKey,
    enc: p256::SecretKey,
    card: IdentityCard,
}

impl IdentitySecret {
    /// Make a new identity from the caller's randomness.
    pub fn generate(
        name: &str,
        created: Timestamp,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, ProtocolError> {
        if name.trim().is_empty() || name.len() > 256 {
            return Err(ProtocolError::malformed(
                "identity name",
                "must be 1 to 256 characters",
            ));
        }
        let signing = SigningKey::random(rng);
        let enc = p256::SecretKey::random(rng);
        let mut master_seed = [0u8; 32];
        rng.fill_bytes(&mut master_seed);
        let file = SecretFile {
            name: name.to_string(),
            created,
            sign_sk: signing.to_bytes().into(),
            enc_sk: enc.to_bytes().into(),
            master_seed,
        };
        master_seed.zeroize();
        Self::from_secret_file(file)
    }

    fn from_secret_file(file: SecretFile) -> Result<Self, ProtocolError> {
        let signing = SigningKey::from_slice(&file.sign_sk)
            .map_err(|_| ProtocolError::malformed("secret identity", "bad signing key"))?;
        let enc = p256::SecretKey::from_slice(&file.enc_sk)
            .map_err(|_| ProtocolError::malformed("secret identity", "bad encryption key"))?;
        let body = CardBody {
            name: file.name.clone(),
            sign_key: EcPoint::from_public(p256::PublicKey::from(signing.verifying_key())),
            enc_key: EcPoint::from_public(enc.public_key()),
            created: file.created,
        };
        let digest = signing_digest(domain::IDENTITY_CARD, &body);
        let signature = sign_digest(&signing, &digest);
        let card = IdentityCard::try_from(RawCard { body, signature })?;
        Ok(IdentitySecret {
            file,
            signing,
            enc,
            card,
        })
    }

    pub fn card(&self) -> &IdentityCard {
        &self.card
    }
    pub fn id(&self) -> IdentityId {
        self.card.id()
    }
    pub(crate) fn sign(&self, digest: &Digest32) -> Signature {
        sign_digest(&self.signing, digest)
    }
    pub(crate) fn enc_secret(&self) -> &p256::SecretKey {
        &self.enc
    }
    pub(crate) fn master_seed(&self) -> &[u8; 32] {
        &self.file.master_seed
    }
    pub fn to_file(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(encoding::encode(Kind::IdentitySecret, &self.file))
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let file: SecretFile = encoding::decode(Kind::IdentitySecret, bytes)?;
        Self::from_secret_file(file)
    }
}

/// Sign an arbitrary digest with an identity — for tests that must forge
/// well-signed but malicious statements (a cheating sender). Not for use in
/// production code: every real statement has its own constructor.
#[doc(hidden)]
pub fn test_sign(id: &IdentitySecret, digest: &Digest32) -> Signature {
    id.sign(digest)
}
