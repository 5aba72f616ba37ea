//! The bank: anonymous coins whose signing keys live in the bank's token,
//! as sans-IO rules in the shape of [`crate::decide`].
//!
//! | module | what lives there |
//! |---|---|
//! | [`card`] | the bank card: statement key, brands (value, currency, deadlines, RSA key) |
//! | [`blind`] | RFC 9474 RSABSSA-SHA384-PSS-Randomized: blinding, finalizing, verifying; the device's checks around its raw RSA operation |
//! | [`coin`] | coin bodies (bank, brand, coin key Q), coins, coin keys, a coin being withdrawn |
//! | [`statement`] | the bank's signed statements (withdrawn, payment, deposited, refreshed) and a transaction's terms |
//! | [`state`] | coin states and their transitions, the bank's records, its refusals |
//! | [`withdraw`], [`lock`], [`deposit`], [`refresh`] | each request, its authentication and the bank's `decide` |
//! | [`book`] | a reference model of the bank's journal: lookups, applying statements, the money invariant |
//! | [`judge`] | what a merchant's or a customer's evidence proves, offline |
//!
//! Every request is staged as for the TP: `authenticate` (signatures and
//! bindings, no journal) → `Authentic…` → `decide(recorded, now)` →
//! `Answer` (the recorded statement), `Refuse` (with the earlier record as
//! proof where one decides) or a typed permission (`SignableWithdraw`,
//! `LockablePayment`, `DepositableTxn`, `SignableRefresh`) that is the only
//! thing the device signs for and the journal records. The transaction
//! log, whose COMMIT / ABORT / INVALID decides deposits and refreshes, is
//! [`crate::txlog`]. docs/commerce.md describes the construction.

pub mod blind;
pub mod book;
pub mod card;
pub mod coin;
pub mod deposit;
pub mod judge;
pub mod lock;
pub mod refresh;
pub mod state;
pub mod statement;
pub mod withdraw;

pub use blind::BrandKey;
pub use card::{Amount, BankCard, BankCardBody, BankId, Brand, BrandId, Currency};
pub use coin::{Coin, CoinBody, CoinId, CoinSecret, OwnedCoin, PendingCoin, VerifiedCoin};
pub use deposit::{AuthenticDeposit, DepositRequest, DepositableTxn, RecordedTxn};
pub use lock::{AuthenticLock, LockRequest, LockablePayment};
pub use refresh::{AuthenticRefresh, RefreshRequest, SignableRefresh};
pub use state::{BankDecision, BankRefusal, CoinAuthorization, CoinEvent, CoinRecord, CoinStatus};
pub use statement::{
    BankStatement, BankStatementBody, BankStatementKind, BlindSig, TxnId, TxnTerms,
};
pub use withdraw::{AuthenticWithdraw, BlindedItem, Issuance, SignableWithdraw, WithdrawRequest};
