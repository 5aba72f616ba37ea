//! RFC 7512 PKCS#11 URIs for naming the TP's keys in `tp.toml` and in the
//! output of `tp-daemon keys`.
//!
//! A vtp key URI looks like
//! `pkcs11:token=vtp-dev;object=vtp-sign-0011223344556677;id=%00%11%22%33%44%55%66%77;type=private`.
//! How it maps onto the device API:
//! - `id` — the percent-encoded `CKA_ID` bytes; vtp keys have 8-byte ids
//!   (16 hex digits in vtp's own output). The device finds keys by id.
//! - `object` — the key's `CKA_LABEL`; if given, it must match the label of
//!   the key on the token (a URI with only `object` is resolved through the
//!   token's key list).
//! - `token`, `serial`, `manufacturer`, `model` — if given, must match the
//!   token the `[token]` section selects (a URI cannot pick another token).
//! - `type` — if given, must be `private` (vtp names key pairs by their
//!   private half).
//!
//! - the query attributes `module-path`, `module-name` and `pin-source`
//!   (as step-ca, cosign and p11-kit users write them) are kept, and must
//!   agree with `[token]` `module` and `pin_file`: the token and its PIN are
//!   configured once, there ([`crate::config::Config::check_key_uri`]).
//!
//! Everything else is refused by name: `slot-id` (slot ids are not stable),
//! `pin-value` (a PIN never goes into a URI), the query attributes written
//! in the path part, the `library-*`/`slot-*` attributes (nothing to check
//! them against) and any attribute RFC 7512 does not define. Each attribute
//! may appear once.

use std::fmt;

use vtp_device::KeyId;

/// A parsed URI (only the attributes vtp understands).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub object: Option<String>,
    /// Raw `CKA_ID` bytes.
    pub id: Option<Vec<u8>>,
    /// `type=`; only `private` is accepted, so this is just "was it given".
    pub type_private: bool,
    /// Query `module-path=`: the module file, or the directory holding it.
    pub module_path: Option<String>,
    /// Query `module-name=`: the module's name without `lib` and `.so`.
    pub module_name: Option<String>,
    /// Query `pin-source=`: where the PIN is read from (`file:` URI or path).
    pub pin_source: Option<String>,
}

/// Why a string is not a usable PKCS#11 URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PKCS#11 URI: {0}")]
pub struct UriError(pub String);

fn err(s: impl Into<String>) -> UriError {
    UriError(s.into())
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode one attribute value. Characters RFC 7512 allows literally
/// in a value (`pk11-pchar`: unreserved, `:[]@!$'()*+,=&`; in the query
/// `pk11-qchar`, also `/?|` but not `&`) pass through; any other character
/// (notably, in the path, `;`, `?`, `/` and space) must be percent-encoded.
fn decode_value(name: &str, v: &str) -> Result<Vec<u8>, UriError> {
    decode(name, v, b"-._~:[]@!$'()*+,=&")
}

fn decode_query_value(name: &str, v: &str) -> Result<String, UriError> {
    String::from_utf8(decode(name, v, b"-._~:[]@!$'()*+,=/?|")?)
        .map_err(|_| err(format!("`{name}` is not UTF-8 text after percent-decoding")))
}

fn decode(name: &str, v: &str, literal: &[u8]) -> Result<Vec<u8>, UriError> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex_val),
                    b.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err(err(format!(
                        "`{name}`: bad percent-encoding at \"{}\" (want %XX with two hex digits)",
                        &v[i..v.len().min(i + 3)]
                    )));
                };
                out.push(h << 4 | l);
                i += 3;
            }
            c if c.is_ascii_alphanumeric() || literal.contains(&c) => {
                out.push(c);
                i += 1;
            }
            c => {
                return Err(err(format!(
                    "`{name}`: character {:?} must be percent-encoded",
                    c as char
                )))
            }
        }
    }
    Ok(out)
}

fn text_value(name: &str, v: &str) -> Result<String, UriError> {
    String::from_utf8(decode_value(name, v)?)
        .map_err(|_| err(format!("`{name}` is not UTF-8 text after percent-decoding")))
}

impl std::str::FromStr for Pkcs11Uri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, UriError> {
        let rest = match s.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("pkcs11:") => &s[7..],
            _ => return Err(err(format!("\"{s}\" does not start with \"pkcs11:\""))),
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = Pkcs11Uri::default();
        let mut seen: Vec<String> = Vec::new();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let Some((name, value)) = attr.split_once('=') else {
                return Err(err(format!("attribute \"{attr}\" has no `=`")));
            };
            let lname = name.to_ascii_lowercase();
            if seen.contains(&lname) {
                return Err(err(format!("attribute `{name}` appears twice")));
            }
            seen.push(lname.clone());
            match lname.as_str() {
                "token" => uri.token = Some(text_value(name, value)?),
                "serial" => uri.serial = Some(text_value(name, value)?),
                "manufacturer" => uri.manufacturer = Some(text_value(name, value)?),
                "model" => uri.model = Some(text_value(name, value)?),
                "object" => uri.object = Some(text_value(name, value)?),
                "id" => {
                    let id = decode_value(name, value)?;
                    if id.is_empty() {
                        return Err(err("`id` is empty"));
                    }
                    uri.id = Some(id);
                }
                "type" => match text_value(name, value)?.as_str() {
                    "private" => uri.type_private = true,
                    other => {
                        return Err(err(format!(
                            "`type={other}`: vtp keys are named by their private key (type=private)"
                        )))
                    }
                },
                "slot-id" => {
                    return Err(err(
                        "`slot-id` is not accepted: slot ids change between restarts; \
                         select the token with `token=` (label) or `serial=`",
                    ))
                }
                "pin-value" => {
                    return Err(err(
                        "`pin-value`: never put a PIN in a key URI; set [token] `pin_file` or \
                         `pin_env` in tp.toml",
                    ))
                }
                "pin-source" | "module-name" | "module-path" => {
                    return Err(err(format!(
                        "`{name}` is a query attribute: write it after `?` (or set it only in \
                         tp.toml, [token] `{}`)",
                        if name.eq_ignore_ascii_case("pin-source") {
                            "pin_file"
                        } else {
                            "module"
                        }
                    )))
                }
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer" => {
                    return Err(err(format!(
                        "attribute `{name}` is not supported here (select the token in [token])"
                    )))
                }
                _ => return Err(err(format!("unknown attribute `{name}`"))),
            }
        }
        let mut seen_query: Vec<String> = Vec::new();
        for attr in query.into_iter().flat_map(|q| q.split('&')) {
            if attr.is_empty() {
                continue;
            }
            let (name, value) = attr.split_once('=').unwrap_or((attr, ""));
            let lname = name.to_ascii_lowercase();
            if seen_query.contains(&lname) {
                return Err(err(format!("query attribute `{name}` appears twice")));
            }
            seen_query.push(lname.clone());
            let slot = match lname.as_str() {
                "pin-value" => {
                    return Err(err(
                        "`pin-value`: never put a PIN in a key URI; set [token] `pin_file` or \
                         `pin_env` in tp.toml",
                    ))
                }
                "pin-source" => &mut uri.pin_source,
                "module-path" => &mut uri.module_path,
                "module-name" => &mut uri.module_name,
                _ => return Err(err(format!("unknown query attribute `{name}`"))),
            };
            let v = decode_query_value(name, value)?;
            if v.is_empty() {
                return Err(err(format!("query attribute `{name}` is empty")));
            }
            *slot = Some(v);
        }
        Ok(uri)
    }
}

/// Percent-encode a text value: everything but unreserved characters.
fn encode_text(v: &str, out: &mut String) {
    for &b in v.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::from("pkcs11:");
        let mut parts: Vec<String> = Vec::new();
        for (name, v) in [
            ("token", &self.token),
            ("serial", &self.serial),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("object", &self.object),
        ] {
            if let Some(v) = v {
                let mut p = format!("{name}=");
                encode_text(v, &mut p);
                parts.push(p);
            }
        }
        if let Some(id) = &self.id {
            let mut p = String::from("id=");
            for b in id {
                p.push_str(&format!("%{b:02X}"));
            }
            parts.push(p);
        }
        if self.type_private {
            parts.push("type=private".into());
        }
        s.push_str(&parts.join(";"));
        let query: Vec<String> = [
            ("module-name", &self.module_name),
            ("module-path", &self.module_path),
            ("pin-source", &self.pin_source),
        ]
        .into_iter()
        .filter_map(|(name, v)| {
            let v = v.as_ref()?;
            let mut p = format!("{name}=");
            for &b in v.as_bytes() {
                if b.is_ascii_alphanumeric() || b"-._~:/".contains(&b) {
                    p.push(b as char);
                } else {
                    p.push_str(&format!("%{b:02X}"));
                }
            }
            Some(p)
        })
        .collect();
        if !query.is_empty() {
            s.push('?');
            s.push_str(&query.join("&"));
        }
        f.write_str(&s)
    }
}

impl Pkcs11Uri {
    /// The URI vtp prints for one of its keys.
    pub fn for_key(token_label: &str, label: &str, id: KeyId) -> Pkcs11Uri {
        Pkcs11Uri {
            token: Some(token_label.to_owned()),
            object: Some(label.to_owned()),
            id: Some(id.as_bytes().to_vec()),
            type_private: true,
            ..Default::default()
        }
    }

    /// The `id` as a vtp key id (8 bytes), if the URI has one.
    pub fn key_id(&self) -> Result<Option<KeyId>, UriError> {
        match &self.id {
            None => Ok(None),
            Some(b) => <[u8; 8]>::try_from(b.as_slice())
                .map(|a| Some(KeyId(a)))
                .map_err(|_| {
                    err(format!(
                        "`id` has {} bytes; vtp keys have 8-byte ids (e.g. id=%00%11%22%33%44%55%66%77)",
                        b.len()
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Pkcs11Uri, String> {
        s.parse::<Pkcs11Uri>().map_err(|e| e.to_string())
    }

    #[test]
    fn parses_a_vtp_key_uri() {
        let u = parse(
            "pkcs11:token=vtp-dev;object=vtp-sign-0011223344556677;id=%00%11%22%33%44%55%66%77;type=private",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("vtp-dev"));
        assert_eq!(u.object.as_deref(), Some("vtp-sign-0011223344556677"));
        assert_eq!(u.key_id().unwrap().unwrap().to_string(), "0011223344556677");
        assert!(u.type_private);
    }

    #[test]
    fn round_trips_through_display() {
        let u = Pkcs11Uri::for_key(
            "TP token; prod/1",
            "vtp-enc-8899aabbccddeeff-sha256",
            "8899aabbccddeeff".parse().unwrap(),
        );
        let s = u.to_string();
        assert_eq!(
            s,
            "pkcs11:token=TP%20token%3B%20prod%2F1;object=vtp-enc-8899aabbccddeeff-sha256;\
             id=%88%99%AA%BB%CC%DD%EE%FF;type=private"
        );
        assert_eq!(parse(&s).unwrap(), u);
    }

    #[test]
    fn percent_decoding_and_case() {
        let u = parse("PKCS11:object=a%20b%3bc;id=%0a%0B%0c%0D%0e%0F%10%11;serial=X:Y").unwrap();
        assert_eq!(u.object.as_deref(), Some("a b;c"));
        assert_eq!(u.id.unwrap(), vec![10, 11, 12, 13, 14, 15, 16, 17]);
        assert_eq!(u.serial.as_deref(), Some("X:Y"));
        // Literal id bytes are allowed too.
        assert_eq!(
            parse("pkcs11:id=abcdefgh").unwrap().id.unwrap(),
            b"abcdefgh"
        );
        // The empty URI is valid (it selects nothing in particular).
        assert_eq!(parse("pkcs11:").unwrap(), Pkcs11Uri::default());
    }

    #[test]
    fn errors_name_the_problem() {
        for (uri, needle) in [
            ("file:/x", "does not start with \"pkcs11:\""),
            ("pkcs11:frobnicate=1", "unknown attribute `frobnicate`"),
            ("pkcs11:id=%0", "bad percent-encoding"),
            ("pkcs11:id=%zz%00", "bad percent-encoding"),
            ("pkcs11:object=a b", "must be percent-encoded"),
            ("pkcs11:object=a/b", "must be percent-encoded"),
            ("pkcs11:object", "has no `=`"),
            ("pkcs11:id=%01;id=%02", "appears twice"),
            ("pkcs11:type=public", "type=private"),
            ("pkcs11:slot-id=3", "slot ids change"),
            ("pkcs11:pin-value=1234", "never put a PIN"),
            ("pkcs11:id=%01?pin-value=1234", "never put a PIN"),
            ("pkcs11:id=%01;module-path=%2Fx.so", "write it after `?`"),
            ("pkcs11:id=%01;pin-source=x", "[token] `pin_file`"),
            ("pkcs11:id=%01?pin-source=a&pin-source=b", "appears twice"),
            ("pkcs11:id=%01?module-path=", "is empty"),
            ("pkcs11:id=%01?x-frob=1", "unknown query attribute `x-frob`"),
            ("pkcs11:library-version=1", "not supported"),
            ("pkcs11:object=%FF%FE", "not UTF-8"),
            ("pkcs11:id=", "`id` is empty"),
        ] {
            let e = parse(uri).unwrap_err();
            assert!(e.contains(needle), "{uri}: {e}");
            assert!(!e.contains("1234"), "a PIN is never echoed: {e}");
        }
    }

    #[test]
    fn query_attributes_as_other_tools_write_them() {
        let s = "pkcs11:token=vtp-prod;id=%01%02%03%04%05%06%07%08;type=private\
                 ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/vtp/user.pin";
        let u = parse(s).unwrap();
        assert_eq!(
            u.module_path.as_deref(),
            Some("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(u.pin_source.as_deref(), Some("file:/etc/vtp/user.pin"));
        assert_eq!(u.to_string(), s);
        assert_eq!(parse(&u.to_string()).unwrap(), u);
        let u = parse("pkcs11:object=k?module-name=softhsm2&pin-source=%2Frun%2Fpin").unwrap();
        assert_eq!(u.module_name.as_deref(), Some("softhsm2"));
        assert_eq!(u.pin_source.as_deref(), Some("/run/pin"));
    }

    #[test]
    fn key_id_must_have_eight_bytes() {
        let e = parse("pkcs11:id=%01%02")
            .unwrap()
            .key_id()
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 bytes") && e.contains("8-byte"), "{e}");
        assert_eq!(parse("pkcs11:object=x").unwrap().key_id().unwrap(), None);
    }
}
