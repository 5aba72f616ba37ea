//! The honest exchange, which never involves the TP: A1 `send`, B1 `accept`,
//! A2 `reveal`, B2 `open`.

use anyhow::Result;
use rand_core::{OsRng, RngCore};
use serde_json::json;
use vtp_protocol::envelope::{self, VerifiedEnvelope};
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::ProtocolError;

use super::{display_name, party_json, put_time, tp_json, who};
use crate::cli::{AcceptArgs, OpenArgs, RevealArgs, SendArgs};
pub(crate) use crate::files::refused;
use crate::files::{
    check_writable, read_card, read_opening, read_receipt, read_secret_identity, shown, shown_out,
    write_file, WriteMode,
};
use crate::stream::{seal_envelope_file, DecryptError, EnvelopeFile};
use crate::timeparse::{format_span, format_timestamp, now};
use crate::{error, fail, report, say};

/// Read every TP card given.
pub(crate) fn read_tp_cards(
    paths: &[std::path::PathBuf],
) -> Result<Vec<vtp_protocol::tp_card::TpCard>> {
    paths
        .iter()
        .map(|p| super::target::read_tp_card_arg(p))
        .collect()
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
        (n, None) => fail!(
            usage,
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
                    error::usage(format!("--deadline {}: {e}", format_timestamp(deadline)))
                }
                e => error::invalid(format!("cannot make the envelope: {e}")),
            }
        })?;
    let env = seal_envelope_file(prep, &me, &a.input, &a.out, mode)?;
    let h = &env.header;
    say!(
        "envelope {} written to {}",
        h.envelope_id(),
        shown_out(&a.out)
    );
    say!("from:     {}", who(me.card()));
    say!("to:       {}", who(&to));
    if h.is_group() {
        say!(
            "trustees: {} of these {} must act to complete it: {}",
            h.threshold,
            tps.len(),
            tps.iter()
                .map(|c| format!("{} ({})", display_name(c.name()), c.id()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    say!(
        "deadline: {} ({})",
        format_timestamp(h.deadline),
        time_left(h.deadline, now)
    );
    say!("send the envelope to the recipient; when their receipt comes back, run `vtp reveal`");
    let mut j = json!({
        "envelope_id": h.envelope_id().to_hex(),
        "envelope_file": shown_out(&a.out),
        "sender": party_json(me.card()),
        "recipient": party_json(&to),
        "trustees": tps.iter().map(tp_json).collect::<Vec<_>>(),
        "threshold": h.threshold(),
    });
    put_time(&mut j, "deadline", h.deadline);
    report::json(&j);
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
        .map_err(|e| {
            // Bob's own margin, not the TP's, is what refuses it: name the flag.
            let left = venv.header().deadline.saturating_sub(now);
            let tp_need = venv
                .tp_cards()
                .iter()
                .map(envelope::min_time_to_deadline)
                .max()
                .unwrap_or(0);
            match e {
                ProtocolError::Deadline(_)
                    if left < a.min_time_left.as_secs() && left >= tp_need =>
                {
                    refused(
                        &a.envelope,
                        format!(
                            "{e}; that minimum is --min-time-left {}: give a smaller one (at least {}, the TP's own minimum) to accept it anyway",
                            format_span(a.min_time_left.as_secs()),
                            format_span(tp_need)
                        ),
                    )
                }
                e => refused(&a.envelope, e),
            }
        })?;
    ef.check_cm()?;
    let receipt = Receipt::issue(&me, &venv, now);
    write_file(&a.out, &receipt.to_file(), mode)?;
    let h = venv.header();
    say!("accepted envelope {}", h.envelope_id());
    say!("from:     {}", who(venv.sender_card()));
    if h.is_group() {
        say!(
            "trustees: any {} of the {} can complete it if the sender does not",
            h.threshold,
            h.trustees.len()
        );
    }
    say!(
        "deadline: {} ({})",
        format_timestamp(h.deadline),
        time_left(h.deadline, now)
    );
    say!(
        "receipt written to {}: send it to the sender, then `vtp open` their opening, or `vtp claim` from the TP before the deadline",
        shown_out(&a.out)
    );
    let mut j = json!({
        "envelope_id": h.envelope_id().to_hex(),
        "receipt_file": shown_out(&a.out),
        "sender": party_json(venv.sender_card()),
        "recipient": party_json(me.card()),
        "trustees": venv.tp_cards().iter().map(tp_json).collect::<Vec<_>>(),
        "threshold": h.threshold(),
    });
    put_time(&mut j, "deadline", h.deadline);
    report::json(&j);
    Ok(())
}

/// The envelope checked against the TP card it carries: for parties who
/// already checked that TP (the sender made it, the recipient accepted it).
fn verified_embedded(ef: &EnvelopeFile) -> Result<VerifiedEnvelope> {
    ef.envelope
        .verify_embedded()
        .map_err(|e| refused(ef.path(), e))
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
        return Err(refused(
            &a.envelope,
            format!(
                "this envelope was not sent by {}; only its sender can reveal it",
                who(me.card())
            ),
        ));
    }
    let receipt = read_receipt(&a.receipt)?;
    let vr = receipt.verify(&venv).map_err(|e| refused(&a.receipt, e))?;
    let opening = Opening::reveal(&me, &venv, &vr).map_err(|e| refused(&a.envelope, e))?;
    write_file(&a.out, &opening.to_file(), mode)?;
    say!(
        "receipt from {} checked; keep it: it proves delivery together with the opening",
        who(&receipt.recipient_card)
    );
    say!(
        "opening written to {}: send it to the recipient",
        shown_out(&a.out)
    );
    report::json(&json!({
        "envelope_id": venv.header().envelope_id().to_hex(),
        "opening_file": shown_out(&a.out),
        "recipient": party_json(&receipt.recipient_card),
    }));
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
        return Err(refused(
            &a.envelope,
            format!(
                "this envelope is addressed to someone else, not to {}",
                who(me.card())
            ),
        ));
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
        e => error::invalid(format!(
            "{}: the opening is valid but the message does not match it: the sender's envelope is bad ({e}); keep the envelope, receipt and opening as evidence",
            shown(&a.envelope)
        )),
    })?;
    say!(
        "message from {} written to {} (SHA-256 {})",
        who(venv.sender_card()),
        shown_out(&a.out),
        opened.inside.message_sha256
    );
    report::json(&json!({
        "envelope_id": venv.header().envelope_id().to_hex(),
        "message_file": shown_out(&a.out),
        "message_sha256": opened.inside.message_sha256.to_string(),
        "sender": party_json(venv.sender_card()),
    }));
    Ok(())
}
