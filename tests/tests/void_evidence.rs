//! A wrap Bob cannot open voids Alice's receipt, end to end: a real
//! `tp-daemon` on its own SoftHSM token, parties acting through the real
//! `vtp` CLI.
//!
//! - Alice puts a wrap Bob cannot open into z. The TP resolves (it cannot
//!   see the wrap) and Alice fetches her receipt and affidavit, which alone
//!   prove delivery. Bob's `vtp claim` writes void evidence; with it, `vtp
//!   verify` on Alice's own receipt and affidavit says the receipt is void.
//! - With an honest envelope Bob cannot do the same: evidence built from the
//!   wrap the TP really released is refused as a false accusation, and
//!   evidence with a forged shared point is refused outright.

use std::path::{Path, PathBuf};

use vtp_e2e::{cheat, vtp, Party, Run, Tp};
use vtp_protocol::claim::Claim;
use vtp_protocol::envelope::VerifiedEnvelope;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::wire::{self, ClaimOutcome, Request, Response};
use vtp_protocol::wrap_proof::VoidEvidence;

fn p(path: &Path) -> String {
    path.display().to_string()
}

struct World {
    tp: Tp,
    alice: Party,
    bob: Party,
    msg: PathBuf,
}

fn world() -> World {
    let mut tp = Tp::init();
    tp.start();
    let root = tp.dir.path().to_path_buf();
    let alice = Party::new(&root, "alice");
    let bob = Party::new(&root, "bob");
    let msg = root.join("message.txt");
    std::fs::write(&msg, b"The keys are under the mat.\n".repeat(3000)).unwrap();
    World {
        tp,
        alice,
        bob,
        msg,
    }
}

impl World {
    fn accept(&self, env: &Path) -> PathBuf {
        let receipt = self.bob.path("receipt.vtp");
        vtp([
            "accept",
            "--as",
            &p(&self.bob.id),
            "--tp",
            &p(&self.tp.card()),
            &p(env),
            "--out",
            &p(&receipt),
            "--min-time-left",
            "60s",
        ])
        .ok();
        receipt
    }
    fn claim(&self, env: &Path, receipt: &Path, out: &Path, affidavit: &Path) -> Run {
        vtp([
            "claim",
            "--as",
            &p(&self.bob.id),
            "--tp-addr",
            &self.tp.addr,
            &p(env),
            &p(receipt),
            "--out",
            &p(out),
            "--affidavit-out",
            &p(affidavit),
        ])
    }
    fn verify_json(
        &self,
        env: &Path,
        receipt: &Path,
        extra: &[String],
    ) -> (i32, serde_json::Value) {
        let mut args = vec![
            "verify".to_string(),
            "--tp".into(),
            p(&self.tp.card()),
            p(env),
            p(receipt),
            "--json".into(),
        ];
        args.extend(extra.iter().cloned());
        let r = vtp(args);
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim())
            .unwrap_or_else(|e| panic!("no JSON verdict ({e}): {} / {}", r.stdout, r.stderr));
        (r.status, v)
    }
    fn venv(&self, env: &Path) -> VerifiedEnvelope {
        let (e, _) = cheat::read_envelope(env);
        e.verify_trusted(&[cheat::tp_card(&self.tp.card())])
            .unwrap()
    }
    /// The wrap the TP released to Bob for this claim (claims are
    /// idempotent: the TP answers with what it recorded).
    fn released_wrap(&self, venv: &VerifiedEnvelope, receipt: &Path) -> Vec<u8> {
        let bob = cheat::identity(&self.bob.id);
        let rcpt = Receipt::from_file(&std::fs::read(receipt).unwrap()).unwrap();
        let vr = rcpt.verify(venv).unwrap();
        let claim = Claim::new(&bob, venv, &vr, cheat::now());
        let bytes = self
            .tp
            .raw_frame(&wire::encode_request(&Request::Claim(claim)))
            .unwrap();
        let Response::Claim(ClaimOutcome::Resolved { wrapped_km, .. }) =
            wire::decode_response(&bytes).unwrap()
        else {
            panic!("the TP resolves the claim");
        };
        wrapped_km
    }
}

/// The audit's gap closed: a wrap Bob cannot open gets a resolution, and
/// Alice's receipt and affidavit alone prove delivery; Bob's void evidence
/// makes the same files void.
#[test]
fn a_wrap_bob_cannot_open_voids_alices_receipt() {
    let w = world();
    let env = w.alice.path("cheat.env");
    let msg = std::fs::read(&w.msg).unwrap();
    cheat::envelope_with_bad_inside(
        &w.alice.id,
        &w.bob.card,
        &w.tp.card(),
        &msg,
        3600,
        &env,
        |inside| {
            let last = inside.wrapped_km.len() - 1;
            inside.wrapped_km[last] ^= 1;
        },
    );
    let receipt = w.accept(&env); // Bob cannot tell: the wrap is for the TP path
    let out = w.bob.path("message.txt");
    let aff = w.bob.path("message.aff");
    let r = w.claim(&env, &receipt, &out, &aff).fails();
    let evidence = w.bob.path("message.txt.void-evidence");
    let err = r.stderr.trim();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("the sender cheated"), "{err}");
    assert!(
        err.contains(&format!("void evidence saved to {}", evidence.display())),
        "{err}"
    );
    assert!(err.contains("receipt void"), "{err}");
    assert!(!out.exists(), "no message was written");
    assert!(
        evidence.exists() && aff.exists(),
        "evidence and affidavit kept"
    );

    // Alice's side: her receipt and affidavit from the TP.
    let dir = w.alice.path("receipts");
    vtp([
        "receipts",
        "--as",
        &p(&w.alice.id),
        "--tp-addr",
        &w.tp.addr,
        "--out-dir",
        &p(&dir),
    ])
    .ok();
    let id = w.venv(&env).header().envelope_id().to_hex();
    let a_receipt = dir.join(format!("{id}.receipt.vtp"));
    let a_aff = dir.join(format!("{id}.affidavit.vtp"));
    // Without Bob's evidence they prove delivery (what the gap allowed).
    let (code, v) = w.verify_json(&env, &a_receipt, &["--affidavit".into(), p(&a_aff)]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["valid"], true, "{v}");
    // With it, the receipt is void, naming the step and the sender.
    let with_evidence = [
        "--affidavit".to_string(),
        p(&a_aff),
        "--void-evidence".into(),
        p(&evidence),
    ];
    let (code, v) = w.verify_json(&env, &a_receipt, &with_evidence);
    assert_ne!(code, 0, "{v}");
    assert_eq!(v["valid"], false, "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "receipt void: the message key the TP released for the recipient does not open the message (the sender's fault): "
        ) && reason.contains("does not decrypt with the recipient's proven ECDH result"),
        "{reason}"
    );
    // The human verdict says the same.
    let mut args = vec![
        "verify".to_string(),
        "--tp".into(),
        p(&w.tp.card()),
        p(&env),
        p(&a_receipt),
    ];
    args.extend(with_evidence);
    let r = vtp(args).fails();
    assert!(
        r.stdout.starts_with("INVALID: receipt void"),
        "{}",
        r.stdout
    );
}

/// An honest envelope: Bob gets the message, and void evidence built from
/// the very wrap the TP released is refused (the released key opens the
/// message); a forged shared point gets the evidence refused outright.
#[test]
fn with_an_honest_envelope_bob_cannot_void_the_receipt() {
    let w = world();
    let env = w.alice.path("honest.env");
    vtp([
        "send",
        "--as",
        &p(&w.alice.id),
        "--to",
        &p(&w.bob.card),
        "--tp",
        &p(&w.tp.card()),
        "--deadline",
        "1h",
        "--in",
        &p(&w.msg),
        "--out",
        &p(&env),
    ])
    .ok();
    let receipt = w.accept(&env);
    let out = w.bob.path("message.txt");
    let aff = w.bob.path("message.aff");
    w.claim(&env, &receipt, &out, &aff).ok();
    assert!(out.exists());
    assert!(!w.bob.path("message.txt.void-evidence").exists());

    // Bob tries anyway, with the protocol crate and his real identity.
    let venv = w.venv(&env);
    let wrap = w.released_wrap(&venv, &receipt);
    let bob = cheat::identity(&w.bob.id);
    let ev = VoidEvidence::build(&bob, &venv, &[(0, wrap)], &mut rand_core::OsRng).unwrap();
    let fake = w.bob.path("fake.void-evidence");
    std::fs::write(&fake, ev.to_file()).unwrap();
    let (code, v) = w.verify_json(
        &env,
        &receipt,
        &[
            "--affidavit".into(),
            p(&aff),
            "--void-evidence".into(),
            p(&fake),
        ],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["valid"], true, "{v}");
    let why = v["accusation_refused"].as_str().unwrap();
    assert!(why.contains("false accusation"), "{why}");

    // A shared point that is not Bob's ECDH result (his encryption key
    // itself, say) is not covered by his proof.
    let mut forged = ev.clone();
    forged.wraps[0].shared.as_mut().unwrap().point = cheat::card(&w.bob.card).enc_key().clone();
    std::fs::write(&fake, forged.to_file()).unwrap();
    let (code, v) = w.verify_json(
        &env,
        &receipt,
        &[
            "--affidavit".into(),
            p(&aff),
            "--void-evidence".into(),
            p(&fake),
        ],
    );
    assert_ne!(code, 0, "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("void evidence") && reason.contains("is not the recipient's ECDH result"),
        "{reason}"
    );
}
