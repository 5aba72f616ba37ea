//! `tp-daemon check --config FILE`: would `serve` start, and would it work?
//! For CI of deployments and before reloads (the unit's `ExecReload=` runs
//! it before sending SIGHUP, so a bad edit fails `systemctl reload`).
//!
//! It does what `serve` does at start, with one real operation per key, and
//! writes nothing: the config is validated, the PIN file policy applied, the
//! token opened and logged in, the signing key signs a fixed test digest
//! that is verified with its public key, every honoured encryption key does
//! an OAEP wrap/unwrap and AES-GCM round trip on the token, the TP card is
//! signed in memory (never recorded), and the journal is opened read-only
//! and its head checked. Then whether `serve` could write the data
//! directory and bind its addresses (skipped while a daemon holds them).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use vtp_device::{KeyId, KeyKind, Token, TpKeys, TrustedParty};
use vtp_protocol::{Digest32, EcPoint, Signature};

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::data_lock::DataDirLock;
use crate::journal::keyring::KeyRing;
use crate::journal::{Journal, FILE_NAME};
use crate::operator::{open_token, resolve_key};

/// What the signing key signs in a check (and in the daemon's health
/// probe): a digest no TP statement can have, since every statement's
/// digest is domain-tagged (`vtp_protocol::encoding`).
pub fn probe_digest() -> [u8; 32] {
    Sha256::digest(b"vtp tp-daemon key probe: not a TP statement\0").into()
}

/// Sign [`probe_digest`] with the signing key on the token and verify the
/// signature with `public`. `Err` is the problem in words.
pub fn probe_signing_key(token: &Token, id: KeyId, public: &EcPoint) -> Result<(), String> {
    let digest = probe_digest();
    let sig = token.sign_p256(id, &digest).map_err(|e| e.to_string())?;
    public
        .verify(&Digest32(digest), &Signature(sig), "key probe")
        .map_err(|_| {
            "the token's signature of a test digest does not verify with the key's public half"
                .to_owned()
        })
}

/// The first thing `check` found wrong; one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("token: {0:#}")]
    Token(anyhow::Error),
    #[error("signing key: {0:#}")]
    Signing(anyhow::Error),
    #[error("signing key {id}: {problem}")]
    SigningProbe { id: KeyId, problem: String },
    #[error("journal {}: {problem}", path.display())]
    Journal { path: PathBuf, problem: String },
    #[error("key ring (journal {}): {problem}", path.display())]
    KeyRing { path: PathBuf, problem: String },
    #[error("encryption key {id} ({state}): {problem}")]
    Encryption {
        id: KeyId,
        state: String,
        problem: String,
    },
    #[error("the TP card cannot be signed: {0}")]
    Card(String),
    #[error(
        "data directory {}: not writable by this user (uid {uid}): serve writes the journal there",
        path.display()
    )]
    DataDirNotWritable { path: PathBuf, uid: u32 },
    #[error("cannot listen on {addr} ({what}): {error}")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        error: std::io::Error,
    },
}

fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access with a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Run every check, printing one line per check passed on stdout; the
/// first failure is the error.
pub fn check(config_path: &Path) -> Result<(), CheckError> {
    let say = |line: String| println!("{line}");
    let config = Config::load(config_path)?;
    say(format!("config {}: ok", config.path.display()));
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        say(
            "note: running as root; run as the daemon's user (sudo -u vtp) to check its \
             permissions too"
                .into(),
        );
    }
    let serving = DataDirLock::holder(&config.data_dir);

    let token = open_token(&config).map_err(CheckError::Token)?;
    let info = token.info();
    say(format!(
        "token \"{}\" (serial {}, {} {}): logged in",
        info.label, info.serial, info.manufacturer, info.model
    ));

    let signing_ref = config.keys.signing.as_ref().ok_or_else(|| {
        CheckError::Signing(anyhow::anyhow!(
            "[keys] `signing` is not set in {}: generate the TP's signing key with \
             `tp-daemon keys generate --signing` and put the URI it prints there",
            config.path.display()
        ))
    })?;
    let signing =
        resolve_key(&config, &token, signing_ref, "signing", true).map_err(CheckError::Signing)?;
    let probe = |problem: String| CheckError::SigningProbe {
        id: signing,
        problem,
    };
    let on_token = token.list_keys().map_err(|e| CheckError::Token(e.into()))?;
    match on_token.iter().find(|k| k.id == signing) {
        Some(k) if !matches!(k.kind, KeyKind::Signing) => {
            return Err(probe("is not a P-256 signing key".into()))
        }
        Some(k) if !k.checks_ok => {
            return Err(probe(format!(
                "fails the key policy and is refused: {}",
                k.problems.join("; ")
            )))
        }
        Some(_) => {}
        None => return Err(probe("is not on the token".into())),
    }
    let point = token.ec_public(signing).map_err(|e| probe(e.to_string()))?;
    let public = EcPoint::from_sec1(&point).map_err(|e| probe(e.to_string()))?;
    probe_signing_key(&token, signing, &public).map_err(probe)?;
    say(format!(
        "signing key {signing} (ECDSA P-256): signed a test digest, the signature verifies"
    ));

    let journal_path = config.data_dir.join(FILE_NAME);
    let journal_err = |problem: String| CheckError::Journal {
        path: journal_path.clone(),
        problem,
    };
    if !journal_path.is_file() {
        return Err(journal_err(
            "no such file: it holds the key ring; create it with `tp-daemon keys generate \
             --encryption` (or `tp-daemon init` for a development TP)"
                .into(),
        ));
    }
    let journal =
        Journal::open_read_only(&config.data_dir).map_err(|e| journal_err(e.to_string()))?;
    let head = journal.head().map_err(|e| journal_err(e.to_string()))?;
    let stats = journal.stats().map_err(|e| journal_err(e.to_string()))?;

    let ring = journal.key_ring().map_err(|e| CheckError::KeyRing {
        path: journal_path.clone(),
        problem: e.to_string(),
    })?;
    let keys =
        ring_keys(&config, &token, &ring, signing).map_err(|problem| CheckError::KeyRing {
            path: journal_path.clone(),
            problem,
        })?;
    for id in &keys.encryption {
        let state = ring
            .get(*id)
            .map_or("legacy [keys] encryption".to_owned(), |k| {
                k.state.to_string()
            });
        let fail = |problem: String| CheckError::Encryption {
            id: *id,
            state: state.clone(),
            problem,
        };
        match on_token.iter().find(|k| k.id == *id) {
            None => return Err(fail("is not on the token".into())),
            Some(k) if !k.checks_ok => {
                return Err(fail(format!(
                    "fails the key policy and is refused: {}",
                    k.problems.join("; ")
                )))
            }
            Some(_) => {}
        }
        token
            .self_test_encryption_key(*id)
            .map_err(|e| fail(e.to_string()))?;
        let algorithm = ring
            .get(*id)
            .map_or(String::new(), |k| format!("{}, ", k.algorithm()));
        say(format!(
            "encryption key {id} ({algorithm}{state}): OAEP wrap/unwrap and AES-GCM round trip \
             on the token ok"
        ));
    }
    let tp = TrustedParty::open(
        Arc::clone(&token),
        keys,
        &config.name,
        config.policy.clone(),
        Clock::system().now(),
    )
    .map_err(|e| CheckError::Card(e.to_string()))?;
    say(format!(
        "TP card: signed and verified in memory (not recorded): TP id {}, current key {}",
        tp.card().id(),
        tp.keys().current
    ));
    say(format!(
        "journal {}: read-only, head {head} checked ({} records: {} resolved, {} invalid, {} \
         unclaimed)",
        journal_path.display(),
        stats.records,
        stats.resolved,
        stats.invalid,
        stats.unclaimed
    ));

    if !writable(&config.data_dir) || !writable(&journal_path) {
        return Err(CheckError::DataDirNotWritable {
            path: config.data_dir.clone(),
            uid,
        });
    }
    match serving {
        Some(h) => say(format!(
            "{h} is serving this data directory (its addresses are not probed)"
        )),
        None => {
            let addrs = std::iter::once((config.listen, "listen"))
                .chain(config.metrics_listen.map(|m| (m, "metrics_listen")));
            for (addr, what) in addrs {
                TcpListener::bind(addr).map_err(|error| CheckError::Listen {
                    addr,
                    what,
                    error,
                })?;
            }
            say("no daemon is serving this data directory; its addresses are free".into());
        }
    }
    say(format!(
        "check passed: \"{}\", TP id {}, {} encryption keys (current {}), journal head #{}",
        config.name,
        tp.card().id(),
        tp.keys().encryption.len(),
        tp.keys().current,
        head.seq
    ));
    Ok(())
}

/// The keys `serve` would use: the ring's honoured keys, or (an empty ring
/// and a legacy `[keys] encryption` list) those, which `serve` imports.
fn ring_keys(
    config: &Config,
    token: &Token,
    ring: &KeyRing,
    signing: KeyId,
) -> Result<TpKeys, String> {
    let legacy = &config.keys.legacy_encryption;
    if !ring.is_empty() || legacy.is_empty() {
        return ring.tp_keys(signing).map_err(|e| e.to_string());
    }
    let resolve =
        |r, what| resolve_key(config, token, r, what, false).map_err(|e| format!("{e:#}"));
    let current_ref = config
        .keys
        .legacy_current
        .as_ref()
        .expect("checked with the config");
    let current = resolve(current_ref, "current")?;
    let mut encryption = Vec::new();
    for r in legacy {
        let id = resolve(r, "encryption")?;
        if !encryption.contains(&id) {
            encryption.push(id);
        }
    }
    Ok(TpKeys {
        signing,
        encryption,
        current,
    })
}
