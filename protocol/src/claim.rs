//! Bob's claim to the TP, and the checks the TP makes before it lets its
//! token decrypt anything.

use serde::{Deserialize, Serialize};

use crate::encoding::{domain, signing_digest};
use crate::envelope::{check_group_policy, Envelope, VerifiedEnvelope};
use crate::identity::IdentitySecret;
use crate::receipt::{Receipt, VerifiedReceipt};
use crate::seal::{Inside, Z};
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

    /// Everything the TP checks before decryption: the envelope is for this TP
    /// and signed by its sender, the receipt is for it and signed by its
    /// recipient, the claim is signed by that recipient, and the deadline has
    /// not been reached on the TP's clock. Failing any of these, nothing is
    /// decrypted and nothing is recorded.
    pub fn verify(&self, tp: &TpCard, now: Timestamp) -> Result<VerifiedClaim, ProtocolError> {
        let vc = self.verify_authentic(tp, now)?;
        vc.check_deadline(now)?;
        let h = vc.env.header();
        check_group_policy(tp, h.threshold(), h.trustees.len())?;
        Ok(vc)
    }

    /// The signature and binding checks of [`Self::verify`] without the
    /// deadline: enough to hand a recipient a result recorded earlier.
    pub fn verify_authentic(
        &self,
        tp: &TpCard,
        now: Timestamp,
    ) -> Result<VerifiedClaim, ProtocolError> {
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
        Ok(VerifiedClaim { env, receipt, slot })
    }
}

/// A claim that passed every check that needs no decryption.
#[derive(Debug, Clone)]
pub struct VerifiedClaim {
    env: VerifiedEnvelope,
    receipt: VerifiedReceipt,
    /// The verifying TP's slot among the envelope's trustees.
    slot: usize,
}

impl VerifiedClaim {
    /// The TP resolves strictly before the deadline, on its own clock.
    pub fn check_deadline(&self, now: Timestamp) -> Result<(), ProtocolError> {
        let deadline = self.env.header().deadline;
        if now >= deadline {
            return Err(ProtocolError::Deadline(format!(
                "the deadline passed {} s ago; the TP no longer resolves this envelope",
                now - deadline
            )));
        }
        Ok(())
    }
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
    /// The z this TP opens.
    pub fn z(&self) -> &Z {
        &self.env.envelope().zs[self.slot]
    }
    /// `H(z)` of this TP's z: what the claim is recorded under.
    pub fn z_hash(&self) -> Digest32 {
        self.env.header().trustees[self.slot].z_hash
    }
    /// The TP key that z is encrypted to.
    pub fn key_id(&self) -> KeyId {
        self.env.header().trustees[self.slot].key_id
    }
    /// Associated data the token must use when opening z.
    pub fn aad(&self) -> Vec<u8> {
        self.env.header().aad(self.slot)
    }
    /// After the token decrypted z: parse the inside and check it against the
    /// header. `Err` means the envelope is invalid (an invalid-envelope
    /// affidavit is due), never "try again".
    pub fn check_inside(&self, plaintext: &[u8]) -> Result<Inside, ProtocolError> {
        let inside = Inside::decode(plaintext)?;
        self.env.header().check_inside(self.slot, &inside)?;
        Ok(inside)
    }
}
