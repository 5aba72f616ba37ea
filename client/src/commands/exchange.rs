//! The honest exchange, which never involves the TP: A1 `send`, B1 `accept`,
//! A2 `reveal`, B2 `open`.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use rand_core::{OsRng, RngCore};
use vtp_protocol::envelope::{self, VerifiedEnvelope};
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::ProtocolError;

use super::{display_name, who};
use crate::cli::{AcceptArgs, OpenArgs, RevealArgs, SendArgs};
use crate::files::{
    check_writable, path_error, read_card, read_opening, read_receipt, read_secret_identity,
    read_tp_card, write_file, WriteMode,
};
use crate::stream::{seal_envelope_file, DecryptError, EnvelopeFile};
use crate::timeparse::{format_span, format_timestamp, now};

/// `PATH: refused: problem` for inputs that parse but fail a check.
pub(crate) fn refused(path: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    path_error(path, format!("refused: {e}"))
}

/// Read every TP card given.
pub(crate) fn read_tp_cards(
    paths: &[std::path::PathBuf],
) -> Result<Vec<vtp_protocol::tp_card::TpCard>> {
    paths.iter().map(|p| read_tp_card(p)).collect()
}

/// "in 1h 59m 58s" / "passed".
pub(crate) fn time_left(deadline: u64, now: u64) -> String {
    if deadline > now {
        format!("in {}", format_span(deadline - now))
    } else {
        "passed".into()
    }
}

/// A1: encrypt a message into an envelope.
pub fn send(a: SendArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let to = read_card(&a.to)?;
    let tps = read_tp_cards(&a.tp)?;
    let threshold = match (tps.len(), a.threshold) {
        (1, t) => t.unwrap_or(1),
        (_, Some(t)) => t,
        (n, None) => bail!(
            "{n} trustees given (--tp): say how many of them must act to complete the exchange with --threshold T (1 to {n})"
        ),
    };
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    let now = now();
    let deadline = a.deadline.resolve(now);
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    let prep =
        envelope::prepare_group(&me, &to, &tps, threshold, deadline, now, nonce).map_err(|e| {
            match e {
                ProtocolError::Deadline(_) => {
                    anyhow!("--deadline {}: {e}", format_timestamp(deadline))
                }
                e => anyhow!("cannot make the envelope: {e}"),
            }
        })?;
    let env = seal_envelope_file(prep, &me, &a.input, &a.out, mode)?;
    let h = &env.header;
    println!(
        "envelope {} written to {}",
        h.envelope_id(),
        a.out.display()
    );
    println!("from:     {}", who(me.card()));
    println!("to:       {}", who(&to));
    if h.is_group() {
        println!(
            "trustees: {} of these {} must act to complete it: {}",
            h.threshold,
            tps.len(),
            tps.iter()
                .map(|c| format!("{} ({})", display_name(c.name()), c.id()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "deadline: {} ({})",
        format_timestamp(h.deadline),
        time_left(h.deadline, now)
    );
    println!("send the envelope to the recipient; when their receipt comes back, run `vtp reveal`");
    Ok(())
}

/// B1: check an envelope (signature, recipient, TP, deadline, `c_m`) and
/// sign a receipt for it.
pub fn accept(a: AcceptArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let trusted = read_tp_cards(&a.tp)?;
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    let mut ef = EnvelopeFile::open(&a.envelope)?;
    let venv = ef
        .envelope
        .verify_trusted(&trusted)
        .map_err(|e| refused(&a.envelope, e))?;
    let now = now();
    venv.check_for_recipient(me.id(), &trusted, now, a.min_time_left.as_secs())
        .map_err(|e| refused(&a.envelope, e))?;
    ef.check_cm()?;
    let receipt = Receipt::issue(&me, &venv, now);
    write_file(&a.out, &receipt.to_file(), mode)?;
    let h = venv.header();
    println!("accepted envelope {}", h.envelope_id());
    println!("from:     {}", who(venv.sender_card()));
    if h.is_group() {
        println!(
            "trustees: any {} of the {} can complete it if the sender does not",
            h.threshold,
            h.trustees.len()
        );
    }
    println!(
        "deadline: {} ({})",
        format_timestamp(h.deadline),
        time_left(h.deadline, now)
    );
    println!(
        "receipt written to {}: send it to the sender, then `vtp open` their opening, or `vtp claim` from the TP before the deadline",
        a.out.display()
    );
    Ok(())
}

/// The envelope checked against the TP card it carries: for parties who
/// already checked that TP (the sender made it, the recipient accepted it).
fn verified_embedded(ef: &EnvelopeFile) -> Result<VerifiedEnvelope> {
    ef.envelope
        .verify_embedded()
        .map_err(|e| path_error(ef.path(), e))
}

/// A2: check the receipt and write the opening, re-derived from the
/// identity's master seed and the envelope's nonce.
pub fn reveal(a: RevealArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    let ef = EnvelopeFile::open(&a.envelope)?;
    let venv = verified_embedded(&ef)?;
    if venv.header().sender != me.id() {
        bail!(
            "{}: refused: this envelope was not sent by {}; only its sender can reveal it",
            a.envelope.display(),
            who(me.card())
        );
    }
    let receipt = read_receipt(&a.receipt)?;
    let vr = receipt.verify(&venv).map_err(|e| refused(&a.receipt, e))?;
    let opening = Opening::reveal(&me, &venv, &vr).map_err(|e| refused(&a.envelope, e))?;
    write_file(&a.out, &opening.to_file(), mode)?;
    println!(
        "receipt from {} checked; keep it: it proves delivery together with the opening",
        who(&receipt.recipient_card)
    );
    println!(
        "opening written to {}: send it to the recipient",
        a.out.display()
    );
    Ok(())
}

/// B2: check the opening against z (no TP) and decrypt the message.
pub fn open(a: OpenArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    let mut ef = EnvelopeFile::open(&a.envelope)?;
    let venv = if a.tp.is_empty() {
        verified_embedded(&ef)?
    } else {
        ef.envelope
            .verify_trusted(&read_tp_cards(&a.tp)?)
            .map_err(|e| refused(&a.envelope, e))?
    };
    if venv.header().recipient != me.id() {
        bail!(
            "{}: refused: this envelope is addressed to someone else, not to {}",
            a.envelope.display(),
            who(me.card())
        );
    }
    let opening = read_opening(&a.opening)?;
    let opened = opening
        .check(&venv, me.card())
        .map_err(|e| refused(&a.opening, e))?;
    ef.decrypt_to(
        &opened.message_key,
        opened.inside.message_sha256,
        &a.out,
        mode,
    )
    .map_err(|e| match e {
        DecryptError::Other(e) => e,
        e => anyhow!(
            "{}: the opening is valid but the message does not match it: the sender's envelope is bad ({e}); keep the envelope, receipt and opening as evidence",
            a.envelope.display()
        ),
    })?;
    println!(
        "message from {} written to {} (SHA-256 {})",
        who(venv.sender_card()),
        a.out.display(),
        opened.inside.message_sha256
    );
    Ok(())
}
