//! Everything that talks to the TP: Bob's `claim`, Alice's `receipts`, and
//! `unclaimed` after the deadline.
//!
//! The TP's address comes from the command line, so what answers there is not
//! trusted: its card must have the id the envelope names, and every affidavit
//! it returns is verified against that card before anything is written.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use vtp_protocol::affidavit::{Affidavit, Statement};
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding::{domain, signing_digest};
use vtp_protocol::envelope::VerifiedEnvelope;
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::opening::unwrap_released_key;
use vtp_protocol::seal::message_commitment;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{ClaimOutcome, FetchRequest, ResolvedReceipt, UnclaimedRequest};
use vtp_protocol::ProtocolError;

use super::exchange::refused;
use super::{display_name, who};
use crate::cli::{ClaimArgs, ReceiptsArgs, UnclaimedArgs};
use crate::files::{
    check_writable, ensure_dir, read_receipt, read_secret_identity, read_tp_card, write_file,
    WriteMode,
};
use crate::stream::{DecryptError, EnvelopeFile};
use crate::timeparse::{format_timestamp, now};
use crate::tp_client::TpClient;

/// Fetch the TP's card and check it is the TP the envelope names.
pub(crate) fn envelope_tp(
    client: &TpClient,
    ef: &EnvelopeFile,
) -> Result<(TpCard, VerifiedEnvelope)> {
    let card = client.get_card()?;
    let want = ef.envelope.header.tp;
    if card.id() != want {
        bail!(
            "the TP at {} has id {}, but {} is for TP {}: refusing to talk to the wrong TP",
            client.addr(),
            card.id(),
            ef.path().display(),
            want
        );
    }
    let venv = ef
        .envelope
        .verify(&card)
        .map_err(|e| refused(ef.path(), e))?;
    Ok((card, venv))
}

pub(crate) fn bad_affidavit(client: &TpClient, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!(
        "the TP at {} returned an affidavit that does not verify ({e}); nothing was written",
        client.addr()
    )
}

/// Bob's claim: the TP releases `E_B(k_m)` (and records Alice's receipt),
/// or certifies the envelope invalid.
pub fn claim(a: ClaimArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    if let Some(p) = &a.affidavit_out {
        check_writable(p, mode)?;
    }
    let mut ef = EnvelopeFile::open(&a.envelope)?;
    if ef.envelope.header.recipient != me.id() {
        bail!(
            "{}: refused: this envelope is addressed to someone else, not to {}",
            a.envelope.display(),
            who(me.card())
        );
    }
    let receipt = read_receipt(&a.receipt)?;
    let client = TpClient::new(&a.tp.addr, a.tp.timeout);
    let (card, venv) = envelope_tp(&client, &ef)?;
    // The envelope is addressed to me, so a receipt that verifies against it
    // is signed by me: it is the one this identity issued.
    let vr = receipt.verify(&venv).map_err(|e| refused(&a.receipt, e))?;
    // Claim only with a message body that can be decrypted afterwards.
    ef.check_cm()?;

    let outcome = client.claim(Claim::new(&me, &venv, &vr, now()))?;
    match outcome {
        ClaimOutcome::Resolved {
            affidavit,
            wrapped_km,
        } => {
            affidavit
                .verify(&card, &venv)
                .map_err(|e| bad_affidavit(&client, e))?;
            let Statement::Resolved {
                message_sha256,
                commit_salt,
                wrapped_km_hash,
                ..
            } = affidavit.body.statement
            else {
                return Err(bad_affidavit(
                    &client,
                    format!("a {} statement for a resolved claim", affidavit.body.kind()),
                ));
            };
            if message_commitment(&commit_salt, &message_sha256) != venv.header().message_commitment
            {
                return Err(bad_affidavit(
                    &client,
                    "its message hash does not open the envelope's commitment",
                ));
            }
            if vtp_protocol::seal::wrapped_km_hash(&wrapped_km) != wrapped_km_hash {
                return Err(bad_affidavit(
                    &client,
                    "the released key is not the one it certifies",
                ));
            }
            let saved = save_affidavit(&affidavit, a.affidavit_out.as_deref(), mode)?;
            let bad_envelope = |e: &dyn std::fmt::Display| {
                anyhow!(
                    "the key the TP released does not open the message ({e}): the sender's envelope was bad; {saved}"
                )
            };
            let km = unwrap_released_key(&me, &venv, &wrapped_km).map_err(|e| bad_envelope(&e))?;
            ef.decrypt_to(&km, message_sha256, &a.out, mode)
                .map_err(|e| match e {
                    DecryptError::Other(e) => anyhow!("{e:#} ({saved})"),
                    e => bad_envelope(&e),
                })?;
            println!(
                "the TP resolved envelope {} at {}",
                venv.header().envelope_id(),
                format_timestamp(affidavit.body.at)
            );
            println!(
                "message from {} written to {} (SHA-256 {message_sha256})",
                who(venv.sender_card()),
                a.out.display()
            );
            if a.affidavit_out.is_some() {
                println!("{saved}");
            }
            Ok(())
        }
        ClaimOutcome::InvalidEnvelope { affidavit } => {
            affidavit
                .verify(&card, &venv)
                .map_err(|e| bad_affidavit(&client, e))?;
            if !matches!(affidavit.body.statement, Statement::InvalidEnvelope { .. }) {
                return Err(bad_affidavit(
                    &client,
                    format!(
                        "a {} statement for an invalid envelope",
                        affidavit.body.kind()
                    ),
                ));
            }
            let saved = save_affidavit(&affidavit, a.affidavit_out.as_deref(), mode)?;
            bail!("the TP found this envelope invalid: your receipt is void ({saved})")
        }
    }
}

/// Write the affidavit if a path was given; say where it is (or how to get it).
fn save_affidavit(aff: &Affidavit, path: Option<&Path>, mode: WriteMode) -> Result<String> {
    match path {
        Some(p) => {
            write_file(p, &aff.to_file(), mode)?;
            Ok(format!("affidavit saved to {}", p.display()))
        }
        None => Ok(
            "claim again with --affidavit-out FILE to save the TP's affidavit: claims are idempotent"
                .into(),
        ),
    }
}

/// Checks a sender can make on a resolved receipt without its envelope: the
/// TP signed the affidavit, it certifies a resolution of a receipt by this
/// very receipt, signed by its recipient, for an envelope from `me`.
fn check_resolved(me: &IdentitySecret, card: &TpCard, item: &ResolvedReceipt) -> Result<()> {
    let (r, aff) = (&item.receipt, &item.affidavit);
    if aff.body.tp != card.id() {
        bail!("affidavit from another TP");
    }
    card.verify(&aff.body.signing_digest(), &aff.signature, "TP affidavit")?;
    let Statement::Resolved { receipt_hash, .. } = aff.body.statement else {
        bail!("a {} affidavit, not a resolution", aff.body.kind());
    };
    if receipt_hash != r.hash() {
        bail!("the affidavit certifies another receipt");
    }
    if aff.body.sender != me.id() || r.body.sender != me.id() {
        bail!("not an envelope sent by this identity");
    }
    let b = &r.body;
    if b.envelope_id != aff.body.envelope_id
        || b.z_hash != aff.body.z_hash
        || b.recipient != aff.body.recipient
        || b.deadline != aff.body.deadline
        || b.tp != aff.body.tp
    {
        bail!("receipt and affidavit are about different envelopes");
    }
    if r.recipient_card.id() != b.recipient {
        return Err(ProtocolError::Mismatch {
            what: "receipt",
            detail: "signed by someone other than its recipient".into(),
        }
        .into());
    }
    r.recipient_card.verify(
        &signing_digest(domain::RECEIPT, b),
        &r.signature,
        "receipt (recipient's signature)",
    )?;
    Ok(())
}

/// Alice fetches the receipts the TP resolved for her envelopes.
pub fn receipts(a: ReceiptsArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let client = TpClient::new(&a.tp.addr, a.tp.timeout);
    let card = client.get_card()?;
    if let Some(p) = &a.expect_tp {
        let want = read_tp_card(p)?;
        if want.id() != card.id() {
            bail!(
                "the TP at {} has id {}, not the id {} of {}: refusing to talk to the wrong TP",
                client.addr(),
                card.id(),
                want.id(),
                p.display()
            );
        }
    }
    println!("TP {} ({})", display_name(&card.body().name), card.id());
    let items = client.fetch_receipts(FetchRequest::new(&me, card.id(), now()))?;
    ensure_dir(&a.out_dir)?;
    let mut saved = 0usize;
    let mut bad = Vec::new();
    for item in &items {
        if let Err(e) = check_resolved(&me, &card, item) {
            bad.push(format!(
                "envelope {}: {e:#}",
                item.affidavit.body.envelope_id
            ));
            continue;
        }
        let id = item.affidavit.body.envelope_id.to_hex();
        let rpath: PathBuf = a.out_dir.join(format!("{id}.receipt.vtp"));
        let apath: PathBuf = a.out_dir.join(format!("{id}.affidavit.vtp"));
        write_file(&rpath, &item.receipt.to_file(), WriteMode::public(true))?;
        write_file(&apath, &item.affidavit.to_file(), WriteMode::public(true))?;
        println!(
            "{}  envelope {id}  resolved at {}",
            display_name(item.receipt.recipient_card.name()),
            format_timestamp(item.affidavit.body.at)
        );
        saved += 1;
    }
    println!(
        "{saved} receipt{} saved to {}",
        if saved == 1 { "" } else { "s" },
        a.out_dir.display()
    );
    if let Some(first) = bad.first() {
        bail!(
            "{} of {} items from the TP did not verify and were not saved; first: {first}",
            bad.len(),
            items.len()
        );
    }
    Ok(())
}

/// After the deadline: the TP certifies it never resolved this envelope.
pub fn unclaimed(a: UnclaimedArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    let ef = EnvelopeFile::open(&a.envelope)?;
    let h = &ef.envelope.header;
    if me.id() != h.sender && me.id() != h.recipient {
        bail!(
            "{}: refused: {} is neither the sender nor the recipient of this envelope",
            a.envelope.display(),
            who(me.card())
        );
    }
    let client = TpClient::new(&a.tp.addr, a.tp.timeout);
    let (card, venv) = envelope_tp(&client, &ef)?;
    let aff = client.unclaimed(UnclaimedRequest::new(&me, &venv, now()))?;
    aff.verify(&card, &venv)
        .map_err(|e| bad_affidavit(&client, e))?;
    if aff.body.statement != Statement::Unclaimed {
        return Err(bad_affidavit(
            &client,
            format!("a {} statement, not an unclaimed one", aff.body.kind()),
        ));
    }
    write_file(&a.out, &aff.to_file(), mode)?;
    println!(
        "the TP certifies that it never resolved envelope {} (deadline {}); statement made at {}",
        venv.header().envelope_id(),
        format_timestamp(venv.header().deadline),
        format_timestamp(aff.body.at)
    );
    println!("affidavit saved to {}", a.out.display());
    Ok(())
}
