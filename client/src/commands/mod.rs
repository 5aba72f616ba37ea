//! One function per command: read the inputs, call `vtp_protocol`, write the
//! outputs, tell the user what happened and what to do next.
//!
//! | module | commands |
//! |---|---|
//! | [`identity`] | `id new`, `id card`, `id show`, `tp fetch`, `tp show` |
//! | [`exchange`] | the honest exchange: `send` (A1), `accept` (B1), `reveal` (A2), `open` (B2) |
//! | [`tp_path`] | everything that talks to the TP: `claim`, `receipts`, `unclaimed` |
//! | [`target`] | which TP to talk to: `--tp CARD` (its addresses), `--tp-addr`, the envelope's cards |
//! | [`verify`] | the judge: `verify` |
//! | [`inspect`] | `inspect`: what any vtp file says, without acting on it |
//! | [`contract`] | contract signing over the exchange: `contract propose/accept/sign/commit/complete/claim/unclaimed/verify` |
//!
//! Nothing secret is ever printed: no keys, no opening secrets, no message.

pub mod contract;
pub mod exchange;
pub mod identity;
pub mod inspect;
pub mod target;
pub mod tp_path;
pub mod verify;

use anyhow::Result;
use serde_json::{json, Value};
use vtp_protocol::identity::IdentityCard;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::Timestamp;

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::timeparse::format_timestamp;

/// Run a parsed command line (the global options are the caller's:
/// `report::init`).
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Id(c) => identity::id(c),
        Command::Tp(c) => identity::tp(c),
        Command::Send(a) => exchange::send(a),
        Command::Accept(a) => exchange::accept(a),
        Command::Reveal(a) => exchange::reveal(a),
        Command::Open(a) => exchange::open(a),
        Command::Claim(a) => tp_path::claim(a),
        Command::Receipts(a) => tp_path::receipts(a),
        Command::Unclaimed(a) => tp_path::unclaimed(a),
        Command::Verify(a) => verify::verify(a),
        Command::Inspect(a) => inspect::inspect(a),
        Command::Contract(c) => contract::run(c),
        Command::Completions(a) => {
            let mut out = Vec::new();
            clap_complete::generate(a.shell, &mut Cli::command(), "vtp", &mut out);
            crate::report::write_data(&out)
        }
        Command::Man(a) => man(a),
    }
}

/// `vtp man`: the manual page(s), from the same definitions as `--help`.
fn man(a: crate::cli::ManArgs) -> Result<()> {
    let cmd = Cli::command();
    match a.dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| crate::error::io(format!("cannot render the manual page: {e}")))?;
            crate::report::write_data(&out)
        }
        Some(dir) => {
            crate::files::ensure_dir(&dir)?;
            clap_mangen::generate_to(cmd, &dir).map_err(|e| {
                crate::files::io_error(&dir, format!("cannot write the manual pages: {e}"))
            })?;
            crate::say!("manual pages written to {}", dir.display());
            Ok(())
        }
    }
}

/// A name chosen by someone else, safe to print on a terminal (control
/// characters escaped, so a card cannot inject terminal escapes).
pub fn display_name(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// `name (id)` for messages.
pub fn who(card: &IdentityCard) -> String {
    format!("{} ({})", display_name(card.name()), card.id())
}

/// A party in JSON: `{"name": …, "id": …}` (the name as the card has it:
/// JSON escapes what a terminal would not).
pub fn party_json(card: &IdentityCard) -> Value {
    json!({ "name": card.name(), "id": card.id().to_string() })
}

/// An instant in JSON: the two fields `<key>` (Unix seconds) and
/// `<key>_rfc3339`, as `vtp verify --json` has always printed them.
pub fn put_time(v: &mut Value, key: &str, t: Timestamp) {
    v[key] = json!(t);
    v[format!("{key}_rfc3339")] = json!(format_timestamp(t));
}

/// A TP card in JSON.
pub fn tp_card_json(card: &TpCard) -> Value {
    let b = card.body();
    let p = card.policy();
    let mut v = json!({
        "kind": "TP card",
        "name": b.name,
        "id": card.id().to_string(),
        "addresses": card.addresses(),
        "keys": b.enc_keys.iter().map(|k| json!({
            "id": k.id.to_string(),
            "bits": k.bits(),
            "oaep": k.oaep.to_string(),
            "current": k.id == b.current_key,
        })).collect::<Vec<_>>(),
        "policy": {
            "max_deadline_secs": p.max_deadline_secs,
            "min_claim_window_secs": p.min_claim_window_secs,
            "clock_skew_secs": p.clock_skew_secs,
            "min_threshold": p.min_threshold,
            "max_trustees": p.max_trustees,
        },
    });
    put_time(&mut v, "created", b.created);
    v
}

/// A TP in JSON: `{"name": …, "id": …}`.
pub fn tp_json(card: &TpCard) -> Value {
    json!({ "name": card.name(), "id": card.id().to_string() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_cannot_carry_escapes() {
        assert_eq!(super::display_name("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(super::display_name("Zoë"), "Zoë");
    }
}
