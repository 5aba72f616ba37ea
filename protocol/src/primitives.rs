//! Typed bytes: digests, identifiers, public keys and signatures.
//!
//! Each type validates itself when decoded (serde `try_from`), so a value that
//! exists is well-formed: a parsed card always holds points on the curve, a
//! parsed signature always has the right length.

use std::fmt;
use std::str::FromStr;

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ProtocolError;

/// A SHA-256 output.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Digest32(pub [u8; 32]);

impl Digest32 {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Result<Self, ProtocolError> {
        let v = hex::decode(s.trim()).map_err(|e| ProtocolError::malformed("digest", e))?;
        let a: [u8; 32] = v
            .try_into()
            .map_err(|_| ProtocolError::malformed("digest", "expected 32 bytes (64 hex digits)"))?;
        Ok(Digest32(a))
    }
}

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", &self.to_hex()[..16])
    }
}

macro_rules! digest_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub Digest32);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

digest_newtype!(
    /// A party's identity: the SHA-256 of its canonical card body.
    IdentityId
);
digest_newtype!(
    /// The TP's identity: the SHA-256 of its signing key. Stable across
    /// encryption-key rotation, so old envelopes keep naming the same TP.
    TpId
);

/// Identifier of one TP key (the token object's `CKA_ID`, shared by both
/// halves of a key pair); shown as 16 lowercase hex digits. The device layer
/// uses this same type, so ids pass between card, journal and token as is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The `CKA_ID` bytes.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}
impl FromStr for KeyId {
    type Err = ProtocolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = hex::decode(s.trim())
            .map_err(|e| ProtocolError::malformed("key id", format!("{s:?}: {e}")))?;
        let a: [u8; 8] = v.try_into().map_err(|_| {
            ProtocolError::malformed("key id", format!("{s:?}: expected 16 hex digits"))
        })?;
        Ok(KeyId(a))
    }
}

/// A P-256 public key in compressed SEC1 form, checked to be on the curve.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct EcPoint(p256::PublicKey);

impl EcPoint {
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, ProtocolError> {
        // Compressed points (the encoding used everywhere in vtp) cost a
        // square root to check; remember the ones already checked.
        let key: Option<[u8; 33]> = bytes.try_into().ok();
        if let Some(k) = &key {
            if let Some(pk) = crate::cache::points().get(k) {
                return Ok(EcPoint(pk));
            }
        }
        let pk = p256::PublicKey::from_sec1_bytes(bytes)
            .map_err(|_| ProtocolError::malformed("P-256 public key", "not a valid curve point"))?;
        if let Some(k) = key {
            crate::cache::points().insert(k, pk);
        }
        Ok(EcPoint(pk))
    }
    pub fn public_key(&self) -> &p256::PublicKey {
        &self.0
    }
    pub fn compressed(&self) -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        self.0.to_encoded_point(true).as_bytes().to_vec()
    }
    pub fn from_public(pk: p256::PublicKey) -> Self {
        EcPoint(pk)
    }
    /// Verify an ECDSA signature over the statement `domain || 0x00 ||
    /// body`, i.e. over its signing digest
    /// ([`crate::encoding::signing_digest`]); `body` is the statement's
    /// canonical encoding. Same result as [`Self::verify`] on that digest,
    /// several times faster: this takes the message (the fast verifier
    /// hashes it itself), where `verify` has only the digest.
    pub fn verify_statement(
        &self,
        domain: &str,
        body: &[u8],
        sig: &Signature,
        what: &'static str,
    ) -> Result<(), ProtocolError> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
        let mut message = Vec::with_capacity(domain.len() + 1 + body.len());
        message.extend_from_slice(domain.as_bytes());
        message.push(0);
        message.extend_from_slice(body);
        let point = self.0.to_encoded_point(false);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point.as_bytes())
            .verify(&message, &sig.0)
            .map_err(|_| ProtocolError::BadSignature { what })
    }

    /// Verify an ECDSA signature over a pre-computed signing digest.
    pub fn verify(
        &self,
        digest: &crate::Digest32,
        sig: &Signature,
        what: &'static str,
    ) -> Result<(), ProtocolError> {
        let vk = VerifyingKey::from(&self.0);
        let s = p256::ecdsa::Signature::from_slice(&sig.0)
            .map_err(|_| ProtocolError::BadSignature { what })?;
        vk.verify_prehash(&digest.0, &s)
            .map_err(|_| ProtocolError::BadSignature { what })
    }
}

impl TryFrom<Vec<u8>> for EcPoint {
    type Error = ProtocolError;
    fn try_from(v: Vec<u8>) -> Result<Self, Self::Error> {
        // Remembered for the decoder's message (see `encoding::failed_check`).
        EcPoint::from_sec1(&v).map_err(crate::encoding::failed_check)
    }
}
impl From<EcPoint> for Vec<u8> {
    fn from(p: EcPoint) -> Vec<u8> {
        p.compressed()
    }
}
impl fmt::Debug for EcPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EcPoint({})", hex::encode(self.compressed()))
    }
}

/// An ECDSA P-256 signature, `r || s` (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct Signature(pub [u8; 64]);

impl TryFrom<Vec<u8>> for Signature {
    type Error = ProtocolError;
    fn try_from(v: Vec<u8>) -> Result<Self, Self::Error> {
        // Remembered for the decoder's message (see `encoding::failed_check`).
        (|| -> Result<Self, ProtocolError> {
            let a: [u8; 64] = v
                .try_into()
                .map_err(|_| ProtocolError::malformed("signature", "expected 64 bytes"))?;
            Ok(Signature(a))
        })()
        .map_err(crate::encoding::failed_check)
    }
}
impl From<Signature> for Vec<u8> {
    fn from(s: Signature) -> Vec<u8> {
        s.0.to_vec()
    }
}
impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", &hex::encode(self.0)[..16])
    }
}

/// Sign a digest with a host-held identity key (parties sign on the host; the
/// TP signs in its token).
pub(crate) fn sign_digest(key: &SigningKey, digest: &Digest32) -> Signature {
    let sig: p256::ecdsa::Signature = key
        .sign_prehash(&digest.0)
        .expect("signing a 32-byte prehash cannot fail");
    let sig = sig.normalize_s().unwrap_or(sig);
    Signature(sig.to_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_round_trips_and_names_bad_input() {
        let id = KeyId([0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 0xff]);
        assert_eq!(id.to_string(), "deadbeef000102ff");
        assert_eq!(format!("{id:?}"), "KeyId(deadbeef000102ff)");
        assert_eq!("deadbeef000102ff".parse::<KeyId>().unwrap(), id);
        for bad in ["", "deadbeef", "deadbeef000102fg", "deadbeef000102ff00"] {
            let e = bad.parse::<KeyId>().unwrap_err().to_string();
            assert!(e.contains(&format!("\"{bad}\"")), "{e}");
        }
    }
}
