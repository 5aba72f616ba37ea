//! A reference model of the bank's journal: the lookups each rule needs,
//! applying the signed statements, and the money invariant.
//!
//! The daemon's journal (SQLite, hash-chained, committed before every
//! answer) is the real store; this model holds the same records in memory
//! so that the rules can be exercised end to end without I/O (the tests,
//! a model checker) and so that the invariant has one definition:
//!
//! **Per currency, Σ account balances + Σ value of outstanding coins =
//! Σ operator credits.** Outstanding coins are those issued (withdrawn or
//! refreshed) and not yet retired (deposited, released or exchanged); the
//! bank cannot see which blinded coin is which, so it counts value: the
//! face value of every coin it signed, minus the face value of every coin
//! it retired. Money enters only by an operator's credit.

use std::collections::{BTreeMap, HashMap};

use crate::affidavit::ChainPosition;
use crate::{IdentityId, ProtocolError};

use super::card::{Amount, BankCard, Currency};
use super::coin::CoinId;
use super::deposit::{DepositableTxn, RecordedTxn};
use super::lock::LockablePayment;
use super::refresh::SignableRefresh;
use super::state::{CoinAuthorization, CoinEvent, CoinRecord, CoinStatus};
use super::statement::{BankStatement, BankStatementKind, TxnId};
use super::withdraw::{AuthenticWithdraw, Issuance, SignableWithdraw};

/// The bank's records, in memory.
#[derive(Debug, Clone)]
pub struct BankBook {
    card: BankCard,
    balances: BTreeMap<(IdentityId, Currency), u64>,
    credits: BTreeMap<Currency, u64>,
    withdrawals: HashMap<(IdentityId, [u8; 32]), BankStatement>,
    refreshes: HashMap<[u8; 32], BankStatement>,
    coins: HashMap<CoinId, CoinRecord>,
    txns: HashMap<TxnId, RecordedTxn>,
    /// Face value of the coins each issuing statement signed.
    issued: Vec<(Amount, BankStatement)>,
    /// The journal: every statement, in order.
    journal: Vec<BankStatement>,
    /// The salt of the next statement's link to the one before it.
    next_salt: [u8; 32],
}

/// A way the records break the money rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantViolation {
    #[error("in {currency}: balances {balances} + outstanding coins {outstanding} != operator credits {credits}")]
    NotConserved {
        currency: Currency,
        balances: i128,
        outstanding: i128,
        credits: i128,
    },
    #[error("account {account:?} holds {held} {currency}, its records say {replayed}")]
    BalanceMismatch {
        account: IdentityId,
        currency: Currency,
        held: u64,
        replayed: i128,
    },
    #[error("a statement debited or valued {stated}, for coins worth {face}")]
    FaceValueMismatch { stated: Amount, face: Amount },
    #[error("transaction {txn:?}: {problem}")]
    Transaction { txn: TxnId, problem: String },
}

/// What the invariant checker found, per currency.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MoneySummary {
    pub balances: BTreeMap<Currency, u64>,
    pub outstanding: BTreeMap<Currency, u64>,
    pub credits: BTreeMap<Currency, u64>,
}

/// How a bank statement names the record before it: `H_d(H(previous) ||
/// salt)`, `d = vtp/v1/bank-chain-link`, with a fresh salt per record that
/// the journal keeps (and shows an auditor). A plain hash of the previous
/// record would put a hash of whatever came before, e.g. a customer's
/// withdrawal, into the next customer's payment: the journal order would
/// become linkable by anyone who holds both statements. Salted, the link
/// still fixes the history for an auditor and says nothing to anyone else.
pub fn chain_link(previous: Option<&BankStatement>, salt: &[u8; 32]) -> crate::Digest32 {
    let prev = previous
        .map(|s| s.hash())
        .unwrap_or(ChainPosition::GENESIS_PREV);
    crate::encoding::tagged_hash(crate::encoding::domain::BANK_CHAIN_LINK, &[&prev.0, salt])
}

fn add(m: &mut BTreeMap<Currency, i128>, a: &Amount, sign: i128) {
    *m.entry(a.currency.clone()).or_default() += sign * a.units as i128;
}

impl BankBook {
    pub fn new(card: BankCard) -> Self {
        BankBook {
            card,
            balances: BTreeMap::new(),
            credits: BTreeMap::new(),
            withdrawals: HashMap::new(),
            refreshes: HashMap::new(),
            coins: HashMap::new(),
            txns: HashMap::new(),
            issued: Vec::new(),
            journal: Vec::new(),
            next_salt: [0; 32],
        }
    }
    pub fn card(&self) -> &BankCard {
        &self.card
    }
    /// Every statement, in journal order.
    pub fn journal(&self) -> &[BankStatement] {
        &self.journal
    }

    /// The journal position the next statement is signed at, linked to
    /// the record before it through `salt` (fresh random bytes from the
    /// caller, kept with the record; see [`chain_link`]).
    pub fn next_position(&mut self, salt: [u8; 32]) -> ChainPosition {
        self.next_salt = salt;
        self.expected_position()
    }

    fn expected_position(&self) -> ChainPosition {
        ChainPosition {
            seq: self.journal.len() as u64 + 1,
            prev: chain_link(self.journal.last(), &self.next_salt),
        }
    }

    /// An operator credits an account (opening it if needed): the only way
    /// money enters.
    pub fn operator_credit(&mut self, account: IdentityId, amount: &Amount) {
        *self
            .balances
            .entry((account, amount.currency.clone()))
            .or_default() += amount.units;
        *self.credits.entry(amount.currency.clone()).or_default() += amount.units;
    }
    /// An account's balance in `currency` (`None`: no such account).
    pub fn balance(&self, account: IdentityId, currency: &Currency) -> Option<u64> {
        self.balances.get(&(account, currency.clone())).copied()
    }

    // ---- lookups, by key only ----

    pub fn withdrawal(&self, w: &AuthenticWithdraw) -> Option<&BankStatement> {
        self.withdrawals.get(&(w.account(), w.request_id()))
    }
    pub fn coin_records(&self, ids: &[CoinId]) -> Vec<Option<CoinRecord>> {
        ids.iter().map(|id| self.coins.get(id).cloned()).collect()
    }
    pub fn coin_status(&self, id: &CoinId) -> CoinStatus {
        self.coins
            .get(id)
            .map(|r| r.status)
            .unwrap_or(CoinStatus::Unspent)
    }
    pub fn payment(&self, txn: &TxnId) -> Option<&BankStatement> {
        self.txns.get(txn).map(|t| &t.payment)
    }
    pub fn txn(&self, txn: &TxnId) -> Option<&RecordedTxn> {
        self.txns.get(txn)
    }
    pub fn refresh(&self, request_id: &[u8; 32]) -> Option<&BankStatement> {
        self.refreshes.get(request_id)
    }

    // ---- applying what the device signed ----

    fn append(&mut self, st: &BankStatement) -> Result<(), ProtocolError> {
        st.verify(&self.card)?;
        if st.body.journal != self.expected_position() {
            return Err(ProtocolError::mismatch(
                "bank statement",
                format!(
                    "signed at {}, the journal is at {}",
                    st.body.journal,
                    self.expected_position()
                ),
            ));
        }
        self.journal.push(st.clone());
        Ok(())
    }

    fn face(&self, issue: &impl Issuance) -> Amount {
        let b = issue.brands();
        Amount::sum(&b[0].value.currency, b.iter().map(|b| &b.value))
            .expect("checked when the request was authenticated")
    }

    fn transition(&mut self, id: CoinId, event: CoinEvent) -> Result<CoinStatus, ProtocolError> {
        self.coin_status(&id)
            .next(event)
            .map_err(|e| ProtocolError::Refused(e.to_string()))
    }

    pub fn apply_withdraw(
        &mut self,
        w: &SignableWithdraw,
        st: &BankStatement,
    ) -> Result<(), ProtocolError> {
        let BankStatementKind::Withdrawn { debited, .. } = &st.body.kind else {
            return Err(ProtocolError::mismatch(
                "withdrawal",
                "not a withdrawn statement",
            ));
        };
        let key = (w.account(), debited.currency.clone());
        let bal = self.balances.get(&key).copied().unwrap_or(0);
        let left = bal
            .checked_sub(debited.units)
            .ok_or_else(|| ProtocolError::Refused("the debit exceeds the balance".into()))?;
        self.append(st)?;
        self.balances.insert(key, left);
        self.withdrawals
            .insert((w.account(), w.request_id()), st.clone());
        self.issued.push((self.face(w), st.clone()));
        Ok(())
    }

    pub fn apply_lock(
        &mut self,
        p: &LockablePayment,
        st: &BankStatement,
    ) -> Result<(), ProtocolError> {
        let txn = p.terms().txn;
        let mut next = Vec::new();
        for id in p.coin_ids() {
            next.push((id, self.transition(id, CoinEvent::Lock { txn })?));
        }
        self.append(st)?;
        for (id, status) in &next {
            self.coins.insert(
                *id,
                CoinRecord {
                    status: *status,
                    authorization: CoinAuthorization::Lock(p.lock().clone()),
                    statement: st.clone(),
                },
            );
        }
        self.txns.insert(
            txn,
            RecordedTxn {
                lock: p.lock().clone(),
                payment: st.clone(),
                coins: next,
                deposit: None,
            },
        );
        Ok(())
    }

    pub fn apply_deposit(
        &mut self,
        d: &DepositableTxn,
        st: &BankStatement,
    ) -> Result<(), ProtocolError> {
        let txn = d.terms().txn;
        let mut next = Vec::new();
        for id in d.coin_ids() {
            next.push((*id, self.transition(*id, CoinEvent::Deposit { txn })?));
        }
        self.append(st)?;
        let (merchant, amount) = d.credit();
        *self
            .balances
            .entry((merchant, amount.currency.clone()))
            .or_default() += amount.units;
        for (id, status) in &next {
            let r = self.coins.get_mut(id).expect("a locked coin has a record");
            r.status = *status;
            r.statement = st.clone();
        }
        let t = self
            .txns
            .get_mut(&txn)
            .expect("a deposited transaction was locked");
        t.coins = next;
        t.deposit = Some(st.clone());
        Ok(())
    }

    pub fn apply_refresh(
        &mut self,
        r: &SignableRefresh,
        st: &BankStatement,
    ) -> Result<(), ProtocolError> {
        let txn = r.released_from().map(|o| o.body.terms.txn);
        let event = match txn {
            Some(txn) => CoinEvent::Release { txn },
            None => CoinEvent::Exchange,
        };
        let mut next = Vec::new();
        for id in r.coin_ids() {
            next.push((id, self.transition(id, event)?));
        }
        self.append(st)?;
        for (id, status) in &next {
            match self.coins.get_mut(id) {
                Some(rec) => {
                    rec.status = *status;
                    rec.statement = st.clone();
                }
                None => {
                    self.coins.insert(
                        *id,
                        CoinRecord {
                            status: *status,
                            authorization: CoinAuthorization::Refresh(r.request().clone()),
                            statement: st.clone(),
                        },
                    );
                }
            }
        }
        if let Some(txn) = txn {
            if let Some(t) = self.txns.get_mut(&txn) {
                for (id, status) in &next {
                    if let Some(c) = t.coins.iter_mut().find(|(c, _)| c == id) {
                        c.1 = *status;
                    }
                }
            }
        }
        self.refreshes
            .insert(r.request().body.request_id, st.clone());
        self.issued.push((self.face(r), st.clone()));
        Ok(())
    }

    /// Check the money rules over everything recorded (see the module
    /// docs): balances agree with the statements that moved them; every
    /// debit and refresh is worth what its coins are worth; every deposit
    /// credits what its coins are worth; and per currency, balances plus
    /// outstanding coins equal the operator's credits.
    pub fn check_invariant(&self) -> Result<MoneySummary, InvariantViolation> {
        let coin_value = |id: &CoinId| -> Option<Amount> {
            let rec = self.coins.get(id)?;
            let coins = match &rec.authorization {
                CoinAuthorization::Lock(l) => &l.body.coins,
                CoinAuthorization::Refresh(r) => &r.body.coins,
            };
            let c = coins.iter().find(|c| &c.id() == id)?;
            self.card.brand(c.body.brand).ok().map(|b| b.value.clone())
        };
        // Balances, replayed from the operator's credits and the statements.
        let mut replayed: BTreeMap<(IdentityId, Currency), i128> = BTreeMap::new();
        for ((acct, cur), _) in self.balances.iter() {
            replayed.insert((*acct, cur.clone()), 0);
        }
        let mut outstanding: BTreeMap<Currency, i128> = BTreeMap::new();
        for (face, st) in &self.issued {
            add(&mut outstanding, face, 1);
            match &st.body.kind {
                BankStatementKind::Withdrawn {
                    account, debited, ..
                } => {
                    if debited != face {
                        return Err(InvariantViolation::FaceValueMismatch {
                            stated: debited.clone(),
                            face: face.clone(),
                        });
                    }
                    *replayed
                        .entry((*account, debited.currency.clone()))
                        .or_default() -= debited.units as i128;
                }
                BankStatementKind::Refreshed { value, retired, .. } => {
                    if value != face {
                        return Err(InvariantViolation::FaceValueMismatch {
                            stated: value.clone(),
                            face: face.clone(),
                        });
                    }
                    let mut old = Amount::new(&value.currency, 0);
                    for id in retired {
                        let v = coin_value(id).unwrap_or_else(|| Amount::new(&value.currency, 0));
                        add(&mut outstanding, &v, -1);
                        old.units += v.units;
                    }
                    if &old != value {
                        return Err(InvariantViolation::FaceValueMismatch {
                            stated: value.clone(),
                            face: old,
                        });
                    }
                }
                _ => unreachable!("only withdrawals and refreshes issue coins"),
            }
        }
        for (txn, t) in &self.txns {
            let Some(d) = &t.deposit else { continue };
            let BankStatementKind::Deposited {
                terms, credited, ..
            } = &d.body.kind
            else {
                return Err(InvariantViolation::Transaction {
                    txn: *txn,
                    problem: "its deposit record is not a deposit statement".into(),
                });
            };
            let mut worth = Amount::new(&credited.currency, 0);
            for (id, status) in &t.coins {
                if *status != (CoinStatus::Deposited { txn: *txn }) {
                    return Err(InvariantViolation::Transaction {
                        txn: *txn,
                        problem: format!("deposited, but coin {id} is {status:?}"),
                    });
                }
                let v = coin_value(id).unwrap_or_else(|| Amount::new(&credited.currency, 0));
                add(&mut outstanding, &v, -1);
                worth.units += v.units;
            }
            if &worth != credited {
                return Err(InvariantViolation::Transaction {
                    txn: *txn,
                    problem: format!("credited {credited} for coins worth {worth}"),
                });
            }
            *replayed
                .entry((terms.merchant, credited.currency.clone()))
                .or_default() += credited.units as i128;
        }
        // Credits are per currency, not per account: add them back per
        // account from what the balance map must then be.
        let mut credited_per_currency: BTreeMap<Currency, i128> = BTreeMap::new();
        for ((acct, cur), r) in &replayed {
            let held = self
                .balances
                .get(&(*acct, cur.clone()))
                .copied()
                .unwrap_or(0);
            let credit = held as i128 - r;
            if credit < 0 {
                return Err(InvariantViolation::BalanceMismatch {
                    account: *acct,
                    currency: cur.clone(),
                    held,
                    replayed: *r,
                });
            }
            *credited_per_currency.entry(cur.clone()).or_default() += credit;
        }
        let mut summary = MoneySummary::default();
        let currencies: std::collections::BTreeSet<Currency> = self
            .credits
            .keys()
            .chain(outstanding.keys())
            .cloned()
            .collect();
        for cur in currencies {
            let balances: i128 = self
                .balances
                .iter()
                .filter(|((_, c), _)| *c == cur)
                .map(|(_, v)| *v as i128)
                .sum();
            let out = outstanding.get(&cur).copied().unwrap_or(0);
            let credits = self.credits.get(&cur).copied().unwrap_or(0) as i128;
            let implied = credited_per_currency.get(&cur).copied().unwrap_or(0);
            if balances + out != credits || implied != credits || out < 0 {
                return Err(InvariantViolation::NotConserved {
                    currency: cur,
                    balances,
                    outstanding: out,
                    credits,
                });
            }
            summary.balances.insert(cur.clone(), balances as u64);
            summary.outstanding.insert(cur.clone(), out as u64);
            summary.credits.insert(cur, credits as u64);
        }
        Ok(summary)
    }
}
