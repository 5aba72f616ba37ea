//! Bob's claim to the TP, and the checks the TP makes before it lets its
//! token decrypt anything.

use serde::{Deserialize, Serialize};

use crate::encoding::{domain, signing_digest};
use crate::envelope::{Envelope, VerifiedEnvelope};
use crate::identity::IdentitySecret;
use crate::receipt::{Receipt, VerifiedReceipt};
use crate::tp_card::TpCard;
use crate::{Digest32, KeyId, ProtocolError, Signature, Timestamp, TpId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimBody {
    pub envelope: Envelope,
    pub receipt: Receipt,
    pub requested: Timestamp,
}

/// A claim, signed by the recipient (whose card is in the receipt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub body: ClaimBody,
    pub signature: Signature,
}

impl Claim {
    pub fn new(
        me: &IdentitySecret,
        env: &VerifiedEnvelope,
        receipt: &VerifiedReceipt,
        now: Timestamp,
    ) -> Claim {
        let body = ClaimBody {
            envelope: env.envelope().clone(),
            receipt: receipt.receipt().clone(),
            requested: now,
        };
        let signature = me.sign(&signing_digest(domain::CLAIM, &body));
        Claim { body, signature }
    }

    /// The key a claim is recorded under by trustee `tp`: `H(z)` of its z,
    /// if the envelope names it.
    pub fn z_hash_for(&self, tp: &TpId) -> Option<Digest32> {
        let h = &self.body.envelope.header;
        h.slot_of(tp).map(|i| h.trustees[i].z_hash)
    }

    /// The checks that need neither the journal nor the token: the envelope
    /// is for this TP and signed by its sender, the receipt is for it and
    /// signed by its recipient, the claim is signed by that recipient and not
    /// dated in the future. What the TP then does with it is decided by
    /// [`AuthenticClaim::decide`](crate::decide) against its journal; nothing
    /// else can open the way to the token.
    pub fn authenticate(
        &self,
        tp: &TpCard,
        now: Timestamp,
    ) -> Result<AuthenticClaim, ProtocolError> {
        let env = self.body.envelope.verify(tp)?;
        let receipt = self.body.receipt.verify(&env)?;
        receipt.receipt().recipient_card.verify_statement(
            domain::CLAIM,
            &self.body,
            &self.signature,
            "claim (recipient's signature)",
        )?;
        if self.body.requested > now.saturating_add(tp.policy().clock_skew_secs) {
            return Err(ProtocolError::Deadline(
                "the claim is dated in the future: check your clock".into(),
            ));
        }
        let slot = env
            .header()
            .slot_of(&tp.id())
            .expect("Envelope::verify checked that the TP is a trustee");
        Ok(AuthenticClaim { env, receipt, slot })
    }
}

/// A claim whose signatures and bindings hold ([`Claim::authenticate`]).
/// It says nothing yet about the journal or the deadline: only
/// [`AuthenticClaim::decide`](crate::decide) turns it into a claim the token
/// may resolve.
#[derive(Debug, Clone)]
pub struct AuthenticClaim {
    env: VerifiedEnvelope,
    receipt: VerifiedReceipt,
    /// The verifying TP's slot among the envelope's trustees.
    slot: usize,
}

impl AuthenticClaim {
    pub fn envelope(&self) -> &VerifiedEnvelope {
        &self.env
    }
    pub fn receipt(&self) -> &VerifiedReceipt {
        &self.receipt
    }
    /// This TP's slot among the envelope's trustees.
    pub fn slot(&self) -> usize {
        self.slot
    }
    /// `H(z)` of this TP's z: what a resolution is recorded under.
    pub fn z_hash(&self) -> Digest32 {
        self.env.header().trustees[self.slot].z_hash
    }
    /// The TP key that z is encrypted to.
    pub fn key_id(&self) -> KeyId {
        self.env.header().trustees[self.slot].key_id
    }
}
