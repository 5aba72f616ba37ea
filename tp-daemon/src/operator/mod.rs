//! What the operator's commands and the daemon share: opening the token the
//! config names, resolving key URIs, loading the key ring (importing legacy
//! `[keys] encryption` lists), building the TP; the commands themselves are
//! in `commands.rs` (keys, card) and `records.rs` (subscribers, journal).
//!
//! Key generation always happens **on the token** through the device crate,
//! which makes keys sensitive and non-extractable with
//! `CKA_ALLOWED_MECHANISMS` limited to one mechanism, gives them a fresh
//! random 8-byte `CKA_ID` and a readable label, re-reads `CKA_LOCAL`,
//! `CKA_ALWAYS_SENSITIVE`, `CKA_NEVER_EXTRACTABLE` (and the rest of the key
//! policy) after generation, destroys a key that fails, and self-tests new
//! encryption keys. Every key event is recorded in the journal's audit log.

pub mod check;
pub mod commands;
pub mod init;
pub mod pin_file;
pub mod pkcs11_uri;
pub mod records;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use tracing::{info, warn};
use vtp_device::{KeyId, KeyInfo, KeyKind, OaepHash, Token, TrustedParty};
use vtp_protocol::identity::IdentityCard;
use vtp_protocol::{Digest32, IdentityId, Timestamp};

use crate::clock::{rfc3339, Clock};
use crate::config::{Config, KeyRef, PinSpec};
use crate::journal::keyring::{actor, KeyRing, NewKey};
use crate::journal::Journal;
use crate::operator::pkcs11_uri::Pkcs11Uri;
use crate::service::Live;

/// Open the token the config names. Sets `SOFTHSM2_CONF` (and, for an
/// `insecure_literal_pin`, the variable carrying it) in this process: call
/// it before any other thread starts.
pub fn open_token(config: &Config) -> anyhow::Result<Arc<Token>> {
    if !config.module.is_file() {
        return Err(ModuleNotFound {
            config: config.path.clone(),
            written: config.module_written.clone(),
            tried: config.module.clone(),
        }
        .into());
    }
    for (field, var, conf) in config.module_conf_env() {
        if !conf.is_file() {
            bail!(
                "config file {}: [token] {field} {}: no such file",
                config.path.display(),
                conf.display()
            );
        }
        std::env::set_var(var, conf);
    }
    if let PinSpec::File(p) = &config.pin {
        pin_file::check(p)?;
    }
    if matches!(config.pin, PinSpec::InsecureLiteral(_)) {
        warn!(
            "!!! [token] insecure_literal_pin is set: the token PIN is stored in {} in clear. \
             Use it for throw-away test tokens only; use pin_file or pin_env in production. !!!",
            config.path.display()
        );
    }
    Ok(Arc::new(Token::open(&config.token_config())?))
}

/// `[token] module` names no file; says which path was tried and, for a
/// relative one, from where.
#[derive(Debug, thiserror::Error)]
#[error(
    "config file {}: [token] module {:?}: no such file {}{}",
    config.display(),
    written.display().to_string(),
    tried.display(),
    if written.is_relative() {
        " (a relative module path is resolved from the directory of the config file)"
    } else {
        ""
    }
)]
pub struct ModuleNotFound {
    pub config: PathBuf,
    pub written: PathBuf,
    pub tried: PathBuf,
}

fn key_error(config: &Config, r: &KeyRef, what: &str, msg: String) -> anyhow::Error {
    if r.line > 0 {
        anyhow!(
            "config file {}: line {}: [keys] `{what}`: {msg}",
            config.path.display(),
            r.line
        )
    } else {
        anyhow!("key \"{}\": {msg}", r.text)
    }
}

/// Check a URI's token attributes against the open token.
fn check_uri_token(uri: &Pkcs11Uri, token: &Token) -> Result<(), String> {
    let info = token.info();
    for (attr, want, have) in [
        ("token", &uri.token, &info.label),
        ("serial", &uri.serial, &info.serial),
        ("manufacturer", &uri.manufacturer, &info.manufacturer),
        ("model", &uri.model, &info.model),
    ] {
        if let Some(w) = want {
            if w.trim_end() != have.as_str() {
                return Err(format!(
                    "the URI says {attr}=\"{w}\" but the token selected in [token] has \
                     {attr} \"{have}\""
                ));
            }
        }
    }
    Ok(())
}

/// Resolve a key reference (URI or hex id) to a `CKA_ID` on the open token.
/// `signing` chooses which kind of key an `object=`-only URI must find. A
/// missing key is left for the device to report (it names the id).
pub fn resolve_key(
    config: &Config,
    token: &Token,
    r: &KeyRef,
    what: &str,
    signing: bool,
) -> anyhow::Result<KeyId> {
    let Some(uri) = &r.uri else {
        return Ok(r.id.expect("a bare reference is an id"));
    };
    config
        .check_key_uri(uri)
        .map_err(|m| key_error(config, r, what, m))?;
    check_uri_token(uri, token).map_err(|m| key_error(config, r, what, m))?;
    let Some(object) = &uri.object else {
        return Ok(r.id.expect("a URI without object= has an id"));
    };
    let keys = token.list_keys()?;
    let kind_ok = |k: &KeyInfo| matches!(k.kind, KeyKind::Signing) == signing;
    match r.id {
        Some(id) => {
            if let Some(k) = keys.iter().find(|k| k.id == id && kind_ok(k)) {
                if &k.label != object {
                    return Err(key_error(
                        config,
                        r,
                        what,
                        format!(
                            "the key with id {id} is labelled \"{}\" on the token, not \"{object}\"",
                            k.label
                        ),
                    ));
                }
            }
            Ok(id)
        }
        None => {
            let found: Vec<&KeyInfo> = keys
                .iter()
                .filter(|k| &k.label == object && kind_ok(k))
                .collect();
            match found.as_slice() {
                [k] => Ok(k.id),
                [] => Err(key_error(
                    config,
                    r,
                    what,
                    format!(
                        "no {} key labelled \"{object}\" on the token",
                        if signing { "signing" } else { "encryption" }
                    ),
                )),
                many => Err(key_error(
                    config,
                    r,
                    what,
                    format!(
                        "{} keys are labelled \"{object}\"; add id= to the URI",
                        many.len()
                    ),
                )),
            }
        }
    }
}

/// An exclusive lock on `data_dir/keys.lock`, held while a command creates
/// keys: two operators (or scripts) generating at once would race in
/// SoftHSM, which does not serialize token object creation across
/// processes. Released when dropped.
pub struct KeyLock {
    _file: std::fs::File,
}

impl KeyLock {
    pub fn acquire(data_dir: &Path) -> anyhow::Result<KeyLock> {
        use std::os::unix::io::AsRawFd;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let path = data_dir.join("keys.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; blocks until it is free.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(KeyLock { _file: f })
    }
}

/// The token's view of one key, or an error naming it.
fn key_info(token: &Token, id: KeyId) -> anyhow::Result<KeyInfo> {
    token
        .list_keys()?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| anyhow!("key {id} is not on the token"))
}

fn checks_text(k: &KeyInfo) -> String {
    if k.checks_ok {
        "CKA_LOCAL, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE, CKA_SENSITIVE, \
         !CKA_EXTRACTABLE, one allowed mechanism: ok"
            .to_owned()
    } else {
        format!("FAILED: {}", k.problems.join("; "))
    }
}

fn new_encryption_key(token: &Token, id: KeyId) -> anyhow::Result<(NewKey, KeyInfo)> {
    let info = key_info(token, id)?;
    let KeyKind::Encryption { bits, oaep } = info.kind else {
        bail!("key {id} is not an RSA encryption key");
    };
    if !info.checks_ok {
        bail!(
            "key {id} fails the key policy and is never used: {}",
            info.problems.join("; ")
        );
    }
    let oaep = oaep.ok_or_else(|| anyhow!("key {id}: its label does not record the OAEP hash"))?;
    Ok((
        NewKey {
            id,
            label: info.label.clone(),
            bits,
            oaep,
        },
        info,
    ))
}

/// The key ring; an empty ring is seeded from a legacy `[keys] encryption`
/// list (each key checked on the token, audited as `key.imported`).
pub fn load_ring(
    config: &Config,
    token: &Token,
    journal: &Journal,
    who: &str,
) -> anyhow::Result<KeyRing> {
    let ring = journal.key_ring()?;
    let legacy = &config.keys.legacy_encryption;
    if legacy.is_empty() {
        return Ok(ring);
    }
    if !ring.is_empty() {
        warn!(
            config = %config.path.display(),
            line = legacy[0].line,
            "[keys] `encryption`/`current` are ignored: the key ring in the journal is \
             authoritative (tp-daemon keys list); delete these lines"
        );
        return Ok(ring);
    }
    let current = config
        .keys
        .legacy_current
        .as_ref()
        .expect("checked with the config");
    let current_id = resolve_key(config, token, current, "current", false)?;
    let now = Clock::system().now();
    let mut ids = Vec::new();
    for r in legacy {
        let id = resolve_key(config, token, r, "encryption", false)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    // The current key last, so the others are not demoted by it.
    ids.sort_by_key(|id| *id == current_id);
    for id in ids {
        token.self_test_encryption_key(id)?;
        let (key, info) = new_encryption_key(token, id)
            .map_err(|e| anyhow!("cannot import [keys] encryption key {id}: {e:#}"))?;
        journal.add_key(
            &key,
            id == current_id,
            now,
            "key.imported",
            &format!(
                "imported from {} [keys] encryption (legacy); {}; label {}; checks: {}",
                config.path.display(),
                key_algorithm(&key),
                key.label,
                checks_text(&info)
            ),
            who,
        )?;
        info!(key = %id, current = id == current_id, "imported a legacy [keys] encryption key into the key ring");
    }
    Ok(journal.key_ring()?)
}

fn key_algorithm(k: &NewKey) -> String {
    format!(
        "RSA-{} OAEP-{}",
        k.bits,
        k.oaep.as_str().to_ascii_uppercase()
    )
}

/// Build the TP the config and the key ring describe (checks every key,
/// self-tests the encryption keys, signs the card) and record the card
/// ([`record_card`]).
pub fn build_live(
    config: &Config,
    token: &Arc<Token>,
    journal: &Journal,
    clock: Clock,
    who: &str,
) -> anyhow::Result<Live> {
    let signing_ref = config.keys.signing.as_ref().ok_or_else(|| {
        anyhow!(
            "config file {}: [keys] `signing` is not set: generate the TP's signing key with \
             `tp-daemon keys generate --signing` and put the URI it prints there",
            config.path.display()
        )
    })?;
    let signing = resolve_key(config, token, signing_ref, "signing", true)?;
    let ring = load_ring(config, token, journal, who)?;
    let keys = ring
        .tp_keys(signing)
        .map_err(|e| anyhow!("journal {}: {e}", journal.path().display()))?;
    let tp = TrustedParty::open_with_addresses(
        Arc::clone(token),
        keys.clone(),
        &config.name,
        config.policy.clone(),
        config.addresses.clone(),
        clock.now(),
    )?;
    record_card(journal, &tp, clock, who)?;
    Ok(Live {
        tp: Arc::new(tp),
        ring,
        require_subscription: config.require_subscription,
    })
}

/// The same TP with a freshly signed card (same keys, policy and ring; a
/// new `created`), recorded like any other. The daemon does this
/// periodically ([`vtp_protocol::tp_card::Policy::card_refresh_secs`]),
/// because recipients accept deadlines only up to a card's horizon from
/// its signing.
pub fn resign_live(
    live: &Live,
    token: &Arc<Token>,
    journal: &Journal,
    clock: Clock,
    who: &str,
) -> anyhow::Result<Live> {
    let card = live.tp.card();
    let tp = TrustedParty::open_with_addresses(
        Arc::clone(token),
        live.tp.keys().clone(),
        card.name(),
        card.policy().clone(),
        card.addresses().to_vec(),
        clock.now(),
    )?;
    record_card(journal, &tp, clock, who)?;
    Ok(Live {
        tp: Arc::new(tp),
        ring: live.ring.clone(),
        require_subscription: live.require_subscription,
    })
}

/// Record a card just signed in the journal (audit, and what it promises
/// for its current key: what `keys retire` waits for). A card that cannot
/// be recorded is not used.
pub fn record_card(
    journal: &Journal,
    tp: &TrustedParty,
    clock: Clock,
    who: &str,
) -> anyhow::Result<()> {
    let keys = tp.keys();
    let enc: Vec<String> = keys.encryption.iter().map(|k| k.to_string()).collect();
    journal.record_card_signed(
        tp.card(),
        clock.now(),
        &format!(
            "TP card signed by {}; encryption keys [{}], current {}; deadlines up to {}",
            keys.signing,
            enc.join(", "),
            keys.current,
            rfc3339(tp.card().latest_deadline())
        ),
        who,
    )?;
    Ok(())
}

// ---- keys -----------------------------------------------------------------

/// Options of `keys generate` / `keys rotate` for new encryption keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewKeyOptions {
    pub rsa_bits: Option<u32>,
    pub oaep: Option<OaepHash>,
}

fn oaep_for(config: &Config, token: &Token, o: NewKeyOptions) -> anyhow::Result<OaepHash> {
    Ok(match o.oaep.or(config.keys.oaep.fixed()) {
        Some(h) => h,
        None => token.preferred_oaep_hash()?,
    })
}

/// Generate an encryption key on the token and add it to the ring.
pub fn generate_encryption(
    config: &Config,
    token: &Token,
    journal: &Journal,
    opts: NewKeyOptions,
    make_current: bool,
    who: &str,
) -> anyhow::Result<NewKey> {
    let bits = opts.rsa_bits.unwrap_or(config.keys.rsa_bits);
    let oaep = oaep_for(config, token, opts)?;
    let now = Clock::system().now();
    let id = match token.generate_encryption_key(bits, oaep) {
        Ok(id) => id,
        Err(e) => {
            let _ = journal.audit(
                now,
                "key.generate-failed",
                "-",
                &format!("encryption RSA-{bits} OAEP-{oaep}: {e}"),
                who,
            );
            return Err(e).context("cannot generate the encryption key");
        }
    };
    let (key, info) = new_encryption_key(token, id)?;
    let current = make_current || journal.key_ring()?.current().is_none();
    journal.add_key(
        &key,
        current,
        now,
        "key.generated",
        &format!(
            "encryption key {}, label {}, generated on token \"{}\"; checks: {}; OAEP self-test ok",
            key_algorithm(&key),
            key.label,
            token.info().label,
            checks_text(&info)
        ),
        who,
    )?;
    Ok(key)
}

/// Add an encryption key that is on the token but not in the ring (made
/// outside vtp, or by an interrupted `keys generate`) as `standby`.
pub fn adopt_encryption(
    token: &Token,
    journal: &Journal,
    id: KeyId,
    who: &str,
) -> anyhow::Result<NewKey> {
    let (key, info) = new_encryption_key(token, id)?;
    journal.add_key(
        &key,
        false,
        Clock::system().now(),
        "key.imported",
        &format!(
            "adopted from token \"{}\" into the key ring; {}, label {}; checks: {}",
            token.info().label,
            key_algorithm(&key),
            key.label,
            checks_text(&info)
        ),
        who,
    )?;
    Ok(key)
}

/// Generate a P-256 signing key on the token (audited; not yet in use).
pub fn generate_signing(token: &Token, journal: &Journal, who: &str) -> anyhow::Result<KeyInfo> {
    let now = Clock::system().now();
    let id = match token.generate_signing_key() {
        Ok(id) => id,
        Err(e) => {
            let _ = journal.audit(
                now,
                "key.generate-failed",
                "-",
                &format!("signing P-256: {e}"),
                who,
            );
            return Err(e).context("cannot generate the signing key");
        }
    };
    let info = key_info(token, id)?;
    journal.audit(
        now,
        "key.generated",
        &id.to_string(),
        &format!(
            "signing key ECDSA P-256, label {}, generated on token \"{}\"; checks: {}",
            info.label,
            token.info().label,
            checks_text(&info)
        ),
        who,
    )?;
    Ok(info)
}

/// The URI vtp prints for a key on this token.
pub fn key_uri(token: &Token, label: &str, id: KeyId) -> String {
    Pkcs11Uri::for_key(&token.info().label, label, id).to_string()
}

/// Find a ring key named by hex id, URI (id= or object=) or label.
pub fn ring_key_named(ring: &KeyRing, name: &str) -> anyhow::Result<KeyId> {
    if let Ok(r) = KeyRef::parse(name, 0) {
        if let Some(id) = r.id {
            return Ok(id);
        }
        if let Some(obj) = r.uri.and_then(|u| u.object) {
            return ring
                .keys
                .iter()
                .find(|k| k.label == obj)
                .map(|k| k.id)
                .ok_or_else(|| anyhow!("no key labelled \"{obj}\" in the key ring"));
        }
    }
    ring.keys
        .iter()
        .find(|k| k.label == name)
        .map(|k| k.id)
        .ok_or_else(|| {
            anyhow!(
                "\"{name}\" names no key of the key ring (give a key id, a label or a PKCS#11 URI)"
            )
        })
}

/// Edit `[keys] signing` in the config file, keeping comments and layout.
pub fn set_signing_in_config(path: &Path, uri: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("cannot parse {}", path.display()))?;
    let keys = doc
        .get_mut("keys")
        .and_then(|k| k.as_table_like_mut())
        .ok_or_else(|| anyhow!("{} has no [keys] table", path.display()))?;
    match keys.get_mut("signing").and_then(|v| v.as_value_mut()) {
        Some(v) => {
            let decor = v.decor().clone();
            *v = toml_edit::Value::from(uri);
            *v.decor_mut() = decor;
        }
        None => {
            keys.insert("signing", toml_edit::value(uri));
        }
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, doc.to_string())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// `keys list`: one line per key on the token or in the ring.
pub fn list_keys_table(
    config: &Config,
    token: &Token,
    journal: &Journal,
    with_uris: bool,
) -> anyhow::Result<String> {
    let on_token = token.list_keys()?;
    let ring = load_ring(config, token, journal, &actor("tp-daemon keys list"))?;
    let signing = config
        .keys
        .signing
        .as_ref()
        .and_then(|r| resolve_key(config, token, r, "signing", true).ok());
    let mut rows: Vec<[String; 8]> = Vec::new();
    let mut uris = Vec::new();
    let time = |t: Option<Timestamp>| t.map(rfc3339).unwrap_or_else(|| "-".into());
    for k in &on_token {
        let (role, algorithm, state, created) = match k.kind {
            KeyKind::Encryption { bits, oaep } => {
                let alg = format!(
                    "RSA-{bits} OAEP-{}",
                    oaep.map_or("?".into(), |o| o.as_str().to_ascii_uppercase())
                );
                match ring.get(k.id) {
                    Some(r) => (
                        "encryption",
                        alg,
                        r.state.to_string(),
                        time(Some(r.created_at)),
                    ),
                    None => (
                        "encryption",
                        alg,
                        "not-in-ring".to_owned(),
                        time(journal.key_first_seen(k.id)?),
                    ),
                }
            }
            KeyKind::Signing => (
                "signing",
                "ECDSA P-256".to_owned(),
                if Some(k.id) == signing {
                    "in-use"
                } else {
                    "unused"
                }
                .to_owned(),
                time(journal.key_first_seen(k.id)?),
            ),
        };
        let checks = if k.checks_ok {
            "ok".to_owned()
        } else {
            format!("FAILED: {}", k.problems.join("; "))
        };
        rows.push([
            role.into(),
            k.id.to_string(),
            k.label.clone(),
            algorithm,
            state,
            created,
            checks,
            String::new(),
        ]);
        uris.push(key_uri(token, &k.label, k.id));
    }
    for r in &ring.keys {
        if !on_token.iter().any(|k| k.id == r.id) {
            rows.push([
                "encryption".into(),
                r.id.to_string(),
                r.label.clone(),
                r.algorithm(),
                r.state.to_string(),
                time(Some(r.created_at)),
                "MISSING from the token".into(),
                String::new(),
            ]);
            uris.push(key_uri(token, &r.label, r.id));
        }
    }
    let headers = [
        "ROLE",
        "ID",
        "LABEL",
        "ALGORITHM",
        "STATE",
        "CREATED",
        "CHECKS",
    ];
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (i, w) in widths.iter_mut().enumerate() {
            *w = (*w).max(row[i].len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: [&str; 7]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 6 {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, headers);
    for (row, uri) in rows.iter().zip(&uris) {
        line(
            &mut out,
            [
                &row[0], &row[1], &row[2], &row[3], &row[4], &row[5], &row[6],
            ],
        );
        if with_uris {
            let _ = writeln!(out, "    {uri}");
        }
    }
    if rows.is_empty() {
        out.push_str("(no vtp keys on this token)\n");
    }
    Ok(out)
}

// ---- subscribers ------------------------------------------------------------

/// An identity given as 64 hex digits or as a card file.
pub fn identity_arg(s: &str) -> anyhow::Result<IdentityId> {
    if s.len() == 64 {
        if let Ok(d) = Digest32::from_hex(s) {
            return Ok(IdentityId(d));
        }
    }
    let p = PathBuf::from(s);
    if p.is_file() {
        let bytes = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let card = IdentityCard::from_file(&bytes)
            .map_err(|e| anyhow!("{} is not an identity card: {e}", p.display()))?;
        return Ok(card.id());
    }
    bail!("\"{s}\" is neither an identity id (64 hex digits) nor an identity card file")
}

/// Parse `--expires`: an RFC 3339 time or a duration from now ("365d").
pub fn expiry_arg(s: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| anyhow!("--expires {s}: before 1970"))?
            .as_secs());
    }
    let d = humantime::parse_duration(s).map_err(|_| {
        anyhow!(
            "--expires \"{s}\": want an RFC 3339 time (2026-12-31T00:00:00Z) or a duration (365d)"
        )
    })?;
    Ok(now + d.as_secs())
}

/// Render the state of a subscriber for `subscribers list`.
pub fn subscriber_state(expires_at: Option<Timestamp>, now: Timestamp) -> String {
    match expires_at {
        None => "active (no expiry)".into(),
        Some(t) if now < t => format!("active until {}", rfc3339(t)),
        Some(t) => format!("EXPIRED at {}", rfc3339(t)),
    }
}
