//! The two primitive token operations: OAEP-unwrap + AES-GCM-decrypt, and
//! ECDSA P-256 signing; plus the OAEP self-test run after key generation.
//!
//! The decryption path is built so that a caller learns one bit about bad
//! input: [`DoesNotDecrypt`]. It returns
//! `Result<Result<plaintext, DoesNotDecrypt>, DeviceError>`:
//! - the inner `Err(DoesNotDecrypt)` means *the input* does not decrypt under
//!   this key (bad OAEP padding, wrong key length, bad tag, wrong AAD...);
//! - the outer `Err(DeviceError)` means the question could not be answered:
//!   unknown key id, a key that fails the policy, or a token/session failure
//!   that no input can cause (device removed, session closed, out of memory,
//!   not logged in, mechanism parameters the token does not support...). A
//!   caller must **not** treat that as "does not decrypt": the TP would then
//!   sign an invalid-envelope affidavit for an envelope that may be fine.
//!   Unknown return values count as device errors (retryable), never as
//!   "does not decrypt".
//!
//! Tokens report bad input differently (measured, `docs/tokens.md`): SoftHSM
//! 2.6 says `CKR_GENERAL_ERROR` for every bad padding or tag, kryoptic 1.5
//! says `CKR_DEVICE_ERROR` for bad OAEP padding and `CKR_ENCRYPTED_DATA_INVALID`
//! for a bad tag. `CKR_GENERAL_ERROR` therefore always means "does not
//! decrypt", and `CKR_DEVICE_ERROR` from `C_UnwrapKey` does on kryoptic only
//! (`Quirks`). Both values can also come from real trouble, which is why
//! `TrustedParty::resolve` self-tests the key before it signs an
//! invalid-envelope affidavit.
//!
//! The unwrapped key must be 32 bytes. `CKA_VALUE_LEN` is *not* put in the
//! unwrap template: SoftHSM 2.6 refuses it (`CKR_ATTRIBUTE_READ_ONLY`) and
//! kryoptic treats it as "take the first N bytes" (a 33- or 64-byte payload
//! unwraps to a 32-byte key). Instead the length is read back: kryoptic
//! reports it (and refuses non-AES lengths at unwrap with
//! `CKR_KEY_SIZE_RANGE`); SoftHSM 2.6 reports 0, so there only AES-GCM's
//! own refusal of lengths other than 16, 24 and 32 applies.

use std::sync::atomic::Ordering;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use vtp_protocol::KeyId;

use crate::error::{DeviceError, DoesNotDecrypt};
use crate::keys::Role;
use crate::oaep::OaepHash;
use crate::rv::{describe, rv_of, session_lost, stale_handle};
use crate::token::{PooledSession, Quirks, Token};

/// AES-256 key length: the only wrapped payload vtp accepts.
const SESSION_KEY_LEN: u64 = 32;
/// GCM tag length in bytes (128 bits).
const TAG_LEN: usize = 16;

/// How one attempt at an operation failed.
enum Failure {
    /// Caused by the input: report [`DoesNotDecrypt`]. `ambiguous`: the
    /// return value (`CKR_GENERAL_ERROR`, kryoptic's `CKR_DEVICE_ERROR`) is
    /// also what a logged-out token answers, so check the login first.
    BadInput { ambiguous: bool },
    /// The cached key handle is stale: re-find the key and retry once.
    StaleHandle,
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

fn classify(quirks: Quirks, op: &'static str, e: CkError) -> Failure {
    match &e {
        CkError::Pkcs11(RvError::DeviceError, Function::UnwrapKey)
            if quirks.unwrap_device_error_is_bad_input =>
        {
            tracing::debug!(
                op,
                "input does not decrypt (CKR_DEVICE_ERROR from C_UnwrapKey on this token)"
            );
            Failure::BadInput { ambiguous: true }
        }
        CkError::Pkcs11(rv, _) if stale_handle(*rv) => Failure::StaleHandle,
        CkError::Pkcs11(rv, _) if input_dependent(*rv) => {
            tracing::debug!(op, rv = ?rv, "input does not decrypt");
            Failure::BadInput {
                ambiguous: *rv == RvError::GeneralError,
            }
        }
        _ => Failure::Device(DeviceError::pkcs11(op, e)),
    }
}

/// Like [`classify`], for C_DecryptInit/C_Decrypt with the unwrapped key:
/// SoftHSM answers `CKR_MECHANISM_INVALID` at C_DecryptInit when the
/// unwrapped payload is not a valid AES key length. That the token does
/// AES-GCM at all is proven by [`Token::self_test_encryption_key`].
fn classify_decrypt(quirks: Quirks, e: CkError) -> Failure {
    match &e {
        CkError::Pkcs11(
            RvError::MechanismInvalid | RvError::KeySizeRange | RvError::KeyTypeInconsistent,
            Function::DecryptInit,
        ) => {
            tracing::debug!(err = %describe(&e), "unwrapped key unusable for AES-GCM");
            Failure::BadInput { ambiguous: false }
        }
        _ => classify(quirks, "C_Decrypt (AES-GCM)", e),
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
/// token, never extractable, good for decryption only. No `CKA_VALUE_LEN`
/// (see the module docs).
fn session_key_template() -> Vec<Attribute> {
    vec![
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
    ]
}

impl Token {
    /// Unwrap `wrapped_key` (RSA-OAEP with the hash recorded for `enc_key`,
    /// empty label) into a session AES-256 key that never leaves the token,
    /// AES-GCM-decrypt `ciphertext_with_tag` with it (`nonce`, `aad`, 128-bit
    /// tag), and destroy the session key in every case. See the module docs
    /// for the meaning of the two error layers. A lost login is restored and
    /// the operation retried once (see [`Token::recover_login`]).
    pub fn unwrap_and_decrypt(
        &self,
        enc_key: KeyId,
        wrapped_key: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext_with_tag: &[u8],
    ) -> Result<Result<Zeroizing<Vec<u8>>, DoesNotDecrypt>, DeviceError> {
        self.with_recovery(|| {
            self.unwrap_and_decrypt_inner(enc_key, wrapped_key, nonce, aad, ciphertext_with_tag)
        })
    }

    fn unwrap_and_decrypt_inner(
        &self,
        enc_key: KeyId,
        wrapped_key: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext_with_tag: &[u8],
    ) -> Result<Result<Zeroizing<Vec<u8>>, DoesNotDecrypt>, DeviceError> {
        let (mut retried_handle, mut checked_login) = (false, false);
        let mut epoch = self.login_epoch();
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
            // A session whose operation failed is never reused: dropping the
            // guard closes it (or forgets it if its handle is gone).
            if reusable && result.is_ok() {
                session.release();
            } else {
                drop(session);
            }
            match result {
                Ok(plain) => return Ok(Ok(plain)),
                Err(Failure::BadInput { ambiguous: true }) => {
                    // Logged out, kryoptic answers C_UnwrapKey with
                    // CKR_GENERAL_ERROR: only an answer given while logged
                    // in means "does not decrypt". The retry's answer too:
                    // logged out again in between, kryoptic gave honest
                    // claims invalid-envelope affidavits.
                    if !self.recovered_since(epoch)? {
                        return Ok(Err(DoesNotDecrypt));
                    }
                    if checked_login {
                        return Err(DeviceError::SessionLost {
                            op: "C_UnwrapKey",
                            rv: "the login was lost again during the retry".into(),
                        });
                    }
                    checked_login = true;
                    epoch = self.login_epoch();
                    self.forget_key(enc_key);
                }
                Err(Failure::BadInput { ambiguous: false }) => return Ok(Err(DoesNotDecrypt)),
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
        self.with_recovery(|| self.sign_p256_inner(key, digest))
    }

    fn sign_p256_inner(&self, key: KeyId, digest: &[u8; 32]) -> Result<[u8; 64], DeviceError> {
        let mut retried = false;
        loop {
            let k = self.private_key(key, Role::Signing)?;
            let session = self.session()?;
            match session.check(session.sign(&Mechanism::Ecdsa, k.handle, digest)) {
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
        self.with_recovery(|| self.self_test_inner(id))
    }

    fn self_test_inner(&self, id: KeyId) -> Result<(), DeviceError> {
        let k = self.private_key(id, Role::Encryption)?;
        let oaep = k
            .oaep
            .expect("encryption keys are cached with their OAEP hash");
        let public = self.public_key_handle(id, Role::Encryption)?;
        let session = self.session()?;
        match oaep_round_trip(&session, oaep, public, k.handle) {
            Ok(clean) => {
                if clean {
                    session.release();
                }
                Ok(())
            }
            Err(RoundTrip::Token(op, e)) if rv_of(&e).is_some_and(session_lost) => {
                Err(DeviceError::pkcs11(op, e))
            }
            Err(RoundTrip::Token(op, e)) if op == "C_GenerateKey (self-test AES key)" => {
                Err(DeviceError::pkcs11(op, e))
            }
            Err(RoundTrip::Token(op, e)) => Err(DeviceError::SelfTest {
                id_hex: id.to_string(),
                problem: format!(
                    "{op} with RSA-OAEP-{oaep} failed ({}); the token may not support this OAEP hash",
                    describe(&e)
                ),
            }),
            Err(RoundTrip::Gcm(problem)) => Err(DeviceError::SelfTest {
                id_hex: id.to_string(),
                problem,
            }),
        }
    }

    /// The OAEP hash to give new encryption keys on this token: SHA-256 when
    /// the token can wrap and unwrap with OAEP-SHA-256 (kryoptic, most HSMs),
    /// else SHA-1 (SoftHSM 2.6). Probed once with a throw-away session RSA
    /// key pair (one RSA key generation), then remembered.
    pub fn preferred_oaep_hash(&self) -> Result<OaepHash, DeviceError> {
        match self.preferred_oaep.load(Ordering::Relaxed) {
            1 => return Ok(OaepHash::Sha1),
            2 => return Ok(OaepHash::Sha256),
            _ => {}
        }
        let sha256 = self.with_recovery(|| self.probe_oaep(OaepHash::Sha256))?;
        let (hash, code) = if sha256 {
            (OaepHash::Sha256, 2)
        } else {
            (OaepHash::Sha1, 1)
        };
        self.preferred_oaep.store(code, Ordering::Relaxed);
        tracing::info!(oaep = %hash, "preferred OAEP hash of this token");
        Ok(hash)
    }

    /// Whether an OAEP round trip with `oaep` works, with session keys.
    fn probe_oaep(&self, oaep: OaepHash) -> Result<bool, DeviceError> {
        // A logged-out kryoptic fails the round trip with CKR_GENERAL_ERROR,
        // which would read as "no SHA-256".
        self.recover_login()?;
        let session = self.session()?;
        let public = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Encrypt(true),
            Attribute::Wrap(true),
            Attribute::ModulusBits(2048u64.into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        ];
        let private = [
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Unwrap(true),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::AllowedMechanisms(vec![MechanismType::RSA_PKCS_OAEP]),
        ];
        let (pub_h, priv_h) = session
            .check(session.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private))
            .map_err(|e| DeviceError::pkcs11("C_GenerateKeyPair (OAEP probe)", e))?;
        let outcome = match oaep_round_trip(&session, oaep, pub_h, priv_h) {
            Ok(clean) => Ok((true, clean)),
            Err(RoundTrip::Token(op, e))
                if rv_of(&e).is_some_and(session_lost)
                    || op == "C_GenerateKey (self-test AES key)" =>
            {
                Err(DeviceError::pkcs11(op, e))
            }
            Err(RoundTrip::Token(op, e)) => {
                tracing::debug!(oaep = %oaep, op, err = %describe(&e), "OAEP probe failed");
                Ok((false, true))
            }
            Err(RoundTrip::Gcm(problem)) => {
                tracing::debug!(oaep = %oaep, problem, "OAEP probe failed");
                Ok((false, true))
            }
        };
        let destroyed = [priv_h, pub_h]
            .into_iter()
            .all(|h| session.check(session.destroy_object(h)).is_ok());
        let (works, clean) = outcome?;
        if clean && destroyed {
            session.release();
        }
        Ok(works)
    }
}

/// How [`oaep_round_trip`] failed.
enum RoundTrip {
    /// A token call failed.
    Token(&'static str, CkError),
    /// The AES-GCM check with the unwrapped key failed.
    Gcm(String),
}

/// Generate a session AES-256 key, wrap it with `public` (OAEP `oaep`),
/// unwrap it with `private`, and check with AES-GCM that the copy is the
/// same key. Session objects are destroyed; `Ok(false)` when one could not
/// be (the session must then be closed, not reused).
fn oaep_round_trip(
    s: &PooledSession<'_>,
    oaep: OaepHash,
    public: ObjectHandle,
    private: ObjectHandle,
) -> Result<bool, RoundTrip> {
    let probe = s
        .check(s.generate_key(
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
        ))
        .map_err(|e| RoundTrip::Token("C_GenerateKey (self-test AES key)", e))?;
    let mut clean = true;
    let result = s
        .check(s.wrap_key(&oaep_mechanism(oaep), public, probe))
        .map_err(|e| RoundTrip::Token("C_WrapKey", e))
        .and_then(|wrapped| {
            s.check(s.unwrap_key(
                &oaep_mechanism(oaep),
                private,
                &wrapped,
                &session_key_template(),
            ))
            .map_err(|e| RoundTrip::Token("C_UnwrapKey", e))
        })
        .and_then(|copy| {
            let checked = gcm_probe(s, probe, copy);
            if s.check(s.destroy_object(copy)).is_err() {
                clean = false;
            }
            checked.map_err(RoundTrip::Gcm)
        });
    if s.check(s.destroy_object(probe)).is_err() {
        clean = false;
    }
    result.map(|()| clean)
}

impl Token {
    /// One attempt; also says whether the session may be reused (false when the
    /// session key could not be destroyed: closing the session destroys it).
    #[allow(clippy::too_many_arguments)]
    fn unwrap_decrypt_once(
        &self,
        s: &PooledSession<'_>,
        priv_key: ObjectHandle,
        oaep: OaepHash,
        wrapped_key: &[u8],
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext_with_tag: &[u8],
    ) -> (Result<Zeroizing<Vec<u8>>, Failure>, bool) {
        let aes = match s.check(s.unwrap_key(
            &oaep_mechanism(oaep),
            priv_key,
            wrapped_key,
            &session_key_template(),
        )) {
            Ok(h) => h,
            Err(e) => return (Err(classify(self.quirks, "C_UnwrapKey", e)), true),
        };
        let result = decrypt_with(self.quirks, s, aes, nonce, aad, ciphertext_with_tag);
        let destroyed = match s.check(s.destroy_object(aes)) {
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
    quirks: Quirks,
    s: &PooledSession<'_>,
    aes: ObjectHandle,
    nonce: &[u8; 12],
    aad: &[u8],
    ciphertext_with_tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Failure> {
    // Where the token reports the unwrapped key's length (kryoptic does),
    // insist on 32 bytes. SoftHSM 2.6 reports 0 (unknown); AES-GCM then
    // still refuses lengths other than 16, 24 or 32.
    let len = s
        .check(s.get_attributes(aes, &[AttributeType::ValueLen]))
        .map_err(|e| classify(quirks, "C_GetAttributeValue (session key)", e))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::ValueLen(l) => Some(u64::from(l)),
            _ => None,
        });
    if matches!(len, Some(l) if l != 0 && l != SESSION_KEY_LEN) {
        tracing::debug!(len = ?len, "unwrapped key is not 32 bytes");
        return Err(Failure::BadInput { ambiguous: false });
    }
    let mut iv = *nonce;
    let gcm = gcm_mechanism(&mut iv, aad).map_err(Failure::Device)?;
    s.check(s.decrypt(&gcm, aes, ciphertext_with_tag))
        .map(Zeroizing::new)
        .map_err(|e| classify_decrypt(quirks, e))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(f: Failure) -> &'static str {
        match f {
            Failure::BadInput { ambiguous: false } => "bad input",
            Failure::BadInput { ambiguous: true } => "bad input, if logged in",
            Failure::StaleHandle => "stale handle",
            Failure::Device(DeviceError::SessionLost { .. }) => "session lost",
            Failure::Device(_) => "device",
        }
    }

    #[test]
    fn return_values_are_split_between_input_and_device() {
        let softhsm = Quirks::default();
        let kryoptic = Quirks {
            unwrap_device_error_is_bad_input: true,
        };
        let c = |q, rv, f| kind(classify(q, "op", CkError::Pkcs11(rv, f)));
        use Function::{Decrypt, Sign, UnwrapKey};
        use RvError as R;
        // SoftHSM's answer to every bad padding or tag.
        assert_eq!(
            c(softhsm, R::GeneralError, UnwrapKey),
            "bad input, if logged in"
        );
        assert_eq!(
            c(softhsm, R::GeneralError, Decrypt),
            "bad input, if logged in"
        );
        // kryoptic's answers: bad OAEP padding, bad tag, short input.
        assert_eq!(
            c(kryoptic, R::DeviceError, UnwrapKey),
            "bad input, if logged in"
        );
        assert_eq!(c(kryoptic, R::EncryptedDataInvalid, Decrypt), "bad input");
        assert_eq!(c(kryoptic, R::EncryptedDataLenRange, Decrypt), "bad input");
        assert_eq!(c(kryoptic, R::KeySizeRange, UnwrapKey), "bad input");
        // CKR_DEVICE_ERROR stays a device error elsewhere.
        assert_eq!(c(softhsm, R::DeviceError, UnwrapKey), "device");
        assert_eq!(c(kryoptic, R::DeviceError, Decrypt), "device");
        assert_eq!(c(kryoptic, R::DeviceError, Sign), "device");
        // Never "does not decrypt": lost sessions, unknown values, memory.
        for q in [softhsm, kryoptic] {
            assert_eq!(c(q, R::SessionHandleInvalid, UnwrapKey), "session lost");
            assert_eq!(c(q, R::UserNotLoggedIn, UnwrapKey), "session lost");
            assert_eq!(c(q, R::HostMemory, UnwrapKey), "device");
            assert_eq!(c(q, R::MechanismParamInvalid, UnwrapKey), "device");
            assert_eq!(
                c(q, R::UnwrappingKeyHandleInvalid, UnwrapKey),
                "stale handle"
            );
        }
    }
}
