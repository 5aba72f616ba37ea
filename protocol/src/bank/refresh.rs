//! Refresh: new coins for old ones, of the same total value, signed for by
//! every old coin's key. With the log's ABORT or INVALID for the
//! transaction the old coins are locked to, it frees them (they become
//! `Released`); without an outcome it makes change for unspent coins (they
//! become `Exchanged`), e.g. to get smaller brands or to roll coins of an
//! expiring brand over to a new one. A COMMIT frees nothing.

use serde::{Deserialize, Serialize};

use crate::affidavit::ChainPosition;
use crate::encoding::{domain, signing_digest};
use crate::tp_card::TpCard;
use crate::txlog::TxnOutcome;
use crate::{Digest32, ProtocolError, Signature, Timestamp};

use super::card::{Amount, BankCard, BankId, Brand};
use super::coin::{Coin, CoinId, OwnedCoin, VerifiedCoin};
use super::lock::{coins_value, verify_coins};
use super::state::{BankDecision, BankRefusal, CoinRecord, CoinStatus};
use super::statement::{
    request_hash, BankStatement, BankStatementBody, BankStatementKind, BlindSig,
};
use super::withdraw::{
    check_items, check_requested, check_signatures, not_issued, BlindedItem, Issuance,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshBody {
    pub bank: BankId,
    /// Random, chosen by the client: a replay gets the same answer.
    pub request_id: [u8; 32],
    pub coins: Vec<Coin>,
    /// The log's ABORT or INVALID for the transaction the coins are locked
    /// to; `None` for unspent coins.
    pub release: Option<TxnOutcome>,
    pub outputs: Vec<BlindedItem>,
    pub requested: Timestamp,
}

/// A refresh, signed with the key of each old coin (in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRequest {
    pub body: RefreshBody,
    pub signatures: Vec<Signature>,
}

impl RefreshRequest {
    pub fn new(
        bank: &BankCard,
        coins: &[OwnedCoin],
        release: Option<TxnOutcome>,
        outputs: Vec<BlindedItem>,
        request_id: [u8; 32],
        now: Timestamp,
    ) -> Self {
        let body = RefreshBody {
            bank: bank.id(),
            request_id,
            coins: coins.iter().map(|c| c.coin.clone()).collect(),
            release,
            outputs,
            requested: now,
        };
        let digest = signing_digest(domain::REFRESH, &body);
        let signatures = coins.iter().map(|c| c.secret.sign(&digest)).collect();
        RefreshRequest { body, signatures }
    }

    pub fn hash(&self) -> Digest32 {
        request_hash("refresh", &self.body)
    }

    /// For this bank; every old coin the bank's, distinct and signed for;
    /// a release must be the ABORT or INVALID of `log` (the log it names,
    /// as the bank knows it) about a transaction of this bank; the new
    /// coins are well formed and worth exactly what the old ones are.
    pub fn authenticate(
        &self,
        bank: &BankCard,
        log: Option<&TpCard>,
        now: Timestamp,
    ) -> Result<AuthenticRefresh, ProtocolError> {
        if self.body.bank != bank.id() {
            return Err(ProtocolError::mismatch("refresh", "it is for another bank"));
        }
        let coins = verify_coins(
            bank,
            &self.body.coins,
            &self.signatures,
            domain::REFRESH,
            &self.body,
            "refresh (a coin key's signature)",
        )?;
        if let Some(o) = &self.body.release {
            let log = log.filter(|l| l.id() == o.body.log).ok_or_else(|| {
                ProtocolError::mismatch(
                    "refresh",
                    "the outcome is from a log this bank does not know",
                )
            })?;
            let outcome = o.verify(log)?;
            if !outcome.releases_coins() {
                return Err(ProtocolError::Refused(format!(
                    "a {} frees no coins: the transaction was completed",
                    outcome.name()
                )));
            }
            if o.body.terms.bank != bank.id() {
                return Err(ProtocolError::mismatch(
                    "refresh",
                    "the outcome is about a payment of another bank",
                ));
            }
        }
        let (out_brands, out_value) = check_items(bank, &self.body.outputs)?;
        let in_value = coins_value(&coins, &out_value.currency)?;
        if in_value != out_value {
            return Err(ProtocolError::mismatch(
                "refresh",
                format!("the old coins are worth {in_value}, the new ones {out_value}"),
            ));
        }
        check_requested(self.body.requested, bank, now)?;
        Ok(AuthenticRefresh {
            hash: self.hash(),
            request: self.clone(),
            coins,
            out_brands,
            value: out_value,
        })
    }
}

/// A refresh whose coins, signatures, outcome and values checked.
#[derive(Debug, Clone)]
pub struct AuthenticRefresh {
    hash: Digest32,
    request: RefreshRequest,
    coins: Vec<VerifiedCoin>,
    out_brands: Vec<Brand>,
    value: Amount,
}

impl AuthenticRefresh {
    pub fn request_id(&self) -> [u8; 32] {
        self.request.body.request_id
    }
    pub fn coin_ids(&self) -> Vec<CoinId> {
        self.coins.iter().map(|c| c.id()).collect()
    }

    /// The bank's rules, in order: the same request again gets the recorded
    /// answer; a request id used for another request is refused; with a
    /// release, every coin must be locked to that transaction under exactly
    /// the outcome's terms; without one, every coin must be unspent; then
    /// every old coin's brand must not be withdrawn and every new coin's
    /// brand still issued.
    ///
    /// `recorded`: the statement for the request id, if any; `records[i]`:
    /// the bank's record of old coin `i`.
    pub fn decide(
        self,
        recorded: Option<&BankStatement>,
        records: &[Option<CoinRecord>],
        now: Timestamp,
    ) -> BankDecision<SignableRefresh> {
        assert_eq!(
            records.len(),
            self.coins.len(),
            "one record lookup per coin"
        );
        if let Some(st) = recorded {
            return match &st.body.kind {
                BankStatementKind::Refreshed { request, .. } if *request == self.hash => {
                    BankDecision::Answer(st.clone())
                }
                _ => BankDecision::Refuse(BankRefusal::RequestIdReused {
                    earlier: Box::new(st.clone()),
                }),
            };
        }
        let release = self.request.body.release.as_ref();
        for (c, r) in self.coins.iter().zip(records) {
            let coin = c.id();
            match (release, r) {
                (None, None) => {}
                (Some(_), None) => {
                    return BankDecision::Refuse(BankRefusal::CoinNotLocked {
                        coin,
                        status: CoinStatus::Unspent,
                    })
                }
                (Some(o), Some(r))
                    if r.status
                        == (CoinStatus::Locked {
                            txn: o.body.terms.txn,
                        }) =>
                {
                    if r.statement.payment_terms() != Some(&o.body.terms) {
                        return BankDecision::Refuse(BankRefusal::ReleaseForOtherTerms { coin });
                    }
                }
                (_, Some(r)) => {
                    return BankDecision::Refuse(BankRefusal::AlreadySpent {
                        coin,
                        record: Box::new(r.clone()),
                    })
                }
            }
        }
        for c in &self.coins {
            let b = c.brand();
            if now >= b.deposit_until {
                return BankDecision::Refuse(BankRefusal::BrandWithdrawn {
                    brand: b.id,
                    until: b.deposit_until,
                });
            }
        }
        if let Some(r) = not_issued(&self.out_brands, now) {
            return BankDecision::Refuse(r);
        }
        BankDecision::Sign(SignableRefresh {
            auth: self,
            at: now,
        })
    }
}

/// A refresh the rules allow: retire the old coins, blind-sign the new
/// ones in the token, record, answer. Made only by
/// [`AuthenticRefresh::decide`].
#[derive(Debug, Clone)]
pub struct SignableRefresh {
    auth: AuthenticRefresh,
    at: Timestamp,
}

impl SignableRefresh {
    pub fn request(&self) -> &RefreshRequest {
        &self.auth.request
    }
    /// The old coins, in order.
    pub fn coin_ids(&self) -> Vec<CoinId> {
        self.auth.coin_ids()
    }
    /// The transaction whose ABORT or INVALID frees the coins (`None`: an
    /// exchange of unspent coins).
    pub fn released_from(&self) -> Option<&TxnOutcome> {
        self.auth.request.body.release.as_ref()
    }
    pub fn value(&self) -> &Amount {
        &self.auth.value
    }
    /// The statement to sign once the token blind-signed every new coin.
    pub fn statement(
        &self,
        bank: BankId,
        signatures: Vec<BlindSig>,
        journal: ChainPosition,
    ) -> Result<BankStatementBody, ProtocolError> {
        check_signatures(self, &signatures)?;
        Ok(BankStatementBody {
            bank,
            at: self.at,
            journal,
            kind: BankStatementKind::Refreshed {
                request_id: self.auth.request.body.request_id,
                request: self.auth.hash,
                retired: self.coin_ids(),
                txn: self.released_from().map(|o| o.body.terms.txn),
                value: self.auth.value.clone(),
                signatures,
            },
        })
    }
}

impl Issuance for SignableRefresh {
    fn items(&self) -> &[BlindedItem] {
        &self.auth.request.body.outputs
    }
    fn brands(&self) -> &[Brand] {
        &self.auth.out_brands
    }
    fn at(&self) -> Timestamp {
        self.at
    }
}
