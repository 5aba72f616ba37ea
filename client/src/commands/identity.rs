//! Identities and TP cards: making them, exporting cards, showing ids so
//! people can compare them out of band (the only way to know a card is the
//! right one).

use anyhow::{anyhow, Result};
use rand_core::OsRng;
use vtp_protocol::encoding::Kind;
use vtp_protocol::identity::IdentitySecret;

use super::{display_name, who};
use crate::cli::{IdCommand, TpCommand};
use crate::files::{
    check_writable, peek_kind, read_card, read_secret_identity, read_tp_card, write_file, WriteMode,
};
use crate::timeparse::{format_span, format_timestamp, now};
use crate::tp_client::TpClient;

pub fn id(cmd: IdCommand) -> Result<()> {
    match cmd {
        IdCommand::New(a) => {
            let mode = WriteMode {
                force: a.force,
                secret: true,
            };
            check_writable(&a.out, mode)?;
            let me = IdentitySecret::generate(&a.name, now(), &mut OsRng)
                .map_err(|e| anyhow!("cannot create identity: {e}"))?;
            write_file(&a.out, &me.to_file(), mode)?;
            println!("created identity {}", who(me.card()));
            println!(
                "secret keys in {} (mode 0600): keep it private and backed up, it cannot be recreated",
                a.out.display()
            );
            println!(
                "give others your public card: vtp id card {} --out CARD",
                a.out.display()
            );
            Ok(())
        }
        IdCommand::Card(a) => {
            let me = read_secret_identity(&a.identity)?;
            write_file(&a.out, &me.card().to_file(), WriteMode::public(a.force))?;
            println!(
                "wrote the public card of {} to {}",
                who(me.card()),
                a.out.display()
            );
            Ok(())
        }
        IdCommand::Show(a) => {
            let (card, what) = if peek_kind(&a.file)? == Some(Kind::IdentitySecret as u8) {
                let me = read_secret_identity(&a.file)?;
                (me.card().clone(), "secret identity (keep it private)")
            } else {
                (read_card(&a.file)?, "public identity card")
            };
            println!("name:    {}", display_name(card.name()));
            println!("id:      {}", card.id());
            println!("created: {}", format_timestamp(card.body().created));
            println!("file:    {what}");
            Ok(())
        }
    }
}

fn print_tp_card(card: &vtp_protocol::tp_card::TpCard) {
    let b = card.body();
    println!("TP:      {}", display_name(&b.name));
    println!("id:      {}", card.id());
    println!("created: {}", format_timestamp(b.created));
    for k in &b.enc_keys {
        let current = if k.id == b.current_key {
            " (current)"
        } else {
            ""
        };
        println!(
            "key:     {} RSA-{} OAEP-{}{current}",
            k.id,
            k.bits(),
            k.oaep
        );
    }
    let p = card.policy();
    println!(
        "policy:  deadlines up to {} ahead, claim window at least {}, clock skew {}",
        format_span(p.max_deadline_secs),
        format_span(p.min_claim_window_secs),
        format_span(p.clock_skew_secs)
    );
    println!(
        "groups:  as a trustee, in groups of at most {} where at least {} must act",
        p.max_trustees, p.min_threshold
    );
}

pub fn tp(cmd: TpCommand) -> Result<()> {
    match cmd {
        TpCommand::Fetch(a) => {
            let mode = WriteMode::public(a.force);
            check_writable(&a.out, mode)?;
            let card = TpClient::new(&a.tp.addr, a.tp.timeout).get_card()?;
            write_file(&a.out, &card.to_file(), mode)?;
            print_tp_card(&card);
            println!(
                "saved to {}. Compare the id above with the one the TP's operator published before you trust this card.",
                a.out.display()
            );
            Ok(())
        }
        TpCommand::Show(a) => {
            print_tp_card(&read_tp_card(&a.card)?);
            Ok(())
        }
    }
}
