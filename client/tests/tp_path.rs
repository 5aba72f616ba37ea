//! `claim`, `receipts` and `unclaimed` against an in-process FAKE TP that
//! speaks the real framing (4-byte length + `vtp_protocol::wire`) and resolves
//! with host keys, like `protocol/tests/flow.rs`. It stands in for the TP
//! daemon only to test the client's side of the conversation (framing, card
//! check, affidavit checks, decryption, error reporting); the real daemon and
//! token are exercised by the end-to-end tests.

mod common;
mod exits;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use common::{now, read_frame, write_frame, TestTp, World};
use exits::*;
use rand_core::{OsRng, RngCore};
use sha2::{Digest as _, Sha256};
use vtp_protocol::affidavit::{Affidavit, AffidavitBody, ChainPosition};
use vtp_protocol::decide::{ClaimContext, ClaimDecision, Recorded, UnclaimedDecision};
use vtp_protocol::encoding::{domain, signing_digest, CmHasher};
use vtp_protocol::envelope::{self, Envelope};
use vtp_protocol::identity::{test_sign, IdentityCard, IdentitySecret};
use vtp_protocol::message::MessageSealer;
use vtp_protocol::seal::Z_NONCE;
use vtp_protocol::wire::{
    decode_request, encode_response, ClaimOutcome, ErrorCode, PageBuilder, Request,
    ResolvedReceipt, Response, WireError,
};
use vtp_protocol::Digest32;

#[derive(Default)]
struct Journal {
    outcomes: HashMap<Digest32, ClaimOutcome>,
    resolved: Vec<ResolvedReceipt>,
    /// Records written so far (the stand-in keeps no real chain).
    records: u64,
}

impl Journal {
    fn next_position(&mut self) -> ChainPosition {
        self.records += 1;
        ChainPosition {
            seq: self.records,
            prev: Digest32([self.records as u8; 32]),
        }
    }
}

struct FakeTp {
    tp: TestTp,
    /// The card served by GetCard (another TP's, to test the id check).
    served_card: vtp_protocol::tp_card::TpCard,
    journal: Mutex<Journal>,
}

fn refuse(code: ErrorCode, e: impl ToString) -> Response {
    Response::Error(WireError {
        code,
        message: e.to_string(),
    })
}

impl FakeTp {
    fn sign(&self, body: AffidavitBody) -> Affidavit {
        let signature = self.tp.sign_digest(&body.signing_digest());
        Affidavit { body, signature }
    }

    fn handle(&self, req: Request) -> Response {
        let card = &self.tp.card;
        let now = now();
        match req {
            Request::GetCard => Response::Card(self.served_card.clone()),
            Request::Claim(c) => {
                let ac = match c.authenticate(card, now) {
                    Ok(ac) => ac,
                    Err(e) => return refuse(ErrorCode::Rejected, e),
                };
                let mut j = self.journal.lock().unwrap();
                if let Some(o) = j.outcomes.get(&ac.z_hash()) {
                    return Response::Claim(o.clone());
                }
                let vc = match ac.decide(card, &Recorded::nothing(), &ClaimContext::OPEN, now) {
                    ClaimDecision::Resolve(vc) => vc,
                    other => return refuse(ErrorCode::Deadline, format!("{other:?}")),
                };
                let z = vc.z();
                let plain = self
                    .tp
                    .rsa
                    .decrypt(rsa::Oaep::new::<sha1::Sha1>(), &z.wrapped_key)
                    .ok()
                    .and_then(|kz| {
                        Aes256Gcm::new_from_slice(&kz)
                            .ok()?
                            .decrypt(
                                &Z_NONCE.into(),
                                Payload {
                                    msg: &z.sealed,
                                    aad: &vc.aad(),
                                },
                            )
                            .ok()
                    });
                let outcome = match plain.map(|p| vc.check_inside(&p)) {
                    Some(Ok(inside)) => {
                        let affidavit =
                            self.sign(AffidavitBody::resolved(&vc, &inside, j.next_position()));
                        j.resolved.push(ResolvedReceipt {
                            receipt: vc.receipt().receipt().clone(),
                            affidavit: affidavit.clone(),
                        });
                        ClaimOutcome::Resolved {
                            affidavit,
                            wrapped_km: inside.wrapped_km.clone(),
                        }
                    }
                    _ => ClaimOutcome::InvalidEnvelope {
                        affidavit: self
                            .sign(AffidavitBody::invalid_envelope(&vc, j.next_position())),
                    },
                };
                j.outcomes.insert(vc.claim().z_hash(), outcome.clone());
                Response::Claim(outcome)
            }
            // Pages of one receipt each (a one-byte frame budget), so that
            // the client's paging runs with a handful of receipts.
            Request::FetchReceipts(r) => match r.verify(card, now) {
                Ok(who) => {
                    let mut page = PageBuilder::new(1, r.body.max_receipts);
                    let j = self.journal.lock().unwrap();
                    let mut mine = j
                        .resolved
                        .iter()
                        .filter(|x| x.receipt.body.sender == who && x.seq() > r.body.after_seq);
                    let more = mine.any(|x| page.push(x.clone()).is_err());
                    Response::Receipts(page.finish(more))
                }
                Err(e) => refuse(ErrorCode::Rejected, e),
            },
            // The stand-in decides unclaimed requests as if its clock
            // stood at the deadline (the real TP signs only from then on),
            // so tests need not wait for one.
            Request::Unclaimed(u) => match u.authenticate(card, now) {
                Ok(au) => {
                    let mut j = self.journal.lock().unwrap();
                    if j.outcomes.contains_key(&au.subject().z_hash) {
                        return refuse(ErrorCode::Rejected, "this envelope was resolved");
                    }
                    let deadline = au.envelope().header().deadline;
                    match au.decide(&Recorded::nothing(), deadline) {
                        UnclaimedDecision::Certify(cert) => Response::Unclaimed(
                            self.sign(AffidavitBody::unclaimed(&cert, j.next_position())),
                        ),
                        other => refuse(ErrorCode::Rejected, format!("{other:?}")),
                    }
                }
                Err(e) => refuse(ErrorCode::Rejected, e),
            },
        }
    }
}

/// Serve `GetCard` with the card of TP `served_seed`, resolve as TP 0x42.
fn spawn_tp(served_seed: u8) -> String {
    let fake = Arc::new(FakeTp {
        tp: TestTp::new(0x42),
        served_card: TestTp::new(served_seed).card,
        journal: Mutex::default(),
    });
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let mut s = s.unwrap();
            let Ok(body) = read_frame(&mut s) else {
                continue;
            };
            let resp = match decode_request(&body) {
                Ok(req) => fake.handle(req),
                Err(e) => refuse(ErrorCode::Malformed, e),
            };
            let _ = write_frame(&mut s, &encode_response(&resp));
        }
    });
    addr
}

fn secret(w: &World, name: &str) -> IdentitySecret {
    IdentitySecret::from_file(&w.read(name)).unwrap()
}

fn seal(km: &[u8; 32], msg: &[u8]) -> Vec<u8> {
    let mut s = MessageSealer::new(km, msg.len() as u64);
    let (mut out, mut off) = (Vec::new(), 0);
    while let Some(n) = s.next_len() {
        out.extend(s.seal_chunk(&msg[off..off + n]).unwrap());
        off += n;
    }
    out
}

fn cm_hash(cm: &[u8]) -> Digest32 {
    let mut h = CmHasher::default();
    h.update(cm);
    h.finish()
}

fn write_envelope(w: &World, name: &str, env: &Envelope, cm: &[u8]) {
    let mut f = env.to_file_prefix();
    f.extend_from_slice(cm);
    w.write(name, &f);
}

#[test]
fn claim_then_receipts_then_judge() {
    let w = World::new();
    let tp = spawn_tp(0x42);
    let msg = vec![0x5au8; 200_000];
    w.send("a", &msg, "1h");
    w.vtp(&[
        "accept",
        "--as",
        "bob.id",
        "--tp",
        "tp.card",
        "a.env",
        "--out",
        "a.receipt",
    ])
    .ok();
    // Alice never reveals: Bob claims.
    let claim = [
        "claim",
        "--as",
        "bob.id",
        "--tp-addr",
        &tp,
        "a.env",
        "a.receipt",
        "--out",
        "a.out",
        "--affidavit-out",
        "a.aff",
    ];
    let r = w.vtp(&claim).ok();
    assert!(r.stdout.contains("resolved"), "{}", r.stdout);
    assert_eq!(w.read("a.out"), msg);
    // Claims are idempotent: again, same affidavit.
    let first = w.read("a.aff");
    let mut again = claim.to_vec();
    again.push("--force");
    w.vtp(&again).ok();
    assert_eq!(w.read("a.aff"), first);

    // A judge accepts the affidavit as proof of delivery of exactly msg.
    let r = w
        .vtp(&[
            "verify",
            "--tp",
            "tp.card",
            "a.env",
            "a.receipt",
            "--affidavit",
            "a.aff",
            "--message",
            "a.msg",
            "--json",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["delivered_via"], "trusted-party");

    // Alice fetches her receipt and affidavit from the TP.
    let r = w
        .vtp(&[
            "receipts",
            "--as",
            "alice.id",
            "--tp-addr",
            &tp,
            "--out-dir",
            "got",
        ])
        .ok();
    assert!(r.stdout.contains("1 receipt saved"), "{}", r.stdout);
    assert!(r.stdout.contains("bob  envelope"), "{}", r.stdout);
    let names: Vec<String> = std::fs::read_dir(w.path("got"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let receipt = names.iter().find(|n| n.ends_with(".receipt.vtp")).unwrap();
    let aff = names
        .iter()
        .find(|n| n.ends_with(".affidavit.vtp"))
        .unwrap();
    w.vtp(&[
        "verify",
        "--tp",
        "tp.card",
        "a.env",
        &format!("got/{receipt}"),
        "--affidavit",
        &format!("got/{aff}"),
    ])
    .ok();
    w.vtp(&[
        "receipts",
        "--as",
        "alice.id",
        "--tp-addr",
        &tp,
        "--out-dir",
        "got",
        "--expect-tp",
        "other-tp.card",
    ])
    .fails_as(INVALID, "refusing to talk to the wrong TP");
    // Bob has no receipts as a sender.
    let r = w
        .vtp(&[
            "receipts",
            "--as",
            "bob.id",
            "--tp-addr",
            &tp,
            "--out-dir",
            "bobs",
        ])
        .ok();
    assert!(r.stdout.contains("0 receipts saved"), "{}", r.stdout);

    // The envelope was resolved: no unclaimed certificate for it.
    w.vtp(&[
        "unclaimed",
        "--as",
        "alice.id",
        "--tp-addr",
        &tp,
        "a.env",
        "--out",
        "u",
    ])
    .fails_as(TP_REFUSED, "TP refused: this envelope was resolved");
}

#[test]
fn receipts_come_in_pages_and_resume_with_since() {
    let w = World::new();
    let tp = spawn_tp(0x42);
    let receipts = |extra: &[&str]| {
        let mut args = vec![
            "receipts",
            "--as",
            "alice.id",
            "--tp-addr",
            &tp,
            "--out-dir",
            "got",
        ];
        args.extend_from_slice(extra);
        w.vtp(&args).ok()
    };
    let claim = |tag: &str| {
        w.exchange(tag, tag.as_bytes());
        let (env, rc, out) = (
            format!("{tag}.env"),
            format!("{tag}.receipt"),
            format!("{tag}.out"),
        );
        w.vtp(&[
            "claim",
            "--as",
            "bob.id",
            "--tp-addr",
            &tp,
            &env,
            &rc,
            "--out",
            &out,
        ])
        .ok();
    };
    for tag in ["a", "b", "c"] {
        claim(tag);
    }
    // The stand-in TP sends one receipt per page: three pages.
    let r = receipts(&[]);
    assert!(r.stdout.contains("3 receipts saved"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("1 receipts fetched so far (through journal record #1)")
            && r.stderr
                .contains("2 receipts fetched so far (through journal record #2)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("`--since 3` fetches only the receipts"),
        "{}",
        r.stdout
    );
    // Nothing new since #3; then one more.
    let r = receipts(&["--since", "3"]);
    assert!(r.stdout.contains("0 receipts saved"), "{}", r.stdout);
    claim("d");
    let r = receipts(&["--since", "3"]);
    assert!(
        r.stdout.contains("1 receipt saved") && r.stdout.contains("journal record #4"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.is_empty(), "one page, no progress: {}", r.stderr);
}

#[test]
fn claim_refuses_the_wrong_tp_and_foreign_receipts() {
    let w = World::new();
    w.exchange("a", b"hi");
    let impostor = spawn_tp(0x43);
    w.vtp(&[
        "claim",
        "--as",
        "bob.id",
        "--tp-addr",
        &impostor,
        "a.env",
        "a.receipt",
        "--out",
        "m",
    ])
    .fails_as(INVALID, "refusing to talk to the wrong TP");
    let tp = spawn_tp(0x42);
    w.vtp(&[
        "claim",
        "--as",
        "chris.id",
        "--tp-addr",
        &tp,
        "a.env",
        "a.receipt",
        "--out",
        "m",
    ])
    .fails_as(INVALID, "addressed to someone else");
    w.exchange("b", b"other");
    w.vtp(&[
        "claim",
        "--as",
        "bob.id",
        "--tp-addr",
        &tp,
        "a.env",
        "b.receipt",
        "--out",
        "m",
    ])
    .fails_as(INVALID, "b.receipt: refused: receipt does not match");
    // Nobody listening.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    w.vtp(&[
        "claim",
        "--as",
        "bob.id",
        "--tp-addr",
        &dead.to_string(),
        "a.env",
        "a.receipt",
        "--out",
        "m",
    ])
    .fails_as(TP_UNREACHABLE, "cannot reach the TP");
    assert!(!w.path("m").exists());
}

#[test]
fn invalid_envelope_voids_the_receipt() {
    let w = World::new();
    let tp = spawn_tp(0x42);
    w.send("a", b"hello", "1h");
    // Alice cheats: she corrupts z and signs the header over it.
    let alice = secret(&w, "alice.id");
    let bytes = w.read("a.env");
    let n = envelope::Envelope::file_prefix_len(&bytes).unwrap();
    let mut env = Envelope::from_file_prefix(&bytes[..n]).unwrap();
    let last = env.zs[0].sealed.len() - 1;
    env.zs[0].sealed[last] ^= 1;
    env.header.trustees[0].z_hash = env.zs[0].hash();
    env.signature = test_sign(&alice, &signing_digest(domain::ENVELOPE, &env.header));
    write_envelope(&w, "bad.env", &env, &bytes[n..]);

    w.vtp(&[
        "accept",
        "--as",
        "bob.id",
        "--tp",
        "tp.card",
        "bad.env",
        "--out",
        "bad.receipt",
    ])
    .ok();
    w.vtp(&[
        "reveal",
        "--as",
        "alice.id",
        "bad.env",
        "bad.receipt",
        "--out",
        "o",
    ])
    .fails_as(INVALID, "refused");
    w.vtp(&[
        "claim",
        "--as",
        "bob.id",
        "--tp-addr",
        &tp,
        "bad.env",
        "bad.receipt",
        "--out",
        "m",
        "--affidavit-out",
        "bad.aff",
    ])
    .fails_as(
        INVALID,
        "the TP found this envelope invalid: your receipt is void (affidavit saved to bad.aff)",
    );
    assert!(!w.path("m").exists());
    w.vtp(&[
        "verify",
        "--tp",
        "tp.card",
        "bad.env",
        "bad.receipt",
        "--affidavit",
        "bad.aff",
    ])
    .fails_as(INVALID, "void");
}

#[test]
fn a_released_key_that_does_not_open_the_message() {
    let w = World::new();
    let tp = spawn_tp(0x42);
    // Alice cheats: z is consistent, but c_m is encrypted under another key.
    let alice = secret(&w, "alice.id");
    let bob = IdentityCard::from_file(&w.read("bob.card")).unwrap();
    let card = TestTp::new(0x42).card;
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    let prep = envelope::prepare(&alice, &bob, &card, now() + 3600, now(), nonce).unwrap();
    let msg = b"what bob should get";
    let cm = seal(&[9u8; 32], msg);
    let sha = Digest32(Sha256::digest(msg).into());
    let env = prep
        .finish(&alice, cm_hash(&cm), cm.len() as u64, sha)
        .unwrap();
    write_envelope(&w, "c.env", &env, &cm);
    w.write("c.msg", msg);

    w.vtp(&[
        "accept",
        "--as",
        "bob.id",
        "--tp",
        "tp.card",
        "c.env",
        "--out",
        "c.receipt",
    ])
    .ok();
    // The honest path: the opening checks, the message does not decrypt.
    w.vtp(&[
        "reveal",
        "--as",
        "alice.id",
        "c.env",
        "c.receipt",
        "--out",
        "c.opening",
    ])
    .ok();
    w.vtp(&["open", "--as", "bob.id", "c.env", "c.opening", "--out", "m"])
        .fails_as(INVALID, "the sender's envelope is bad");
    // The judge sees it too.
    w.vtp(&[
        "verify",
        "--tp",
        "tp.card",
        "c.env",
        "c.receipt",
        "--opening",
        "c.opening",
        "--message",
        "c.msg",
    ])
    .fails_as(INVALID, "does not decrypt");
    // The TP path: resolved, the key does not open it, the affidavit is
    // kept and the void evidence written next to the message's path.
    w.vtp(&[
        "claim",
        "--as",
        "bob.id",
        "--tp-addr",
        &tp,
        "c.env",
        "c.receipt",
        "--out",
        "m",
        "--affidavit-out",
        "c.aff",
    ])
    .fails_as(INVALID, "the sender cheated: receipt void");
    assert!(!w.path("m").exists());
    assert!(w.path("c.aff").exists());
    assert!(w.path("m.void-evidence").exists());
    // The affidavit alone proves delivery; with the evidence, the receipt is void.
    let judge = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--tp",
            "tp.card",
            "c.env",
            "c.receipt",
            "--affidavit",
            "c.aff",
        ];
        args.extend_from_slice(extra);
        w.vtp(&args)
    };
    judge(&[]).ok();
    judge(&["--void-evidence", "m.void-evidence"]).fails_as(
        INVALID,
        "does not decrypt the message ciphertext (chunk 0 fails authentication)",
    );
}

#[test]
fn unclaimed_certificate() {
    let w = World::new();
    let tp = spawn_tp(0x42);
    w.exchange("a", b"never claimed");
    let r = w
        .vtp(&[
            "unclaimed",
            "--as",
            "bob.id",
            "--tp-addr",
            &tp,
            "a.env",
            "--out",
            "a.unclaimed",
        ])
        .ok();
    assert!(r.stdout.contains("never resolved"), "{}", r.stdout);
    // With an opening it still proves delivery; alone it proves nothing.
    w.vtp(&[
        "verify",
        "--tp",
        "tp.card",
        "a.env",
        "a.receipt",
        "--opening",
        "a.opening",
        "--affidavit",
        "a.unclaimed",
    ])
    .ok();
    w.vtp(&[
        "verify",
        "--tp",
        "tp.card",
        "a.env",
        "a.receipt",
        "--affidavit",
        "a.unclaimed",
    ])
    .fails_as(INVALID, "never resolved");
    w.vtp(&[
        "unclaimed",
        "--as",
        "chris.id",
        "--tp-addr",
        &tp,
        "a.env",
        "--out",
        "x",
    ])
    .fails_as(INVALID, "neither the sender nor the recipient");
    // An affidavit is not a receipt.
    w.vtp(&["verify", "--tp", "tp.card", "a.env", "a.unclaimed"])
        .fails_as(
            BAD_INPUT,
            "a.unclaimed: this is a TP affidavit file, expected a receipt",
        );
}
