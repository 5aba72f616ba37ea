//! A1: Alice's envelope, and Bob's checks of it before he signs a receipt.
//!
//! An envelope file is `VTP || Envelope-kind || version || u32-BE length ||
//! postcard(Envelope) || c_m`. The TP only ever needs the [`Envelope`] part, so
//! its work does not depend on the size of the message.

use crate::error::span;
use serde::{Deserialize, Serialize};

use crate::encoding::{self, canonical, domain, signing_digest, tagged_hash, Kind, PREFIX_LEN};
use crate::identity::{IdentityCard, IdentitySecret};
use crate::seal::{self, Derived, Inside, OpeningSecret, Z};
use crate::shares::MAX_TRUSTEES;
use crate::tp_card::TpCard;
use crate::{Digest32, IdentityId, KeyId, ProtocolError, Signature, Timestamp, TpId};

/// Largest encoded [`Envelope`] (without `c_m`) accepted anywhere.
pub const MAX_ENVELOPE: usize = 64 * 1024;

/// One trustee of an envelope: who, with which of its keys, and the hash of
/// the z only that trustee can open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrusteeSlot {
    pub tp: TpId,
    pub key_id: KeyId,
    pub z_hash: Digest32,
}

/// The signed, public description of an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeHeader {
    /// The trusted party: one TP, or a group of trustees (distinct TPs) of
    /// which any `threshold` must resolve (see [`crate::shares`]).
    pub trustees: Vec<TrusteeSlot>,
    pub threshold: u8,
    pub sender: IdentityId,
    pub recipient: IdentityId,
    /// Trustees resolve strictly before this instant (each on its own clock),
    /// never at or after.
    pub deadline: Timestamp,
    pub created: Timestamp,
    /// Fresh per envelope; Alice derives the opening secret from it.
    pub nonce: [u8; 32],
    pub cm_hash: Digest32,
    pub cm_len: u64,
    /// Hiding commitment to SHA-256 of the message (salt is inside z).
    pub message_commitment: Digest32,
}

impl EnvelopeHeader {
    /// The envelope's identity: what receipts and affidavits name.
    pub fn envelope_id(&self) -> Digest32 {
        tagged_hash(domain::ENVELOPE_ID, &[&canonical(self)])
    }
    /// The slot of trustee `tp`, if it is one of this envelope's trustees.
    pub fn slot_of(&self, tp: &TpId) -> Option<usize> {
        self.trustees.iter().position(|s| s.tp == *tp)
    }
    /// The ids of the trustees, in slot order.
    pub fn trustee_ids(&self) -> Vec<TpId> {
        self.trustees.iter().map(|s| s.tp).collect()
    }
    /// More than one trustee.
    pub fn is_group(&self) -> bool {
        self.trustees.len() > 1
    }
    pub fn threshold(&self) -> usize {
        usize::from(self.threshold)
    }
    /// The associated data of slot `slot`'s z.
    pub fn aad(&self, slot: usize) -> Vec<u8> {
        seal::z_aad(&seal::AadFields {
            trustees: self
                .trustees
                .iter()
                .map(|t| seal::AadTrustee {
                    tp: &t.tp,
                    key_id: &t.key_id,
                })
                .collect(),
            threshold: self.threshold,
            slot: slot as u8,
            sender: &self.sender,
            recipient: &self.recipient,
            deadline: self.deadline,
            cm_hash: &self.cm_hash,
            message_commitment: &self.message_commitment,
        })
    }
    pub(crate) fn wrap_context(&self, slot: usize) -> Vec<u8> {
        seal::wrap_context(&self.sender, &self.recipient, &self.nonce, slot as u8)
    }
    /// Compare the inside of slot `slot`'s z with this header, naming the
    /// first difference.
    pub fn check_inside(&self, slot: usize, inside: &Inside) -> Result<(), ProtocolError> {
        let Some(t) = self.trustees.get(slot) else {
            return Err(ProtocolError::mismatch(
                "inside of z",
                "no such trustee slot",
            ));
        };
        let diff = if inside.tp != t.tp {
            Some("TP")
        } else if inside.key_id != t.key_id {
            Some("key id")
        } else if inside.sender != self.sender {
            Some("sender")
        } else if inside.recipient != self.recipient {
            Some("recipient")
        } else if inside.deadline != self.deadline {
            Some("deadline")
        } else if inside.cm_hash != self.cm_hash {
            Some("message ciphertext hash")
        } else if seal::message_commitment(&inside.commit_salt, &inside.message_sha256)
            != self.message_commitment
        {
            Some("message commitment")
        } else {
            None
        };
        match diff {
            Some(field) => Err(ProtocolError::mismatch(
                "inside of z",
                format!("{field} differs from the signed header"),
            )),
            None => Ok(()),
        }
    }
}

/// Header + one z per trustee + Alice's card and signature: everything but
/// the message body. The cards of the trustees Alice used travel along
/// (self-signed; the signed header names their ids), so that opening and
/// revealing need no other file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub header: EnvelopeHeader,
    /// z of each trustee, in slot order.
    pub zs: Vec<Z>,
    pub sender_card: IdentityCard,
    /// Card of each trustee, in slot order.
    pub tp_cards: Vec<TpCard>,
    pub signature: Signature,
}

impl Envelope {
    pub fn envelope_id(&self) -> Digest32 {
        self.header.envelope_id()
    }

    /// The checks anyone can make with the cards carried in the envelope: a
    /// well-formed group, each card is the trustee named and has the key
    /// named, the sender's card is the one named, her signature, each z's
    /// hash. Whether these trustees are acceptable is the caller's decision
    /// ([`Self::verify`], [`Self::verify_trusted`]).
    pub fn verify_embedded(&self) -> Result<VerifiedEnvelope, ProtocolError> {
        let h = &self.header;
        let n = h.trustees.len();
        if n == 0 || n > MAX_TRUSTEES {
            return Err(ProtocolError::malformed(
                "envelope",
                format!("{n} trustees (allowed: 1 to {MAX_TRUSTEES})"),
            ));
        }
        if h.threshold == 0 || h.threshold() > n {
            return Err(ProtocolError::malformed(
                "envelope",
                format!("threshold {} with {n} trustees", h.threshold),
            ));
        }
        if self.zs.len() != n || self.tp_cards.len() != n {
            return Err(ProtocolError::malformed(
                "envelope",
                "the number of z values or trustee cards is not the number of trustees",
            ));
        }
        for (i, slot) in h.trustees.iter().enumerate() {
            if h.trustees[..i].iter().any(|o| o.tp == slot.tp) {
                return Err(ProtocolError::malformed(
                    "envelope",
                    "the same trustee is named twice",
                ));
            }
            let card = &self.tp_cards[i];
            if card.id() != slot.tp {
                return Err(ProtocolError::mismatch(
                    "envelope",
                    "an enclosed TP card is not the trustee named in the header",
                ));
            }
            card.key(slot.key_id)?;
            let z = &self.zs[i];
            if z.hash() != slot.z_hash {
                return Err(ProtocolError::mismatch(
                    "envelope",
                    "z does not hash to the value in the signed header",
                ));
            }
            if z.sealed.len() > seal::MAX_INSIDE + 16 {
                return Err(ProtocolError::malformed("envelope", "z is too long"));
            }
        }
        if self.sender_card.id() != h.sender {
            return Err(ProtocolError::mismatch(
                "envelope",
                "the enclosed sender card is not the sender named in the header",
            ));
        }
        self.sender_card.verify_statement(
            domain::ENVELOPE,
            h,
            &self.signature,
            "envelope (sender's signature)",
        )?;
        Ok(VerifiedEnvelope(self.clone()))
    }

    /// [`Self::verify_embedded`], and `tp` is one of the envelope's trustees
    /// and knows the key it names: the check a trustee (or anyone speaking to
    /// one trustee) makes.
    pub fn verify(&self, tp: &TpCard) -> Result<VerifiedEnvelope, ProtocolError> {
        let Some(slot) = self.header.slot_of(&tp.id()) else {
            return Err(ProtocolError::mismatch(
                "envelope",
                "it is addressed to another TP than this TP card",
            ));
        };
        tp.key(self.header.trustees[slot].key_id)?;
        self.verify_embedded()
    }

    /// [`Self::verify_embedded`], and every trustee is one of `trusted`: the
    /// check of a recipient or judge who trusts exactly these TPs.
    pub fn verify_trusted(&self, trusted: &[TpCard]) -> Result<VerifiedEnvelope, ProtocolError> {
        for slot in &self.header.trustees {
            let Some(card) = trusted.iter().find(|c| c.id() == slot.tp) else {
                return Err(ProtocolError::mismatch(
                    "envelope",
                    if self.header.is_group() {
                        format!("trustee {} is not one of the TP cards given", slot.tp)
                    } else {
                        "it is addressed to another TP than this TP card".to_string()
                    },
                ));
            };
            card.key(slot.key_id)?;
        }
        self.verify_embedded()
    }

    /// File prefix: everything before the message ciphertext.
    pub fn to_file_prefix(&self) -> Vec<u8> {
        let body = canonical(self);
        let mut out = encoding::encode(Kind::Envelope, &());
        out.truncate(PREFIX_LEN);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Length of the file prefix, read from its first [`FILE_HEAD`] bytes.
    pub fn file_prefix_len(head: &[u8]) -> Result<usize, ProtocolError> {
        if head.len() < FILE_HEAD {
            return Err(ProtocolError::malformed("envelope", "file too short"));
        }
        encoding::check_prefix(Kind::Envelope, head)?;
        let n =
            u32::from_be_bytes(head[PREFIX_LEN..FILE_HEAD].try_into().expect("4 bytes")) as usize;
        if n > MAX_ENVELOPE {
            return Err(ProtocolError::malformed(
                "envelope",
                "header part too large",
            ));
        }
        Ok(FILE_HEAD + n)
    }

    /// Parse the file prefix (exactly [`Self::file_prefix_len`] bytes).
    pub fn from_file_prefix(prefix: &[u8]) -> Result<Self, ProtocolError> {
        let n = Self::file_prefix_len(prefix)?;
        if prefix.len() != n {
            return Err(ProtocolError::malformed("envelope", "truncated"));
        }
        encoding::decode_body(Kind::Envelope, &prefix[FILE_HEAD..])
    }
}

/// Bytes of an envelope file before the encoded envelope: magic, kind,
/// version, length.
pub const FILE_HEAD: usize = PREFIX_LEN + 4;

/// An envelope whose signature and structure were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEnvelope(Envelope);

impl VerifiedEnvelope {
    pub fn envelope(&self) -> &Envelope {
        &self.0
    }
    pub fn header(&self) -> &EnvelopeHeader {
        &self.0.header
    }
    pub fn sender_card(&self) -> &IdentityCard {
        &self.0.sender_card
    }
    /// The trustees' cards, in slot order (self-signed, ids as in the header).
    pub fn tp_cards(&self) -> &[TpCard] {
        &self.0.tp_cards
    }
    /// The only trustee's card, for the commands of single-TP exchanges.
    pub fn tp_card(&self) -> &TpCard {
        &self.0.tp_cards[0]
    }

    /// Bob's B1 checks, against the TP cards he trusts (`trusted`, one per
    /// trustee; not the cards the envelope carries, which the sender chose):
    /// addressed to him; every slot sealed to the *current* key of its
    /// trustee's trusted card; enough time left to claim and a deadline
    /// within each card's horizon (from now, from the envelope's `created`
    /// and from the card's signing, see [`check_deadline`]); `created` not
    /// in the future; a group every trustee accepts.
    ///
    /// The current-key rule is what lets a TP retire old keys safely: a
    /// recipient never gives a receipt for an envelope sealed to a key that
    /// his card does not offer for new envelopes, so every envelope he
    /// accepted has a deadline bounded by a card that named its key current
    /// ([`TpCard::latest_deadline`]). Only B1 applies it: a judge checking
    /// old evidence uses [`Envelope::verify_trusted`], which accepts any key
    /// the card lists.
    pub fn check_for_recipient(
        &self,
        me: IdentityId,
        trusted: &[TpCard],
        now: Timestamp,
        min_time_left: u64,
    ) -> Result<(), ProtocolError> {
        let h = self.header();
        if h.recipient != me {
            return Err(ProtocolError::Refused(
                "this envelope is addressed to someone else".into(),
            ));
        }
        for slot in &h.trustees {
            let Some(tp) = trusted.iter().find(|c| c.id() == slot.tp) else {
                return Err(ProtocolError::mismatch(
                    "envelope",
                    format!("trustee {} is not one of the TP cards given", slot.tp),
                ));
            };
            let current = tp.current_key().id;
            if slot.key_id != current {
                return Err(ProtocolError::Refused(format!(
                    "the envelope is sealed to key {} of TP {} ({}), which is not the current key \
                     of the TP card you trust (that is {current}): ask the sender to send it again \
                     with the TP's current card (or fetch the TP's card again if yours is older)",
                    slot.key_id,
                    tp.id(),
                    tp.name()
                )));
            }
            check_created(h, now, tp)?;
            check_deadline(h.deadline, now, tp, min_time_left)?;
            check_group_policy(tp, h.threshold(), h.trustees.len())?;
        }
        Ok(())
    }
}

/// The envelope's `created` is not in the future (beyond the TP's clock
/// skew) and its deadline lies within the TP's horizon from it: a sender
/// cannot claim to have made an envelope later than she did to stretch
/// its deadline.
fn check_created(h: &EnvelopeHeader, now: Timestamp, tp: &TpCard) -> Result<(), ProtocolError> {
    let p = tp.policy();
    if h.created > now.saturating_add(p.clock_skew_secs) {
        return Err(ProtocolError::Refused(format!(
            "the envelope says it was made {} in the future (the TP allows {} of clock skew)",
            span(h.created - now),
            span(p.clock_skew_secs)
        )));
    }
    let horizon = p.max_deadline_secs.saturating_add(p.clock_skew_secs);
    if h.deadline.saturating_sub(h.created) > horizon {
        return Err(ProtocolError::Deadline(format!(
            "the deadline is {} after the envelope was made, the TP accepts at most {}",
            span(h.deadline - h.created),
            span(p.max_deadline_secs)
        )));
    }
    Ok(())
}

/// Whether a trustee accepts to act in a group of `n` with threshold `t`, as
/// its card's policy says.
pub fn check_group_policy(tp: &TpCard, t: usize, n: usize) -> Result<(), ProtocolError> {
    let p = tp.policy();
    if t < usize::from(p.min_threshold) {
        return Err(ProtocolError::Refused(format!(
            "TP {} ({}) acts only in groups where at least {} trustees must act; this one needs {t}",
            tp.id(),
            tp.name(),
            p.min_threshold
        )));
    }
    if n > usize::from(p.max_trustees) {
        return Err(ProtocolError::Refused(format!(
            "TP {} ({}) acts only in groups of at most {} trustees; this one has {n}",
            tp.id(),
            tp.name(),
            p.max_trustees
        )));
    }
    Ok(())
}

/// The least time a deadline must be away, on the checker's clock, for the
/// recipient to still have the TP's claim window on the TP's clock: that
/// clock may run up to the allowed skew ahead, so the window and the skew
/// add up.
pub fn min_time_to_deadline(tp: &TpCard) -> u64 {
    let p = tp.policy();
    p.min_claim_window_secs.saturating_add(p.clock_skew_secs)
}

/// A deadline must leave at least `min_time_left` and the TP's claim window
/// plus its allowed clock skew ([`min_time_to_deadline`]), and lie within the
/// TP's horizon, both from now and from the card's signing
/// ([`TpCard::latest_deadline`]: what bounds how long the card's current key
/// must stay honoured). The sender checks it with `min_time_left = 0` (so it never
/// makes an envelope its recipient could not accept), the recipient with his
/// own margin.
pub fn check_deadline(
    deadline: Timestamp,
    now: Timestamp,
    tp: &TpCard,
    min_time_left: u64,
) -> Result<(), ProtocolError> {
    let p = tp.policy();
    let tp_need = min_time_to_deadline(tp);
    let need = min_time_left.max(tp_need);
    if deadline <= now {
        return Err(ProtocolError::Deadline(format!(
            "the deadline passed {} ago",
            span(now - deadline)
        )));
    }
    if deadline - now < need {
        let why = if min_time_left > tp_need {
            "the minimum asked for".to_string()
        } else {
            format!(
                "the TP's claim window of {} plus the {} its clock may differ from yours",
                span(p.min_claim_window_secs),
                span(p.clock_skew_secs)
            )
        };
        return Err(ProtocolError::Deadline(format!(
            "only {} left before the deadline, at least {} are needed to be able to claim ({why})",
            span(deadline - now),
            span(need)
        )));
    }
    if deadline - now > p.max_deadline_secs.saturating_add(p.clock_skew_secs) {
        return Err(ProtocolError::Deadline(format!(
            "the deadline is {} away, the TP accepts at most {}",
            span(deadline - now),
            span(p.max_deadline_secs)
        )));
    }
    let latest = tp.latest_deadline();
    if deadline > latest {
        return Err(ProtocolError::Deadline(format!(
            "the deadline is {} later than this TP card allows (deadlines at most {} after \
             the card was signed, and it was signed {} ago): get the TP's current card, or \
             choose an earlier deadline",
            span(deadline - latest),
            span(p.max_deadline_secs),
            span(now.saturating_sub(tp.body().created))
        )));
    }
    Ok(())
}

/// Alice's A1 in two steps, so the client can stream the message in between:
/// [`prepare`] yields the message key; [`PreparedEnvelope::finish`] takes the
/// hashes of what was streamed and makes the signed envelope.
pub struct PreparedEnvelope {
    header_base: EnvelopeHeader,
    recipient_card: IdentityCard,
    derived: Derived,
    tps: Vec<TpCard>,
}

/// Start an envelope from Alice to `recipient` with one TP. `nonce` must be
/// fresh random.
pub fn prepare(
    sender: &IdentitySecret,
    recipient: &IdentityCard,
    tp: &TpCard,
    deadline: Timestamp,
    now: Timestamp,
    nonce: [u8; 32],
) -> Result<PreparedEnvelope, ProtocolError> {
    prepare_group(
        sender,
        recipient,
        std::slice::from_ref(tp),
        1,
        deadline,
        now,
        nonce,
    )
}

/// Start an envelope whose TP is a group of trustees, any `threshold` of
/// which must act to resolve it. Each trustee's policy must allow the
/// deadline and the group.
pub fn prepare_group(
    sender: &IdentitySecret,
    recipient: &IdentityCard,
    tps: &[TpCard],
    threshold: usize,
    deadline: Timestamp,
    now: Timestamp,
    nonce: [u8; 32],
) -> Result<PreparedEnvelope, ProtocolError> {
    let n = tps.len();
    if n == 0 || n > MAX_TRUSTEES {
        return Err(ProtocolError::Refused(format!(
            "{n} trustees given (allowed: 1 to {MAX_TRUSTEES})"
        )));
    }
    if threshold == 0 || threshold > n {
        return Err(ProtocolError::Refused(format!(
            "threshold {threshold} with {n} trustees (allowed: 1 to {n})"
        )));
    }
    for (i, tp) in tps.iter().enumerate() {
        if tps[..i].iter().any(|o| o.id() == tp.id()) {
            return Err(ProtocolError::Refused(format!(
                "trustee {} ({}) is given twice",
                tp.id(),
                tp.name()
            )));
        }
        check_deadline(deadline, now, tp, 0)?;
        check_group_policy(tp, threshold, n)?;
    }
    let s = OpeningSecret::derive(sender.master_seed(), &nonce);
    let derived = Derived::from_secret(&s);
    let header_base = EnvelopeHeader {
        trustees: tps
            .iter()
            .map(|tp| TrusteeSlot {
                tp: tp.id(),
                key_id: tp.current_key().id,
                z_hash: Digest32([0; 32]),
            })
            .collect(),
        threshold: threshold as u8,
        sender: sender.id(),
        recipient: recipient.id(),
        deadline,
        created: now,
        nonce,
        cm_hash: Digest32([0; 32]),
        cm_len: 0,
        message_commitment: Digest32([0; 32]),
    };
    Ok(PreparedEnvelope {
        header_base,
        recipient_card: recipient.clone(),
        derived,
        tps: tps.to_vec(),
    })
}

impl PreparedEnvelope {
    /// The key to encrypt the message body with ([`crate::message::MessageSealer`]).
    pub fn message_key(&self) -> &[u8; 32] {
        &self.derived.km
    }

    /// Seal each trustee's z and sign the header.
    pub fn finish(
        self,
        sender: &IdentitySecret,
        cm_hash: Digest32,
        cm_len: u64,
        message_sha256: Digest32,
    ) -> Result<Envelope, ProtocolError> {
        self.finish_with(sender, cm_hash, cm_len, message_sha256, |_, _| {})
    }

    /// TEST HOOK, for tests of a cheating sender only: like [`Self::finish`]
    /// but lets the caller alter the inside of the first trustee's z after
    /// the header is fixed, so z decrypts under its header's associated data
    /// yet disagrees with it.
    #[doc(hidden)]
    pub fn finish_cheating(
        self,
        sender: &IdentitySecret,
        cm_hash: Digest32,
        cm_len: u64,
        message_sha256: Digest32,
        tamper: impl FnOnce(&mut Inside),
    ) -> Result<Envelope, ProtocolError> {
        let mut tamper = Some(tamper);
        self.finish_with(sender, cm_hash, cm_len, message_sha256, |slot, inside| {
            if slot == 0 {
                if let Some(f) = tamper.take() {
                    f(inside)
                }
            }
        })
    }

    /// TEST HOOK, for tests of a cheating sender only: [`Self::finish_cheating`]
    /// for any trustee's inside; `tamper` gets the slot index.
    #[doc(hidden)]
    pub fn finish_cheating_slots(
        self,
        sender: &IdentitySecret,
        cm_hash: Digest32,
        cm_len: u64,
        message_sha256: Digest32,
        tamper: impl FnMut(usize, &mut Inside),
    ) -> Result<Envelope, ProtocolError> {
        self.finish_with(sender, cm_hash, cm_len, message_sha256, tamper)
    }

    fn finish_with(
        self,
        sender: &IdentitySecret,
        cm_hash: Digest32,
        cm_len: u64,
        message_sha256: Digest32,
        mut tamper: impl FnMut(usize, &mut Inside),
    ) -> Result<Envelope, ProtocolError> {
        let mut h = self.header_base.clone();
        h.cm_hash = cm_hash;
        h.cm_len = cm_len;
        h.message_commitment = seal::message_commitment(&self.derived.commit_salt, &message_sha256);
        let shares = self.derived.shares(h.threshold(), h.trustees.len())?;
        let mut zs = Vec::with_capacity(shares.len());
        for (i, share) in shares.iter().enumerate() {
            let slot = self.derived.slot(i);
            let wrapped_km = seal::wrap_message_key(
                self.recipient_card.enc_key(),
                &slot.wrap_eph,
                share.value(),
                &h.wrap_context(i),
            )?;
            let mut inside = Inside {
                tp: h.trustees[i].tp,
                key_id: h.trustees[i].key_id,
                sender: h.sender,
                recipient: h.recipient,
                deadline: h.deadline,
                cm_hash,
                message_sha256,
                commit_salt: self.derived.commit_salt,
                wrapped_km,
            };
            tamper(i, &mut inside);
            let key = self.tps[i].key(h.trustees[i].key_id)?;
            let z = seal::seal_z(key, &slot, &inside, &h.aad(i))?;
            h.trustees[i].z_hash = z.hash();
            zs.push(z);
        }
        let signature = sender.sign(&signing_digest(domain::ENVELOPE, &h));
        Ok(Envelope {
            header: h,
            zs,
            sender_card: sender.card().clone(),
            tp_cards: self.tps,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    //! The deadline window against a TP whose clock may be ahead by its skew.
    use super::*;
    use crate::tp_card::{OaepHash, Policy, TpCardBody, TpEncKey};
    use crate::{EcPoint, KeyId, Signature};
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use rand_core::OsRng;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;

    const NOW: u64 = 1_800_000_000;

    /// A TP card with the default policy: a 60 s claim window, 300 s skew.
    fn tp() -> TpCard {
        let rsa =
            rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("../tests/data/test-tp-rsa2048.pem"))
                .unwrap();
        let sign = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
        let body = TpCardBody {
            name: "test TP".into(),
            sign_key: EcPoint::from_public(p256::PublicKey::from(sign.verifying_key())),
            enc_keys: vec![TpEncKey {
                id: KeyId([1; 8]),
                modulus: rsa.n().to_bytes_be(),
                exponent: rsa.e().to_bytes_be(),
                oaep: OaepHash::Sha1,
            }],
            current_key: KeyId([1; 8]),
            policy: Policy::default(),
            created: NOW - 100,
        };
        let s: p256::ecdsa::Signature = sign.sign_prehash(&body.signing_digest().0).unwrap();
        TpCard::assemble(body, Signature(s.to_bytes().into())).unwrap()
    }

    fn who(name: &str) -> IdentitySecret {
        IdentitySecret::generate(name, NOW - 10, &mut OsRng).unwrap()
    }

    /// An envelope made at `made` (the sender's clock) with this deadline.
    fn envelope(
        tp: &TpCard,
        alice: &IdentitySecret,
        bob: &IdentitySecret,
        deadline: u64,
        made: u64,
    ) -> VerifiedEnvelope {
        let prep = prepare(alice, bob.card(), tp, deadline, made, [7; 32]).unwrap();
        prep.finish(alice, Digest32([1; 32]), 0, Digest32([2; 32]))
            .unwrap()
            .verify(tp)
            .unwrap()
    }

    #[test]
    fn accept_leaves_the_claim_window_on_any_clock_within_the_skew() {
        let (tp, alice, bob) = (tp(), who("alice"), who("bob"));
        assert_eq!(min_time_to_deadline(&tp), 360);
        // The sender's clock was 100 s slow: the envelope has less time left
        // than she thought.
        let venv = envelope(&tp, &alice, &bob, NOW + 359, NOW - 1);
        // Bob asks for a 60 s margin, as the TP's window alone would allow:
        // still refused, the TP's clock may be 300 s ahead of his.
        let e = venv
            .check_for_recipient(bob.id(), std::slice::from_ref(&tp), NOW, 60)
            .unwrap_err();
        assert!(matches!(e, ProtocolError::Deadline(_)), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("only 5m 59s left")
                && e.contains("at least 6m")
                && e.contains("claim window of 1m plus the 5m"),
            "{e}"
        );
        // Exactly the window plus the skew: accepted.
        venv.check_for_recipient(bob.id(), std::slice::from_ref(&tp), NOW - 1, 60)
            .unwrap();
        // Bob's own, larger margin is named as his.
        let e = venv
            .check_for_recipient(bob.id(), std::slice::from_ref(&tp), NOW - 1, 600)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 10m") && e.contains("asked for"), "{e}");
    }

    #[test]
    fn send_refuses_a_deadline_its_recipient_could_not_accept() {
        let (tp, alice, bob) = (tp(), who("alice"), who("bob"));
        let e = prepare(&alice, bob.card(), &tp, NOW + 359, NOW, [7; 32])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("at least 6m are needed") && e.contains("claim window of 1m plus the 5m"),
            "{e}"
        );
        assert!(prepare(&alice, bob.card(), &tp, NOW + 360, NOW, [7; 32]).is_ok());
    }
}
