//! `tp.toml`: what the daemon serves, where its token and journal are, and the
//! limits and policy it enforces. `docs/tp.toml.sample` is the commented
//! reference; `tp-daemon init --softhsm` writes one for a development token
//! (see [`crate::init::config_template`]).
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
//! ring lives in the journal (see [`crate::keyring`]) and is changed with
//! `tp-daemon keys rotate | retire`. `[keys]` names the signing key (which is
//! the TP's identity) and the defaults for new keys.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use vtp_device::{KeyId, OaepHash, PinSource, TokenConfig, TokenSelector};
use vtp_protocol::tp_card::Policy;
use vtp_protocol::wire::DEFAULT_MAX_FRAME;
use zeroize::Zeroizing;

use crate::pkcs11_uri::Pkcs11Uri;

/// Address the daemon listens on when `listen` is not set.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// Suggested address of the metrics endpoint (off unless configured).
pub const SUGGESTED_METRICS_LISTEN: &str = "127.0.0.1:7401";
/// Smallest accepted `limits.max_frame_bytes`: a claim carries two cards, an
/// envelope with the TP card and z, and a receipt; a few KiB are needed.
pub const MIN_FRAME_BYTES: usize = 8 * 1024;
/// Largest accepted `limits.max_frame_bytes`.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Default `[limits] first_frame_timeout_secs`: ample for a client to send
/// a claim of a few KiB over a slow link, short enough that idle
/// connections opened in bulk free their slots quickly.
pub const DEFAULT_FIRST_FRAME_TIMEOUT_SECS: u64 = 5;
/// The most device threads `[limits] device_threads` may ask for.
pub const MAX_DEVICE_THREADS: usize = 1024;
/// Default `[limits] commit_delay_us`: about one RSA-2048 device operation.
pub const DEFAULT_COMMIT_DELAY_US: u64 = 2_000;
/// The most `[limits] commit_delay_us` may be (it adds to claims' latency
/// under load).
pub const MAX_COMMIT_DELAY_US: u64 = 100_000;
/// Default size of new RSA encryption keys.
pub const DEFAULT_RSA_BITS: u32 = 3072;
/// Environment variable through which an `insecure_literal_pin` reaches the
/// device layer (which reads PINs from files or variables only).
pub const LITERAL_PIN_VAR: &str = "VTP_INTERNAL_LITERAL_PIN_FROM_CONFIG";

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
    pub listen: SocketAddr,
    /// Health and Prometheus metrics endpoint; `None`: off.
    pub metrics_listen: Option<SocketAddr>,
    /// Directory of the journal.
    pub data_dir: PathBuf,
    pub module: PathBuf,
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
            let uri: Pkcs11Uri = t.parse().map_err(|e: crate::pkcs11_uri::UriError| e.0)?;
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

/// Resource limits of the server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request frame; a bigger one closes the connection.
    pub max_frame_bytes: usize,
    /// Connections served at once. When all are taken, a new connection
    /// evicts a waiting one of the address holding the most, or is answered
    /// `Busy` and closed (see [`crate::server`]).
    pub max_connections: usize,
    /// A connection that completes no request frame for this long is closed.
    /// It bounds a whole frame, however slowly its bytes arrive.
    pub idle_timeout_secs: u64,
    /// A new connection whose first request frame is not complete this long
    /// after it was accepted is closed (`idle_timeout_secs` if that is
    /// shorter), so idle connections opened in bulk do not hold slots.
    pub first_frame_timeout_secs: u64,
    /// Connections served at once from one client address (IPv4 address or
    /// IPv6 /64); more are answered `Busy` and closed.
    pub max_connections_per_ip: usize,
    /// A connection is closed after this long, once its current request is
    /// answered (clients reconnect; the `vtp` client uses one connection
    /// per request).
    pub max_connection_secs: u64,
    /// Requests answered per second on average for one identity (the
    /// claimant or requester); 0 turns per-identity limiting off. See
    /// [`crate::rate_limit`].
    pub identity_rate_per_sec: u32,
    /// Requests one identity may make in a burst above that rate.
    pub identity_burst: u32,
    /// Device operations (claims' decryptions and signatures) run at once,
    /// on that many threads; 0 means one per CPU. See
    /// [`crate::device_pool`].
    pub device_threads: usize,
    /// Group commit: while claims wait for a device thread, the journal
    /// writer holds a batch open this long for more records (0: never).
    /// See [`crate::writer::Writer::hold_batches`].
    pub commit_delay_us: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: DEFAULT_MAX_FRAME,
            max_connections: 1024,
            idle_timeout_secs: 30,
            first_frame_timeout_secs: DEFAULT_FIRST_FRAME_TIMEOUT_SECS,
            max_connections_per_ip: 256,
            max_connection_secs: 600,
            identity_rate_per_sec: 10,
            identity_burst: 50,
            device_threads: 0,
            commit_delay_us: DEFAULT_COMMIT_DELAY_US,
        }
    }
}

impl Limits {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    /// How long a new connection may take to send its first request frame.
    pub fn first_frame_timeout(&self) -> Duration {
        Duration::from_secs(self.first_frame_timeout_secs.min(self.idle_timeout_secs))
    }
    pub fn max_connection_time(&self) -> Duration {
        Duration::from_secs(self.max_connection_secs)
    }
    pub fn commit_delay(&self) -> Duration {
        Duration::from_micros(self.commit_delay_us)
    }
    /// The device threads to start: `device_threads`, or one per CPU.
    pub fn device_threads(&self) -> usize {
        match self.device_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

/// A configuration problem, naming the file (and in `detail`, the line).
#[derive(Debug, thiserror::Error)]
#[error("config file {}: {detail}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub detail: String,
}

// ---- the file as written ---------------------------------------------------

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: S<String>,
    listen: Option<S<SocketAddr>>,
    metrics_listen: Option<S<SocketAddr>>,
    data_dir: S<PathBuf>,
    token: RawToken,
    #[serde(default)]
    keys: RawKeys,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    signing: Option<S<String>>,
    encryption: Option<S<Vec<S<String>>>>,
    current: Option<S<String>>,
    rsa_bits: Option<S<u32>>,
    oaep: Option<S<OaepChoice>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    max_deadline_secs: Option<S<u64>>,
    min_claim_window_secs: Option<S<u64>>,
    clock_skew_secs: Option<S<u64>>,
    require_subscription: Option<bool>,
    min_threshold: Option<S<u64>>,
    max_trustees: Option<S<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_frame_bytes: Option<S<usize>>,
    max_connections: Option<S<usize>>,
    idle_timeout_secs: Option<S<u64>>,
    first_frame_timeout_secs: Option<S<u64>>,
    max_connections_per_ip: Option<S<usize>>,
    max_connection_secs: Option<S<u64>>,
    identity_rate_per_sec: Option<S<u32>>,
    identity_burst: Option<S<u32>>,
    device_threads: Option<S<usize>>,
    commit_delay_us: Option<S<u64>>,
}

/// Line (1-based) of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Line of a `[section]` header, if present.
fn section_line(text: &str, section: &str) -> Option<usize> {
    let header = format!("[{section}]");
    text.lines()
        .position(|l| {
            let l = l.trim();
            l == header
                || l.starts_with(&format!("{header} "))
                || l.starts_with(&format!("{header}#"))
        })
        .map(|i| i + 1)
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
        let at = |span: std::ops::Range<usize>, msg: String| {
            err(format!("line {}: {msg}", line_at(text, span.start)))
        };
        let in_section = |section: &str, msg: String| match section_line(text, section) {
            Some(l) => err(format!("line {l}: {msg}")),
            None => err(msg),
        };
        // toml's message carries the line, column and a snippet of the span.
        let raw: RawConfig = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let path_value = |v: S<PathBuf>, what: &str| -> Result<PathBuf, ConfigError> {
            if v.get_ref().as_os_str().is_empty() {
                return Err(at(v.span(), format!("{what} must not be empty")));
            }
            Ok(abs(v.into_inner()))
        };

        if raw.name.get_ref().trim().is_empty() {
            return Err(at(raw.name.span(), "`name` must not be empty".into()));
        }
        let listen = match raw.listen {
            Some(l) => *l.get_ref(),
            None => DEFAULT_LISTEN.parse().expect("valid default address"),
        };
        let metrics_listen = match raw.metrics_listen {
            Some(m) if *m.get_ref() == listen => {
                return Err(at(
                    m.span(),
                    "`metrics_listen` must differ from `listen` (the metrics endpoint is \
                     plain HTTP on its own, local address)"
                        .into(),
                ))
            }
            Some(m) => Some(*m.get_ref()),
            None => None,
        };
        let data_dir = path_value(raw.data_dir, "`data_dir`")?;

        // [token]
        let t = raw.token;
        let module = path_value(t.module, "[token] `module`")?;
        if let Some(p) = &t.pin {
            return Err(at(
                p.span(),
                "[token] `pin`: a literal PIN is not supported (config files get copied, \
                 backed up and read by others); use `pin_file` or `pin_env` (or, for throw-away \
                 test tokens only, `insecure_literal_pin`)"
                    .into(),
            ));
        }
        let selector = match (t.label, t.serial) {
            (Some(l), None) if l.get_ref().trim().is_empty() => {
                return Err(at(l.span(), "[token] `label` must not be empty".into()))
            }
            (None, Some(s)) if s.get_ref().trim().is_empty() => {
                return Err(at(s.span(), "[token] `serial` must not be empty".into()))
            }
            (Some(l), None) => TokenSelector::Label(l.into_inner()),
            (None, Some(s)) => TokenSelector::Serial(s.into_inner()),
            (Some(_), Some(s)) => {
                return Err(at(
                    s.span(),
                    "[token]: set exactly one of `label` and `serial`, not both".into(),
                ))
            }
            (None, None) => {
                return Err(in_section(
                    "token",
                    "[token]: set exactly one of `label` and `serial`".into(),
                ))
            }
        };
        let pin =
            match (t.pin_file, t.pin_env, t.insecure_literal_pin) {
                (Some(f), None, None) => PinSpec::File(path_value(f, "[token] `pin_file`")?),
                (None, Some(v), None) => {
                    let name = v.get_ref().trim();
                    if name.is_empty() || name.contains('=') || name.contains('\0') {
                        return Err(at(
                            v.span(),
                            "[token] `pin_env` must be the name of an environment variable".into(),
                        ));
                    }
                    PinSpec::Env(name.to_owned())
                }
                (None, None, Some(p)) => {
                    if p.get_ref().is_empty() {
                        return Err(at(
                            p.span(),
                            "[token] `insecure_literal_pin` must not be empty".into(),
                        ));
                    }
                    PinSpec::InsecureLiteral(Zeroizing::new(p.into_inner()))
                }
                (None, None, None) => return Err(in_section(
                    "token",
                    "[token]: set one of `pin_file` and `pin_env` (where the user PIN comes from)"
                        .into(),
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
                    return Err(at(
                    span,
                    "[token]: set exactly one of `pin_file`, `pin_env` and `insecure_literal_pin`"
                        .into(),
                ));
                }
            };
        let softhsm2_conf = t
            .softhsm2_conf
            .map(|p| path_value(p, "[token] `softhsm2_conf`"))
            .transpose()?;
        let kryoptic_conf = t
            .kryoptic_conf
            .map(|p| path_value(p, "[token] `kryoptic_conf`"))
            .transpose()?;

        // [keys]
        let k = raw.keys;
        let key_ref = |v: &S<String>, what: &str| {
            let line = line_at(text, v.span().start);
            KeyRef::parse(v.get_ref(), line)
                .map_err(|e| err(format!("line {line}: [keys] `{what}`: {e}")))
        };
        let signing = k
            .signing
            .as_ref()
            .map(|v| key_ref(v, "signing"))
            .transpose()?;
        let mut legacy_encryption = Vec::new();
        if let Some(list) = &k.encryption {
            if list.get_ref().is_empty() {
                return Err(at(
                    list.span(),
                    "[keys] `encryption` (legacy) is empty; delete it: encryption keys live in \
                     the key ring (`tp-daemon keys list`)"
                        .into(),
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
            (Some(_), None) => {
                return Err(at(
                    k.encryption.as_ref().expect("some").span(),
                    "[keys] legacy `encryption` needs `current` (or delete both: the key ring in \
                     the journal is authoritative)"
                        .into(),
                ))
            }
            (None, Some(c)) => {
                return Err(err(format!(
                    "line {}: [keys] `current` without `encryption` (legacy fields; delete it)",
                    c.line
                )))
            }
            (Some(_), Some(c)) => {
                if !legacy_encryption
                    .iter()
                    .any(|e| e.text == c.text || (e.id.is_some() && e.id == c.id))
                {
                    return Err(err(format!(
                        "line {}: [keys] `current` ({}) must be one of the `encryption` keys",
                        c.line, c.text
                    )));
                }
            }
            (None, None) => {}
        }
        let rsa_bits = match k.rsa_bits {
            None => DEFAULT_RSA_BITS,
            Some(b) if vtp_device::keys::RSA_BITS.contains(b.get_ref()) => *b.get_ref(),
            Some(b) => {
                return Err(at(
                    b.span(),
                    format!(
                        "[keys] `rsa_bits` is {}; allowed: 2048, 3072 (default), 4096",
                        b.get_ref()
                    ),
                ))
            }
        };
        let oaep = k.oaep.map(|o| *o.get_ref()).unwrap_or(OaepChoice::Auto);

        // [policy]
        let p = raw.policy;
        let d = Policy::default();
        let get = |v: &Option<S<u64>>, default: u64| v.as_ref().map_or(default, |s| *s.get_ref());
        let max_deadline = get(&p.max_deadline_secs, d.max_deadline_secs);
        let min_window = get(&p.min_claim_window_secs, d.min_claim_window_secs);
        let skew = get(&p.clock_skew_secs, d.clock_skew_secs);
        let policy_at = |v: &Option<S<u64>>, msg: String| match v {
            Some(s) => at(s.span(), msg),
            None => in_section("policy", msg),
        };
        if max_deadline == 0 {
            return Err(policy_at(
                &p.max_deadline_secs,
                "[policy] `max_deadline_secs` must be at least 1".into(),
            ));
        }
        if max_deadline > 10 * 365 * 24 * 3600 {
            return Err(policy_at(
                &p.max_deadline_secs,
                "[policy] `max_deadline_secs` is more than 10 years: the journal must keep \
                 (and the key ring honour) every envelope until its deadline"
                    .into(),
            ));
        }
        if min_window == 0 || min_window >= max_deadline {
            let which = if p.min_claim_window_secs.is_some() {
                &p.min_claim_window_secs
            } else {
                &p.max_deadline_secs
            };
            return Err(policy_at(
                which,
                format!(
                    "[policy]: need 0 < `min_claim_window_secs` ({min_window}) < \
                     `max_deadline_secs` ({max_deadline})"
                ),
            ));
        }
        if skew > 24 * 3600 {
            return Err(policy_at(
                &p.clock_skew_secs,
                format!("[policy] `clock_skew_secs` is {skew}; at most 86400 (one day)"),
            ));
        }
        // A recipient accepts only deadlines the window plus the skew away;
        // if that is beyond the horizon, no envelope could ever be accepted.
        if min_window + skew >= max_deadline {
            return Err(policy_at(
                &p.clock_skew_secs,
                format!(
                    "[policy]: `min_claim_window_secs` + `clock_skew_secs` ({min_window} + {skew}) \
                     must be less than `max_deadline_secs` ({max_deadline}): recipients accept \
                     only deadlines at least that far away"
                ),
            ));
        }
        let max_group = vtp_protocol::shares::MAX_TRUSTEES as u64;
        let min_threshold = get(&p.min_threshold, d.min_threshold.into());
        let max_trustees = get(&p.max_trustees, d.max_trustees.into());
        if !(1..=max_group).contains(&max_trustees) {
            return Err(policy_at(
                &p.max_trustees,
                format!("[policy] `max_trustees` is {max_trustees}; it must be 1 to {max_group}"),
            ));
        }
        if !(1..=max_trustees).contains(&min_threshold) {
            return Err(policy_at(
                &p.min_threshold,
                format!(
                    "[policy] `min_threshold` is {min_threshold}; it must be 1 to `max_trustees` ({max_trustees})"
                ),
            ));
        }
        // [limits]
        let l = raw.limits;
        let dl = Limits::default();
        let limits = Limits {
            max_frame_bytes: l
                .max_frame_bytes
                .as_ref()
                .map_or(dl.max_frame_bytes, |v| *v.get_ref()),
            max_connections: l
                .max_connections
                .as_ref()
                .map_or(dl.max_connections, |v| *v.get_ref()),
            idle_timeout_secs: l
                .idle_timeout_secs
                .as_ref()
                .map_or(dl.idle_timeout_secs, |v| *v.get_ref()),
            first_frame_timeout_secs: l
                .first_frame_timeout_secs
                .as_ref()
                .map_or(dl.first_frame_timeout_secs, |v| *v.get_ref()),
            max_connections_per_ip: l
                .max_connections_per_ip
                .as_ref()
                .map_or(dl.max_connections_per_ip, |v| *v.get_ref()),
            max_connection_secs: l
                .max_connection_secs
                .as_ref()
                .map_or(dl.max_connection_secs, |v| *v.get_ref()),
            identity_rate_per_sec: l
                .identity_rate_per_sec
                .as_ref()
                .map_or(dl.identity_rate_per_sec, |v| *v.get_ref()),
            identity_burst: l
                .identity_burst
                .as_ref()
                .map_or(dl.identity_burst, |v| *v.get_ref()),
            device_threads: l
                .device_threads
                .as_ref()
                .map_or(dl.device_threads, |v| *v.get_ref()),
            commit_delay_us: l
                .commit_delay_us
                .as_ref()
                .map_or(dl.commit_delay_us, |v| *v.get_ref()),
        };
        if let Some(v) = &l.max_frame_bytes {
            if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(v.get_ref()) {
                return Err(at(
                    v.span(),
                    format!(
                        "[limits] `max_frame_bytes` is {}; must be between {MIN_FRAME_BYTES} and \
                         {MAX_FRAME_BYTES}",
                        v.get_ref()
                    ),
                ));
            }
        }
        if let Some(v) = &l.max_connections {
            if *v.get_ref() == 0 || *v.get_ref() > 1_000_000 {
                return Err(at(
                    v.span(),
                    "[limits] `max_connections` must be between 1 and 1000000".into(),
                ));
            }
        }
        if let Some(v) = &l.idle_timeout_secs {
            if *v.get_ref() == 0 || *v.get_ref() > 3600 {
                return Err(at(
                    v.span(),
                    "[limits] `idle_timeout_secs` must be between 1 and 3600".into(),
                ));
            }
        }
        if let Some(v) = &l.first_frame_timeout_secs {
            if *v.get_ref() == 0 || *v.get_ref() > limits.idle_timeout_secs {
                return Err(at(
                    v.span(),
                    format!(
                        "[limits] `first_frame_timeout_secs` is {}; must be between 1 and \
                         `idle_timeout_secs` ({})",
                        v.get_ref(),
                        limits.idle_timeout_secs
                    ),
                ));
            }
        }
        if let Some(v) = &l.max_connections_per_ip {
            if *v.get_ref() == 0 || *v.get_ref() > 1_000_000 {
                return Err(at(
                    v.span(),
                    "[limits] `max_connections_per_ip` must be between 1 and 1000000".into(),
                ));
            }
        }
        if let Some(v) = &l.max_connection_secs {
            if *v.get_ref() < limits.idle_timeout_secs || *v.get_ref() > 86_400 {
                return Err(at(
                    v.span(),
                    format!(
                        "[limits] `max_connection_secs` must be between `idle_timeout_secs` ({}) \
                         and 86400",
                        limits.idle_timeout_secs
                    ),
                ));
            }
        }
        if let Some(v) = &l.identity_rate_per_sec {
            if *v.get_ref() > 1_000_000 {
                return Err(at(
                    v.span(),
                    "[limits] `identity_rate_per_sec` must be at most 1000000 (0: no \
                     per-identity limit)"
                        .into(),
                ));
            }
        }
        if let Some(v) = &l.identity_burst {
            if *v.get_ref() == 0 || *v.get_ref() > 1_000_000 {
                return Err(at(
                    v.span(),
                    "[limits] `identity_burst` must be between 1 and 1000000".into(),
                ));
            }
        }
        if let Some(v) = &l.commit_delay_us {
            if *v.get_ref() > MAX_COMMIT_DELAY_US {
                return Err(at(
                    v.span(),
                    format!(
                        "[limits] `commit_delay_us` is {}; must be between 0 (commit every \
                         batch at once) and {MAX_COMMIT_DELAY_US} (microseconds)",
                        v.get_ref()
                    ),
                ));
            }
        }
        if let Some(v) = &l.device_threads {
            if *v.get_ref() > MAX_DEVICE_THREADS {
                return Err(at(
                    v.span(),
                    format!(
                        "[limits] `device_threads` is {}; must be between 0 (one per CPU) and \
                         {MAX_DEVICE_THREADS}",
                        v.get_ref()
                    ),
                ));
            }
        }

        Ok(Config {
            path: path.to_owned(),
            name: raw.name.into_inner(),
            listen,
            metrics_listen,
            data_dir,
            module,
            selector,
            pin,
            softhsm2_conf,
            kryoptic_conf,
            keys: KeysConfig {
                signing,
                legacy_encryption,
                legacy_current,
                rsa_bits,
                oaep,
            },
            policy: Policy {
                max_deadline_secs: max_deadline,
                min_claim_window_secs: min_window,
                clock_skew_secs: skew,
                min_threshold: min_threshold as u8,
                max_trustees: max_trustees as u8,
            },
            require_subscription: p.require_subscription.unwrap_or(false),
            limits,
        })
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
mod tests {
    use super::*;

    const GOOD: &str = r#"name = "test TP"
data_dir = "data"
[token]
module = "/usr/lib/softhsm/libsofthsm2.so"
label = "vtp-dev"
pin_file = "user.pin"
[keys]
signing = "pkcs11:token=vtp-dev;object=vtp-sign-0011223344556677;id=%00%11%22%33%44%55%66%77;type=private"
[policy]
max_deadline_secs = 86400
[limits]
max_connections = 10
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/vtp/tp.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    /// The error names the file, the line and each needle.
    #[track_caller]
    fn fails(text: &str, line: usize, needles: &[&str]) {
        let e = error(text);
        assert!(e.starts_with("config file /etc/vtp/tp.toml: "), "{e}");
        assert!(e.contains(&format!("line {line}")), "want line {line}: {e}");
        for n in needles {
            assert!(e.contains(n), "{n:?} not in {e}");
        }
    }

    fn with(line: &str, replacement: &str) -> String {
        assert!(GOOD.contains(line), "{line}");
        GOOD.replace(line, replacement)
    }

    #[test]
    fn minimal_config_gets_defaults_and_absolute_paths() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.data_dir, Path::new("/etc/vtp/data"));
        assert_eq!(c.pin, PinSpec::File(PathBuf::from("/etc/vtp/user.pin")));
        assert_eq!(c.selector, TokenSelector::Label("vtp-dev".into()));
        assert_eq!(c.policy.max_deadline_secs, 86400);
        assert_eq!(c.policy.min_claim_window_secs, 60);
        assert_eq!(c.policy.clock_skew_secs, 300);
        assert!(!c.require_subscription);
        assert_eq!(c.limits.max_connections, 10);
        assert_eq!(c.limits.max_frame_bytes, DEFAULT_MAX_FRAME);
        assert_eq!(
            c.keys.signing.clone().unwrap().id.unwrap().to_string(),
            "0011223344556677"
        );
        assert_eq!(c.keys.signing.clone().unwrap().line, 8);
        assert_eq!(
            c.keys
                .signing
                .clone()
                .unwrap()
                .uri
                .as_ref()
                .unwrap()
                .token
                .as_deref(),
            Some("vtp-dev")
        );
        assert_eq!(c.keys.rsa_bits, 3072);
        assert_eq!(c.keys.oaep, OaepChoice::Auto);
        assert!(c.keys.legacy_encryption.is_empty());
        assert!(c.softhsm2_conf.is_none());
    }

    #[test]
    fn every_field_parses() {
        let c = parse(
            r#"name = "TP"
listen = "0.0.0.0:7400"
metrics_listen = "127.0.0.1:7401"
data_dir = "/var/lib/vtp"
[token]
module = "/usr/lib/x.so"
serial = "0123456789abcdef"
pin_env = "VTP_TP_PIN"
softhsm2_conf = "softhsm2.conf"
[keys]
signing = "0011223344556677"
rsa_bits = 4096
oaep = "sha256"
[policy]
max_deadline_secs = 3600
min_claim_window_secs = 120
clock_skew_secs = 30
require_subscription = true
min_threshold = 2
max_trustees = 5
[limits]
max_frame_bytes = 65536
max_connections = 5
idle_timeout_secs = 9
first_frame_timeout_secs = 4
max_connections_per_ip = 3
max_connection_secs = 120
identity_rate_per_sec = 2
identity_burst = 7
device_threads = 8
commit_delay_us = 500
"#,
        )
        .unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:7401".parse().unwrap()));
        assert_eq!(c.selector, TokenSelector::Serial("0123456789abcdef".into()));
        assert_eq!(c.pin, PinSpec::Env("VTP_TP_PIN".into()));
        assert_eq!(
            c.softhsm2_conf.as_deref(),
            Some(Path::new("/etc/vtp/softhsm2.conf"))
        );
        assert_eq!(c.keys.rsa_bits, 4096);
        assert_eq!(c.keys.oaep, OaepChoice::Sha256);
        assert!(c.keys.signing.clone().unwrap().uri.is_none());
        assert_eq!(
            c.policy,
            Policy {
                max_deadline_secs: 3600,
                min_claim_window_secs: 120,
                clock_skew_secs: 30,
                min_threshold: 2,
                max_trustees: 5,
            }
        );
        assert!(c.require_subscription);
        assert_eq!(
            c.limits,
            Limits {
                max_frame_bytes: 65536,
                max_connections: 5,
                idle_timeout_secs: 9,
                first_frame_timeout_secs: 4,
                max_connections_per_ip: 3,
                max_connection_secs: 120,
                identity_rate_per_sec: 2,
                identity_burst: 7,
                device_threads: 8,
                commit_delay_us: 500,
            }
        );
        assert_eq!(c.limits.device_threads(), 8);
        assert_eq!(c.limits.commit_delay(), Duration::from_micros(500));
        assert_eq!(c.limits.first_frame_timeout(), Duration::from_secs(4));
    }

    #[test]
    fn unknown_fields_name_file_line_and_field() {
        fails(&with("[keys]", "[keys]\nsigninq = \"x\""), 8, &["signinq"]);
        fails(
            &with("max_connections = 10", "max_conections = 5"),
            12,
            &["max_conections"],
        );
        fails(&format!("{GOOD}[logging]\nlevel = 1\n"), 13, &["logging"]);
        fails(
            &with("label = \"vtp-dev\"", "label = \"vtp-dev\"\nslot = 0"),
            6,
            &["slot"],
        );
        fails(
            &with("[policy]", "[policy]\nmax_deadline = 5"),
            10,
            &["max_deadline"],
        );
    }

    #[test]
    fn bad_values_name_their_line() {
        // Each bad field on its own.
        fails(&with("name = \"test TP\"", "name = \" \""), 1, &["`name`"]);
        fails(&with("name = \"test TP\"", "name = 5"), 1, &["string"]);
        fails(
            &with("data_dir = \"data\"", "data_dir = \"\""),
            2,
            &["`data_dir`"],
        );
        fails(
            &with("data_dir", "listen = \"not an address\"\ndata_dir"),
            2,
            &["invalid socket address"],
        );
        fails(
            &with("data_dir", "metrics_listen = \"127.0.0.1\"\ndata_dir"),
            2,
            &["invalid socket address"],
        );
        fails(
            &with(
                "data_dir",
                "listen = \"127.0.0.1:7400\"\nmetrics_listen = \"127.0.0.1:7400\"\ndata_dir",
            ),
            3,
            &["must differ from `listen`"],
        );
        fails(
            &with(
                "module = \"/usr/lib/softhsm/libsofthsm2.so\"",
                "module = \"\"",
            ),
            4,
            &["`module`"],
        );
        fails(
            &with("label = \"vtp-dev\"", "label = \"\""),
            5,
            &["`label`"],
        );
        fails(
            &with("label = \"vtp-dev\"", "serial = \"\""),
            5,
            &["`serial`"],
        );
        fails(
            &with("pin_file = \"user.pin\"", "pin_env = \"A=B\""),
            6,
            &["`pin_env`"],
        );
        fails(
            &with("pin_file = \"user.pin\"", "pin_file = 7"),
            6,
            &["pin_file"],
        );
        fails(
            &with("pin_file = \"user.pin\"", "insecure_literal_pin = \"\""),
            6,
            &["`insecure_literal_pin`"],
        );
        fails(
            &with("[keys]", "[keys]\nrsa_bits = 1024"),
            8,
            &["`rsa_bits` is 1024", "2048"],
        );
        fails(
            &with("[keys]", "[keys]\nrsa_bits = \"big\""),
            8,
            &["rsa_bits"],
        );
        fails(&with("[keys]", "[keys]\noaep = \"md5\""), 8, &["md5"]);
        fails(
            &with("max_deadline_secs = 86400", "max_deadline_secs = 0"),
            10,
            &["max_deadline_secs"],
        );
        fails(
            &with(
                "max_deadline_secs = 86400",
                "max_deadline_secs = 999999999999",
            ),
            10,
            &["10 years"],
        );
        fails(
            &with("max_deadline_secs = 86400", "max_deadline_secs = -5"),
            10,
            &["max_deadline_secs"],
        );
        fails(
            &with("[policy]", "[policy]\nmin_claim_window_secs = 999999999"),
            10,
            &["min_claim_window_secs"],
        );
        fails(
            &with("[policy]", "[policy]\nmin_claim_window_secs = 0"),
            10,
            &["min_claim_window_secs"],
        );
        fails(
            &with("[policy]", "[policy]\nclock_skew_secs = 100000"),
            10,
            &["clock_skew_secs"],
        );
        fails(
            &with("[policy]", "[policy]\nclock_skew_secs = 86380"),
            10,
            &["min_claim_window_secs", "clock_skew_secs", "86400"],
        );
        fails(
            &with("[policy]", "[policy]\nrequire_subscription = \"yes\""),
            10,
            &["require_subscription"],
        );
        fails(
            &format!("{GOOD}max_frame_bytes = 10\n"),
            13,
            &["max_frame_bytes", "8192"],
        );
        fails(
            &with("max_connections = 10", "max_connections = 0"),
            12,
            &["max_connections"],
        );
        fails(
            &format!("{GOOD}idle_timeout_secs = 0\n"),
            13,
            &["idle_timeout_secs"],
        );
        fails(
            &format!("{GOOD}idle_timeout_secs = 99999\n"),
            13,
            &["idle_timeout_secs"],
        );
        fails(
            &format!("{GOOD}first_frame_timeout_secs = 0\n"),
            13,
            &["first_frame_timeout_secs"],
        );
        fails(
            &format!("{GOOD}idle_timeout_secs = 10\nfirst_frame_timeout_secs = 11\n"),
            14,
            &["first_frame_timeout_secs", "(10)"],
        );
        fails(
            &format!("{GOOD}max_connections_per_ip = 0\n"),
            13,
            &["max_connections_per_ip"],
        );
        fails(
            &format!("{GOOD}idle_timeout_secs = 60\nmax_connection_secs = 59\n"),
            14,
            &["max_connection_secs", "(60)"],
        );
        fails(
            &format!("{GOOD}identity_rate_per_sec = 1.5\n"),
            13,
            &["identity_rate_per_sec"],
        );
        fails(
            &format!("{GOOD}identity_burst = 0\n"),
            13,
            &["identity_burst"],
        );
        fails(
            &format!("{GOOD}device_threads = 1025\n"),
            13,
            &["device_threads", "1025", "1024"],
        );
        fails(
            &format!("{GOOD}commit_delay_us = 100001\n"),
            13,
            &["commit_delay_us", "100001"],
        );
        fails(
            &format!("{GOOD}device_threads = -1\n"),
            13,
            &["device_threads"],
        );
    }

    #[test]
    fn missing_required_fields_are_named() {
        let e = error(&with("name = \"test TP\"\n", ""));
        assert!(e.contains("missing field `name`"), "{e}");
        let e = error(&with("data_dir = \"data\"\n", ""));
        assert!(e.contains("`data_dir`"), "{e}");
        let e = error(&with("module = \"/usr/lib/softhsm/libsofthsm2.so\"\n", ""));
        assert!(e.contains("`module`"), "{e}");
        // No [keys] yet (setting up a TP): valid here, refused by `serve`.
        let c = parse(&GOOD.replace(
            &GOOD[GOOD.find("[keys]").unwrap()..GOOD.find("[policy]").unwrap()],
            "",
        ))
        .unwrap();
        assert!(c.keys.signing.is_none());
    }

    #[test]
    fn key_references_are_checked() {
        let sig = GOOD.lines().nth(7).unwrap();
        fails(
            &with(sig, "signing = \"00112233\""),
            8,
            &["[keys] `signing`", "\"00112233\"", "16-hex-digit"],
        );
        fails(
            &with(
                sig,
                "signing = \"pkcs11:token=a;colour=blue;id=%00%11%22%33%44%55%66%77\"",
            ),
            8,
            &["unknown attribute `colour`"],
        );
        fails(&with(sig, "signing = \"pkcs11:id=%00%11\""), 8, &["8-byte"]);
        fails(
            &with(sig, "signing = \"pkcs11:token=vtp-dev\""),
            8,
            &["names no key"],
        );
        fails(
            &with(
                sig,
                "signing = \"pkcs11:id=%00%11%22%33%44%55%66%77?pin-value=4711\"",
            ),
            8,
            &["never put a PIN"],
        );
        assert!(!error(&with(
            sig,
            "signing = \"pkcs11:id=%00%11%22%33%44%55%66%77?pin-value=4711\""
        ))
        .contains("4711"));
        // Object-only URIs and bare ids are fine.
        let c = parse(&with(sig, "signing = \"pkcs11:object=vtp-sign-x\"")).unwrap();
        assert_eq!(c.keys.signing.clone().unwrap().id, None);
        let c = parse(&with(sig, "signing = \"0011223344556677\"")).unwrap();
        assert!(c.keys.signing.clone().unwrap().uri.is_none());
    }

    #[test]
    fn legacy_encryption_keys_are_accepted_for_import() {
        let c = parse(&with(
            "[policy]",
            "encryption = [\"8899aabbccddeeff\", \"0102030405060708\"]\ncurrent = \"8899aabbccddeeff\"\n[policy]",
        ))
        .unwrap();
        assert_eq!(c.keys.legacy_encryption.len(), 2);
        assert_eq!(
            c.keys.legacy_current.unwrap().id.unwrap().to_string(),
            "8899aabbccddeeff"
        );
        fails(
            &with(
                "[policy]",
                "encryption = [\"8899aabbccddeeff\"]\ncurrent = \"1111111111111111\"\n[policy]",
            ),
            10,
            &["`current`", "must be one of"],
        );
        fails(
            &with("[policy]", "encryption = [\"8899aabbccddeeff\"]\n[policy]"),
            9,
            &["needs `current`"],
        );
        fails(
            &with(
                "[policy]",
                "encryption = [\"xyz\"]\ncurrent = \"xyz\"\n[policy]",
            ),
            9,
            &["`encryption`"],
        );
    }

    #[test]
    fn pin_sources() {
        let pin_line = "pin_file = \"user.pin\"";
        fails(
            &with(pin_line, "pin = \"1234\""),
            6,
            &["literal PIN is not supported"],
        );
        assert!(!error(&with(pin_line, "pin = \"1234\"")).contains("1234"));
        fails(
            &with(pin_line, "pin_file = \"p\"\npin_env = \"X\""),
            7,
            &["exactly one of `pin_file`, `pin_env`"],
        );
        fails(
            &with(&format!("{pin_line}\n"), ""),
            3,
            &["set one of `pin_file` and `pin_env`"],
        );
        let c = parse(&with(pin_line, "pin_env = \"VTP_TP_PIN\"")).unwrap();
        assert_eq!(c.pin, PinSpec::Env("VTP_TP_PIN".into()));
        let c = parse(&with(pin_line, "insecure_literal_pin = \"4711\"")).unwrap();
        assert_eq!(format!("{:?}", c.pin), "InsecureLiteral(***)");
        assert!(!format!("{c:?}").contains("4711"));
    }

    #[test]
    fn exactly_one_token_selector() {
        fails(
            &with("label = \"vtp-dev\"", "label = \"a\"\nserial = \"b\""),
            6,
            &["exactly one of `label` and `serial`"],
        );
        fails(
            &with("label = \"vtp-dev\"\n", ""),
            3,
            &["exactly one of `label` and `serial`"],
        );
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

    #[test]
    fn the_documented_sample_is_valid() {
        let text = include_str!("../../docs/tp.toml.sample");
        let c = Config::parse(text, Path::new("/etc/vtp/tp.toml")).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:7401".parse().unwrap()));
        assert_eq!(c.pin, PinSpec::File("/etc/vtp/user.pin".into()));
        assert_eq!(
            c.keys.signing.clone().unwrap().id.unwrap().to_string(),
            "8f1e0c2b9a7d6e5f"
        );
        assert_eq!(
            c.keys
                .signing
                .clone()
                .unwrap()
                .uri
                .as_ref()
                .unwrap()
                .object
                .as_deref(),
            Some("vtp-sign-8f1e0c2b9a7d6e5f")
        );
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.limits, Limits::default());
        // Every commented-out alternative parses too.
        for (from, to) in [
            ("label = \"vtp-prod\"", "serial = \"8b4201fdcfdf8fe0\""),
            (
                "pin_file = \"/etc/vtp/user.pin\"",
                "pin_env = \"VTP_TP_PIN\"",
            ),
            ("# softhsm2_conf", "softhsm2_conf"),
        ] {
            assert!(text.contains(from), "{from}");
            Config::parse(&text.replace(from, to), Path::new("/etc/vtp/tp.toml")).unwrap();
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        fails(&with("[limits]", "[limits\n"), 11, &["tp.toml"]);
    }
}
