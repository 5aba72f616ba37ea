//! The `vtp` command, run as a real process on real files (offline paths:
//! no TP daemon). See `common/mod.rs` for the host-key stand-in TP card.

mod common;
mod exits;

use std::os::unix::fs::PermissionsExt;

use common::{vtp, World};
use exits::*;
use sha2::{Digest, Sha256};

#[test]
fn help_works_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let commands: &[&[&str]] = &[
        &[],
        &["id"],
        &["id", "new"],
        &["id", "card"],
        &["id", "show"],
        &["tp"],
        &["tp", "fetch"],
        &["tp", "show"],
        &["send"],
        &["accept"],
        &["reveal"],
        &["open"],
        &["claim"],
        &["receipts"],
        &["unclaimed"],
        &["verify"],
        &["inspect"],
    ];
    for c in commands {
        let mut args = c.to_vec();
        args.push("--help");
        let r = vtp(dir.path(), &args).ok();
        assert!(r.stdout.contains("Usage: vtp"), "{args:?}: {}", r.stdout);
    }
    let r = vtp(dir.path(), &["reveal", "--help"]).ok();
    assert!(r.stdout.contains("master seed"), "{}", r.stdout);
    // Usage errors exit 2 (clap's convention).
    assert_eq!(vtp(dir.path(), &["send"]).status, 2);
    assert_eq!(vtp(dir.path(), &["frobnicate"]).status, 2);
}

#[test]
fn identities() {
    let w = World::new();
    let mode = std::fs::metadata(w.path("alice.id"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Never overwrite an identity by accident.
    let before = w.read("alice.id");
    w.vtp(&["id", "new", "--name", "alice2", "--out", "alice.id"])
        .fails_as(IO, "already exists");
    assert_eq!(w.read("alice.id"), before);
    w.vtp(&[
        "id", "new", "--name", "alice2", "--out", "alice.id", "--force", "--yes",
    ])
    .ok();
    assert_ne!(w.read("alice.id"), before);
    assert_eq!(
        std::fs::metadata(w.path("alice.id"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // `id show` works on the secret and the card and prints the same id.
    let s = w.vtp(&["id", "show", "bob.id"]).ok();
    let c = w.vtp(&["id", "show", "bob.card"]).ok();
    assert!(s.stdout.contains("name:    bob"), "{}", s.stdout);
    let id_line = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("id:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(id_line(&s.stdout), id_line(&c.stdout));
    assert!(s.stderr.is_empty(), "{}", s.stderr);

    // A world-readable identity still works but warns.
    std::fs::set_permissions(w.path("bob.id"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = w.vtp(&["id", "show", "bob.id"]).ok();
    assert!(
        r.stderr.contains("warning") && r.stderr.contains("chmod 600"),
        "{}",
        r.stderr
    );

    // Wrong kinds are named, with the path.
    w.vtp(&["id", "card", "bob.card", "--out", "x.card"])
        .fails_as(
            BAD_INPUT,
            "bob.card: this is an identity card file, expected a secret identity",
        );
    w.vtp(&["tp", "show", "bob.card"]).fails_as(
        BAD_INPUT,
        "bob.card: this is an identity card file, expected a TP card",
    );
    let r = w.vtp(&["tp", "show", "tp.card"]).ok();
    assert!(
        r.stdout.contains("id:") && r.stdout.contains("RSA-2048"),
        "{}",
        r.stdout
    );
    w.vtp(&["id", "show", "missing.id"])
        .fails_as(IO, "missing.id: cannot open");
}

fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn round_trip_for_several_sizes() {
    let w = World::new();
    for len in [0usize, 1, 64 * 1024, 1_000_003] {
        let tag = format!("m{len}");
        let msg = message(len);
        w.exchange(&tag, &msg);
        let out = format!("{tag}.out");
        w.vtp(&[
            "open",
            "--as",
            "bob.id",
            &format!("{tag}.env"),
            &format!("{tag}.opening"),
            "--out",
            &out,
        ])
        .ok();
        assert!(w.read(&out) == msg, "message of {len} bytes differs");
    }
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("vtp-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn outputs_are_never_overwritten_without_force() {
    let w = World::new();
    w.send("a", b"first", "1h");
    let before = w.read("a.env");
    let args = [
        "send",
        "--as",
        "alice.id",
        "--to",
        "bob.card",
        "--tp",
        "tp.card",
        "--deadline",
        "1h",
        "--in",
        "a.msg",
        "--out",
        "a.env",
    ];
    w.vtp(&args)
        .fails_as(IO, "a.env: already exists (use --force");
    assert_eq!(w.read("a.env"), before);
    let mut forced = args.to_vec();
    forced.push("--force");
    w.vtp(&forced).ok();
    assert_ne!(
        w.read("a.env"),
        before,
        "a fresh nonce makes a new envelope"
    );

    // The message must be a regular file (it is read twice).
    w.vtp(&[
        "send",
        "--as",
        "alice.id",
        "--to",
        "bob.card",
        "--tp",
        "tp.card",
        "--deadline",
        "1h",
        "--in",
        ".",
        "--out",
        "b.env",
    ])
    .fails_as(IO, "not a regular file");
}

#[test]
fn deadlines_on_the_command_line() {
    let w = World::new();
    w.write("m", b"x");
    let send = |deadline: &str| {
        w.vtp(&[
            "send",
            "--as",
            "alice.id",
            "--to",
            "bob.card",
            "--tp",
            "tp.card",
            "--deadline",
            deadline,
            "--in",
            "m",
            "--out",
            "e",
            "--force",
        ])
    };
    let r = send("next tuesday");
    assert_eq!(r.status, 2);
    assert!(
        r.stderr.contains("RFC 3339") && r.stderr.contains("2h"),
        "{}",
        r.stderr
    );
    send("2020-01-01T00:00:00Z").fails_as(USAGE, "deadline passed");
    send("1000days").fails_as(USAGE, "the TP accepts at most");
    send("2s").fails_as(USAGE, "needed to be able to claim");
    let t = common::now() + 7200;
    let rfc = time::OffsetDateTime::from_unix_timestamp(t as i64)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    send(&rfc).ok();
}

#[test]
fn accept_refuses_bad_envelopes() {
    let w = World::new();
    w.send("a", b"hello bob", "1h");

    // Chris is not the recipient.
    w.vtp(&[
        "accept", "--as", "chris.id", "--tp", "tp.card", "a.env", "--out", "r",
    ])
    .fails_as(INVALID, "addressed to someone else");
    // 1 h left, Bob wants 2 h.
    w.vtp(&[
        "accept",
        "--as",
        "bob.id",
        "--tp",
        "tp.card",
        "a.env",
        "--out",
        "r",
        "--min-time-left",
        "2h",
    ])
    .fails_as(INVALID, "deadline");
    // c_m tampered (last byte of the file).
    w.flipped("a.env", -1, "tampered.env");
    w.vtp(&[
        "accept",
        "--as",
        "bob.id",
        "--tp",
        "tp.card",
        "tampered.env",
        "--out",
        "r",
    ])
    .fails_as(INVALID, "does not hash to the value in the signed header");
    // Truncated body.
    let b = w.read("a.env");
    w.write("short.env", &b[..b.len() - 1]);
    w.vtp(&[
        "accept",
        "--as",
        "bob.id",
        "--tp",
        "tp.card",
        "short.env",
        "--out",
        "r",
    ])
    .fails_as(BAD_INPUT, "truncated or altered");
    // Bob trusts another TP.
    w.vtp(&[
        "accept",
        "--as",
        "bob.id",
        "--tp",
        "other-tp.card",
        "a.env",
        "--out",
        "r",
    ])
    .fails_as(INVALID, "another TP");
    // A receipt is not an envelope.
    w.vtp(&[
        "accept", "--as", "bob.id", "--tp", "tp.card", "bob.card", "--out", "r",
    ])
    .fails_as(
        BAD_INPUT,
        "bob.card: this is an identity card file, expected an envelope",
    );
    assert!(!w.path("r").exists(), "no receipt for a refused envelope");
    // And the good one is accepted.
    w.vtp(&[
        "accept", "--as", "bob.id", "--tp", "tp.card", "a.env", "--out", "r",
    ])
    .ok();
}

#[test]
fn reveal_and_open_refuse_what_does_not_fit() {
    let w = World::new();
    w.exchange("a", b"message a");
    w.exchange("b", b"message b");

    // Only the sender reveals, and only against a receipt for that envelope.
    w.vtp(&[
        "reveal",
        "--as",
        "bob.id",
        "a.env",
        "a.receipt",
        "--out",
        "o",
    ])
    .fails_as(INVALID, "only its sender can reveal");
    w.vtp(&[
        "reveal",
        "--as",
        "alice.id",
        "a.env",
        "b.receipt",
        "--out",
        "o",
    ])
    .fails_as(INVALID, "b.receipt: refused: receipt does not match");
    w.vtp(&["reveal", "--as", "alice.id", "a.env", "a.env", "--out", "o"])
        .fails_as(
            BAD_INPUT,
            "a.env: this is an envelope file, expected a receipt",
        );

    // A tampered opening (a byte of the secret, at the end of the file).
    w.flipped("a.opening", -1, "bad.opening");
    w.vtp(&[
        "open",
        "--as",
        "bob.id",
        "a.env",
        "bad.opening",
        "--out",
        "m",
    ])
    .fails_as(
        INVALID,
        "bad.opening: refused: opening does not match: it does not open z",
    );
    // An opening for another envelope.
    w.vtp(&["open", "--as", "bob.id", "a.env", "b.opening", "--out", "m"])
        .fails_as(INVALID, "it is for another envelope");
    // Not Chris's to open.
    w.vtp(&[
        "open",
        "--as",
        "chris.id",
        "a.env",
        "a.opening",
        "--out",
        "m",
    ])
    .fails_as(INVALID, "addressed to someone else");
    // The envelope's message body was altered after acceptance.
    w.flipped("a.env", -1, "tampered.env");
    w.vtp(&[
        "open",
        "--as",
        "bob.id",
        "tampered.env",
        "a.opening",
        "--out",
        "m",
    ])
    .fails_as(INVALID, "does not decrypt");
    assert!(
        !w.path("m").exists(),
        "nothing written for a refused opening"
    );
    w.vtp(&[
        "open",
        "--as",
        "bob.id",
        "a.env",
        "a.opening",
        "--out",
        "m",
        "--tp",
        "other-tp.card",
    ])
    .fails_as(INVALID, "another TP");
    w.vtp(&["open", "--as", "bob.id", "a.env", "a.opening", "--out", "m"])
        .ok();
    assert_eq!(w.read("m"), b"message a");
}

fn hex_sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[test]
fn verify_gives_a_verdict() {
    let w = World::new();
    let msg = message(100_000);
    w.exchange("a", &msg);
    w.write("other.msg", b"not the message");

    let r = w
        .vtp(&[
            "verify",
            "--tp",
            "tp.card",
            "a.env",
            "a.receipt",
            "--opening",
            "a.opening",
            "--message",
            "a.msg",
            "--json",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["delivered_via"], "opening");
    assert_eq!(v["message_sha256"], hex_sha(&msg));
    assert!(v["deadline"].as_u64().unwrap() > common::now());
    assert!(v["deadline_rfc3339"].as_str().unwrap().ends_with('Z'));
    assert!(v.get("reason").is_none());
    let id_of = |card: &str| {
        let out = w.vtp(&["id", "show", card]).ok().stdout;
        out.lines()
            .find_map(|l| l.strip_prefix("id:"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(v["sender"], id_of("alice.card"));
    assert_eq!(v["recipient"], id_of("bob.card"));

    // Human form.
    let r = w
        .vtp(&[
            "verify",
            "--tp",
            "tp.card",
            "a.env",
            "a.receipt",
            "--opening",
            "a.opening",
        ])
        .ok();
    assert!(r.stdout.starts_with("VALID"), "{}", r.stdout);

    // Wrong message: invalid, exit 1, with the reason (JSON and one error line).
    let r = w
        .vtp(&[
            "verify",
            "--tp",
            "tp.card",
            "a.env",
            "a.receipt",
            "--opening",
            "a.opening",
            "--message",
            "other.msg",
            "--json",
        ])
        .fails_as(INVALID, "the evidence is invalid");
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["valid"], false);
    assert!(
        v["reason"].as_str().unwrap().contains("SHA-256 differs"),
        "{v}"
    );

    // No opening and no affidavit: nothing proves delivery.
    w.vtp(&["verify", "--tp", "tp.card", "a.env", "a.receipt"])
        .fails_as(INVALID, "nothing proves delivery");
    // Another TP card.
    w.vtp(&[
        "verify",
        "--tp",
        "other-tp.card",
        "a.env",
        "a.receipt",
        "--opening",
        "a.opening",
    ])
    .fails_as(INVALID, "another TP");
}

#[test]
fn verify_rejects_every_flipped_input() {
    let w = World::new();
    let msg = message(3000);
    w.exchange("a", &msg);
    let good = [
        "verify",
        "--tp",
        "tp.card",
        "a.env",
        "a.receipt",
        "--opening",
        "a.opening",
        "--message",
        "a.msg",
    ];
    w.vtp(&good).ok();
    for (i, file) in ["tp.card", "a.env", "a.receipt", "a.opening", "a.msg"]
        .into_iter()
        .enumerate()
    {
        let len = w.read(file).len();
        // First bytes (header), a spread through the middle, and the last byte.
        let mut positions: Vec<usize> = (0..6).collect();
        positions.extend((6..len).step_by((len / 25).max(1)));
        positions.push(len - 1);
        for at in positions {
            let bad = format!("bad{i}");
            w.flipped(file, at as isize, &bad);
            let args: Vec<&str> = good
                .iter()
                .map(|a| if *a == file { bad.as_str() } else { *a })
                .collect();
            let r = w.vtp(&args);
            assert_ne!(r.status, 0, "{file} with byte {at} flipped was accepted");
            r.assert_one_error_line();
        }
    }
}
