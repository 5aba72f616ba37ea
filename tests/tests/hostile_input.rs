//! 9. Forged or tampered inputs, at the CLI and at the daemon's socket: each
//!    gets a clear error and the daemon keeps serving.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;

use vtp_e2e::{cheat, flip_byte, vtp, Party, Tp};
use vtp_protocol::claim::{Claim, ClaimBody};
use vtp_protocol::encoding::{domain, signing_digest};
use vtp_protocol::identity::test_sign;
use vtp_protocol::receipt::{Receipt, ReceiptBody};
use vtp_protocol::wire::{self, ErrorCode, Request, Response};

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Builds the command line that consumes a (tampered) file.
type CommandFor<'a> = Box<dyn Fn(&Path) -> Vec<String> + 'a>;

fn still_serving(tp: &mut Tp) {
    assert!(tp.is_running(), "the daemon died");
    let out = tp.dir.path().join("card-check.vtp");
    vtp([
        "tp",
        "fetch",
        "--tp-addr",
        &tp.addr,
        "--out",
        &p(&out),
        "--force",
    ])
    .ok();
}

fn ask(tp: &Tp, req: &Request) -> Response {
    let bytes = tp
        .raw_frame(&wire::encode_request(req))
        .expect("round trip");
    wire::decode_response(&bytes).expect("decodable response")
}

/// A receipt and claim for `env`, signed by whoever we like (bypassing the
/// checks the honest constructors make).
fn forged_claim(
    env: &vtp_protocol::envelope::Envelope,
    receipt_signer: &Path,
    claim_signer: &Path,
) -> Claim {
    let bob = cheat::identity(receipt_signer);
    let h = &env.header;
    let rb = ReceiptBody {
        envelope_id: h.envelope_id(),
        trustees: h.trustee_ids(),
        threshold: h.threshold,
        sender: h.sender,
        recipient: h.recipient,
        deadline: h.deadline,
        cm_hash: h.cm_hash,
        issued: cheat::now(),
    };
    let receipt = Receipt {
        signature: test_sign(&bob, &signing_digest(domain::RECEIPT, &rb)),
        body: rb,
        recipient_card: bob.card().clone(),
    };
    let body = ClaimBody {
        envelope: env.clone(),
        receipt,
        requested: cheat::now(),
    };
    let signer = cheat::identity(claim_signer);
    Claim {
        signature: test_sign(&signer, &signing_digest(domain::CLAIM, &body)),
        body,
    }
}

#[test]
fn t09_tampered_files_and_hostile_frames() {
    let mut tp = Tp::init();
    tp.start();
    let root = tp.dir.path().to_path_buf();
    let alice = Party::new(&root, "alice");
    let bob = Party::new(&root, "bob");
    let chris = Party::new(&root, "chris");
    let msg = root.join("m.txt");
    std::fs::write(&msg, b"pay 100 to bob").unwrap();
    let env = alice.path("env.vtp");
    vtp([
        "send",
        "--as",
        &p(&alice.id),
        "--to",
        &p(&bob.card),
        "--tp",
        &p(&tp.card()),
        "--deadline",
        "1h",
        "--in",
        &p(&msg),
        "--out",
        &p(&env),
    ])
    .ok();
    let receipt = bob.path("receipt.vtp");
    vtp([
        "accept",
        "--as",
        &p(&bob.id),
        "--tp",
        &p(&tp.card()),
        &p(&env),
        "--out",
        &p(&receipt),
    ])
    .ok();
    let opening = alice.path("opening.vtp");
    vtp([
        "reveal",
        "--as",
        &p(&alice.id),
        &p(&env),
        &p(&receipt),
        "--out",
        &p(&opening),
    ])
    .ok();

    // A flipped byte in each file kind: the consuming command fails with one line.
    let tp_card = tp.card();
    let copy = |src: &Path, name: &str, at: i64| {
        let dst = root.join(name);
        std::fs::copy(src, &dst).unwrap();
        flip_byte(&dst, at);
        dst
    };
    let cases: Vec<(std::path::PathBuf, CommandFor)> = vec![
        (
            copy(&env, "t-env", 40),
            Box::new(|f| {
                vec![
                    "accept".into(),
                    "--as".into(),
                    p(&bob.id),
                    "--tp".into(),
                    p(&tp_card),
                    p(f),
                    "--out".into(),
                    p(&root.join("o1")),
                ]
            }),
        ),
        (
            copy(&env, "t-env-cm", -3),
            Box::new(|f| {
                vec![
                    "accept".into(),
                    "--as".into(),
                    p(&bob.id),
                    "--tp".into(),
                    p(&tp_card),
                    p(f),
                    "--out".into(),
                    p(&root.join("o2")),
                ]
            }),
        ),
        (
            copy(&receipt, "t-receipt", 60),
            Box::new(|f| {
                vec![
                    "reveal".into(),
                    "--as".into(),
                    p(&alice.id),
                    p(&env),
                    p(f),
                    "--out".into(),
                    p(&root.join("o3")),
                ]
            }),
        ),
        (
            copy(&opening, "t-opening", 20),
            Box::new(|f| {
                vec![
                    "open".into(),
                    "--as".into(),
                    p(&bob.id),
                    p(&env),
                    p(f),
                    "--out".into(),
                    p(&root.join("o4")),
                ]
            }),
        ),
        (
            copy(&bob.card, "t-card", 30),
            Box::new(|f| {
                vec![
                    "send".into(),
                    "--as".into(),
                    p(&alice.id),
                    "--to".into(),
                    p(f),
                    "--tp".into(),
                    p(&tp_card),
                    "--deadline".into(),
                    "1h".into(),
                    "--in".into(),
                    p(&msg),
                    "--out".into(),
                    p(&root.join("o5")),
                ]
            }),
        ),
        (
            copy(&tp.card(), "t-tpcard", 50),
            Box::new(|f| {
                vec![
                    "accept".into(),
                    "--as".into(),
                    p(&bob.id),
                    "--tp".into(),
                    p(f),
                    p(&env),
                    "--out".into(),
                    p(&root.join("o6")),
                ]
            }),
        ),
        (
            copy(&alice.id, "t-id", 12),
            Box::new(|f| {
                vec![
                    "reveal".into(),
                    "--as".into(),
                    p(f),
                    p(&env),
                    p(&receipt),
                    "--out".into(),
                    p(&root.join("o7")),
                ]
            }),
        ),
    ];
    for (file, cmd) in &cases {
        let r = vtp(cmd(file)).fails();
        assert_eq!(
            r.stderr.trim().lines().count(),
            1,
            "one-line error expected for {}: {}",
            p(file),
            r.stderr
        );
    }
    drop(cases);

    // At the socket: wrong key id, a claim signed by someone else, garbage.
    let (e, _) = cheat::read_envelope(&env);
    let mut wrong_key = e.clone();
    wrong_key.header.trustees[0].key_id = vtp_protocol::KeyId([0xee; 8]);
    let wrong_key = cheat::reframe(
        &alice.id,
        wrong_key.header,
        wrong_key.zs[0].clone(),
        &tp.card(),
    );
    match ask(
        &tp,
        &Request::Claim(forged_claim(&wrong_key, &bob.id, &bob.id)),
    ) {
        Response::Error(err) => assert!(
            matches!(err.code, ErrorCode::UnknownKey | ErrorCode::Rejected),
            "{err:?}"
        ),
        other => panic!("wrong key id accepted: {other:?}"),
    }
    match ask(&tp, &Request::Claim(forged_claim(&e, &bob.id, &chris.id))) {
        Response::Error(err) => assert_eq!(err.code, ErrorCode::Rejected, "{err:?}"),
        other => panic!("claim signed by another key accepted: {other:?}"),
    }
    match ask(&tp, &Request::Claim(forged_claim(&e, &chris.id, &chris.id))) {
        Response::Error(err) => assert_eq!(err.code, ErrorCode::Rejected, "{err:?}"),
        other => panic!("receipt by a non-recipient accepted: {other:?}"),
    }
    assert_eq!(tp.journal_rows("resolved"), 0);
    still_serving(&mut tp);

    // Garbage postcard with a valid prefix, and pure garbage.
    for junk in [
        &b"VTP\x08\x01\xff\xff\xff\xff\xff"[..],
        b"hello, world",
        b"",
    ] {
        let resp = tp.raw_frame(junk).expect("an answer to garbage");
        match wire::decode_response(&resp).expect("decodable") {
            Response::Error(err) => assert_eq!(err.code, ErrorCode::Malformed),
            other => panic!("garbage accepted: {other:?}"),
        }
    }
    still_serving(&mut tp);

    // Truncated frame: announce 100 bytes, send 10, hang up.
    {
        let mut s = TcpStream::connect(&tp.addr).unwrap();
        s.write_all(&100u32.to_be_bytes()).unwrap();
        s.write_all(&[1u8; 10]).unwrap();
    }
    still_serving(&mut tp);

    // Oversized frame: announce 64 MiB.
    {
        let mut s = TcpStream::connect(&tp.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(&(64u32 << 20).to_be_bytes()).unwrap();
        let _ = s.write_all(&[0u8; 4096]);
        // Either an error frame or a closed connection; never a hang or a crash.
        if let Ok(bytes) = vtp_e2e::read_frame(&mut s) {
            assert!(matches!(
                wire::decode_response(&bytes),
                Ok(Response::Error(_))
            ));
        }
    }
    still_serving(&mut tp);

    // After all that, the honest claim still works.
    let out = bob.path("msg.txt");
    vtp([
        "claim",
        "--as",
        &p(&bob.id),
        "--tp-addr",
        &tp.addr,
        &p(&env),
        &p(&receipt),
        "--out",
        &p(&out),
    ])
    .ok();
    assert_eq!(std::fs::read(out).unwrap(), std::fs::read(&msg).unwrap());
}
