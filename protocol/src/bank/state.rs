//! Coin states, the only transitions between them, what the bank's journal
//! holds about a coin, and why the bank says no.
//!
//! ```text
//! Unspent ──lock(T)──▶ Locked(T) ──deposit(T), with the log's COMMIT(T)──▶ Deposited(T)
//!    │                    └──────refresh(T), with ABORT(T) or INVALID(T)──▶ Released(T)
//!    └──────refresh (change-making, no transaction)──────────────────────▶ Exchanged
//! ```
//!
//! A coin with no record is unspent. Every other state is entered by one
//! bank statement signed at a journal position (payment, deposited,
//! refreshed), committed before the answer; the last three states are
//! final: a coin the bank has seen next to a transaction is never used
//! again (its value lives on in the merchant's account or in new coins).

use serde::{Deserialize, Serialize};

use crate::{IdentityId, Timestamp};

use super::card::{Amount, BrandId};
use super::coin::CoinId;
use super::lock::LockRequest;
use super::refresh::RefreshRequest;
use super::statement::{BankStatement, TxnId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CoinStatus {
    Unspent,
    Locked { txn: TxnId },
    Deposited { txn: TxnId },
    Released { txn: TxnId },
    Exchanged,
}

/// What can happen to a coin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoinEvent {
    /// The holder locked it to a transaction (the bank signed a payment).
    Lock { txn: TxnId },
    /// The merchant deposited the transaction, with the log's COMMIT.
    Deposit { txn: TxnId },
    /// The holder refreshed it after the log's ABORT or INVALID.
    Release { txn: TxnId },
    /// The holder exchanged it, unspent, for new coins.
    Exchange,
}

/// A transition the state machine does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a coin that is {from:?} cannot take {event:?}")]
pub struct IllegalTransition {
    pub from: CoinStatus,
    pub event: CoinEvent,
}

impl CoinStatus {
    /// The state after `event`, or the transition's refusal.
    pub fn next(self, event: CoinEvent) -> Result<CoinStatus, IllegalTransition> {
        use CoinEvent as E;
        use CoinStatus as S;
        match (self, event) {
            (S::Unspent, E::Lock { txn }) => Ok(S::Locked { txn }),
            (S::Unspent, E::Exchange) => Ok(S::Exchanged),
            (S::Locked { txn }, E::Deposit { txn: t }) if t == txn => Ok(S::Deposited { txn }),
            (S::Locked { txn }, E::Release { txn: t }) if t == txn => Ok(S::Released { txn }),
            (from, event) => Err(IllegalTransition { from, event }),
        }
    }
    /// Whether the coin still counts as money outstanding (unspent or
    /// locked): the bank still owes its value to someone.
    pub fn outstanding(self) -> bool {
        matches!(self, CoinStatus::Unspent | CoinStatus::Locked { .. })
    }
}

/// The holder's signed request that first used a coin.
// Kept in records and refusals; boxing a variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoinAuthorization {
    Lock(LockRequest),
    Refresh(RefreshRequest),
}

/// What the bank's journal holds about a coin it has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoinRecord {
    pub status: CoinStatus,
    /// Signed by the coin key q: whoever holds q used the coin this way.
    pub authorization: CoinAuthorization,
    /// The bank's latest statement about the coin: a payment (locked), a
    /// deposit (deposited) or a refresh (released, exchanged).
    pub statement: BankStatement,
}

/// Why the bank says no. Nothing was debited, signed or recorded. Where an
/// earlier record decides, the refusal carries it as the proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankRefusal {
    /// The request id was used for another request.
    RequestIdReused {
        earlier: Box<BankStatement>,
    },
    /// The bank holds no account for this identity.
    NoAccount {
        account: IdentityId,
    },
    InsufficientFunds {
        needed: Amount,
        available: u64,
    },
    /// The brand is no longer issued.
    BrandNotIssued {
        brand: BrandId,
        until: Timestamp,
    },
    /// The brand can no longer be spent, or not for a deadline that late.
    BrandNotSpendable {
        brand: BrandId,
        until: Timestamp,
        deadline: Timestamp,
    },
    /// The brand's coins are worthless: past its deposit deadline.
    BrandWithdrawn {
        brand: BrandId,
        until: Timestamp,
    },
    /// The transaction deadline is not in the future.
    DeadlineNotAhead {
        deadline: Timestamp,
        now: Timestamp,
    },
    /// Double spending (or double deposit through refresh): the coin was
    /// used before; the record is the proof.
    AlreadySpent {
        coin: CoinId,
        record: Box<CoinRecord>,
    },
    /// This transaction id already has a payment, for another lock.
    TxnAlreadyLocked {
        payment: Box<BankStatement>,
    },
    /// The bank has no record of the payment presented.
    PaymentNotRecorded,
    /// Double deposit: the transaction was deposited before.
    AlreadyDeposited {
        receipt: Box<BankStatement>,
    },
    /// The coin is not locked to this transaction (for a deposit: it was
    /// released; for a refresh with a release: it was never locked).
    CoinNotLocked {
        coin: CoinId,
        status: CoinStatus,
    },
    /// The log's outcome is about other terms than the coin's payment.
    ReleaseForOtherTerms {
        coin: CoinId,
    },
}

impl BankRefusal {
    /// One line for the client.
    pub fn message(&self) -> String {
        match self {
            BankRefusal::RequestIdReused { earlier } => format!(
                "this request id was used at {} for another request; use a fresh one",
                earlier.body.at
            ),
            BankRefusal::NoAccount { account } => {
                format!("the bank holds no account for identity {}", account.0.to_hex())
            }
            BankRefusal::InsufficientFunds { needed, available } => format!(
                "insufficient funds: {needed} needed, {available} {} available",
                needed.currency
            ),
            BankRefusal::BrandNotIssued { brand, until } => {
                format!("brand {brand} was issued only until {until}")
            }
            BankRefusal::BrandNotSpendable {
                brand,
                until,
                deadline,
            } => format!(
                "brand {brand} can be spent only until {until} (the transaction's deadline is {deadline})"
            ),
            BankRefusal::BrandWithdrawn { brand, until } => format!(
                "brand {brand} was withdrawn at {until}: its coins are worthless"
            ),
            BankRefusal::DeadlineNotAhead { deadline, now } => format!(
                "the transaction's deadline {deadline} is not after the bank's clock ({now})"
            ),
            BankRefusal::AlreadySpent { coin, record } => format!(
                "coin {coin} was already spent ({:?}, bank statement at journal position {})",
                record.status, record.statement.body.journal
            ),
            BankRefusal::TxnAlreadyLocked { payment } => format!(
                "this transaction already has a payment (at {}), for other coins",
                payment.body.at
            ),
            BankRefusal::PaymentNotRecorded => {
                "the bank has no record of this payment".to_owned()
            }
            BankRefusal::AlreadyDeposited { receipt } => format!(
                "this transaction was deposited at {} (journal position {})",
                receipt.body.at, receipt.body.journal
            ),
            BankRefusal::CoinNotLocked { coin, status } => {
                format!("coin {coin} is not locked to this transaction (it is {status:?})")
            }
            BankRefusal::ReleaseForOtherTerms { coin } => format!(
                "the log's outcome is about other terms than the payment coin {coin} is locked to"
            ),
        }
    }
}

/// What the bank does with an authentic request: the recorded answer
/// again, a refusal, or a typed permission for the device and the journal.
// Lives for one request; boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum BankDecision<P> {
    Answer(BankStatement),
    Refuse(BankRefusal),
    Sign(P),
}
