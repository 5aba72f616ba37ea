//! Everything that talks to the TP: Bob's `claim`, Alice's `receipts`, and
//! `unclaimed` after the deadline.
//!
//! The TP's address comes from the command line, so what answers there is not
//! trusted: its card must have the id the envelope names, and every affidavit
//! it returns is verified against that card before anything is written.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use rand_core::OsRng;
use serde_json::{json, Value};
use vtp_protocol::affidavit::Affidavit;
use vtp_protocol::answer::VerifiedOutcome;
use vtp_protocol::claim::Claim;
use vtp_protocol::envelope::VerifiedEnvelope;
use vtp_protocol::evidence::{judge_with_void, VoidClaim};
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::opening::{message_key_from_shares, unwrap_released_share};
use vtp_protocol::receipt::Receipt;
use vtp_protocol::shares::Share;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{
    FetchRequest, ReceiptPage, ResolvedReceipt, UnclaimedRequest, MAX_PAGE_RECEIPTS,
};
use vtp_protocol::wrap_proof::VoidEvidence;
use vtp_protocol::{Digest32, ProtocolError};

use super::exchange::refused;
use super::{display_name, party_json, put_time, tp_json, who};
use crate::cli::{ClaimArgs, ReceiptsArgs, UnclaimedArgs};
use crate::files::{
    check_writable, ensure_dir, read_receipt, read_secret_identity, read_tp_card, shown, shown_out,
    write_file, WriteMode,
};
use crate::stream::{DecryptError, EnvelopeFile, FileCiphertext};
use crate::timeparse::{format_timestamp, now};
use crate::tp_client::{TpClient, TpRefused};
use crate::{error, fail, note, report, say};

/// Fetch the TP's card and check it is a TP the envelope names (for a
/// group, one of its trustees).
pub(crate) fn envelope_tp(
    client: &TpClient,
    ef: &EnvelopeFile,
) -> Result<(TpCard, VerifiedEnvelope)> {
    let card = client.get_card()?;
    let h = &ef.envelope.header;
    if h.slot_of(&card.id()).is_none() {
        let named = h
            .trustees
            .iter()
            .map(|t| t.tp.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        fail!(
            invalid,
            "the TP at {} has id {}, but {} is for TP {named}: refusing to talk to the wrong TP",
            client.addr(),
            card.id(),
            shown(ef.path()),
        );
    }
    let venv = ef
        .envelope
        .verify(&card)
        .map_err(|e| refused(ef.path(), e))?;
    Ok((card, venv))
}

pub(crate) fn bad_affidavit(client: &TpClient, e: impl std::fmt::Display) -> anyhow::Error {
    error::invalid(format!(
        "the TP at {} returned an affidavit that does not verify ({e}); nothing was written",
        client.addr()
    ))
}

/// Where trustee `slot`'s affidavit goes: `path` itself with one TP,
/// `path.N` (N = slot + 1) for a group.
pub(crate) fn trustee_path(path: &Path, venv: &VerifiedEnvelope, slot: usize) -> PathBuf {
    if venv.header().is_group() {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{}", slot + 1));
        PathBuf::from(s)
    } else {
        path.to_owned()
    }
}

/// What one trustee answered to a claim.
enum TrusteeAnswer {
    Released {
        /// The share, or why the wrap does not open (the sender's doing).
        share: Result<Share, ProtocolError>,
        /// The wrap exactly as released, for the void evidence.
        wrap: Vec<u8>,
        affidavit: Box<Affidavit>,
        message_sha256: Digest32,
        at: u64,
    },
    Invalid,
}

/// Claim from the TP at `client`: verify its answer, save its affidavit,
/// unwrap the released share. Errors say what went wrong with this TP; a
/// wrap that does not open is an answer (the sender's fault, which the void
/// evidence proves).
fn claim_from(
    me: &IdentitySecret,
    client: &TpClient,
    card: &TpCard,
    venv: &VerifiedEnvelope,
    claim: &Claim,
    affidavit_out: Option<&Path>,
    mode: WriteMode,
) -> Result<(usize, TrusteeAnswer, String)> {
    let outcome = client
        .claim(claim.clone())?
        .verify(card, venv, &claim.body.receipt)
        .map_err(|e| bad_affidavit(client, e))?;
    let slot = outcome.slot();
    let saved = save_affidavit(
        outcome.affidavit(),
        affidavit_out
            .map(|p| trustee_path(p, venv, slot))
            .as_deref(),
        mode,
    )?;
    match outcome {
        VerifiedOutcome::Resolved {
            affidavit,
            wrapped_km,
            message_sha256,
            at,
            ..
        } => {
            let share = unwrap_released_share(me, venv, slot, &wrapped_km);
            Ok((
                slot,
                TrusteeAnswer::Released {
                    share,
                    wrap: wrapped_km,
                    affidavit: Box::new(affidavit),
                    message_sha256,
                    at,
                },
                saved,
            ))
        }
        VerifiedOutcome::Invalid { .. } => Ok((slot, TrusteeAnswer::Invalid, saved)),
    }
}

/// Bob's claim: the TP releases `E_B(k_m)` (and records Alice's receipt),
/// or certifies the envelope invalid. For a group envelope, the trustees
/// are asked in the order given until `threshold` of them released their
/// share of the key; each one that acts records Alice's receipt.
pub fn claim(a: ClaimArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    let mut ef = EnvelopeFile::open(&a.envelope)?;
    if ef.envelope.header.recipient != me.id() {
        return Err(refused(
            &a.envelope,
            format!(
                "this envelope is addressed to someone else, not to {}",
                who(me.card())
            ),
        ));
    }
    if let Some(p) = &a.affidavit_out {
        if ef.envelope.header.is_group() {
            for i in 0..ef.envelope.header.trustees.len() {
                let mut s = p.as_os_str().to_owned();
                s.push(format!(".{}", i + 1));
                check_writable(Path::new(&s), mode)?;
            }
        } else {
            check_writable(p, mode)?;
        }
    }
    let receipt = read_receipt(&a.receipt)?;
    let group = ef.envelope.header.is_group();
    let targets = a.tp.resolve(&ef.envelope.tp_cards)?;
    if !group && targets.len() != 1 {
        fail!(
            usage,
            "this envelope has one TP: give its card (--tp) or address (--tp-addr) once"
        );
    }
    // The envelope is checked against the cards it carries; each TP that
    // answers must be one of them (checked by `envelope_tp`).
    let venv = ef
        .envelope
        .verify_embedded()
        .map_err(|e| refused(&a.envelope, e))?;
    // The envelope is addressed to me, so a receipt that verifies against it
    // is signed by me: it is the one this identity issued.
    let vr = receipt.verify(&venv).map_err(|e| refused(&a.receipt, e))?;
    // Claim only with a message body that can be decrypted afterwards.
    ef.check_cm()?;
    let claim = Claim::new(&me, &venv, &vr, now());
    let h = venv.header();
    let (n, t) = (h.trustees.len(), h.threshold());

    let mut shares: Vec<Share> = Vec::new();
    // Every wrap released (opening or not) and the resolutions: the void
    // evidence if the key does not open the message.
    let mut released: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut resolutions: Vec<Affidavit> = Vec::new();
    let mut message_sha = None;
    let mut resolved_at = 0;
    let mut report: Vec<String> = Vec::new();
    let mut saved_notes: Vec<String> = Vec::new();
    let mut invalid = false;
    let mut asked = vec![false; n];
    let mut first_class = None;
    for target in &targets {
        if shares.len() >= t {
            break;
        }
        let client = &target.client;
        let addr = client.addr();
        let answer = envelope_tp(client, &ef).and_then(|(card, _)| {
            target.check(&card)?;
            let slot = h.slot_of(&card.id()).expect("envelope_tp checked");
            if asked[slot] {
                fail!(usage, "trustee {} was already asked", card.id());
            }
            asked[slot] = true;
            claim_from(
                &me,
                client,
                &card,
                &venv,
                &claim,
                a.affidavit_out.as_deref(),
                mode,
            )
        });
        // With one TP there is nobody else to ask: its error is the answer.
        let (slot, answer, saved) = match answer {
            Ok(x) => x,
            Err(e) if group => {
                first_class.get_or_insert(error::classify(&e));
                report.push(format!("{addr}: {e:#}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        saved_notes.push(saved);
        match answer {
            TrusteeAnswer::Released {
                share,
                wrap,
                affidavit,
                message_sha256,
                at,
            } => {
                match share {
                    Ok(share) => {
                        report.push(format!("{addr}: trustee {} released its share", slot + 1));
                        shares.push(share);
                    }
                    Err(e) => report.push(format!(
                        "{addr}: trustee {} released a share that does not open ({e}): the sender's envelope was bad",
                        slot + 1
                    )),
                }
                released.push((slot, wrap));
                resolutions.push(*affidavit);
                message_sha = Some(message_sha256);
                resolved_at = resolved_at.max(at);
            }
            TrusteeAnswer::Invalid => {
                invalid = true;
                report.push(format!(
                    "{addr}: trustee {} found its part of the envelope invalid",
                    slot + 1
                ));
            }
        }
    }
    let saved = saved_notes.join("; ");
    let cheated = |ef: &mut EnvelopeFile| {
        void_evidence(
            &me,
            &venv,
            ef,
            &receipt,
            &released,
            &resolutions,
            &a.out,
            mode,
            &saved,
        )
    };
    if shares.len() < t {
        if !group && invalid {
            fail!(
                invalid,
                "the TP found this envelope invalid: your receipt is void ({saved})"
            )
        }
        if released.len() >= t {
            return Err(cheated(&mut ef));
        }
        return Err(error::VtpError::new(
            first_class.unwrap_or(error::ErrorClass::Other),
            format!(
            "only {} of the {t} trustees needed released their share of the message key, so the message cannot be opened yet; {}{}",
            shares.len(),
            report.join("; "),
            if saved.is_empty() { String::new() } else { format!(" ({saved})") }
        )).into());
    }
    let message_sha256 = message_sha.expect("at least one share");
    let Ok(km) = message_key_from_shares(&venv, &shares) else {
        return Err(cheated(&mut ef));
    };
    match ef.decrypt_to(&km, message_sha256, &a.out, mode) {
        Ok(()) => {}
        Err(DecryptError::Other(e)) => return Err(error::rewrap(&e, format!("{e:#} ({saved})"))),
        Err(_) => return Err(cheated(&mut ef)),
    }
    if group {
        say!(
            "{} of the {n} trustees resolved envelope {} (needed {t}): {}",
            shares.len(),
            h.envelope_id(),
            report.join("; ")
        );
    } else {
        say!(
            "the TP resolved envelope {} at {}",
            h.envelope_id(),
            format_timestamp(resolved_at)
        );
    }
    say!(
        "message from {} written to {} (SHA-256 {message_sha256})",
        who(venv.sender_card()),
        shown_out(&a.out)
    );
    if a.affidavit_out.is_some() || group {
        say!("{saved}");
    }
    let affidavit_files: Vec<String> = match &a.affidavit_out {
        Some(p) => resolutions
            .iter()
            .filter_map(|r| h.slot_of(&r.body.tp))
            .map(|slot| shown_out(&trustee_path(p, &venv, slot)))
            .collect(),
        None => Vec::new(),
    };
    let mut j = json!({
        "envelope_id": h.envelope_id().to_hex(),
        "message_file": shown_out(&a.out),
        "message_sha256": message_sha256.to_string(),
        "sender": party_json(venv.sender_card()),
        "resolved_by": resolutions.iter().map(|r| r.body.tp.to_string()).collect::<Vec<_>>(),
        "affidavit_files": affidavit_files,
        "report": report,
    });
    put_time(&mut j, "resolved_at", resolved_at);
    report::json(&j);
    Ok(())
}

/// Where `vtp claim --out FILE` writes the void evidence: `FILE.void-evidence`.
fn void_evidence_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".void-evidence");
    PathBuf::from(s)
}

/// The released key does not open the message: prove it. Bob's proven ECDH
/// results for every wrap released go to `<out>.void-evidence`, weighed
/// first by the same judge `vtp verify` runs (so what is written is what a
/// judge accepts); the error says the sender cheated and where the
/// evidence is.
#[allow(clippy::too_many_arguments)]
fn void_evidence(
    me: &IdentitySecret,
    venv: &VerifiedEnvelope,
    ef: &mut EnvelopeFile,
    receipt: &Receipt,
    released: &[(usize, Vec<u8>)],
    resolutions: &[Affidavit],
    out: &Path,
    mode: WriteMode,
    saved: &str,
) -> anyhow::Error {
    let evidence = match VoidEvidence::build(me, venv, released, &mut OsRng) {
        Ok(e) => e,
        Err(e) => return error::invalid(format!("the key the TP released does not open the message, and no void evidence could be made ({e}); {saved}")),
    };
    let envelope = ef.envelope.clone();
    let mut ciphertext = FileCiphertext::new(ef);
    let v = judge_with_void(
        venv.tp_cards(),
        &envelope,
        receipt,
        None,
        resolutions,
        Some(VoidClaim {
            evidence: &evidence,
            ciphertext: &mut ciphertext,
        }),
        None,
    );
    let reason = v.reason.unwrap_or_default();
    if v.valid || !reason.starts_with("receipt void") {
        return error::invalid(format!(
            "the key the TP released does not open the message here, but the judge does not accept the void evidence ({}); nothing was written; {saved}",
            if v.valid { "it finds that the released key opens the message" } else { &reason }
        ));
    }
    let path = void_evidence_path(out);
    if let Err(e) = write_file(&path, &evidence.to_file(), mode) {
        return error::rewrap(
            &e,
            format!(
                "the sender cheated: {reason}; the void evidence could not be saved ({e:#}); {saved}"
            ),
        );
    }
    error::invalid(format!(
        "the sender cheated: {reason}; void evidence saved to {} (give it to `vtp verify --void-evidence` with the affidavits); {saved}",
        shown_out(&path)
    ))
}

/// Write the affidavit if a path was given; say where it is (or how to get it).
fn save_affidavit(aff: &Affidavit, path: Option<&Path>, mode: WriteMode) -> Result<String> {
    match path {
        Some(p) => {
            write_file(p, &aff.to_file(), mode)?;
            Ok(format!("affidavit saved to {}", shown_out(p)))
        }
        None => Ok(
            "claim again with --affidavit-out FILE to save the TP's affidavit: claims are idempotent"
                .into(),
        ),
    }
}

/// Checks a sender can make on a resolved receipt without its envelope
/// (see `ResolvedReceipt::verify`).
fn check_resolved(me: &IdentitySecret, card: &TpCard, item: &ResolvedReceipt) -> Result<()> {
    item.clone().verify(card, me.id())?;
    Ok(())
}

/// Receipts asked for per page (the TP caps it; its frame budget usually
/// stops a page sooner).
const PAGE_RECEIPTS: NonZeroU32 = match NonZeroU32::new(MAX_PAGE_RECEIPTS) {
    Some(n) => n,
    None => panic!("MAX_PAGE_RECEIPTS is not zero"),
};
/// A page the TP answers `Busy` (its per-identity rate limit) is asked for
/// again this many times, waiting [`BUSY_FIRST_WAIT`], then twice as long
/// each time.
const BUSY_RETRIES: u32 = 5;
const BUSY_FIRST_WAIT: Duration = Duration::from_millis(500);

/// One page of receipts after journal position `after_seq`, checked to be
/// the page asked for; returns it with its cursor.
fn fetch_page(
    client: &TpClient,
    me: &IdentitySecret,
    card: &TpCard,
    after_seq: u64,
) -> Result<(ReceiptPage, u64)> {
    let mut wait = BUSY_FIRST_WAIT;
    let mut retries = 0;
    let page = loop {
        let req = FetchRequest::new(me, card.id(), now(), after_seq, PAGE_RECEIPTS);
        match client.fetch_receipts(req) {
            Ok(page) => break page,
            Err(e) if TpRefused::is_busy(&e) && retries < BUSY_RETRIES => {
                note!(
                    "the TP is busy; asking again in {}",
                    humantime::format_duration(wait)
                );
                std::thread::sleep(wait);
                retries += 1;
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    };
    let cursor = page.check(after_seq).map_err(|e| {
        error::invalid(format!(
            "the TP at {} sent a bad answer: {e}",
            client.addr()
        ))
    })?;
    Ok((page, cursor))
}

/// Alice fetches the receipts the TP resolved for her envelopes, page by
/// page (a page is one bounded frame), saving each page before asking for
/// the next: an interrupted run keeps what it saved and says how to resume.
pub fn receipts(a: ReceiptsArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let target = a.tp.resolve(None)?;
    let client = &target.client;
    let card = client.get_card()?;
    target.check(&card)?;
    if let Some(p) = &a.expect_tp {
        let want = read_tp_card(p)?;
        if want.id() != card.id() {
            fail!(
                invalid,
                "the TP at {} has id {}, not the id {} of {}: refusing to talk to the wrong TP",
                client.addr(),
                card.id(),
                want.id(),
                shown(p)
            );
        }
    }
    say!("TP {} ({})", display_name(&card.body().name), card.id());
    ensure_dir(&a.out_dir)?;
    let mut after = a.since;
    let mut fetched = 0usize;
    let mut saved = 0usize;
    let mut bad = Vec::new();
    let mut listed: Vec<Value> = Vec::new();
    loop {
        let (page, cursor) = fetch_page(client, &me, &card, after).map_err(|e| {
            if fetched == 0 {
                e
            } else {
                error::rewrap(
                    &e,
                    format!(
                        "{e:#} (after {saved} receipts saved to {}: `--since {after}` resumes there)",
                        shown_out(&a.out_dir)
                    ),
                )
            }
        })?;
        for item in &page.receipts {
            if let Err(e) = check_resolved(&me, &card, item) {
                bad.push(format!(
                    "envelope {}: {e:#}",
                    item.affidavit.body.envelope_id
                ));
                continue;
            }
            listed.push(save_resolved(&a.out_dir, &card, item)?);
            saved += 1;
        }
        fetched += page.receipts.len();
        after = cursor;
        if !page.more {
            break;
        }
        note!(
            "{fetched} receipts fetched so far (through journal record #{after}); asking for more"
        );
    }
    say!(
        "{saved} receipt{} saved to {}",
        if saved == 1 { "" } else { "s" },
        shown_out(&a.out_dir)
    );
    if after > a.since {
        say!("next time, `--since {after}` fetches only the receipts recorded after these");
    }
    if let Some(first) = bad.first() {
        fail!(
            invalid,
            "{} of {fetched} items from the TP did not verify and were not saved; first: {first}",
            bad.len(),
        );
    }
    report::json(&json!({
        "tp": tp_json(&card),
        "out_dir": shown_out(&a.out_dir),
        "receipts": listed,
        "next_since": after,
    }));
    Ok(())
}

/// Write a checked receipt and its affidavit as `<envelope id>.receipt.vtp`
/// and `<envelope id>.affidavit.vtp` (for a group envelope
/// `.affidavit.vtp.N`, N this trustee's position), and list it.
fn save_resolved(dir: &Path, card: &TpCard, item: &ResolvedReceipt) -> Result<Value> {
    let id = item.affidavit.body.envelope_id.to_hex();
    let rpath: PathBuf = dir.join(format!("{id}.receipt.vtp"));
    // A group envelope has one affidavit per acting trustee.
    let apath: PathBuf = match item
        .receipt
        .body
        .trustees
        .iter()
        .position(|t| *t == card.id())
    {
        Some(i) if item.receipt.body.trustees.len() > 1 => {
            dir.join(format!("{id}.affidavit.vtp.{}", i + 1))
        }
        _ => dir.join(format!("{id}.affidavit.vtp")),
    };
    write_file(&rpath, &item.receipt.to_file(), WriteMode::public(true))?;
    write_file(&apath, &item.affidavit.to_file(), WriteMode::public(true))?;
    say!(
        "{}  envelope {id}  resolved at {}  (journal record #{})",
        display_name(item.receipt.recipient_card.name()),
        format_timestamp(item.affidavit.body.at),
        item.seq()
    );
    let mut j = json!({
        "envelope_id": id,
        "recipient": party_json(&item.receipt.recipient_card),
        "seq": item.seq(),
        "receipt_file": shown_out(&rpath),
        "affidavit_file": shown_out(&apath),
    });
    put_time(&mut j, "resolved_at", item.affidavit.body.at);
    Ok(j)
}

/// After the deadline: the TP certifies it never resolved this envelope.
/// For a group, each trustee asked certifies it for its own part; once more
/// than n - t did, fewer than t can ever have resolved, so the exchange was
/// never completed through the trustees.
pub fn unclaimed(a: UnclaimedArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let mode = WriteMode::public(a.force);
    let ef = EnvelopeFile::open(&a.envelope)?;
    let h = ef.envelope.header.clone();
    if me.id() != h.sender && me.id() != h.recipient {
        return Err(refused(
            &a.envelope,
            format!(
                "{} is neither the sender nor the recipient of this envelope",
                who(me.card())
            ),
        ));
    }
    let group = h.is_group();
    let targets = a.tp.resolve(&ef.envelope.tp_cards)?;
    if !group && targets.len() != 1 {
        fail!(
            usage,
            "this envelope has one TP: give its card (--tp) or address (--tp-addr) once"
        );
    }
    let (n, t) = (h.trustees.len(), h.threshold());
    let needed = n - t + 1;
    if !group {
        check_writable(&a.out, mode)?;
    }
    let mut certified = vec![false; n];
    let mut report = Vec::new();
    let mut venv_seen = None;
    let mut certs: Vec<Value> = Vec::new();
    let mut first_class = None;
    for target in &targets {
        if certified.iter().filter(|c| **c).count() >= needed {
            break;
        }
        let client = &target.client;
        let addr = client.addr();
        let got = (|| -> Result<(usize, VerifiedEnvelope, u64)> {
            let (card, venv) = envelope_tp(client, &ef)?;
            target.check(&card)?;
            let aff = client.unclaimed(UnclaimedRequest::new(&me, &venv, card.id(), now()))?;
            let slot = aff
                .verify_unclaimed(&card, &venv)
                .map_err(|e| bad_affidavit(client, e))?;
            let path = trustee_path(&a.out, &venv, slot);
            write_file(&path, &aff.to_file(), mode)?;
            Ok((slot, venv, aff.body.at))
        })();
        match got {
            Ok((slot, venv, at)) => {
                certified[slot] = true;
                let path = trustee_path(&a.out, &venv, slot);
                report.push(format!(
                    "{addr}: trustee {} certified it at {} (saved to {})",
                    slot + 1,
                    format_timestamp(at),
                    shown_out(&path)
                ));
                let mut c = json!({
                    "trustee": slot + 1,
                    "tp": h.trustees[slot].tp.to_string(),
                    "affidavit_file": shown_out(&path),
                });
                put_time(&mut c, "at", at);
                certs.push(c);
                if !group {
                    say!(
                        "the TP certifies that it never resolved envelope {} (deadline {}); statement made at {}",
                        venv.header().envelope_id(),
                        format_timestamp(venv.header().deadline),
                        format_timestamp(at)
                    );
                    say!("affidavit saved to {}", shown_out(&a.out));
                    unclaimed_json(&h, certs, true);
                    return Ok(());
                }
                venv_seen = Some(venv);
            }
            Err(e) if group => {
                first_class.get_or_insert(error::classify(&e));
                report.push(format!("{addr}: {e:#}"))
            }
            Err(e) => return Err(e),
        }
    }
    let count = certified.iter().filter(|c| **c).count();
    if count < needed {
        return Err(error::VtpError::new(
            first_class.unwrap_or(error::ErrorClass::Other),
            format!(
                "{count} of the {needed} trustee certificates needed (more than n - t = {}) were obtained; {}",
                n - t,
                report.join("; ")
            ),
        )
        .into());
    }
    let venv = venv_seen.expect("at least one certificate");
    say!(
        "{count} of the {n} trustees certify that they never resolved envelope {} (deadline {}): at most {} could have, fewer than the {t} needed, so the exchange was never completed through the trustees",
        venv.header().envelope_id(),
        format_timestamp(venv.header().deadline),
        n - count
    );
    for r in report {
        say!("  {r}");
    }
    unclaimed_json(&h, certs, true);
    Ok(())
}

fn unclaimed_json(h: &vtp_protocol::envelope::EnvelopeHeader, certs: Vec<Value>, unclaimed: bool) {
    let mut j = json!({
        "envelope_id": h.envelope_id().to_hex(),
        "unclaimed": unclaimed,
        "certificates": certs,
    });
    put_time(&mut j, "deadline", h.deadline);
    report::json(&j);
}
