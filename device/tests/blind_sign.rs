//! The bank's blind-signing operation against a real token (SoftHSM2, or
//! kryoptic with `VTP_TEST_TOKEN=kryoptic`; see `common`): brand keys, a
//! withdrawal round trip whose coins verify as standard RSASSA-PSS, and the
//! refusals (blinded values not below n or of the wrong length, a brand key
//! that would decrypt, a TP key that would blind-sign, planted keys).

use std::sync::{Arc, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rsa::{BigUint, RsaPublicKey};
use sha2::{Digest as _, Sha384};

use vtp_device::devtoken::DevToken;
use vtp_device::{BlindSignError, Day, DeviceError, KeyId, Token};
use vtp_protocol::bank::card::BankCardBody;
use vtp_protocol::bank::{
    BankCard, BankDecision, BankStatementKind, Brand, BrandId, Currency, Issuance, PendingCoin,
    WithdrawRequest,
};
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::{EcPoint, Signature, Timestamp};

mod common;

const LABEL: &str = "vtp-blind-test";
const NOW: Timestamp = 1_800_000_000;
const DAY: u64 = 86_400;

struct Fixture {
    _dir: tempfile::TempDir,
    dev: DevToken,
    token: Arc<Token>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("vtp-blind-token-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let dev = common::dev_token(dir.path(), LABEL);
        let token = Arc::new(Token::open(&dev.token_config()).unwrap());
        Fixture {
            _dir: dir,
            dev,
            token,
        }
    })
}

fn token() -> &'static Token {
    &fixture().token
}

/// SoftHSM races when token objects are created concurrently.
fn creating() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// One RSA-3072 brand key for the tests, issued until 30 days after NOW.
fn brand_key() -> KeyId {
    static K: OnceLock<KeyId> = OnceLock::new();
    *K.get_or_init(|| {
        let _g = creating();
        token()
            .generate_brand_key(3072, Day::of(NOW + 30 * DAY))
            .unwrap()
    })
}

/// The bank's statement key, on the token too.
fn bank_sign_key() -> KeyId {
    static K: OnceLock<KeyId> = OnceLock::new();
    *K.get_or_init(|| {
        let _g = creating();
        token().generate_signing_key().unwrap()
    })
}

fn eur(units: u64) -> vtp_protocol::bank::Amount {
    vtp_protocol::bank::Amount::new(&Currency::new("EUR").unwrap(), units)
}

fn brand_for(key: KeyId, issue_until: Timestamp) -> Brand {
    let p = token().brand_public(key).unwrap();
    Brand {
        id: BrandId(key),
        name: "EUR1".into(),
        value: eur(100),
        issue_until,
        spend_until: issue_until + 30 * DAY,
        deposit_until: issue_until + 60 * DAY,
        modulus: p.modulus,
        exponent: p.exponent,
    }
}

/// A bank card signed by the token's P-256 key.
fn bank_card(brands: Vec<Brand>) -> BankCard {
    let sk = bank_sign_key();
    let body = BankCardBody {
        name: "token bank".into(),
        sign_key: EcPoint::from_sec1(&token().ec_public(sk).unwrap()).unwrap(),
        brands,
        clock_skew_secs: 300,
        created: NOW,
    };
    let sig = token().sign_p256(sk, &body.signing_digest().0).unwrap();
    BankCard::assemble(body, Signature(sig)).unwrap()
}

fn raw_session() -> Session {
    let dev = &fixture().dev;
    let pkcs11 = Pkcs11::new(&dev.module).unwrap();
    let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label() == LABEL)
        .unwrap();
    pkcs11.open_rw_session(slot).unwrap()
}

fn private_handle(s: &Session, id: KeyId) -> ObjectHandle {
    s.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Id(id.0.to_vec()),
    ])
    .unwrap()[0]
}

#[test]
fn a_generated_brand_key_passes_the_brand_policy_and_is_listed_apart() {
    let id = brand_key();
    let listed = token().list_brand_keys().unwrap();
    let k = listed.iter().find(|k| k.id == id).expect("listed");
    assert!(k.checks_ok, "{:?}", k.problems);
    assert_eq!(k.bits, 3072);
    assert_eq!(k.until, Some(Day::of(NOW + 30 * DAY)));
    assert_eq!(
        k.label,
        format!("vtp-brand-{id}-{}", Day::of(NOW + 30 * DAY).label())
    );
    assert!(
        token().list_keys().unwrap().iter().all(|k| k.id != id),
        "brand keys are not TP keys"
    );
    let p = token().brand_public(id).unwrap();
    assert_eq!(p.modulus.len(), 384);
    assert_eq!(p.exponent, vec![1, 0, 1]);
    // The key cannot be loosened afterwards (CKA_MODIFIABLE false).
    let s = raw_session();
    let h = private_handle(&s, id);
    assert!(s.update_attributes(h, &[Attribute::Decrypt(true)]).is_err());
    assert!(s
        .update_attributes(
            h,
            &[Attribute::AllowedMechanisms(vec![
                MechanismType::RSA_X_509,
                MechanismType::RSA_PKCS_OAEP
            ])]
        )
        .is_err());
    assert!(matches!(
        token().generate_brand_key(2048, Day::of(NOW)),
        Err(DeviceError::InvalidArgument(_))
    ));
}

#[test]
fn a_withdrawal_through_the_token_gives_standard_rsassa_pss_coins() {
    let key = brand_key();
    let card = bank_card(vec![brand_for(key, NOW + 30 * DAY)]);
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let alice = IdentitySecret::generate("Alice", NOW - 10, &mut rng).unwrap();
    let pending: Vec<PendingCoin> = (0..3)
        .map(|_| PendingCoin::new(&card, BrandId(key), NOW, &mut rng).unwrap())
        .collect();
    let req = WithdrawRequest::new(
        &alice,
        &card,
        [1; 32],
        pending.iter().map(|p| p.blinded()).collect(),
        NOW,
    );
    let auth = req.authenticate(&card, NOW).unwrap();
    let BankDecision::Sign(permit) = auth.decide(None, Some(1000), NOW) else {
        panic!("the rules allow it")
    };
    let sigs = token().blind_sign_issuance(&permit).unwrap();
    assert_eq!(sigs.len(), 3);
    // The statement checks every signature again.
    let body = permit
        .statement(
            card.id(),
            sigs.clone(),
            vtp_protocol::affidavit::ChainPosition {
                seq: 1,
                prev: vtp_protocol::affidavit::ChainPosition::GENESIS_PREV,
            },
        )
        .unwrap();
    assert!(matches!(body.kind, BankStatementKind::Withdrawn { .. }));
    let brand = card.brand(BrandId(key)).unwrap();
    let pk = RsaPublicKey::new(
        BigUint::from_bytes_be(&brand.modulus),
        BigUint::from_bytes_be(&brand.exponent),
    )
    .unwrap();
    for (p, s) in pending.into_iter().zip(sigs) {
        assert_eq!(s.len(), 384);
        let coin = p.finalize(&card, &s).unwrap().coin;
        coin.verify(&card).unwrap();
        pk.verify(
            rsa::Pss::new_with_salt::<Sha384>(48),
            &Sha384::digest(coin.signed_message()),
            &coin.signature,
        )
        .expect("standard RSASSA-PSS (SHA-384, MGF1-SHA-384, 48-byte salt)");
    }
}

#[test]
fn blinded_values_not_below_n_or_of_the_wrong_length_never_reach_the_token() {
    let key = brand_key();
    let p = token().brand_public(key).unwrap();
    let n = BigUint::from_bytes_be(&p.modulus);
    let pad = |x: &BigUint| {
        let b = x.to_bytes_be();
        let mut v = vec![0u8; 384 - b.len()];
        v.extend_from_slice(&b);
        v
    };
    for m in [pad(&n), pad(&(&n + 1u32)), vec![0xff; 384]] {
        assert!(matches!(
            token().blind_sign(key, &m),
            Err(BlindSignError::NotBelowModulus { .. })
        ));
    }
    let below = pad(&(&n - 1u32));
    // SoftHSM 2.6.1 would end this process on the k+1-byte input.
    let mut long = vec![0u8];
    long.extend_from_slice(&below);
    for (m, len) in [(long, 385), (below[1..].to_vec(), 383), (vec![], 0)] {
        match token().blind_sign(key, &m) {
            Err(BlindSignError::WrongLength {
                expected: 384, got, ..
            }) => assert_eq!(got, len),
            other => panic!("{other:?}"),
        }
    }
    // The largest value below n, and 0, are signed (RSASP1's range).
    let s = token().blind_sign(key, &below).unwrap();
    let e = BigUint::from_bytes_be(&p.exponent);
    assert_eq!(BigUint::from_bytes_be(&s).modpow(&e, &n), &n - 1u32);
    token().blind_sign(key, &[0u8; 384]).unwrap();
}

#[test]
fn a_brand_key_cannot_decrypt() {
    let key = brand_key();
    let s = raw_session();
    let h = private_handle(&s, key);
    let r = s.decrypt(&Mechanism::RsaX509, h, &[1u8; 384]);
    eprintln!("raw C_Decrypt(CKM_RSA_X_509) with the brand key: {r:?}");
    assert!(r.is_err());
    // Through vtp-device: the encryption-key policy refuses it (never "does
    // not decrypt", which would read as the envelope's fault).
    match token().unwrap_and_decrypt(key, &[1u8; 384], &[0; 12], b"", &[0u8; 32]) {
        Err(DeviceError::KeyPolicy { problem, .. }) => {
            assert!(problem.contains("CKA_UNWRAP is false"), "{problem}")
        }
        other => panic!("{other:?}"),
    }
    assert!(token().rsa_public(key).is_err());
}

#[test]
fn the_tps_decryption_key_cannot_blind_sign() {
    let enc = {
        let _g = creating();
        token()
            .generate_encryption_key(2048, fixture().dev.kind.preferred_oaep())
            .unwrap()
    };
    match token().blind_sign(enc, &[1u8; 256]) {
        Err(BlindSignError::Device(DeviceError::KeyPolicy { problem, .. })) => {
            assert!(problem.contains("CKA_SIGN is false"), "{problem}");
            assert!(problem.contains("CKM_RSA_X_509"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    // Nor does the token, asked directly.
    let s = raw_session();
    let h = private_handle(&s, enc);
    let r = s.sign(&Mechanism::RsaX509, h, &[1u8; 256]);
    eprintln!("raw C_Sign(CKM_RSA_X_509) with the TP's OAEP key: {r:?}");
    assert!(r.is_err());
    // The encryption key still decrypts as before (its role is unchanged).
    token().self_test_encryption_key(enc).unwrap();
}

#[test]
fn planted_brand_keys_that_can_be_loosened_are_refused() {
    let _g = creating();
    let s = raw_session();
    let mut id = [0u8; 8];
    rand_chacha::rand_core::RngCore::fill_bytes(&mut ChaCha20Rng::from_entropy(), &mut id);
    let id = KeyId(id);
    let label = format!("vtp-brand-{id}-{}", Day::of(NOW).label()).into_bytes();
    s.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::ModulusBits(3072u64.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Id(id.0.to_vec()),
            Attribute::Label(label.clone()),
        ],
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::SignRecover(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::AllowedMechanisms(vec![MechanismType::RSA_X_509]),
            Attribute::EndDate(
                cryptoki::types::Date::new_from_str_slice("2027", "01", "15").unwrap(),
            ),
            Attribute::Id(id.0.to_vec()),
            Attribute::Label(label),
        ],
    )
    .unwrap();
    drop(_g);
    match token().blind_sign(id, &[0u8; 384]) {
        Err(BlindSignError::Device(DeviceError::KeyPolicy { problem, .. })) => {
            assert!(problem.contains("CKA_MODIFIABLE is true"), "{problem}")
        }
        other => panic!("{other:?}"),
    }
    let listed = token().list_brand_keys().unwrap();
    let k = listed.iter().find(|k| k.id == id).unwrap();
    assert!(!k.checks_ok);
}

#[test]
fn issuances_need_the_cards_key_and_a_live_key() {
    let key = brand_key();
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let alice = IdentitySecret::generate("Alice", NOW - 10, &mut rng).unwrap();
    let withdraw = |card: &BankCard, at: Timestamp, rng: &mut ChaCha20Rng| {
        let p = PendingCoin::new(card, BrandId(key), at, rng).unwrap();
        let req = WithdrawRequest::new(&alice, card, [2; 32], vec![p.blinded()], at);
        match req
            .authenticate(card, at)
            .unwrap()
            .decide(None, Some(1000), at)
        {
            BankDecision::Sign(permit) => permit,
            other => panic!("{other:?}"),
        }
    };
    // The card lets the brand be issued 40 days, the key only 30: the
    // device holds to the key's end date.
    let card = bank_card(vec![brand_for(key, NOW + 40 * DAY)]);
    let late = withdraw(&card, NOW + 31 * DAY, &mut rng);
    assert!(late.at() >= Day::of(NOW + 30 * DAY).end());
    assert!(matches!(
        token().blind_sign_issuance(&late),
        Err(BlindSignError::Expired { .. })
    ));
    token()
        .blind_sign_issuance(&withdraw(&card, NOW + 29 * DAY, &mut rng))
        .unwrap();
    // A card that lists another modulus under this key's id.
    let mut other = brand_for(key, NOW + 30 * DAY);
    let other_key = {
        let _g = creating();
        token()
            .generate_brand_key(3072, Day::of(NOW + 30 * DAY))
            .unwrap()
    };
    other.modulus = token().brand_public(other_key).unwrap().modulus;
    let card = bank_card(vec![other]);
    // The client blinds for the card's (wrong) key; the token's key differs.
    assert!(matches!(
        token().blind_sign_issuance(&withdraw(&card, NOW, &mut rng)),
        Err(BlindSignError::NotTheCardsKey { .. })
    ));
}
