//! Contract signing end to end (Micali's "contract closing" and fair
//! contract signing): a real SoftHSM token, a real `tp-daemon`, parties acting through the
//! real `vtp contract …` commands. Cheating parties build their files with
//! the protocol crate and their real identity files.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use vtp_e2e::{cheat, vtp, Party, Run, Tp};
use vtp_protocol::contract::{envelope_nonce, Agreement, ContractSignature, Proposal};
use vtp_protocol::encoding::CmHasher;
use vtp_protocol::envelope;
use vtp_protocol::message::MessageSealer;
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::seal::Inside;
use vtp_protocol::Digest32;

fn p(path: &Path) -> String {
    path.display().to_string()
}

struct World {
    tp: Tp,
    alice: Party,
    bob: Party,
    contract: PathBuf,
}

fn world() -> World {
    let mut tp = Tp::init();
    tp.start();
    let root = tp.dir.path().to_path_buf();
    let alice = Party::new(&root, "alice");
    let bob = Party::new(&root, "bob");
    let contract = root.join("contract.txt");
    std::fs::write(
        &contract,
        b"Alice sells Bob her car for 1000 EUR, delivery in May.\n",
    )
    .unwrap();
    World {
        tp,
        alice,
        bob,
        contract,
    }
}

impl World {
    fn card(&self) -> String {
        p(&self.tp.card())
    }
    fn propose(&self, deadline: &str, name: &str) -> PathBuf {
        let out = self.alice.path(&format!("{name}.proposal"));
        vtp([
            "contract",
            "propose",
            "--as",
            &p(&self.alice.id),
            "--with",
            &p(&self.bob.card),
            "--tp",
            &self.card(),
            "--contract",
            &p(&self.contract),
            "--deadline",
            deadline,
            "--out",
            &p(&out),
        ])
        .ok();
        out
    }
    fn accept(&self, proposal: &Path, name: &str) -> Run {
        vtp([
            "contract",
            "accept",
            "--as",
            &p(&self.bob.id),
            "--with",
            &p(&self.alice.card),
            "--tp",
            &self.card(),
            "--contract",
            &p(&self.contract),
            &p(proposal),
            "--out",
            &p(&self.bob.path(&format!("{name}.agreement"))),
            "--min-time-left",
            "60s",
        ])
    }
    /// Propose and accept: the agreement file (Bob's copy; Alice gets the same bytes).
    fn agree(&self, deadline: &str, name: &str) -> PathBuf {
        let proposal = self.propose(deadline, name);
        self.accept(&proposal, name).ok();
        self.bob.path(&format!("{name}.agreement"))
    }
    fn sign(&self, agreement: &Path, name: &str) -> Run {
        vtp([
            "contract",
            "sign",
            "--as",
            &p(&self.alice.id),
            "--tp",
            &self.card(),
            "--contract",
            &p(&self.contract),
            &p(agreement),
            "--out",
            &p(&self.alice.path(&format!("{name}.env"))),
        ])
    }
    fn commit(&self, agreement: &Path, env: &Path, name: &str) -> Run {
        vtp([
            "contract",
            "commit",
            "--as",
            &p(&self.bob.id),
            "--tp",
            &self.card(),
            &p(agreement),
            &p(env),
            "--out",
            &p(&self.bob.path(&format!("{name}.receipt"))),
            "--min-time-left",
            "60s",
        ])
    }
    fn complete_alice(&self, agreement: &Path, env: &Path, receipt: &Path, name: &str) -> Run {
        vtp([
            "contract",
            "complete",
            "--as",
            &p(&self.alice.id),
            "--tp",
            &self.card(),
            &p(agreement),
            &p(env),
            &p(receipt),
            "--opening-out",
            &p(&self.alice.path(&format!("{name}.opening"))),
            "--out",
            &p(&self.alice.path(&format!("{name}.bundle"))),
        ])
    }
    fn complete_bob(
        &self,
        agreement: &Path,
        env: &Path,
        receipt: &Path,
        opening: &Path,
        name: &str,
    ) -> Run {
        vtp([
            "contract",
            "complete",
            "--as",
            &p(&self.bob.id),
            "--tp",
            &self.card(),
            &p(agreement),
            &p(env),
            &p(receipt),
            "--opening",
            &p(opening),
            "--out",
            &p(&self.bob.path(&format!("{name}.bundle"))),
        ])
    }
    fn claim(&self, agreement: &Path, env: &Path, receipt: &Path, name: &str) -> Run {
        vtp([
            "contract",
            "claim",
            "--as",
            &p(&self.bob.id),
            "--tp-addr",
            &self.tp.addr,
            &p(agreement),
            &p(env),
            &p(receipt),
            "--out",
            &p(&self.bob.path(&format!("{name}.bundle"))),
        ])
    }
    fn verify_with(&self, bundle: &Path, contract: &Path) -> (i32, serde_json::Value) {
        let r = vtp([
            "contract",
            "verify",
            "--tp",
            &self.card(),
            "--contract",
            &p(contract),
            &p(bundle),
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "verify --json printed no JSON ({e}): {} / {}",
                r.stdout, r.stderr
            )
        });
        (r.status, v)
    }
    fn verify(&self, bundle: &Path) -> (i32, serde_json::Value) {
        self.verify_with(bundle, &self.contract)
    }
    fn agreement_of(&self, path: &Path) -> Agreement {
        Agreement::from_file(&std::fs::read(path).unwrap()).unwrap()
    }

    /// A cheating Alice's envelope under an agreement: message `m`, and the
    /// inside of z altered by `tamper` after the header is fixed.
    fn crafted_envelope(
        &self,
        agreement: &Agreement,
        m: &[u8],
        out: &Path,
        tamper: impl FnOnce(&mut Inside),
    ) {
        self.crafted_envelope_at(agreement, m, out, cheat::now(), tamper)
    }

    /// [`Self::crafted_envelope`] made at `created` (an old exchange).
    fn crafted_envelope_at(
        &self,
        agreement: &Agreement,
        m: &[u8],
        out: &Path,
        created: u64,
        tamper: impl FnOnce(&mut Inside),
    ) {
        let me = cheat::identity(&self.alice.id);
        let tp = cheat::tp_card(&self.tp.card());
        let nonce = envelope_nonce(&agreement.id(), &tp.current_key().id);
        let prep = envelope::prepare(
            &me,
            &agreement.counterparty_card,
            &tp,
            agreement.body.deadline,
            created,
            nonce,
        )
        .unwrap();
        let mut s = MessageSealer::new(prep.message_key(), m.len() as u64);
        let cm = s.seal_chunk(m).unwrap();
        let mut h = CmHasher::default();
        h.update(&cm);
        let sha = Digest32(Sha256::digest(m).into());
        let env = prep
            .finish_cheating(&me, h.finish(), cm.len() as u64, sha, tamper)
            .unwrap();
        cheat::write_envelope(out, &env, &cm);
    }
}

/// Honest contract closing: executed directly, the TP never hears of it;
/// both parties hold a bundle any judge accepts offline.
#[test]
fn c01_honest_contract_is_executed_directly() {
    let w = world();
    let agreement = w.agree("1h", "c");
    w.sign(&agreement, "c").ok();
    let env = w.alice.path("c.env");
    w.commit(&agreement, &env, "c").ok();
    let receipt = w.bob.path("c.receipt");
    w.complete_alice(&agreement, &env, &receipt, "c").ok();
    w.complete_bob(&agreement, &env, &receipt, &w.alice.path("c.opening"), "c")
        .ok();
    assert_eq!(w.tp.journal_rows("resolved"), 0, "the TP stays invisible");
    let contract_sha = vtp_e2e::sha256_file(&w.contract);
    for bundle in [w.alice.path("c.bundle"), w.bob.path("c.bundle")] {
        let (code, v) = w.verify(&bundle);
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["executed"], true);
        assert_eq!(v["outcome"], "executed");
        assert_eq!(v["completed_via"], "opening");
        assert_eq!(v["contract_sha256"], contract_sha);
        assert_eq!(v["proposer_name"], "alice");
        assert_eq!(v["counterparty_name"], "bob");
    }
    // Human output, and a judge shown another contract says no.
    let r = vtp([
        "contract",
        "verify",
        "--tp",
        &w.card(),
        "--contract",
        &p(&w.contract),
        &p(&w.bob.path("c.bundle")),
    ])
    .ok();
    assert!(
        r.stdout.contains("EXECUTED") && r.stdout.contains("directly"),
        "{}",
        r.stdout
    );
    let other = w.tp.dir.path().join("other.txt");
    std::fs::write(&other, b"Alice sells Bob her car for 1 EUR.\n").unwrap();
    let (code, v) = w.verify_with(&w.bob.path("c.bundle"), &other);
    assert_ne!(code, 0);
    assert_eq!(v["valid"], false);
    // No clobbering without --force, one-line error.
    let r = w.complete_alice(&agreement, &env, &receipt, "c").fails();
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1);
}

/// Alice withholds her opening: Bob claims from the TP before T and the
/// contract is executed through the TP; Alice, with the receipt the TP
/// returns her, holds an executed bundle too.
#[test]
fn c02_withheld_opening_is_executed_through_the_tp() {
    let w = world();
    let agreement = w.agree("1h", "c");
    w.sign(&agreement, "c").ok();
    let env = w.alice.path("c.env");
    w.commit(&agreement, &env, "c").ok();
    let receipt = w.bob.path("c.receipt");
    let r = w.claim(&agreement, &env, &receipt, "c").ok();
    assert!(r.stdout.contains("EXECUTED through the TP"), "{}", r.stdout);
    assert_eq!(w.tp.journal_rows("resolved"), 1);
    let (code, v) = w.verify(&w.bob.path("c.bundle"));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["completed_via"], "trusted-party");
    assert!(v["tp_statement_at"].is_u64());
    // A repeated claim gets the same recorded answer.
    w.claim(&agreement, &env, &receipt, "again").ok();
    // Alice fetches Bob's receipt from the TP and completes on her side.
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
    let fetched = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| p(f).ends_with(".receipt.vtp"))
        .expect("receipt from the TP");
    w.complete_alice(&agreement, &env, &fetched, "c").ok();
    let (code, v) = w.verify(&w.alice.path("c.bundle"));
    assert_eq!(code, 0, "{v}");
}

/// Bob never commits (withholds his receipt): Alice is not bound. After T the
/// TP certifies the exchange was never completed; the judge says so.
#[test]
fn c03_without_bobs_receipt_it_is_never_completed() {
    let mut w = world();
    w.tp.kill();
    w.tp.short_claim_window();
    w.tp.start();
    let sent = vtp_e2e::cheat::now();
    let agreement = w.agree(Tp::SHORT_DEADLINE, "c");
    w.sign(&agreement, "c").ok();
    let env = w.alice.path("c.env");
    // Alice cannot complete without Bob's receipt (a junk one is refused).
    let stray = w.bob.path("stray.receipt");
    std::fs::write(&stray, b"VTP\x05\x01junk").unwrap();
    w.complete_alice(&agreement, &env, &stray, "c").fails();
    // Before T: no certificate.
    let cert = w.alice.path("c.never");
    let unclaimed = |w: &World| {
        vtp([
            "contract",
            "unclaimed",
            "--as",
            &p(&w.alice.id),
            "--tp-addr",
            &w.tp.addr,
            &p(&agreement),
            &p(&env),
            "--out",
            &p(&cert),
        ])
    };
    unclaimed(&w).fails();
    // Past T on the TP's clock (labelled test hook: the skew ahead, and the
    // claim window passed).
    w.tp.pass_short_deadline(sent);
    let r = unclaimed(&w).ok();
    assert!(r.stdout.contains("never completed"), "{}", r.stdout);
    let (code, v) = w.verify(&cert);
    assert_ne!(code, 0, "not executed is not success");
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["executed"], false);
    assert_eq!(v["outcome"], "never-completed");
    assert_eq!(w.tp.journal_rows("resolved"), 0);
}

/// The TP dilemma of Bao, Wang, Zhou and Zhu: Alice sends a malformed z and
/// gets Bob's receipt. The TP need not choose between binding Bob without
/// Alice and deciding blind: it signs an invalid-envelope affidavit, the
/// judge says "not executed, receipt void", and Alice has no opening.
#[test]
fn c04_tp_dilemma_malformed_z_voids_bobs_receipt() {
    let w = world();
    let agreement = w.agree("1h", "c");
    let a = w.agreement_of(&agreement);
    let alice = cheat::identity(&w.alice.id);
    let tp = cheat::tp_card(&w.tp.card());
    let sig = ContractSignature::sign(&alice, &a.verify(&tp).unwrap()).unwrap();
    let env = w.alice.path("bad.env");
    w.crafted_envelope(&a, &sig.to_file(), &env, |inside| {
        inside.recipient = inside.sender;
    });
    // Bob cannot tell before the TP decrypts: he commits.
    w.commit(&agreement, &env, "c").ok();
    let receipt = w.bob.path("c.receipt");
    // Alice holds Bob's receipt but cannot produce a valid opening.
    let r = w.complete_alice(&agreement, &env, &receipt, "c").fails();
    assert!(r.stderr.contains("refused"), "{}", r.stderr);
    assert!(!w.alice.path("c.bundle").exists());
    // Bob claims: invalid envelope, evidence kept.
    let r = w.claim(&agreement, &env, &receipt, "c").fails();
    assert!(
        r.stderr.contains("invalid") && r.stderr.contains("void"),
        "{}",
        r.stderr
    );
    let bundle = w.bob.path("c.bundle");
    let (code, v) = w.verify(&bundle);
    assert_ne!(code, 0);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["outcome"], "receipt-void");
    assert!(v["reason"].as_str().unwrap().contains("void"), "{v}");
    assert_eq!(w.tp.journal_rows("resolved"), 0);
}

/// Replays: an old agreement whose T passed; an envelope of another
/// agreement; Alice's contract signature lifted from another agreement; a
/// second contract under the same agreement.
#[test]
fn c05_replayed_agreements_and_signatures_are_refused() {
    let w = world();
    let alice = cheat::identity(&w.alice.id);
    let bob = cheat::identity(&w.bob.id);
    let tp = cheat::tp_card(&w.tp.card());
    let contract_sha = Digest32(Sha256::digest(std::fs::read(&w.contract).unwrap()).into());

    // (a) An agreement both signed last week, T long passed.
    let then = cheat::now() - 7 * 24 * 3600;
    let old_p = Proposal::new(
        &alice,
        bob.card(),
        &tp,
        contract_sha,
        then + 3600,
        then,
        [7; 32],
    )
    .unwrap();
    let old_proposal = w.alice.path("old.proposal");
    std::fs::write(&old_proposal, old_p.to_file()).unwrap();
    let r = w.accept(&old_proposal, "old").fails();
    assert!(r.stderr.contains("deadline"), "{}", r.stderr);
    let old = old_p
        .accept(&bob, &tp, contract_sha, alice.id(), then + 10, 60)
        .unwrap();
    let old_agreement = w.bob.path("old.agreement");
    std::fs::write(&old_agreement, old.to_file()).unwrap();
    let r = w.sign(&old_agreement, "old").fails();
    assert!(r.stderr.contains("deadline"), "{}", r.stderr);
    let old_env = w.alice.path("old.env");
    w.crafted_envelope_at(
        &old,
        &ContractSignature::sign(&alice, &old.verify(&tp).unwrap())
            .unwrap()
            .to_file(),
        &old_env,
        then + 20,
        |_| {},
    );
    let r = w.commit(&old_agreement, &old_env, "old").fails();
    assert!(r.stderr.contains("deadline"), "{}", r.stderr);

    // Two live agreements on the same contract (and the same deadline, so
    // the check that fires is the one about the exchange, whatever second
    // each was made in).
    let deadline = cheat::rfc3339(cheat::now() + 3600);
    let x1 = w.agree(&deadline, "x1");
    let x2 = w.agree(&deadline, "x2");
    let (a1, a2) = (w.agreement_of(&x1), w.agreement_of(&x2));
    w.sign(&x1, "x1").ok();
    let env1 = w.alice.path("x1.env");

    // (b) The exchange of agreement 1 offered under agreement 2: refused.
    let r = w.commit(&x2, &env1, "x2").fails();
    assert!(
        r.stderr.contains("not the exchange of this agreement"),
        "{}",
        r.stderr
    );

    // (c) Alice's signature from agreement 1 lifted into agreement 2's
    // exchange: Bob commits blind, but his `complete` finds the message is
    // not a signature under his agreement, and no judge counts it.
    let lifted = ContractSignature::sign(&alice, &a1.verify(&tp).unwrap()).unwrap();
    let env2 = w.alice.path("x2-lifted.env");
    w.crafted_envelope(&a2, &lifted.to_file(), &env2, |_| {});
    w.commit(&x2, &env2, "x2").ok();
    let receipt2 = w.bob.path("x2.receipt");
    let venv = cheat::read_envelope(&env2).0.verify(&tp).unwrap();
    let vr = Receipt::from_file(&std::fs::read(&receipt2).unwrap())
        .unwrap()
        .verify(&venv)
        .unwrap();
    let opening = w.alice.path("x2.opening");
    std::fs::write(
        &opening,
        Opening::reveal(&alice, &venv, &vr).unwrap().to_file(),
    )
    .unwrap();
    let r = w
        .complete_bob(&x2, &env2, &receipt2, &opening, "x2")
        .fails();
    assert!(
        r.stderr.contains("NOT executed") && r.stderr.contains("another agreement"),
        "{}",
        r.stderr
    );
    assert!(!w.bob.path("x2.bundle").exists());
    // Alice's own `complete` refuses to bundle it too.
    let r = w.complete_alice(&x2, &env2, &receipt2, "x2a").fails();
    assert!(r.stderr.contains("another agreement"), "{}", r.stderr);

    // (d) A second contract under agreement 1: `sign` refuses it.
    let other = w.tp.dir.path().join("other.txt");
    std::fs::write(&other, b"Bob gives Alice his house.\n").unwrap();
    let r = vtp([
        "contract",
        "sign",
        "--as",
        &p(&w.alice.id),
        "--tp",
        &w.card(),
        "--contract",
        &p(&other),
        &p(&x1),
        "--out",
        &p(&w.alice.path("x1-other.env")),
    ])
    .fails();
    assert!(r.stderr.contains("another contract"), "{}", r.stderr);

    // The honest exchange of agreement 1 still works, and signing again
    // yields the same z (one exchange per agreement).
    w.sign(&x1, "x1-again").ok();
    assert_eq!(
        cheat::read_envelope(&env1).0.zs,
        cheat::read_envelope(&w.alice.path("x1-again.env")).0.zs
    );
    w.commit(&x1, &env1, "x1").ok();
    w.complete_alice(&x1, &env1, &w.bob.path("x1.receipt"), "x1")
        .ok();
    let (code, v) = w.verify(&w.alice.path("x1.bundle"));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["agreement_id"], a1.id().to_string());
}

/// Audit finding 1 for contracts: Alice re-signs her contract envelope's
/// header with the deadline in the past and asks the TP, through the mail
/// command `vtp unclaimed`, for a certificate about it. Bob's
/// `vtp contract claim` of the genuine envelope still executes the contract.
#[test]
fn c08_forged_unclaimed_does_not_block_the_contract_claim() {
    let w = world();
    let agreement = w.agree("2h", "f");
    w.sign(&agreement, "f").ok();
    let env = w.alice.path("f.env");
    w.commit(&agreement, &env, "f").ok();
    let receipt = w.bob.path("f.receipt");
    let (e, cm) = cheat::read_envelope(&env);
    let now = cheat::now();
    let forged = cheat::resign(&w.alice.id, &e, |h| {
        h.deadline = now - 30;
        h.created = now - 90;
    });
    let fenv = w.alice.path("forged.env");
    cheat::write_envelope(&fenv, &forged, &cm);
    let _ = vtp([
        "unclaimed",
        "--as",
        &p(&w.alice.id),
        "--tp-addr",
        &w.tp.addr,
        &p(&fenv),
        "--out",
        &p(&w.alice.path("forged.unclaimed")),
    ]);
    w.claim(&agreement, &env, &receipt, "f").ok();
    let (code, v) = w.verify(&w.bob.path("f.bundle"));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["executed"], true, "{v}");
}
