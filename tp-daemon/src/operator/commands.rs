//! The operator's key commands (`tp-daemon keys …`, `tp-daemon card`):
//! what each does to the token, the journal's key ring and the config, and
//! what it tells the operator. `main.rs` only parses the arguments.

use std::path::Path;

use anyhow::{bail, Context};

use crate::clock::{rfc3339, Clock};
use crate::config::Config;
use crate::data_lock::DataDirLock;
use crate::journal::keyring::actor;
use crate::journal::Journal;
use crate::operator::{self, NewKeyOptions};

/// Load the config, open the token and the journal (before any thread).
pub fn open_all(
    config_path: &Path,
) -> anyhow::Result<(Config, std::sync::Arc<vtp_device::Token>, Journal)> {
    let config = Config::load(config_path)?;
    let token = operator::open_token(&config)?;
    let journal = Journal::open(&config.data_dir)?;
    Ok((config, token, journal))
}

/// What to do after changing the key ring or the signing key: reload the
/// daemon serving this data directory (named, if one runs).
pub fn reload_hint(config: &Config) -> String {
    match DataDirLock::holder(&config.data_dir) {
        Some(h) => format!(
            "{h}, serving this data directory, picks this up on SIGHUP (`systemctl reload \
             tp-daemon`, or `kill -HUP {}`); clients then fetch the new card (`vtp tp fetch`)",
            h.pid.map_or("PID".to_owned(), |p| p.to_string())
        ),
        None => "no daemon is serving this data directory now; the next one started uses this \
                 (a running one picks changes up on SIGHUP); clients then fetch the new card \
                 (`vtp tp fetch`)"
            .to_owned(),
    }
}

pub fn export(config_path: &Path, out: &Path, command: &str) -> anyhow::Result<()> {
    let (config, token, journal) = open_all(config_path)?;
    let who = actor(command);
    let live = operator::build_live(&config, &token, &journal, Clock::system(), &who)?;
    let card = live.tp.card();
    std::fs::write(out, card.to_file())
        .with_context(|| format!("cannot write {}", out.display()))?;
    journal.audit(
        Clock::system().now(),
        "card.exported",
        &card.id().0.to_hex(),
        &format!("written to {}", out.display()),
        &who,
    )?;
    println!("wrote TP card {} to {}", card.id(), out.display());
    Ok(())
}

/// `keys generate`: a new encryption key (current or standby) or signing key.
pub fn keys_generate(
    config_path: &Path,
    signing: bool,
    current: bool,
    new_key: NewKeyOptions,
) -> anyhow::Result<()> {
    let (config, token, journal) = open_all(config_path)?;
    let _lock = operator::KeyLock::acquire(&config.data_dir)?;
    let who = actor("tp-daemon keys generate");
    if signing {
        let k = operator::generate_signing(&token, &journal, &who)?;
        println!(
            "generated signing key {} (ECDSA P-256), label {}",
            k.id, k.label
        );
        println!("  uri: {}", operator::key_uri(&token, &k.label, k.id));
        if config.keys.signing.is_none() {
            println!(
                "put that URI into [keys] signing in {} (it is the TP's identity)",
                config.path.display()
            );
        } else {
            println!(
                "it is not in use. Using it makes a NEW TP identity (envelopes made for \
                 the old card are refused): `tp-daemon keys rotate --signing \
                 --new-identity --to {}`",
                k.id
            );
        }
    } else {
        let k = operator::generate_encryption(&config, &token, &journal, new_key, current, &who)?;
        let state = journal
            .key_ring()?
            .get(k.id)
            .map(|r| r.state.to_string())
            .unwrap_or_default();
        println!(
            "generated encryption key {} (RSA-{} OAEP-{}), label {}, state {state}",
            k.id,
            k.bits,
            k.oaep.as_str().to_ascii_uppercase(),
            k.label
        );
        println!("  uri: {}", operator::key_uri(&token, &k.label, k.id));
        println!("{}", reload_hint(&config));
    }
    Ok(())
}

/// `keys list`.
pub fn keys_list(config_path: &Path, uri: bool) -> anyhow::Result<()> {
    let (config, token, journal) = open_all(config_path)?;
    print!(
        "{}",
        operator::list_keys_table(&config, &token, &journal, uri)?
    );
    Ok(())
}

/// `keys rotate`: make another encryption key current (the old one stays
/// honoured until retired), or replace the signing key (a new TP identity,
/// only with `new_identity`).
pub fn keys_rotate(
    config_path: &Path,
    to: Option<&str>,
    signing: bool,
    new_identity: bool,
    new_key: NewKeyOptions,
) -> anyhow::Result<()> {
    let path = config_path;
    let (config, token, journal) = open_all(path)?;
    let _lock = operator::KeyLock::acquire(&config.data_dir)?;
    let who = actor("tp-daemon keys rotate");
    if signing {
        if !new_identity {
            bail!(
                "rotating the signing key makes a NEW TP identity: every envelope made \
                 for the current card is then refused, and users need the new card. \
                 Add --new-identity if that is what you want"
            );
        }
        let (id, label) = match to {
            Some(name) => {
                let r = crate::config::KeyRef::parse(name, 0)
                    .map_err(|e| anyhow::anyhow!("--to: {e}"))?;
                let id = operator::resolve_key(&config, &token, &r, "--to", true)?;
                token.ec_public(id)?;
                let label = token
                    .list_keys()?
                    .into_iter()
                    .find(|k| k.id == id)
                    .map(|k| k.label)
                    .unwrap_or_default();
                (id, label)
            }
            None => {
                let k = operator::generate_signing(&token, &journal, &who)?;
                (k.id, k.label)
            }
        };
        let uri = operator::key_uri(&token, &label, id);
        operator::set_signing_in_config(path, &uri)?;
        journal.audit(
            Clock::system().now(),
            "key.signing-replaced",
            &id.to_string(),
            &format!(
                "[keys] signing in {} set to {uri} (was {}): new TP identity",
                path.display(),
                config
                    .keys
                    .signing
                    .as_ref()
                    .map_or("(none)", |s| s.text.as_str())
            ),
            &who,
        )?;
        println!("signing key is now {id} ({uri}) in {}", path.display());
        println!("this is a NEW TP identity; {}", reload_hint(&config));
        return Ok(());
    }
    let (new_id, old) = match to {
        Some(name) => {
            let ring = operator::load_ring(&config, &token, &journal, &who)?;
            let id = match operator::ring_key_named(&ring, name) {
                Ok(id) if ring.get(id).is_some() => id,
                _ => {
                    // Not in the ring: adopt a key generated on the
                    // token (e.g. by an interrupted `generate`).
                    let r = crate::config::KeyRef::parse(name, 0)
                        .map_err(|e| anyhow::anyhow!("--to: {e}"))?;
                    let id = operator::resolve_key(&config, &token, &r, "--to", false)?;
                    token.self_test_encryption_key(id)?;
                    operator::adopt_encryption(&token, &journal, id, &who)?;
                    id
                }
            };
            let old = journal.make_current(id, Clock::system().now(), &who)?;
            (id, old)
        }
        None => {
            let old = journal.key_ring()?.current().map(|k| k.id);
            let k = operator::generate_encryption(&config, &token, &journal, new_key, true, &who)?;
            (k.id, old)
        }
    };
    match old {
        Some(o) => println!(
            "encryption key {new_id} is now current; {o} stays honoured (previous) until \
             `tp-daemon keys retire {o}`"
        ),
        None => println!("encryption key {new_id} is now current"),
    }
    println!("{}", reload_hint(&config));
    Ok(())
}

/// `keys retire`: refused before the key's safe retirement time unless
/// `force`.
pub fn keys_retire(config_path: &Path, key: &str, force: bool) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let journal = Journal::open(&config.data_dir)?;
    let ring = journal.key_ring()?;
    let id = operator::ring_key_named(&ring, key)?;
    let who = actor("tp-daemon keys retire");
    // TEST HOOK: the shifted clock of the end-to-end tests, so they
    // can retire "after the horizon" without waiting for it.
    let clock = Clock::from_env()?;
    if clock.offset_secs() != 0 {
        eprintln!(
            "tp-daemon: warning: {} is set: retiring on a SHIFTED clock ({} s). This is \
             a TEST HOOK; never set it in production.",
            crate::clock::OFFSET_ENV,
            clock.offset_secs()
        );
    }
    let r = journal.retire_key(id, &config.policy, force, clock.now(), &who)?;
    println!(
        "encryption key {id} retired at {}: claims for envelopes made for it are now \
         refused (answers already recorded are still served). The key stays on the \
         token; destroy it there when you no longer need it.",
        rfc3339(r.key.retired_at.unwrap_or(0))
    );
    if r.forced_early() {
        println!(
            "forced before {}: recipients who accepted an envelope for it with a \
             deadline up to then can no longer claim it (their receipts are already \
             given)",
            rfc3339(r.safe_at)
        );
    }
    println!("{}", reload_hint(&config));
    Ok(())
}
