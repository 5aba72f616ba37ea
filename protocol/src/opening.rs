//! A2/B2: Alice reveals the opening secret of her envelope; Bob (or a judge)
//! checks it without any TP by recomputing every trustee's z.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::encoding::{self, Kind};
use crate::envelope::VerifiedEnvelope;
use crate::identity::{IdentityCard, IdentitySecret};
use crate::receipt::VerifiedReceipt;
use crate::seal::{self, Derived, Inside, OpeningSecret};
use crate::shares::Share;
use crate::{Digest32, ProtocolError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opening {
    pub envelope_id: Digest32,
    pub secret: [u8; 32],
}

/// What a valid opening yields.
pub struct OpenedEnvelope {
    pub inside: Inside,
    /// The message key `k_m`.
    pub message_key: Zeroizing<[u8; 32]>,
}

impl Opening {
    /// A2: Alice re-derives the secret of her envelope (nothing stored) after
    /// checking Bob's receipt, and checks it opens z before handing it over.
    pub fn reveal(
        me: &IdentitySecret,
        env: &VerifiedEnvelope,
        receipt: &VerifiedReceipt,
    ) -> Result<Opening, ProtocolError> {
        let h = env.header();
        if h.sender != me.id() {
            return Err(ProtocolError::Refused(
                "this envelope was not sent by this identity".into(),
            ));
        }
        let s = OpeningSecret::derive(me.master_seed(), &h.nonce);
        let opening = Opening {
            envelope_id: h.envelope_id(),
            secret: *s.as_bytes(),
        };
        opening.check(env, &receipt.receipt().recipient_card)?;
        Ok(opening)
    }

    /// B2: the opening recomputes every trustee's z exactly, each inside
    /// agrees with the signed header, and each wrapped key share for the
    /// recipient is the one derived from the opening. Content is what z
    /// decrypts to.
    pub fn check(
        &self,
        env: &VerifiedEnvelope,
        recipient: &IdentityCard,
    ) -> Result<OpenedEnvelope, ProtocolError> {
        let h = env.header();
        if self.envelope_id != h.envelope_id() {
            return Err(ProtocolError::mismatch(
                "opening",
                "it is for another envelope",
            ));
        }
        if recipient.id() != h.recipient {
            return Err(ProtocolError::mismatch(
                "opening",
                "recipient card is not the envelope's recipient",
            ));
        }
        let d = Derived::from_secret(&OpeningSecret::from_bytes(self.secret));
        let shares = d.shares(h.threshold(), h.trustees.len())?;
        let mut first = None;
        for (i, (slot, share)) in h.trustees.iter().zip(&shares).enumerate() {
            let secrets = d.slot(i);
            let key = env.tp_cards()[i].key(slot.key_id)?;
            let inside = seal::open_z_with_secret(key, &env.envelope().zs[i], &secrets, &h.aad(i))
                .map_err(|_| ProtocolError::mismatch("opening", "it does not open z"))?;
            h.check_inside(i, &inside)?;
            let expect = seal::wrap_message_key(
                recipient.enc_key(),
                &secrets.wrap_eph,
                share.value(),
                &h.wrap_context(i),
            )?;
            if expect != inside.wrapped_km {
                return Err(ProtocolError::mismatch(
                    "inside of z",
                    "the wrapped message key is not the one derived from the opening",
                ));
            }
            first.get_or_insert(inside);
        }
        Ok(OpenedEnvelope {
            inside: first.expect("an envelope has at least one trustee"),
            message_key: Zeroizing::new(d.km),
        })
    }
    pub fn to_file(&self) -> Vec<u8> {
        encoding::encode(Kind::Opening, self)
    }
    pub fn from_file(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(Kind::Opening, bytes)
    }
}

/// Bob's side of the TP path: unwrap the key share trustee slot `slot`
/// released.
pub fn unwrap_released_share(
    me: &IdentitySecret,
    env: &VerifiedEnvelope,
    slot: usize,
    wrapped_km: &[u8],
) -> Result<Share, ProtocolError> {
    let y = seal::unwrap_message_key(
        me.enc_secret(),
        wrapped_km,
        &env.header().wrap_context(slot),
    )?;
    Ok(Share::new(slot as u8 + 1, *y))
}

/// The message key from the shares released by `threshold` trustees.
pub fn message_key_from_shares(
    env: &VerifiedEnvelope,
    shares: &[Share],
) -> Result<Zeroizing<[u8; 32]>, ProtocolError> {
    let t = env.header().threshold();
    if shares.len() < t {
        return Err(ProtocolError::Refused(format!(
            "{} of the {t} trustees needed released their key share",
            shares.len()
        )));
    }
    seal::message_key_from_shares(&shares[..t], t)
}

/// [`unwrap_released_share`] + [`message_key_from_shares`] for an envelope
/// with one TP.
pub fn unwrap_released_key(
    me: &IdentitySecret,
    env: &VerifiedEnvelope,
    wrapped_km: &[u8],
) -> Result<Zeroizing<[u8; 32]>, ProtocolError> {
    let share = unwrap_released_share(me, env, 0, wrapped_km)?;
    message_key_from_shares(env, &[share])
}
