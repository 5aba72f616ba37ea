//! Deposit: the merchant brings the bank's payment and the log's COMMIT for
//! the same terms; the bank marks the coins deposited and credits the
//! merchant. Nothing else makes the bank pay: no COMMIT, no deposit.

use serde::{Deserialize, Serialize};

use crate::affidavit::ChainPosition;
use crate::encoding::{domain, signing_digest};
use crate::identity::{IdentityCard, IdentitySecret};
use crate::tp_card::TpCard;
use crate::txlog::{Outcome, TxnOutcome};
use crate::{Digest32, IdentityId, ProtocolError, Signature, Timestamp};

use super::card::{Amount, BankCard, BankId};
use super::coin::CoinId;
use super::lock::LockRequest;
use super::state::{BankDecision, BankRefusal, CoinStatus};
use super::statement::{
    request_hash, BankStatement, BankStatementBody, BankStatementKind, TxnTerms,
};
use super::withdraw::check_requested;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositBody {
    pub payment: BankStatement,
    pub commit: TxnOutcome,
    pub requested: Timestamp,
}

/// A deposit, signed by the payment's merchant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositRequest {
    pub body: DepositBody,
    pub merchant_card: IdentityCard,
    pub signature: Signature,
}

impl DepositRequest {
    pub fn new(
        merchant: &IdentitySecret,
        payment: &BankStatement,
        commit: &TxnOutcome,
        now: Timestamp,
    ) -> Self {
        let body = DepositBody {
            payment: payment.clone(),
            commit: commit.clone(),
            requested: now,
        };
        let signature = merchant.sign(&signing_digest(domain::DEPOSIT, &body));
        DepositRequest {
            body,
            merchant_card: merchant.card().clone(),
            signature,
        }
    }

    pub fn hash(&self) -> Digest32 {
        request_hash("deposit", &self.body)
    }

    /// The payment is this bank's; the outcome is the COMMIT of the log the
    /// payment names (`log`: that log's card, as the bank knows it), about
    /// exactly the payment's terms; signed by the payment's merchant.
    pub fn authenticate(
        &self,
        bank: &BankCard,
        log: &TpCard,
        now: Timestamp,
    ) -> Result<AuthenticDeposit, ProtocolError> {
        let terms = self.body.payment.verify_payment(bank)?.clone();
        if terms.log != log.id() {
            return Err(ProtocolError::mismatch(
                "deposit",
                "the payment names another transaction log",
            ));
        }
        match self.body.commit.verify(log)? {
            Outcome::Commit { .. } => {}
            other => {
                return Err(ProtocolError::Refused(format!(
                    "a deposit needs the log's COMMIT; this outcome is {}",
                    other.name()
                )))
            }
        }
        if self.body.commit.body.terms != terms {
            return Err(ProtocolError::mismatch(
                "deposit",
                "the COMMIT is about other terms than the payment",
            ));
        }
        if self.merchant_card.id() != terms.merchant {
            return Err(ProtocolError::mismatch(
                "deposit",
                "it is not from the payment's merchant",
            ));
        }
        self.merchant_card.verify_statement(
            domain::DEPOSIT,
            &self.body,
            &self.signature,
            "deposit (merchant's signature)",
        )?;
        check_requested(self.body.requested, bank, now)?;
        Ok(AuthenticDeposit {
            hash: self.hash(),
            payment: self.body.payment.hash(),
            terms,
        })
    }
}

/// What the bank's journal holds about a locked transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedTxn {
    pub lock: LockRequest,
    pub payment: BankStatement,
    /// Every coin of the lock and its state now.
    pub coins: Vec<(CoinId, CoinStatus)>,
    pub deposit: Option<BankStatement>,
}

/// A deposit whose payment, COMMIT and signature checked.
#[derive(Debug, Clone)]
pub struct AuthenticDeposit {
    hash: Digest32,
    payment: Digest32,
    terms: TxnTerms,
}

impl AuthenticDeposit {
    pub fn terms(&self) -> &TxnTerms {
        &self.terms
    }

    /// The bank's rules, in order: it must have recorded exactly this
    /// payment; a transaction deposited before is answered (the same
    /// request) or refused with the earlier receipt (double deposit); every
    /// coin must still be locked to the transaction; and the deposit comes
    /// before every coin's brand is withdrawn.
    pub fn decide(
        self,
        bank: &BankCard,
        recorded: Option<&RecordedTxn>,
        now: Timestamp,
    ) -> BankDecision<DepositableTxn> {
        let Some(rec) = recorded else {
            return BankDecision::Refuse(BankRefusal::PaymentNotRecorded);
        };
        if rec.payment.hash() != self.payment {
            return BankDecision::Refuse(BankRefusal::PaymentNotRecorded);
        }
        if let Some(d) = &rec.deposit {
            return match &d.body.kind {
                BankStatementKind::Deposited { request, .. } if *request == self.hash => {
                    BankDecision::Answer(d.clone())
                }
                _ => BankDecision::Refuse(BankRefusal::AlreadyDeposited {
                    receipt: Box::new(d.clone()),
                }),
            };
        }
        let txn = self.terms.txn;
        for (coin, status) in &rec.coins {
            if *status != (CoinStatus::Locked { txn }) {
                return BankDecision::Refuse(BankRefusal::CoinNotLocked {
                    coin: *coin,
                    status: *status,
                });
            }
        }
        for c in &rec.lock.body.coins {
            if let Ok(b) = bank.brand(c.body.brand) {
                if now >= b.deposit_until {
                    return BankDecision::Refuse(BankRefusal::BrandWithdrawn {
                        brand: b.id,
                        until: b.deposit_until,
                    });
                }
            }
        }
        BankDecision::Sign(DepositableTxn {
            coins: rec.coins.iter().map(|(c, _)| *c).collect(),
            auth: self,
            at: now,
        })
    }
}

/// A deposit the rules allow: mark the coins deposited, credit the
/// merchant, sign the receipt. Made only by [`AuthenticDeposit::decide`].
#[derive(Debug, Clone)]
pub struct DepositableTxn {
    auth: AuthenticDeposit,
    coins: Vec<CoinId>,
    at: Timestamp,
}

impl DepositableTxn {
    pub fn terms(&self) -> &TxnTerms {
        &self.auth.terms
    }
    pub fn coin_ids(&self) -> &[CoinId] {
        &self.coins
    }
    /// Whom to credit, and how much.
    pub fn credit(&self) -> (IdentityId, &Amount) {
        (self.auth.terms.merchant, &self.auth.terms.amount)
    }
    /// The deposit receipt to sign at journal position `journal`.
    pub fn statement(&self, bank: BankId, journal: ChainPosition) -> BankStatementBody {
        BankStatementBody {
            bank,
            at: self.at,
            journal,
            kind: BankStatementKind::Deposited {
                terms: self.auth.terms.clone(),
                payment: self.auth.payment,
                request: self.auth.hash,
                credited: self.auth.terms.amount.clone(),
            },
        }
    }
}
