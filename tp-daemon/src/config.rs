//! `tp.toml`: what the daemon serves, where its token and journal are, and the
//! limits it enforces.
//!
//! Unknown fields are errors (a misspelt `max_conections` silently falling
//! back to a default is how outages start), and every error names the file
//! and the line or field. `tp-daemon init --softhsm` writes a fully commented
//! example (see [`crate::init::config_template`]).
//!
//! Relative paths are resolved against the directory of the config file, so a
//! data directory can be moved as a whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use vtp_device::{KeyId, PinSource, TokenConfig, TokenSelector, TpKeys};
use vtp_protocol::tp_card::Policy;
use vtp_protocol::wire::DEFAULT_MAX_FRAME;

/// Address the daemon listens on when `listen` is not set.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// Smallest accepted `limits.max_frame_bytes`: a claim carries two cards, an
/// envelope with the TP card and z, and a receipt; a few KiB are needed.
pub const MIN_FRAME_BYTES: usize = 8 * 1024;
/// Largest accepted `limits.max_frame_bytes`.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    /// Name shown in the TP card.
    pub name: String,
    pub listen: SocketAddr,
    /// Directory of the journal.
    pub data_dir: PathBuf,
    pub token: TokenConfig,
    /// SoftHSM only: exported as `SOFTHSM2_CONF` before the module loads.
    pub softhsm2_conf: Option<PathBuf>,
    pub keys: TpKeys,
    pub policy: Policy,
    pub limits: Limits,
}

/// Resource limits of the server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request frame; a bigger one closes the connection.
    pub max_frame_bytes: usize,
    /// Connections served at once; more are answered `Busy` and closed.
    pub max_connections: usize,
    /// A connection that completes no request frame for this long is closed.
    pub idle_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: DEFAULT_MAX_FRAME,
            max_connections: 1024,
            idle_timeout_secs: 30,
        }
    }
}

impl Limits {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

/// A configuration problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("config file {}: {detail}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub detail: String,
}

// ---- the file as written ---------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: String,
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    data_dir: PathBuf,
    token: RawToken,
    keys: RawKeys,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    limits: Limits,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default address")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    module: PathBuf,
    label: Option<String>,
    serial: Option<String>,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
    /// Accepted by the parser only to refuse it with a clear message.
    pin: Option<toml::Value>,
    softhsm2_conf: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    signing: HexKeyId,
    encryption: Vec<HexKeyId>,
    current: HexKeyId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPolicy {
    max_deadline_secs: u64,
    min_claim_window_secs: u64,
    clock_skew_secs: u64,
}

impl Default for RawPolicy {
    fn default() -> Self {
        let p = Policy::default();
        RawPolicy {
            max_deadline_secs: p.max_deadline_secs,
            min_claim_window_secs: p.min_claim_window_secs,
            clock_skew_secs: p.clock_skew_secs,
        }
    }
}

/// A key id parsed while deserializing, so toml reports the line of a bad one.
struct HexKeyId(KeyId);

impl<'de> Deserialize<'de> for HexKeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyId::from_str(&s)
            .map(HexKeyId)
            .map_err(serde::de::Error::custom)
    }
}

// ---- loading and validation -----------------------------------------------

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            detail: format!("cannot read it: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Validate config text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |detail: String| ConfigError {
            path: path.to_owned(),
            detail,
        };
        // toml's message carries the line, column and a snippet of the span.
        let raw: RawConfig = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        if raw.name.trim().is_empty() {
            return Err(err("`name` must not be empty".into()));
        }
        let t = raw.token;
        if t.pin.is_some() {
            return Err(err(
                "[token] `pin`: a literal PIN is not supported (config files get \
                 copied, backed up and read by others); use `pin_file` or `pin_env`"
                    .into(),
            ));
        }
        let selector = match (t.label, t.serial) {
            (Some(l), None) => TokenSelector::Label(l),
            (None, Some(s)) => TokenSelector::Serial(s),
            _ => {
                return Err(err(
                    "[token]: set exactly one of `label` and `serial`".into()
                ))
            }
        };
        let pin = match (t.pin_file, t.pin_env) {
            (Some(f), None) => PinSource::File(abs(f)),
            (None, Some(v)) if !v.is_empty() => PinSource::Env(v),
            (None, Some(_)) => return Err(err("[token] `pin_env` must not be empty".into())),
            _ => {
                return Err(err(
                    "[token]: set exactly one of `pin_file` and `pin_env`".into()
                ))
            }
        };

        let k = raw.keys;
        let encryption: Vec<KeyId> = k.encryption.into_iter().map(|h| h.0).collect();
        if encryption.is_empty() {
            return Err(err(
                "[keys] `encryption` must list at least one key id".into()
            ));
        }
        if !encryption.contains(&k.current.0) {
            return Err(err(format!(
                "[keys] `current` ({}) must be one of the `encryption` keys",
                k.current.0
            )));
        }

        let p = raw.policy;
        if p.max_deadline_secs == 0 || p.min_claim_window_secs >= p.max_deadline_secs {
            return Err(err(
                "[policy]: need 0 < `min_claim_window_secs` < `max_deadline_secs` \
                 (and `max_deadline_secs` > 0)"
                    .into(),
            ));
        }
        let l = raw.limits;
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&l.max_frame_bytes) {
            return Err(err(format!(
                "[limits] `max_frame_bytes` must be between {MIN_FRAME_BYTES} and {MAX_FRAME_BYTES}"
            )));
        }
        if l.max_connections == 0 {
            return Err(err("[limits] `max_connections` must be at least 1".into()));
        }
        if l.idle_timeout_secs == 0 {
            return Err(err("[limits] `idle_timeout_secs` must be at least 1".into()));
        }

        Ok(Config {
            path: path.to_owned(),
            name: raw.name,
            listen: raw.listen,
            data_dir: abs(raw.data_dir),
            token: TokenConfig {
                module: abs(t.module),
                token: selector,
                pin,
            },
            softhsm2_conf: t.softhsm2_conf.map(abs),
            keys: TpKeys {
                signing: k.signing.0,
                encryption,
                current: k.current.0,
            },
            policy: Policy {
                max_deadline_secs: p.max_deadline_secs,
                min_claim_window_secs: p.min_claim_window_secs,
                clock_skew_secs: p.clock_skew_secs,
            },
            limits: l,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "test TP"
data_dir = "data"
[token]
module = "/usr/lib/softhsm/libsofthsm2.so"
label = "vtp-dev"
pin_file = "user.pin"
[keys]
signing = "0011223344556677"
encryption = ["8899aabbccddeeff", "0102030405060708"]
current = "8899aabbccddeeff"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/vtp/tp.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_defaults_and_absolute_paths() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.data_dir, Path::new("/etc/vtp/data"));
        assert_eq!(
            c.token.pin,
            PinSource::File(PathBuf::from("/etc/vtp/user.pin"))
        );
        assert_eq!(c.token.token, TokenSelector::Label("vtp-dev".into()));
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.keys.encryption.len(), 2);
        assert_eq!(c.keys.current.to_string(), "8899aabbccddeeff");
        assert!(c.softhsm2_conf.is_none());
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let e = error(&GOOD.replace("[keys]", "[keys]\nsigninq = \"x\""));
        assert!(e.contains("/etc/vtp/tp.toml"), "{e}");
        assert!(e.contains("line 9"), "{e}");
        assert!(e.contains("signinq"), "{e}");
        let e = error(&format!("{GOOD}[limits]\nmax_conections = 5\n"));
        assert!(e.contains("max_conections"), "{e}");
    }

    #[test]
    fn bad_key_id_names_its_line() {
        let e = error(&GOOD.replace("\"0011223344556677\"", "\"00112233\""));
        assert!(e.contains("line 9"), "{e}");
        assert!(e.contains("00112233"), "{e}");
    }

    #[test]
    fn literal_pin_is_refused() {
        let e = error(&GOOD.replace("pin_file = \"user.pin\"", "pin = \"1234\""));
        assert!(e.contains("literal PIN is not supported"), "{e}");
        assert!(!e.contains("1234"), "the PIN must not be echoed: {e}");
    }

    #[test]
    fn exactly_one_selector_and_pin_source() {
        let e = error(&GOOD.replace("label = \"vtp-dev\"", "label = \"a\"\nserial = \"b\""));
        assert!(e.contains("exactly one of `label` and `serial`"), "{e}");
        let e = error(&GOOD.replace("label = \"vtp-dev\"\n", ""));
        assert!(e.contains("exactly one of `label` and `serial`"), "{e}");
        let e = error(&GOOD.replace(
            "pin_file = \"user.pin\"",
            "pin_file = \"p\"\npin_env = \"X\"",
        ));
        assert!(e.contains("exactly one of `pin_file` and `pin_env`"), "{e}");
        let c =
            parse(&GOOD.replace("pin_file = \"user.pin\"", "pin_env = \"VTP_TP_PIN\"")).unwrap();
        assert_eq!(c.token.pin, PinSource::Env("VTP_TP_PIN".into()));
    }

    #[test]
    fn current_key_must_be_listed() {
        let e = error(&GOOD.replace(
            "current = \"8899aabbccddeeff\"",
            "current = \"1111111111111111\"",
        ));
        assert!(e.contains("`current`"), "{e}");
    }

    #[test]
    fn limits_and_policy_are_checked() {
        let e = error(&format!("{GOOD}[limits]\nmax_frame_bytes = 10\n"));
        assert!(e.contains("max_frame_bytes"), "{e}");
        let e = error(&format!("{GOOD}[limits]\nmax_connections = 0\n"));
        assert!(e.contains("max_connections"), "{e}");
        let e = error(&format!(
            "{GOOD}[policy]\nmin_claim_window_secs = 999999999\n"
        ));
        assert!(e.contains("[policy]"), "{e}");
        let e = error(&GOOD.replace("data_dir", "listen = \"not an address\"\ndata_dir"));
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn missing_file_is_named() {
        let e = Config::load(Path::new("/nonexistent/tp.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/tp.toml") && e.contains("cannot read"),
            "{e}"
        );
    }
}
