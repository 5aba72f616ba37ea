//! `tp.toml`: what the daemon serves, where its token and journal are, and the
//! limits and policy it enforces. `docs/tp.toml.sample` is the commented
//! reference; `tp-daemon init --softhsm` writes one for a development token
//! (see [`crate::operator::init::config_template`]).
//!
//! Unknown fields are errors (a misspelt `max_conections` silently falling
//! back to a default is how outages start), and every error names the file
//! and the line: toml's own messages (syntax, types, unknown fields) carry
//! the line and a snippet; the checks made here after parsing (ranges,
//! combinations, key URIs) name the line of the offending value, or of its
//! section header when a value is missing.
//!
//! Relative paths are resolved against the directory of the config file, so a
//! data directory can be moved as a whole.
//!
//! Which encryption keys the TP honours is **not** configured here: the key
//! ring lives in the journal (see [`crate::journal::keyring`]) and is changed with
//! `tp-daemon keys rotate | retire`. `[keys]` names the signing key (which is
//! the TP's identity) and the defaults for new keys.
//!
//! One file per section of the file, each with its types as written
//! (`Raw…`, with spans) and its rules, so a section's checks can be read in
//! one place:
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | [`Config`], the top-level settings (`name`, `listen`, `metrics_listen`, `data_dir`), [`Config::load`] / [`Config::parse`] |
//! | `token.rs` | `[token]`: module, token selector, [`PinSpec`], software-token config files |
//! | `keys.rs` | `[keys]`: [`KeysConfig`], [`KeyRef`] (URI or bare id), [`OaepChoice`] |
//! | `policy.rs` | `[policy]`: the [`Policy`] the card publishes and `require_subscription` |
//! | `limits.rs` | `[limits]`: [`Limits`] and its bounds |
//! | `fields.rs` | how a value is read: file/line errors, relative paths, and the one defaulting and range helper every section uses |

mod fields;
mod keys;
mod limits;
mod policy;
mod token;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vtp_device::{PinSource, TokenConfig, TokenSelector};
use vtp_protocol::tp_card::Policy;

use crate::operator::pkcs11_uri::Pkcs11Uri;
use fields::{Source, S};
pub use keys::{KeyRef, KeysConfig, OaepChoice, DEFAULT_RSA_BITS};
pub use limits::{
    Limits, DEFAULT_COMMIT_DELAY_US, DEFAULT_FIRST_FRAME_TIMEOUT_SECS, MAX_COMMIT_DELAY_US,
    MAX_DEVICE_THREADS, MAX_FRAME_BYTES, MIN_FRAME_BYTES,
};
pub use token::{PinSpec, LITERAL_PIN_VAR};

/// Address the daemon listens on when `listen` is not set.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// Suggested address of the metrics endpoint (off unless configured).
pub const SUGGESTED_METRICS_LISTEN: &str = "127.0.0.1:7401";

/// What `serve` cannot change on SIGHUP: module, token, software-token
/// config files, data directory.
pub type RestartOnly = (PathBuf, TokenSelector, [Option<PathBuf>; 2], PathBuf);

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    /// Name shown in the TP card.
    pub name: String,
    /// Where clients reach the TP (`host:port`), published in the signed
    /// TP card so `vtp claim --tp CARD` needs no address; empty: the card
    /// publishes none.
    pub addresses: Vec<String>,
    pub listen: SocketAddr,
    /// Health and Prometheus metrics endpoint; `None`: off.
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of the journal.
    pub data_dir: PathBuf,
    /// The module, absolute (a relative `module` is resolved from the
    /// config file's directory).
    pub module: PathBuf,
    /// `module` as written in the file (for messages).
    pub module_written: PathBuf,
    pub selector: TokenSelector,
    pub pin: PinSpec,
    /// SoftHSM only: exported as `SOFTHSM2_CONF` before the module loads.
    pub softhsm2_conf: Option<PathBuf>,
    /// kryoptic only: exported as `KRYOPTIC_CONF` before the module loads.
    pub kryoptic_conf: Option<PathBuf>,
    pub keys: KeysConfig,
    pub policy: Policy,
    /// Only subscribed identities may claim (`tp-daemon subscribers`).
    pub require_subscription: bool,
    pub limits: Limits,
}

/// A configuration problem, naming the file (and in `detail`, the line).
#[derive(Debug, thiserror::Error)]
#[error("config file {}: {detail}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub detail: String,
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: S<String>,
    #[serde(default)]
    addresses: Option<S<Vec<String>>>,
    listen: Option<S<SocketAddr>>,
    metrics_listen: Option<S<SocketAddr>>,
    data_dir: S<PathBuf>,
    token: token::RawToken,
    #[serde(default)]
    keys: keys::RawKeys,
    #[serde(default)]
    policy: policy::RawPolicy,
    #[serde(default)]
    limits: limits::RawLimits,
}

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
    /// The top-level settings first, then each section in file order.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let src = Source { text, path };
        // toml's message carries the line, column and a snippet of the span.
        let raw: RawConfig = toml::from_str(text).map_err(|e| src.error(e.to_string()))?;

        if raw.name.get_ref().trim().is_empty() {
            return Err(src.at(raw.name.span(), "`name` must not be empty"));
        }
        let addresses = match raw.addresses {
            Some(a) => {
                let (span, list) = (a.span(), a.into_inner());
                if list.len() > vtp_protocol::tp_card::MAX_ADDRESSES {
                    return Err(src.at(
                        span,
                        format!(
                            "`addresses`: at most {} addresses",
                            vtp_protocol::tp_card::MAX_ADDRESSES
                        ),
                    ));
                }
                if let Some(p) = list
                    .iter()
                    .find_map(|x| vtp_protocol::tp_card::address_problem(x))
                {
                    return Err(src.at(span, format!("`addresses`: {p}")));
                }
                list
            }
            None => Vec::new(),
        };
        let listen = match raw.listen {
            Some(l) => *l.get_ref(),
            None => DEFAULT_LISTEN.parse().expect("valid default address"),
        };
        let metrics_listen = match raw.metrics_listen {
            Some(m) if *m.get_ref() == listen => {
                return Err(src.at(
                    m.span(),
                    "`metrics_listen` must differ from `listen` (the metrics endpoint is \
                     plain HTTP on its own, local address)",
                ))
            }
            Some(m) => Some(*m.get_ref()),
            None => None,
        };
        let data_dir = src.path(raw.data_dir, "`data_dir`")?;
        let token = raw.token.validate(&src)?;
        let keys = raw.keys.validate(&src)?;
        let policy = raw.policy.validate(&src)?;
        let limits = raw.limits.validate(&src)?;

        let config = Config {
            path: path.to_owned(),
            name: raw.name.into_inner(),
            addresses,
            listen,
            metrics_listen,
            data_dir,
            module: token.module,
            module_written: token.module_written,
            selector: token.selector,
            pin: token.pin,
            softhsm2_conf: token.softhsm2_conf,
            kryoptic_conf: token.kryoptic_conf,
            keys,
            policy: policy.policy,
            require_subscription: policy.require_subscription,
            limits,
        };
        let refs = config.keys.signing.iter().map(|r| (r, "signing"));
        let legacy = config
            .keys
            .legacy_encryption
            .iter()
            .map(|r| (r, "encryption"));
        let current = config.keys.legacy_current.iter().map(|r| (r, "current"));
        for (r, what) in refs.chain(legacy).chain(current) {
            if let Some(uri) = &r.uri {
                config
                    .check_key_uri(uri)
                    .map_err(|e| src.error(format!("line {}: [keys] `{what}`: {e}", r.line)))?;
            }
        }
        Ok(config)
    }

    /// A key URI's `module-path`, `module-name` and `pin-source` (RFC 7512
    /// query attributes) must say what `[token]` says: the module and the
    /// PIN are configured there, once. `Err` says where each one goes.
    pub fn check_key_uri(&self, uri: &Pkcs11Uri) -> Result<(), String> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let same = |a: &Path, b: &Path| {
            a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
        };
        let module = &self.module;
        if let Some(m) = &uri.module_path {
            let m = dir.join(m);
            if !same(&m, module) && !module.parent().is_some_and(|d| same(&m, d)) {
                return Err(format!(
                    "the URI's module-path={} is not the module [token] `module` names ({}): the \
                     module is set in tp.toml, [token] `module`; drop module-path from the URI or \
                     make the two agree",
                    m.display(),
                    module.display()
                ));
            }
        }
        if let Some(name) = &uri.module_name {
            let file = module
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = file.split(".so").next().unwrap_or(&file);
            let bare = stem.strip_prefix("lib").unwrap_or(stem);
            if ![file.as_str(), stem, bare].contains(&name.as_str()) {
                return Err(format!(
                    "the URI's module-name={name} is not the module [token] `module` names ({}): \
                     the module is set in tp.toml, [token] `module`; drop module-name from the URI \
                     or make the two agree",
                    module.display()
                ));
            }
        }
        if let Some(source) = &uri.pin_source {
            let Some(path) = source
                .strip_prefix("file://localhost")
                .or_else(|| source.strip_prefix("file://"))
                .or_else(|| source.strip_prefix("file:"))
                .or_else(|| (!source.contains(':')).then_some(source.as_str()))
            else {
                return Err(format!(
                    "the URI's pin-source={source} is not a file: vtp reads the PIN from a file \
                     (tp.toml [token] `pin_file`) or an environment variable ([token] `pin_env`); \
                     drop pin-source from the URI"
                ));
            };
            let path = dir.join(path);
            match &self.pin {
                PinSpec::File(p) if same(&path, p) => {}
                PinSpec::File(p) => {
                    return Err(format!(
                        "the URI's pin-source={source} is not the PIN file [token] `pin_file` \
                         names ({}): the PIN source is set in tp.toml, [token] `pin_file`; drop \
                         pin-source from the URI or make the two agree",
                        p.display()
                    ))
                }
                PinSpec::Env(_) | PinSpec::InsecureLiteral(_) => {
                    return Err(format!(
                        "the URI's pin-source={source} names a PIN file, but [token] takes the PIN \
                         from elsewhere: the PIN source is set in tp.toml, [token] `pin_file = \
                         \"{}\"`; drop pin-source from the URI",
                        path.display()
                    ))
                }
            }
        }
        Ok(())
    }

    /// What the device layer needs to open the token. For an
    /// `insecure_literal_pin` this puts the PIN into this process's
    /// environment ([`LITERAL_PIN_VAR`]), so call it while the process is
    /// still single-threaded (before the async runtime starts).
    pub fn token_config(&self) -> TokenConfig {
        let pin = match &self.pin {
            PinSpec::File(p) => PinSource::File(p.clone()),
            PinSpec::Env(v) => PinSource::Env(v.clone()),
            PinSpec::InsecureLiteral(p) => {
                std::env::set_var(LITERAL_PIN_VAR, p.as_str());
                PinSource::Env(LITERAL_PIN_VAR.to_owned())
            }
        };
        TokenConfig {
            module: self.module.clone(),
            token: self.selector.clone(),
            pin,
        }
    }

    /// The settings a running daemon cannot change by reloading.
    pub fn restart_only(&self) -> RestartOnly {
        (
            self.module.clone(),
            self.selector.clone(),
            [self.softhsm2_conf.clone(), self.kryoptic_conf.clone()],
            self.data_dir.clone(),
        )
    }

    /// The software-token configuration files this config names, with the
    /// environment variable each module reads it from.
    pub fn module_conf_env(&self) -> Vec<(&'static str, &'static str, &Path)> {
        let mut v = Vec::new();
        if let Some(p) = &self.softhsm2_conf {
            v.push(("softhsm2_conf", "SOFTHSM2_CONF", p.as_path()));
        }
        if let Some(p) = &self.kryoptic_conf {
            v.push(("kryoptic_conf", "KRYOPTIC_CONF", p.as_path()));
        }
        v
    }
}

#[cfg(test)]
mod tests;
