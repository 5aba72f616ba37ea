//! Coins: a bank's blind signature on a fresh coin key.
//!
//! A coin certifies a P-256 public key Q, not a bearer serial number: the
//! holder proves it holds the coin by signing with q (Camp, Harkavy, Tygar
//! and Yee's "anonymous atomic transactions"). A stolen coin file is
//! useless without q, and every spend is signed by the coin key, so the
//! bank holds the spender's own authorization for whatever it did with the
//! coin (and a double spender's two signed requests).

use p256::ecdsa::SigningKey;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::encoding::{self, canonical, domain, tagged_hash, Kind};
use crate::primitives::sign_digest;
use crate::{Digest32, EcPoint, ProtocolError, Signature, Timestamp};

use super::blind::{Blinding, RANDOMIZER_LEN};
use super::card::{BankCard, BankId, Brand, BrandId};

/// What the bank blind-signs: the bank, the brand and the coin key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoinBody {
    pub bank: BankId,
    pub brand: BrandId,
    /// The coin key Q; its secret q stays with the holder.
    pub key: EcPoint,
}

impl CoinBody {
    /// The RFC 9474 message: `vtp/v1/coin || 0x00 || postcard(body)`.
    pub fn message(&self) -> Vec<u8> {
        let mut m = domain::COIN.as_bytes().to_vec();
        m.push(0);
        m.extend_from_slice(&canonical(self));
        m
    }
    /// The coin's id: a hash of the body only, so that no second signature
    /// on the same body could ever make a second coin.
    pub fn id(&self) -> CoinId {
        CoinId(tagged_hash(domain::COIN_ID, &[&canonical(self)]))
    }
}

/// A coin's identity: what the bank's spent-coin records are keyed by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CoinId(pub Digest32);

impl std::fmt::Display for CoinId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}
impl std::fmt::Debug for CoinId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CoinId({:?})", self.0)
    }
}

/// A coin: the body, the message randomizer and the bank's RSASSA-PSS
/// signature (SHA-384, MGF1-SHA-384, 48-byte salt) over `randomizer ||
/// body.message()` with the brand's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coin {
    pub body: CoinBody,
    pub randomizer: [u8; RANDOMIZER_LEN],
    pub signature: Vec<u8>,
}

impl Coin {
    pub fn id(&self) -> CoinId {
        self.body.id()
    }
    /// The bytes the brand key's RSASSA-PSS signature is over.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = self.randomizer.to_vec();
        m.extend_from_slice(&self.body.message());
        m
    }
    /// Check that this is a coin of `bank`: its bank, a brand the card
    /// lists, and the brand key's signature. Whether the brand is still
    /// good for what the coin is used for is each rule's question.
    pub fn verify(&self, bank: &BankCard) -> Result<VerifiedCoin, ProtocolError> {
        if self.body.bank != bank.id() {
            return Err(ProtocolError::mismatch(
                "coin",
                format!("it is a coin of another bank, not of {:?}", bank.name()),
            ));
        }
        let brand = bank.brand(self.body.brand)?;
        let key = brand.key()?;
        if self.signature.len() != key.modulus_len() {
            return Err(ProtocolError::BadSignature {
                what: "coin (the signature has the wrong length for its brand)",
            });
        }
        key.verify(
            &self.signature,
            &self.randomizer,
            &self.body.message(),
            "coin (the bank's signature does not verify under its brand key)",
        )?;
        Ok(VerifiedCoin {
            coin: self.clone(),
            brand: brand.clone(),
        })
    }
    /// Verify a statement signed with this coin's key q.
    pub(crate) fn verify_holder<T: Serialize>(
        &self,
        domain: &str,
        body: &T,
        sig: &Signature,
        what: &'static str,
    ) -> Result<(), ProtocolError> {
        self.body
            .key
            .verify_statement(domain, &canonical(body), sig, what)
    }
    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::Coin, self)
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(Kind::Coin, bytes)
    }
}

/// A coin whose bank signature checked, with its brand as the card lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCoin {
    coin: Coin,
    brand: Brand,
}

impl VerifiedCoin {
    pub fn coin(&self) -> &Coin {
        &self.coin
    }
    pub fn brand(&self) -> &Brand {
        &self.brand
    }
    pub fn id(&self) -> CoinId {
        self.coin.id()
    }
}

/// The secret coin key q. Wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct CoinSecret([u8; 32]);

impl CoinSecret {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let k = SigningKey::random(rng);
        CoinSecret(k.to_bytes().into())
    }
    pub fn from_bytes(b: [u8; 32]) -> Result<Self, ProtocolError> {
        SigningKey::from_slice(&b)
            .map_err(|_| ProtocolError::malformed("coin key", "not a P-256 scalar"))?;
        Ok(CoinSecret(b))
    }
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
    fn signing_key(&self) -> SigningKey {
        SigningKey::from_slice(&self.0).expect("checked when made")
    }
    pub fn public(&self) -> EcPoint {
        EcPoint::from_public(p256::PublicKey::from(self.signing_key().verifying_key()))
    }
    pub(crate) fn sign(&self, digest: &Digest32) -> Signature {
        sign_digest(&self.signing_key(), digest)
    }
}

impl std::fmt::Debug for CoinSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoinSecret(..)")
    }
}

/// A coin being withdrawn: the body the client made, its key, and the
/// blinding. The blinded message goes into a withdraw (or refresh)
/// request; the bank's blind signature finishes it ([`Self::finalize`]).
#[derive(Debug, Clone)]
pub struct PendingCoin {
    body: CoinBody,
    secret: CoinSecret,
    blinding: Blinding,
}

impl PendingCoin {
    /// A fresh coin key for brand `brand` of `bank`, blinded for its key.
    /// The client uses only brands of the bank card it pinned (compared
    /// out of band), so a bank cannot tag one customer with a brand of its
    /// own.
    pub fn new(
        bank: &BankCard,
        brand: BrandId,
        now: Timestamp,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Self, ProtocolError> {
        let b = bank.brand(brand)?;
        if now >= b.issue_until {
            return Err(ProtocolError::Refused(format!(
                "brand {} ({}) is no longer issued",
                b.id, b.name
            )));
        }
        let secret = CoinSecret::generate(rng);
        let body = CoinBody {
            bank: bank.id(),
            brand,
            key: secret.public(),
        };
        let blinding = b.key()?.blind(rng, &body.message())?;
        Ok(PendingCoin {
            body,
            secret,
            blinding,
        })
    }
    pub fn brand(&self) -> BrandId {
        self.body.brand
    }
    /// What to send to the bank for this coin.
    pub fn blinded(&self) -> super::BlindedItem {
        super::BlindedItem {
            brand: self.body.brand,
            blinded: self.blinding.blinded().to_vec(),
        }
    }
    /// Unblind the bank's blind signature into a coin, and check it.
    pub fn finalize(self, bank: &BankCard, blind_sig: &[u8]) -> Result<OwnedCoin, ProtocolError> {
        let key = bank.brand(self.body.brand)?.key()?;
        let signature = key.finalize(blind_sig, &self.blinding, &self.body.message())?;
        let coin = Coin {
            body: self.body,
            randomizer: self.blinding.randomizer(),
            signature,
        };
        coin.verify(bank)?;
        Ok(OwnedCoin {
            coin,
            secret: self.secret,
        })
    }
}

/// A coin with its secret key: what a wallet holds.
#[derive(Debug, Clone)]
pub struct OwnedCoin {
    pub coin: Coin,
    pub secret: CoinSecret,
}
