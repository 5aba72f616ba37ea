//! The transaction log: one outcome per transaction id, COMMIT, ABORT or
//! INVALID, never two (Camp, Harkavy, Tygar and Yee, "anonymous atomic
//! transactions"; the log is a role of the TP, with its signing key).
//!
//! The daemon authenticates a request ([`CommitRequest::authenticate`],
//! [`AbortRequest::authenticate`], [`InvalidFinding::new`]), looks up the
//! outcome its journal holds for the transaction id (one unique index per
//! `T_id`, under the per-`T_id` lock) and calls `decide`; the result is the
//! recorded outcome again, a refusal, or a typed permission
//! ([`Committable`], [`Abortable`], [`Invalidatable`]) that is the only
//! thing a statement is signed for. The rules:
//!
//! - **One outcome per `T_id`.** A transaction that has an outcome gets
//!   that outcome again, whatever is asked and whatever the clock says; a
//!   request that contradicts it is refused with the recorded outcome as
//!   the proof. A request about the same `T_id` under other terms is
//!   refused too (the outcome is about the recorded terms only).
//! - **COMMIT strictly before the deadline**, on the merchant's signed
//!   request carrying the bank's payment for exactly these terms.
//! - **ABORT at or after the deadline** for a transaction nobody committed,
//!   on anyone's request carrying the payment (the payment fixes the
//!   deadline: nobody can abort with a deadline of his own), and only
//!   within the log's retention after the deadline (after that the log may
//!   have forgotten a COMMIT, so it says nothing).
//! - **INVALID strictly before the deadline**, when the TP's token found
//!   that the transaction's goods do not open (the dispute path).
//!
//! Payments are checked against the bank cards the log is configured with:
//! an outcome is only ever about terms that bank signed.

use serde::{Deserialize, Serialize};

use crate::affidavit::ChainPosition;
use crate::bank::{BankCard, BankStatement, TxnId, TxnTerms};
use crate::encoding::{self, canonical, domain, signing_digest, tagged_hash, Kind};
use crate::identity::{IdentityCard, IdentitySecret};
use crate::tp_card::TpCard;
use crate::{Digest32, ProtocolError, Signature, Timestamp, TpId};

/// What the log decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The merchant released the goods to the log before the deadline:
    /// the bank pays the merchant; the customer gets the goods.
    Commit {
        /// `H(release)`: what the merchant released (the goods key or
        /// opening; its check is the goods role's).
        release: Digest32,
    },
    /// Nobody committed before the deadline: the coins are freed.
    Abort,
    /// The goods do not open: the coins are freed, the receipt is void.
    Invalid,
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Commit { .. } => "COMMIT",
            Outcome::Abort => "ABORT",
            Outcome::Invalid => "INVALID",
        }
    }
    /// ABORT and INVALID free the coins.
    pub fn releases_coins(&self) -> bool {
        !matches!(self, Outcome::Commit { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOutcomeBody {
    pub log: TpId,
    pub terms: TxnTerms,
    pub outcome: Outcome,
    pub at: Timestamp,
    pub journal: ChainPosition,
}

impl TxnOutcomeBody {
    /// The digest the log's token signs.
    pub fn signing_digest(&self) -> Digest32 {
        signing_digest(domain::TXN_OUTCOME, self)
    }
}

/// The log's signed outcome of one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOutcome {
    pub body: TxnOutcomeBody,
    pub signature: Signature,
}

impl TxnOutcome {
    /// Check the log's signature and that the statement keeps the log's
    /// own time rules (COMMIT and INVALID before the deadline, ABORT at or
    /// after it): a statement that breaks them is no evidence of anything.
    pub fn verify(&self, log: &TpCard) -> Result<&Outcome, ProtocolError> {
        if self.body.log != log.id() || self.body.terms.log != log.id() {
            return Err(ProtocolError::mismatch(
                "transaction outcome",
                "it is from another log",
            ));
        }
        log.verify(
            &self.body.signing_digest(),
            &self.signature,
            "transaction outcome (log's signature)",
        )?;
        if self.body.journal.seq == 0 {
            return Err(ProtocolError::mismatch(
                "transaction outcome",
                "it names no journal record (sequence number 0)",
            ));
        }
        let before = self.body.at < self.body.terms.deadline;
        let timely = match self.body.outcome {
            Outcome::Commit { .. } | Outcome::Invalid => before,
            Outcome::Abort => !before,
        };
        if !timely {
            return Err(ProtocolError::Deadline(format!(
                "the log's {} is dated {} for a deadline of {}: it breaks the log's own rules",
                self.body.outcome.name(),
                self.body.at,
                self.body.terms.deadline
            )));
        }
        Ok(&self.body.outcome)
    }
    pub fn hash(&self) -> Digest32 {
        tagged_hash(domain::TXN_OUTCOME, &[&canonical(self)])
    }
    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::TxnOutcome, self)
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(Kind::TxnOutcome, bytes)
    }
}

/// `H(release)` as a COMMIT names it.
pub fn release_hash(release: &[u8]) -> Digest32 {
    tagged_hash(domain::TXN_RELEASE, &[release])
}

/// The log's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPolicy {
    /// How long after a deadline the log keeps its records and still
    /// answers ABORT for an uncommitted transaction.
    pub retention_secs: u64,
    pub clock_skew_secs: u64,
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy {
            retention_secs: 90 * 24 * 3600,
            clock_skew_secs: 300,
        }
    }
}

/// authorization_m: the merchant asks the log to commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitBody {
    /// The bank's payment (its terms are the transaction's).
    pub payment: BankStatement,
    /// What the merchant releases (the goods key or opening).
    pub release: Vec<u8>,
    pub requested: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    pub body: CommitBody,
    pub merchant_card: IdentityCard,
    pub signature: Signature,
}

impl CommitRequest {
    pub fn new(
        merchant: &IdentitySecret,
        payment: &BankStatement,
        release: Vec<u8>,
        now: Timestamp,
    ) -> Self {
        let body = CommitBody {
            payment: payment.clone(),
            release,
            requested: now,
        };
        let signature = merchant.sign(&signing_digest(domain::TXN_COMMIT, &body));
        CommitRequest {
            body,
            merchant_card: merchant.card().clone(),
            signature,
        }
    }

    /// For this log, with a payment of `bank` (a bank the log serves),
    /// signed by the payment's merchant, not dated in the future.
    pub fn authenticate(
        &self,
        log: &TpCard,
        bank: &BankCard,
        policy: &LogPolicy,
        now: Timestamp,
    ) -> Result<AuthenticCommit, ProtocolError> {
        let terms = self.body.payment.verify_payment(bank)?.clone();
        check_for_log(&terms, log)?;
        if self.merchant_card.id() != terms.merchant {
            return Err(ProtocolError::mismatch(
                "commit request",
                "it is not from the payment's merchant",
            ));
        }
        self.merchant_card.verify_statement(
            domain::TXN_COMMIT,
            &self.body,
            &self.signature,
            "commit request (merchant's signature)",
        )?;
        if self.body.requested > now.saturating_add(policy.clock_skew_secs) {
            return Err(ProtocolError::Deadline(
                "the commit request is dated in the future: check your clock".into(),
            ));
        }
        Ok(AuthenticCommit {
            terms,
            release: release_hash(&self.body.release),
        })
    }
}

fn check_for_log(terms: &TxnTerms, log: &TpCard) -> Result<(), ProtocolError> {
    if terms.log != log.id() {
        return Err(ProtocolError::mismatch(
            "payment",
            "it names another transaction log",
        ));
    }
    Ok(())
}

/// Anyone holding the payment may ask for the ABORT after the deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortRequest {
    pub payment: BankStatement,
}

impl AbortRequest {
    pub fn authenticate(
        &self,
        log: &TpCard,
        bank: &BankCard,
    ) -> Result<AuthenticAbort, ProtocolError> {
        let terms = self.payment.verify_payment(bank)?.clone();
        check_for_log(&terms, log)?;
        Ok(AuthenticAbort { terms })
    }
}

/// A commit request whose payment and merchant signature checked.
#[derive(Debug, Clone)]
pub struct AuthenticCommit {
    terms: TxnTerms,
    release: Digest32,
}

/// An abort request whose payment checked.
#[derive(Debug, Clone)]
pub struct AuthenticAbort {
    terms: TxnTerms,
}

/// The TP's token found, on a dispute about a paid transaction, that its
/// goods do not open: an INVALID is due unless the transaction already has
/// an outcome. Made by the goods dispute path after the token's verdict
/// (to come); nothing else should make one.
#[derive(Debug, Clone)]
pub struct InvalidFinding {
    terms: TxnTerms,
}

impl InvalidFinding {
    /// The token's verdict on the transaction a payment of `bank` is for.
    pub fn new(
        payment: &BankStatement,
        bank: &BankCard,
        log: &TpCard,
    ) -> Result<Self, ProtocolError> {
        let terms = payment.verify_payment(bank)?.clone();
        check_for_log(&terms, log)?;
        Ok(InvalidFinding { terms })
    }
}

/// Why the log says no. Nothing was signed or recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRefusal {
    /// The transaction already has another outcome: here it is.
    AlreadyDecided { recorded: Box<TxnOutcome> },
    /// The transaction id has an outcome under other terms.
    TermsConflict { recorded: Box<TxnOutcome> },
    /// Too late to commit (or to find the goods invalid).
    DeadlinePassed { deadline: Timestamp, now: Timestamp },
    /// Too early to abort.
    TooEarly { deadline: Timestamp, now: Timestamp },
    /// Past the log's retention: it no longer answers for this deadline.
    PastRetention {
        deadline: Timestamp,
        until: Timestamp,
    },
}

impl LogRefusal {
    pub fn message(&self) -> String {
        match self {
            LogRefusal::AlreadyDecided { recorded } => format!(
                "the log already decided this transaction: {} at {}",
                recorded.body.outcome.name(),
                recorded.body.at
            ),
            LogRefusal::TermsConflict { recorded } => format!(
                "the log decided this transaction id under other terms ({} at {})",
                recorded.body.outcome.name(),
                recorded.body.at
            ),
            LogRefusal::DeadlinePassed { deadline, now } => format!(
                "the deadline passed {} s ago on the log's clock",
                now.saturating_sub(*deadline)
            ),
            LogRefusal::TooEarly { deadline, now } => format!(
                "too early: the deadline is {} s away on the log's clock",
                deadline.saturating_sub(*now)
            ),
            LogRefusal::PastRetention { deadline, until } => format!(
                "the log kept its records for the deadline {deadline} only until {until}; \
                 it no longer answers for it"
            ),
        }
    }
}

/// What the log does with a request: the recorded outcome again, a
/// refusal, or a permission to sign a new outcome.
// Lives for one request; boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum TxnDecision<P> {
    Answer(TxnOutcome),
    Refuse(LogRefusal),
    Sign(P),
}

/// The rules every request shares: a recorded outcome under other terms is
/// a conflict; a recorded outcome that `agrees` is the answer; any other
/// recorded outcome refuses the request with itself as the proof.
fn recorded_rule<P>(
    terms: &TxnTerms,
    recorded: Option<&TxnOutcome>,
    agrees: impl Fn(&Outcome) -> bool,
) -> Option<TxnDecision<P>> {
    let o = recorded?;
    debug_assert_eq!(o.body.terms.txn, terms.txn, "looked up by T_id");
    Some(if &o.body.terms != terms {
        TxnDecision::Refuse(LogRefusal::TermsConflict {
            recorded: Box::new(o.clone()),
        })
    } else if agrees(&o.body.outcome) {
        TxnDecision::Answer(o.clone())
    } else {
        TxnDecision::Refuse(LogRefusal::AlreadyDecided {
            recorded: Box::new(o.clone()),
        })
    })
}

impl AuthenticCommit {
    pub fn terms(&self) -> &TxnTerms {
        &self.terms
    }
    pub fn txn(&self) -> TxnId {
        self.terms.txn
    }
    /// A recorded COMMIT is the answer (whatever the release this time); a
    /// recorded ABORT or INVALID refuses; otherwise COMMIT strictly before
    /// the deadline.
    pub fn decide(self, recorded: Option<&TxnOutcome>, now: Timestamp) -> TxnDecision<Committable> {
        if let Some(d) = recorded_rule(&self.terms, recorded, |o| {
            matches!(o, Outcome::Commit { .. })
        }) {
            return d;
        }
        if now >= self.terms.deadline {
            return TxnDecision::Refuse(LogRefusal::DeadlinePassed {
                deadline: self.terms.deadline,
                now,
            });
        }
        TxnDecision::Sign(Committable {
            terms: self.terms,
            release: self.release,
            at: now,
        })
    }
}

impl AuthenticAbort {
    pub fn terms(&self) -> &TxnTerms {
        &self.terms
    }
    pub fn txn(&self) -> TxnId {
        self.terms.txn
    }
    /// A recorded ABORT or INVALID is the answer (both free the coins); a
    /// recorded COMMIT refuses; otherwise ABORT at or after the deadline
    /// and within the retention.
    pub fn decide(
        self,
        recorded: Option<&TxnOutcome>,
        policy: &LogPolicy,
        now: Timestamp,
    ) -> TxnDecision<Abortable> {
        if let Some(d) = recorded_rule(&self.terms, recorded, Outcome::releases_coins) {
            return d;
        }
        let deadline = self.terms.deadline;
        if now < deadline {
            return TxnDecision::Refuse(LogRefusal::TooEarly { deadline, now });
        }
        let until = deadline.saturating_add(policy.retention_secs);
        if now >= until {
            return TxnDecision::Refuse(LogRefusal::PastRetention { deadline, until });
        }
        TxnDecision::Sign(Abortable {
            terms: self.terms,
            at: now,
        })
    }
}

impl InvalidFinding {
    pub fn txn(&self) -> TxnId {
        self.terms.txn
    }
    /// A recorded ABORT or INVALID is the answer; a recorded COMMIT
    /// refuses; otherwise INVALID strictly before the deadline.
    pub fn decide(
        self,
        recorded: Option<&TxnOutcome>,
        now: Timestamp,
    ) -> TxnDecision<Invalidatable> {
        if let Some(d) = recorded_rule(&self.terms, recorded, Outcome::releases_coins) {
            return d;
        }
        if now >= self.terms.deadline {
            return TxnDecision::Refuse(LogRefusal::DeadlinePassed {
                deadline: self.terms.deadline,
                now,
            });
        }
        TxnDecision::Sign(Invalidatable {
            terms: self.terms,
            at: now,
        })
    }
}

/// A COMMIT the rules allow. Made only by [`AuthenticCommit::decide`].
#[derive(Debug, Clone)]
pub struct Committable {
    terms: TxnTerms,
    release: Digest32,
    at: Timestamp,
}

impl Committable {
    pub fn terms(&self) -> &TxnTerms {
        &self.terms
    }
    /// The time the deadline was checked: the time the outcome states.
    pub fn at(&self) -> Timestamp {
        self.at
    }
    /// The outcome to sign, at journal position `journal`.
    pub fn body(&self, log: TpId, journal: ChainPosition) -> TxnOutcomeBody {
        TxnOutcomeBody {
            log,
            terms: self.terms.clone(),
            outcome: Outcome::Commit {
                release: self.release,
            },
            at: self.at,
            journal,
        }
    }
}

/// An ABORT the rules allow. Made only by [`AuthenticAbort::decide`].
#[derive(Debug, Clone)]
pub struct Abortable {
    terms: TxnTerms,
    at: Timestamp,
}

/// An INVALID the rules allow. Made only by [`InvalidFinding::decide`].
#[derive(Debug, Clone)]
pub struct Invalidatable {
    terms: TxnTerms,
    at: Timestamp,
}

impl Abortable {
    pub fn terms(&self) -> &TxnTerms {
        &self.terms
    }
    pub fn at(&self) -> Timestamp {
        self.at
    }
    pub fn body(&self, log: TpId, journal: ChainPosition) -> TxnOutcomeBody {
        TxnOutcomeBody {
            log,
            terms: self.terms.clone(),
            outcome: Outcome::Abort,
            at: self.at,
            journal,
        }
    }
}

impl Invalidatable {
    pub fn terms(&self) -> &TxnTerms {
        &self.terms
    }
    pub fn at(&self) -> Timestamp {
        self.at
    }
    pub fn body(&self, log: TpId, journal: ChainPosition) -> TxnOutcomeBody {
        TxnOutcomeBody {
            log,
            terms: self.terms.clone(),
            outcome: Outcome::Invalid,
            at: self.at,
            journal,
        }
    }
}
