//! The OAEP hash of an RSA encryption key, and the PKCS#11 mechanism
//! parameters it selects.
//!
//! Its own module because the token layer (the handle cache, the preferred
//! hash), key management (labels) and the operations (unwrap) all need it,
//! and none of them should depend on another just for this type.

use std::fmt;

use cryptoki::mechanism::rsa::PkcsMgfType;
use cryptoki::mechanism::MechanismType;

/// Hash used for OAEP and for its MGF1 (always the same one).
///
/// SoftHSM 2.6 implements OAEP with SHA-1 only; SHA-256 is for tokens that
/// have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OaepHash {
    Sha1,
    Sha256,
}

impl OaepHash {
    /// The label suffix that records this choice on the token.
    pub fn as_str(self) -> &'static str {
        match self {
            OaepHash::Sha1 => "sha1",
            OaepHash::Sha256 => "sha256",
        }
    }

    pub(crate) fn mechanism(self) -> MechanismType {
        match self {
            OaepHash::Sha1 => MechanismType::SHA1,
            OaepHash::Sha256 => MechanismType::SHA256,
        }
    }

    pub(crate) fn mgf(self) -> PkcsMgfType {
        match self {
            OaepHash::Sha1 => PkcsMgfType::MGF1_SHA1,
            OaepHash::Sha256 => PkcsMgfType::MGF1_SHA256,
        }
    }
}

impl fmt::Display for OaepHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
