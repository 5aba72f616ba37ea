//! One function per command: read the inputs, call `vtp_protocol`, write the
//! outputs, tell the user what happened and what to do next.
//!
//! | module | commands |
//! |---|---|
//! | [`identity`] | `id new`, `id card`, `id show`, `tp fetch`, `tp show` |
//! | [`exchange`] | the honest exchange: `send` (A1), `accept` (B1), `reveal` (A2), `open` (B2) |
//! | [`tp_path`] | everything that talks to the TP: `claim`, `receipts`, `unclaimed` |
//! | [`verify`] | the judge: `verify` |
//! | [`contract`] | contract signing over the exchange: `contract propose/accept/sign/commit/complete/claim/unclaimed/verify` |
//!
//! Nothing secret is ever printed: no keys, no opening secrets, no message.

pub mod contract;
pub mod exchange;
pub mod identity;
pub mod tp_path;
pub mod verify;

use anyhow::Result;
use vtp_protocol::identity::IdentityCard;

use crate::cli::{Cli, Command};

/// Run a parsed command line.
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
        Command::Contract(c) => contract::run(c),
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

#[cfg(test)]
mod tests {
    #[test]
    fn names_cannot_carry_escapes() {
        assert_eq!(super::display_name("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(super::display_name("Zoë"), "Zoë");
    }
}
