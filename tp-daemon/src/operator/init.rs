//! `tp-daemon init --softhsm` (or `--dev-token kryoptic`): a complete
//! development TP in one directory — a software token (SoftHSM2 or kryoptic)
//! with fresh TP keys, a commented `tp.toml`, and the TP card to hand to users.
//!
//! Development and tests only: a production TP's token is initialized by its
//! operators in a real HSM, and its `tp.toml` is written by hand from the
//! commented template this module produces.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use vtp_device::devtoken::{create_dev_token, DevTokenKind};
use vtp_device::{OaepHash, Token, TpKeys, TrustedParty};
use vtp_protocol::tp_card::Policy;

use crate::clock::Clock;
use crate::config::{Limits, DEFAULT_LISTEN, SUGGESTED_METRICS_LISTEN};
use crate::journal::keyring::{actor, NewKey};
use crate::journal::Journal;
use crate::operator::pkcs11_uri::Pkcs11Uri;

/// Token label of development tokens.
pub const DEV_LABEL: &str = "vtp-dev";
/// File name of the config inside the data directory.
pub const CONFIG_FILE: &str = "tp.toml";
/// File name of the TP card inside the data directory.
pub const CARD_FILE: &str = "tp-card.vtp";

/// What `init` is asked to make.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub data_dir: PathBuf,
    /// Which software token to create.
    pub kind: DevTokenKind,
    pub rsa_bits: u32,
    /// `None`: the best OAEP hash that kind of token supports.
    pub oaep: Option<OaepHash>,
    pub name: String,
    pub listen: SocketAddr,
}

impl InitOptions {
    pub fn new(data_dir: PathBuf) -> Self {
        InitOptions {
            data_dir,
            kind: DevTokenKind::SoftHsm,
            rsa_bits: 3072,
            oaep: None,
            name: "vtp TP".into(),
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
        }
    }
}

/// What `init` made.
#[derive(Debug, Clone)]
pub struct Initialized {
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub card: PathBuf,
    /// The software token's configuration file.
    pub module_conf: PathBuf,
    pub pin_file: PathBuf,
    /// The OAEP hash the encryption key got.
    pub oaep: OaepHash,
    pub keys: TpKeys,
}

/// Create the development TP. Sets the token's configuration variable
/// (`SOFTHSM2_CONF` or `KRYOPTIC_CONF`) in this process, so call it before
/// any other thread starts and before any PKCS#11 module loads.
pub fn init_dev(opts: &InitOptions) -> anyhow::Result<Initialized> {
    let config_path = opts.data_dir.join(CONFIG_FILE);
    if config_path.exists() {
        bail!(
            "{} already exists; refusing to overwrite a TP (choose another --data-dir)",
            config_path.display()
        );
    }
    let token_dir_name = opts.kind.name();
    let softhsm_dir = opts.data_dir.join(token_dir_name);
    if softhsm_dir.exists() {
        // A half-finished earlier init: a second token with the same label
        // would make the label ambiguous.
        bail!(
            "{} already exists (an earlier init did not finish?); remove it or choose \
             another --data-dir",
            softhsm_dir.display()
        );
    }
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("cannot create {}", opts.data_dir.display()))?;
    let data_dir = opts
        .data_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", opts.data_dir.display()))?;
    let config_path = data_dir.join(CONFIG_FILE);

    let dev = create_dev_token(opts.kind, &data_dir.join(token_dir_name), DEV_LABEL)?;
    // The module reads its config variable at C_Initialize; we are still
    // single-threaded.
    let (var, conf) = dev.conf_env();
    std::env::set_var(var, conf);
    let oaep = opts.oaep.unwrap_or(opts.kind.preferred_oaep());
    let token = Arc::new(Token::open(&dev.token_config()).context("cannot open the new token")?);
    let journal = Journal::open(&data_dir).context("cannot create the journal")?;
    let who = actor("tp-daemon init");
    // The same path as `tp-daemon keys generate`: on-token generation,
    // attribute checks, self-test, key ring entry and audit records.
    let enc = match token.generate_encryption_key(opts.rsa_bits, oaep) {
        Ok(id) => id,
        Err(e) => {
            let _ = journal.audit(
                Clock::system().now(),
                "key.generate-failed",
                "-",
                &e.to_string(),
                &who,
            );
            return Err(e).context("cannot generate the TP's encryption key");
        }
    };
    let enc_label = format!("vtp-enc-{enc}-{}", oaep.as_str());
    journal.add_key(
        &NewKey {
            id: enc,
            label: enc_label.clone(),
            bits: opts.rsa_bits,
            oaep,
        },
        true,
        Clock::system().now(),
        "key.generated",
        &format!(
            "encryption key RSA-{} OAEP-{}, label {enc_label}, generated on token \"{DEV_LABEL}\" \
             by init; checks: CKA_LOCAL, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE, \
             CKA_SENSITIVE, !CKA_EXTRACTABLE, one allowed mechanism: ok; OAEP self-test ok",
            opts.rsa_bits,
            oaep.as_str().to_ascii_uppercase()
        ),
        &who,
    )?;
    let signing = crate::operator::generate_signing(&token, &journal, &who)
        .context("cannot generate the TP's signing key")?;
    let keys = TpKeys {
        signing: signing.id,
        encryption: vec![enc],
        current: enc,
    };
    let policy = Policy::default();
    let tp = TrustedParty::open(
        Arc::clone(&token),
        keys.clone(),
        &opts.name,
        policy.clone(),
        Clock::system().now(),
    )
    .context("cannot build the TP card")?;
    crate::operator::record_card(&journal, &tp, Clock::system(), &who)?;
    drop(journal);

    let signing_uri = Pkcs11Uri::for_key(&dev.label, &signing.label, signing.id).to_string();
    let text = config_template(&TemplateValues {
        name: &opts.name,
        listen: opts.listen,
        data_dir: &data_dir,
        module: &dev.module,
        label: &dev.label,
        pin_file: &dev.pin_file,
        softhsm2_conf: (opts.kind == DevTokenKind::SoftHsm).then_some(dev.conf.as_path()),
        kryoptic_conf: (opts.kind == DevTokenKind::Kryoptic).then_some(dev.conf.as_path()),
        signing: &signing_uri,
        rsa_bits: opts.rsa_bits,
        oaep,
        policy: &policy,
        limits: &Limits::default(),
    });
    let card_path = data_dir.join(CARD_FILE);
    std::fs::write(&card_path, tp.card().to_file())
        .with_context(|| format!("cannot write {}", card_path.display()))?;
    // The config last: its existence means "this directory holds a TP".
    std::fs::write(&config_path, text)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    Ok(Initialized {
        data_dir,
        config: config_path,
        card: card_path,
        module_conf: dev.conf,
        pin_file: dev.pin_file,
        oaep,
        keys,
    })
}

/// Values substituted into the commented `tp.toml`.
pub struct TemplateValues<'a> {
    pub name: &'a str,
    pub listen: SocketAddr,
    pub data_dir: &'a Path,
    pub module: &'a Path,
    pub label: &'a str,
    pub pin_file: &'a Path,
    pub softhsm2_conf: Option<&'a Path>,
    pub kryoptic_conf: Option<&'a Path>,
    /// PKCS#11 URI (or hex id) of the signing key.
    pub signing: &'a str,
    pub rsa_bits: u32,
    pub oaep: OaepHash,
    pub policy: &'a Policy,
    pub limits: &'a Limits,
}

/// TOML string literal (basic string with escapes).
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn qp(p: &Path) -> String {
    q(&p.display().to_string())
}

/// A `tp.toml` with every field explained (a shorter form of
/// `docs/tp.toml.sample`).
pub fn config_template(v: &TemplateValues) -> String {
    let mut softhsm = match v.softhsm2_conf {
        Some(p) => format!("softhsm2_conf = {}", qp(p)),
        None => "# softhsm2_conf = \"/path/to/softhsm2.conf\"".into(),
    };
    softhsm.push_str("\n# kryoptic only: exported as KRYOPTIC_CONF before the module is loaded.\n");
    softhsm.push_str(&match v.kryoptic_conf {
        Some(p) => format!("kryoptic_conf = {}", qp(p)),
        None => "# kryoptic_conf = \"/path/to/kryoptic.conf\"".into(),
    });
    format!(
        r#"# tp.toml — configuration of a vtp trusted-party daemon (`tp-daemon serve`).
#
# Unknown fields are errors; every error names the line. Relative paths are
# relative to this file's directory. Written by `tp-daemon init`; edit freely,
# then reload (SIGHUP) or restart the daemon. docs/tp.toml.sample explains
# every field at length; docs/operators.md is the operator's guide.

# Name shown in the TP card that users receive.
name = {name}

# Where clients reach the TP ("host:port"), published in the signed TP card
# so that `vtp claim --tp tp.card` needs no address. Default: none.
# addresses = ["tp.example.com:7400"]

# Address and port to listen on. Use 0.0.0.0:PORT (or [::]:PORT) to accept
# connections from other machines. `tp-daemon serve --listen` overrides it.
# Default: "{default_listen}".
listen = "{listen}"

# Health (/healthz) and Prometheus metrics (/metrics) over plain HTTP, on a
# separate, local address. Off when unset. `serve --metrics-listen` overrides.
# metrics_listen = "{metrics_listen}"

# Directory of the journal (journal.sqlite3): every resolution, invalid-envelope
# verdict and unclaimed certificate the TP ever issued, the key ring and the
# audit log. Back it up: losing it loses Alice's receipts and lets an envelope
# be answered differently.
data_dir = {data_dir}

[token]
# The PKCS#11 module (shared library) of the HSM holding the TP keys.
module = {module}
# The token, chosen by label or by serial number: set exactly one of them.
# (Slot numbers are not stable, so they cannot be used.)
label = {label}
# serial = "0123456789abcdef"
# Where the token's user PIN comes from: set exactly one of them. A PIN file
# others can read or write is refused: make it 0600 owned by the daemon's
# user, or root:GROUP 0640 with the daemon's group. A literal PIN in this
# file is refused, except as `insecure_literal_pin` (throw-away test tokens
# only; the daemon warns loudly at every start).
pin_file = {pin_file}
# pin_env = "VTP_TP_PIN"
# SoftHSM2 only: exported as SOFTHSM2_CONF before the module is loaded, so the
# daemon finds this token's directory. Remove it for a real HSM.
{softhsm}

[keys]
# The P-256 key that signs the TP card and every affidavit, as an RFC 7512
# PKCS#11 URI (token=, object= and id= are checked against the token) or as
# its CKA_ID in 16 hex digits. Changing it makes a NEW TP identity.
signing = {signing}
# The encryption keys are NOT listed here: the key ring (current, standby,
# previous and retired keys) lives in the journal. See and change it with
#   tp-daemon keys list | generate | rotate | retire --config THIS_FILE
# Defaults for new encryption keys: RSA size (2048, 3072 or 4096) and OAEP
# hash ("sha1", "sha256" or "auto": SHA-256 if the token supports it).
rsa_bits = {rsa_bits}
oaep = "{oaep}"

[policy]
# Published in the TP card and enforced by the TP and its users.
# Farthest deadline a sender may set, in seconds from now and from the signing
# of the TP card used (default 90 days; the daemon re-signs its card every
# sixteenth of it, at most daily).
max_deadline_secs = {max_deadline}
# Least time that must be left before the deadline, on the TP's clock, when a
# recipient accepts an envelope, so that he can still claim (default 60).
# Clients add clock_skew_secs (the TP's clock may be that far ahead): deadlines
# must be at least min_claim_window_secs + clock_skew_secs away.
min_claim_window_secs = {min_window}
# Allowed difference between a client's clock and the TP's (default 300).
clock_skew_secs = {skew}
# Only subscribed identities may claim (`tp-daemon subscribers add`).
require_subscription = false
# As one trustee of a group (`vtp send --tp A --tp B --tp C --threshold T`):
# the least threshold T this TP accepts (1 = it may act alone) and the most
# trustees in a group (at most 16).
min_threshold = 1
max_trustees = 16

[limits]
# Largest request frame in bytes; a longer one closes the connection
# (default 262144).
max_frame_bytes = {max_frame}
# Connections served at once (default 1024). When all are taken, a new
# connection evicts the longest-waiting idle connection of the address
# holding the most, or is answered "busy" if its own address holds the most.
max_connections = {max_conn}
# Close a connection that sends no complete request for this many seconds
# (default 30).
idle_timeout_secs = {idle}
# Close a new connection whose first request is not complete this many
# seconds after it connected (default 5, at most idle_timeout_secs).
# first_frame_timeout_secs = 5
# Connections at once from one client address (an IPv4 address or an IPv6
# /64); more are answered "busy" (default 256).
# max_connections_per_ip = 256
# Close any connection after this many seconds, once its current request is
# answered (default 600).
# max_connection_secs = 600
# Per-identity rate limit: answered requests per second per claimant or
# requester, in bursts of up to identity_burst; over it the answer is "busy".
# 0 turns it off (defaults 10 and 50). docs/tp.toml.sample explains more.
# identity_rate_per_sec = 10
# identity_burst = 50
# Device operations run at once (0: one per CPU, right for a software token;
# a network HSM with its own cores may want more), and how long the journal
# holds a commit open for more records while claims queue (group commit:
# two device operations as measured, at most this).
# device_threads = 0
# commit_delay_us = 10000
"#,
        name = q(v.name),
        default_listen = DEFAULT_LISTEN,
        metrics_listen = SUGGESTED_METRICS_LISTEN,
        listen = v.listen,
        data_dir = qp(v.data_dir),
        module = qp(v.module),
        label = q(v.label),
        pin_file = qp(v.pin_file),
        softhsm = softhsm,
        signing = q(v.signing),
        rsa_bits = v.rsa_bits,
        oaep = v.oaep.as_str(),
        max_deadline = v.policy.max_deadline_secs,
        min_window = v.policy.min_claim_window_secs,
        skew = v.policy.clock_skew_secs,
        max_frame = v.limits.max_frame_bytes,
        max_conn = v.limits.max_connections,
        idle = v.limits.idle_timeout_secs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn template_parses_back_to_the_same_values() {
        let signing = Pkcs11Uri::for_key(
            "vtp-dev",
            "vtp-sign-0011223344556677",
            "0011223344556677".parse().unwrap(),
        )
        .to_string();
        let text = config_template(&TemplateValues {
            name: "Test \"TP\"",
            listen: "127.0.0.1:7400".parse().unwrap(),
            data_dir: Path::new("/var/lib/vtp"),
            module: Path::new("/usr/lib/softhsm/libsofthsm2.so"),
            label: "vtp-dev",
            pin_file: Path::new("/var/lib/vtp/user.pin"),
            softhsm2_conf: Some(Path::new("/var/lib/vtp/softhsm2.conf")),
            kryoptic_conf: None,
            signing: &signing,
            rsa_bits: 2048,
            oaep: OaepHash::Sha1,
            policy: &Policy::default(),
            limits: &Limits::default(),
        });
        let c = Config::parse(&text, Path::new("/var/lib/vtp/tp.toml")).unwrap();
        assert_eq!(c.name, "Test \"TP\"");
        assert_eq!(c.keys.signing.clone().unwrap().text, signing);
        assert_eq!(
            c.keys.signing.clone().unwrap().id.unwrap().to_string(),
            "0011223344556677"
        );
        assert_eq!(c.keys.rsa_bits, 2048);
        assert_eq!(c.keys.oaep, crate::config::OaepChoice::Sha1);
        assert!(!c.require_subscription);
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.data_dir, Path::new("/var/lib/vtp"));
        assert_eq!(
            c.softhsm2_conf.as_deref(),
            Some(Path::new("/var/lib/vtp/softhsm2.conf"))
        );
    }
}
