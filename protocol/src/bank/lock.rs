//! P2/P3: the customer locks coins to a transaction (authorization_q, signed
//! by every coin key) and the bank answers with a payment (authorization_b)
//! that the merchant can take to the log and, with the log's COMMIT, to the
//! bank. All the coins lock, or none.

use serde::{Deserialize, Serialize};

use crate::affidavit::ChainPosition;
use crate::encoding::{domain, signing_digest};
use crate::{Digest32, ProtocolError, Signature, Timestamp};

use super::card::{Amount, BankCard, BankId};
use super::coin::{Coin, CoinId, OwnedCoin, VerifiedCoin};
use super::state::{BankDecision, BankRefusal, CoinRecord};
use super::statement::{
    request_hash, BankStatement, BankStatementBody, BankStatementKind, TxnTerms,
};
use super::withdraw::{check_requested, MAX_ITEMS};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockBody {
    pub terms: TxnTerms,
    pub coins: Vec<Coin>,
    pub requested: Timestamp,
}

/// A lock, signed with the key of each coin (in the coins' order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    pub body: LockBody,
    pub signatures: Vec<Signature>,
}

impl LockRequest {
    pub fn new(coins: &[OwnedCoin], terms: TxnTerms, now: Timestamp) -> Self {
        let body = LockBody {
            terms,
            coins: coins.iter().map(|c| c.coin.clone()).collect(),
            requested: now,
        };
        let digest = signing_digest(domain::LOCK, &body);
        let signatures = coins.iter().map(|c| c.secret.sign(&digest)).collect();
        LockRequest { body, signatures }
    }

    pub fn hash(&self) -> Digest32 {
        request_hash("lock", &self.body)
    }

    /// For this bank; every coin the bank's, distinct, and signed for by
    /// its key; the coins add up to exactly the amount (make change first:
    /// an overpayment could never be had back); not dated in the future.
    pub fn authenticate(
        &self,
        bank: &BankCard,
        now: Timestamp,
    ) -> Result<AuthenticLock, ProtocolError> {
        let coins = verify_coins(
            bank,
            &self.body.coins,
            &self.signatures,
            domain::LOCK,
            &self.body,
            "lock (a coin key's signature)",
        )?;
        let terms = &self.body.terms;
        if terms.bank != bank.id() {
            return Err(ProtocolError::mismatch("lock", "it is for another bank"));
        }
        let value = coins_value(&coins, &terms.amount.currency)?;
        if value != terms.amount {
            return Err(ProtocolError::mismatch(
                "lock",
                format!(
                    "the coins are worth {value}, the payment is {} (make change first)",
                    terms.amount
                ),
            ));
        }
        check_requested(self.body.requested, bank, now)?;
        Ok(AuthenticLock {
            hash: self.hash(),
            lock: self.clone(),
            coins,
        })
    }
}

/// Verify coins of `bank` and their holders' signatures over `body`.
pub(crate) fn verify_coins<T: Serialize>(
    bank: &BankCard,
    coins: &[Coin],
    signatures: &[Signature],
    domain: &str,
    body: &T,
    what: &'static str,
) -> Result<Vec<VerifiedCoin>, ProtocolError> {
    if coins.is_empty() || coins.len() > MAX_ITEMS {
        return Err(ProtocolError::malformed(
            "coins",
            format!("{} coins (1 to {MAX_ITEMS})", coins.len()),
        ));
    }
    if signatures.len() != coins.len() {
        return Err(ProtocolError::malformed(
            "coins",
            format!("{} signatures for {} coins", signatures.len(), coins.len()),
        ));
    }
    let mut out: Vec<VerifiedCoin> = Vec::with_capacity(coins.len());
    for (c, s) in coins.iter().zip(signatures) {
        let v = c.verify(bank)?;
        if out.iter().any(|o| o.id() == v.id()) {
            return Err(ProtocolError::mismatch(
                "coins",
                format!("coin {} is listed twice", v.id()),
            ));
        }
        c.verify_holder(domain, body, s, what)?;
        out.push(v);
    }
    Ok(out)
}

pub(crate) fn coins_value(
    coins: &[VerifiedCoin],
    currency: &super::card::Currency,
) -> Result<Amount, ProtocolError> {
    Amount::sum(currency, coins.iter().map(|c| &c.brand().value))
        .ok_or_else(|| ProtocolError::mismatch("coins", format!("not all coins are in {currency}")))
}

/// A lock whose coins and signatures checked.
#[derive(Debug, Clone)]
pub struct AuthenticLock {
    hash: Digest32,
    lock: LockRequest,
    coins: Vec<VerifiedCoin>,
}

impl AuthenticLock {
    pub fn terms(&self) -> &TxnTerms {
        &self.lock.body.terms
    }
    /// The coins, in order: what the bank's records are looked up by.
    pub fn coin_ids(&self) -> Vec<CoinId> {
        self.coins.iter().map(|c| c.id()).collect()
    }

    /// The bank's rules, in order: the same lock again gets the recorded
    /// payment; a coin with any record is spent (refused with the record as
    /// proof); a transaction id with another lock's payment is refused;
    /// then the deadline must be ahead, and no later than the brand's
    /// `spend_until` (checked before it) for every coin.
    ///
    /// `records[i]` is the bank's record of coin `i` (`None`: unspent);
    /// `payment` the payment recorded for the transaction id, if any.
    pub fn decide(
        self,
        records: &[Option<CoinRecord>],
        payment: Option<&BankStatement>,
        now: Timestamp,
    ) -> BankDecision<LockablePayment> {
        assert_eq!(
            records.len(),
            self.coins.len(),
            "one record lookup per coin"
        );
        if let Some(p) = payment {
            if matches!(&p.body.kind, BankStatementKind::Payment { lock, .. } if *lock == self.hash)
            {
                return BankDecision::Answer(p.clone());
            }
        }
        for (c, r) in self.coins.iter().zip(records) {
            if let Some(r) = r {
                return BankDecision::Refuse(BankRefusal::AlreadySpent {
                    coin: c.id(),
                    record: Box::new(r.clone()),
                });
            }
        }
        if let Some(p) = payment {
            return BankDecision::Refuse(BankRefusal::TxnAlreadyLocked {
                payment: Box::new(p.clone()),
            });
        }
        let deadline = self.terms().deadline;
        if deadline <= now {
            return BankDecision::Refuse(BankRefusal::DeadlineNotAhead { deadline, now });
        }
        for c in &self.coins {
            let b = c.brand();
            if now >= b.spend_until || deadline > b.spend_until {
                return BankDecision::Refuse(BankRefusal::BrandNotSpendable {
                    brand: b.id,
                    until: b.spend_until,
                    deadline,
                });
            }
        }
        BankDecision::Sign(LockablePayment {
            auth: self,
            at: now,
        })
    }
}

/// A lock the rules allow: record every coin as locked, sign the payment,
/// answer. Made only by [`AuthenticLock::decide`].
#[derive(Debug, Clone)]
pub struct LockablePayment {
    auth: AuthenticLock,
    at: Timestamp,
}

impl LockablePayment {
    pub fn lock(&self) -> &LockRequest {
        &self.auth.lock
    }
    pub fn terms(&self) -> &TxnTerms {
        self.auth.terms()
    }
    pub fn coin_ids(&self) -> Vec<CoinId> {
        self.auth.coin_ids()
    }
    /// The payment to sign at journal position `journal`.
    pub fn statement(&self, bank: BankId, journal: ChainPosition) -> BankStatementBody {
        BankStatementBody {
            bank,
            at: self.at,
            journal,
            kind: BankStatementKind::Payment {
                terms: self.terms().clone(),
                lock: self.auth.hash,
            },
        }
    }
}
