//! What a merchant's or a customer's evidence proves, offline, from the
//! bank's card and the log's (TP) card alone (Camp, Harkavy, Tygar and
//! Yee's cascaded accountability: each party holds the signed messages it
//! needs to hold the previous one to account).
//!
//! - The **merchant** holds the bank's payment and the log's COMMIT for
//!   the same terms: the bank owes it the amount, unless the bank shows its
//!   own deposit receipt for that payment.
//! - The **customer** holds its lock (signed by its coin keys), the bank's
//!   payment for it and the log's outcome: after a COMMIT it paid and the
//!   merchant released the goods to the log; after an ABORT or INVALID the
//!   bank owes it the coins' value in new coins, unless the bank shows its
//!   refresh statement retiring exactly those coins.
//! - Two different requests signed by one coin key prove a double spend;
//!   two different outcomes for one transaction id prove the log broke
//!   its one rule.

use crate::tp_card::TpCard;
use crate::txlog::{Outcome, TxnOutcome};
use crate::{Digest32, IdentityId, ProtocolError, Timestamp};

use super::card::{Amount, BankCard};
use super::coin::CoinId;
use super::lock::{verify_coins, LockRequest};
use super::state::CoinAuthorization;
use super::statement::{BankStatement, BankStatementKind, TxnId, TxnTerms};
use crate::encoding::domain;

/// What the merchant's evidence proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MerchantClaim {
    /// The bank owes `amount` to `merchant` for `txn`.
    Owed {
        merchant: IdentityId,
        amount: Amount,
        txn: TxnId,
    },
    /// The bank paid: its deposit receipt for this payment.
    Settled { at: Timestamp },
}

/// Check a merchant's payment + COMMIT (and the bank's deposit receipt, if
/// the bank shows one).
pub fn merchant_claim(
    bank: &BankCard,
    log: &TpCard,
    payment: &BankStatement,
    commit: &TxnOutcome,
    deposit: Option<&BankStatement>,
) -> Result<MerchantClaim, ProtocolError> {
    let terms = payment.verify_payment(bank)?;
    match commit.verify(log)? {
        Outcome::Commit { .. } => {}
        other => {
            return Err(ProtocolError::Refused(format!(
                "the log's outcome is {}: the merchant is owed nothing",
                other.name()
            )))
        }
    }
    if &commit.body.terms != terms {
        return Err(ProtocolError::mismatch(
            "evidence",
            "the COMMIT is about other terms than the payment",
        ));
    }
    if let Some(d) = deposit {
        d.verify(bank)?;
        if let BankStatementKind::Deposited { payment: p, .. } = &d.body.kind {
            if *p == payment.hash() {
                return Ok(MerchantClaim::Settled { at: d.body.at });
            }
        }
        return Err(ProtocolError::mismatch(
            "deposit receipt",
            "it is not the receipt of this payment",
        ));
    }
    Ok(MerchantClaim::Owed {
        merchant: terms.merchant,
        amount: terms.amount.clone(),
        txn: terms.txn,
    })
}

/// What the customer's evidence proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerClaim {
    /// COMMIT: the customer paid, and the merchant released `release` (the
    /// goods key or opening) to the log.
    Paid { release: Digest32, terms: TxnTerms },
    /// ABORT or INVALID: the bank owes the customer new coins worth
    /// `amount` for `coins`.
    RefundDue { coins: Vec<CoinId>, amount: Amount },
    /// The bank refreshed exactly these coins for this transaction.
    Refunded { at: Timestamp },
}

/// Check a customer's lock + payment + outcome (and the bank's refresh
/// statement, if the bank shows one).
pub fn customer_claim(
    bank: &BankCard,
    log: &TpCard,
    lock: &LockRequest,
    payment: &BankStatement,
    outcome: &TxnOutcome,
    refresh: Option<&BankStatement>,
) -> Result<CustomerClaim, ProtocolError> {
    let terms = payment.verify_payment(bank)?;
    match &payment.body.kind {
        BankStatementKind::Payment { lock: l, .. } if *l == lock.hash() => {}
        _ => {
            return Err(ProtocolError::mismatch(
                "payment",
                "it is not the bank's answer to this lock",
            ))
        }
    }
    let coins = verify_coins(
        bank,
        &lock.body.coins,
        &lock.signatures,
        domain::LOCK,
        &lock.body,
        "lock (a coin key's signature)",
    )?;
    let o = outcome.verify(log)?;
    if &outcome.body.terms != terms || &lock.body.terms != terms {
        return Err(ProtocolError::mismatch(
            "evidence",
            "the lock, the payment and the outcome are not about the same terms",
        ));
    }
    if let Outcome::Commit { release } = o {
        return Ok(CustomerClaim::Paid {
            release: *release,
            terms: terms.clone(),
        });
    }
    let ids: Vec<CoinId> = coins.iter().map(|c| c.id()).collect();
    if let Some(r) = refresh {
        r.verify(bank)?;
        if let BankStatementKind::Refreshed { retired, txn, .. } = &r.body.kind {
            if *txn == Some(terms.txn) && ids.iter().all(|c| retired.contains(c)) {
                return Ok(CustomerClaim::Refunded { at: r.body.at });
            }
        }
        return Err(ProtocolError::mismatch(
            "refresh statement",
            "it does not retire these coins for this transaction",
        ));
    }
    Ok(CustomerClaim::RefundDue {
        coins: ids,
        amount: terms.amount.clone(),
    })
}

/// Two different requests signed by the key of one coin: the coin's holder
/// spent it twice. Returns the coin.
pub fn double_spend(
    bank: &BankCard,
    a: &CoinAuthorization,
    b: &CoinAuthorization,
) -> Result<CoinId, ProtocolError> {
    if a == b {
        return Err(ProtocolError::mismatch(
            "double spend",
            "it is one request twice",
        ));
    }
    let ids = |x: &CoinAuthorization| -> Result<Vec<CoinId>, ProtocolError> {
        let coins = match x {
            CoinAuthorization::Lock(l) => verify_coins(
                bank,
                &l.body.coins,
                &l.signatures,
                domain::LOCK,
                &l.body,
                "lock (a coin key's signature)",
            )?,
            CoinAuthorization::Refresh(r) => verify_coins(
                bank,
                &r.body.coins,
                &r.signatures,
                domain::REFRESH,
                &r.body,
                "refresh (a coin key's signature)",
            )?,
        };
        Ok(coins.iter().map(|c| c.id()).collect())
    };
    let (ia, ib) = (ids(a)?, ids(b)?);
    ia.into_iter()
        .find(|c| ib.contains(c))
        .ok_or_else(|| ProtocolError::mismatch("double spend", "the two requests share no coin"))
}

/// Two different outcomes for one transaction id, both signed by the log.
pub fn log_contradiction(
    log: &TpCard,
    a: &TxnOutcome,
    b: &TxnOutcome,
) -> Result<TxnId, ProtocolError> {
    a.verify(log)?;
    b.verify(log)?;
    if a.body.terms.txn != b.body.terms.txn {
        return Err(ProtocolError::mismatch(
            "contradiction",
            "the outcomes are about different transactions",
        ));
    }
    if a.body == b.body {
        return Err(ProtocolError::mismatch(
            "contradiction",
            "it is one outcome twice",
        ));
    }
    Ok(a.body.terms.txn)
}
