//! Requests and responses between clients and the TP daemon.
//!
//! Each frame on the socket is a 4-byte big-endian length followed by an
//! encoded [`Request`] or [`Response`] (versioned like files). Requests that
//! reveal something about a party are signed by that party.

use serde::{Deserialize, Serialize};

use crate::affidavit::Affidavit;
use crate::claim::Claim;
use crate::encoding::{self, domain, signing_digest, Kind};
use crate::envelope::{Envelope, VerifiedEnvelope};
use crate::identity::{IdentityCard, IdentitySecret};
use crate::receipt::Receipt;
use crate::tp_card::TpCard;
use crate::{IdentityId, ProtocolError, Signature, Timestamp, TpId};

/// Default limit on one frame.
pub const DEFAULT_MAX_FRAME: usize = 256 * 1024;

// Requests and responses live for one round trip; boxing the big variants
// would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    GetCard,
    Claim(Claim),
    FetchReceipts(FetchRequest),
    Unclaimed(UnclaimedRequest),
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Card(TpCard),
    Claim(ClaimOutcome),
    Receipts(Vec<ResolvedReceipt>),
    Unclaimed(Affidavit),
    Error(WireError),
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimOutcome {
    /// `wrapped_km` is `E_B(k_m)` from inside z, for the recipient only.
    Resolved {
        affidavit: Affidavit,
        wrapped_km: Vec<u8>,
    },
    InvalidEnvelope {
        affidavit: Affidavit,
    },
}

/// A receipt the TP holds for a sender, with its affidavit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedReceipt {
    pub receipt: Receipt,
    pub affidavit: Affidavit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request could not be decoded or is structurally wrong.
    Malformed,
    /// A signature or binding check failed.
    Rejected,
    /// The deadline rules forbid this now.
    Deadline,
    UnknownKey,
    NotAuthorized,
    /// Too many requests or connections; retry later.
    Busy,
    /// The TP could not complete the operation; nothing was released; retry.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TP refused ({:?}): {}", self.code, self.message)
    }
}

/// Alice asks for the receipts the TP resolved for her.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchBody {
    pub tp: TpId,
    pub sender_card: IdentityCard,
    pub requested: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    pub body: FetchBody,
    pub signature: Signature,
}

impl FetchRequest {
    pub fn new(me: &IdentitySecret, tp: TpId, now: Timestamp) -> Self {
        let body = FetchBody {
            tp,
            sender_card: me.card().clone(),
            requested: now,
        };
        let signature = me.sign(&signing_digest(domain::FETCH, &body));
        FetchRequest { body, signature }
    }
    /// The requester is the card's owner, asking this TP, recently.
    pub fn verify(&self, tp: &TpCard, now: Timestamp) -> Result<IdentityId, ProtocolError> {
        check_fresh(self.body.tp, self.body.requested, tp, now)?;
        self.body.sender_card.verify_statement(
            domain::FETCH,
            &self.body,
            &self.signature,
            "receipt request",
        )?;
        Ok(self.body.sender_card.id())
    }
}

/// A party asks for an unclaimed certificate after the deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnclaimedBody {
    pub tp: TpId,
    pub envelope: Envelope,
    pub requester_card: IdentityCard,
    pub requested: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnclaimedRequest {
    pub body: UnclaimedBody,
    pub signature: Signature,
}

impl UnclaimedRequest {
    /// Ask trustee `tp` of the envelope.
    pub fn new(me: &IdentitySecret, env: &VerifiedEnvelope, tp: TpId, now: Timestamp) -> Self {
        let body = UnclaimedBody {
            tp,
            envelope: env.envelope().clone(),
            requester_card: me.card().clone(),
            requested: now,
        };
        let signature = me.sign(&signing_digest(domain::UNCLAIMED_REQUEST, &body));
        UnclaimedRequest { body, signature }
    }
    /// Signed by the envelope's sender or recipient; the envelope is valid.
    pub fn verify(&self, tp: &TpCard, now: Timestamp) -> Result<VerifiedEnvelope, ProtocolError> {
        check_fresh(self.body.tp, self.body.requested, tp, now)?;
        let env = self.body.envelope.verify(tp)?;
        let who = self.body.requester_card.id();
        if who != env.header().sender && who != env.header().recipient {
            return Err(ProtocolError::Refused(
                "only the sender or the recipient may ask about this envelope".into(),
            ));
        }
        self.body.requester_card.verify_statement(
            domain::UNCLAIMED_REQUEST,
            &self.body,
            &self.signature,
            "unclaimed request",
        )?;
        Ok(env)
    }
}

fn check_fresh(
    asked: TpId,
    requested: Timestamp,
    tp: &TpCard,
    now: Timestamp,
) -> Result<(), ProtocolError> {
    if asked != tp.id() {
        return Err(ProtocolError::mismatch(
            "request",
            "it is addressed to another TP",
        ));
    }
    if requested.abs_diff(now) > tp.policy().clock_skew_secs {
        return Err(ProtocolError::Deadline(
            "request timestamp too far from the TP's clock: check your clock".into(),
        ));
    }
    Ok(())
}

pub fn encode_request(r: &Request) -> Vec<u8> {
    encoding::encode(Kind::Request, r)
}
pub fn decode_request(b: &[u8]) -> Result<Request, ProtocolError> {
    encoding::decode(Kind::Request, b)
}
pub fn encode_response(r: &Response) -> Vec<u8> {
    encoding::encode(Kind::Response, r)
}
pub fn decode_response(b: &[u8]) -> Result<Response, ProtocolError> {
    encoding::decode(Kind::Response, b)
}
