//! The judge: offline verification of delivery evidence.
//!
//! Inputs are the TP card, the envelope, Bob's receipt and either Alice's
//! opening or a TP affidavit (or both). The verdict says whether the evidence
//! proves that the recipient received exactly the message with the reported
//! SHA-256, and how.

use serde::Serialize;

use crate::affidavit::{Affidavit, Statement};
use crate::envelope::Envelope;
use crate::opening::Opening;
use crate::receipt::Receipt;
use crate::seal::message_commitment;
use crate::tp_card::TpCard;
use crate::{Digest32, ProtocolError, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveredVia {
    Opening,
    TrustedParty,
}

/// The judge's answer, ready to print as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub valid: bool,
    pub sender: Option<String>,
    pub sender_name: Option<String>,
    pub recipient: Option<String>,
    pub recipient_name: Option<String>,
    pub deadline: Option<Timestamp>,
    pub envelope_id: Option<String>,
    pub message_sha256: Option<String>,
    pub delivered_via: Option<DeliveredVia>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Weigh the evidence. `message_sha256` is the SHA-256 of the message the
/// verifier was shown, if any: the verdict is valid only if it matches.
pub fn judge(
    tp: &TpCard,
    envelope: &Envelope,
    receipt: &Receipt,
    opening: Option<&Opening>,
    affidavit: Option<&Affidavit>,
    message_sha256: Option<Digest32>,
) -> Verdict {
    let h = &envelope.header;
    let mut v = Verdict {
        valid: false,
        sender: Some(h.sender.to_string()),
        sender_name: Some(envelope.sender_card.name().to_string()),
        recipient: Some(h.recipient.to_string()),
        recipient_name: Some(receipt.recipient_card.name().to_string()),
        deadline: Some(h.deadline),
        envelope_id: Some(h.envelope_id().to_string()),
        message_sha256: None,
        delivered_via: None,
        reason: None,
    };
    match weigh(tp, envelope, receipt, opening, affidavit) {
        Ok((sha, via)) => {
            v.message_sha256 = Some(sha.to_string());
            if let Some(shown) = message_sha256 {
                if shown != sha {
                    v.reason =
                        Some("the message shown is not the one delivered (SHA-256 differs)".into());
                    return v;
                }
            }
            v.valid = true;
            v.delivered_via = Some(via);
        }
        Err(e) => v.reason = Some(e.to_string()),
    }
    v
}

fn weigh(
    tp: &TpCard,
    envelope: &Envelope,
    receipt: &Receipt,
    opening: Option<&Opening>,
    affidavit: Option<&Affidavit>,
) -> Result<(Digest32, DeliveredVia), ProtocolError> {
    let env = envelope.verify(tp)?;
    let receipt = receipt.verify(&env)?;
    let mut result = None;
    if let Some(a) = affidavit {
        a.verify(tp, &env)?;
        match &a.body.statement {
            Statement::Resolved {
                message_sha256,
                commit_salt,
                ..
            } => {
                if message_commitment(commit_salt, message_sha256) != env.header().message_commitment {
                    return Err(ProtocolError::mismatch(
                        "affidavit",
                        "its message hash does not open the envelope's commitment",
                    ));
                }
                result = Some((*message_sha256, DeliveredVia::TrustedParty));
            }
            Statement::InvalidEnvelope { .. } => {
                return Err(ProtocolError::Refused(
                    "the TP certified this envelope invalid (z does not match its signed header): the receipt is void".into(),
                ))
            }
            Statement::Unclaimed => {
                if opening.is_none() {
                    return Err(ProtocolError::Refused(
                        "the TP certified that this envelope was never resolved by it; without an opening nothing proves delivery".into(),
                    ));
                }
            }
        }
    }
    if let Some(o) = opening {
        let opened = o.check(&env, &receipt.receipt().recipient_card)?;
        let sha = opened.inside.message_sha256;
        if let Some((aff_sha, _)) = result {
            if aff_sha != sha {
                return Err(ProtocolError::mismatch(
                    "evidence",
                    "the opening and the affidavit disagree on the message",
                ));
            }
        } else {
            result = Some((sha, DeliveredVia::Opening));
        }
    }
    result.ok_or_else(|| {
        ProtocolError::Refused("no opening and no affidavit: nothing proves delivery".into())
    })
}
