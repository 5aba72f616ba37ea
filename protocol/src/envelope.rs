//! A1: Alice's envelope, and Bob's checks of it before he signs a receipt.
//!
//! An envelope file is `VTP || Envelope-kind || version || u32-BE length ||
//! postcard(Envelope) || c_m`. The TP only ever needs the [`Envelope`] part, so
//! its work does not depend on the size of the message.

use serde::{Deserialize, Serialize};

use crate::encoding::{self, canonical, domain, signing_digest, tagged_hash, Kind, PREFIX_LEN};
use crate::identity::{IdentityCard, IdentitySecret};
use crate::seal::{self, Derived, Inside, OpeningSecret, Z};
use crate::tp_card::TpCard;
use crate::{Digest32, IdentityId, KeyId, ProtocolError, Signature, Timestamp, TpId};

/// Largest encoded [`Envelope`] (without `c_m`) accepted anywhere.
pub const MAX_ENVELOPE: usize = 64 * 1024;

/// The signed, public description of an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeHeader {
    pub tp: TpId,
    pub key_id: KeyId,
    pub sender: IdentityId,
    pub recipient: IdentityId,
    /// The TP resolves strictly before this instant (its clock), never at or after.
    pub deadline: Timestamp,
    pub created: Timestamp,
    /// Fresh per envelope; Alice derives the opening secret from it.
    pub nonce: [u8; 32],
    pub z_hash: Digest32,
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
    pub fn aad(&self) -> Vec<u8> {
        seal::z_aad(
            &self.tp,
            &self.key_id,
            &self.sender,
            &self.recipient,
            self.deadline,
            &self.cm_hash,
            &self.message_commitment,
        )
    }
    pub(crate) fn wrap_context(&self) -> Vec<u8> {
        seal::wrap_context(&self.sender, &self.recipient, &self.nonce)
    }
    /// Compare the inside of z with this header, naming the first difference.
    pub fn check_inside(&self, inside: &Inside) -> Result<(), ProtocolError> {
        let diff = if inside.tp != self.tp {
            Some("TP")
        } else if inside.key_id != self.key_id {
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

/// Header + z + Alice's card and signature: everything but the message body.
/// The TP card Alice used travels along, so that opening and revealing need no
/// other file; it is self-signed and the signed header names its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub header: EnvelopeHeader,
    pub z: Z,
    pub sender_card: IdentityCard,
    pub tp_card: TpCard,
    pub signature: Signature,
}

impl Envelope {
    pub fn envelope_id(&self) -> Digest32 {
        self.header.envelope_id()
    }

    /// Checks anyone can make with the TP card they trust: the TP and key are
    /// the card's, the sender's card is the one named, her signature, z's hash.
    pub fn verify(&self, tp: &TpCard) -> Result<VerifiedEnvelope, ProtocolError> {
        let h = &self.header;
        if h.tp != tp.id() || self.tp_card.id() != tp.id() {
            return Err(ProtocolError::mismatch(
                "envelope",
                "it is addressed to another TP than this TP card",
            ));
        }
        tp.key(h.key_id)?;
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
        if self.z.hash() != h.z_hash {
            return Err(ProtocolError::mismatch(
                "envelope",
                "z does not hash to the value in the signed header",
            ));
        }
        if self.z.sealed.len() > seal::MAX_INSIDE + 16 {
            return Err(ProtocolError::malformed("envelope", "z is too long"));
        }
        Ok(VerifiedEnvelope(self.clone()))
    }

    /// [`Self::verify`] against the TP card carried in the envelope: for a
    /// party who already checked, at B1, that this TP is the one they trust.
    pub fn verify_embedded(&self) -> Result<VerifiedEnvelope, ProtocolError> {
        self.verify(&self.tp_card)
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

/// An envelope whose signature and structure were checked against a TP card.
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
    pub fn tp_card(&self) -> &TpCard {
        &self.0.tp_card
    }

    /// Bob's B1 checks: addressed to him, and enough time left to claim.
    pub fn check_for_recipient(
        &self,
        me: IdentityId,
        tp: &TpCard,
        now: Timestamp,
        min_time_left: u64,
    ) -> Result<(), ProtocolError> {
        let h = self.header();
        if h.recipient != me {
            return Err(ProtocolError::Refused(
                "this envelope is addressed to someone else".into(),
            ));
        }
        check_deadline(h.deadline, now, tp, min_time_left)
    }
}

/// A deadline must leave at least `min_time_left` (and the TP's minimum) and
/// lie within the TP's horizon.
pub fn check_deadline(
    deadline: Timestamp,
    now: Timestamp,
    tp: &TpCard,
    min_time_left: u64,
) -> Result<(), ProtocolError> {
    let p = tp.policy();
    let need = min_time_left.max(p.min_claim_window_secs);
    if deadline <= now {
        return Err(ProtocolError::Deadline(format!(
            "the deadline passed {} s ago",
            now - deadline
        )));
    }
    if deadline - now < need {
        return Err(ProtocolError::Deadline(format!(
            "only {} s left before the deadline, at least {need} s are needed to be able to claim",
            deadline - now
        )));
    }
    if deadline - now > p.max_deadline_secs.saturating_add(p.clock_skew_secs) {
        return Err(ProtocolError::Deadline(format!(
            "the deadline is {} s away, the TP accepts at most {} s",
            deadline - now,
            p.max_deadline_secs
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
    tp: TpCard,
}

/// Start an envelope from Alice to `recipient`. `nonce` must be fresh random.
pub fn prepare(
    sender: &IdentitySecret,
    recipient: &IdentityCard,
    tp: &TpCard,
    deadline: Timestamp,
    now: Timestamp,
    nonce: [u8; 32],
) -> Result<PreparedEnvelope, ProtocolError> {
    check_deadline(deadline, now, tp, 0)?;
    let s = OpeningSecret::derive(sender.master_seed(), &nonce);
    let derived = Derived::from_secret(&s);
    let key = tp.current_key();
    let header_base = EnvelopeHeader {
        tp: tp.id(),
        key_id: key.id,
        sender: sender.id(),
        recipient: recipient.id(),
        deadline,
        created: now,
        nonce,
        z_hash: Digest32([0; 32]),
        cm_hash: Digest32([0; 32]),
        cm_len: 0,
        message_commitment: Digest32([0; 32]),
    };
    Ok(PreparedEnvelope {
        header_base,
        recipient_card: recipient.clone(),
        derived,
        tp: tp.clone(),
    })
}

impl PreparedEnvelope {
    /// The key to encrypt the message body with ([`crate::message::MessageSealer`]).
    pub fn message_key(&self) -> &[u8; 32] {
        &self.derived.km
    }

    /// Seal z and sign the header.
    pub fn finish(
        self,
        sender: &IdentitySecret,
        cm_hash: Digest32,
        cm_len: u64,
        message_sha256: Digest32,
    ) -> Result<Envelope, ProtocolError> {
        self.finish_with(sender, cm_hash, cm_len, message_sha256, |_| {})
    }

    /// TEST HOOK, for tests of a cheating sender only: like [`Self::finish`]
    /// but lets the caller alter the inside of z after the header is fixed, so
    /// z decrypts under its header's associated data yet disagrees with it.
    #[doc(hidden)]
    pub fn finish_cheating(
        self,
        sender: &IdentitySecret,
        cm_hash: Digest32,
        cm_len: u64,
        message_sha256: Digest32,
        tamper: impl FnOnce(&mut Inside),
    ) -> Result<Envelope, ProtocolError> {
        self.finish_with(sender, cm_hash, cm_len, message_sha256, tamper)
    }

    fn finish_with(
        self,
        sender: &IdentitySecret,
        cm_hash: Digest32,
        cm_len: u64,
        message_sha256: Digest32,
        tamper: impl FnOnce(&mut Inside),
    ) -> Result<Envelope, ProtocolError> {
        let mut h = self.header_base.clone();
        h.cm_hash = cm_hash;
        h.cm_len = cm_len;
        h.message_commitment = seal::message_commitment(&self.derived.commit_salt, &message_sha256);
        let wrapped_km = seal::wrap_message_key(
            self.recipient_card.enc_key(),
            &self.derived.wrap_eph,
            &self.derived.km,
            &h.wrap_context(),
        )?;
        let inside = Inside {
            tp: h.tp,
            key_id: h.key_id,
            sender: h.sender,
            recipient: h.recipient,
            deadline: h.deadline,
            cm_hash,
            message_sha256,
            commit_salt: self.derived.commit_salt,
            wrapped_km,
        };
        let mut inside = inside;
        tamper(&mut inside);
        let key = self.tp.key(h.key_id)?;
        let z = seal::seal_z(key, &self.derived, &inside, &h.aad())?;
        h.z_hash = z.hash();
        let signature = sender.sign(&signing_digest(domain::ENVELOPE, &h));
        Ok(Envelope {
            header: h,
            z,
            sender_card: sender.card().clone(),
            tp_card: self.tp,
            signature,
        })
    }
}
