//! `[token]`: which PKCS#11 module and token hold the TP's keys, where the
//! user PIN comes from, and the software tokens' own config files. Kept
//! apart because it is the one section that decides what may reach the
//! device layer (a literal `pin` is refused here, before anything loads).

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use vtp_device::TokenSelector;
use zeroize::Zeroizing;

use super::fields::{Source, S};
use super::ConfigError;

/// Environment variable through which an `insecure_literal_pin` reaches the
/// device layer (which reads PINs from files or variables only).
pub const LITERAL_PIN_VAR: &str = "VTP_INTERNAL_LITERAL_PIN_FROM_CONFIG";

/// Where the token's user PIN comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSpec {
    File(PathBuf),
    Env(String),
    /// `insecure_literal_pin`: the PIN itself, in the config file.
    InsecureLiteral(Zeroizing<String>),
}

impl fmt::Debug for PinSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSpec::File(p) => f.debug_tuple("File").field(p).finish(),
            PinSpec::Env(v) => f.debug_tuple("Env").field(v).finish(),
            PinSpec::InsecureLiteral(_) => f.write_str("InsecureLiteral(***)"),
        }
    }
}

/// `[token]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    module: S<PathBuf>,
    label: Option<S<String>>,
    serial: Option<S<String>>,
    pin_file: Option<S<PathBuf>>,
    pin_env: Option<S<String>>,
    /// Accepted by the parser only to refuse it with a clear message.
    pin: Option<S<toml::Value>>,
    insecure_literal_pin: Option<S<String>>,
    softhsm2_conf: Option<S<PathBuf>>,
    kryoptic_conf: Option<S<PathBuf>>,
}

/// `[token]` validated (its fields are spread into [`super::Config`]).
pub(super) struct Token {
    pub module: PathBuf,
    pub module_written: PathBuf,
    pub selector: TokenSelector,
    pub pin: PinSpec,
    pub softhsm2_conf: Option<PathBuf>,
    pub kryoptic_conf: Option<PathBuf>,
}

impl RawToken {
    pub(super) fn validate(self, src: &Source) -> Result<Token, ConfigError> {
        let t = self;
        let module_written = t.module.get_ref().clone();
        let module = src.path(t.module, "[token] `module`")?;
        if let Some(p) = &t.pin {
            return Err(src.at(
                p.span(),
                "[token] `pin`: a literal PIN is not supported (config files get copied, \
                 backed up and read by others); use `pin_file` or `pin_env` (or, for throw-away \
                 test tokens only, `insecure_literal_pin`)",
            ));
        }
        let selector = match (t.label, t.serial) {
            (Some(l), None) if l.get_ref().trim().is_empty() => {
                return Err(src.at(l.span(), "[token] `label` must not be empty"))
            }
            (None, Some(s)) if s.get_ref().trim().is_empty() => {
                return Err(src.at(s.span(), "[token] `serial` must not be empty"))
            }
            (Some(l), None) => TokenSelector::Label(l.into_inner()),
            (None, Some(s)) => TokenSelector::Serial(s.into_inner()),
            (Some(_), Some(s)) => {
                return Err(src.at(
                    s.span(),
                    "[token]: set exactly one of `label` and `serial`, not both",
                ))
            }
            (None, None) => {
                return Err(
                    src.in_section("token", "[token]: set exactly one of `label` and `serial`")
                )
            }
        };
        let pin =
            match (t.pin_file, t.pin_env, t.insecure_literal_pin) {
                (Some(f), None, None) => PinSpec::File(src.path(f, "[token] `pin_file`")?),
                (None, Some(v), None) => {
                    let name = v.get_ref().trim();
                    if name.is_empty() || name.contains('=') || name.contains('\0') {
                        return Err(src.at(
                            v.span(),
                            "[token] `pin_env` must be the name of an environment variable",
                        ));
                    }
                    PinSpec::Env(name.to_owned())
                }
                (None, None, Some(p)) => {
                    if p.get_ref().is_empty() {
                        return Err(
                            src.at(p.span(), "[token] `insecure_literal_pin` must not be empty")
                        );
                    }
                    PinSpec::InsecureLiteral(Zeroizing::new(p.into_inner()))
                }
                (None, None, None) => return Err(src.in_section(
                    "token",
                    "[token]: set one of `pin_file` and `pin_env` (where the user PIN comes from)",
                )),
                (f, e, l) => {
                    let span = [
                        f.map(|x| x.span()),
                        e.map(|x| x.span()),
                        l.map(|x| x.span()),
                    ]
                    .into_iter()
                    .flatten()
                    .max_by_key(|s| s.start)
                    .expect("at least two are set");
                    return Err(src.at(
                    span,
                    "[token]: set exactly one of `pin_file`, `pin_env` and `insecure_literal_pin`",
                ));
                }
            };
        let softhsm2_conf = t
            .softhsm2_conf
            .map(|p| src.path(p, "[token] `softhsm2_conf`"))
            .transpose()?;
        let kryoptic_conf = t
            .kryoptic_conf
            .map(|p| src.path(p, "[token] `kryoptic_conf`"))
            .transpose()?;
        Ok(Token {
            module,
            module_written,
            selector,
            pin,
            softhsm2_conf,
            kryoptic_conf,
        })
    }
}
