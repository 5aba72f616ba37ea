//! The bank's public card: who the bank is (its P-256 statement key) and the
//! brands of coin it issues, each with its value, its three deadlines and the
//! RSA public key its coins are signed with.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::encoding::{self, canonical, domain, signing_digest, tagged_hash, Kind};
use crate::{Digest32, EcPoint, KeyId, ProtocolError, Signature, Timestamp};

use super::blind::BrandKey;

/// Most brands one card lists.
pub const MAX_BRANDS: usize = 64;
/// Least time a card leaves between a brand's `spend_until` and its
/// `deposit_until`, so that a merchant paid at the last moment can still
/// deposit.
pub const MIN_DEPOSIT_WINDOW_SECS: u64 = 24 * 3600;

/// A bank's identity: the hash of its statement key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BankId(pub Digest32);

impl fmt::Display for BankId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
impl fmt::Debug for BankId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BankId({:?})", self.0)
    }
}

/// A brand: the token key id (`CKA_ID`) of the brand's RSA key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BrandId(pub KeyId);

impl fmt::Display for BrandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
impl fmt::Debug for BrandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrandId({})", self.0)
    }
}

/// A currency code: 1 to 8 characters, `A-Z` and `0-9` (e.g. `EUR`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn new(code: &str) -> Result<Self, ProtocolError> {
        let ok = (1..=8).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !ok {
            return Err(ProtocolError::malformed(
                "currency",
                format!("{code:?}: 1 to 8 characters A-Z or 0-9"),
            ));
        }
        Ok(Currency(code.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Currency {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, ProtocolError> {
        Currency::new(&s)
    }
}
impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.0
    }
}
impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An amount of money in a currency's smallest unit (cents).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Amount {
    pub currency: Currency,
    pub units: u64,
}

impl Amount {
    pub fn new(currency: &Currency, units: u64) -> Amount {
        Amount {
            currency: currency.clone(),
            units,
        }
    }
    /// The sum of `amounts`, all in `currency`; `None` if one is in another
    /// currency or the sum overflows.
    pub fn sum<'a>(
        currency: &Currency,
        amounts: impl IntoIterator<Item = &'a Amount>,
    ) -> Option<Amount> {
        let mut units = 0u64;
        for a in amounts {
            if &a.currency != currency {
                return None;
            }
            units = units.checked_add(a.units)?;
        }
        Some(Amount::new(currency, units))
    }
}
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.units, self.currency)
    }
}
impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// One brand of coin as the card publishes it. Times are seconds since the
/// epoch: the bank signs new coins of the brand strictly before
/// `issue_until`, locks them for transactions whose deadline is at most
/// `spend_until` (and only before it), and deposits or refreshes them
/// strictly before `deposit_until`; after that the coins are worthless and
/// the bank forgets them (it keeps its spent-coin records only that long).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Brand {
    pub id: BrandId,
    /// A name for people (e.g. `EUR1-26Q4`); coins are told apart by `id`.
    pub name: String,
    pub value: Amount,
    pub issue_until: Timestamp,
    pub spend_until: Timestamp,
    pub deposit_until: Timestamp,
    /// RSA modulus, big-endian without leading zeros.
    pub modulus: Vec<u8>,
    /// RSA public exponent (65537), big-endian.
    pub exponent: Vec<u8>,
}

impl Brand {
    /// The brand's key for blinding, finalizing and verifying coins.
    pub fn key(&self) -> Result<BrandKey, ProtocolError> {
        BrandKey::new(&self.modulus, &self.exponent)
    }
    /// Length in bytes of the brand's modulus (of every blinded message and
    /// signature).
    pub fn modulus_len(&self) -> usize {
        let lead = self.modulus.iter().take_while(|b| **b == 0).count();
        self.modulus.len() - lead
    }
    fn check(&self) -> Result<(), ProtocolError> {
        let bad = |d: String| {
            Err(ProtocolError::malformed(
                "bank card",
                format!("brand {} ({:?}): {d}", self.id, self.name),
            ))
        };
        if self.name.is_empty() || self.name.len() > 64 {
            return bad("the name must be 1 to 64 characters".into());
        }
        if self.value.units == 0 {
            return bad("a brand must be worth something".into());
        }
        if !(self.issue_until <= self.spend_until && self.spend_until < self.deposit_until) {
            return bad("needs issue_until <= spend_until < deposit_until".into());
        }
        if self.deposit_until - self.spend_until < MIN_DEPOSIT_WINDOW_SECS {
            return bad(format!(
                "deposit_until must be at least {MIN_DEPOSIT_WINDOW_SECS} s after spend_until"
            ));
        }
        if let Err(e) = self.key() {
            return bad(e.to_string());
        }
        Ok(())
    }
}

/// The bank card as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankCardBody {
    pub name: String,
    /// The P-256 key that signs every bank statement (in the bank's token).
    pub sign_key: EcPoint,
    pub brands: Vec<Brand>,
    /// Allowed difference between a client's and the bank's clocks.
    pub clock_skew_secs: u64,
    pub created: Timestamp,
}

impl BankCardBody {
    /// The digest the bank's token signs to make the card.
    pub fn signing_digest(&self) -> Digest32 {
        signing_digest(domain::BANK_CARD, self)
    }
}

#[derive(Serialize, Deserialize)]
struct RawBankCard {
    body: BankCardBody,
    signature: Signature,
}

/// A self-signed bank card, checked on decode: the signature, every brand
/// (unique ids, deadlines in order, RSA keys of 2048 to 4096 bits with
/// exponent 65537).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawBankCard", into = "RawBankCard")]
pub struct BankCard {
    body: BankCardBody,
    signature: Signature,
    id: BankId,
}

impl TryFrom<RawBankCard> for BankCard {
    type Error = ProtocolError;
    fn try_from(raw: RawBankCard) -> Result<Self, ProtocolError> {
        raw.body.sign_key.verify_statement(
            domain::BANK_CARD,
            &canonical(&raw.body),
            &raw.signature,
            "bank card (self-signature)",
        )?;
        if raw.body.name.is_empty() || raw.body.name.len() > 256 {
            return Err(ProtocolError::malformed(
                "bank card",
                "the name must be 1 to 256 characters",
            ));
        }
        if raw.body.brands.len() > MAX_BRANDS {
            return Err(ProtocolError::malformed(
                "bank card",
                format!("more than {MAX_BRANDS} brands"),
            ));
        }
        for (i, b) in raw.body.brands.iter().enumerate() {
            b.check()?;
            if raw.body.brands[..i].iter().any(|o| o.id == b.id) {
                return Err(ProtocolError::malformed(
                    "bank card",
                    format!("brand id {} is listed twice", b.id),
                ));
            }
        }
        let id = bank_id(&raw.body.sign_key);
        Ok(BankCard {
            body: raw.body,
            signature: raw.signature,
            id,
        })
    }
}
impl From<BankCard> for RawBankCard {
    fn from(c: BankCard) -> Self {
        RawBankCard {
            body: c.body,
            signature: c.signature,
        }
    }
}

/// A bank's id is the hash of its statement key.
pub fn bank_id(sign_key: &EcPoint) -> BankId {
    BankId(tagged_hash(domain::BANK_ID, &[&sign_key.compressed()]))
}

impl BankCard {
    /// Put a body and the token's signature together; checks everything.
    pub fn assemble(body: BankCardBody, signature: Signature) -> Result<Self, ProtocolError> {
        BankCard::try_from(RawBankCard { body, signature })
    }
    pub fn id(&self) -> BankId {
        self.id
    }
    pub fn body(&self) -> &BankCardBody {
        &self.body
    }
    pub fn name(&self) -> &str {
        &self.body.name
    }
    pub fn clock_skew_secs(&self) -> u64 {
        self.body.clock_skew_secs
    }
    pub fn brands(&self) -> &[Brand] {
        &self.body.brands
    }
    /// The brand `id`, if this card lists it.
    pub fn brand(&self, id: BrandId) -> Result<&Brand, ProtocolError> {
        self.body.brands.iter().find(|b| b.id == id).ok_or_else(|| {
            ProtocolError::mismatch(
                "brand",
                format!("bank {:?} lists no brand {id}", self.body.name),
            )
        })
    }
    /// Verify a statement signed by the bank.
    pub fn verify(
        &self,
        digest: &Digest32,
        sig: &Signature,
        what: &'static str,
    ) -> Result<(), ProtocolError> {
        self.body.sign_key.verify(digest, sig, what)
    }
    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::BankCard, self)
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(Kind::BankCard, bytes)
    }
}
