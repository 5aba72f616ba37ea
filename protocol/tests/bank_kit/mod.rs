//! Shared by the bank and log tests (`bank.rs`, `txlog.rs`): a STAND-IN
//! bank and a STAND-IN transaction log. Their tokens are stood in for by
//! host keys (P-256 statement keys, RSA brand keys whose raw operation
//! `m^d mod n` is what the token's `C_Sign(CKM_RSA_X_509)` computes) ONLY
//! because this crate is sans-IO; the real brand keys are exercised in
//! `device/tests/blind_sign.rs`. The stand-ins wire the rules as a daemon
//! would: authenticate → look up (in a `BankBook`) → decide → sign → record.

#![allow(dead_code)]

use std::collections::HashMap;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, RsaPrivateKey};

use vtp_protocol::affidavit::ChainPosition;
use vtp_protocol::bank::book::BankBook;
use vtp_protocol::bank::card::{BankCardBody, Currency};
use vtp_protocol::bank::*;
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::tp_card::{OaepHash, Policy, TpCard, TpCardBody, TpEncKey};
use vtp_protocol::txlog::{
    AbortRequest, CommitRequest, InvalidFinding, LogPolicy, LogRefusal, TxnDecision, TxnOutcome,
    TxnOutcomeBody,
};
use vtp_protocol::{Digest32, EcPoint, KeyId, ProtocolError, Signature, Timestamp};

pub const NOW: Timestamp = 1_800_000_000;
pub const DAY: u64 = 24 * 3600;

pub fn eur() -> Currency {
    Currency::new("EUR").unwrap()
}
pub fn eur_cents(units: u64) -> Amount {
    Amount::new(&eur(), units)
}

pub fn sign_p256(k: &p256::ecdsa::SigningKey, d: &Digest32) -> Signature {
    let s: p256::ecdsa::Signature = k.sign_prehash(&d.0).unwrap();
    Signature(s.to_bytes().into())
}

/// Why a stand-in said no.
#[derive(Debug)]
pub enum No {
    Protocol(ProtocolError),
    Bank(BankRefusal),
    Log(LogRefusal),
}
impl From<ProtocolError> for No {
    fn from(e: ProtocolError) -> Self {
        No::Protocol(e)
    }
}
impl No {
    pub fn bank(self) -> BankRefusal {
        match self {
            No::Bank(r) => r,
            other => panic!("expected a bank refusal, got {other:?}"),
        }
    }
    pub fn log(self) -> LogRefusal {
        match self {
            No::Log(r) => r,
            other => panic!("expected a log refusal, got {other:?}"),
        }
    }
    pub fn protocol(self) -> ProtocolError {
        match self {
            No::Protocol(e) => e,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }
}

pub struct BrandSpec {
    pub name: &'static str,
    pub units: u64,
    pub issue_until: Timestamp,
    pub spend_until: Timestamp,
    pub deposit_until: Timestamp,
    pub pem: &'static str,
}

/// The stand-in bank's brands: 1, 2 and 5 EUR, live; and an old 1 EUR
/// brand that is no longer issued nor spendable, only depositable.
pub fn brand_specs() -> Vec<BrandSpec> {
    vec![
        BrandSpec {
            name: "EUR1",
            units: 100,
            issue_until: NOW + 30 * DAY,
            spend_until: NOW + 60 * DAY,
            deposit_until: NOW + 90 * DAY,
            pem: include_str!("../data/test-brand-rsa2048-1.pem"),
        },
        BrandSpec {
            name: "EUR2",
            units: 200,
            issue_until: NOW + 30 * DAY,
            spend_until: NOW + 60 * DAY,
            deposit_until: NOW + 90 * DAY,
            pem: include_str!("../data/test-brand-rsa2048-2.pem"),
        },
        BrandSpec {
            name: "EUR5",
            units: 500,
            issue_until: NOW + 30 * DAY,
            spend_until: NOW + 60 * DAY,
            deposit_until: NOW + 90 * DAY,
            pem: include_str!("../data/test-brand-rsa2048-3.pem"),
        },
        BrandSpec {
            name: "EUR1-OLD",
            units: 100,
            issue_until: NOW - 20 * DAY,
            spend_until: NOW - 10 * DAY,
            deposit_until: NOW + 5 * DAY,
            pem: include_str!("../data/test-brand-rsa2048-4.pem"),
        },
    ]
}

pub struct StandInBank {
    pub card: BankCard,
    pub sign: p256::ecdsa::SigningKey,
    pub brand_keys: Vec<(BrandId, RsaPrivateKey)>,
    pub book: BankBook,
}

impl StandInBank {
    pub fn new(name: &str, seed: u8, specs: &[BrandSpec]) -> Self {
        let sign = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
        let mut brands = Vec::new();
        let mut brand_keys = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let sk = RsaPrivateKey::from_pkcs8_pem(s.pem).unwrap();
            let id = BrandId(KeyId([seed, i as u8, 0, 0, 0, 0, 0, 1]));
            brands.push(Brand {
                id,
                name: s.name.into(),
                value: eur_cents(s.units),
                issue_until: s.issue_until,
                spend_until: s.spend_until,
                deposit_until: s.deposit_until,
                modulus: sk.n().to_bytes_be(),
                exponent: sk.e().to_bytes_be(),
            });
            brand_keys.push((id, sk));
        }
        let body = BankCardBody {
            name: name.into(),
            sign_key: EcPoint::from_public(p256::PublicKey::from(sign.verifying_key())),
            brands,
            clock_skew_secs: 300,
            created: NOW - 100,
        };
        let sig = sign_p256(&sign, &body.signing_digest());
        let card = BankCard::assemble(body, sig).unwrap();
        StandInBank {
            book: BankBook::new(card.clone()),
            card,
            sign,
            brand_keys,
        }
    }
    pub fn brand(&self, name: &str) -> BrandId {
        self.card
            .brands()
            .iter()
            .find(|b| b.name == name)
            .unwrap()
            .id
    }
    /// What the token's `C_Sign(CKM_RSA_X_509)` computes: `m^d mod n`.
    pub fn raw_sign(&self, brand: BrandId, blinded: &[u8]) -> Vec<u8> {
        let sk = &self.brand_keys.iter().find(|(b, _)| *b == brand).unwrap().1;
        let s = BigUint::from_bytes_be(blinded).modpow(sk.d(), sk.n());
        let k = sk.size();
        let b = s.to_bytes_be();
        let mut out = vec![0u8; k - b.len()];
        out.extend_from_slice(&b);
        out
    }
    /// The next journal position, with a fresh salt (the real bank draws
    /// it from its RNG).
    pub fn position(&mut self) -> ChainPosition {
        let n = self.book.journal().len() as u64 + 1;
        let mut salt = [0u8; 32];
        salt[..8].copy_from_slice(&n.to_be_bytes());
        salt[8] = 0x5a;
        self.book.next_position(salt)
    }
    /// Sign any statement: what an honest bank signs, or a corrupt one.
    pub fn sign(&self, body: BankStatementBody) -> BankStatement {
        BankStatement {
            signature: sign_p256(&self.sign, &body.signing_digest()),
            body,
        }
    }
    fn issue(&self, p: &impl Issuance) -> Vec<BlindSig> {
        p.items()
            .iter()
            .map(|it| self.raw_sign(it.brand, &it.blinded))
            .collect()
    }

    pub fn withdraw(&mut self, req: &WithdrawRequest, now: Timestamp) -> Result<BankStatement, No> {
        let auth = req.authenticate(&self.card, now)?;
        let recorded = self.book.withdrawal(&auth).cloned();
        let balance = self.book.balance(auth.account(), &auth.total().currency);
        match auth.decide(recorded.as_ref(), balance, now) {
            BankDecision::Answer(s) => Ok(s),
            BankDecision::Refuse(r) => Err(No::Bank(r)),
            BankDecision::Sign(p) => {
                let sigs = self.issue(&p);
                let body = p.statement(self.card.id(), sigs, self.position())?;
                let st = self.sign(body);
                self.book.apply_withdraw(&p, &st)?;
                Ok(st)
            }
        }
    }
    pub fn lock(&mut self, req: &LockRequest, now: Timestamp) -> Result<BankStatement, No> {
        let auth = req.authenticate(&self.card, now)?;
        let records = self.book.coin_records(&auth.coin_ids());
        let payment = self.book.payment(&auth.terms().txn).cloned();
        match auth.decide(&records, payment.as_ref(), now) {
            BankDecision::Answer(s) => Ok(s),
            BankDecision::Refuse(r) => Err(No::Bank(r)),
            BankDecision::Sign(p) => {
                let pos = self.position();
                let st = self.sign(p.statement(self.card.id(), pos));
                self.book.apply_lock(&p, &st)?;
                Ok(st)
            }
        }
    }
    pub fn deposit(
        &mut self,
        req: &DepositRequest,
        log: &TpCard,
        now: Timestamp,
    ) -> Result<BankStatement, No> {
        let auth = req.authenticate(&self.card, log, now)?;
        let recorded = self.book.txn(&auth.terms().txn).cloned();
        match auth.decide(&self.card, recorded.as_ref(), now) {
            BankDecision::Answer(s) => Ok(s),
            BankDecision::Refuse(r) => Err(No::Bank(r)),
            BankDecision::Sign(p) => {
                let pos = self.position();
                let st = self.sign(p.statement(self.card.id(), pos));
                self.book.apply_deposit(&p, &st)?;
                Ok(st)
            }
        }
    }
    pub fn refresh(
        &mut self,
        req: &RefreshRequest,
        log: &TpCard,
        now: Timestamp,
    ) -> Result<BankStatement, No> {
        let auth = req.authenticate(&self.card, Some(log), now)?;
        let recorded = self.book.refresh(&auth.request_id()).cloned();
        let records = self.book.coin_records(&auth.coin_ids());
        match auth.decide(recorded.as_ref(), &records, now) {
            BankDecision::Answer(s) => Ok(s),
            BankDecision::Refuse(r) => Err(No::Bank(r)),
            BankDecision::Sign(p) => {
                let sigs = self.issue(&p);
                let body = p.statement(self.card.id(), sigs, self.position())?;
                let st = self.sign(body);
                self.book.apply_refresh(&p, &st)?;
                Ok(st)
            }
        }
    }
}

/// The stand-in transaction log: a TP card and signing key, its outcomes
/// by transaction id.
pub struct StandInLog {
    pub card: TpCard,
    pub sign: p256::ecdsa::SigningKey,
    pub outcomes: HashMap<TxnId, TxnOutcome>,
    pub seq: u64,
    pub policy: LogPolicy,
}

impl StandInLog {
    pub fn new(seed: u8) -> Self {
        let rsa =
            RsaPrivateKey::from_pkcs8_pem(include_str!("../data/test-tp-rsa2048.pem")).unwrap();
        let sign = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
        let key = KeyId([9; 8]);
        let body = TpCardBody {
            name: "test log".into(),
            sign_key: EcPoint::from_public(p256::PublicKey::from(sign.verifying_key())),
            enc_keys: vec![TpEncKey {
                id: key,
                modulus: rsa.n().to_bytes_be(),
                exponent: rsa.e().to_bytes_be(),
                oaep: OaepHash::Sha1,
            }],
            current_key: key,
            policy: Policy::default(),
            created: NOW - 100,
        };
        let sig = sign_p256(&sign, &body.signing_digest());
        StandInLog {
            card: TpCard::assemble(body, sig).unwrap(),
            sign,
            outcomes: HashMap::new(),
            seq: 0,
            policy: LogPolicy::default(),
        }
    }
    fn position(&mut self) -> ChainPosition {
        self.seq += 1;
        ChainPosition {
            seq: self.seq,
            prev: Digest32([self.seq as u8; 32]),
        }
    }
    /// Sign any outcome: what an honest log signs, or a corrupt one.
    pub fn sign(&self, body: TxnOutcomeBody) -> TxnOutcome {
        TxnOutcome {
            signature: sign_p256(&self.sign, &body.signing_digest()),
            body,
        }
    }
    fn carry_out<P>(
        &mut self,
        txn: TxnId,
        d: TxnDecision<P>,
        body: impl FnOnce(&P, ChainPosition) -> TxnOutcomeBody,
    ) -> Result<TxnOutcome, No> {
        match d {
            TxnDecision::Answer(o) => Ok(o),
            TxnDecision::Refuse(r) => Err(No::Log(r)),
            TxnDecision::Sign(p) => {
                let pos = self.position();
                let o = self.sign(body(&p, pos));
                assert!(self.outcomes.insert(txn, o.clone()).is_none());
                Ok(o)
            }
        }
    }
    pub fn commit(
        &mut self,
        req: &CommitRequest,
        bank: &BankCard,
        now: Timestamp,
    ) -> Result<TxnOutcome, No> {
        let a = req.authenticate(&self.card, bank, &self.policy, now)?;
        let txn = a.txn();
        let d = a.decide(self.outcomes.get(&txn), now);
        let id = self.card.id();
        self.carry_out(txn, d, |p, pos| p.body(id, pos))
    }
    pub fn abort(
        &mut self,
        req: &AbortRequest,
        bank: &BankCard,
        now: Timestamp,
    ) -> Result<TxnOutcome, No> {
        let a = req.authenticate(&self.card, bank)?;
        let txn = a.txn();
        let d = a.decide(self.outcomes.get(&txn), &self.policy, now);
        let id = self.card.id();
        self.carry_out(txn, d, |p, pos| p.body(id, pos))
    }
    pub fn invalid(
        &mut self,
        payment: &BankStatement,
        bank: &BankCard,
        now: Timestamp,
    ) -> Result<TxnOutcome, No> {
        let f = InvalidFinding::new(payment, bank, &self.card)?;
        let txn = f.txn();
        let d = f.decide(self.outcomes.get(&txn), now);
        let id = self.card.id();
        self.carry_out(txn, d, |p, pos| p.body(id, pos))
    }
}

pub fn ident(name: &str, seed: u8) -> IdentitySecret {
    IdentitySecret::generate(name, NOW - 1000, &mut ChaCha20Rng::from_seed([seed; 32])).unwrap()
}

/// A bank, a log, a customer with an account, a merchant with one.
pub struct World {
    pub bank: StandInBank,
    pub log: StandInLog,
    pub alice: IdentitySecret,
    pub merchant: IdentitySecret,
    pub rng: ChaCha20Rng,
    next_id: u8,
}

impl World {
    pub fn new() -> World {
        let mut bank = StandInBank::new("test bank", 0x51, &brand_specs());
        let alice = ident("Alice", 1);
        let merchant = ident("Merchant", 2);
        bank.book.operator_credit(alice.id(), &eur_cents(10_000));
        bank.book.operator_credit(merchant.id(), &eur_cents(0));
        World {
            bank,
            log: StandInLog::new(0x61),
            alice,
            merchant,
            rng: ChaCha20Rng::from_seed([7; 32]),
            next_id: 0,
        }
    }
    pub fn fresh_id(&mut self) -> [u8; 32] {
        self.next_id += 1;
        [self.next_id; 32]
    }
    /// Blind coins of the named brands.
    pub fn pending(&mut self, brands: &[&str]) -> Vec<PendingCoin> {
        brands
            .iter()
            .map(|b| {
                let id = self.bank.brand(b);
                PendingCoin::new(&self.bank.card, id, NOW, &mut self.rng).unwrap()
            })
            .collect()
    }
    /// Alice withdraws coins of the named brands (finalized and checked).
    pub fn withdraw(&mut self, brands: &[&str]) -> Vec<OwnedCoin> {
        let pending = self.pending(brands);
        let id = self.fresh_id();
        let req = WithdrawRequest::new(
            &self.alice,
            &self.bank.card,
            id,
            pending.iter().map(|p| p.blinded()).collect(),
            NOW,
        );
        let st = self.bank.withdraw(&req, NOW).unwrap();
        finalize(&self.bank.card, pending, &st)
    }
    pub fn terms(&self, txn: u8, units: u64, deadline: Timestamp) -> TxnTerms {
        TxnTerms {
            txn: Digest32([txn; 32]),
            bank: self.bank.card.id(),
            merchant: self.merchant.id(),
            log: self.log.card.id(),
            deadline,
            amount: eur_cents(units),
        }
    }
    /// Lock coins to a transaction; the bank's payment.
    pub fn pay(&mut self, coins: &[OwnedCoin], terms: TxnTerms) -> Result<BankStatement, No> {
        let req = LockRequest::new(coins, terms, NOW);
        self.bank.lock(&req, NOW)
    }
    pub fn commit(&mut self, payment: &BankStatement, now: Timestamp) -> Result<TxnOutcome, No> {
        let req = CommitRequest::new(&self.merchant, payment, b"goods key".to_vec(), now);
        self.log.commit(&req, &self.bank.card, now)
    }
    pub fn abort(&mut self, payment: &BankStatement, now: Timestamp) -> Result<TxnOutcome, No> {
        self.log.abort(
            &AbortRequest {
                payment: payment.clone(),
            },
            &self.bank.card,
            now,
        )
    }
    pub fn deposit(
        &mut self,
        payment: &BankStatement,
        commit: &TxnOutcome,
        now: Timestamp,
    ) -> Result<BankStatement, No> {
        let req = DepositRequest::new(&self.merchant, payment, commit, now);
        self.bank.deposit(&req, &self.log.card, now)
    }
    /// Refresh `coins` (released by `release`, or exchanged) into new coins
    /// of the named brands.
    pub fn refresh(
        &mut self,
        coins: &[OwnedCoin],
        release: Option<TxnOutcome>,
        brands: &[&str],
        now: Timestamp,
    ) -> Result<Vec<OwnedCoin>, No> {
        let pending = self.pending(brands);
        let id = self.fresh_id();
        let req = RefreshRequest::new(
            &self.bank.card,
            coins,
            release,
            pending.iter().map(|p| p.blinded()).collect(),
            id,
            now,
        );
        let st = self.bank.refresh(&req, &self.log.card, now)?;
        Ok(finalize(&self.bank.card, pending, &st))
    }
    pub fn balance(&self, who: &IdentitySecret) -> u64 {
        self.bank.book.balance(who.id(), &eur()).unwrap()
    }
}

/// Finalize pending coins with the blind signatures of a statement.
pub fn finalize(bank: &BankCard, pending: Vec<PendingCoin>, st: &BankStatement) -> Vec<OwnedCoin> {
    let sigs = match &st.body.kind {
        BankStatementKind::Withdrawn { signatures, .. }
        | BankStatementKind::Refreshed { signatures, .. } => signatures.clone(),
        other => panic!("no blind signatures in {other:?}"),
    };
    pending
        .into_iter()
        .zip(sigs)
        .map(|(p, s)| p.finalize(bank, &s).unwrap())
        .collect()
}
