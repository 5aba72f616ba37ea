//! The bank's rules end to end, with a stand-in bank and log (host keys in
//! place of the tokens; see `bank_kit`): withdraw, lock, commit, deposit,
//! refresh and exchange, and the attacks on each.

mod bank_kit;

use bank_kit::*;
use rsa::{BigUint, RsaPublicKey};
use sha2::{Digest as _, Sha384};
use vtp_protocol::bank::judge::{self, CustomerClaim, MerchantClaim};
use vtp_protocol::bank::*;
use vtp_protocol::txlog::Outcome;
use vtp_protocol::{Digest32, ProtocolError};

fn rsa_key(b: &Brand) -> RsaPublicKey {
    RsaPublicKey::new(
        BigUint::from_bytes_be(&b.modulus),
        BigUint::from_bytes_be(&b.exponent),
    )
    .unwrap()
}

#[test]
fn withdrawn_coins_are_standard_rsassa_pss_signatures() {
    let mut w = World::new();
    let coins = w.withdraw(&["EUR1", "EUR2", "EUR5"]);
    assert_eq!(w.balance(&w.alice.clone_id()), 10_000 - 800);
    for c in &coins {
        let brand = w.bank.card.brand(c.coin.body.brand).unwrap();
        // RFC 9474 RSABSSA-SHA384-PSS-Randomized: RSASSA-PSS, SHA-384,
        // MGF1-SHA-384, 48-byte salt, over randomizer || message.
        let hashed = Sha384::digest(c.coin.signed_message());
        rsa_key(brand)
            .verify(
                rsa::Pss::new_with_salt::<Sha384>(48),
                &hashed,
                &c.coin.signature,
            )
            .expect("a standard RSASSA-PSS verifier accepts the coin");
        // Another salt length or message is refused.
        assert!(rsa_key(brand)
            .verify(
                rsa::Pss::new_with_salt::<Sha384>(32),
                &hashed,
                &c.coin.signature
            )
            .is_err());
        let other = Sha384::digest(c.coin.body.message());
        assert!(rsa_key(brand)
            .verify(
                rsa::Pss::new_with_salt::<Sha384>(48),
                &other,
                &c.coin.signature
            )
            .is_err());
        c.coin.verify(&w.bank.card).unwrap();
        assert_eq!(Coin::from_file(&c.coin.to_file()).unwrap(), c.coin);
    }
    w.bank.book.check_invariant().unwrap();
}

trait CloneId {
    fn clone_id(&self) -> Self;
}
impl CloneId for vtp_protocol::identity::IdentitySecret {
    fn clone_id(&self) -> Self {
        vtp_protocol::identity::IdentitySecret::from_file(&self.to_file()).unwrap()
    }
}

#[test]
fn a_replayed_withdraw_debits_once_and_returns_the_same_signatures() {
    let mut w = World::new();
    let pending = w.pending(&["EUR2", "EUR2"]);
    let req = WithdrawRequest::new(
        &w.alice,
        &w.bank.card,
        [42; 32],
        pending.iter().map(|p| p.blinded()).collect(),
        NOW,
    );
    let first = w.bank.withdraw(&req, NOW).unwrap();
    let again = w.bank.withdraw(&req, NOW + 7 * DAY).unwrap();
    assert_eq!(first, again, "the recorded statement, byte for byte");
    assert_eq!(w.balance(&w.alice.clone_id()), 10_000 - 400);
    assert_eq!(w.bank.book.journal().len(), 1);
    // The same id for another request is refused with the earlier record.
    let items = w.pending(&["EUR1"]).iter().map(|p| p.blinded()).collect();
    let other = WithdrawRequest::new(&w.alice, &w.bank.card, [42; 32], items, NOW);
    match w.bank.withdraw(&other, NOW).unwrap_err().bank() {
        BankRefusal::RequestIdReused { earlier } => assert_eq!(*earlier, first),
        r => panic!("{r:?}"),
    }
    let coins = finalize(&w.bank.card, pending, &again);
    assert_eq!(coins.len(), 2);
    w.bank.book.check_invariant().unwrap();
}

#[test]
fn withdraw_refusals() {
    let mut w = World::new();
    // More than the balance.
    let pending = w.pending(&["EUR5"; 21]);
    let req = WithdrawRequest::new(
        &w.alice,
        &w.bank.card,
        [1; 32],
        pending.iter().map(|p| p.blinded()).collect(),
        NOW,
    );
    assert!(matches!(
        w.bank.withdraw(&req, NOW).unwrap_err().bank(),
        BankRefusal::InsufficientFunds {
            available: 10_000,
            ..
        }
    ));
    // No account.
    let bob = ident("Bob", 9);
    let items = w.pending(&["EUR1"]).iter().map(|p| p.blinded()).collect();
    let req = WithdrawRequest::new(&bob, &w.bank.card, [2; 32], items, NOW);
    assert!(matches!(
        w.bank.withdraw(&req, NOW).unwrap_err().bank(),
        BankRefusal::NoAccount { .. }
    ));
    // A brand no longer issued: the client refuses, and so does the bank.
    let old = w.bank.brand("EUR1-OLD");
    assert!(PendingCoin::new(&w.bank.card, old, NOW, &mut w.rng).is_err());
    let live = w.pending(&["EUR1"]).remove(0);
    let mut item = live.blinded();
    item.brand = old;
    let req = WithdrawRequest::new(&w.alice, &w.bank.card, [3; 32], vec![item], NOW);
    assert!(matches!(
        w.bank.withdraw(&req, NOW).unwrap_err().bank(),
        BankRefusal::BrandNotIssued { .. }
    ));
    // A blinded value >= n never reaches the token.
    let brand = w.bank.card.brand(w.bank.brand("EUR1")).unwrap().clone();
    for blinded in [
        brand.modulus.clone(),
        vec![0xff; brand.modulus.len()],
        vec![1; 10],
    ] {
        let req = WithdrawRequest::new(
            &w.alice,
            &w.bank.card,
            [4; 32],
            vec![BlindedItem {
                brand: brand.id,
                blinded,
            }],
            NOW,
        );
        assert!(matches!(
            w.bank.withdraw(&req, NOW).unwrap_err().protocol(),
            ProtocolError::Malformed {
                what: "blinded coin",
                ..
            }
        ));
    }
    // Signed by someone else in the holder's name.
    let items = w.pending(&["EUR1"]).iter().map(|p| p.blinded()).collect();
    let mut req = WithdrawRequest::new(&w.alice, &w.bank.card, [5; 32], items, NOW);
    req.body.items[0].brand = w.bank.brand("EUR2");
    assert!(matches!(
        w.bank.withdraw(&req, NOW).unwrap_err().protocol(),
        ProtocolError::BadSignature { .. }
    ));
    assert_eq!(w.balance(&w.alice.clone_id()), 10_000);
    assert!(w.bank.book.journal().is_empty());
    w.bank.book.check_invariant().unwrap();
}

#[test]
fn tampered_coins_wrong_brands_and_other_banks_are_refused() {
    let mut w = World::new();
    let coin = w.withdraw(&["EUR1"]).remove(0).coin;
    let card = &w.bank.card;
    let mut c = coin.clone();
    c.signature[10] ^= 1;
    assert!(matches!(
        c.verify(card),
        Err(ProtocolError::BadSignature { .. })
    ));
    let mut c = coin.clone();
    c.randomizer[0] ^= 1;
    assert!(matches!(
        c.verify(card),
        Err(ProtocolError::BadSignature { .. })
    ));
    let mut c = coin.clone();
    c.body.key = CoinSecret::generate(&mut w.rng).public();
    assert!(matches!(
        c.verify(card),
        Err(ProtocolError::BadSignature { .. })
    ));
    // The same signature claimed for another brand of the bank.
    let mut c = coin.clone();
    c.body.brand = w.bank.brand("EUR5");
    assert!(matches!(
        c.verify(card),
        Err(ProtocolError::BadSignature { .. })
    ));
    // A brand the card does not list.
    let mut c = coin.clone();
    c.body.brand = BrandId(vtp_protocol::KeyId([0xee; 8]));
    assert!(matches!(
        c.verify(card),
        Err(ProtocolError::Mismatch { what: "brand", .. })
    ));
    // Another bank with the very same brand keys does not accept it.
    let other = StandInBank::new("other bank", 0x52, &brand_specs());
    assert!(matches!(
        coin.verify(&other.card),
        Err(ProtocolError::Mismatch { what: "coin", .. })
    ));
    coin.verify(card).unwrap();
}

#[test]
fn pay_commit_deposit_and_what_the_judge_sees() {
    let mut w = World::new();
    let coins = w.withdraw(&["EUR2", "EUR1"]);
    let terms = w.terms(1, 300, NOW + DAY);
    let payment = w.pay(&coins, terms.clone()).unwrap();
    for c in &coins {
        assert_eq!(
            w.bank.book.coin_status(&c.coin.id()),
            CoinStatus::Locked { txn: terms.txn }
        );
    }
    w.bank.book.check_invariant().unwrap();
    let commit = w.commit(&payment, NOW + 60).unwrap();
    assert!(matches!(commit.body.outcome, Outcome::Commit { .. }));
    assert_eq!(
        judge::merchant_claim(&w.bank.card, &w.log.card, &payment, &commit, None).unwrap(),
        MerchantClaim::Owed {
            merchant: w.merchant.id(),
            amount: eur_cents(300),
            txn: terms.txn
        }
    );
    let receipt = w.deposit(&payment, &commit, NOW + 120).unwrap();
    assert_eq!(w.balance(&w.merchant.clone_id()), 300);
    for c in &coins {
        assert_eq!(
            w.bank.book.coin_status(&c.coin.id()),
            CoinStatus::Deposited { txn: terms.txn }
        );
    }
    assert!(matches!(
        judge::merchant_claim(&w.bank.card, &w.log.card, &payment, &commit, Some(&receipt))
            .unwrap(),
        MerchantClaim::Settled { .. }
    ));
    let lock = LockRequest::new(&coins, terms.clone(), NOW);
    assert!(matches!(
        judge::customer_claim(&w.bank.card, &w.log.card, &lock, &payment, &commit, None).unwrap(),
        CustomerClaim::Paid { .. }
    ));
    let s = w.bank.book.check_invariant().unwrap();
    assert_eq!(s.balances[&eur()], 10_000 - 300 + 300);
    assert_eq!(s.outstanding[&eur()], 0);
    assert_eq!(s.credits[&eur()], 10_000);
}

#[test]
fn double_spending_is_refused_with_the_earlier_lock_as_proof() {
    let mut w = World::new();
    let coins = w.withdraw(&["EUR1", "EUR1"]);
    let first = LockRequest::new(&coins[..1], w.terms(1, 100, NOW + DAY), NOW);
    w.bank.lock(&first, NOW).unwrap();
    // The same coin, with a fresh one, for another transaction.
    let second = LockRequest::new(&coins, w.terms(2, 200, NOW + DAY), NOW);
    match w.bank.lock(&second, NOW).unwrap_err().bank() {
        BankRefusal::AlreadySpent { coin, record } => {
            assert_eq!(coin, coins[0].coin.id());
            assert_eq!(record.authorization, CoinAuthorization::Lock(first.clone()));
            // The judge: the holder of q signed two different spends.
            assert_eq!(
                judge::double_spend(
                    &w.bank.card,
                    &record.authorization,
                    &CoinAuthorization::Lock(second.clone())
                )
                .unwrap(),
                coins[0].coin.id()
            );
        }
        r => panic!("{r:?}"),
    }
    // All or nothing: the fresh coin was not locked.
    assert_eq!(
        w.bank.book.coin_status(&coins[1].coin.id()),
        CoinStatus::Unspent
    );
    // The same lock again is the same payment (a retry), not a double spend.
    let p1 = w.bank.book.payment(&first.body.terms.txn).unwrap().clone();
    assert_eq!(w.bank.lock(&first, NOW + 5).unwrap(), p1);
    // Another lock for a transaction id that has a payment is refused.
    let third = LockRequest::new(&coins[1..], w.terms(1, 100, NOW + DAY), NOW);
    assert!(matches!(
        w.bank.lock(&third, NOW).unwrap_err().bank(),
        BankRefusal::TxnAlreadyLocked { .. }
    ));
    w.bank.book.check_invariant().unwrap();
}

#[test]
fn a_lock_signed_without_the_coin_key_is_refused() {
    let mut w = World::new();
    let mut coins = w.withdraw(&["EUR1"]);
    // A thief with the coin file but not q.
    coins[0].secret = CoinSecret::generate(&mut w.rng);
    let req = LockRequest::new(&coins, w.terms(1, 100, NOW + DAY), NOW);
    assert!(matches!(
        w.bank.lock(&req, NOW).unwrap_err().protocol(),
        ProtocolError::BadSignature {
            what: "lock (a coin key's signature)"
        }
    ));
    // The holder's signature over other terms does not carry over.
    let coins = w.withdraw(&["EUR1"]);
    let mut req = LockRequest::new(&coins, w.terms(2, 100, NOW + DAY), NOW);
    req.body.terms.merchant = ident("Mallory", 66).id();
    assert!(matches!(
        w.bank.lock(&req, NOW).unwrap_err().protocol(),
        ProtocolError::BadSignature { .. }
    ));
    assert!(w.bank.book.payment(&Digest32([2; 32])).is_none());
}

#[test]
fn lock_refusals_amounts_deadlines_and_brands() {
    let mut w = World::new();
    let coins = w.withdraw(&["EUR2"]);
    // Coins must add up to exactly the amount.
    for units in [100, 300] {
        assert!(matches!(
            w.pay(&coins, w.terms(1, units, NOW + DAY))
                .unwrap_err()
                .protocol(),
            ProtocolError::Mismatch { what: "lock", .. }
        ));
    }
    // The deadline must be ahead, and within the brand's spend period.
    assert!(matches!(
        w.pay(&coins, w.terms(1, 200, NOW)).unwrap_err().bank(),
        BankRefusal::DeadlineNotAhead { .. }
    ));
    assert!(matches!(
        w.pay(&coins, w.terms(1, 200, NOW + 61 * DAY))
            .unwrap_err()
            .bank(),
        BankRefusal::BrandNotSpendable { .. }
    ));
    // A coin of a brand whose spend period is over.
    let mut old_bank = StandInBank::new("test bank", 0x51, &brand_specs());
    let old = old_bank.brand("EUR1-OLD");
    let sk = CoinSecret::generate(&mut w.rng);
    let body = CoinBody {
        bank: old_bank.card.id(),
        brand: old,
        key: sk.public(),
    };
    let key = old_bank.card.brand(old).unwrap().key().unwrap();
    let blinding = key.blind(&mut w.rng, &body.message()).unwrap();
    let blind_sig = old_bank.raw_sign(old, blinding.blinded());
    let sig = key
        .finalize(&blind_sig, &blinding, &body.message())
        .unwrap();
    let old_coin = OwnedCoin {
        coin: Coin {
            body,
            randomizer: blinding.randomizer(),
            signature: sig,
        },
        secret: sk,
    };
    old_coin.coin.verify(&old_bank.card).unwrap();
    let req = LockRequest::new(
        std::slice::from_ref(&old_coin),
        w.terms(3, 100, NOW + DAY),
        NOW,
    );
    assert!(matches!(
        old_bank.lock(&req, NOW).unwrap_err().bank(),
        BankRefusal::BrandNotSpendable { .. }
    ));
    // ...but it can still be exchanged for a live brand until deposit_until.
    let pending = w.pending(&["EUR1"]);
    let rq = RefreshRequest::new(
        &old_bank.card,
        std::slice::from_ref(&old_coin),
        None,
        pending.iter().map(|p| p.blinded()).collect(),
        [9; 32],
        NOW,
    );
    old_bank.refresh(&rq, &w.log.card, NOW).unwrap();
    let rq2 = RefreshRequest::new(
        &old_bank.card,
        std::slice::from_ref(&old_coin),
        None,
        w.pending(&["EUR1"]).iter().map(|p| p.blinded()).collect(),
        [10; 32],
        NOW + 6 * DAY,
    );
    assert!(matches!(
        old_bank
            .refresh(&rq2, &w.log.card, NOW + 6 * DAY)
            .unwrap_err()
            .bank(),
        BankRefusal::AlreadySpent { .. }
    ));
}

#[test]
fn deposit_needs_the_logs_commit_for_exactly_these_terms() {
    let mut w = World::new();
    let coins = w.withdraw(&["EUR1"]);
    let terms = w.terms(1, 100, NOW + DAY);
    let payment = w.pay(&coins, terms.clone()).unwrap();
    // No outcome yet: a forged COMMIT by someone else's key.
    let fake_log = StandInLog::new(0x62);
    let mut body = w.log.sign(vtp_protocol::txlog::TxnOutcomeBody {
        log: w.log.card.id(),
        terms: terms.clone(),
        outcome: Outcome::Commit {
            release: Digest32([0; 32]),
        },
        at: NOW + 10,
        journal: vtp_protocol::affidavit::ChainPosition {
            seq: 1,
            prev: Digest32([0; 32]),
        },
    });
    body.signature = fake_log.sign(body.body.clone()).signature;
    assert!(matches!(
        w.deposit(&payment, &body, NOW + 20).unwrap_err().protocol(),
        ProtocolError::BadSignature { .. }
    ));
    // After the deadline, the log's ABORT: no deposit.
    let abort = w.abort(&payment, NOW + DAY).unwrap();
    assert!(matches!(
        w.deposit(&payment, &abort, NOW + DAY + 1).unwrap_err().protocol(),
        ProtocolError::Refused(m) if m.contains("needs the log's COMMIT")
    ));
    // A COMMIT for other terms does not pay this payment.
    let coins2 = w.withdraw(&["EUR1"]);
    let p2 = w.pay(&coins2, w.terms(2, 100, NOW + 2 * DAY)).unwrap();
    let c2 = w.commit(&p2, NOW + 10).unwrap();
    assert!(matches!(
        w.deposit(&payment, &c2, NOW + 20).unwrap_err().protocol(),
        ProtocolError::Mismatch {
            what: "deposit",
            ..
        }
    ));
    // Someone other than the merchant cannot deposit it.
    let mallory = ident("Mallory", 66);
    let req = DepositRequest::new(&mallory, &p2, &c2, NOW + 20);
    assert!(matches!(
        w.bank
            .deposit(&req, &w.log.card, NOW + 20)
            .unwrap_err()
            .protocol(),
        ProtocolError::Mismatch {
            what: "deposit",
            ..
        }
    ));
    assert_eq!(w.balance(&w.merchant.clone_id()), 0);
    w.bank.book.check_invariant().unwrap();
}

#[test]
fn double_deposit_is_refused_with_the_earlier_receipt() {
    let mut w = World::new();
    let coins = w.withdraw(&["EUR5"]);
    let payment = w.pay(&coins, w.terms(1, 500, NOW + DAY)).unwrap();
    let commit = w.commit(&payment, NOW + 10).unwrap();
    let req = DepositRequest::new(&w.merchant, &payment, &commit, NOW + 20);
    let receipt = w.bank.deposit(&req, &w.log.card, NOW + 20).unwrap();
    // The same request again (a retry) gets the same receipt.
    assert_eq!(
        w.bank.deposit(&req, &w.log.card, NOW + 30).unwrap(),
        receipt
    );
    // A new deposit of the same payment is refused with the receipt.
    match w.deposit(&payment, &commit, NOW + 40).unwrap_err().bank() {
        BankRefusal::AlreadyDeposited { receipt: r } => assert_eq!(*r, receipt),
        r => panic!("{r:?}"),
    }
    assert_eq!(w.balance(&w.merchant.clone_id()), 500);
    // And the coins cannot come back through a refresh.
    let abort_forged = w.log.sign(vtp_protocol::txlog::TxnOutcomeBody {
        log: w.log.card.id(),
        terms: commit.body.terms.clone(),
        outcome: Outcome::Abort,
        at: NOW + DAY,
        journal: vtp_protocol::affidavit::ChainPosition {
            seq: 99,
            prev: Digest32([0; 32]),
        },
    });
    match w
        .refresh(&coins, Some(abort_forged.clone()), &["EUR5"], NOW + DAY + 1)
        .unwrap_err()
        .bank()
    {
        BankRefusal::AlreadySpent { record, .. } => {
            assert_eq!(
                record.status,
                CoinStatus::Deposited {
                    txn: commit.body.terms.txn
                }
            )
        }
        r => panic!("{r:?}"),
    }
    // The two outcomes prove the log cheated.
    assert_eq!(
        judge::log_contradiction(&w.log.card, &commit, &abort_forged).unwrap(),
        commit.body.terms.txn
    );
    w.bank.book.check_invariant().unwrap();
}

#[test]
fn refresh_frees_coins_only_with_abort_or_invalid() {
    let mut w = World::new();
    let coins = w.withdraw(&["EUR2", "EUR1"]);
    let terms = w.terms(1, 300, NOW + DAY);
    let payment = w.pay(&coins, terms.clone()).unwrap();
    // Before any outcome, a refresh without a release: the coins are locked.
    assert!(matches!(
        w.refresh(&coins, None, &["EUR2", "EUR1"], NOW + 10)
            .unwrap_err()
            .bank(),
        BankRefusal::AlreadySpent { .. }
    ));
    // ABORT after the deadline frees them.
    let abort = w.abort(&payment, NOW + DAY).unwrap();
    let lock = LockRequest::new(&coins, terms.clone(), NOW);
    assert!(matches!(
        judge::customer_claim(&w.bank.card, &w.log.card, &lock, &payment, &abort, None).unwrap(),
        CustomerClaim::RefundDue { .. }
    ));
    let fresh = w
        .refresh(
            &coins,
            Some(abort.clone()),
            &["EUR1", "EUR1", "EUR1"],
            NOW + DAY + 1,
        )
        .unwrap();
    assert_eq!(fresh.len(), 3);
    for c in &coins {
        assert_eq!(
            w.bank.book.coin_status(&c.coin.id()),
            CoinStatus::Released { txn: terms.txn }
        );
    }
    let st = w.bank.book.journal().last().unwrap().clone();
    assert!(matches!(
        judge::customer_claim(
            &w.bank.card,
            &w.log.card,
            &lock,
            &payment,
            &abort,
            Some(&st)
        )
        .unwrap(),
        CustomerClaim::Refunded { .. }
    ));
    // Released coins are gone for good: not again, not for deposit.
    assert!(matches!(
        w.refresh(
            &coins,
            Some(abort.clone()),
            &["EUR2", "EUR1"],
            NOW + DAY + 2
        )
        .unwrap_err()
        .bank(),
        BankRefusal::AlreadySpent { .. }
    ));
    // A corrupt log's later COMMIT does not get the merchant paid.
    let commit_forged = w.log.sign(vtp_protocol::txlog::TxnOutcomeBody {
        log: w.log.card.id(),
        terms: terms.clone(),
        outcome: Outcome::Commit {
            release: Digest32([1; 32]),
        },
        at: NOW + 100,
        journal: vtp_protocol::affidavit::ChainPosition {
            seq: 77,
            prev: Digest32([0; 32]),
        },
    });
    assert!(matches!(
        w.deposit(&payment, &commit_forged, NOW + DAY + 3)
            .unwrap_err()
            .bank(),
        BankRefusal::CoinNotLocked {
            status: CoinStatus::Released { .. },
            ..
        }
    ));
    // The new coins spend.
    let p2 = w.pay(&fresh, w.terms(2, 300, NOW + 3 * DAY)).unwrap();
    assert!(p2.payment_terms().is_some());
    w.bank.book.check_invariant().unwrap();
}

#[test]
fn refresh_with_a_commit_is_refused() {
    let mut w = World::new();
    let coins = w.withdraw(&["EUR1"]);
    let payment = w.pay(&coins, w.terms(1, 100, NOW + DAY)).unwrap();
    let commit = w.commit(&payment, NOW + 10).unwrap();
    assert!(matches!(
        w.refresh(&coins, Some(commit), &["EUR1"], NOW + 20).unwrap_err().protocol(),
        ProtocolError::Refused(m) if m.contains("COMMIT frees no coins")
    ));
    assert_eq!(
        w.bank.book.coin_status(&coins[0].coin.id()),
        CoinStatus::Locked {
            txn: Digest32([1; 32])
        }
    );
    // An ABORT for another transaction does not free these coins either.
    let other = w.withdraw(&["EUR1"]);
    let p2 = w.pay(&other, w.terms(2, 100, NOW + DAY)).unwrap();
    let abort2 = w.abort(&p2, NOW + DAY).unwrap();
    match w
        .refresh(&coins, Some(abort2), &["EUR1"], NOW + DAY + 1)
        .unwrap_err()
        .bank()
    {
        BankRefusal::AlreadySpent { record, .. } => {
            assert_eq!(
                record.status,
                CoinStatus::Locked {
                    txn: Digest32([1; 32])
                }
            )
        }
        r => panic!("{r:?}"),
    }
    // ...nor an unspent coin (nothing to release: exchange it instead).
    let unspent = w.withdraw(&["EUR1"]);
    let locked = w.withdraw(&["EUR1"]);
    let p3 = w.pay(&locked, w.terms(3, 100, NOW + DAY)).unwrap();
    let abort3 = w.abort(&p3, NOW + DAY).unwrap();
    assert!(matches!(
        w.refresh(&unspent, Some(abort3), &["EUR1"], NOW + DAY + 1)
            .unwrap_err()
            .bank(),
        BankRefusal::CoinNotLocked {
            status: CoinStatus::Unspent,
            ..
        }
    ));
    w.bank.book.check_invariant().unwrap();
}

#[test]
fn invalid_frees_coins_like_abort() {
    let mut w = World::new();
    let coins = w.withdraw(&["EUR5"]);
    let payment = w.pay(&coins, w.terms(1, 500, NOW + DAY)).unwrap();
    let invalid = w.log.invalid(&payment, &w.bank.card, NOW + 10).unwrap();
    assert_eq!(invalid.body.outcome, Outcome::Invalid);
    let fresh = w
        .refresh(&coins, Some(invalid), &["EUR5"], NOW + 20)
        .unwrap();
    assert_eq!(fresh.len(), 1);
    w.bank.book.check_invariant().unwrap();
}

#[test]
fn exchange_makes_change_for_unspent_coins() {
    let mut w = World::new();
    let five = w.withdraw(&["EUR5"]);
    let change = w
        .refresh(&five, None, &["EUR2", "EUR2", "EUR1"], NOW + 5)
        .unwrap();
    assert_eq!(change.len(), 3);
    assert_eq!(
        w.bank.book.coin_status(&five[0].coin.id()),
        CoinStatus::Exchanged
    );
    // Value must be kept exactly.
    let two = w.withdraw(&["EUR2"]);
    for outs in [&["EUR1"][..], &["EUR2", "EUR1"][..]] {
        assert!(matches!(
            w.refresh(&two, None, outs, NOW + 5).unwrap_err().protocol(),
            ProtocolError::Mismatch {
                what: "refresh",
                ..
            }
        ));
    }
    // An exchanged coin is spent.
    assert!(matches!(
        w.refresh(&five, None, &["EUR5"], NOW + 6)
            .unwrap_err()
            .bank(),
        BankRefusal::AlreadySpent { .. }
    ));
    // The change pays exactly 3 EUR.
    w.pay(&change[1..], w.terms(1, 300, NOW + DAY)).unwrap();
    w.bank.book.check_invariant().unwrap();
}

#[test]
fn deposits_after_the_brand_is_withdrawn_are_refused() {
    let mut w = World::new();
    let coins = w.withdraw(&["EUR1"]);
    let payment = w.pay(&coins, w.terms(1, 100, NOW + DAY)).unwrap();
    let commit = w.commit(&payment, NOW + 10).unwrap();
    assert!(matches!(
        w.deposit(&payment, &commit, NOW + 90 * DAY)
            .unwrap_err()
            .bank(),
        BankRefusal::BrandWithdrawn { .. }
    ));
    w.deposit(&payment, &commit, NOW + 90 * DAY - 1).unwrap();
}

#[test]
fn nothing_a_withdrawal_records_appears_in_spend_side_records() {
    let mut w = World::new();
    let pending = w.pending(&["EUR2", "EUR1"]);
    let req = WithdrawRequest::new(
        &w.alice,
        &w.bank.card,
        [77; 32],
        pending.iter().map(|p| p.blinded()).collect(),
        NOW,
    );
    let withdrawn = w.bank.withdraw(&req, NOW).unwrap();
    let coins = finalize(&w.bank.card, pending, &withdrawn);
    let payment = w.pay(&coins, w.terms(1, 300, NOW + DAY)).unwrap();
    let lock = LockRequest::new(&coins, w.terms(1, 300, NOW + DAY), NOW);
    let commit = w.commit(&payment, NOW + 10).unwrap();
    let deposit = w.deposit(&payment, &commit, NOW + 20).unwrap();
    let mut spend_side = Vec::new();
    for bytes in [
        vtp_protocol::encoding::canonical(&lock),
        payment.to_file(),
        commit.to_file(),
        deposit.to_file(),
        vtp_protocol::encoding::canonical(&DepositRequest::new(
            &w.merchant,
            &payment,
            &commit,
            NOW,
        )),
    ] {
        spend_side.extend_from_slice(&bytes);
        spend_side.extend_from_slice(&[0xa5; 16]);
    }
    // Every byte string of the withdrawal record except the ids the two
    // sides must share (bank, brands): the account, the request id, the
    // blinded messages, the blind signatures, the hashes and signatures.
    let BankStatementKind::Withdrawn {
        account,
        request_id,
        request,
        signatures,
        ..
    } = &withdrawn.body.kind
    else {
        panic!()
    };
    let mut secrets: Vec<Vec<u8>> = vec![
        account.0 .0.to_vec(),
        request_id.to_vec(),
        request.0.to_vec(),
        withdrawn.signature.0.to_vec(),
        req.signature.0.to_vec(),
        withdrawn.hash().0.to_vec(),
        w.alice.card().sign_key().compressed(),
    ];
    secrets.extend(signatures.iter().cloned());
    secrets.extend(req.body.items.iter().map(|i| i.blinded.clone()));
    for (i, s) in secrets.iter().enumerate() {
        for window in s.windows(12) {
            assert!(
                !spend_side.windows(12).any(|x| x == window),
                "withdraw-side byte string {i} ({}) appears on the spend side",
                hex::encode(window)
            );
        }
    }
    // The check can fail: a coin's own bytes do appear on the spend side.
    assert!(spend_side
        .windows(12)
        .any(|x| x == &coins[0].coin.signature[..12]));
}

#[test]
fn the_invariant_checker_catches_a_bank_that_issues_more_than_it_debits() {
    let mut w = World::new();
    let pending = w.pending(&["EUR5"]);
    let req = WithdrawRequest::new(
        &w.alice,
        &w.bank.card,
        [5; 32],
        pending.iter().map(|p| p.blinded()).collect(),
        NOW,
    );
    let auth = req.authenticate(&w.bank.card, NOW).unwrap();
    let BankDecision::Sign(p) = auth.decide(None, Some(10_000), NOW) else {
        panic!()
    };
    let sigs = vec![w.bank.raw_sign(p.items()[0].brand, &p.items()[0].blinded)];
    let mut body = p
        .statement(w.bank.card.id(), sigs, w.bank.position())
        .unwrap();
    // A buggy bank debits 1 EUR for a 5 EUR coin.
    if let BankStatementKind::Withdrawn { debited, .. } = &mut body.kind {
        debited.units = 100;
    }
    let st = w.bank.sign(body);
    w.bank.book.apply_withdraw(&p, &st).unwrap();
    assert!(matches!(
        w.bank.book.check_invariant(),
        Err(book::InvariantViolation::FaceValueMismatch { .. })
    ));
}

#[test]
fn coin_states_have_only_the_documented_transitions() {
    use CoinEvent as E;
    use CoinStatus as S;
    let (t, u) = (Digest32([1; 32]), Digest32([2; 32]));
    let states = [
        S::Unspent,
        S::Locked { txn: t },
        S::Deposited { txn: t },
        S::Released { txn: t },
        S::Exchanged,
    ];
    let events = [
        E::Lock { txn: t },
        E::Deposit { txn: t },
        E::Release { txn: t },
        E::Exchange,
        E::Deposit { txn: u },
        E::Release { txn: u },
    ];
    let mut allowed = Vec::new();
    for s in states {
        for e in events {
            if let Ok(n) = s.next(e) {
                allowed.push((s, e, n));
            }
        }
    }
    assert_eq!(
        allowed,
        vec![
            (S::Unspent, E::Lock { txn: t }, S::Locked { txn: t }),
            (S::Unspent, E::Exchange, S::Exchanged),
            (
                S::Locked { txn: t },
                E::Deposit { txn: t },
                S::Deposited { txn: t }
            ),
            (
                S::Locked { txn: t },
                E::Release { txn: t },
                S::Released { txn: t }
            ),
        ]
    );
}

#[test]
fn bank_cards_check_their_brands() {
    let specs = brand_specs();
    let bank = StandInBank::new("b", 0x51, &specs);
    let body = bank.card.body().clone();
    let resign = |b: card::BankCardBody| {
        let sig = sign_p256(&bank.sign, &b.signing_digest());
        BankCard::assemble(b, sig)
    };
    resign(body.clone()).unwrap();
    let mut b = body.clone();
    b.brands[1].id = b.brands[0].id;
    assert!(resign(b).is_err(), "duplicate brand id");
    let mut b = body.clone();
    b.brands[0].deposit_until = b.brands[0].spend_until + 10;
    assert!(resign(b).is_err(), "no deposit window");
    let mut b = body.clone();
    b.brands[0].exponent = vec![3];
    assert!(resign(b).is_err(), "exponent 3");
    let mut b = body.clone();
    b.brands[0].modulus.truncate(128);
    assert!(resign(b).is_err(), "1024-bit key");
    let mut b = body.clone();
    b.brands[0].value.units = 0;
    assert!(resign(b).is_err(), "worthless brand");
    // A body with the signature of another body.
    let mut b = body.clone();
    b.name = "other".into();
    let sig = sign_p256(&bank.sign, &body.signing_digest());
    assert!(matches!(
        BankCard::assemble(b, sig),
        Err(ProtocolError::BadSignature { .. })
    ));
    assert_eq!(
        BankCard::from_file(&bank.card.to_file()).unwrap(),
        bank.card
    );
}
