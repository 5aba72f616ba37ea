//! Contract signing over the certified-mail exchange (`vtp contract …`).
//!
//! The exchange itself is the ordinary one: the same envelope (A1), receipt
//! (B1), opening (A2/B2), claim and unclaimed paths, built with the same
//! protocol calls and file helpers as `send`, `accept`, `reveal`, `open`,
//! `claim` and `unclaimed`. What this module adds is the preliminary
//! agreement around it, the binding checks (the envelope must be the
//! agreement's exchange; the delivered message must be Alice's signature of
//! the agreed contract under this agreement) and the bundle a judge checks
//! offline with `vtp contract verify`. See `docs/contract.md`.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{anyhow, Result};
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use vtp_protocol::answer::VerifiedOutcome;
use vtp_protocol::claim::Claim;
use vtp_protocol::contract::{
    decrypt_small, envelope_nonce, judge_bundle, ContractBundle, ContractSignature,
    ContractVerdict, Outcome, Proposal, VerifiedAgreement,
};
use vtp_protocol::envelope::{self, Envelope, VerifiedEnvelope};
use vtp_protocol::evidence::DeliveredVia;
use vtp_protocol::identity::IdentityCard;
use vtp_protocol::opening::{unwrap_released_key, Opening};
use vtp_protocol::receipt::{Receipt, VerifiedReceipt};
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::UnclaimedRequest;
use vtp_protocol::{Digest32, ProtocolError};

use super::exchange::{refused, time_left};
use super::tp_path::{bad_affidavit, envelope_tp};
use super::{display_name, who};
use crate::cli::{
    ContractAcceptArgs, ContractClaimArgs, ContractCommand, ContractCommitArgs,
    ContractCompleteArgs, ContractProposeArgs, ContractSignArgs, ContractUnclaimedArgs,
    ContractVerifyArgs,
};
use crate::files::{
    check_writable, io_error, read_agreement, read_card, read_contract_bundle, read_opening,
    read_proposal, read_receipt, read_secret_identity, write_file, AtomicFile, WriteMode,
};
use crate::stream::{seal_pass, sha256_file, EnvelopeFile};
use crate::timeparse::{format_timestamp, now};
use crate::{error, fail, report, say};

pub fn run(c: ContractCommand) -> Result<()> {
    match c {
        ContractCommand::Propose(a) => propose(a),
        ContractCommand::Accept(a) => accept(a),
        ContractCommand::Sign(a) => sign(a),
        ContractCommand::Commit(a) => commit(a),
        ContractCommand::Complete(a) => complete(a),
        ContractCommand::Claim(a) => claim(a),
        ContractCommand::Unclaimed(a) => unclaimed(a),
        ContractCommand::Verify(a) => verify(a),
    }
}

fn deadline_error(deadline: u64, e: ProtocolError) -> anyhow::Error {
    match e {
        ProtocolError::Deadline(_) => {
            error::usage(format!("--deadline {}: {e}", format_timestamp(deadline)))
        }
        e => error::invalid(format!("cannot make the proposal: {e}")),
    }
}

/// Proposer: sign the preliminary agreement.
fn propose(a: ContractProposeArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let with = read_card(&a.with)?;
    let tp = super::target::read_tp_card_arg(&a.tp)?;
    let contract = sha256_file(&a.contract)?;
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    let now = now();
    let deadline = a.deadline.resolve(now);
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    let p = Proposal::new(&me, &with, &tp, contract, deadline, now, nonce)
        .map_err(|e| deadline_error(deadline, e))?;
    write_file(&a.out, &p.to_file(), mode)?;
    say!(
        "proposal for agreement {} written to {}",
        p.body.id(),
        a.out.display()
    );
    say!("contract:     SHA-256 {contract}");
    say!("counterparty: {}", who(&with));
    say!(
        "deadline:     {} ({})",
        format_timestamp(deadline),
        time_left(deadline, now)
    );
    say!("send it to the counterparty; when the agreement comes back, run `vtp contract sign`");
    Ok(())
}

/// Counterparty: check and countersign.
fn accept(a: ContractAcceptArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let with = read_card(&a.with)?;
    let tp = super::target::read_tp_card_arg(&a.tp)?;
    let contract = sha256_file(&a.contract)?;
    let p = read_proposal(&a.proposal)?;
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    let now = now();
    let agreement = p
        .accept(
            &me,
            &tp,
            contract,
            with.id(),
            now,
            a.min_time_left.as_secs(),
        )
        .map_err(|e| refused(&a.proposal, e))?;
    write_file(&a.out, &agreement.to_file(), mode)?;
    let b = &agreement.body;
    say!(
        "agreement {} written to {}",
        agreement.id(),
        a.out.display()
    );
    say!("contract: SHA-256 {}", b.contract_sha256);
    say!("proposer: {}", who(&agreement.proposer_card));
    say!(
        "deadline: {} ({})",
        format_timestamp(b.deadline),
        time_left(b.deadline, now)
    );
    say!("send it to the proposer; nobody is bound to the contract until the exchange completes");
    Ok(())
}

/// The agreement checked against the TP card, with this identity's role.
fn checked_agreement(path: &Path, tp: &TpCard) -> Result<VerifiedAgreement> {
    read_agreement(path)?
        .verify(tp)
        .map_err(|e| refused(path, e))
}

/// Proposer: her contract signature, in the agreement's envelope (A1).
fn sign(a: ContractSignArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let tp = super::target::read_tp_card_arg(&a.tp)?;
    let contract = sha256_file(&a.contract)?;
    let va = checked_agreement(&a.agreement, &tp)?;
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    let b = va.body().clone();
    if b.proposer != me.id() {
        fail!(
            invalid,
            "{}: refused: {} is not the proposer of this agreement; only the proposer signs the contract in the exchange",
            a.agreement.display(),
            who(me.card())
        );
    }
    if b.contract_sha256 != contract {
        fail!(
            invalid,
            "{}: refused: the agreement is for another contract (SHA-256 {}), not {} (SHA-256 {contract})",
            a.agreement.display(),
            b.contract_sha256,
            a.contract.display()
        );
    }
    let sig = ContractSignature::sign(&me, &va).map_err(|e| refused(&a.agreement, e))?;
    let now = now();
    let nonce = envelope_nonce(&va.id(), &tp.current_key().id);
    let prep = envelope::prepare(
        &me,
        &va.agreement().counterparty_card,
        &tp,
        b.deadline,
        now,
        nonce,
    )
    .map_err(|e| refused(&a.agreement, e))?;
    let env = seal_message(prep, &me, &sig.to_file(), &a.out, mode)?;
    say!(
        "contract signed; envelope {} written to {}",
        env.envelope_id(),
        a.out.display()
    );
    say!("to:       {}", who(&va.agreement().counterparty_card));
    say!(
        "deadline: {} ({})",
        format_timestamp(b.deadline),
        time_left(b.deadline, now)
    );
    say!("send the envelope to the counterparty; when their receipt comes back, run `vtp contract complete`");
    Ok(())
}

/// A1 for a small in-memory message, with the two passes of
/// `stream::seal_envelope_file` (the first for the digests the header signs).
fn seal_message(
    prep: envelope::PreparedEnvelope,
    me: &vtp_protocol::identity::IdentitySecret,
    message: &[u8],
    out: &Path,
    mode: WriteMode,
) -> Result<Envelope> {
    let km = zeroize::Zeroizing::new(*prep.message_key());
    let len = message.len() as u64;
    let first = seal_pass(&km, &mut &message[..], out, len, None, out)?;
    let env = prep
        .finish(me, first.cm_hash, first.cm_len, first.message_sha256)
        .map_err(|e| anyhow!("cannot make the envelope: {e}"))?;
    let mut dest = AtomicFile::create_vtp(out, mode)?;
    dest.write_all(&env.to_file_prefix())
        .map_err(|e| io_error(out, format!("cannot write: {e}")))?;
    let mut w = io::BufWriter::new(&mut dest);
    seal_pass(&km, &mut &message[..], out, len, Some(&mut w), out)?;
    w.flush()
        .map_err(|e| io_error(out, format!("cannot write: {e}")))?;
    drop(w);
    dest.commit()?;
    Ok(env)
}

/// An envelope file checked as the agreement's exchange, and its `c_m`.
struct Exchange {
    venv: VerifiedEnvelope,
    cm: Vec<u8>,
}

fn open_exchange(path: &Path, tp: &TpCard, va: &VerifiedAgreement) -> Result<Exchange> {
    let mut ef = EnvelopeFile::open(path)?;
    let venv = ef.envelope.verify(tp).map_err(|e| refused(path, e))?;
    va.check_envelope(venv.header())
        .map_err(|e| refused(path, e))?;
    ef.check_cm()?;
    // check_envelope bounded c_m to the size of a contract signature.
    let cm = ef.read_cm()?;
    Ok(Exchange { venv, cm })
}

/// Counterparty: the receipt that is his commitment (B1).
fn commit(a: ContractCommitArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let tp = super::target::read_tp_card_arg(&a.tp)?;
    let va = checked_agreement(&a.agreement, &tp)?;
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    if va.body().counterparty != me.id() {
        fail!(
            invalid,
            "{}: refused: {} is not the counterparty of this agreement",
            a.agreement.display(),
            who(me.card())
        );
    }
    let mut ef = EnvelopeFile::open(&a.envelope)?;
    let venv = ef
        .envelope
        .verify(&tp)
        .map_err(|e| refused(&a.envelope, e))?;
    let now = now();
    venv.check_for_recipient(
        me.id(),
        std::slice::from_ref(&tp),
        now,
        a.min_time_left.as_secs(),
    )
    .map_err(|e| refused(&a.envelope, e))?;
    va.check_envelope(venv.header())
        .map_err(|e| refused(&a.envelope, e))?;
    ef.check_cm()?;
    let receipt = Receipt::issue(&me, &venv, now);
    write_file(&a.out, &receipt.to_file(), mode)?;
    let d = venv.header().deadline;
    say!(
        "committed to contract SHA-256 {} under agreement {}",
        va.body().contract_sha256,
        va.id()
    );
    say!(
        "receipt written to {}: send it to the proposer, then `vtp contract complete` their opening, or `vtp contract claim` from the TP before {} ({})",
        a.out.display(),
        format_timestamp(d),
        time_left(d, now)
    );
    Ok(())
}

/// The delivered message must be Alice's signature under this agreement;
/// otherwise Bob's receipt commits him to nothing.
fn contract_signature(
    va: &VerifiedAgreement,
    km: &[u8; 32],
    cm: &[u8],
    what: &Path,
) -> Result<ContractSignature> {
    let not = |why: String| {
        error::invalid(format!(
            "{}: the contract is NOT executed: {why}; the receipt does not bind the counterparty (keep the agreement, envelope, receipt and opening as evidence)",
            what.display()
        ))
    };
    let m = decrypt_small(km, cm)?
        .ok_or_else(|| not("the message key does not decrypt the envelope's message".into()))?;
    let sig = ContractSignature::from_file(&m)
        .map_err(|e| not(format!("the message is not a contract signature ({e})")))?;
    sig.verify(va).map_err(|e| not(e.to_string()))?;
    Ok(sig)
}

/// Judge a bundle we are about to write, and write it.
fn write_bundle(
    tp: &TpCard,
    va: &VerifiedAgreement,
    bundle: &ContractBundle,
    out: &Path,
    mode: WriteMode,
) -> Result<ContractVerdict> {
    let v = judge_bundle(tp, va.body().contract_sha256, bundle);
    if !v.valid {
        fail!(
            invalid,
            "the evidence does not verify ({}); nothing was written",
            v.reason.as_deref().unwrap_or("no reason given")
        );
    }
    write_file(out, &bundle.to_file(), mode)?;
    Ok(v)
}

fn bundle(
    va: &VerifiedAgreement,
    x: &Exchange,
    receipt: Option<&VerifiedReceipt>,
) -> ContractBundle {
    ContractBundle {
        agreement: va.agreement().clone(),
        envelope: x.venv.envelope().clone(),
        message_ciphertext: x.cm.clone(),
        receipt: receipt.map(|r| r.receipt().clone()),
        opening: None,
        affidavit: None,
        contract_signature: None,
    }
}

/// Either party: complete directly (A2 for the proposer, B2 for the
/// counterparty) and write the executed bundle.
fn complete(a: ContractCompleteArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let tp = super::target::read_tp_card_arg(&a.tp)?;
    let va = checked_agreement(&a.agreement, &tp)?;
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    let proposer = va.body().proposer == me.id();
    if !proposer && va.body().counterparty != me.id() {
        fail!(
            invalid,
            "{}: refused: {} is not a party to this agreement",
            a.agreement.display(),
            who(me.card())
        );
    }
    match (proposer, &a.opening, &a.opening_out) {
        (true, None, Some(p)) => check_writable(p, mode)?,
        (false, Some(_), None) => {}
        (true, ..) => fail!(usage, "the proposer completes with --opening-out FILE (the opening to send to the counterparty)"),
        (false, ..) => fail!(usage, "the counterparty completes with --opening FILE (the proposer's opening)"),
    }
    let x = open_exchange(&a.envelope, &tp, &va)?;
    let receipt = read_receipt(&a.receipt)?;
    let vr = receipt
        .verify(&x.venv)
        .map_err(|e| refused(&a.receipt, e))?;
    let opening = match &a.opening {
        None => Opening::reveal(&me, &x.venv, &vr).map_err(|e| refused(&a.envelope, e))?,
        Some(p) => read_opening(p)?,
    };
    let what = a.opening.as_deref().unwrap_or(&a.envelope);
    let opened = opening
        .check(&x.venv, &receipt.recipient_card)
        .map_err(|e| refused(what, e))?;
    let sig = contract_signature(&va, &opened.message_key, &x.cm, what)?;
    let mut b = bundle(&va, &x, Some(&vr));
    b.opening = Some(opening.clone());
    b.contract_signature = Some(sig);
    let v = write_bundle(&tp, &va, &b, &a.out, mode)?;
    debug_assert!(v.executed());
    if let Some(p) = &a.opening_out {
        write_file(p, &opening.to_file(), mode)?;
    }
    let other: &IdentityCard = if proposer {
        &receipt.recipient_card
    } else {
        x.venv.sender_card()
    };
    say!(
        "contract SHA-256 {} EXECUTED directly with {}",
        va.body().contract_sha256,
        who(other)
    );
    say!("executed-contract bundle written to {}", a.out.display());
    if let Some(p) = &a.opening_out {
        say!(
            "opening written to {}: send it to the counterparty",
            p.display()
        );
    }
    Ok(())
}

/// Counterparty: the TP completes the exchange, or certifies the envelope
/// invalid (then his receipt is void).
fn claim(a: ContractClaimArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    let agreement = read_agreement(&a.agreement)?;
    if agreement.body.counterparty != me.id() {
        fail!(
            invalid,
            "{}: refused: {} is not the counterparty of this agreement",
            a.agreement.display(),
            who(me.card())
        );
    }
    let ef0 = EnvelopeFile::open(&a.envelope)?;
    let target = a.tp.resolve(ef0.envelope.tp_cards.first())?;
    let client = &target.client;
    let (card, _) = envelope_tp(client, &ef0)?;
    target.check(&card)?;
    drop(ef0);
    let va = agreement
        .verify(&card)
        .map_err(|e| refused(&a.agreement, e))?;
    let x = open_exchange(&a.envelope, &card, &va)?;
    let receipt = read_receipt(&a.receipt)?;
    let vr = receipt
        .verify(&x.venv)
        .map_err(|e| refused(&a.receipt, e))?;
    let outcome = client
        .claim(Claim::new(&me, &x.venv, &vr, now()))?
        .verify(&card, &x.venv, vr.receipt())
        .map_err(|e| bad_affidavit(client, e))?;
    let mut b = bundle(&va, &x, Some(&vr));
    match outcome {
        VerifiedOutcome::Resolved {
            affidavit,
            wrapped_km,
            ..
        } => {
            let km = unwrap_released_key(&me, &x.venv, &wrapped_km).map_err(|e| {
                error::invalid(format!("the key the TP released does not open the message ({e}): the proposer's envelope was bad; claim again to get the affidavit (claims are idempotent)"))
            })?;
            let sig = contract_signature(&va, &km, &x.cm, &a.envelope)?;
            b.affidavit = Some(affidavit.clone());
            b.contract_signature = Some(sig);
            write_bundle(&card, &va, &b, &a.out, mode)?;
            say!(
                "the TP completed the exchange at {}: contract SHA-256 {} EXECUTED through the TP with {}",
                format_timestamp(affidavit.body.at),
                va.body().contract_sha256,
                who(x.venv.sender_card())
            );
            say!("executed-contract bundle written to {}", a.out.display());
            Ok(())
        }
        VerifiedOutcome::Invalid { affidavit, .. } => {
            b.affidavit = Some(affidavit);
            write_bundle(&card, &va, &b, &a.out, mode)?;
            fail!(
                invalid,
                "the TP found the proposer's envelope invalid: the contract is NOT executed and your receipt is void (evidence saved to {})",
                a.out.display()
            )
        }
    }
}

/// After the deadline: the TP certifies it never completed the exchange.
fn unclaimed(a: ContractUnclaimedArgs) -> Result<()> {
    let me = read_secret_identity(&a.identity)?;
    let mode = WriteMode::public(a.force);
    check_writable(&a.out, mode)?;
    let agreement = read_agreement(&a.agreement)?;
    let body = &agreement.body;
    if me.id() != body.proposer && me.id() != body.counterparty {
        fail!(
            invalid,
            "{}: refused: {} is not a party to this agreement",
            a.agreement.display(),
            who(me.card())
        );
    }
    let ef0 = EnvelopeFile::open(&a.envelope)?;
    let target = a.tp.resolve(ef0.envelope.tp_cards.first())?;
    let client = &target.client;
    let (card, _) = envelope_tp(client, &ef0)?;
    target.check(&card)?;
    drop(ef0);
    let va = agreement
        .verify(&card)
        .map_err(|e| refused(&a.agreement, e))?;
    let x = open_exchange(&a.envelope, &card, &va)?;
    let aff = client.unclaimed(UnclaimedRequest::new(&me, &x.venv, card.id(), now()))?;
    aff.verify_unclaimed(&card, &x.venv)
        .map_err(|e| bad_affidavit(client, e))?;
    let mut b = bundle(&va, &x, None);
    b.affidavit = Some(aff);
    write_bundle(&card, &va, &b, &a.out, mode)?;
    say!(
        "the TP certifies that it never completed the exchange of agreement {} (deadline {}): the contract was not executed through the TP",
        va.id(),
        format_timestamp(va.body().deadline)
    );
    say!("never-completed bundle written to {}", a.out.display());
    Ok(())
}

#[derive(Serialize)]
struct JsonVerdict<'a> {
    #[serde(flatten)]
    verdict: &'a ContractVerdict,
    executed: bool,
    deadline_rfc3339: String,
}

/// Judge: exit 0 only if the bundle proves the contract executed.
fn verify(a: ContractVerifyArgs) -> Result<()> {
    let tp = super::target::read_tp_card_arg(&a.tp)?;
    let contract: Digest32 = sha256_file(&a.contract)?;
    let b = read_contract_bundle(&a.bundle)?;
    let v = judge_bundle(&tp, contract, &b);
    report::json(&JsonVerdict {
        verdict: &v,
        executed: v.executed(),
        deadline_rfc3339: format_timestamp(v.deadline),
    });
    print_human(&v);
    let reason = v.reason.as_deref().unwrap_or("no reason given");
    match (v.valid, v.outcome) {
        (true, Some(Outcome::Executed)) => Ok(()),
        (true, _) => fail!(invalid, "the contract was not executed: {reason}"),
        (false, _) => fail!(invalid, "the evidence is invalid: {reason}"),
    }
}

fn print_human(v: &ContractVerdict) {
    match (v.valid, v.outcome) {
        (true, Some(Outcome::Executed)) => say!(
            "EXECUTED: both parties signed the contract ({})",
            match v.completed_via {
                Some(DeliveredVia::TrustedParty) => "completed through the TP",
                _ => "completed directly, without the TP",
            }
        ),
        (true, Some(Outcome::NeverCompleted)) => say!("NOT EXECUTED: never completed"),
        (true, Some(Outcome::ReceiptVoid)) => {
            say!("NOT EXECUTED: the counterparty's receipt is void")
        }
        _ => say!(
            "INVALID: {}",
            v.reason.as_deref().unwrap_or("no reason given")
        ),
    }
    if v.valid && v.outcome != Some(Outcome::Executed) {
        if let Some(r) = &v.reason {
            say!("why:          {r}");
        }
    }
    say!("contract:     SHA-256 {}", v.contract_sha256);
    say!(
        "proposer:     {} ({})",
        display_name(&v.proposer_name),
        v.proposer
    );
    say!(
        "counterparty: {} ({})",
        display_name(&v.counterparty_name),
        v.counterparty
    );
    say!("agreement:    {}", v.agreement_id);
    say!("agreed at:    {}", format_timestamp(v.agreed_at));
    say!("deadline:     {}", format_timestamp(v.deadline));
    if let Some(t) = v.committed_at {
        say!("receipt at:   {}", format_timestamp(t));
    }
    if let Some(t) = v.tp_statement_at {
        say!("TP statement: {}", format_timestamp(t));
    }
}
