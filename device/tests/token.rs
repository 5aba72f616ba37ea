//! Integration tests against a real token: SoftHSM2 or kryoptic, chosen by
//! `VTP_TEST_TOKEN` (see `common`).
//!
//! One process can initialize a module with one configuration only, so this
//! test binary creates ONE development token (in a `OnceLock`), points the
//! module's configuration variable at it before the first `Token::open`, and
//! shares one `Token` between all tests (which also exercises it from
//! several threads).

use std::sync::{Arc, OnceLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::Session;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rand_core::{OsRng, RngCore};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, Oaep, RsaPrivateKey, RsaPublicKey};
use vtp_device::devtoken::{DevToken, DevTokenKind};
use vtp_device::{DeviceError, DoesNotDecrypt, KeyId, KeyKind, OaepHash, RsaPublic, Token};

mod common;

const LABEL: &str = "vtp-device-test";

struct Fixture {
    _dir: tempfile::TempDir,
    dev: DevToken,
    token: Arc<Token>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("vtp-device-token-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        // Sets the module's variable before the first C_Initialize.
        let dev = common::dev_token(dir.path(), LABEL);
        let token = Arc::new(Token::open(&dev.token_config()).unwrap());
        Fixture {
            _dir: dir,
            dev,
            token,
        }
    })
}

/// Held by every test step that creates token objects. `Token` serializes its
/// own key management, but the planting tests create objects through raw
/// sessions behind its back, and SoftHSM 2.6 races when token objects are
/// created concurrently (seen here as a sporadic CKR_TEMPLATE_INCONSISTENT
/// from C_GenerateKeyPair).
fn creating() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn token() -> &'static Token {
    &fixture().token
}

fn kind() -> DevTokenKind {
    fixture().dev.kind
}

/// The OAEP hash of the shared key: SHA-256 where the token has it
/// (kryoptic), SHA-1 on SoftHSM 2.6.
fn oaep() -> OaepHash {
    kind().preferred_oaep()
}

/// One RSA-2048 OAEP key shared by the tests.
fn enc_key() -> KeyId {
    static K: OnceLock<KeyId> = OnceLock::new();
    *K.get_or_init(|| {
        let _g = creating();
        token().generate_encryption_key(2048, oaep()).unwrap()
    })
}

/// OAEP-encrypt `k` to `p` with its recorded hash, as a sender does.
fn oaep_encrypt(p: &RsaPublic, k: &[u8]) -> Vec<u8> {
    let key = rsa_key(p);
    match p.oaep {
        OaepHash::Sha1 => key.encrypt(&mut OsRng, Oaep::new::<sha1::Sha1>(), k),
        OaepHash::Sha256 => key.encrypt(&mut OsRng, Oaep::new::<sha2::Sha256>(), k),
    }
    .unwrap()
}

fn sign_key() -> KeyId {
    static K: OnceLock<KeyId> = OnceLock::new();
    *K.get_or_init(|| {
        let _g = creating();
        token().generate_signing_key().unwrap()
    })
}

fn rsa_key(p: &RsaPublic) -> RsaPublicKey {
    RsaPublicKey::new(
        BigUint::from_bytes_be(&p.modulus),
        BigUint::from_bytes_be(&p.exponent),
    )
    .unwrap()
}

struct Sealed {
    wrapped: Vec<u8>,
    nonce: [u8; 12],
    aad: Vec<u8>,
    ct: Vec<u8>,
    plain: Vec<u8>,
}

/// Encrypt 1 KiB the way a sender would: fresh AES-256 key, OAEP (with the
/// key's hash) to the exported public key, AES-256-GCM with associated data.
fn seal_with_key_len(id: KeyId, key_len: usize) -> Sealed {
    let public = token().rsa_public(id).unwrap();
    let mut k = vec![0u8; key_len];
    OsRng.fill_bytes(&mut k);
    let wrapped = oaep_encrypt(&public, &k);
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut nonce);
    let mut plain = vec![0u8; 1024];
    OsRng.fill_bytes(&mut plain);
    let aad = b"vtp test header: A, B, T, H(c_m)".to_vec();
    let payload = Payload {
        msg: &plain,
        aad: &aad,
    };
    let ct = match key_len {
        16 => Aes128Gcm::new_from_slice(&k)
            .unwrap()
            .encrypt(&Nonce::from(nonce), payload),
        32 => Aes256Gcm::new_from_slice(&k)
            .unwrap()
            .encrypt(&Nonce::from(nonce), payload),
        // No AES key of this length: encrypt under some AES-256 key.
        _ => Aes256Gcm::new_from_slice(&[7u8; 32])
            .unwrap()
            .encrypt(&Nonce::from(nonce), payload),
    }
    .unwrap();
    Sealed {
        wrapped,
        nonce,
        aad,
        ct,
        plain,
    }
}

fn open(id: KeyId, s: &Sealed) -> Result<Result<Vec<u8>, DoesNotDecrypt>, DeviceError> {
    token()
        .unwrap_and_decrypt(id, &s.wrapped, &s.nonce, &s.aad, &s.ct)
        .map(|r| r.map(|z| z.to_vec()))
}

#[test]
fn open_and_info() {
    let info = token().info();
    assert_eq!(info.label, LABEL);
    assert!(
        !info.serial.is_empty() && !info.serial.ends_with(' '),
        "{info:?}"
    );
    assert_eq!(info.manufacturer, kind().manufacturer());
    // Open the same token by serial too (same process: already logged in).
    let mut cfg = fixture().dev.token_config();
    cfg.token = vtp_device::TokenSelector::Serial(info.serial.clone());
    let again = Token::open(&cfg).unwrap();
    assert_eq!(again.info(), info);
}

#[test]
fn generated_keys_are_listed_and_pass_the_policy() {
    let (e, s) = (enc_key(), sign_key());
    let keys = token().list_keys().unwrap();
    let ek = keys
        .iter()
        .find(|k| k.id == e)
        .expect("encryption key listed");
    assert_eq!(
        ek.kind,
        KeyKind::Encryption {
            bits: 2048,
            oaep: Some(oaep())
        }
    );
    assert_eq!(ek.label, format!("vtp-enc-{e}-{}", oaep()));
    assert!(ek.checks_ok, "{:?}", ek.problems);
    let sk = keys.iter().find(|k| k.id == s).expect("signing key listed");
    assert_eq!(sk.kind, KeyKind::Signing);
    assert_eq!(sk.label, format!("vtp-sign-{s}"));
    assert!(sk.checks_ok, "{:?}", sk.problems);
    assert!(token().has_encryption_key(e));
    assert!(!token().has_encryption_key(s));
}

#[test]
fn unsupported_rsa_size_is_refused() {
    let e = token()
        .generate_encryption_key(1024, OaepHash::Sha1)
        .unwrap_err();
    assert!(matches!(e, DeviceError::InvalidArgument(_)), "{e}");
}

#[test]
fn rsa_public_key_export() {
    let p = token().rsa_public(enc_key()).unwrap();
    assert_eq!(p.modulus.len(), 256);
    assert_ne!(p.modulus[0], 0);
    assert_eq!(p.exponent, vec![1, 0, 1]);
}

#[test]
fn unwrap_and_decrypt_round_trip() {
    let id = enc_key();
    let s = seal_with_key_len(id, 32);
    assert_eq!(open(id, &s).unwrap().unwrap(), s.plain);
}

#[test]
fn tampering_does_not_decrypt() {
    let id = enc_key();
    let s = seal_with_key_len(id, 32);
    for what in ["wrapped", "ct", "tag", "aad", "nonce"] {
        let mut t = Sealed { ..seal_clone(&s) };
        match what {
            "wrapped" => t.wrapped[100] ^= 1,
            "ct" => t.ct[10] ^= 1,
            "tag" => *t.ct.last_mut().unwrap() ^= 1,
            "aad" => t.aad[0] ^= 1,
            _ => t.nonce[0] ^= 1,
        }
        assert_eq!(open(id, &t).unwrap(), Err(DoesNotDecrypt), "flipped {what}");
    }
    // Truncated inputs.
    let mut t = seal_clone(&s);
    t.ct.truncate(15);
    assert_eq!(open(id, &t).unwrap(), Err(DoesNotDecrypt));
    let mut t = seal_clone(&s);
    t.wrapped.truncate(200);
    assert_eq!(open(id, &t).unwrap(), Err(DoesNotDecrypt));
    let mut t = seal_clone(&s);
    t.wrapped.clear();
    assert_eq!(open(id, &t).unwrap(), Err(DoesNotDecrypt));
    // The original still decrypts (sessions that failed were replaced).
    assert_eq!(open(id, &s).unwrap().unwrap(), s.plain);
}

#[test]
fn a_wrapped_key_that_is_not_an_aes_256_key_does_not_decrypt() {
    let id = enc_key();
    for len in [0, 1, 24, 31, 33, 64] {
        let s = seal_with_key_len(id, len);
        assert_eq!(
            open(id, &s).unwrap(),
            Err(DoesNotDecrypt),
            "key length {len}"
        );
    }
    // A 16-byte key with an AES-128-GCM ciphertext: refused where the token
    // reports the unwrapped key's CKA_VALUE_LEN (kryoptic). SoftHSM 2.6
    // reports 0, so there it decrypts (documented limitation); either way it
    // is never a device error.
    let s = seal_with_key_len(id, 16);
    match (kind(), open(id, &s).unwrap()) {
        (_, Err(DoesNotDecrypt)) => {}
        (DevTokenKind::SoftHsm, Ok(p)) => {
            assert_eq!(p, s.plain);
            eprintln!("note: SoftHSM cannot enforce the 32-byte unwrapped key length");
        }
        (k, Ok(_)) => panic!("{k} reports CKA_VALUE_LEN: a 16-byte key must be refused"),
    }
}

/// kryoptic takes CKA_VALUE_LEN in an unwrap template as "use the first N
/// bytes": were it in vtp's template, a 64-byte payload starting with the
/// real key would decrypt. It is not, so this never decrypts.
#[test]
fn a_longer_payload_that_starts_with_the_key_does_not_decrypt() {
    let id = enc_key();
    let public = token().rsa_public(id).unwrap();
    for extra in [1usize, 32] {
        let mut k = vec![0u8; 32 + extra];
        OsRng.fill_bytes(&mut k);
        let wrapped = oaep_encrypt(&public, &k);
        let nonce = [2u8; 12];
        let ct = Aes256Gcm::new_from_slice(&k[..32])
            .unwrap()
            .encrypt(&Nonce::from(nonce), &b"prefix"[..])
            .unwrap();
        let r = token()
            .unwrap_and_decrypt(id, &wrapped, &nonce, b"", &ct)
            .unwrap();
        assert_eq!(
            r.map(|z| z.to_vec()),
            Err(DoesNotDecrypt),
            "{extra} extra bytes"
        );
    }
}

/// SoftHSM 2.6: OAEP with SHA-1 only; kryoptic: SHA-1 and SHA-256. A key
/// with a hash the token lacks is refused at generation by its self-test,
/// and the half-made pair is removed.
#[test]
fn oaep_hashes_work_where_the_token_has_them() {
    assert_eq!(
        token().preferred_oaep_hash().unwrap(),
        kind().preferred_oaep()
    );
    for hash in [OaepHash::Sha1, OaepHash::Sha256] {
        let supported = !(kind() == DevTokenKind::SoftHsm && hash == OaepHash::Sha256);
        let generated = {
            let _g = creating();
            token().generate_encryption_key(2048, hash)
        };
        match generated {
            Ok(id) => {
                assert!(supported, "{} made an OAEP-{hash} key", kind());
                let public = token().rsa_public(id).unwrap();
                assert_eq!(public.oaep, hash);
                let mut k = [0u8; 32];
                OsRng.fill_bytes(&mut k);
                let wrapped = oaep_encrypt(&public, &k);
                let nonce = [1u8; 12];
                let ct = Aes256Gcm::new_from_slice(&k)
                    .unwrap()
                    .encrypt(&Nonce::from(nonce), &b"hi"[..])
                    .unwrap();
                let out = token()
                    .unwrap_and_decrypt(id, &wrapped, &nonce, b"", &ct)
                    .unwrap()
                    .unwrap();
                assert_eq!(&out[..], b"hi");
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(!supported, "{}: OAEP-{hash}: {msg}", kind());
                assert!(matches!(e, DeviceError::SelfTest { .. }), "{msg}");
                assert!(msg.contains("self-test") && msg.contains("sha256"), "{msg}");
                let keys = token().list_keys().unwrap();
                assert!(
                    !keys.iter().any(|k| k.label.ends_with("-sha256")),
                    "{keys:?}"
                );
            }
        }
    }
}

fn seal_clone(s: &Sealed) -> Sealed {
    Sealed {
        wrapped: s.wrapped.clone(),
        nonce: s.nonce,
        aad: s.aad.clone(),
        ct: s.ct.clone(),
        plain: s.plain.clone(),
    }
}

#[test]
fn unknown_or_wrong_kind_key_is_an_error_not_does_not_decrypt() {
    let s = seal_with_key_len(enc_key(), 32);
    let unknown = KeyId([0xee; 8]);
    let e = open(unknown, &s).unwrap_err();
    assert!(matches!(e, DeviceError::KeyNotFound { .. }), "{e}");
    assert!(e.to_string().contains("eeeeeeeeeeeeeeee"), "{e}");
    let e = open(sign_key(), &s).unwrap_err();
    assert!(matches!(e, DeviceError::KeyNotFound { .. }), "{e}");
    let e = token().sign_p256(enc_key(), &[0; 32]).unwrap_err();
    assert!(matches!(e, DeviceError::KeyNotFound { .. }), "{e}");
}

#[test]
fn ecdsa_signature_verifies() {
    let id = sign_key();
    let point = token().ec_public(id).unwrap();
    assert_eq!(point[0], 4);
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
    let mut digest = [0u8; 32];
    for _ in 0..5 {
        OsRng.fill_bytes(&mut digest);
        let sig = token().sign_p256(id, &digest).unwrap();
        let sig = p256::ecdsa::Signature::from_slice(&sig).unwrap();
        vk.verify_prehash(&digest, &sig).unwrap();
        digest[0] ^= 1;
        assert!(vk.verify_prehash(&digest, &sig).is_err());
    }
}

#[test]
fn concurrent_unwrap_and_decrypt() {
    let id = enc_key();
    let sealed: Vec<Sealed> = (0..4).map(|_| seal_with_key_len(id, 32)).collect();
    let sealed = Arc::new(sealed);
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let sealed = Arc::clone(&sealed);
            let tok = Arc::clone(&fixture().token);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let s = &sealed[(t + i) % sealed.len()];
                    let out = tok
                        .unwrap_and_decrypt(id, &s.wrapped, &s.nonce, &s.aad, &s.ct)
                        .unwrap()
                        .unwrap();
                    assert_eq!(&out[..], &s.plain[..]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

// ---- keys planted behind vtp's back must be refused ----

/// A raw logged-in session on the test token, bypassing vtp-device.
fn raw_session() -> Session {
    let dev = &fixture().dev;
    let pkcs11 = Pkcs11::new(&dev.module).unwrap();
    // Already initialized by the shared Token in this process.
    let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label() == LABEL)
        .unwrap();
    // Logged in already: login state is per process.
    pkcs11.open_rw_session(slot).unwrap()
}

fn random_id() -> KeyId {
    let mut b = [0u8; 8];
    OsRng.fill_bytes(&mut b);
    KeyId(b)
}

fn plant_rsa(extractable: bool, allowed: Option<Vec<MechanismType>>) -> KeyId {
    let _g = creating();
    let s = raw_session();
    let id = random_id();
    let label = format!("vtp-enc-{id}-sha1").into_bytes();
    let public = [
        Attribute::Token(true),
        Attribute::Wrap(true),
        Attribute::Encrypt(true),
        Attribute::ModulusBits(2048u64.into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
        Attribute::Id(id.0.to_vec()),
        Attribute::Label(label.clone()),
    ];
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
        Attribute::Unwrap(true),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Id(id.0.to_vec()),
        Attribute::Label(label),
    ];
    if let Some(a) = allowed {
        private.push(Attribute::AllowedMechanisms(a));
    }
    s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .unwrap();
    id
}

/// An RSA key generated off the token and imported: CKA_LOCAL is false.
fn plant_imported_rsa() -> KeyId {
    let _g = creating();
    let s = raw_session();
    let id = random_id();
    let label = format!("vtp-enc-{id}-sha1").into_bytes();
    let k = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let b = |n: &BigUint| n.to_bytes_be();
    let primes = k.primes();
    let private = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Unwrap(true),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::AllowedMechanisms(vec![MechanismType::RSA_PKCS_OAEP]),
        Attribute::Id(id.0.to_vec()),
        Attribute::Label(label),
        Attribute::Modulus(b(k.n())),
        Attribute::PublicExponent(b(k.e())),
        Attribute::PrivateExponent(b(k.d())),
        Attribute::Prime1(b(&primes[0])),
        Attribute::Prime2(b(&primes[1])),
    ];
    s.create_object(&private).unwrap();
    id
}

fn assert_refused(id: KeyId, expect_in_problem: &str) {
    let e = token().rsa_public(id).unwrap_err();
    match &e {
        DeviceError::KeyPolicy { id_hex, problem } => {
            assert_eq!(id_hex, &id.to_string());
            assert!(problem.contains(expect_in_problem), "{e}");
        }
        other => panic!("expected KeyPolicy, got {other}"),
    }
    let s = seal_with_key_len(enc_key(), 32);
    let e = token()
        .unwrap_and_decrypt(id, &s.wrapped, &s.nonce, &s.aad, &s.ct)
        .unwrap_err();
    assert!(matches!(e, DeviceError::KeyPolicy { .. }), "{e}");
    assert!(!token().has_encryption_key(id));
    let listed = token().list_keys().unwrap();
    let k = listed
        .iter()
        .find(|k| k.id == id)
        .expect("planted key listed");
    assert!(!k.checks_ok);
    assert!(
        k.problems.iter().any(|p| p.contains(expect_in_problem)),
        "{:?}",
        k.problems
    );
}

#[test]
fn extractable_key_without_allowed_mechanisms_is_refused() {
    let id = plant_rsa(true, None);
    assert_refused(id, "CKA_EXTRACTABLE");
    assert_refused(id, "CKA_ALLOWED_MECHANISMS");
}

#[test]
fn key_allowing_raw_rsa_is_refused() {
    let id = plant_rsa(
        false,
        Some(vec![MechanismType::RSA_PKCS_OAEP, MechanismType::RSA_X_509]),
    );
    assert_refused(id, "CKA_ALLOWED_MECHANISMS");
}

#[test]
fn imported_key_is_refused() {
    let id = plant_imported_rsa();
    assert_refused(id, "CKA_LOCAL");
    assert_refused(id, "CKA_NEVER_EXTRACTABLE");
}
