//! The parties' checks of what a TP answers: the client-side mirror of the
//! decision core ([`crate::decide`]).
//!
//! A TP's answer is only as good as these checks. Each turns a raw wire
//! answer into a `Verified…` type, and the client acts (unwraps a key,
//! saves evidence, tells the user "resolved") only on those types, so no
//! command can skip a check:
//! - [`ClaimOutcome::verify`]: Bob's check of the answer to his claim;
//! - [`ResolvedReceipt::verify`]: Alice's check of a receipt the TP holds
//!   for her;
//! - [`Affidavit::verify_unclaimed`]: either party's check of an unclaimed
//!   certificate.

use crate::affidavit::{Affidavit, Statement};
use crate::envelope::VerifiedEnvelope;
use crate::receipt::Receipt;
use crate::seal::{message_commitment, wrapped_km_hash};
use crate::tp_card::TpCard;
use crate::wire::{ClaimOutcome, ResolvedReceipt};
use crate::{Digest32, IdentityId, ProtocolError, Timestamp};

/// A TP's answer to a claim that passed [`ClaimOutcome::verify`].
#[derive(Debug, Clone)]
pub enum VerifiedOutcome {
    /// The TP resolved: `wrapped_km` is the wrap it certifies releasing.
    Resolved {
        slot: usize,
        affidavit: Affidavit,
        wrapped_km: Vec<u8>,
        message_sha256: Digest32,
        at: Timestamp,
    },
    /// The TP certified the envelope invalid: the receipt is void.
    Invalid { slot: usize, affidavit: Affidavit },
}

impl VerifiedOutcome {
    pub fn affidavit(&self) -> &Affidavit {
        match self {
            VerifiedOutcome::Resolved { affidavit, .. }
            | VerifiedOutcome::Invalid { affidavit, .. } => affidavit,
        }
    }
    /// The answering trustee's slot in the envelope.
    pub fn slot(&self) -> usize {
        match self {
            VerifiedOutcome::Resolved { slot, .. } | VerifiedOutcome::Invalid { slot, .. } => *slot,
        }
    }
}

fn bad(detail: impl Into<String>) -> ProtocolError {
    ProtocolError::Mismatch {
        what: "TP answer",
        detail: detail.into(),
    }
}

impl ClaimOutcome {
    /// Bob's check of a TP's answer to his claim of `env` with `receipt`:
    /// the affidavit is signed by this TP and about this envelope, its
    /// statement is the one the answer says, it names this very receipt, a
    /// resolution opens the header's message commitment, and the released
    /// wrap is the one the affidavit certifies.
    pub fn verify(
        self,
        tp: &TpCard,
        env: &VerifiedEnvelope,
        receipt: &Receipt,
    ) -> Result<VerifiedOutcome, ProtocolError> {
        match self {
            ClaimOutcome::Resolved {
                affidavit,
                wrapped_km,
            } => {
                let slot = affidavit.verify(tp, env)?;
                let Statement::Resolved {
                    message_sha256,
                    commit_salt,
                    wrapped_km_hash: certified,
                    receipt_hash,
                    ..
                } = affidavit.body.statement
                else {
                    return Err(bad(format!(
                        "a {} statement for a resolved claim",
                        affidavit.body.kind()
                    )));
                };
                if receipt_hash != receipt.hash() {
                    return Err(bad("its affidavit certifies another receipt"));
                }
                if message_commitment(&commit_salt, &message_sha256)
                    != env.header().message_commitment
                {
                    return Err(bad(
                        "its message hash does not open the envelope's commitment",
                    ));
                }
                if wrapped_km_hash(&wrapped_km) != certified {
                    return Err(bad("the released key is not the one it certifies"));
                }
                let at = affidavit.body.at;
                Ok(VerifiedOutcome::Resolved {
                    slot,
                    affidavit,
                    wrapped_km,
                    message_sha256,
                    at,
                })
            }
            ClaimOutcome::InvalidEnvelope { affidavit } => {
                let slot = affidavit.verify(tp, env)?;
                let Statement::InvalidEnvelope { receipt_hash, .. } = affidavit.body.statement
                else {
                    return Err(bad(format!(
                        "a {} statement for an invalid envelope",
                        affidavit.body.kind()
                    )));
                };
                if receipt_hash != receipt.hash() {
                    return Err(bad("its affidavit certifies another receipt"));
                }
                Ok(VerifiedOutcome::Invalid { slot, affidavit })
            }
        }
    }
}

/// A receipt the TP holds for a sender, with the TP's resolution of it,
/// checked by [`ResolvedReceipt::verify`].
#[derive(Debug, Clone)]
pub struct VerifiedResolvedReceipt(ResolvedReceipt);

impl VerifiedResolvedReceipt {
    pub fn receipt(&self) -> &Receipt {
        &self.0.receipt
    }
    pub fn affidavit(&self) -> &Affidavit {
        &self.0.affidavit
    }
    pub fn into_inner(self) -> ResolvedReceipt {
        self.0
    }
}

impl ResolvedReceipt {
    /// Alice's check, without the envelope: this TP signed a resolution of
    /// exactly this receipt, the receipt is signed by its recipient, and it
    /// is for an envelope from `sender` that names this TP as a trustee.
    pub fn verify(
        self,
        tp: &TpCard,
        sender: IdentityId,
    ) -> Result<VerifiedResolvedReceipt, ProtocolError> {
        let (r, aff) = (&self.receipt, &self.affidavit);
        if aff.body.tp != tp.id() {
            return Err(bad("an affidavit from another TP"));
        }
        tp.verify(&aff.body.signing_digest(), &aff.signature, "TP affidavit")?;
        let Statement::Resolved { receipt_hash, .. } = aff.body.statement else {
            return Err(bad(format!(
                "a {} affidavit, not a resolution",
                aff.body.kind()
            )));
        };
        if receipt_hash != r.hash() {
            return Err(bad("the affidavit certifies another receipt"));
        }
        if aff.body.sender != sender || r.body.sender != sender {
            return Err(ProtocolError::Refused(
                "not an envelope sent by this identity".into(),
            ));
        }
        let b = &r.body;
        if b.envelope_id != aff.body.envelope_id
            || b.recipient != aff.body.recipient
            || b.deadline != aff.body.deadline
            || !b.trustees.contains(&aff.body.tp)
        {
            return Err(bad("receipt and affidavit are about different envelopes"));
        }
        r.verify_signature()?;
        Ok(VerifiedResolvedReceipt(self))
    }
}

impl Affidavit {
    /// Either party's check of an unclaimed certificate for `env`: signed
    /// by this TP, about this very header, and an unclaimed statement.
    /// Returns the TP's slot.
    pub fn verify_unclaimed(
        &self,
        tp: &TpCard,
        env: &VerifiedEnvelope,
    ) -> Result<usize, ProtocolError> {
        let slot = self.verify(tp, env)?;
        if self.body.statement != Statement::Unclaimed {
            return Err(bad(format!(
                "a {} statement, not an unclaimed one",
                self.body.kind()
            )));
        }
        Ok(slot)
    }
}
