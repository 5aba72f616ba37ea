//! Measure how a development token behaves where tokens differ, with raw
//! `cryptoki` calls (not through vtp-device's classification). The facts in
//! `docs/tokens.md` come from this program:
//!
//!     cargo run -p vtp-device --example token_facts                  # SoftHSM
//!     VTP_TEST_TOKEN=kryoptic cargo run -p vtp-device --example token_facts
//!
//! It creates a throw-away token in a temporary directory.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::Error as CkError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rand_core::{OsRng, RngCore};
use rsa::{BigUint, Oaep, RsaPublicKey};
use vtp_device::devtoken::{create_dev_token, DevTokenKind};

fn rv<T, E: std::borrow::Borrow<CkError>>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => match e.borrow() {
            CkError::Pkcs11(rv, f) => format!("{rv:?} ({f:?})"),
            e => e.to_string(),
        },
    }
}

fn oaep(hash: MechanismType, mgf: PkcsMgfType, label: Option<&[u8]>) -> Mechanism<'_> {
    let src = match label {
        None => PkcsOaepSource::empty(),
        Some(l) => PkcsOaepSource::data_specified(l),
    };
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, src))
}

fn aes_template(value_len: Option<u64>) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Decrypt(true),
        Attribute::Encrypt(false),
    ];
    if let Some(l) = value_len {
        t.push(Attribute::ValueLen(l.into()));
    }
    t
}

fn rsa_pair(
    s: &Session,
    token: bool,
    allowed: Option<Vec<MechanismType>>,
) -> (ObjectHandle, ObjectHandle) {
    let public = [
        Attribute::Token(token),
        Attribute::Encrypt(true),
        Attribute::Wrap(true),
        Attribute::ModulusBits(2048u64.into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
    ];
    let mut private = vec![
        Attribute::Token(token),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Unwrap(true),
        Attribute::Decrypt(true),
    ];
    if let Some(a) = allowed {
        private.push(Attribute::AllowedMechanisms(a));
    }
    s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .expect("RSA key pair")
}

fn public_key(s: &Session, h: ObjectHandle) -> RsaPublicKey {
    let a = s
        .get_attributes(h, &[AttributeType::Modulus, AttributeType::PublicExponent])
        .unwrap();
    let (mut n, mut e) = (vec![], vec![]);
    for x in a {
        match x {
            Attribute::Modulus(v) => n = v,
            Attribute::PublicExponent(v) => e = v,
            _ => {}
        }
    }
    RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).unwrap()
}

fn main() {
    if let Ok(probe) = std::env::var("FACTS_CHILD_PROBE") {
        return child_probe(&probe);
    }
    let kind = DevTokenKind::from_env().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dev = create_dev_token(kind, dir.path(), "facts").unwrap();
    let (var, conf) = dev.conf_env();
    std::env::set_var(var, conf);
    // For the child processes of `probe_in_child`.
    std::env::set_var("FACTS_MODULE", &dev.module);
    std::env::set_var("FACTS_PIN_FILE", &dev.pin_file);
    let p = Pkcs11::new(&dev.module).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let li = p.get_library_info().unwrap();
    println!(
        "== {kind}: {} / {} {:?}, cryptoki {:?}",
        li.manufacturer_id(),
        li.library_description(),
        li.library_version(),
        li.cryptoki_version()
    );
    let slot = p.get_slots_with_token().unwrap()[0];
    println!("slot id: {}", slot.id());
    let ti = p.get_token_info(slot).unwrap();
    println!(
        "token: manufacturer {:?} model {:?} serial {:?} pin len {}..{}",
        ti.manufacturer_id(),
        ti.model(),
        ti.serial_number(),
        ti.min_pin_length(),
        ti.max_pin_length()
    );
    let pin = std::fs::read_to_string(&dev.pin_file).unwrap();
    let pin = AuthPin::from(pin.trim_end().to_owned());

    // ---- login semantics ----
    let s1 = p.open_rw_session(slot).unwrap();
    println!(
        "login with a wrong PIN: {}",
        rv(s1.login(
            UserType::User,
            Some(&AuthPin::from("wrong-pin-000".to_owned()))
        ))
    );
    println!("login: {}", rv(s1.login(UserType::User, Some(&pin))));
    let s2 = p.open_rw_session(slot).unwrap();
    println!(
        "second session's state: {:?}",
        s2.get_session_info().unwrap().session_state()
    );
    println!(
        "login again on the second session: {}",
        rv(s2.login(UserType::User, Some(&pin)))
    );
    drop(s1);
    drop(s2);
    let s3 = p.open_rw_session(slot).unwrap();
    println!(
        "after all sessions closed, a new session is: {:?}",
        s3.get_session_info().unwrap().session_state()
    );
    s3.login(UserType::User, Some(&pin)).unwrap();
    let s = s3;
    let other = p.open_rw_session(slot).unwrap();
    println!("logout on another session: {}", rv(other.logout()));
    println!(
        "anchor after that: {:?}",
        s.get_session_info().unwrap().session_state()
    );
    s.login(UserType::User, Some(&pin)).unwrap();

    // ---- objects visible without a class ----
    let all = s.find_objects(&[]).unwrap();
    let mut classes = std::collections::BTreeMap::new();
    for h in &all {
        let c = s
            .get_attributes(*h, &[AttributeType::Class])
            .ok()
            .and_then(|v| v.into_iter().next());
        *classes.entry(format!("{c:?}")).or_insert(0) += 1;
    }
    println!(
        "C_FindObjects({{}}) on a fresh token: {} objects {classes:?}",
        all.len()
    );

    // ---- OAEP hashes, labels ----
    let (pubk, privk) = rsa_pair(&s, false, None);
    for (name, h, m) in [
        ("sha1", MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        ("sha256", MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        ("sha384", MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
    ] {
        let aes = s
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::ValueLen(32u64.into()),
                    Attribute::Token(false),
                    Attribute::Extractable(true),
                    Attribute::Sensitive(false),
                ],
            )
            .unwrap();
        let w = s.wrap_key(&oaep(h, m, None), pubk, aes);
        let u = w
            .as_ref()
            .ok()
            .map(|w| rv(s.unwrap_key(&oaep(h, m, None), privk, w, &aes_template(None))));
        let lbl = w
            .as_ref()
            .ok()
            .map(|w| rv(s.unwrap_key(&oaep(h, m, Some(b"")), privk, w, &aes_template(None))));
        println!(
            "OAEP-{name}: wrap {}, unwrap {u:?}, unwrap with non-NULL empty label {lbl:?}",
            rv(w.as_ref())
        );
    }

    // ---- unwrap template, key lengths ----
    let pk = public_key(&s, pubk);
    let mech = oaep(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, None);
    let wrap = |k: &[u8]| {
        pk.encrypt(&mut OsRng, Oaep::new::<sha1::Sha1>(), k)
            .unwrap()
    };
    let k32 = [7u8; 32];
    let r = s.unwrap_key(&mech, privk, &wrap(&k32), &aes_template(Some(32)));
    println!(
        "unwrap with CKA_VALUE_LEN=32 in the template: {}",
        rv(r.as_ref())
    );
    let h = s
        .unwrap_key(&mech, privk, &wrap(&k32), &aes_template(None))
        .unwrap();
    println!(
        "CKA_VALUE_LEN of the unwrapped 32-byte key: {:?}",
        s.get_attributes(h, &[AttributeType::ValueLen])
            .map(|v| v.into_iter().next())
    );
    for len in [0usize, 1, 16, 24, 31, 33, 64] {
        let k = vec![9u8; len];
        let with = rv(s.unwrap_key(&mech, privk, &wrap(&k), &aes_template(Some(32))));
        let r = s.unwrap_key(&mech, privk, &wrap(&k), &aes_template(None));
        let (without, vl, dinit) = match r {
            Ok(h) => {
                let vl = s
                    .get_attributes(h, &[AttributeType::ValueLen])
                    .ok()
                    .and_then(|v| v.into_iter().next());
                let mut iv = [0u8; 12];
                let g = Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128u64.into()).unwrap());
                let d = rv(s.decrypt(&g, h, &[0u8; 32]));
                ("ok".to_string(), format!("{vl:?}"), d)
            }
            Err(e) => (rv(Err::<(), _>(e)), "-".into(), "-".into()),
        };
        println!("{len}-byte payload: unwrap with VALUE_LEN=32 {with}; without {without}, VALUE_LEN {vl}, GCM decrypt {dinit}");
    }

    // ---- tampering ----
    let mut k = [0u8; 32];
    OsRng.fill_bytes(&mut k);
    let wrapped = wrap(&k);
    let nonce = [3u8; 12];
    let aad = b"associated".to_vec();
    let ct = Aes256Gcm::new_from_slice(&k)
        .unwrap()
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &[5u8; 100],
                aad: &aad,
            },
        )
        .unwrap();
    let try_unwrap = |w: &[u8]| rv(s.unwrap_key(&mech, privk, w, &aes_template(None)));
    let mut w = wrapped.clone();
    w[100] ^= 1;
    println!("unwrap, flipped wrapped key: {}", try_unwrap(&w));
    println!(
        "unwrap, truncated wrapped key (200 bytes): {}",
        try_unwrap(&wrapped[..200])
    );
    println!("unwrap, empty wrapped key: {}", try_unwrap(&[]));
    let mut w = wrapped.clone();
    w[0] = 0xff;
    println!("unwrap, wrapped key >= modulus: {}", try_unwrap(&w));
    let key = s
        .unwrap_key(&mech, privk, &wrapped, &aes_template(None))
        .unwrap();
    let dec = |n: [u8; 12], a: &[u8], c: &[u8]| {
        let mut iv = n;
        let g = Mechanism::AesGcm(GcmParams::new(&mut iv, a, 128u64.into()).unwrap());
        rv(s.decrypt(&g, key, c))
    };
    println!("GCM, intact: {}", dec(nonce, &aad, &ct));
    let mut c = ct.clone();
    c[5] ^= 1;
    println!("GCM, flipped ciphertext: {}", dec(nonce, &aad, &c));
    let mut c = ct.clone();
    *c.last_mut().unwrap() ^= 1;
    println!("GCM, flipped tag: {}", dec(nonce, &aad, &c));
    println!("GCM, wrong AAD: {}", dec(nonce, b"other", &ct));
    println!("GCM, wrong nonce: {}", dec([4u8; 12], &aad, &ct));
    println!("GCM, 15-byte input: {}", dec(nonce, &aad, &ct[..15]));
    println!(
        "GCM, after failures, same session, intact: {}",
        dec(nonce, &aad, &ct)
    );

    // ---- ALLOWED_MECHANISMS enforcement and attribute defaults ----
    let (_pb, pr) = rsa_pair(&s, true, Some(vec![MechanismType::RSA_PKCS_OAEP]));
    println!(
        "C_Decrypt CKM_RSA_X_509 with a key allowing only OAEP: {}",
        rv(s.decrypt(&Mechanism::RsaX509, pr, &[1u8; 256]))
    );
    let (_pb, pr2) = rsa_pair(&s, true, None);
    println!(
        "C_Decrypt CKM_RSA_X_509 with a key without CKA_ALLOWED_MECHANISMS: {}",
        rv(s.decrypt(&Mechanism::RsaX509, pr2, &[1u8; 256]))
    );
    use AttributeType as T;
    for (what, h) in [("with ALLOWED", pr), ("without ALLOWED", pr2)] {
        for t in [
            T::Local,
            T::AlwaysSensitive,
            T::NeverExtractable,
            T::AllowedMechanisms,
            T::Sign,
            T::SignRecover,
            T::Derive,
            T::Private,
        ] {
            print!(
                "{t:?}={} ",
                match s.get_attributes(h, &[t]) {
                    Ok(v) => format!("{:?}", v.first()),
                    Err(e) => rv(Err::<(), _>(e)),
                }
            );
        }
        println!("<- RSA private key {what}");
    }

    // ---- brand keys: raw RSA signing (blind signatures) ----
    brand_key_facts(&s);

    // ---- EC ----
    let (ecpub, ecpriv) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::Verify(true),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
            ],
            &[
                Attribute::Token(false),
                Attribute::Sign(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
            ],
        )
        .unwrap();
    let point = s.get_attributes(ecpub, &[T::EcPoint]).unwrap();
    if let Some(Attribute::EcPoint(v)) = point.first() {
        println!("CKA_EC_POINT: {} bytes, starts {:02x?}", v.len(), &v[..3]);
    }
    println!(
        "ECDSA signature length: {:?}",
        s.sign(&Mechanism::Ecdsa, ecpriv, &[1u8; 32])
            .map(|v| v.len())
    );

    // ---- what cached handles do after a logout ----
    let (_tpub, tpriv) = rsa_pair(&s, true, Some(vec![MechanismType::RSA_PKCS_OAEP]));
    let tpk = public_key(&s, _tpub);
    let twrapped = tpk
        .encrypt(&mut OsRng, Oaep::new::<sha1::Sha1>(), &k)
        .unwrap();
    let (_epub, epriv) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::EcParams(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sign(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
            ],
        )
        .unwrap();
    s.logout().unwrap();
    println!(
        "logged out: C_Sign with a token EC key: {}",
        rv(s.sign(&Mechanism::Ecdsa, epriv, &[1u8; 32]))
    );
    println!(
        "logged out: C_UnwrapKey with a token RSA key: {}",
        rv(s.unwrap_key(&mech, tpriv, &twrapped, &aes_template(None)))
    );
    println!(
        "logged out: C_GetAttributeValue(CKA_MODULUS) of it: {}",
        rv(s.get_attributes(tpriv, &[T::Modulus]))
    );
    println!(
        "logged out: C_FindObjects(private keys): {:?}",
        s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .map(|v| v.len())
    );
    let mut iv = nonce;
    let g = Mechanism::AesGcm(GcmParams::new(&mut iv, &aad, 128u64.into()).unwrap());
    println!(
        "logged out: C_Decrypt with a session AES key made before: {}",
        rv(s.decrypt(&g, key, &ct))
    );
    s.login(UserType::User, Some(&pin)).unwrap();
    drop(s);
    drop(other);

    // ---- the resolve primitives through vtp-device, timed ----
    let token = std::sync::Arc::new(vtp_device::Token::open(&dev.token_config()).unwrap());
    println!(
        "preferred OAEP hash (probe): {}",
        token.preferred_oaep_hash().unwrap()
    );
    let enc = token
        .generate_encryption_key(2048, kind.preferred_oaep())
        .unwrap();
    let sig = token.generate_signing_key().unwrap();
    let public = token.rsa_public(enc).unwrap();
    let pk = RsaPublicKey::new(
        BigUint::from_bytes_be(&public.modulus),
        BigUint::from_bytes_be(&public.exponent),
    )
    .unwrap();
    let wrapped = match public.oaep {
        vtp_device::OaepHash::Sha1 => pk.encrypt(&mut OsRng, Oaep::new::<sha1::Sha1>(), &k),
        vtp_device::OaepHash::Sha256 => pk.encrypt(&mut OsRng, Oaep::new::<sha2::Sha256>(), &k),
    }
    .unwrap();
    let ct = Aes256Gcm::new_from_slice(&k)
        .unwrap()
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &[5u8; 1024],
                aad: &aad,
            },
        )
        .unwrap();
    let n: usize = std::env::var("FACTS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for threads in [1usize, 2] {
        let start = std::time::Instant::now();
        std::thread::scope(|sc| {
            for _ in 0..threads {
                sc.spawn(|| {
                    for _ in 0..n / threads {
                        token
                            .unwrap_and_decrypt(enc, &wrapped, &nonce, &aad, &ct)
                            .unwrap()
                            .unwrap();
                        token.sign_p256(sig, &[7u8; 32]).unwrap();
                    }
                });
            }
        });
        let per_s = n as f64 / start.elapsed().as_secs_f64();
        println!("resolve primitives (OAEP-{} unwrap + GCM 1 KiB + ECDSA), {threads} thread(s): {per_s:.0}/s", public.oaep);
    }
}

/// A bank's brand key as `vtp-device` generates it: RSA-3072, `CKA_SIGN`
/// only, `CKA_ALLOWED_MECHANISMS = [CKM_RSA_X_509]`, an end date. What does
/// the token do with it?
fn brand_key_template(end: cryptoki::types::Date, modifiable: Option<bool>) -> Vec<Attribute> {
    let mut t = vec![
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
        Attribute::EndDate(end),
    ];
    if let Some(m) = modifiable {
        t.push(Attribute::Modifiable(m));
    }
    t
}

fn brand_pair(s: &Session, private: &[Attribute]) -> Result<(ObjectHandle, ObjectHandle), String> {
    let public = [
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::ModulusBits(3072u64.into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
    ];
    s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, private)
        .map_err(|e| rv(Err::<(), _>(e)))
}

fn brand_key_facts(s: &Session) {
    use cryptoki::mechanism::rsa::PkcsPssParams;
    use cryptoki::types::Date;
    use AttributeType as T;
    let future = Date::new_from_str_slice("2099", "12", "31").unwrap();
    let past = Date::new_from_str_slice("2001", "01", "01").unwrap();
    let (pubk, privk) = match brand_pair(s, &brand_key_template(future, None)) {
        Ok(p) => p,
        Err(e) => {
            println!("brand key: C_GenerateKeyPair(RSA-3072, SIGN only, ALLOWED=[RSA_X_509], END_DATE) -> {e}");
            return;
        }
    };
    println!("brand key: C_GenerateKeyPair(RSA-3072, SIGN only, ALLOWED=[RSA_X_509], END_DATE 20991231) -> ok");
    for t in [
        T::Sign,
        T::SignRecover,
        T::Decrypt,
        T::Unwrap,
        T::Derive,
        T::AllowedMechanisms,
        T::EndDate,
        T::StartDate,
        T::Local,
        T::AlwaysSensitive,
        T::NeverExtractable,
        T::Modifiable,
        T::PublicExponent,
    ] {
        print!(
            "{t:?}={} ",
            match s.get_attributes(privk, &[t]) {
                Ok(v) => match v.first() {
                    Some(Attribute::EndDate(d)) | Some(Attribute::StartDate(d)) =>
                        format!("{:?}", d.to_string()),
                    Some(Attribute::PublicExponent(e)) => format!("{e:02x?}"),
                    other => format!("{other:?}"),
                },
                Err(e) => rv(Err::<(), _>(e)),
            }
        );
    }
    println!("<- brand private key");
    let pk = public_key(s, pubk);
    use rsa::traits::PublicKeyParts;
    let (n, e) = (pk.n().clone(), pk.e().clone());
    let k = pk.size();
    let priv_n = s
        .get_attributes(privk, &[T::Modulus])
        .ok()
        .and_then(|v| v.into_iter().next());
    println!(
        "brand private key CKA_MODULUS readable and equal to the public key's: {}",
        matches!(priv_n, Some(Attribute::Modulus(m)) if BigUint::from_bytes_be(&m) == n)
    );
    let mut m_bytes = vec![0u8; k];
    OsRng.fill_bytes(&mut m_bytes);
    m_bytes[0] &= 0x7f;
    let m = BigUint::from_bytes_be(&m_bytes);
    match s.sign(&Mechanism::RsaX509, privk, &m_bytes) {
        Ok(sig) => println!(
            "C_Sign(CKM_RSA_X_509) of a random m < n: ok, {} bytes, s^e mod n == m: {}",
            sig.len(),
            BigUint::from_bytes_be(&sig).modpow(&e, &n) == m
        ),
        Err(e) => println!(
            "C_Sign(CKM_RSA_X_509) of a random m < n: {}",
            rv(Err::<(), _>(e))
        ),
    }
    // Inputs of the wrong length or not below n run in a child process: one
    // of them makes SoftHSM 2.6.1 end the whole process.
    s.update_attributes(privk, &[Attribute::Label(b"facts-brand".to_vec())])
        .unwrap();
    for probe in [
        "k-1 bytes (m < 2^(8(k-1)))",
        "k+1 bytes",
        "m = n",
        "m = n + 1",
        "m = 2^(8k) - 1",
        "m = n - 1",
        "m = 0",
        "empty",
    ] {
        println!("C_Sign(CKM_RSA_X_509), {probe}: {}", probe_in_child(probe));
    }
    let pss = PkcsPssParams {
        hash_alg: MechanismType::SHA384,
        mgf: PkcsMgfType::MGF1_SHA384,
        s_len: 48u64.into(),
    };
    for (what, mech, data) in [
        ("CKM_RSA_PKCS", Mechanism::RsaPkcs, vec![1u8; 32]),
        (
            "CKM_SHA256_RSA_PKCS",
            Mechanism::Sha256RsaPkcs,
            vec![1u8; 32],
        ),
        (
            "CKM_SHA384_RSA_PKCS_PSS",
            Mechanism::Sha384RsaPkcsPss(pss),
            vec![1u8; 32],
        ),
        (
            "CKM_RSA_PKCS_PSS",
            Mechanism::RsaPkcsPss(pss),
            vec![1u8; 48],
        ),
    ] {
        println!(
            "brand key, C_Sign({what}): {}",
            rv(s.sign(&mech, privk, &data))
        );
    }
    println!(
        "brand key, C_Decrypt(CKM_RSA_X_509): {}",
        rv(s.decrypt(&Mechanism::RsaX509, privk, &m_bytes))
    );
    let oaep_sha1 = oaep(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, None);
    println!(
        "brand key, C_Decrypt(CKM_RSA_PKCS_OAEP): {}",
        rv(s.decrypt(&oaep_sha1, privk, &m_bytes))
    );
    println!(
        "brand key, C_UnwrapKey(CKM_RSA_PKCS_OAEP): {}",
        rv(s.unwrap_key(&oaep_sha1, privk, &m_bytes, &aes_template(None)))
    );
    println!(
        "brand key, C_SignRecover is not in cryptoki 0.12; C_Sign(CKM_RSA_X_509) with the public key: {}",
        rv(s.sign(&Mechanism::RsaX509, pubk, &m_bytes))
    );
    // Can a session user loosen the key afterwards?
    for (what, attr) in [
        ("CKA_DECRYPT=true", Attribute::Decrypt(true)),
        ("CKA_UNWRAP=true", Attribute::Unwrap(true)),
        (
            "CKA_ALLOWED_MECHANISMS=[RSA_X_509, RSA_PKCS_OAEP]",
            Attribute::AllowedMechanisms(vec![
                MechanismType::RSA_X_509,
                MechanismType::RSA_PKCS_OAEP,
            ]),
        ),
        ("CKA_EXTRACTABLE=true", Attribute::Extractable(true)),
        ("CKA_SENSITIVE=false", Attribute::Sensitive(false)),
        ("CKA_END_DATE=20010101", Attribute::EndDate(past)),
    ] {
        let (_pb, h) = brand_pair(s, &brand_key_template(future, None)).unwrap();
        let r = s.update_attributes(h, &[attr]);
        let after = match what.split('=').next().unwrap() {
            "CKA_DECRYPT" => format!(
                ", then C_Decrypt(RSA_X_509): {}",
                rv(s.decrypt(&Mechanism::RsaX509, h, &m_bytes))
            ),
            "CKA_ALLOWED_MECHANISMS" => format!(
                ", now {:?}",
                s.get_attributes(h, &[T::AllowedMechanisms])
                    .map(|v| v.into_iter().next())
            ),
            _ => String::new(),
        };
        println!(
            "brand key, C_SetAttributeValue({what}): {}{after}",
            rv(r.as_ref())
        );
    }
    match brand_pair(s, &brand_key_template(future, Some(false))) {
        Ok((_pb, h)) => println!(
            "brand key with CKA_MODIFIABLE=false: generated; Modifiable reads {:?}; C_SetAttributeValue(CKA_DECRYPT=true): {}; C_Sign(RSA_X_509): {}",
            s.get_attributes(h, &[T::Modifiable]).map(|v| v.into_iter().next()),
            rv(s.update_attributes(h, &[Attribute::Decrypt(true)])),
            rv(s.sign(&Mechanism::RsaX509, h, &m_bytes).as_ref())
        ),
        Err(e) => println!("brand key with CKA_MODIFIABLE=false: C_GenerateKeyPair -> {e}"),
    }
    match brand_pair(s, &brand_key_template(past, None)) {
        Ok((_pb, h)) => println!(
            "brand key with CKA_END_DATE 20010101 (past): C_Sign(RSA_X_509): {}",
            rv(s.sign(&Mechanism::RsaX509, h, &m_bytes).as_ref())
        ),
        Err(e) => println!("brand key with CKA_END_DATE in the past: C_GenerateKeyPair -> {e}"),
    }
    // Defaults when the template names only CKA_SIGN.
    let minimal = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
    ];
    match brand_pair(s, &minimal) {
        Ok((_pb, h)) => {
            for t in [
                T::Decrypt,
                T::Unwrap,
                T::SignRecover,
                T::Derive,
                T::AllowedMechanisms,
                T::EndDate,
            ] {
                print!(
                    "{t:?}={} ",
                    match s.get_attributes(h, &[t]) {
                        Ok(v) => match v.first() {
                            Some(Attribute::EndDate(d)) => format!("{:?}", d.to_string()),
                            other => format!("{other:?}"),
                        },
                        Err(e) => rv(Err::<(), _>(e)),
                    }
                );
            }
            println!("<- RSA key generated with only CKA_SIGN=true named");
        }
        Err(e) => println!("RSA key with only CKA_SIGN: {e}"),
    }
    // Speed of the raw private operation (RSA-3072).
    let n_ops: usize = std::env::var("FACTS_BRAND_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let start = std::time::Instant::now();
    for _ in 0..n_ops {
        s.sign(&Mechanism::RsaX509, privk, &m_bytes).unwrap();
    }
    println!(
        "C_Sign(CKM_RSA_X_509), RSA-3072, one session: {:.0}/s ({n_ops} ops)",
        n_ops as f64 / start.elapsed().as_secs_f64()
    );
}

/// Run one raw-signing probe on the key labelled `facts-brand` in a child
/// process (this program again, `FACTS_CHILD_PROBE` set), so that a module
/// that ends the process does not end the measurement.
fn probe_in_child(probe: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("FACTS_CHILD_PROBE", probe)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !stdout.is_empty() {
        stdout
    } else {
        format!(
            "the module ended the process (exit status {:?}, no answer){}",
            out.status.code(),
            if stdout.is_empty() {
                String::new()
            } else {
                format!("; it printed {stdout:?}")
            }
        )
    }
}

/// The child's half of [`probe_in_child`].
fn child_probe(probe: &str) {
    use rsa::traits::PublicKeyParts;
    let module = std::env::var("FACTS_MODULE").unwrap();
    let pin = std::fs::read_to_string(std::env::var("FACTS_PIN_FILE").unwrap()).unwrap();
    let p = Pkcs11::new(module).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_slots_with_token().unwrap()[0];
    let s = p.open_rw_session(slot).unwrap();
    s.login(
        UserType::User,
        Some(&AuthPin::from(pin.trim_end().to_owned())),
    )
    .unwrap();
    let find = |class| {
        s.find_objects(&[
            Attribute::Class(class),
            Attribute::Label(b"facts-brand".to_vec()),
        ])
        .unwrap()[0]
    };
    let privk = find(ObjectClass::PRIVATE_KEY);
    let pk = public_key(&s, privk);
    let (n, e, k) = (pk.n().clone(), pk.e().clone(), pk.size());
    let one = BigUint::from(1u8);
    let pad = |x: &BigUint| {
        let b = x.to_bytes_be();
        let mut out = vec![0u8; k.saturating_sub(b.len())];
        out.extend_from_slice(&b);
        out
    };
    let input = match probe {
        "k-1 bytes (m < 2^(8(k-1)))" => pad(&(&n >> 9))[1..].to_vec(),
        "k+1 bytes" => {
            let mut v = vec![0u8];
            v.extend(pad(&(&n >> 1)));
            v
        }
        "m = n" => pad(&n),
        "m = n + 1" => pad(&(&n + &one)),
        "m = 2^(8k) - 1" => pad(&((BigUint::from(1u8) << (8 * k)) - &one)),
        "m = n - 1" => pad(&(&n - &one)),
        "m = 0" => pad(&BigUint::from(0u8)),
        "empty" => Vec::new(),
        other => panic!("unknown probe {other}"),
    };
    let m = BigUint::from_bytes_be(&input);
    let r = s.sign(&Mechanism::RsaX509, privk, &input);
    let detail = match &r {
        Ok(sig) => format!(
            ", {} bytes, s^e mod n == m mod n: {}",
            sig.len(),
            BigUint::from_bytes_be(sig).modpow(&e, &n) == &m % &n
        ),
        Err(_) => String::new(),
    };
    println!("{}{detail}", rv(r.as_ref()));
}
