//! Identities and TP cards: making them, exporting cards, showing ids so
//! people can compare them out of band (the only way to know a card is the
//! right one).

use anyhow::Result;
use rand_core::OsRng;
use serde_json::json;
use vtp_protocol::encoding::Kind;
use vtp_protocol::identity::{IdentityCard, IdentitySecret};
use vtp_protocol::tp_card::TpCard;

use super::{display_name, party_json, tp_card_json, who};
use crate::cli::{IdCommand, TpCommand};
use crate::files::{
    check_writable, input_error, kind_of, parse_secret_identity, read_secret_identity, read_small,
    shown_out, write_file, WriteMode,
};
use crate::timeparse::{format_span, format_timestamp, now};
use crate::{report, say};

pub fn id(cmd: IdCommand) -> Result<()> {
    match cmd {
        IdCommand::New(a) => {
            let mode = WriteMode {
                force: a.force,
                secret: true,
            };
            check_writable(&a.out, mode)?;
            if a.force && !a.yes && std::fs::symlink_metadata(&a.out).is_ok() {
                confirm_replace(&a.out)?;
            }
            let me = IdentitySecret::generate(&a.name, now(), &mut OsRng)
                .map_err(|e| anyhow::anyhow!("cannot create identity: {e}"))?;
            write_file(&a.out, &me.to_file(), mode)?;
            say!("created identity {}", who(me.card()));
            say!(
                "secret keys in {} (mode 0600): keep it private and backed up, it cannot be recreated",
                shown_out(&a.out)
            );
            say!(
                "give others your public card: vtp id card {} --out CARD",
                shown_out(&a.out)
            );
            report::json(&json!({
                "identity": party_json(me.card()),
                "secret_file": shown_out(&a.out),
            }));
            Ok(())
        }
        IdCommand::Card(a) => {
            let me = read_secret_identity(&a.identity)?;
            write_file(&a.out, &me.card().to_file(), WriteMode::public(a.force))?;
            say!(
                "wrote the public card of {} to {}",
                who(me.card()),
                shown_out(&a.out)
            );
            report::json(&json!({
                "identity": party_json(me.card()),
                "card_file": shown_out(&a.out),
            }));
            Ok(())
        }
        IdCommand::Show(a) => {
            let bytes = read_small(&a.file)?;
            let (card, what, kind) = if kind_of(&bytes) == Some(Kind::IdentitySecret as u8) {
                let me = parse_secret_identity(&a.file, &bytes)?;
                (
                    me.card().clone(),
                    "secret identity (keep it private)",
                    Kind::IdentitySecret,
                )
            } else {
                (
                    IdentityCard::from_file(&bytes).map_err(|e| input_error(&a.file, e))?,
                    "public identity card",
                    Kind::IdentityCard,
                )
            };
            say!("name:    {}", display_name(card.name()));
            say!("id:      {}", card.id());
            say!("created: {}", format_timestamp(card.body().created));
            say!("file:    {what}");
            let mut j = party_json(&card);
            j["kind"] = json!(kind.name());
            j["created"] = json!(card.body().created);
            j["created_rfc3339"] = json!(format_timestamp(card.body().created));
            report::json(&j);
            Ok(())
        }
    }
}

/// `id new --force` over an existing file: its identity is lost for good,
/// so a person is asked (on a terminal) and a script must say `--yes`.
fn confirm_replace(path: &std::path::Path) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let shown = crate::files::shown_out(path);
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(crate::error::usage(format!(
            "{shown} exists and --force would destroy the identity in it for good: add --yes to do it without a terminal to confirm on"
        )));
    }
    eprint!("vtp: {shown} exists; replace it and lose the identity in it for good? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| crate::error::io(format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(crate::error::usage(format!("{shown} kept: not replaced")))
    }
}

pub(crate) fn print_tp_card(card: &TpCard) {
    let b = card.body();
    say!("TP:      {}", display_name(&b.name));
    say!("id:      {}", card.id());
    say!("created: {}", format_timestamp(b.created));
    for a in card.addresses() {
        say!("address: {}", display_name(a));
    }
    for k in &b.enc_keys {
        let current = if k.id == b.current_key {
            " (current)"
        } else {
            ""
        };
        say!(
            "key:     {} RSA-{} OAEP-{}{current}",
            k.id,
            k.bits(),
            k.oaep
        );
    }
    let p = card.policy();
    say!(
        "policy:  deadlines up to {} ahead, claim window at least {}, clock skew {}",
        format_span(p.max_deadline_secs),
        format_span(p.min_claim_window_secs),
        format_span(p.clock_skew_secs)
    );
    say!(
        "groups:  as a trustee, in groups of at most {} where at least {} must act",
        p.max_trustees,
        p.min_threshold
    );
}

pub fn tp(cmd: TpCommand) -> Result<()> {
    match cmd {
        TpCommand::Fetch(a) => {
            let mode = WriteMode::public(a.force);
            check_writable(&a.out, mode)?;
            let target = a.tp.resolve(None)?;
            let card = target.client.get_card()?;
            target.check(&card)?;
            write_file(&a.out, &card.to_file(), mode)?;
            print_tp_card(&card);
            say!(
                "saved to {}. Compare the id above with the one the TP's operator published before you trust this card.",
                shown_out(&a.out)
            );
            let mut j = tp_card_json(&card);
            j["card_file"] = json!(shown_out(&a.out));
            report::json(&j);
            Ok(())
        }
        TpCommand::Show(a) => {
            let card = super::target::read_tp_card_arg(&a.card)?;
            print_tp_card(&card);
            report::json(&tp_card_json(&card));
            Ok(())
        }
    }
}
