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
    let kind = DevTokenKind::from_env().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dev = create_dev_token(kind, dir.path(), "facts").unwrap();
    let (var, conf) = dev.conf_env();
    std::env::set_var(var, conf);
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
