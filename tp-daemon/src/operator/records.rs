//! The operator's record commands (`tp-daemon subscribers …`, `tp-daemon
//! journal …`): who may claim, and what the journal holds and whether its
//! chain is sound. `main.rs` only parses the arguments; the SQL is in
//! `crate::journal`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use vtp_protocol::tp_card::TpCard;

use crate::clock::{rfc3339, Clock};
use crate::config::Config;
use crate::journal::keyring::actor;
use crate::journal::Journal;
use crate::operator;

/// `subscribers add`: subscribe an identity (id or card file), or update
/// its note and expiry.
pub fn subscribers_add(
    config_path: &Path,
    identity: &str,
    note: &str,
    expires: Option<&str>,
) -> anyhow::Result<()> {
    let now = Clock::system().now();
    let config = Config::load(config_path)?;
    let id = operator::identity_arg(identity)?;
    let expires = expires.map(|e| operator::expiry_arg(e, now)).transpose()?;
    let journal = Journal::open(&config.data_dir)?;
    let new =
        journal.add_subscriber(&id, note, expires, now, &actor("tp-daemon subscribers add"))?;
    println!(
        "{} subscriber {} ({})",
        if new { "added" } else { "updated" },
        id.0.to_hex(),
        operator::subscriber_state(expires, now)
    );
    if !config.require_subscription {
        println!(
            "note: [policy] require_subscription is false in {}: everyone may claim",
            config.path.display()
        );
    }
    Ok(())
}

/// `subscribers remove`.
pub fn subscribers_remove(config_path: &Path, identity: &str) -> anyhow::Result<()> {
    let now = Clock::system().now();
    let config = Config::load(config_path)?;
    let id = operator::identity_arg(identity)?;
    let journal = Journal::open(&config.data_dir)?;
    if !journal.remove_subscriber(&id, now, &actor("tp-daemon subscribers remove"))? {
        bail!("{} is not a subscriber", id.0.to_hex());
    }
    println!("removed subscriber {}", id.0.to_hex());
    Ok(())
}

/// `subscribers list`.
pub fn subscribers_list(config_path: &Path) -> anyhow::Result<()> {
    let now = Clock::system().now();
    let config = Config::load(config_path)?;
    let journal = Journal::open(&config.data_dir)?;
    let subs = journal.subscribers()?;
    println!(
        "require_subscription = {} ({} subscribers)",
        config.require_subscription,
        subs.len()
    );
    for s in subs {
        println!(
            "{}  added {}  {}  {}",
            s.identity.0.to_hex(),
            rfc3339(s.added_at),
            operator::subscriber_state(s.expires_at, now),
            s.note
        );
    }
    Ok(())
}

/// `journal stats` (read-only; safe while the daemon runs).
pub fn journal_stats(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let stats = Journal::open_read_only(&config.data_dir)?.stats()?;
    println!("resolved {}", stats.resolved);
    println!("invalid {}", stats.invalid);
    println!("unclaimed {}", stats.unclaimed);
    println!("records {}", stats.records);
    Ok(())
}

/// `journal verify`: the hash chain, every affidavit's signature (by the
/// `cards` given, else by the cards the daemon recorded) and the index.
/// Prints the first bad record and fails.
pub fn journal_verify(config_path: &Path, cards: &[PathBuf]) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let trusted = cards
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            TpCard::from_file(&bytes).with_context(|| format!("{} is not a TP card", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let journal = Journal::open_read_only(&config.data_dir)?;
    let report = journal.verify((!trusted.is_empty()).then_some(&trusted[..]))?;
    for (tp, n) in &report.signers {
        println!("TP {}: {n} affidavits verified", tp.0.to_hex());
    }
    match report.first_bad {
        None => {
            println!(
                "journal OK: {} records; head {} (note it: a later journal must extend it)",
                report.records, report.head
            );
            Ok(())
        }
        Some(bad) => {
            println!(
                "{} records good (up to {}); FIRST BAD RECORD #{}: {}",
                report.records, report.head, bad.seq, bad.problem
            );
            bail!(
                "journal {} fails verification at record #{}: {}",
                journal.path().display(),
                bad.seq,
                bad.problem
            )
        }
    }
}

/// `journal audit`: the last `limit` audit records, oldest first.
pub fn journal_audit(config_path: &Path, limit: usize) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let journal = Journal::open_read_only(&config.data_dir)?;
    for r in journal.audit_log(limit)? {
        println!(
            "{} #{} {} {} — {} [{}]",
            rfc3339(r.at),
            r.seq,
            r.event,
            r.subject,
            r.detail,
            r.actor
        );
    }
    Ok(())
}
