//! The TP's public card: who the TP is (its P-256 signing key), how to encrypt
//! to it (RSA-OAEP keys with ids and hash), and the policy it enforces.

use rsa::{BigUint, RsaPublicKey};
use serde::{Deserialize, Serialize};

use crate::cache;
use crate::encoding::{self, canonical, domain, signing_digest, tagged_hash, Kind};

/// Memo domain of TP cards (see `crate::cache`).
const MEMO_DOMAIN: &str = "vtp/v1/memo/tp-card";
use crate::{Digest32, EcPoint, KeyId, ProtocolError, Signature, Timestamp, TpId};

/// Hash used by RSA-OAEP (and its MGF1) for one key. SoftHSM 2.6 only offers
/// SHA-1 for OAEP; real HSMs should use SHA-256. Recorded per key so senders
/// encrypt exactly as the token decrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OaepHash {
    Sha1,
    Sha256,
}

impl std::fmt::Display for OaepHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OaepHash::Sha1 => "sha1",
            OaepHash::Sha256 => "sha256",
        })
    }
}

/// One TP encryption key as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpEncKey {
    pub id: KeyId,
    /// Big-endian modulus without leading zeros.
    pub modulus: Vec<u8>,
    pub exponent: Vec<u8>,
    pub oaep: OaepHash,
}

impl TpEncKey {
    /// The key as an `rsa` public key; sizes outside 2048..=4096 bits are refused.
    pub fn public_key(&self) -> Result<RsaPublicKey, ProtocolError> {
        let pk = RsaPublicKey::new(
            BigUint::from_bytes_be(&self.modulus),
            BigUint::from_bytes_be(&self.exponent),
        )
        .map_err(|e| ProtocolError::malformed("TP encryption key", e))?;
        let bits = self.bits();
        if !(2048..=4096).contains(&bits) {
            return Err(ProtocolError::malformed(
                "TP encryption key",
                format!("{bits}-bit modulus (allowed: 2048 to 4096)"),
            ));
        }
        Ok(pk)
    }
    pub fn bits(&self) -> usize {
        let lead = self.modulus.iter().take_while(|b| **b == 0).count();
        let m = &self.modulus[lead..];
        match m.first() {
            None => 0,
            Some(b) => (m.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
        }
    }
    /// Length in bytes of an RSA ciphertext for this key.
    pub fn ciphertext_len(&self) -> usize {
        self.bits().div_ceil(8)
    }
}

/// Limits the TP enforces; senders and recipients check them up front.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Farthest deadline, in seconds from now, the TP accepts.
    pub max_deadline_secs: u64,
    /// Least time that must be left before the deadline when Bob accepts, so
    /// he can still claim.
    pub min_claim_window_secs: u64,
    /// Allowed difference between a client's and the TP's clocks.
    pub clock_skew_secs: u64,
    /// As a trustee in a group: the least threshold it accepts (1 = it may
    /// also act alone, and any single trustee of a group may resolve).
    pub min_threshold: u8,
    /// As a trustee in a group: the most trustees a group may have.
    pub max_trustees: u8,
}

impl Policy {
    /// How often a TP re-signs its card (a new `created`, same keys): a
    /// sixteenth of the horizon, between 10 s and one day. Recipients accept
    /// deadlines only up to the horizon after the card's signing (see
    /// [`TpCard::latest_deadline`]), so the card a TP serves must stay young
    /// for senders to get nearly the whole horizon.
    pub fn card_refresh_secs(&self) -> u64 {
        (self.max_deadline_secs / 16).clamp(10, 24 * 3600)
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_deadline_secs: 90 * 24 * 3600,
            min_claim_window_secs: 60,
            clock_skew_secs: 300,
            min_threshold: 1,
            max_trustees: crate::shares::MAX_TRUSTEES as u8,
        }
    }
}

/// The TP card as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpCardBody {
    pub name: String,
    pub sign_key: EcPoint,
    pub enc_keys: Vec<TpEncKey>,
    /// Key new envelopes should use.
    pub current_key: KeyId,
    pub policy: Policy,
    pub created: Timestamp,
}

impl TpCardBody {
    /// Digest the TP signs (in its token) to make the card.
    pub fn signing_digest(&self) -> Digest32 {
        signing_digest(domain::TP_CARD, self)
    }
}

#[derive(Serialize, Deserialize)]
struct RawTpCard {
    body: TpCardBody,
    signature: Signature,
}

/// A self-signed TP card, checked on decode (signature, key sizes, current key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTpCard", into = "RawTpCard")]
pub struct TpCard {
    body: TpCardBody,
    signature: Signature,
    id: TpId,
}

impl TryFrom<RawTpCard> for TpCard {
    type Error = ProtocolError;
    fn try_from(raw: RawTpCard) -> Result<Self, ProtocolError> {
        let body = canonical(&raw.body);
        // Every envelope carries the TP card: a TP checks its own card (and
        // a client the card it uses) once per process (see `crate::cache`).
        let memo = cache::card_key(MEMO_DOMAIN, &body, &raw.signature.0);
        if cache::cards().get(&memo).is_none() {
            raw.body.sign_key.verify_statement(
                domain::TP_CARD,
                &body,
                &raw.signature,
                "TP card (self-signature)",
            )?;
            for k in &raw.body.enc_keys {
                k.public_key()?;
            }
            if !raw
                .body
                .enc_keys
                .iter()
                .any(|k| k.id == raw.body.current_key)
            {
                return Err(ProtocolError::malformed(
                    "TP card",
                    "current key is not among its keys",
                ));
            }
            cache::cards().insert(memo, ());
        }
        let id = tp_id(&raw.body.sign_key);
        Ok(TpCard {
            body: raw.body,
            signature: raw.signature,
            id,
        })
    }
}
impl From<TpCard> for RawTpCard {
    fn from(c: TpCard) -> Self {
        RawTpCard {
            body: c.body,
            signature: c.signature,
        }
    }
}

/// A TP's id is the hash of its signing key.
pub fn tp_id(sign_key: &EcPoint) -> TpId {
    TpId(tagged_hash(domain::TP_ID, &[&sign_key.compressed()]))
}

impl TpCard {
    /// Put a body and the token's signature together; checks the signature.
    pub fn assemble(body: TpCardBody, signature: Signature) -> Result<Self, ProtocolError> {
        TpCard::try_from(RawTpCard { body, signature })
    }
    pub fn id(&self) -> TpId {
        self.id
    }
    pub fn body(&self) -> &TpCardBody {
        &self.body
    }
    /// The name the TP gave itself (for messages; not authenticated beyond
    /// the card's self-signature).
    pub fn name(&self) -> &str {
        &self.body.name
    }
    pub fn policy(&self) -> &Policy {
        &self.body.policy
    }
    pub fn sign_key(&self) -> &EcPoint {
        &self.body.sign_key
    }
    pub fn key(&self, id: KeyId) -> Result<&TpEncKey, ProtocolError> {
        self.body
            .enc_keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| ProtocolError::UnknownKey(id.to_string()))
    }
    /// The latest deadline an envelope made or accepted under this card
    /// may have: the card's signing time plus its horizon plus the clock
    /// skew. A card is the TP's promise that its current key resolves claims
    /// up to then; senders and recipients refuse later deadlines (see
    /// [`crate::envelope::check_deadline`]). So once the TP's clock is past
    /// this instant for every card that named a key as current, no envelope
    /// a recipient accepted for that key can still be claimed, and the key
    /// can be retired without stranding anyone.
    pub fn latest_deadline(&self) -> Timestamp {
        let p = &self.body.policy;
        self.body
            .created
            .saturating_add(p.max_deadline_secs)
            .saturating_add(p.clock_skew_secs)
    }
    pub fn current_key(&self) -> &TpEncKey {
        self.key(self.body.current_key)
            .expect("checked when the card was built")
    }
    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::TpCard, self)
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(Kind::TpCard, bytes)
    }
    /// Verify a statement signed by the TP.
    pub fn verify(
        &self,
        digest: &Digest32,
        sig: &Signature,
        what: &'static str,
    ) -> Result<(), ProtocolError> {
        self.body.sign_key.verify(digest, sig, what)
    }
}
