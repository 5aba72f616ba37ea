//! The trusted party as the daemon sees it: its keys on the token, its card,
//! and the only two operations it may ask for — `resolve` (decrypt z, check it
//! against the signed header, sign the affidavit, all in one call) and
//! `unclaimed`. No raw decrypt or sign is reachable from outside this crate
//! through this type; per-message plaintext is wiped when the call returns.

use std::sync::Arc;

use vtp_protocol::affidavit::{Affidavit, AffidavitBody};
use vtp_protocol::claim::VerifiedClaim;
use vtp_protocol::envelope::VerifiedEnvelope;
use vtp_protocol::seal::Z_NONCE;
use vtp_protocol::tp_card::{self, Policy, TpCard, TpCardBody, TpEncKey};
use vtp_protocol::wire::ClaimOutcome;
use vtp_protocol::{EcPoint, Signature, Timestamp};

use crate::error::DeviceError;
use crate::keys::{KeyId, OaepHash};
use crate::token::Token;

/// Which token objects make up the TP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpKeys {
    pub signing: KeyId,
    /// Every decryption key still honoured (current and older ones).
    pub encryption: Vec<KeyId>,
    /// The key new envelopes should use.
    pub current: KeyId,
}

/// Generate a fresh TP key set on the token (one RSA key, one P-256 key).
pub fn generate_tp_keys(
    token: &Token,
    rsa_bits: u32,
    oaep: OaepHash,
) -> Result<TpKeys, DeviceError> {
    let enc = token.generate_encryption_key(rsa_bits, oaep)?;
    let signing = token.generate_signing_key()?;
    Ok(TpKeys {
        signing,
        encryption: vec![enc],
        current: enc,
    })
}

/// The TP: a logged-in token, its key set and the card built from it.
pub struct TrustedParty {
    token: Arc<Token>,
    keys: TpKeys,
    card: TpCard,
}

fn protocol_key_id(id: KeyId) -> vtp_protocol::KeyId {
    vtp_protocol::KeyId(*id.as_bytes())
}

impl TrustedParty {
    /// Check every key (policy attributes, OAEP self-test), export the public
    /// halves, and have the token sign the TP card.
    pub fn open(
        token: Arc<Token>,
        keys: TpKeys,
        name: &str,
        policy: Policy,
        now: Timestamp,
    ) -> Result<Self, DeviceError> {
        if !keys.encryption.contains(&keys.current) {
            return Err(DeviceError::KeyNotFound {
                what: "current encryption key among the configured encryption keys",
                id_hex: keys.current.to_string(),
            });
        }
        let mut enc_keys = Vec::new();
        for id in &keys.encryption {
            token.self_test_encryption_key(*id)?;
            let public = token.rsa_public(*id)?;
            enc_keys.push(TpEncKey {
                id: protocol_key_id(*id),
                modulus: public.modulus,
                exponent: public.exponent,
                oaep: match public.oaep {
                    OaepHash::Sha1 => tp_card::OaepHash::Sha1,
                    OaepHash::Sha256 => tp_card::OaepHash::Sha256,
                },
            });
        }
        let point = token.ec_public(keys.signing)?;
        let sign_key = EcPoint::from_sec1(&point).map_err(|e| DeviceError::KeyPolicy {
            id_hex: keys.signing.to_string(),
            problem: format!("public key is not a P-256 point: {e}"),
        })?;
        let body = TpCardBody {
            name: name.to_string(),
            sign_key,
            enc_keys,
            current_key: protocol_key_id(keys.current),
            policy,
            created: now,
        };
        let sig = token.sign_p256(keys.signing, &body.signing_digest().0)?;
        // Verifying the token's signature here catches a signing key whose
        // public half is not the one exported (a broken token or object mix-up).
        let card = TpCard::assemble(body, Signature(sig)).map_err(|e| DeviceError::KeyPolicy {
            id_hex: keys.signing.to_string(),
            problem: format!("the token's signature on the TP card does not verify: {e}"),
        })?;
        Ok(TrustedParty { token, keys, card })
    }

    pub fn card(&self) -> &TpCard {
        &self.card
    }
    pub fn keys(&self) -> &TpKeys {
        &self.keys
    }

    /// The atomic device operation. Returns a signed outcome or an error after
    /// which nothing was released:
    /// - z decrypts in the token and its inside agrees with the signed header:
    ///   a `Resolved` affidavit and `E_B(k_m)` for the recipient;
    /// - z does not decrypt, or disagrees: an `InvalidEnvelope` affidavit —
    ///   but only after a self-test of the key shows the token itself works,
    ///   because SoftHSM reports device trouble and bad padding alike;
    /// - unknown or retired key, or any device failure: `Err`, retryable.
    pub fn resolve(
        &self,
        claim: &VerifiedClaim,
        now: Timestamp,
    ) -> Result<ClaimOutcome, DeviceError> {
        let header = claim.envelope().header();
        let key = KeyId(header.key_id.0);
        if !self.keys.encryption.contains(&key) {
            return Err(DeviceError::KeyNotFound {
                what: "TP decryption key named by the envelope (unknown or retired)",
                id_hex: key.to_string(),
            });
        }
        let z = &claim.envelope().envelope().z;
        let decrypted = self.token.unwrap_and_decrypt(
            key,
            &z.wrapped_key,
            &Z_NONCE,
            &claim.aad(),
            &z.sealed,
        )?;
        let inside = match decrypted {
            Ok(plain) => claim.check_inside(&plain).ok(),
            Err(_does_not_decrypt) => {
                self.token.self_test_encryption_key(key)?;
                None
            }
        };
        match inside {
            Some(mut inside) => {
                let body = AffidavitBody::resolved(claim, &inside, now);
                let affidavit = self.sign(body)?;
                let wrapped_km = std::mem::take(&mut inside.wrapped_km);
                zeroize::Zeroize::zeroize(&mut inside);
                Ok(ClaimOutcome::Resolved {
                    affidavit,
                    wrapped_km,
                })
            }
            None => Ok(ClaimOutcome::InvalidEnvelope {
                affidavit: self.sign(AffidavitBody::invalid_envelope(claim, now))?,
            }),
        }
    }

    /// Sign an unclaimed certificate. The caller (the daemon) checks the
    /// deadline has passed and that its journal never resolved this z.
    pub fn unclaimed(
        &self,
        env: &VerifiedEnvelope,
        now: Timestamp,
    ) -> Result<Affidavit, DeviceError> {
        if now < env.header().deadline {
            return Err(DeviceError::InvalidArgument(
                "an unclaimed certificate before the deadline".into(),
            ));
        }
        self.sign(AffidavitBody::unclaimed(env, now))
    }

    fn sign(&self, body: AffidavitBody) -> Result<Affidavit, DeviceError> {
        let sig = self
            .token
            .sign_p256(self.keys.signing, &body.signing_digest().0)?;
        Ok(Affidavit {
            body,
            signature: Signature(sig),
        })
    }
}
