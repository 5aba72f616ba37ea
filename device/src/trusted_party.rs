//! The trusted party as the daemon sees it: its keys on the token, its card,
//! and the only operations it may ask for — `resolve` (decrypt z, check it
//! against the signed header, sign the affidavit) and `unclaimed`. No raw
//! decrypt or sign is reachable from outside this crate through this type;
//! per-message plaintext is wiped when the call returns.
//!
//! `resolve` comes in two halves because every affidavit names the journal
//! record it will be stored in (`AffidavitBody::journal`), and the daemon can
//! assign that position only in order, one record at a time: it runs the
//! expensive half, [`TrustedParty::decide`] (RSA unwrap + AES-GCM in the
//! token, then the checks), concurrently, and the cheap half,
//! [`TrustedParty::sign_decision`] (one ECDSA signature), in its sequencer.
//! Between the two, the outcome is a [`Decision`]: opaque, not `Clone`, its
//! secret half wiped on drop, and only this type can turn it into anything —
//! so what leaves the crate is still only ever a checked, signed outcome.

use std::sync::Arc;

use vtp_protocol::affidavit::{Affidavit, AffidavitBody, ChainPosition};
use vtp_protocol::decide::{CertifiableUnclaimed, ResolvableClaim};
use vtp_protocol::seal::Z_NONCE;
use vtp_protocol::tp_card::{self, Policy, TpCard, TpCardBody, TpEncKey};
use vtp_protocol::wire::ClaimOutcome;
use vtp_protocol::{Digest32, EcPoint, KeyId, Signature, Timestamp};
use zeroize::Zeroizing;

use crate::error::DeviceError;
use crate::oaep::OaepHash;
use crate::test_faults;
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

/// The token did not show a key this TP is configured with, even after the
/// device layer tried to log in again (e.g. it was logged out once more in
/// between). The key is not unknown — claims for it are valid — the token is
/// not answering as it should: report a retryable device error, never
/// [`DeviceError::KeyNotFound`] (which the daemon answers with "unknown
/// key", telling the client not to retry).
fn key_vanished(e: DeviceError) -> DeviceError {
    match e {
        DeviceError::KeyNotFound { what, id_hex } => DeviceError::Pkcs11 {
            op: "C_FindObjects",
            rv: format!(
                "the token does not show the TP's {what} key {id_hex} right now (logged out or \
                 sessions lost again?)"
            ),
        },
        other => other,
    }
}

/// A claim decrypted and checked by [`TrustedParty::decide`], waiting for
/// its journal position and signature. Holds `E_B(k_m)` for a resolution
/// (wiped when dropped unsigned); nothing in it can be read or copied
/// outside this crate.
pub struct Decision {
    /// The affidavit to sign, with a placeholder journal position.
    body: AffidavitBody,
    /// `Some` for a resolution.
    wrapped_km: Option<Zeroizing<Vec<u8>>>,
}

impl Decision {
    /// `"resolved"` or `"invalid-envelope"`.
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }
    /// The z this decision is about.
    pub fn z_hash(&self) -> Digest32 {
        self.body.z_hash
    }
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decision")
            .field("kind", &self.kind())
            .field("z_hash", &self.body.z_hash)
            .finish_non_exhaustive()
    }
}

/// The TP: a logged-in token, its key set and the card built from it.
pub struct TrustedParty {
    token: Arc<Token>,
    keys: TpKeys,
    card: TpCard,
}

impl TrustedParty {
    /// Check every key (policy attributes, OAEP self-test), export the public
    /// halves, and have the token sign the TP card (one without addresses).
    pub fn open(
        token: Arc<Token>,
        keys: TpKeys,
        name: &str,
        policy: Policy,
        now: Timestamp,
    ) -> Result<Self, DeviceError> {
        Self::open_with_addresses(token, keys, name, policy, Vec::new(), now)
    }

    /// [`Self::open`], the card also publishing (and signing) the addresses
    /// where clients reach the TP.
    pub fn open_with_addresses(
        token: Arc<Token>,
        keys: TpKeys,
        name: &str,
        policy: Policy,
        addresses: Vec<String>,
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
                id: *id,
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
            current_key: keys.current,
            policy,
            created: now,
        };
        let sig = token.sign_p256(keys.signing, &body.signing_digest_with(&addresses).0)?;
        // Verifying the token's signature here catches a signing key whose
        // public half is not the one exported (a broken token or object mix-up).
        let card =
            TpCard::assemble_with_addresses(body, addresses, Signature(sig)).map_err(|e| {
                DeviceError::KeyPolicy {
                    id_hex: keys.signing.to_string(),
                    problem: format!("the token's signature on the TP card does not verify: {e}"),
                }
            })?;
        Ok(TrustedParty { token, keys, card })
    }

    pub fn card(&self) -> &TpCard {
        &self.card
    }
    pub fn keys(&self) -> &TpKeys {
        &self.keys
    }

    /// The atomic device operation in one call: [`Self::decide`], then
    /// [`Self::sign_decision`] at journal position `journal`. Returns a
    /// signed outcome or an error after which nothing was released:
    /// - z decrypts in the token and its inside agrees with the signed header:
    ///   a `Resolved` affidavit and `E_B(k_m)` for the recipient;
    /// - z does not decrypt, or disagrees: an `InvalidEnvelope` affidavit —
    ///   but only after a self-test of the key shows the token itself works,
    ///   because SoftHSM reports device trouble and bad padding alike;
    /// - unknown or retired key, or any device failure: `Err`, retryable.
    pub fn resolve(
        &self,
        claim: &ResolvableClaim,
        journal: ChainPosition,
    ) -> Result<ClaimOutcome, DeviceError> {
        let decision = self.decide(claim)?;
        self.sign_decision(decision, journal)
    }

    /// First half of [`Self::resolve`], the expensive one: decrypt z in the
    /// token and check its inside against the signed header. Nothing is
    /// signed yet and nothing can be taken out of the [`Decision`]: the
    /// daemon assigns the journal position (which must be known before the
    /// affidavit is signed) and then has [`Self::sign_decision`] sign it.
    /// Errors as for [`Self::resolve`].
    ///
    /// Only a [`ResolvableClaim`] gets here: a claim that the decision core
    /// (`vtp_protocol::decide`) let through after the journal, policy and
    /// deadline rules; the affidavit states the time the deadline was checked.
    pub fn decide(&self, claim: &ResolvableClaim) -> Result<Decision, DeviceError> {
        let key = claim.key_id();
        if !self.keys.encryption.contains(&key) {
            return Err(DeviceError::KeyNotFound {
                what: "TP decryption key named by the envelope (unknown or retired)",
                id_hex: key.to_string(),
            });
        }
        // This TP's z: with a group of trustees, the one in its own slot.
        let z = claim.z();
        test_faults::before_decrypt();
        let decrypted = self
            .token
            .unwrap_and_decrypt(key, &z.wrapped_key, &Z_NONCE, &claim.aad(), &z.sealed)
            .map_err(key_vanished)?;
        // TEST HOOK (inert unless installed): crash point `after-decrypt`
        // and device faults between the decryption and the signature.
        test_faults::after_decrypt(&self.token)?;
        let inside = match decrypted {
            Ok(plain) => claim.check_inside(&plain).ok(),
            Err(_does_not_decrypt) => {
                self.token
                    .self_test_encryption_key(key)
                    .map_err(key_vanished)?;
                None
            }
        };
        // `at` and the journal position are filled in when signing.
        let unplaced = ChainPosition {
            seq: 0,
            prev: ChainPosition::GENESIS_PREV,
        };
        Ok(match inside {
            Some(mut inside) => {
                let body = AffidavitBody::resolved(claim, &inside, unplaced);
                let wrapped_km = Zeroizing::new(std::mem::take(&mut inside.wrapped_km));
                zeroize::Zeroize::zeroize(&mut inside);
                Decision {
                    body,
                    wrapped_km: Some(wrapped_km),
                }
            }
            None => Decision {
                body: AffidavitBody::invalid_envelope(claim, unplaced),
                wrapped_km: None,
            },
        })
    }

    /// Second half of [`Self::resolve`]: sign the affidavit of a
    /// [`Decision`] at journal position `journal` and hand out the outcome
    /// (with `E_B(k_m)` for a resolution). The decision is consumed either
    /// way; after an error, decide again.
    pub fn sign_decision(
        &self,
        decision: Decision,
        journal: ChainPosition,
    ) -> Result<ClaimOutcome, DeviceError> {
        if journal.seq == 0 {
            return Err(DeviceError::InvalidArgument(
                "an affidavit at journal position 0".into(),
            ));
        }
        if decision.body.tp != self.card.id() {
            return Err(DeviceError::InvalidArgument(
                "a decision made by another TP identity".into(),
            ));
        }
        let mut decision = decision;
        let mut body = decision.body.clone();
        body.journal = journal;
        let affidavit = self.sign(body)?;
        Ok(match decision.wrapped_km.take() {
            Some(mut km) => ClaimOutcome::Resolved {
                affidavit,
                wrapped_km: std::mem::take(&mut *km),
            },
            None => ClaimOutcome::InvalidEnvelope { affidavit },
        })
    }

    /// Sign an unclaimed certificate, recorded at journal position
    /// `journal`. Only a [`CertifiableUnclaimed`] gets here: the decision
    /// core checked the deadline and the journal.
    pub fn unclaimed(
        &self,
        cert: &CertifiableUnclaimed,
        journal: ChainPosition,
    ) -> Result<Affidavit, DeviceError> {
        if journal.seq == 0 {
            return Err(DeviceError::InvalidArgument(
                "an affidavit at journal position 0".into(),
            ));
        }
        if cert.envelope().header().trustees[cert.slot()].tp != self.card.id() {
            return Err(DeviceError::InvalidArgument(
                "an unclaimed certificate for an envelope of other TPs".into(),
            ));
        }
        self.sign(AffidavitBody::unclaimed(cert, journal))
    }

    fn sign(&self, body: AffidavitBody) -> Result<Affidavit, DeviceError> {
        test_faults::before_sign()?;
        let sig = self
            .token
            .sign_p256(self.keys.signing, &body.signing_digest().0)
            .map_err(key_vanished)?;
        Ok(Affidavit {
            body,
            signature: Signature(sig),
        })
    }
}
