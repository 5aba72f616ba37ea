//! B1: Bob's receipt for an envelope, and Alice's check of it.

use serde::{Deserialize, Serialize};

use crate::encoding::{self, canonical, domain, signing_digest, tagged_hash, Kind};
use crate::envelope::VerifiedEnvelope;
use crate::identity::{IdentityCard, IdentitySecret};
use crate::{Digest32, IdentityId, ProtocolError, Signature, Timestamp, TpId};

/// What Bob signs. `envelope_id` binds every header field; the others are
/// repeated so a receipt reads on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBody {
    pub envelope_id: Digest32,
    /// The trustees (one TP, or a group) and how many of them must act.
    pub trustees: Vec<TpId>,
    pub threshold: u8,
    pub sender: IdentityId,
    pub recipient: IdentityId,
    pub deadline: Timestamp,
    pub cm_hash: Digest32,
    pub issued: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub body: ReceiptBody,
    /// Bob's card, so the receipt can be checked without a directory.
    pub recipient_card: IdentityCard,
    pub signature: Signature,
}

impl Receipt {
    /// B1: Bob signs a receipt for an envelope he checked.
    pub fn issue(me: &IdentitySecret, env: &VerifiedEnvelope, now: Timestamp) -> Self {
        let h = env.header();
        let body = ReceiptBody {
            envelope_id: h.envelope_id(),
            trustees: h.trustee_ids(),
            threshold: h.threshold,
            sender: h.sender,
            recipient: h.recipient,
            deadline: h.deadline,
            cm_hash: h.cm_hash,
            issued: now,
        };
        let signature = me.sign(&signing_digest(domain::RECEIPT, &body));
        Receipt {
            body,
            recipient_card: me.card().clone(),
            signature,
        }
    }

    /// The receipt is for exactly this envelope and signed by its recipient.
    pub fn verify(&self, env: &VerifiedEnvelope) -> Result<VerifiedReceipt, ProtocolError> {
        let h = env.header();
        let b = &self.body;
        let same = b.envelope_id == h.envelope_id()
            && b.trustees == h.trustee_ids()
            && b.threshold == h.threshold
            && b.sender == h.sender
            && b.recipient == h.recipient
            && b.deadline == h.deadline
            && b.cm_hash == h.cm_hash;
        if !same {
            return Err(ProtocolError::mismatch(
                "receipt",
                "it is for another envelope",
            ));
        }
        if self.recipient_card.id() != h.recipient {
            return Err(ProtocolError::mismatch(
                "receipt",
                "it is signed by someone other than the envelope's recipient",
            ));
        }
        self.recipient_card.verify_statement(
            domain::RECEIPT,
            b,
            &self.signature,
            "receipt (recipient's signature)",
        )?;
        Ok(VerifiedReceipt(self.clone()))
    }

    /// The receipt is signed by the recipient it names (without its
    /// envelope: what a sender can check of a receipt the TP holds).
    pub fn verify_signature(&self) -> Result<(), ProtocolError> {
        if self.recipient_card.id() != self.body.recipient {
            return Err(ProtocolError::mismatch(
                "receipt",
                "it is signed by someone other than its recipient",
            ));
        }
        self.recipient_card.verify_statement(
            domain::RECEIPT,
            &self.body,
            &self.signature,
            "receipt (recipient's signature)",
        )
    }

    pub fn hash(&self) -> Digest32 {
        tagged_hash(domain::RECEIPT_HASH, &[&canonical(self)])
    }
    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::Receipt, self)
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(Kind::Receipt, bytes)
    }
}

/// A receipt checked against its envelope; only [`Receipt::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReceipt(Receipt);

impl VerifiedReceipt {
    pub fn receipt(&self) -> &Receipt {
        &self.0
    }
}
