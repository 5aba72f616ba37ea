//! The two primitive token operations: OAEP-unwrap + AES-GCM-decrypt, and
//! ECDSA P-256 signing; plus the OAEP self-test run after key generation.
//!
//! The decryption path is built so that a caller learns one bit about bad
//! input: [`DoesNotDecrypt`]. It returns
//! `Result<Result<plaintext, DoesNotDecrypt>, DeviceError>`:
//! - the inner `Err(DoesNotDecrypt)` means *the input* does not decrypt under
//!   this key (bad OAEP padding, wrong key length, bad tag, wrong AAD...;
//!   SoftHSM reports most of these as `CKR_GENERAL_ERROR` anyway);
//! - the outer `Err(DeviceError)` means the question could not be answered:
//!   unknown key id, a key that fails the policy, or a token/session failure
//!   that no input can cause (device removed, session closed, out of memory,
//!   not logged in, mechanism parameters the token does not support...). A
//!   caller must **not** treat that as "does not decrypt": the TP would then
//!   sign an invalid-envelope affidavit for an envelope that may be fine.
//!   Unknown return values count as device errors (retryable), never as
//!   "does not decrypt". `CKR_GENERAL_ERROR` is the one ambiguous value: SoftHSM
//!   uses it for bad padding/tags, so it has to mean "does not decrypt".

use std::sync::atomic::Ordering;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use crate::error::{describe, DeviceError, DoesNotDecrypt};
use crate::keys::{KeyId, OaepHash, Role};
use crate::token::{rv_of, Token};

/// AES-256 key length: the only wrapped payload vtp accepts.
const SESSION_KEY_LEN: u64 = 32;
/// GCM tag length in bytes (128 bits).
const TAG_LEN: usize = 16;

/// Values of `Token::value_len_in_template`: whether the token accepts
/// `CKA_VALUE_LEN` in a `C_UnwrapKey` template (and so enforces the unwrapped
/// key length). SoftHSM 2.6 refuses it with `CKR_ATTRIBUTE_READ_ONLY` and then
/// reports `CKA_VALUE_LEN` = 0 for the unwrapped key, so the length cannot be
/// checked there; newer SoftHSM and real HSMs enforce it. Learned on first use.
pub(crate) const UNKNOWN: u8 = 0;
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 2;

/// How one attempt at an operation failed.
enum Failure {
    /// Caused by the input: report [`DoesNotDecrypt`].
    BadInput,
    /// The cached key handle is stale: re-find the key and retry once.
    StaleHandle,
    /// The token refused `CKA_VALUE_LEN` in the unwrap template: retry without.
    ValueLenRefused,
    /// The token or session failed.
    Device(DeviceError),
}

/// Return values that input bytes can cause during unwrap/decrypt.
fn input_dependent(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::GeneralError
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::DataInvalid
            | RvError::DataLenRange
            | RvError::TemplateInconsistent
            | RvError::KeySizeRange
    )
}

fn stale_handle(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::ObjectHandleInvalid
            | RvError::KeyHandleInvalid
            | RvError::UnwrappingKeyHandleInvalid
    )
}

fn classify(op: &'static str, e: CkError) -> Failure {
    match rv_of(&e) {
        Some(rv) if stale_handle(rv) => Failure::StaleHandle,
        Some(rv) if input_dependent(rv) => {
            tracing::debug!(op, rv = ?rv, "input does not decrypt");
            Failure::BadInput
        }
        _ => Failure::Device(DeviceError::Pkcs11 {
            op,
            rv: describe(&e),
        }),
    }
}

/// Like [`classify`], for C_DecryptInit/C_Decrypt with the unwrapped key:
/// SoftHSM answers `CKR_MECHANISM_INVALID` at C_DecryptInit when the
/// unwrapped payload is not a valid AES key length. That the token does
/// AES-GCM at all is proven by [`Token::self_test_encryption_key`].
fn classify_decrypt(e: CkError) -> Failure {
    match &e {
        CkError::Pkcs11(
            RvError::MechanismInvalid | RvError::KeySizeRange | RvError::KeyTypeInconsistent,
            Function::DecryptInit,
        ) => {
            tracing::debug!(err = %describe(&e), "unwrapped key unusable for AES-GCM");
            Failure::BadInput
        }
        _ => classify("C_Decrypt (AES-GCM)", e),
    }
}

fn oaep_mechanism(oaep: OaepHash) -> Mechanism<'static> {
    // NULL label: SoftHSM refuses a non-NULL empty label in C_UnwrapKey.
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        oaep.mechanism(),
        oaep.mgf(),
        PkcsOaepSource::empty(),
    ))
}

/// Template of the session AES key that C_UnwrapKey creates: never on the
/// token, never extractable, good for decryption only.
fn session_key_template(with_value_len: bool) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Decrypt(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ];
    if with_value_len {
        t.push(Attribute::ValueLen(SESSION_KEY_LEN.into()));
    }
    t
}

impl Token {
    /// Unwrap `wrapped_key` (RSA-OAEP with the hash recorded for `enc_key`,
    /// empty label) into a session AES-256 key that never leaves the token,
    /// AES-GCM-decrypt `ciphertext_with_tag` with it (`nonce`, `aad`, 128-bit
    /// tag), and destroy the session key in every case. See the module docs
    /// for the meaning of the two error layers.
    pub fn unwrap_and_decrypt(
        &self,
        enc_key: KeyId,
        wrapped_key: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext_with_tag: &[u8],
    ) -> Result<Result<Zeroizing<Vec<u8>>, DoesNotDecrypt>, DeviceError> {
        let mut retried_handle = false;
        loop {
            let key = self.private_key(enc_key, Role::Encryption)?;
            if ciphertext_with_tag.len() < TAG_LEN {
                return Ok(Err(DoesNotDecrypt));
            }
            let oaep = key
                .oaep
                .expect("encryption keys are cached with their OAEP hash");
            let session = self.session()?;
            let (result, reusable) = self.unwrap_decrypt_once(
                &session,
                key.handle,
                oaep,
                wrapped_key,
                nonce,
                aad,
                ciphertext_with_tag,
            );
            if reusable && result.is_ok() {
                session.release();
            } // else: dropping the guard closes the session.
            match result {
                Ok(plain) => return Ok(Ok(plain)),
                Err(Failure::BadInput) => return Ok(Err(DoesNotDecrypt)),
                Err(Failure::ValueLenRefused) => {} // state updated; retry without it
                Err(Failure::StaleHandle) if !retried_handle => {
                    tracing::debug!(key = %enc_key, "cached key handle is stale; finding the key again");
                    self.forget_key(enc_key);
                    retried_handle = true;
                }
                Err(Failure::StaleHandle) => {
                    return Err(DeviceError::Pkcs11 {
                        op: "C_UnwrapKey",
                        rv: "the key handle stays invalid after finding the key again".into(),
                    })
                }
                Err(Failure::Device(e)) => return Err(e),
            }
        }
    }

    /// ECDSA (`CKM_ECDSA`) over a 32-byte digest with P-256 key `key`;
    /// returns `r || s`, 32 bytes each.
    pub fn sign_p256(&self, key: KeyId, digest: &[u8; 32]) -> Result<[u8; 64], DeviceError> {
        let mut retried = false;
        loop {
            let k = self.private_key(key, Role::Signing)?;
            let session = self.session()?;
            match session.sign(&Mechanism::Ecdsa, k.handle, digest) {
                Ok(sig) => {
                    let sig: [u8; 64] =
                        sig.as_slice().try_into().map_err(|_| DeviceError::Pkcs11 {
                            op: "C_Sign (ECDSA)",
                            rv: format!(
                                "the token returned a {}-byte signature, expected 64",
                                sig.len()
                            ),
                        })?;
                    session.release();
                    return Ok(sig);
                }
                Err(e) if !retried && rv_of(&e).is_some_and(stale_handle) => {
                    self.forget_key(key);
                    retried = true;
                }
                Err(e) => return Err(DeviceError::pkcs11("C_Sign (ECDSA)", e)),
            }
        }
    }

    /// Prove on the token that encryption key `id` works as
    /// `unwrap_and_decrypt` will use it: wrap a throw-away session AES-256 key
    /// with the public key (OAEP with the recorded hash), unwrap it with the
    /// private key, and AES-GCM-decrypt with the unwrapped copy what the
    /// original encrypted. Run after generation (a token without
    /// OAEP-SHA-256, such as SoftHSM 2.6, fails here instead of failing every
    /// later decryption); the daemon should also run it at start-up.
    pub fn self_test_encryption_key(&self, id: KeyId) -> Result<(), DeviceError> {
        let k = self.private_key(id, Role::Encryption)?;
        let oaep = k
            .oaep
            .expect("encryption keys are cached with their OAEP hash");
        let public = self.public_key_handle(id, Role::Encryption)?;
        let session = self.session()?;
        let s: &Session = &session;
        let probe = s
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(SESSION_KEY_LEN.into()),
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(true),
                    Attribute::Encrypt(true),
                ],
            )
            .map_err(|e| DeviceError::pkcs11("C_GenerateKey (self-test AES key)", e))?;
        let fail = |what: &str, e: CkError| DeviceError::SelfTest {
            id_hex: id.to_string(),
            problem: format!(
                "{what} with RSA-OAEP-{oaep} failed ({}); the token may not support this OAEP hash",
                describe(&e)
            ),
        };
        let mut clean = true;
        let result = s
            .wrap_key(&oaep_mechanism(oaep), public, probe)
            .map_err(|e| fail("C_WrapKey", e))
            .and_then(|wrapped| {
                let with_len = self.value_len_in_template.load(Ordering::Relaxed) != REFUSED;
                let mut r = s.unwrap_key(
                    &oaep_mechanism(oaep),
                    k.handle,
                    &wrapped,
                    &session_key_template(with_len),
                );
                if with_len && r.as_ref().err().and_then(rv_of) == Some(RvError::AttributeReadOnly)
                {
                    self.value_len_in_template.store(REFUSED, Ordering::Relaxed);
                    r = s.unwrap_key(
                        &oaep_mechanism(oaep),
                        k.handle,
                        &wrapped,
                        &session_key_template(false),
                    );
                }
                r.map_err(|e| fail("C_UnwrapKey", e))
            });
        let outcome = result.and_then(|copy| {
            let checked = gcm_probe(s, probe, copy);
            if s.destroy_object(copy).is_err() {
                clean = false;
            }
            checked.map_err(|problem| DeviceError::SelfTest {
                id_hex: id.to_string(),
                problem,
            })
        });
        if s.destroy_object(probe).is_err() {
            clean = false;
        }
        if clean && outcome.is_ok() {
            session.release();
        }
        outcome
    }
}

impl Token {
    /// One attempt; also says whether the session may be reused (false when the
    /// session key could not be destroyed: closing the session destroys it).
    #[allow(clippy::too_many_arguments)]
    fn unwrap_decrypt_once(
        &self,
        s: &Session,
        priv_key: ObjectHandle,
        oaep: OaepHash,
        wrapped_key: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext_with_tag: &[u8],
    ) -> (Result<Zeroizing<Vec<u8>>, Failure>, bool) {
        let state = self.value_len_in_template.load(Ordering::Relaxed);
        let with_len = state != REFUSED;
        let template = session_key_template(with_len);
        let aes = match s.unwrap_key(&oaep_mechanism(oaep), priv_key, wrapped_key, &template) {
            Ok(h) => {
                if with_len && state == UNKNOWN {
                    self.value_len_in_template
                        .store(ACCEPTED, Ordering::Relaxed);
                }
                h
            }
            Err(e)
                if with_len
                    && state != ACCEPTED
                    && rv_of(&e) == Some(RvError::AttributeReadOnly) =>
            {
                tracing::info!("the token does not take CKA_VALUE_LEN when unwrapping; checking the key length afterwards");
                self.value_len_in_template.store(REFUSED, Ordering::Relaxed);
                return (Err(Failure::ValueLenRefused), true);
            }
            Err(e) => return (Err(classify("C_UnwrapKey", e)), true),
        };
        let result = decrypt_with(s, aes, nonce, aad, ciphertext_with_tag);
        let destroyed = match s.destroy_object(aes) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(err = %e, "cannot destroy the session AES key; closing its session");
                false
            }
        };
        (result, destroyed)
    }
}

fn decrypt_with(
    s: &Session,
    aes: ObjectHandle,
    nonce: &[u8; 12],
    aad: &[u8],
    ciphertext_with_tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Failure> {
    // Where the token reports the unwrapped key's length, insist on 32 bytes.
    // SoftHSM 2.6 reports 0 (unknown); AES-GCM then still refuses lengths
    // other than 16, 24 or 32.
    let len = s
        .get_attributes(aes, &[AttributeType::ValueLen])
        .map_err(|e| classify("C_GetAttributeValue (session key)", e))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::ValueLen(l) => Some(u64::from(l)),
            _ => None,
        });
    if matches!(len, Some(l) if l != 0 && l != SESSION_KEY_LEN) {
        tracing::debug!(len = ?len, "unwrapped key is not 32 bytes");
        return Err(Failure::BadInput);
    }
    let mut iv = *nonce;
    let gcm = gcm_mechanism(&mut iv, aad).map_err(Failure::Device)?;
    s.decrypt(&gcm, aes, ciphertext_with_tag)
        .map(Zeroizing::new)
        .map_err(classify_decrypt)
}

fn gcm_mechanism<'a>(iv: &'a mut [u8; 12], aad: &'a [u8]) -> Result<Mechanism<'a>, DeviceError> {
    GcmParams::new(iv, aad, (TAG_LEN as u64 * 8).into())
        .map(Mechanism::AesGcm)
        .map_err(|e| DeviceError::Pkcs11 {
            op: "CKM_AES_GCM parameters",
            rv: e.to_string(),
        })
}

/// AES-GCM-encrypt a fixed message with `original` and decrypt it with
/// `copy` (the unwrapped twin); `Err` says what failed.
fn gcm_probe(s: &Session, original: ObjectHandle, copy: ObjectHandle) -> Result<(), String> {
    let msg = b"vtp device self-test";
    let aad = b"vtp self-test aad";
    let mut iv = [0x5a; 12];
    let mech = gcm_mechanism(&mut iv, aad).map_err(|e| e.to_string())?;
    let ct = s
        .encrypt(&mech, original, msg)
        .map_err(|e| format!("AES-GCM encryption failed ({})", describe(&e)))?;
    let mut iv = [0x5a; 12];
    let mech = gcm_mechanism(&mut iv, aad).map_err(|e| e.to_string())?;
    let pt = s.decrypt(&mech, copy, &ct).map_err(|e| {
        format!(
            "AES-GCM decryption with the unwrapped key failed ({})",
            describe(&e)
        )
    })?;
    if pt != msg {
        return Err("AES-GCM with the unwrapped key returned the wrong plaintext".into());
    }
    Ok(())
}
