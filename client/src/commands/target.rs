//! Which TP to talk to. `--tp` always takes a TP card; vtp connects to the
//! addresses the card publishes (signed by the TP) and talks only to a TP
//! with that card's id. `--tp-addr HOST[:PORT]` overrides the address
//! (default port 7400). For an envelope, the TP cards it carries are the
//! default. Each flag has one meaning; a value that looks like the other's
//! gets a hint instead of a confusing "cannot open" or DNS error.

use std::path::Path;

use anyhow::Result;
use vtp_protocol::tp_card::TpCard;

use crate::cli::{TpTarget, TrusteeTargets};
use crate::error;
use crate::files::{is_stdio, read_tp_card, shown};
use crate::tp_client::TpClient;

/// A TP to ask, and the card it must present (if one was given).
pub struct Target {
    pub client: TpClient,
    pub expect: Option<TpCard>,
}

impl Target {
    /// Refuse a TP whose card is not the one given.
    pub fn check(&self, served: &TpCard) -> Result<()> {
        match &self.expect {
            Some(want) if want.id() != served.id() => Err(error::invalid(format!(
                "the TP at {} has id {}, not the id {} of the TP card given: refusing to talk to the wrong TP",
                self.client.addr(),
                served.id(),
                want.id()
            ))),
            _ => Ok(()),
        }
    }
}

fn looks_like_address(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && s.contains(':')
}

/// Read the TP card given to `--tp`; an address there is a usage error
/// that names `--tp-addr`.
pub fn read_tp_card_arg(path: &Path) -> Result<TpCard> {
    if !is_stdio(path) && std::fs::symlink_metadata(path).is_err() {
        let s = path.to_string_lossy();
        if looks_like_address(&s) {
            return Err(error::usage(format!(
                "--tp takes a TP card file, and there is no file {s}: for the TP's address, use --tp-addr {s}"
            )));
        }
    }
    read_tp_card(path)
}

/// The value of `--tp-addr`; a card file there is a usage error that names
/// `--tp`.
fn address_arg(a: &str) -> Result<String> {
    if Path::new(a).is_file() {
        return Err(error::usage(format!(
            "--tp-addr takes an address HOST[:PORT], and {a} is a file: give a TP card with --tp {a}"
        )));
    }
    if a.trim().is_empty() || a.contains('/') || a.chars().any(char::is_whitespace) {
        return Err(error::usage(format!(
            "--tp-addr {a:?} is not an address: give HOST[:PORT] (default port 7400)"
        )));
    }
    Ok(a.trim().to_string())
}

/// The addresses `card` publishes, or a usage error saying to give one.
fn card_target(card: TpCard, whose: &str, timeout: std::time::Duration) -> Result<Target> {
    if card.addresses().is_empty() {
        return Err(error::usage(format!(
            "{whose} publishes no address (it predates addresses on cards, or its operator set none): give the TP's address with --tp-addr HOST[:PORT]"
        )));
    }
    Ok(Target {
        client: TpClient::with_addresses(card.addresses(), timeout),
        expect: Some(card),
    })
}

impl TpTarget {
    /// The TP to ask: `--tp-addr` if given (checked against `--tp` if that
    /// is given too), else the addresses of the `--tp` card, else those of
    /// `fallback` (the card an envelope carries).
    pub fn resolve(&self, fallback: Option<&TpCard>) -> Result<Target> {
        let card = self.card.as_deref().map(read_tp_card_arg).transpose()?;
        match (&self.addr, card) {
            (Some(a), expect) => Ok(Target {
                client: TpClient::new(&address_arg(a)?, self.timeout),
                expect,
            }),
            (None, Some(card)) => {
                let whose = format!(
                    "the TP card {}",
                    shown(self.card.as_deref().expect("given"))
                );
                card_target(card, &whose, self.timeout)
            }
            (None, None) => match fallback {
                Some(c) => card_target(c.clone(), "the envelope's TP card", self.timeout),
                None => Err(error::usage(
                    "say which TP: --tp TPCARD (its card) or --tp-addr HOST[:PORT]".to_string(),
                )),
            },
        }
    }
}

impl TrusteeTargets {
    /// The trustees to ask, in order: the `--tp-addr` addresses, or the
    /// `--tp` cards, or the cards the envelope carries.
    pub fn resolve(&self, embedded: &[TpCard]) -> Result<Vec<Target>> {
        if !self.addrs.is_empty() {
            return self
                .addrs
                .iter()
                .map(|a| {
                    Ok(Target {
                        client: TpClient::new(&address_arg(a)?, self.timeout),
                        expect: None,
                    })
                })
                .collect();
        }
        if !self.cards.is_empty() {
            return self
                .cards
                .iter()
                .map(|p| {
                    card_target(
                        read_tp_card_arg(p)?,
                        &format!("the TP card {}", shown(p)),
                        self.timeout,
                    )
                })
                .collect();
        }
        let with: Vec<Target> = embedded
            .iter()
            .filter(|c| !c.addresses().is_empty())
            .map(|c| card_target(c.clone(), "", self.timeout))
            .collect::<Result<_>>()?;
        if with.is_empty() {
            return Err(error::usage(format!(
                "the envelope's TP card{} no address{}: give --tp-addr HOST[:PORT] (or --tp with a newer card of the TP)",
                if embedded.len() == 1 { " publishes" } else { "s publish" },
                if embedded.len() == 1 { "" } else { "es" },
            )));
        }
        Ok(with)
    }
}
