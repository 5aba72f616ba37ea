//! The bank's signed statements. Each names the bank, when it was made and
//! the journal record it is stored in ([`ChainPosition`], as the TP's
//! affidavits do): the bank's promise that its journal holds exactly this
//! change at that place. The bank signs with its P-256 statement key (in its
//! token) over `H_d(postcard(body))`, `d = vtp/v1/bank-statement`; the
//! kind of statement is part of the signed body.

use serde::{Deserialize, Serialize};

use crate::affidavit::ChainPosition;
use crate::encoding::{self, canonical, domain, signing_digest, tagged_hash, Kind};
use crate::{Digest32, IdentityId, ProtocolError, Signature, Timestamp, TpId};

use super::card::{Amount, BankCard, BankId};
use super::coin::CoinId;

/// A transaction's id, `T_id`: the hash of the merchant's z (the goods
/// envelope's sealed key), chosen by the merchant, unique per sale.
pub type TxnId = Digest32;

/// What a payment is for. The customer fixes these in its lock (signed by
/// every coin key), the bank repeats them in the payment, the log in its
/// outcome: a statement counts only together with statements that agree on
/// all of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnTerms {
    pub txn: TxnId,
    pub bank: BankId,
    /// The merchant, paid into the account of this identity.
    pub merchant: IdentityId,
    /// The transaction log (a TP) whose COMMIT or ABORT decides the sale.
    pub log: TpId,
    /// Commit strictly before this; ABORT at or after it.
    pub deadline: Timestamp,
    pub amount: Amount,
}

/// One blind signature, as bytes of the brand key's modulus length.
pub type BlindSig = Vec<u8>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankStatementKind {
    /// The bank debited `account` and blind-signed the request's blinded
    /// coins, in the request's order.
    Withdrawn {
        account: IdentityId,
        request_id: [u8; 32],
        /// [`request_hash`] of the withdraw request's body.
        request: Digest32,
        debited: Amount,
        signatures: Vec<BlindSig>,
    },
    /// authorization_b: the coins of a lock are locked to the transaction;
    /// the bank will pay `terms.amount` to the merchant on the log's COMMIT.
    Payment {
        terms: TxnTerms,
        /// [`request_hash`] of the lock's body (it lists the coins).
        lock: Digest32,
    },
    /// The merchant deposited the transaction: its coins are spent and the
    /// merchant's account was credited.
    Deposited {
        terms: TxnTerms,
        /// Hash of the payment statement deposited.
        payment: Digest32,
        /// [`request_hash`] of the deposit request's body.
        request: Digest32,
        credited: Amount,
    },
    /// The bank retired the request's coins (released from an aborted or
    /// invalid transaction `txn`, or unspent and exchanged when `txn` is
    /// `None`) and blind-signed new ones of the same total value.
    Refreshed {
        request_id: [u8; 32],
        request: Digest32,
        retired: Vec<CoinId>,
        txn: Option<TxnId>,
        value: Amount,
        signatures: Vec<BlindSig>,
    },
}

impl BankStatementKind {
    pub fn name(&self) -> &'static str {
        match self {
            BankStatementKind::Withdrawn { .. } => "withdrawn",
            BankStatementKind::Payment { .. } => "payment",
            BankStatementKind::Deposited { .. } => "deposited",
            BankStatementKind::Refreshed { .. } => "refreshed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankStatementBody {
    pub bank: BankId,
    pub at: Timestamp,
    pub journal: ChainPosition,
    pub kind: BankStatementKind,
}

impl BankStatementBody {
    /// The digest the bank's token signs.
    pub fn signing_digest(&self) -> Digest32 {
        signing_digest(domain::BANK_STATEMENT, self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankStatement {
    pub body: BankStatementBody,
    pub signature: Signature,
}

impl BankStatement {
    /// Check the bank's signature and that the statement names a journal
    /// record.
    pub fn verify(&self, bank: &BankCard) -> Result<(), ProtocolError> {
        if self.body.bank != bank.id() {
            return Err(ProtocolError::mismatch(
                "bank statement",
                "it is from another bank",
            ));
        }
        bank.verify(
            &self.body.signing_digest(),
            &self.signature,
            "bank statement",
        )?;
        if self.body.journal.seq == 0 {
            return Err(ProtocolError::mismatch(
                "bank statement",
                "it names no journal record (sequence number 0)",
            ));
        }
        Ok(())
    }
    /// The hash other statements name this one by.
    pub fn hash(&self) -> Digest32 {
        tagged_hash(domain::BANK_STATEMENT, &[&canonical(self)])
    }
    /// The terms, if this is a payment.
    pub fn payment_terms(&self) -> Option<&TxnTerms> {
        match &self.body.kind {
            BankStatementKind::Payment { terms, .. } => Some(terms),
            _ => None,
        }
    }
    /// Verify that this is a payment of `bank`; returns its terms.
    pub fn verify_payment(&self, bank: &BankCard) -> Result<&TxnTerms, ProtocolError> {
        self.verify(bank)?;
        self.payment_terms().ok_or_else(|| {
            ProtocolError::mismatch(
                "payment",
                format!("it is a {} statement", self.body.kind.name()),
            )
        })
    }
    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::BankStatement, self)
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(Kind::BankStatement, bytes)
    }
}

/// `H_d(postcard(body))` with `d = vtp/v1/bank-request || 0x00 || kind`:
/// how statements name the request they answer.
pub fn request_hash<T: Serialize>(kind: &str, body: &T) -> Digest32 {
    tagged_hash(
        domain::BANK_REQUEST_HASH,
        &[kind.as_bytes(), &[0], &canonical(body)],
    )
}
