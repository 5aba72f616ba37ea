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
use crate::{Digest32, ProtocolError, Timestamp, TpId};

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
    /// The trustees whose resolutions prove delivery (when delivered via them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resolved_by: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Weigh the evidence about an envelope with one TP. `message_sha256` is the
/// SHA-256 of the message the verifier was shown, if any: the verdict is
/// valid only if it matches.
pub fn judge(
    tp: &TpCard,
    envelope: &Envelope,
    receipt: &Receipt,
    opening: Option<&Opening>,
    affidavit: Option<&Affidavit>,
    message_sha256: Option<Digest32>,
) -> Verdict {
    judge_group(
        std::slice::from_ref(tp),
        envelope,
        receipt,
        opening,
        affidavit.map(std::slice::from_ref).unwrap_or(&[]),
        message_sha256,
    )
}

/// Weigh the evidence about an envelope whose trustees are among `tps` (one
/// TP, or a group). Delivery is proven by a valid opening, or by resolutions
/// from at least `threshold` distinct trustees (only then could the
/// recipient rebuild the message key). A trustee's invalid-envelope
/// certificate voids the receipt unless `threshold` trustees resolved.
pub fn judge_group(
    tps: &[TpCard],
    envelope: &Envelope,
    receipt: &Receipt,
    opening: Option<&Opening>,
    affidavits: &[Affidavit],
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
        resolved_by: Vec::new(),
        reason: None,
    };
    match weigh(tps, envelope, receipt, opening, affidavits) {
        Ok((sha, via, resolved_by)) => {
            v.message_sha256 = Some(sha.to_string());
            v.resolved_by = resolved_by.iter().map(ToString::to_string).collect();
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

type Weighed = (Digest32, DeliveredVia, Vec<TpId>);

fn weigh(
    tps: &[TpCard],
    envelope: &Envelope,
    receipt: &Receipt,
    opening: Option<&Opening>,
    affidavits: &[Affidavit],
) -> Result<Weighed, ProtocolError> {
    let env = envelope.verify_trusted(tps)?;
    let receipt = receipt.verify(&env)?;
    let h = env.header();
    let (n, t) = (h.trustees.len(), h.threshold());
    // What each trustee slot certified (first statement per slot).
    let mut said: Vec<Option<&Statement>> = vec![None; n];
    for a in affidavits {
        let Some(card) = tps.iter().find(|c| c.id() == a.body.tp) else {
            return Err(ProtocolError::mismatch(
                "affidavit",
                format!("it is from TP {}, whose card was not given", a.body.tp),
            ));
        };
        let slot = a.verify(card, &env)?;
        match said[slot] {
            None => said[slot] = Some(&a.body.statement),
            Some(prev)
                if std::mem::discriminant(prev) != std::mem::discriminant(&a.body.statement) =>
            {
                return Err(ProtocolError::mismatch(
                    "evidence",
                    format!("trustee {} made contradicting statements", a.body.tp),
                ))
            }
            Some(_) => {}
        }
    }
    let mut resolved = None;
    let mut resolved_by = Vec::new();
    for (slot, st) in said.iter().enumerate() {
        if let Some(Statement::Resolved {
            message_sha256,
            commit_salt,
            ..
        }) = st
        {
            if message_commitment(commit_salt, message_sha256) != h.message_commitment {
                return Err(ProtocolError::mismatch(
                    "affidavit",
                    "its message hash does not open the envelope's commitment",
                ));
            }
            resolved = Some(*message_sha256);
            resolved_by.push(h.trustees[slot].tp);
        }
    }
    let invalid: Vec<TpId> = said
        .iter()
        .enumerate()
        .filter(|(_, st)| matches!(st, Some(Statement::InvalidEnvelope { .. })))
        .map(|(i, _)| h.trustees[i].tp)
        .collect();
    let unclaimed = said
        .iter()
        .filter(|st| matches!(st, Some(Statement::Unclaimed)))
        .count();
    let tp_word = if h.is_group() { "a trustee" } else { "the TP" };

    if let (Some(sha), true) = (resolved, resolved_by.len() >= t) {
        if let Some(o) = opening {
            let opened = o.check(&env, &receipt.receipt().recipient_card)?;
            if opened.inside.message_sha256 != sha {
                return Err(ProtocolError::mismatch(
                    "evidence",
                    "the opening and the affidavit disagree on the message",
                ));
            }
        }
        return Ok((sha, DeliveredVia::TrustedParty, resolved_by));
    }
    if !invalid.is_empty() {
        return Err(ProtocolError::Refused(format!(
            "{tp_word} certified this envelope invalid (z does not match its signed header): the receipt is void"
        )));
    }
    if let Some(o) = opening {
        let opened = o.check(&env, &receipt.receipt().recipient_card)?;
        let sha = opened.inside.message_sha256;
        if resolved.is_some_and(|r| r != sha) {
            return Err(ProtocolError::mismatch(
                "evidence",
                "the opening and the affidavit disagree on the message",
            ));
        }
        return Ok((sha, DeliveredVia::Opening, Vec::new()));
    }
    Err(ProtocolError::Refused(
        if resolved_by.is_empty() && unclaimed > 0 && !h.is_group() {
            "the TP certified that this envelope was never resolved by it; without an opening nothing proves delivery".into()
        } else if h.is_group() && (resolved_by.len() + unclaimed) > 0 {
            let never = if unclaimed > n - t {
                format!(", and {unclaimed} certified they never resolved it, so the exchange was never completed through the trustees")
            } else {
                String::new()
            };
            format!(
            "{} of the {t} trustees needed certified a resolution{never}; without an opening nothing proves delivery",
            resolved_by.len()
        )
        } else {
            "no opening and no affidavit: nothing proves delivery".into()
        },
    ))
}
