//! The judge: `vtp verify` weighs the evidence offline.
//!
//! `vtp_protocol::evidence::judge_group` checks the signed statements. The
//! files add what the statements only name: the envelope file's message
//! ciphertext must hash to the signed `H(c_m)` (otherwise the file was
//! altered, whatever else the evidence says), and when a valid opening is
//! given, its message key must actually decrypt that ciphertext to the
//! message whose SHA-256 the sender committed to (otherwise the recipient did
//! not receive it).
//!
//! With `--void-evidence`, the judge also weighs the recipient's proof that
//! the key the trustees released does not open the message; it reads `c_m`
//! from the envelope file for that (see `vtp_protocol::wrap_proof`).

use anyhow::Result;
use serde::Serialize;
use vtp_protocol::evidence::{judge_with_void, DeliveredVia, Verdict, VoidClaim};
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::TpCard;

use super::display_name;
use super::exchange::read_tp_cards;
use crate::cli::VerifyArgs;
use crate::files::{read_affidavit, read_opening, read_receipt, read_void_evidence};
use crate::stream::{sha256_file, DecryptError, EnvelopeFile, FileCiphertext};
use crate::timeparse::format_timestamp;
use crate::{fail, report, say};

#[derive(Serialize)]
struct JsonVerdict<'a> {
    #[serde(flatten)]
    verdict: &'a Verdict,
    deadline_rfc3339: Option<String>,
}

fn invalidate(v: &mut Verdict, reason: String) {
    v.valid = false;
    v.delivered_via = None;
    v.reason = Some(reason);
}

/// What the statements only name: the ciphertext in the envelope file is the
/// one the sender signed, and a valid opening's key decrypts it to the
/// committed message. An altered file is blamed on the file, never on the
/// sender: the ciphertext is checked against the signed header whenever the
/// opening's key does not decrypt it, and on its own when there is no key.
fn check_files(
    tps: &[TpCard],
    ef: &mut EnvelopeFile,
    receipt: &Receipt,
    opening: Option<&Opening>,
    v: &mut Verdict,
) {
    // Without an authentic header there is no signed H(c_m) to compare
    // with; the verdict already says why.
    let Ok(env) = ef.envelope.verify_trusted(tps) else {
        return;
    };
    let opened = match opening {
        Some(o) if v.valid => o.check(&env, &receipt.recipient_card).ok(),
        _ => None,
    };
    let Some(opened) = opened else {
        if let Err(e) = ef.check_cm() {
            invalidate(v, format!("{e:#}"));
        }
        return;
    };
    match ef.decrypt_sha256(&opened.message_key) {
        Ok(sha) if sha == opened.inside.message_sha256 => {}
        Ok(_) | Err(DecryptError::BadKey { .. }) => match ef.check_cm() {
            Err(e) => invalidate(v, format!("{e:#}")),
            Ok(()) => invalidate(
                v,
                "the opening's message key does not decrypt the envelope's message ciphertext to the committed message: the sender's envelope is bad".into(),
            ),
        },
        Err(e) => invalidate(v, format!("{e:#}")),
    }
}

pub fn verify(a: VerifyArgs) -> Result<()> {
    let tps = read_tp_cards(&a.tp)?;
    let mut ef = EnvelopeFile::open(&a.envelope)?;
    let receipt = read_receipt(&a.receipt)?;
    let opening = a.opening.as_deref().map(read_opening).transpose()?;
    let affidavits = a
        .affidavit
        .iter()
        .map(|p| read_affidavit(p))
        .collect::<Result<Vec<_>>>()?;
    let void_evidence = a
        .void_evidence
        .as_deref()
        .map(read_void_evidence)
        .transpose()?;
    let shown = a.message.as_deref().map(sha256_file).transpose()?;

    let envelope = ef.envelope.clone();
    let mut ciphertext = FileCiphertext::new(&mut ef);
    let mut v = judge_with_void(
        &tps,
        &envelope,
        &receipt,
        opening.as_ref(),
        &affidavits,
        void_evidence.as_ref().map(|evidence| VoidClaim {
            evidence,
            ciphertext: &mut ciphertext,
        }),
        shown,
    );
    check_files(&tps, &mut ef, &receipt, opening.as_ref(), &mut v);

    let deadline_rfc3339 = v.deadline.map(format_timestamp);
    print_human(&v, deadline_rfc3339.as_deref(), a.message.is_some());
    report::json(&JsonVerdict {
        verdict: &v,
        deadline_rfc3339,
    });
    if !v.valid {
        fail!(
            invalid,
            "the evidence is invalid: {}",
            v.reason.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(())
}

fn print_human(v: &Verdict, deadline: Option<&str>, message_shown: bool) {
    let name = |n: &Option<String>, id: &Option<String>| {
        format!(
            "{} ({})",
            display_name(n.as_deref().unwrap_or("?")),
            id.as_deref().unwrap_or("?")
        )
    };
    if v.valid {
        say!("VALID: the evidence proves delivery");
    } else {
        say!(
            "INVALID: {}",
            v.reason.as_deref().unwrap_or("no reason given")
        );
    }
    say!("sender:    {}", name(&v.sender_name, &v.sender));
    say!("recipient: {}", name(&v.recipient_name, &v.recipient));
    if let Some(id) = &v.envelope_id {
        say!("envelope:  {id}");
    }
    if let Some(d) = deadline {
        say!("deadline:  {d}");
    }
    if let Some(sha) = &v.message_sha256 {
        let checked = if message_shown && v.valid {
            " (the message shown matches)"
        } else {
            ""
        };
        say!("message:   SHA-256 {sha}{checked}");
    }
    match v.delivered_via {
        Some(DeliveredVia::Opening) => {
            say!("via:       the sender's opening (the TP was not involved)")
        }
        Some(DeliveredVia::TrustedParty) if v.resolved_by.len() > 1 => say!(
            "via:       the affidavits of {} trustees: {}",
            v.resolved_by.len(),
            v.resolved_by.join(", ")
        ),
        Some(DeliveredVia::TrustedParty) => say!("via:       the TP's affidavit"),
        None => {}
    }
    for c in &v.contradictions {
        say!("contradicted: {c}");
    }
    if let Some(why) = &v.accusation_refused {
        say!("refused:   {why}");
    }
}
