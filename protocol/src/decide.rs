//! The TP's decision core: what a trustee does with a claim or an unclaimed
//! request, as a pure function of the request, what its journal already
//! holds about it and its clock.
//!
//! The daemon is a thin shell around this module: it authenticates the
//! request ([`Claim::authenticate`](crate::claim::Claim::authenticate),
//! [`UnclaimedRequest::authenticate`]), looks up [`Recorded`] for the
//! request's [`Subject`] in its journal, calls `decide`, and carries out the
//! decision. The device accepts only what `decide` returns
//! ([`ResolvableClaim`], [`CertifiableUnclaimed`]), and those have no public
//! constructor, so no path reaches the token without every rule below having
//! run in this order. The model checker (`protocol/tests/model.rs`) drives
//! these very functions.
//!
//! ## What a statement is about
//!
//! z is sealed to one header: the token opens z only with the associated
//! data of the header it was made for (trustees, threshold, slot, sender,
//! recipient, deadline, `H(c_m)`, the message commitment). Anyone who has
//! seen an envelope can wrap its z in another header, with another deadline
//! or himself as the sender, and sign that header; the TP cannot tell which
//! header is the sealed one without opening z. Hence:
//!
//! - A **resolution** is about z. It is recorded under `H(z)` and answers
//!   later claims only if their header agrees with it on every field z is
//!   sealed to ([`RecordedResolution::answers`]); any other header is
//!   decided afresh (the token then finds that z does not open under it).
//! - An **invalid-envelope** verdict and an **unclaimed** certificate are
//!   about one (z, header) pair, the [`Subject`]: they are recorded and
//!   looked up under both, and they bind nothing but that header. A request
//!   made of someone else's z under a forged header can therefore only ever
//!   produce statements about the forged header; it never changes what the
//!   TP does for the genuine one.
//! - **One outcome per subject**: a subject is resolved (through its z),
//!   certified invalid, or certified unclaimed, never two of these; a z that
//!   was resolved gets no unclaimed certificate under any header.
//! - **The same answer twice**: a question answered before gets the recorded
//!   answer, whatever the clock says now.

use crate::affidavit::{Affidavit, Statement};
use crate::claim::{AuthenticClaim, Claim};
use crate::envelope::{check_group_policy, VerifiedEnvelope};
use crate::receipt::Receipt;
use crate::seal::{message_commitment, Inside, Z};
use crate::tp_card::TpCard;
use crate::wire::{ClaimOutcome, ErrorCode, UnclaimedRequest};
use crate::{Digest32, IdentityId, KeyId, ProtocolError, Timestamp};

/// What one decision is about: a trustee's z under one signed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subject {
    /// `H(z)` of the deciding trustee's z.
    pub z_hash: Digest32,
    /// The id of the header z came wrapped in.
    pub envelope_id: Digest32,
}

/// A resolution in the journal, with the receipt it was claimed with (which
/// repeats the header fields z is sealed to).
#[derive(Debug, Clone)]
pub struct RecordedResolution {
    pub outcome: ClaimOutcome,
    pub receipt: Receipt,
}

impl RecordedResolution {
    /// Whether this resolution is the answer to `claim`: same z, and the
    /// claim's header agrees with the resolved one on every field the token
    /// checked when it opened z. Another header around the same z is not the
    /// one sealed in it, and gets its own decision.
    pub fn answers(&self, claim: &AuthenticClaim) -> bool {
        let ClaimOutcome::Resolved { affidavit, .. } = &self.outcome else {
            return false;
        };
        let Statement::Resolved {
            key_id,
            message_sha256,
            commit_salt,
            ..
        } = &affidavit.body.statement
        else {
            return false;
        };
        let h = claim.envelope().header();
        let b = &self.receipt.body;
        affidavit.body.z_hash == claim.z_hash()
            && *key_id == claim.key_id()
            && b.trustees == h.trustee_ids()
            && b.threshold == h.threshold
            && b.sender == h.sender
            && b.recipient == h.recipient
            && b.deadline == h.deadline
            && b.cm_hash == h.cm_hash
            && message_commitment(commit_salt, message_sha256) == h.message_commitment
    }

    /// When the TP resolved.
    pub fn at(&self) -> Timestamp {
        match &self.outcome {
            ClaimOutcome::Resolved { affidavit, .. }
            | ClaimOutcome::InvalidEnvelope { affidavit } => affidavit.body.at,
        }
    }
}

/// What the journal holds about a [`Subject`], looked up by the daemon. The
/// lookups are by key only; the rules that weigh them are here.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The resolution recorded under the subject's `H(z)`, under whatever
    /// header it was claimed with.
    pub resolution: Option<RecordedResolution>,
    /// The invalid-envelope verdict recorded for the subject's header.
    pub invalid: Option<ClaimOutcome>,
    /// The unclaimed certificate recorded for the subject (z and header).
    pub unclaimed: Option<Affidavit>,
}

impl Recorded {
    /// A journal that holds nothing about the subject.
    pub fn nothing() -> Recorded {
        Recorded::default()
    }
}

/// Whether the recipient may use this TP (Micali's virtual-TP paper's subscription model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    /// The TP serves everyone.
    NotRequired,
    Active,
    Missing,
    Expired {
        at: Timestamp,
    },
}

/// The state of the TP key the claimed z is encrypted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// The TP holds the key and resolves envelopes made for it.
    Held,
    /// The operator retired the key: recorded answers are still given, new
    /// resolutions are not.
    Retired { at: Timestamp },
}

/// The daemon's facts about a claim besides the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimContext {
    pub subscription: Subscription,
    pub key: KeyStatus,
}

impl ClaimContext {
    /// A TP that serves everyone, with the claimed key held.
    pub const OPEN: ClaimContext = ClaimContext {
        subscription: Subscription::NotRequired,
        key: KeyStatus::Held,
    };
}

/// Why the TP says no. Nothing was decrypted, signed or recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The TP certified that this z under this header was never claimed.
    CertifiedUnclaimed { at: Timestamp },
    /// The deadline passed on the TP's clock.
    DeadlinePassed { deadline: Timestamp, now: Timestamp },
    /// An unclaimed certificate asked for before the deadline.
    TooEarly { deadline: Timestamp, now: Timestamp },
    /// z was resolved: no unclaimed certificate for it, under any header.
    Resolved { at: Timestamp },
    /// This header was certified invalid: no unclaimed certificate for it.
    CertifiedInvalid { at: Timestamp },
    /// The key z is encrypted to was retired and nothing was recorded.
    RetiredKey { key: KeyId, at: Timestamp },
    /// The recipient is not (or no longer) a subscriber.
    NotSubscribed {
        recipient: IdentityId,
        expired_at: Option<Timestamp>,
    },
    /// A protocol rule (e.g. the trustee's group policy).
    Protocol(ProtocolError),
}

impl Refusal {
    /// The wire code the client acts on.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::CertifiedUnclaimed { .. }
            | Refusal::DeadlinePassed { .. }
            | Refusal::TooEarly { .. } => ErrorCode::Deadline,
            Refusal::Resolved { .. }
            | Refusal::CertifiedInvalid { .. }
            | Refusal::NotSubscribed { .. } => ErrorCode::NotAuthorized,
            Refusal::RetiredKey { .. } => ErrorCode::UnknownKey,
            Refusal::Protocol(e) => e.wire_code(),
        }
    }

    /// One line for the client, with times shown by `time` (the daemon's
    /// RFC 3339 formatter; this crate reads no clock and formats no dates).
    pub fn message(&self, time: impl Fn(Timestamp) -> String) -> String {
        match self {
            Refusal::CertifiedUnclaimed { at } => format!(
                "the TP certified at {} that this envelope was never claimed; it will not resolve it",
                time(*at)
            ),
            Refusal::DeadlinePassed { deadline, now } => format!(
                "the deadline passed {} ago; the TP no longer resolves this envelope",
                crate::error::span(now.saturating_sub(*deadline))
            ),
            Refusal::TooEarly { deadline, now } => format!(
                "too early: the deadline is {} ({} from now on the TP's clock)",
                time(*deadline),
                crate::error::span(deadline.saturating_sub(*now))
            ),
            Refusal::Resolved { at } => format!(
                "this envelope was resolved at {}; no unclaimed certificate",
                time(*at)
            ),
            Refusal::CertifiedInvalid { at } => format!(
                "the TP certified this envelope invalid at {}; no unclaimed certificate",
                time(*at)
            ),
            Refusal::RetiredKey { key, at } => format!(
                "the TP retired encryption key {key} at {}: it no longer resolves envelopes \
                 made for that key (the sender must send again using the TP's current card)",
                time(*at)
            ),
            Refusal::NotSubscribed {
                recipient,
                expired_at,
            } => {
                let why = match expired_at {
                    Some(t) => format!("its subscription expired at {}", time(*t)),
                    None => "it is not subscribed".to_owned(),
                };
                format!(
                    "this TP resolves claims for its subscribers only, and identity {} \
                     (the recipient) {why}; contact the TP's operator",
                    recipient.0.to_hex()
                )
            }
            Refusal::Protocol(e) => e.to_string(),
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::CertifiedUnclaimed { .. } => "certified-unclaimed",
            Refusal::DeadlinePassed { .. } => "deadline-passed",
            Refusal::TooEarly { .. } => "too-early",
            Refusal::Resolved { .. } => "resolved",
            Refusal::CertifiedInvalid { .. } => "certified-invalid",
            Refusal::RetiredKey { .. } => "retired-key",
            Refusal::NotSubscribed { .. } => "not-subscribed",
            Refusal::Protocol(_) => "policy",
        }
    }
}

/// What the TP does with an authentic claim.
// Lives for one request; boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ClaimDecision {
    /// Give the recorded answer again.
    Answer(ClaimOutcome),
    Refuse(Refusal),
    /// Let the token open z and decide (then sign, record, answer).
    Resolve(ResolvableClaim),
}

impl Claim {
    /// Authenticate and decide as a TP whose journal holds nothing about
    /// this claim and that serves everyone: for tools and tests that
    /// exercise the token with fresh claims (the bench, device tests). A
    /// refusal comes back as the protocol error it amounts to.
    pub fn decide_fresh(
        &self,
        tp: &TpCard,
        now: Timestamp,
    ) -> Result<ResolvableClaim, ProtocolError> {
        match self
            .authenticate(tp, now)?
            .decide(tp, &Recorded::nothing(), &ClaimContext::OPEN, now)
        {
            ClaimDecision::Resolve(c) => Ok(c),
            ClaimDecision::Refuse(Refusal::Protocol(e)) => Err(e),
            ClaimDecision::Refuse(r @ Refusal::DeadlinePassed { .. }) => {
                Err(ProtocolError::Deadline(r.message(|t| t.to_string())))
            }
            ClaimDecision::Refuse(r) => Err(ProtocolError::Refused(r.message(|t| t.to_string()))),
            ClaimDecision::Answer(_) => unreachable!("nothing was recorded"),
        }
    }
}

impl AuthenticClaim {
    /// The (z, header) this claim is about.
    pub fn subject(&self) -> Subject {
        Subject {
            z_hash: self.z_hash(),
            envelope_id: self.envelope().header().envelope_id(),
        }
    }

    /// The TP's rules for a claim, in order: a recorded answer is given
    /// again (whatever the clock says); a subject certified unclaimed is
    /// never resolved; then the key, the subscription, the trustee's group
    /// policy and — last, with the clock read after any waiting — the
    /// deadline (the TP resolves strictly before it).
    pub fn decide(
        self,
        tp: &TpCard,
        recorded: &Recorded,
        context: &ClaimContext,
        now: Timestamp,
    ) -> ClaimDecision {
        if let Some(r) = &recorded.resolution {
            if r.answers(&self) {
                return ClaimDecision::Answer(r.outcome.clone());
            }
        }
        if let Some(v) = &recorded.invalid {
            return ClaimDecision::Answer(v.clone());
        }
        if let Some(u) = &recorded.unclaimed {
            return ClaimDecision::Refuse(Refusal::CertifiedUnclaimed { at: u.body.at });
        }
        if let KeyStatus::Retired { at } = context.key {
            return ClaimDecision::Refuse(Refusal::RetiredKey {
                key: self.key_id(),
                at,
            });
        }
        let h = self.envelope().header();
        let recipient = h.recipient;
        match context.subscription {
            Subscription::NotRequired | Subscription::Active => {}
            Subscription::Missing => {
                return ClaimDecision::Refuse(Refusal::NotSubscribed {
                    recipient,
                    expired_at: None,
                })
            }
            Subscription::Expired { at } => {
                return ClaimDecision::Refuse(Refusal::NotSubscribed {
                    recipient,
                    expired_at: Some(at),
                })
            }
        }
        if let Err(e) = check_group_policy(tp, h.threshold(), h.trustees.len()) {
            return ClaimDecision::Refuse(Refusal::Protocol(e));
        }
        let deadline = h.deadline;
        if now >= deadline {
            return ClaimDecision::Refuse(Refusal::DeadlinePassed { deadline, now });
        }
        ClaimDecision::Resolve(ResolvableClaim {
            claim: self,
            at: now,
        })
    }
}

/// A claim the TP's rules allow the token to resolve, strictly before its
/// deadline. Made only by [`AuthenticClaim::decide`].
#[derive(Debug, Clone)]
pub struct ResolvableClaim {
    claim: AuthenticClaim,
    at: Timestamp,
}

impl ResolvableClaim {
    pub fn claim(&self) -> &AuthenticClaim {
        &self.claim
    }
    /// The instant the deadline was checked: the time the affidavit states.
    pub fn at(&self) -> Timestamp {
        self.at
    }
    pub fn subject(&self) -> Subject {
        self.claim.subject()
    }
    pub fn envelope(&self) -> &VerifiedEnvelope {
        self.claim.envelope()
    }
    pub fn receipt(&self) -> &crate::receipt::VerifiedReceipt {
        self.claim.receipt()
    }
    /// The z this TP opens.
    pub fn z(&self) -> &Z {
        &self.claim.envelope().envelope().zs[self.claim.slot()]
    }
    /// The TP key that z is encrypted to.
    pub fn key_id(&self) -> KeyId {
        self.claim.key_id()
    }
    /// Associated data the token must use when opening z.
    pub fn aad(&self) -> Vec<u8> {
        self.claim.envelope().header().aad(self.claim.slot())
    }
    /// After the token decrypted z: parse the inside and check it against the
    /// header. `Err` means the envelope is invalid (an invalid-envelope
    /// affidavit is due), never "try again".
    pub fn check_inside(&self, plaintext: &[u8]) -> Result<Inside, ProtocolError> {
        let inside = Inside::decode(plaintext)?;
        self.claim
            .envelope()
            .header()
            .check_inside(self.claim.slot(), &inside)?;
        Ok(inside)
    }
}

impl UnclaimedRequest {
    /// Signed by the envelope's sender or recipient, for this TP, recently,
    /// about a well-formed envelope naming it. Whether a certificate is due
    /// is [`AuthenticUnclaimed::decide`]'s question.
    pub fn authenticate(
        &self,
        tp: &TpCard,
        now: Timestamp,
    ) -> Result<AuthenticUnclaimed, ProtocolError> {
        let env = self.verify(tp, now)?;
        let slot = env
            .header()
            .slot_of(&tp.id())
            .expect("Envelope::verify checked that the TP is a trustee");
        Ok(AuthenticUnclaimed { env, slot })
    }
}

/// An unclaimed request that passed [`UnclaimedRequest::authenticate`].
#[derive(Debug, Clone)]
pub struct AuthenticUnclaimed {
    env: VerifiedEnvelope,
    slot: usize,
}

/// What the TP does with an authentic unclaimed request.
#[derive(Debug)]
pub enum UnclaimedDecision {
    /// Give the recorded certificate again.
    Answer(Affidavit),
    Refuse(Refusal),
    /// Sign a new certificate (then record it and answer).
    Certify(CertifiableUnclaimed),
}

impl AuthenticUnclaimed {
    pub fn envelope(&self) -> &VerifiedEnvelope {
        &self.env
    }
    /// The (z, header) the request is about.
    pub fn subject(&self) -> Subject {
        Subject {
            z_hash: self.env.header().trustees[self.slot].z_hash,
            envelope_id: self.env.header().envelope_id(),
        }
    }

    /// The TP's rules for an unclaimed certificate: never for a z it
    /// resolved (under any header), never for a header it certified
    /// invalid, the recorded certificate again if there is one, and a new
    /// one only at or after the header's deadline on the TP's clock. The
    /// certificate is about this header only: it never stops a claim made
    /// with another header around the same z.
    pub fn decide(self, recorded: &Recorded, now: Timestamp) -> UnclaimedDecision {
        if let Some(r) = &recorded.resolution {
            return UnclaimedDecision::Refuse(Refusal::Resolved { at: r.at() });
        }
        if let Some(
            ClaimOutcome::InvalidEnvelope { affidavit } | ClaimOutcome::Resolved { affidavit, .. },
        ) = &recorded.invalid
        {
            return UnclaimedDecision::Refuse(Refusal::CertifiedInvalid {
                at: affidavit.body.at,
            });
        }
        if let Some(u) = &recorded.unclaimed {
            return UnclaimedDecision::Answer(u.clone());
        }
        let deadline = self.env.header().deadline;
        if now < deadline {
            return UnclaimedDecision::Refuse(Refusal::TooEarly { deadline, now });
        }
        UnclaimedDecision::Certify(CertifiableUnclaimed {
            env: self.env,
            slot: self.slot,
            at: now,
        })
    }
}

/// An unclaimed certificate the TP's rules allow the token to sign: at or
/// after the deadline, for a subject with no other outcome. Made only by
/// [`AuthenticUnclaimed::decide`].
#[derive(Debug, Clone)]
pub struct CertifiableUnclaimed {
    env: VerifiedEnvelope,
    slot: usize,
    at: Timestamp,
}

impl CertifiableUnclaimed {
    pub fn envelope(&self) -> &VerifiedEnvelope {
        &self.env
    }
    pub fn slot(&self) -> usize {
        self.slot
    }
    /// The time the certificate states (at or after the deadline).
    pub fn at(&self) -> Timestamp {
        self.at
    }
}
