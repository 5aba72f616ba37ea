//! Key generation, lookup, policy checks and public-key export.
//!
//! Every private key vtp uses must have been generated **on** the token and
//! never been extractable, and may be used with exactly one mechanism
//! (`CKM_RSA_PKCS_OAEP` for encryption keys, `CKM_ECDSA` for signing keys,
//! `CKM_RSA_X_509` for a bank's brand keys, which sign and do nothing else).
//! Without that restriction an RSA decryption key that also allows
//! `CKM_RSA_X_509` decrypts anything for anyone holding a session. Keys that
//! fail these checks are listed with their problems but never used.
//!
//! Brand keys (RSA, `vtp-brand-<id>-<YYYYMMDD>`, the date being the last
//! UTC day the brand is issued) are also generated with `CKA_MODIFIABLE`
//! false, which the policy requires: both development tokens let a session
//! user set `CKA_DECRYPT` on a key afterwards, and kryoptic even changes
//! `CKA_ALLOWED_MECHANISMS` (docs/tokens.md). Their `CKA_END_DATE` is that
//! date too; SoftHSM 2.6 cannot read a set date back, so the policy checks
//! it only where the token can, and the label is what `crate::blind`
//! enforces. They are listed by [`Token::list_brand_keys`], not
//! [`Token::list_keys`].
//!
//! Naming on the token: both halves of a key pair share an 8-byte random
//! `CKA_ID` ([`KeyId`], the protocol's key id). Labels are `vtp-enc-<id hex>-<sha1|sha256>` for RSA
//! encryption keys (the suffix records the OAEP hash, also used for MGF1,
//! because PKCS#11 has no attribute for it) and `vtp-sign-<id hex>` for P-256
//! signing keys.
//!
//! Key management (generation, lookups, listing) runs on the anchor session
//! under its lock: SoftHSM races when token objects are created concurrently.
//! Private-key handles are found once and cached. Every public operation
//! restores a lost login and retries once (see `Token::recover_login`): a
//! logged-out session does not see private keys, so "not found" is checked
//! against the login state before it is believed.

use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use rand_core::{OsRng, RngCore};

use vtp_protocol::KeyId;

use crate::error::DeviceError;
use crate::oaep::OaepHash;
use crate::rv::{describe, rv_of, stale_handle};
use crate::token::{lock, CachedKey, ManagementSession, Token};

/// DER encoding of the OID of prime256v1 / secp256r1 (CKA_EC_PARAMS).
pub(crate) const P256_OID_DER: [u8; 10] =
    [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// RSA modulus sizes vtp generates and accepts.
pub const RSA_BITS: [u32; 3] = [2048, 3072, 4096];

/// A fresh random key id (8 bytes from the OS RNG); see [`unused_id`].
fn random_key_id() -> KeyId {
    let mut b = [0u8; 8];
    OsRng.fill_bytes(&mut b);
    KeyId(b)
}

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA key for OAEP unwrapping. `oaep` is `None` when the label does not
    /// record the hash (such a key also has a policy problem).
    Encryption { bits: u32, oaep: Option<OaepHash> },
    /// P-256 ECDSA key.
    Signing,
}

/// The label prefix of brand keys (see the module docs).
pub(crate) const BRAND_LABEL_PREFIX: &str = "vtp-brand-";

/// One private key on the token, as listed by [`Token::list_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: KeyId,
    pub kind: KeyKind,
    pub label: String,
    /// True when the key passes every policy check (and so can be used).
    pub checks_ok: bool,
    /// The failed checks, in words.
    pub problems: Vec<String>,
}

/// The public half of an RSA encryption key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaPublic {
    /// Big-endian, no leading zero bytes.
    pub modulus: Vec<u8>,
    /// Big-endian, no leading zero bytes.
    pub exponent: Vec<u8>,
    pub oaep: OaepHash,
}

/// Which kind of private key a caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Encryption,
    Signing,
    /// A bank's brand key: raw RSA signing for blind signatures.
    Brand,
}

impl Role {
    fn what(self) -> &'static str {
        match self {
            Role::Encryption => "encryption",
            Role::Signing => "signing",
            Role::Brand => "brand (blind-signing)",
        }
    }
    fn key_type(self) -> KeyType {
        match self {
            Role::Encryption | Role::Brand => KeyType::RSA,
            Role::Signing => KeyType::EC,
        }
    }
    fn mechanism(self) -> MechanismType {
        match self {
            Role::Encryption => MechanismType::RSA_PKCS_OAEP,
            Role::Signing => MechanismType::ECDSA,
            Role::Brand => MechanismType::RSA_X_509,
        }
    }
}

/// The attributes of a private key that the policy looks at.
#[derive(Debug, Default)]
struct PrivAttrs {
    id: Option<Vec<u8>>,
    label: Option<String>,
    key_type: Option<KeyType>,
    token: Option<bool>,
    private: Option<bool>,
    sensitive: Option<bool>,
    extractable: Option<bool>,
    local: Option<bool>,
    always_sensitive: Option<bool>,
    never_extractable: Option<bool>,
    allowed: Option<Vec<MechanismType>>,
    decrypt: Option<bool>,
    unwrap: Option<bool>,
    sign: Option<bool>,
    sign_recover: Option<bool>,
    derive: Option<bool>,
    modifiable: Option<bool>,
    modulus: Option<Vec<u8>>,
    ec_params: Option<Vec<u8>>,
}

fn read_priv_attrs(s: &Session, h: ObjectHandle) -> Result<PrivAttrs, cryptoki::error::Error> {
    use AttributeType as T;
    let attrs = s.get_attributes(
        h,
        &[
            T::Id,
            T::Label,
            T::KeyType,
            T::Token,
            T::Private,
            T::Sensitive,
            T::Extractable,
            T::Local,
            T::AlwaysSensitive,
            T::NeverExtractable,
            T::AllowedMechanisms,
            T::Decrypt,
            T::Unwrap,
            T::Sign,
            T::SignRecover,
            T::Derive,
            T::Modifiable,
            T::Modulus,
            T::EcParams,
        ],
    )?;
    let mut a = PrivAttrs::default();
    for attr in attrs {
        match attr {
            Attribute::Id(v) => a.id = Some(v),
            Attribute::Label(v) => a.label = Some(String::from_utf8_lossy(&v).into_owned()),
            Attribute::KeyType(v) => a.key_type = Some(v),
            Attribute::Token(v) => a.token = Some(v),
            Attribute::Private(v) => a.private = Some(v),
            Attribute::Sensitive(v) => a.sensitive = Some(v),
            Attribute::Extractable(v) => a.extractable = Some(v),
            Attribute::Local(v) => a.local = Some(v),
            Attribute::AlwaysSensitive(v) => a.always_sensitive = Some(v),
            Attribute::NeverExtractable(v) => a.never_extractable = Some(v),
            Attribute::AllowedMechanisms(v) => a.allowed = Some(v),
            Attribute::Decrypt(v) => a.decrypt = Some(v),
            Attribute::Unwrap(v) => a.unwrap = Some(v),
            Attribute::Sign(v) => a.sign = Some(v),
            Attribute::SignRecover(v) => a.sign_recover = Some(v),
            Attribute::Derive(v) => a.derive = Some(v),
            Attribute::Modifiable(v) => a.modifiable = Some(v),
            Attribute::Modulus(v) => a.modulus = Some(v),
            Attribute::EcParams(v) => a.ec_params = Some(v),
            _ => {}
        }
    }
    Ok(a)
}

/// The OAEP hash recorded in an encryption key's label, if the label has the
/// vtp form for this id.
fn oaep_from_label(label: &str, id: KeyId) -> Option<OaepHash> {
    let rest = label
        .strip_prefix("vtp-enc-")?
        .strip_prefix(&id.to_string())?;
    match rest {
        "-sha1" => Some(OaepHash::Sha1),
        "-sha256" => Some(OaepHash::Sha256),
        _ => None,
    }
}

fn modulus_bits(modulus: &[u8]) -> u32 {
    let m = strip_leading_zeros(modulus);
    match m.first() {
        None => 0,
        Some(&top) => (m.len() as u32 - 1) * 8 + (8 - top.leading_zeros()),
    }
}

fn strip_leading_zeros(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    &v[start..]
}

/// Check a private key against the policy for `role`; returns the failed
/// checks in words (empty: the key may be used).
fn policy_problems(a: &PrivAttrs, role: Role, id: KeyId) -> Vec<String> {
    let mut p = Vec::new();
    let mut want = |name: &str, got: Option<bool>, expected: bool| match got {
        Some(v) if v == expected => {}
        Some(v) => p.push(format!("{name} is {v}, must be {expected}")),
        None => p.push(format!("{name} is missing, must be {expected}")),
    };
    want("CKA_TOKEN", a.token, true);
    want("CKA_PRIVATE", a.private, true);
    want("CKA_SENSITIVE", a.sensitive, true);
    want("CKA_EXTRACTABLE", a.extractable, false);
    want("CKA_LOCAL (generated on the token)", a.local, true);
    want("CKA_ALWAYS_SENSITIVE", a.always_sensitive, true);
    want("CKA_NEVER_EXTRACTABLE", a.never_extractable, true);
    want("CKA_DECRYPT", a.decrypt, false);
    want("CKA_DERIVE", a.derive, false);
    want("CKA_SIGN_RECOVER", a.sign_recover, false);
    match role {
        Role::Encryption => {
            want("CKA_UNWRAP", a.unwrap, true);
            want("CKA_SIGN", a.sign, false);
        }
        Role::Signing => {
            want("CKA_SIGN", a.sign, true);
            want("CKA_UNWRAP", a.unwrap, false);
        }
        Role::Brand => {
            want("CKA_SIGN", a.sign, true);
            want("CKA_UNWRAP", a.unwrap, false);
            want("CKA_MODIFIABLE", a.modifiable, false);
        }
    }
    let mech = role.mechanism();
    match &a.allowed {
        Some(m) if m.len() == 1 && m[0] == mech => {}
        Some(m) if m.is_empty() => p.push(format!(
            "CKA_ALLOWED_MECHANISMS is empty (any mechanism), must be exactly [{mech}]"
        )),
        Some(m) => p.push(format!(
            "CKA_ALLOWED_MECHANISMS is {}, must be exactly [{mech}]",
            m.iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => p.push(format!(
            "CKA_ALLOWED_MECHANISMS is missing, must be exactly [{mech}]"
        )),
    }
    match role {
        Role::Encryption => {
            let bits = a.modulus.as_deref().map(modulus_bits).unwrap_or(0);
            if !RSA_BITS.contains(&bits) {
                p.push(format!(
                    "RSA modulus is {bits} bits, must be one of {RSA_BITS:?}"
                ));
            }
            let label = a.label.as_deref().unwrap_or("");
            if oaep_from_label(label, id).is_none() {
                p.push(format!(
                    "label \"{label}\" does not record the OAEP hash (want vtp-enc-{id}-sha1 or -sha256)"
                ));
            }
        }
        Role::Signing => {
            if a.ec_params.as_deref() != Some(&P256_OID_DER[..]) {
                p.push("CKA_EC_PARAMS is not the P-256 curve".to_owned());
            }
        }
        Role::Brand => {
            let bits = a.modulus.as_deref().map(modulus_bits).unwrap_or(0);
            if !BRAND_RSA_BITS.contains(&bits) {
                p.push(format!(
                    "RSA modulus is {bits} bits, must be one of {BRAND_RSA_BITS:?}"
                ));
            }
            let label = a.label.as_deref().unwrap_or("");
            if crate::blind::brand_end_from_label(label, id).is_none() {
                p.push(format!(
                    "label \"{label}\" does not record the brand's end date (want vtp-brand-{id}-YYYYMMDD)"
                ));
            }
        }
    }
    p
}

/// RSA modulus sizes of brand keys.
pub const BRAND_RSA_BITS: [u32; 2] = [3072, 4096];

fn find(
    s: &mut ManagementSession<'_>,
    template: &[Attribute],
    op: &'static str,
) -> Result<Vec<ObjectHandle>, DeviceError> {
    s.find_objects(template)
        .map_err(|e| DeviceError::pkcs11(op, e))
}

fn find_private(
    s: &mut ManagementSession<'_>,
    id: KeyId,
    role: Role,
) -> Result<ObjectHandle, DeviceError> {
    let found = find(
        s,
        &[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(role.key_type()),
            Attribute::Id(id.0.to_vec()),
        ],
        "C_FindObjects (private key)",
    )?;
    match found.as_slice() {
        [] => Err(DeviceError::KeyNotFound {
            what: role.what(),
            id_hex: id.to_string(),
        }),
        [h] => Ok(*h),
        many => Err(DeviceError::KeyPolicy {
            id_hex: id.to_string(),
            problem: format!("{} private keys share this id", many.len()),
        }),
    }
}

fn find_public(
    s: &mut ManagementSession<'_>,
    id: KeyId,
    role: Role,
) -> Result<ObjectHandle, DeviceError> {
    let found = find(
        s,
        &[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(role.key_type()),
            Attribute::Id(id.0.to_vec()),
        ],
        "C_FindObjects (public key)",
    )?;
    match found.as_slice() {
        [] => Err(DeviceError::KeyNotFound {
            what: if role == Role::Encryption {
                "public encryption"
            } else {
                "public signing"
            },
            id_hex: id.to_string(),
        }),
        [h] => Ok(*h),
        many => Err(DeviceError::KeyPolicy {
            id_hex: id.to_string(),
            problem: format!("{} public keys share this id", many.len()),
        }),
    }
}

/// Parse CKA_EC_POINT: a DER OCTET STRING wrapping the SEC1 uncompressed
/// point (what the spec says), or the raw point (what some tokens return).
pub(crate) fn parse_ec_point(raw: &[u8]) -> Option<[u8; 65]> {
    let p = match raw {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        _ => raw,
    };
    match p {
        [0x04, ..] if p.len() == 65 => p.try_into().ok(),
        _ => None,
    }
}

impl Token {
    /// Find (or take from the cache) the private key `id` for `role`,
    /// checking the key policy on every cache miss.
    pub(crate) fn private_key(&self, id: KeyId, role: Role) -> Result<CachedKey, DeviceError> {
        if let Some(k) = lock(&self.cache).get(&id).copied() {
            if k.oaep.is_some() == (role == Role::Encryption) && k.brand == (role == Role::Brand) {
                return Ok(k);
            }
            if role == Role::Signing || k.oaep.is_none() && !k.brand {
                return Err(DeviceError::KeyNotFound {
                    what: role.what(),
                    id_hex: id.to_string(),
                });
            }
            // An RSA key asked for in its other role: look it up, so that
            // the answer is the policy's (a brand key cannot decrypt, an
            // encryption key cannot blind-sign).
        }
        let mut s = self.management_session();
        let handle = find_private(&mut s, id, role)?;
        let attrs = read_priv_attrs(&s, handle)
            .map_err(|e| DeviceError::pkcs11("C_GetAttributeValue (private key)", e))?;
        drop(s);
        let problems = policy_problems(&attrs, role, id);
        if !problems.is_empty() {
            tracing::warn!(key = %id, problems = ?problems, "refusing a key that fails the key policy");
            return Err(DeviceError::KeyPolicy {
                id_hex: id.to_string(),
                problem: problems.join("; "),
            });
        }
        let oaep = match role {
            Role::Encryption => oaep_from_label(attrs.label.as_deref().unwrap_or(""), id),
            Role::Signing | Role::Brand => None,
        };
        if role == Role::Brand {
            // Where the token can read CKA_END_DATE, it must be the label's.
            let s = self.management_session();
            if let Some(problem) =
                crate::blind::end_date_problem(&s, handle, &attrs_label(&attrs), id)
            {
                tracing::warn!(key = %id, problem, "refusing a brand key that fails the key policy");
                return Err(DeviceError::KeyPolicy {
                    id_hex: id.to_string(),
                    problem,
                });
            }
        }
        let k = CachedKey {
            handle,
            oaep,
            brand: role == Role::Brand,
        };
        lock(&self.cache).insert(id, k);
        Ok(k)
    }

    /// The public half of key pair `id`.
    pub(crate) fn public_key_handle(
        &self,
        id: KeyId,
        role: Role,
    ) -> Result<ObjectHandle, DeviceError> {
        find_public(&mut self.management_session(), id, role)
    }

    /// Drop a cached handle (after the token said it is invalid).
    pub(crate) fn forget_key(&self, id: KeyId) {
        lock(&self.cache).remove(&id);
    }

    /// Whether `id` names a usable encryption key (exists and passes the
    /// policy). Useful to tell "unknown key" apart before decrypting.
    pub fn has_encryption_key(&self, id: KeyId) -> bool {
        self.with_recovery(|| self.private_key(id, Role::Encryption))
            .is_ok()
    }

    /// Generate an RSA key pair for OAEP unwrapping on the token.
    /// `bits` must be 2048, 3072 or 4096.
    pub fn generate_encryption_key(&self, bits: u32, oaep: OaepHash) -> Result<KeyId, DeviceError> {
        self.with_recovery(|| self.generate_encryption_key_inner(bits, oaep))
    }

    fn generate_encryption_key_inner(
        &self,
        bits: u32,
        oaep: OaepHash,
    ) -> Result<KeyId, DeviceError> {
        if !RSA_BITS.contains(&bits) {
            return Err(DeviceError::InvalidArgument(format!(
                "RSA key size {bits} is not supported (use 2048, 3072 or 4096)"
            )));
        }
        let mut s = self.management_session();
        let id = unused_id(&mut s)?;
        let label = format!("vtp-enc-{id}-{}", oaep.as_str()).into_bytes();
        let public = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Encrypt(true),
            Attribute::Wrap(true),
            Attribute::Verify(false),
            Attribute::ModulusBits(u64::from(bits).into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::Id(id.0.to_vec()),
            Attribute::Label(label.clone()),
        ];
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
            Attribute::SignRecover(false),
            Attribute::Derive(false),
            Attribute::AllowedMechanisms(vec![MechanismType::RSA_PKCS_OAEP]),
            Attribute::Id(id.0.to_vec()),
            Attribute::Label(label),
        ];
        let (pub_h, priv_h) = s
            .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
            .map_err(|e| DeviceError::pkcs11("C_GenerateKeyPair (RSA)", e))?;
        self.check_new_key(&s, id, Role::Encryption, pub_h, priv_h, Some(oaep))?;
        drop(s);
        if let Err(e) = self.self_test_encryption_key(id) {
            self.forget_key(id);
            let s = self.management_session();
            for h in [priv_h, pub_h] {
                if let Err(e) = s.destroy_object(h) {
                    tracing::error!(key = %id, err = %e, "cannot destroy a key that failed its self-test");
                }
            }
            return Err(e);
        }
        tracing::info!(key = %id, bits, oaep = %oaep, "generated RSA encryption key");
        Ok(id)
    }

    /// Generate a P-256 ECDSA key pair on the token.
    pub fn generate_signing_key(&self) -> Result<KeyId, DeviceError> {
        self.with_recovery(|| self.generate_signing_key_inner())
    }

    fn generate_signing_key_inner(&self) -> Result<KeyId, DeviceError> {
        let mut s = self.management_session();
        let id = unused_id(&mut s)?;
        let label = format!("vtp-sign-{id}").into_bytes();
        let public = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::EcParams(P256_OID_DER.to_vec()),
            Attribute::Id(id.0.to_vec()),
            Attribute::Label(label.clone()),
        ];
        let private = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::SignRecover(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::AllowedMechanisms(vec![MechanismType::ECDSA]),
            Attribute::Id(id.0.to_vec()),
            Attribute::Label(label),
        ];
        let (pub_h, priv_h) = s
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(|e| DeviceError::pkcs11("C_GenerateKeyPair (EC P-256)", e))?;
        self.check_new_key(&s, id, Role::Signing, pub_h, priv_h, None)?;
        tracing::info!(key = %id, "generated P-256 signing key");
        Ok(id)
    }

    /// Check a freshly generated key against the policy; destroy the pair if
    /// it fails (the token ignored part of the template), else cache it.
    fn check_new_key(
        &self,
        s: &Session,
        id: KeyId,
        role: Role,
        pub_h: ObjectHandle,
        priv_h: ObjectHandle,
        oaep: Option<OaepHash>,
    ) -> Result<(), DeviceError> {
        let mut problems = match read_priv_attrs(s, priv_h) {
            Ok(a) => policy_problems(&a, role, id),
            Err(e) => vec![format!("cannot read its attributes: {}", describe(&e))],
        };
        if role == Role::Brand {
            let label = s
                .get_attributes(priv_h, &[AttributeType::Label])
                .ok()
                .and_then(|v| v.into_iter().next())
                .and_then(|a| match a {
                    Attribute::Label(l) => Some(String::from_utf8_lossy(&l).into_owned()),
                    _ => None,
                })
                .unwrap_or_default();
            problems.extend(crate::blind::end_date_problem(s, priv_h, &label, id));
        }
        if !problems.is_empty() {
            for h in [priv_h, pub_h] {
                if let Err(e) = s.destroy_object(h) {
                    tracing::error!(key = %id, err = %e, "cannot destroy a key that failed the policy");
                }
            }
            return Err(DeviceError::KeyPolicy {
                id_hex: id.to_string(),
                problem: format!(
                    "the token did not honour the key template: {}",
                    problems.join("; ")
                ),
            });
        }
        lock(&self.cache).insert(
            id,
            CachedKey {
                handle: priv_h,
                oaep,
                brand: role == Role::Brand,
            },
        );
        Ok(())
    }

    /// Every vtp-shaped private key on the token (8-byte id, RSA or EC), with
    /// the result of the policy checks. Keys that fail are listed, not used.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>, DeviceError> {
        // Logged out, C_FindObjects silently skips private keys: check first.
        self.recover_login()?;
        self.with_recovery(|| self.list_keys_inner())
    }

    fn list_keys_inner(&self) -> Result<Vec<KeyInfo>, DeviceError> {
        let mut s = self.management_session();
        let handles = find(
            &mut s,
            &[Attribute::Class(ObjectClass::PRIVATE_KEY)],
            "C_FindObjects (list keys)",
        )?;
        let mut out = Vec::new();
        for h in handles {
            let a = read_priv_attrs(&s, h)
                .map_err(|e| DeviceError::pkcs11("C_GetAttributeValue (list keys)", e))?;
            let Some(id) =
                a.id.as_deref()
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map(KeyId)
            else {
                tracing::debug!(handle = %h, "skipping a private key without an 8-byte CKA_ID");
                continue;
            };
            let label = a.label.clone().unwrap_or_default();
            if label.starts_with(BRAND_LABEL_PREFIX) {
                // Listed by `list_brand_keys`.
                continue;
            }
            let (role, kind) = match a.key_type {
                Some(KeyType::RSA) => (
                    Role::Encryption,
                    KeyKind::Encryption {
                        bits: a.modulus.as_deref().map(modulus_bits).unwrap_or(0),
                        oaep: oaep_from_label(&label, id),
                    },
                ),
                Some(KeyType::EC) => (Role::Signing, KeyKind::Signing),
                _ => {
                    tracing::debug!(key = %id, "skipping a private key that is neither RSA nor EC");
                    continue;
                }
            };
            let problems = policy_problems(&a, role, id);
            out.push(KeyInfo {
                id,
                kind,
                label,
                checks_ok: problems.is_empty(),
                problems,
            });
        }
        out.sort_by(|x, y| x.label.cmp(&y.label).then(x.id.cmp(&y.id)));
        Ok(out)
    }

    /// Export the public half of encryption key `id` (which must pass the
    /// policy), checking that it matches the private key.
    pub fn rsa_public(&self, id: KeyId) -> Result<RsaPublic, DeviceError> {
        self.with_recovery(|| self.rsa_public_inner(id))
    }

    fn rsa_public_inner(&self, id: KeyId) -> Result<RsaPublic, DeviceError> {
        let mut retried = false;
        loop {
            let k = self.private_key(id, Role::Encryption)?;
            match self.rsa_public_with(id, k) {
                Ok(p) => return Ok(p),
                Err(PublicErr::Device(e)) => return Err(e),
                // A stale cached handle, or (logged out) an invisible key:
                // find it again; "not found" then goes to `with_recovery`.
                Err(PublicErr::Stale(_)) if !retried => {
                    self.forget_key(id);
                    retried = true;
                }
                Err(PublicErr::Stale(e)) => {
                    self.forget_key(id);
                    return Err(e);
                }
            }
        }
    }

    fn rsa_public_with(&self, id: KeyId, k: CachedKey) -> Result<RsaPublic, PublicErr> {
        let mut s = self.management_session();
        let pub_h = find_public(&mut s, id, Role::Encryption)?;
        let attrs = s
            .get_attributes(
                pub_h,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
            .map_err(|e| DeviceError::pkcs11("C_GetAttributeValue (RSA public key)", e))?;
        let (mut modulus, mut exponent) = (None, None);
        for a in attrs {
            match a {
                Attribute::Modulus(v) => modulus = Some(v),
                Attribute::PublicExponent(v) => exponent = Some(v),
                _ => {}
            }
        }
        let bad = |problem: &str| DeviceError::KeyPolicy {
            id_hex: id.to_string(),
            problem: problem.to_owned(),
        };
        let (Some(modulus), Some(exponent)) = (modulus, exponent) else {
            return Err(bad("the public key lacks CKA_MODULUS or CKA_PUBLIC_EXPONENT").into());
        };
        let priv_mod = match s.get_attributes(k.handle, &[AttributeType::Modulus]) {
            Ok(v) => v.into_iter().find_map(|a| match a {
                Attribute::Modulus(m) => Some(m),
                _ => None,
            }),
            Err(e) => {
                let stale = rv_of(&e).is_some_and(stale_handle);
                let e = DeviceError::pkcs11("C_GetAttributeValue (RSA private key)", e);
                return Err(if stale {
                    PublicErr::Stale(e)
                } else {
                    PublicErr::Device(e)
                });
            }
        };
        if priv_mod.as_deref().map(strip_leading_zeros) != Some(strip_leading_zeros(&modulus)) {
            return Err(bad("the public key's modulus differs from the private key's").into());
        }
        Ok(RsaPublic {
            modulus: strip_leading_zeros(&modulus).to_vec(),
            exponent: strip_leading_zeros(&exponent).to_vec(),
            oaep: k
                .oaep
                .expect("encryption keys are cached with their OAEP hash"),
        })
    }

    /// Export the public half of signing key `id` (which must pass the policy)
    /// as a SEC1 uncompressed point (`04 || x || y`).
    pub fn ec_public(&self, id: KeyId) -> Result<[u8; 65], DeviceError> {
        self.with_recovery(|| self.ec_public_inner(id))
    }

    fn ec_public_inner(&self, id: KeyId) -> Result<[u8; 65], DeviceError> {
        self.private_key(id, Role::Signing)?;
        let mut s = self.management_session();
        let pub_h = find_public(&mut s, id, Role::Signing)?;
        let attrs = s
            .get_attributes(pub_h, &[AttributeType::EcPoint, AttributeType::EcParams])
            .map_err(|e| DeviceError::pkcs11("C_GetAttributeValue (EC public key)", e))?;
        let (mut point, mut params) = (None, None);
        for a in attrs {
            match a {
                Attribute::EcPoint(v) => point = Some(v),
                Attribute::EcParams(v) => params = Some(v),
                _ => {}
            }
        }
        let bad = |problem: &str| DeviceError::KeyPolicy {
            id_hex: id.to_string(),
            problem: problem.to_owned(),
        };
        if params.as_deref() != Some(&P256_OID_DER[..]) {
            return Err(bad("the public key is not on P-256"));
        }
        point
            .as_deref()
            .and_then(parse_ec_point)
            .ok_or_else(|| bad("CKA_EC_POINT is not an uncompressed P-256 point"))
    }
}

fn attrs_label(a: &PrivAttrs) -> String {
    a.label.clone().unwrap_or_default()
}

/// One brand key on the token, as listed by [`Token::list_brand_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrandKeyInfo {
    pub id: KeyId,
    pub label: String,
    pub bits: u32,
    /// The last day the brand is issued, from the label (`YYYYMMDD`).
    pub until: Option<crate::blind::Day>,
    pub checks_ok: bool,
    pub problems: Vec<String>,
}

impl Token {
    /// Every private key labelled as a brand key, with the brand policy's
    /// verdict.
    pub fn list_brand_keys(&self) -> Result<Vec<BrandKeyInfo>, DeviceError> {
        self.recover_login()?;
        self.with_recovery(|| {
            let mut s = self.management_session();
            let handles = find(
                &mut s,
                &[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::KeyType(KeyType::RSA),
                ],
                "C_FindObjects (list brand keys)",
            )?;
            let mut out = Vec::new();
            for h in handles {
                let a = read_priv_attrs(&s, h)
                    .map_err(|e| DeviceError::pkcs11("C_GetAttributeValue (list brand keys)", e))?;
                let label = attrs_label(&a);
                let Some(id) = label
                    .starts_with(BRAND_LABEL_PREFIX)
                    .then(|| a.id.as_deref().and_then(|v| <[u8; 8]>::try_from(v).ok()))
                    .flatten()
                    .map(KeyId)
                else {
                    continue;
                };
                let mut problems = policy_problems(&a, Role::Brand, id);
                problems.extend(crate::blind::end_date_problem(&s, h, &label, id));
                out.push(BrandKeyInfo {
                    id,
                    bits: a.modulus.as_deref().map(modulus_bits).unwrap_or(0),
                    until: crate::blind::brand_end_from_label(&label, id),
                    label,
                    checks_ok: problems.is_empty(),
                    problems,
                });
            }
            out.sort_by(|x, y| x.label.cmp(&y.label).then(x.id.cmp(&y.id)));
            Ok(out)
        })
    }

    /// Generate a brand key on the token: RSA (`bits` 3072 or 4096),
    /// `CKA_SIGN` only, `CKA_ALLOWED_MECHANISMS = [CKM_RSA_X_509]`,
    /// sensitive, never extractable, not modifiable, `CKA_END_DATE` and the
    /// label recording `until`, the last UTC day the brand is issued. The
    /// key is checked against the brand policy before it is returned.
    pub fn generate_brand_key(
        &self,
        bits: u32,
        until: crate::blind::Day,
    ) -> Result<KeyId, DeviceError> {
        self.with_recovery(|| self.generate_brand_key_inner(bits, until))
    }

    fn generate_brand_key_inner(
        &self,
        bits: u32,
        until: crate::blind::Day,
    ) -> Result<KeyId, DeviceError> {
        if !BRAND_RSA_BITS.contains(&bits) {
            return Err(DeviceError::InvalidArgument(format!(
                "brand key size {bits} is not supported (use 3072 or 4096)"
            )));
        }
        let mut s = self.management_session();
        let id = unused_id(&mut s)?;
        let label = format!("{BRAND_LABEL_PREFIX}{id}-{}", until.label()).into_bytes();
        let public = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::ModulusBits(u64::from(bits).into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::Id(id.0.to_vec()),
            Attribute::Label(label.clone()),
        ];
        let private = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
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
            Attribute::EndDate(until.pkcs11()),
            Attribute::Id(id.0.to_vec()),
            Attribute::Label(label),
            // Last: nothing above may change afterwards.
            Attribute::Modifiable(false),
        ];
        let (pub_h, priv_h) = s
            .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
            .map_err(|e| DeviceError::pkcs11("C_GenerateKeyPair (RSA brand key)", e))?;
        self.check_new_key(&s, id, Role::Brand, pub_h, priv_h, None)?;
        tracing::info!(key = %id, bits, until = %until.label(), "generated RSA brand key");
        Ok(id)
    }
}

/// Why exporting an RSA public key failed.
enum PublicErr {
    /// The cached private-key handle is not (or no longer) valid.
    Stale(DeviceError),
    Device(DeviceError),
}

impl From<DeviceError> for PublicErr {
    fn from(e: DeviceError) -> Self {
        PublicErr::Device(e)
    }
}

/// A random id no object on the token has yet.
fn unused_id(s: &mut ManagementSession<'_>) -> Result<KeyId, DeviceError> {
    loop {
        let id = random_key_id();
        if find(s, &[Attribute::Id(id.0.to_vec())], "C_FindObjects (new id)")?.is_empty() {
            return Ok(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_forms() {
        let mut raw = [7u8; 65];
        raw[0] = 4;
        assert_eq!(parse_ec_point(&raw), Some(raw));
        let mut der = vec![0x04, 0x41];
        der.extend_from_slice(&raw);
        assert_eq!(parse_ec_point(&der), Some(raw));
        assert_eq!(parse_ec_point(&raw[..64]), None);
        let mut compressed = [7u8; 33];
        compressed[0] = 2;
        assert_eq!(parse_ec_point(&compressed), None);
    }

    #[test]
    fn label_records_oaep() {
        let id = KeyId([1; 8]);
        assert_eq!(
            oaep_from_label("vtp-enc-0101010101010101-sha1", id),
            Some(OaepHash::Sha1)
        );
        assert_eq!(
            oaep_from_label("vtp-enc-0101010101010101-sha256", id),
            Some(OaepHash::Sha256)
        );
        assert_eq!(oaep_from_label("vtp-enc-0101010101010101", id), None);
        assert_eq!(oaep_from_label("vtp-enc-0202020202020202-sha1", id), None);
    }

    #[test]
    fn modulus_bit_count() {
        assert_eq!(modulus_bits(&[0, 0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0x01, 0]), 9);
        assert_eq!(modulus_bits(&[]), 0);
    }
}
