//! W1/W2: an account holder withdraws coins. The request is signed with the
//! holder's real identity (the bank must know whom to debit); the coins in
//! it are blinded, so the bank cannot recognize them when they are spent.

use serde::{Deserialize, Serialize};

use crate::affidavit::ChainPosition;
use crate::encoding::{domain, signing_digest};
use crate::identity::{IdentityCard, IdentitySecret};
use crate::{Digest32, IdentityId, ProtocolError, Signature, Timestamp};

use super::card::{Amount, BankCard, BankId, Brand, BrandId};
use super::state::{BankDecision, BankRefusal};
use super::statement::{
    request_hash, BankStatement, BankStatementBody, BankStatementKind, BlindSig,
};

/// Most coins one withdraw or refresh request asks for.
pub const MAX_ITEMS: usize = 64;

/// One blinded coin: the brand it is for and the blinded message (as many
/// bytes as the brand key's modulus).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlindedItem {
    pub brand: BrandId,
    pub blinded: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawBody {
    pub bank: BankId,
    pub account: IdentityId,
    /// Chosen by the client, random: a replay of the same request gets the
    /// same answer and debits once.
    pub request_id: [u8; 32],
    pub items: Vec<BlindedItem>,
    pub requested: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawRequest {
    pub body: WithdrawBody,
    pub holder_card: IdentityCard,
    pub signature: Signature,
}

impl WithdrawRequest {
    pub fn new(
        me: &IdentitySecret,
        bank: &BankCard,
        request_id: [u8; 32],
        items: Vec<BlindedItem>,
        now: Timestamp,
    ) -> Self {
        let body = WithdrawBody {
            bank: bank.id(),
            account: me.id(),
            request_id,
            items,
            requested: now,
        };
        let signature = me.sign(&signing_digest(domain::WITHDRAW, &body));
        WithdrawRequest {
            body,
            holder_card: me.card().clone(),
            signature,
        }
    }

    pub fn hash(&self) -> Digest32 {
        request_hash("withdraw", &self.body)
    }

    /// The checks that need neither the journal nor the token: for this
    /// bank, signed by the account's holder, not dated in the future, for
    /// brands the card lists, every blinded message well formed, one
    /// currency.
    pub fn authenticate(
        &self,
        bank: &BankCard,
        now: Timestamp,
    ) -> Result<AuthenticWithdraw, ProtocolError> {
        if self.body.bank != bank.id() {
            return Err(ProtocolError::mismatch(
                "withdraw request",
                "it is for another bank",
            ));
        }
        if self.holder_card.id() != self.body.account {
            return Err(ProtocolError::mismatch(
                "withdraw request",
                "the card is not the account holder's",
            ));
        }
        self.holder_card.verify_statement(
            domain::WITHDRAW,
            &self.body,
            &self.signature,
            "withdraw request (account holder's signature)",
        )?;
        check_requested(self.body.requested, bank, now)?;
        let (brands, total) = check_items(bank, &self.body.items)?;
        Ok(AuthenticWithdraw {
            hash: self.hash(),
            account: self.body.account,
            request_id: self.body.request_id,
            items: self.body.items.clone(),
            brands,
            total,
        })
    }
}

pub(crate) fn check_requested(
    requested: Timestamp,
    bank: &BankCard,
    now: Timestamp,
) -> Result<(), ProtocolError> {
    if requested > now.saturating_add(bank.clock_skew_secs()) {
        return Err(ProtocolError::Deadline(
            "the request is dated in the future: check your clock".into(),
        ));
    }
    Ok(())
}

/// 1 to [`MAX_ITEMS`] blinded coins of brands the card lists, each well
/// formed for its key, all in one currency; returns the brands and the
/// total value.
pub(crate) fn check_items(
    bank: &BankCard,
    items: &[BlindedItem],
) -> Result<(Vec<Brand>, Amount), ProtocolError> {
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(ProtocolError::malformed(
            "coin request",
            format!("asks for {} coins (1 to {MAX_ITEMS})", items.len()),
        ));
    }
    let mut brands = Vec::with_capacity(items.len());
    for it in items {
        let b = bank.brand(it.brand)?;
        b.key()?
            .check_blinded(&it.blinded)
            .map_err(|e| ProtocolError::malformed("blinded coin", e))?;
        brands.push(b.clone());
    }
    let total = total_value(&brands)?;
    Ok((brands, total))
}

pub(crate) fn total_value(brands: &[Brand]) -> Result<Amount, ProtocolError> {
    let currency = &brands[0].value.currency;
    Amount::sum(currency, brands.iter().map(|b| &b.value)).ok_or_else(|| {
        ProtocolError::mismatch(
            "coins",
            "they are in more than one currency (or their sum overflows)",
        )
    })
}

/// A withdraw request whose signature and contents checked.
#[derive(Debug, Clone)]
pub struct AuthenticWithdraw {
    hash: Digest32,
    account: IdentityId,
    request_id: [u8; 32],
    items: Vec<BlindedItem>,
    brands: Vec<Brand>,
    total: Amount,
}

impl AuthenticWithdraw {
    pub fn account(&self) -> IdentityId {
        self.account
    }
    /// What the bank's journal looks the withdrawal up by, with the account.
    pub fn request_id(&self) -> [u8; 32] {
        self.request_id
    }
    pub fn total(&self) -> &Amount {
        &self.total
    }

    /// The bank's rules, in order: a request answered before is answered
    /// again with the recorded signatures (one debit, whatever the clock);
    /// a request id used for another request is refused; then the account,
    /// every brand still issued, and the balance.
    ///
    /// `recorded`: the bank's statement for (account, request id), if any;
    /// `balance`: the account's balance in the request's currency (`None`:
    /// no such account).
    pub fn decide(
        self,
        recorded: Option<&BankStatement>,
        balance: Option<u64>,
        now: Timestamp,
    ) -> BankDecision<SignableWithdraw> {
        if let Some(st) = recorded {
            return match &st.body.kind {
                BankStatementKind::Withdrawn { request, .. } if *request == self.hash => {
                    BankDecision::Answer(st.clone())
                }
                _ => BankDecision::Refuse(BankRefusal::RequestIdReused {
                    earlier: Box::new(st.clone()),
                }),
            };
        }
        let Some(available) = balance else {
            return BankDecision::Refuse(BankRefusal::NoAccount {
                account: self.account,
            });
        };
        if let Some(r) = not_issued(&self.brands, now) {
            return BankDecision::Refuse(r);
        }
        if self.total.units > available {
            return BankDecision::Refuse(BankRefusal::InsufficientFunds {
                needed: self.total,
                available,
            });
        }
        BankDecision::Sign(SignableWithdraw {
            auth: self,
            at: now,
        })
    }
}

pub(crate) fn not_issued(brands: &[Brand], now: Timestamp) -> Option<BankRefusal> {
    brands
        .iter()
        .find(|b| now >= b.issue_until)
        .map(|b| BankRefusal::BrandNotIssued {
            brand: b.id,
            until: b.issue_until,
        })
}

/// A withdrawal the rules allow: debit, blind-sign in the token, record,
/// answer. Made only by [`AuthenticWithdraw::decide`].
#[derive(Debug, Clone)]
pub struct SignableWithdraw {
    auth: AuthenticWithdraw,
    at: Timestamp,
}

impl SignableWithdraw {
    pub fn account(&self) -> IdentityId {
        self.auth.account
    }
    pub fn debit(&self) -> &Amount {
        &self.auth.total
    }
    pub fn request_id(&self) -> [u8; 32] {
        self.auth.request_id
    }
    /// The statement to sign once the token blind-signed every item (in
    /// order), at journal position `journal`. Each signature is checked
    /// again (`s^e mod n`) against the brand's key as the card lists it.
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
            kind: BankStatementKind::Withdrawn {
                account: self.auth.account,
                request_id: self.auth.request_id,
                request: self.auth.hash,
                debited: self.auth.total.clone(),
                signatures,
            },
        })
    }
}

pub(crate) fn check_signatures(
    issue: &impl Issuance,
    signatures: &[BlindSig],
) -> Result<(), ProtocolError> {
    if signatures.len() != issue.items().len() {
        return Err(ProtocolError::mismatch(
            "blind signatures",
            format!(
                "{} for {} blinded coins",
                signatures.len(),
                issue.items().len()
            ),
        ));
    }
    for ((it, b), s) in issue.items().iter().zip(issue.brands()).zip(signatures) {
        if !b.key()?.signature_matches(&it.blinded, s) {
            return Err(ProtocolError::BadSignature {
                what: "blind signature (s^e mod n is not the blinded coin)",
            });
        }
    }
    Ok(())
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::SignableWithdraw {}
    impl Sealed for super::super::refresh::SignableRefresh {}
}

/// Coins the bank's rules allow its token to blind-sign: a withdrawal or a
/// refresh that passed `decide`. Sealed: nothing else is one, so the
/// device's blind-signing operation is reachable only through the rules.
pub trait Issuance: sealed::Sealed {
    /// The blinded coins, in order.
    fn items(&self) -> &[BlindedItem];
    /// Each item's brand, as the bank card lists it.
    fn brands(&self) -> &[Brand];
    /// When the rules allowed it (before every brand's `issue_until`).
    fn at(&self) -> Timestamp;
}

impl Issuance for SignableWithdraw {
    fn items(&self) -> &[BlindedItem] {
        &self.auth.items
    }
    fn brands(&self) -> &[Brand] {
        &self.auth.brands
    }
    fn at(&self) -> Timestamp {
        self.at
    }
}
