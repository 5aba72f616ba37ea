//! `[keys]`: the signing key (the TP's identity), the legacy encryption-key
//! list that only seeds an empty key ring, and the defaults for new keys.
//! Key references (PKCS#11 URIs or bare ids) are parsed here because the
//! operator commands take the same syntax on the command line.

use std::str::FromStr;

use serde::Deserialize;
use vtp_device::{KeyId, OaepHash};

use super::fields::{given_or, Source, S};
use super::ConfigError;
use crate::operator::pkcs11_uri::Pkcs11Uri;

/// Default size of new RSA encryption keys.
pub const DEFAULT_RSA_BITS: u32 = 3072;

/// A key as named in the config: a PKCS#11 URI or a bare 16-hex-digit id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// As written.
    pub text: String,
    /// Line in the config file (1-based).
    pub line: usize,
    /// Set when written as a URI.
    pub uri: Option<Pkcs11Uri>,
    /// The `CKA_ID`, when the reference gives it.
    pub id: Option<KeyId>,
}

impl KeyRef {
    /// Parse `text` (a URI or 16 hex digits). `Err` is the problem in words.
    pub fn parse(text: &str, line: usize) -> Result<KeyRef, String> {
        let t = text.trim();
        if t.len() >= 7 && t[..7].eq_ignore_ascii_case("pkcs11:") {
            let uri: Pkcs11Uri = t
                .parse()
                .map_err(|e: crate::operator::pkcs11_uri::UriError| e.0)?;
            let id = uri.key_id().map_err(|e| e.0)?;
            if id.is_none() && uri.object.is_none() {
                return Err(format!(
                    "\"{t}\" names no key: give `id=` (the CKA_ID) and/or `object=` (the label)"
                ));
            }
            return Ok(KeyRef {
                text: t.to_owned(),
                line,
                uri: Some(uri),
                id,
            });
        }
        let id = KeyId::from_str(t).map_err(|_| {
            format!(
                "\"{t}\" is neither a PKCS#11 URI (pkcs11:token=…;object=…;id=%…;type=private) \
                 nor a 16-hex-digit key id"
            )
        })?;
        Ok(KeyRef {
            text: t.to_owned(),
            line,
            uri: None,
            id: Some(id),
        })
    }
}

/// How to pick the OAEP hash of new encryption keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OaepChoice {
    /// SHA-256 if the token does OAEP-SHA-256, else SHA-1 (probed).
    Auto,
    Sha1,
    Sha256,
}

impl OaepChoice {
    pub fn fixed(self) -> Option<OaepHash> {
        match self {
            OaepChoice::Auto => None,
            OaepChoice::Sha1 => Some(OaepHash::Sha1),
            OaepChoice::Sha256 => Some(OaepHash::Sha256),
        }
    }
}

/// `[keys]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysConfig {
    /// The P-256 key that signs the TP card and every affidavit. `None`
    /// only while setting up a TP (`keys generate --signing` needs a config
    /// before the key exists); serving needs it.
    pub signing: Option<KeyRef>,
    /// Legacy (before the key ring): `encryption = [...]`. Used only to seed
    /// an empty key ring.
    pub legacy_encryption: Vec<KeyRef>,
    /// Legacy: `current = "..."`, with `legacy_encryption`.
    pub legacy_current: Option<KeyRef>,
    /// Size of new RSA keys.
    pub rsa_bits: u32,
    /// OAEP hash of new RSA keys.
    pub oaep: OaepChoice,
}

/// `[keys]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeys {
    signing: Option<S<String>>,
    encryption: Option<S<Vec<S<String>>>>,
    current: Option<S<String>>,
    rsa_bits: Option<S<u32>>,
    oaep: Option<S<OaepChoice>>,
}

impl RawKeys {
    pub(super) fn validate(self, src: &Source) -> Result<KeysConfig, ConfigError> {
        let k = self;
        let key_ref = |v: &S<String>, what: &str| {
            let line = src.line_at(v.span().start);
            KeyRef::parse(v.get_ref(), line)
                .map_err(|e| src.error(format!("line {line}: [keys] `{what}`: {e}")))
        };
        let signing = k
            .signing
            .as_ref()
            .map(|v| key_ref(v, "signing"))
            .transpose()?;
        let mut legacy_encryption = Vec::new();
        if let Some(list) = &k.encryption {
            if list.get_ref().is_empty() {
                return Err(src.at(
                    list.span(),
                    "[keys] `encryption` (legacy) is empty; delete it: encryption keys live in \
                     the key ring (`tp-daemon keys list`)",
                ));
            }
            for v in list.get_ref() {
                legacy_encryption.push(key_ref(v, "encryption")?);
            }
        }
        let legacy_current = k
            .current
            .as_ref()
            .map(|c| key_ref(c, "current"))
            .transpose()?;
        match (&k.encryption, &legacy_current) {
            (Some(list), None) => {
                return Err(src.at(
                    list.span(),
                    "[keys] legacy `encryption` needs `current` (or delete both: the key ring in \
                     the journal is authoritative)",
                ))
            }
            (None, Some(c)) => {
                return Err(src.error(format!(
                    "line {}: [keys] `current` without `encryption` (legacy fields; delete it)",
                    c.line
                )))
            }
            (Some(_), Some(c)) => {
                if !legacy_encryption
                    .iter()
                    .any(|e| e.text == c.text || (e.id.is_some() && e.id == c.id))
                {
                    return Err(src.error(format!(
                        "line {}: [keys] `current` ({}) must be one of the `encryption` keys",
                        c.line, c.text
                    )));
                }
            }
            (None, None) => {}
        }
        let rsa_bits = src.setting(
            &k.rsa_bits,
            DEFAULT_RSA_BITS,
            &vtp_device::keys::RSA_BITS[..],
            |b| format!("[keys] `rsa_bits` is {b}; allowed: 2048, 3072 (default), 4096"),
        )?;
        let oaep = given_or(&k.oaep, OaepChoice::Auto);
        Ok(KeysConfig {
            signing,
            legacy_encryption,
            legacy_current,
            rsa_bits,
            oaep,
        })
    }
}
