//! The TP's public card: who the TP is (its P-256 signing key), how to encrypt
//! to it (RSA-OAEP keys with ids and hash), the policy it enforces, and where
//! to reach it (its network addresses).
//!
//! ## Two layouts
//!
//! A card signs its [`TpCardBody`] and, since layout 2, the TP's
//! **addresses** (`host:port` strings the operator publishes). Both layouts
//! decode, so cards and envelopes made before addresses existed stay
//! readable:
//!
//! - layout 1 (no addresses): `body || signature`, the signature over
//!   `domain::TP_CARD` and the body. A card without addresses is always
//!   encoded this way.
//! - layout 2 (one or more addresses): `varint(u64::MAX) || 0x02 || body ||
//!   addresses || signature`, the signature over `domain::TP_CARD_ADDRESSED`
//!   and `(body, addresses)`. The marker sits where layout 1 has the length
//!   of the TP's name: no name that long fits in a file or frame, so the
//!   first varint tells the layouts apart.
//!
//! The addresses are covered by the TP's signature, so a client that trusts a
//! card can connect to them without being told where the TP is; as ever, what
//! answers there must still prove it is the TP (every answer is signed).

use rsa::{BigUint, RsaPublicKey};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    /// Digest the TP signs (in its token) to make a card without addresses
    /// (layout 1).
    pub fn signing_digest(&self) -> Digest32 {
        signing_digest(domain::TP_CARD, self)
    }

    /// Digest the TP signs to make a card that publishes `addresses`
    /// (layout 2; with no addresses, the layout-1 digest).
    pub fn signing_digest_with(&self, addresses: &[String]) -> Digest32 {
        if addresses.is_empty() {
            self.signing_digest()
        } else {
            signing_digest(domain::TP_CARD_ADDRESSED, &(self, addresses))
        }
    }
}

/// At most this many addresses on a card.
pub const MAX_ADDRESSES: usize = 8;
/// Longest address on a card, in bytes.
pub const MAX_ADDRESS_LEN: usize = 255;
/// Where layout 1 has the length of the name, layout 2 has this varint.
const LAYOUT_MARKER: u64 = u64::MAX;
/// The layout byte after [`LAYOUT_MARKER`].
const LAYOUT_ADDRESSED: u8 = 2;

/// Why an address cannot be published on a card (`None`: it can): 1 to
/// [`MAX_ADDRESS_LEN`] printable ASCII characters, no spaces.
pub fn address_problem(a: &str) -> Option<String> {
    if a.is_empty() {
        Some("an empty address".into())
    } else if a.len() > MAX_ADDRESS_LEN {
        Some(format!(
            "an address of {} bytes (at most {MAX_ADDRESS_LEN})",
            a.len()
        ))
    } else if !a.bytes().all(|b| b.is_ascii_graphic()) {
        Some(format!(
            "the address {:?} has characters other than printable ASCII",
            a
        ))
    } else {
        None
    }
}

fn check_addresses(addresses: &[String]) -> Result<(), ProtocolError> {
    if addresses.len() > MAX_ADDRESSES {
        return Err(ProtocolError::malformed(
            "TP card",
            format!("{} addresses (at most {MAX_ADDRESSES})", addresses.len()),
        ));
    }
    match addresses.iter().find_map(|a| address_problem(a)) {
        Some(p) => Err(ProtocolError::malformed("TP card", p)),
        None => Ok(()),
    }
}

/// A self-signed TP card, checked on decode (signature, key sizes, current
/// key, addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpCard {
    body: TpCardBody,
    /// Where the TP can be reached (signed; empty on a layout-1 card).
    addresses: Vec<String>,
    signature: Signature,
    id: TpId,
}

impl TpCard {
    /// Check a card: addresses, self-signature, keys, current key.
    fn check(
        body: TpCardBody,
        addresses: Vec<String>,
        signature: Signature,
    ) -> Result<Self, ProtocolError> {
        check_addresses(&addresses)?;
        let (domain, signed) = if addresses.is_empty() {
            (domain::TP_CARD, canonical(&body))
        } else {
            (domain::TP_CARD_ADDRESSED, canonical(&(&body, &addresses)))
        };
        // Every envelope carries the TP card: a TP checks its own card (and
        // a client the card it uses) once per process (see `crate::cache`).
        let memo = cache::card_key(MEMO_DOMAIN, &signed, &signature.0);
        if cache::cards().get(&memo).is_none() {
            body.sign_key.verify_statement(
                domain,
                &signed,
                &signature,
                "TP card (self-signature)",
            )?;
            for k in &body.enc_keys {
                k.public_key()?;
            }
            if !body.enc_keys.iter().any(|k| k.id == body.current_key) {
                return Err(ProtocolError::malformed(
                    "TP card",
                    "current key is not among its keys",
                ));
            }
            cache::cards().insert(memo, ());
        }
        let id = tp_id(&body.sign_key);
        Ok(TpCard {
            body,
            addresses,
            signature,
            id,
        })
    }
}

impl Serialize for TpCard {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.addresses.is_empty() {
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&self.body)?;
            t.serialize_element(&self.signature)?;
            t.end()
        } else {
            let mut t = s.serialize_tuple(5)?;
            t.serialize_element(&LAYOUT_MARKER)?;
            t.serialize_element(&LAYOUT_ADDRESSED)?;
            t.serialize_element(&self.body)?;
            t.serialize_element(&self.addresses)?;
            t.serialize_element(&self.signature)?;
            t.end()
        }
    }
}

/// Reads either layout from a non-self-describing format (postcard, which
/// is how every card is encoded): the first varint is the marker or the
/// name's length, then the name's bytes one by one (a `u8` is one byte).
struct CardVisitor;

impl<'de> Visitor<'de> for CardVisitor {
    type Value = TpCard;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a TP card")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TpCard, A::Error> {
        fn next<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(seq: &mut A) -> Result<T, A::Error> {
            seq.next_element()?
                .ok_or_else(|| de::Error::custom("truncated TP card"))
        }
        let first: u64 = next(&mut seq)?;
        let (body, addresses) = if first == LAYOUT_MARKER {
            let layout: u8 = next(&mut seq)?;
            if layout != LAYOUT_ADDRESSED {
                return Err(de::Error::custom(crate::encoding::failed_check(
                    ProtocolError::malformed("TP card", format!("unknown layout {layout}")),
                )));
            }
            let body: TpCardBody = next(&mut seq)?;
            let addresses: Vec<String> = next(&mut seq)?;
            if addresses.is_empty() {
                // One card, one encoding: without addresses it is layout 1.
                return Err(de::Error::custom(crate::encoding::failed_check(
                    ProtocolError::malformed("TP card", "layout 2 without addresses"),
                )));
            }
            (body, addresses)
        } else {
            let len = usize::try_from(first)
                .map_err(|_| de::Error::custom("a TP card name longer than any file"))?;
            // Grows only as bytes are actually there to read.
            let mut name = Vec::with_capacity(len.min(256));
            for _ in 0..len {
                name.push(next::<u8, A>(&mut seq)?);
            }
            let name = String::from_utf8(name)
                .map_err(|_| de::Error::custom("a TP card name that is not UTF-8"))?;
            let body = TpCardBody {
                name,
                sign_key: next(&mut seq)?,
                enc_keys: next(&mut seq)?,
                current_key: next(&mut seq)?,
                policy: next(&mut seq)?,
                created: next(&mut seq)?,
            };
            (body, Vec::new())
        };
        let signature: Signature = next(&mut seq)?;
        TpCard::check(body, addresses, signature)
            .map_err(|e| de::Error::custom(crate::encoding::failed_check(e)))
    }
}

impl<'de> Deserialize<'de> for TpCard {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TpCard, D::Error> {
        // The length only bounds how many elements may be read.
        d.deserialize_tuple(usize::MAX, CardVisitor)
    }
}

/// A TP's id is the hash of its signing key.
pub fn tp_id(sign_key: &EcPoint) -> TpId {
    TpId(tagged_hash(domain::TP_ID, &[&sign_key.compressed()]))
}

impl TpCard {
    /// Put a body and the token's signature together; checks the signature
    /// (a card without addresses, layout 1).
    pub fn assemble(body: TpCardBody, signature: Signature) -> Result<Self, ProtocolError> {
        TpCard::check(body, Vec::new(), signature)
    }
    /// Put a body, the addresses it publishes and the token's signature over
    /// [`TpCardBody::signing_digest_with`] together; checks it all.
    pub fn assemble_with_addresses(
        body: TpCardBody,
        addresses: Vec<String>,
        signature: Signature,
    ) -> Result<Self, ProtocolError> {
        TpCard::check(body, addresses, signature)
    }
    /// Where the TP says it can be reached (`host:port`, signed by the TP;
    /// empty for a card made before cards carried addresses).
    pub fn addresses(&self) -> &[String] {
        &self.addresses
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::PREFIX_LEN;
    use crate::{EcPoint, KeyId};
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;

    fn key() -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap()
    }

    fn body() -> TpCardBody {
        let rsa =
            rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("../tests/data/test-tp-rsa2048.pem"))
                .unwrap();
        TpCardBody {
            name: "test TP".into(),
            sign_key: EcPoint::from_public(p256::PublicKey::from(key().verifying_key())),
            enc_keys: vec![TpEncKey {
                id: KeyId([1; 8]),
                modulus: rsa.n().to_bytes_be(),
                exponent: rsa.e().to_bytes_be(),
                oaep: OaepHash::Sha1,
            }],
            current_key: KeyId([1; 8]),
            policy: Policy::default(),
            created: 1_800_000_000,
        }
    }

    fn sign(d: Digest32) -> Signature {
        let s: p256::ecdsa::Signature = key().sign_prehash(&d.0).unwrap();
        Signature(s.to_bytes().into())
    }

    fn card(addresses: &[&str]) -> TpCard {
        let b = body();
        let a: Vec<String> = addresses.iter().map(|s| s.to_string()).collect();
        let sig = sign(b.signing_digest_with(&a));
        TpCard::assemble_with_addresses(b, a, sig).unwrap()
    }

    /// The layout-1 encoding as it was before cards carried addresses.
    #[derive(Serialize)]
    struct OldCard {
        body: TpCardBody,
        signature: Signature,
    }

    #[test]
    fn a_card_without_addresses_keeps_the_old_encoding() {
        let b = body();
        let sig = sign(b.signing_digest());
        let old = encoding::encode(
            Kind::TpCard,
            &OldCard {
                body: b.clone(),
                signature: sig,
            },
        );
        let c = TpCard::from_file(&old).unwrap();
        assert!(c.addresses().is_empty());
        assert_eq!(c.to_file(), old);
        assert_eq!(TpCard::assemble(b, sig).unwrap(), c);
    }

    #[test]
    fn addresses_are_signed_and_round_trip() {
        let c = card(&["tp.example:7400", "[::1]:7400"]);
        let file = c.to_file();
        let back = TpCard::from_file(&file).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.addresses(), ["tp.example:7400", "[::1]:7400"]);
        assert_eq!(back.to_file(), file);
        // Same TP, same id, whichever layout.
        assert_eq!(back.id(), card(&[]).id());

        // Another address under the same signature is refused.
        let mut forged = file.clone();
        let at = forged.windows(4).position(|w| w == b"7400").unwrap();
        forged[at] = b'8';
        let e = TpCard::from_file(&forged).unwrap_err();
        assert!(e.to_string().contains("bad signature on TP card"), "{e}");
        // So is a layout-1 signature presented with addresses.
        let b = body();
        let sig = sign(b.signing_digest());
        assert!(TpCard::assemble_with_addresses(b, vec!["x:1".into()], sig).is_err());
    }

    #[test]
    fn odd_layouts_and_addresses_are_refused() {
        let mut two = card(&["tp.example:7400"]).to_file();
        // varint(u64::MAX) is ten bytes; the layout byte follows it.
        assert_eq!(two[PREFIX_LEN + 10], LAYOUT_ADDRESSED);
        two[PREFIX_LEN + 10] = 3;
        assert!(TpCard::from_file(&two).is_err());

        let b = body();
        let empty = encoding::encode(
            Kind::TpCard,
            &(
                LAYOUT_MARKER,
                LAYOUT_ADDRESSED,
                &b,
                Vec::<String>::new(),
                sign(b.signing_digest()),
            ),
        );
        assert!(TpCard::from_file(&empty).is_err());

        for bad in [
            "",
            "has space:1",
            "tab\t:1",
            &"x".repeat(MAX_ADDRESS_LEN + 1),
        ] {
            let a = vec![bad.to_string()];
            let sig = sign(b.signing_digest_with(&a));
            assert!(
                TpCard::assemble_with_addresses(b.clone(), a, sig).is_err(),
                "{bad:?}"
            );
        }
        let many: Vec<String> = (0..=MAX_ADDRESSES).map(|i| format!("h{i}:1")).collect();
        let sig = sign(b.signing_digest_with(&many));
        assert!(TpCard::assemble_with_addresses(b, many, sig).is_err());
    }

    #[test]
    fn either_layout_nests_in_other_values() {
        // As in an envelope: cards inside a sequence, followed by more data.
        let cards = (vec![card(&[]), card(&["a:1"])], 7u8);
        let bytes = canonical(&cards);
        let back: (Vec<TpCard>, u8) = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, cards);
    }
}
