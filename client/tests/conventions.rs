//! The conventions every `vtp` command follows (docs/cli.md), through the
//! real binary: exit statuses by class, `--json` on success and failure,
//! one-line usage errors, pipes, armor, `inspect`, messages.

mod common;
mod exits;

use common::World;
use exits::*;
use serde_json::Value;

fn json_of(stdout: &str) -> Value {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "not one JSON line: {stdout:?}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

/// The JSON error object of a failed `--json` run.
#[track_caller]
fn json_error(r: &common::Run, class: &str, code: i32) -> Value {
    assert_eq!(r.status, code, "{} / {}", r.stdout, r.stderr);
    r.assert_one_error_line();
    let v = json_of(&r.stdout);
    assert_eq!(v["error"]["class"], class, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(r.stderr.contains(msg), "{msg} / {}", r.stderr);
    v
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    let w = World::new();
    for args in [
        &["send", "--as", "alice.id"][..],
        &["frobnicate"],
        &["accept", "--bogus"],
        &[
            "send",
            "--as",
            "alice.id",
            "--to",
            "bob.card",
            "--tp",
            "tp.card",
            "--deadline",
            "next tuesday",
            "--in",
            "m",
            "--out",
            "e",
        ],
    ] {
        let r = w.vtp(args);
        assert_eq!(r.status, USAGE, "{args:?}: {}", r.stderr);
        r.assert_one_error_line();
        assert!(r.stderr.contains("--help"), "{}", r.stderr);
        let mut with_json = args.to_vec();
        with_json.push("--json");
        json_error(&w.vtp(&with_json), "usage", USAGE);
    }
    // Help and version are not errors.
    assert_eq!(w.vtp(&["--version"]).status, 0);
    let help = w.vtp(&["--help"]).ok().stdout;
    for (code, what) in [
        (3, "invalid"),
        (5, "TP unreachable"),
        (6, "bad input"),
        (7, "local I/O"),
    ] {
        assert!(help.contains(&format!("  {code}  {what}")), "{help}");
    }
}

#[test]
fn every_class_has_its_exit_status_and_json_error() {
    let w = World::new();
    // 7: local I/O.
    let r = w.vtp(&["id", "show", "missing.id", "--json"]);
    json_error(&r, "io", IO);
    // 6: not the kind of file expected.
    let r = w.vtp(&["tp", "show", "bob.card", "--json"]);
    let v = json_error(&r, "bad-input", BAD_INPUT);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("bob.card"),
        "{v}"
    );
    // 3: parses, fails a check.
    w.send("a", b"hello", "1h");
    let r = w.vtp(&[
        "accept", "--as", "chris.id", "--tp", "tp.card", "a.env", "--out", "c.rc", "--json",
    ]);
    json_error(&r, "invalid", INVALID);
    // 5: no TP there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = w.vtp(&[
        "tp",
        "fetch",
        "--tp-addr",
        &format!("127.0.0.1:{port}"),
        "--out",
        "t.card",
        "--json",
    ]);
    json_error(&r, "tp-unreachable", TP_UNREACHABLE);
    // 2: usage, raised by the command rather than by the parser.
    let r = w.vtp(&[
        "send",
        "--as",
        "alice.id",
        "--to",
        "bob.card",
        "--tp",
        "tp.card",
        "--tp",
        "other-tp.card",
        "--deadline",
        "1h",
        "--in",
        "a.msg",
        "--out",
        "g.env",
        "--json",
    ]);
    json_error(&r, "usage", USAGE);
}

#[test]
fn json_reports() {
    let w = World::new();
    let alice = json_of(&w.vtp(&["id", "show", "alice.card", "--json"]).ok().stdout);
    assert_eq!(alice["name"], "alice");
    assert_eq!(alice["kind"], "identity card");
    let secret = json_of(&w.vtp(&["id", "show", "alice.id", "--json"]).ok().stdout);
    assert_eq!(secret["id"], alice["id"]);
    assert_eq!(secret["kind"], "secret identity");
    assert!(secret.get("created_rfc3339").is_some(), "{secret}");

    let tp = json_of(&w.vtp(&["tp", "show", "tp.card", "--json"]).ok().stdout);
    assert_eq!(tp["name"], "test TP 66");
    assert_eq!(tp["keys"][0]["current"], true);
    assert_eq!(tp["policy"]["clock_skew_secs"], 300);
    assert_eq!(tp["addresses"], serde_json::json!([]));

    w.write("m", b"a message");
    let sent = json_of(
        &w.vtp(&[
            "send",
            "--as",
            "alice.id",
            "--to",
            "bob.card",
            "--tp",
            "tp.card",
            "--deadline",
            "2h",
            "--in",
            "m",
            "--out",
            "m.env",
            "--json",
        ])
        .ok()
        .stdout,
    );
    assert_eq!(sent["sender"]["id"], alice["id"]);
    assert_eq!(sent["recipient"]["name"], "bob");
    assert_eq!(sent["envelope_file"], "m.env");
    assert_eq!(sent["trustees"][0]["id"], tp["id"]);
    let id = sent["envelope_id"].as_str().unwrap();
    assert_eq!(id.len(), 64);

    let acc = json_of(
        &w.vtp(&[
            "accept", "--as", "bob.id", "--tp", "tp.card", "m.env", "--out", "m.rc", "--json",
        ])
        .ok()
        .stdout,
    );
    assert_eq!(acc["envelope_id"], id);
    assert_eq!(acc["deadline"], sent["deadline"]);
    assert_eq!(acc["receipt_file"], "m.rc");

    // A command with nothing particular to report still prints one object.
    let rev = json_of(
        &w.vtp(&[
            "reveal", "--as", "alice.id", "m.env", "m.rc", "--out", "m.op", "--json",
        ])
        .ok()
        .stdout,
    );
    assert_eq!(rev["opening_file"], "m.op");
    let card = json_of(
        &w.vtp(&["id", "card", "bob.id", "--out", "bob2.card", "--json"])
            .ok()
            .stdout,
    );
    assert_eq!(card["card_file"], "bob2.card");

    // verify's verdict is the one object even when the evidence is invalid.
    let r = w.vtp(&["verify", "--tp", "tp.card", "m.env", "m.rc", "--json"]);
    assert_eq!(r.status, INVALID);
    let v = json_of(&r.stdout);
    assert_eq!(v["valid"], false);
    assert!(v.get("error").is_none(), "{v}");
}

#[test]
fn quiet_prints_nothing_but_errors() {
    let w = World::new();
    let r = w.vtp(&["-q", "id", "show", "alice.card"]).ok();
    assert_eq!(r.stdout, "");
    let r = w.vtp(&["id", "show", "nothere", "--quiet"]);
    assert_eq!(r.status, IO);
    r.assert_one_error_line();
}

/// Run `vtp` in `dir` with `input` on stdin (and an empty TMPDIR of its
/// own); raw stdout.
fn vtp_piped(dir: &std::path::Path, args: &[&str], input: &[u8]) -> (i32, Vec<u8>, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let tmp = dir.join("tmpdir");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vtp"))
        .current_dir(dir)
        .env("TMPDIR", &tmp)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dash_is_stdin_and_stdout() {
    let w = World::new();
    let d = w.dir.path();
    let msg = b"piped message, read twice by send".repeat(1000);
    // A file called `-` must not be mistaken for the pipe, either way.
    w.send("decoy", b"another message", "1h");
    std::fs::copy(w.path("decoy.env"), w.path("-")).unwrap();

    let (code, env, err) = vtp_piped(
        d,
        &[
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
            "-",
            "--out",
            "-",
        ],
        &msg,
    );
    assert_eq!(code, 0, "{err}");
    assert!(env.starts_with(b"VTP\x04"), "not an envelope on stdout");
    // The report moved to stderr; the file `-` is untouched.
    assert!(err.contains("written to standard output"), "{err}");
    assert_eq!(w.read("-"), w.read("decoy.env"));

    let (code, receipt, err) = vtp_piped(
        d,
        &[
            "accept", "--as", "bob.id", "--tp", "tp.card", "-", "--out", "-",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    w.write("p.env", &env);
    w.write("p.rc", &receipt);
    // The receipt is for the piped envelope, not for the file `-`.
    w.vtp(&[
        "reveal", "--as", "alice.id", "p.env", "p.rc", "--out", "p.op",
    ])
    .ok();
    w.vtp(&[
        "reveal",
        "--as",
        "alice.id",
        "decoy.env",
        "p.rc",
        "--out",
        "d.op",
    ])
    .fails_as(INVALID, "for another envelope");

    let (code, opened, err) = vtp_piped(
        d,
        &["open", "--as", "bob.id", "-", "p.op", "--out", "-"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(opened, msg);

    // Small inputs from stdin too; stdin is read once.
    let (code, out, err) = vtp_piped(d, &["id", "show", "-"], &w.read("bob.card"));
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8_lossy(&out).contains("name:    bob"));
    let (code, _, err) = vtp_piped(
        d,
        &["verify", "--tp", "tp.card", "-", "-", "--opening", "p.op"],
        &env,
    );
    assert_eq!(code, USAGE, "{err}");
    assert!(
        err.contains("only one input can come from standard input"),
        "{err}"
    );
    // stdout cannot carry both a file and JSON.
    let (code, out, err) = vtp_piped(d, &["id", "card", "bob.id", "--out", "-", "--json"], b"");
    assert_eq!(code, USAGE, "{err}");
    assert!(String::from_utf8_lossy(&out).contains("\"usage\""));
}

/// `vtp ARGS > closed pipe`: the reader is gone before vtp writes.
fn run_into_closed_pipe(dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::process::{Command, Stdio};
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) };
    let write_end = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    let out = Command::new(env!("CARGO_BIN_EXE_vtp"))
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_pipe_is_a_quiet_exit() {
    let w = World::new();
    for _ in 0..10 {
        let (code, err) = run_into_closed_pipe(w.dir.path(), &["tp", "show", "tp.card"]);
        assert_eq!((code, err.as_str()), (0, ""), "report into a closed pipe");
        let (code, err) = run_into_closed_pipe(w.dir.path(), &["id", "show", "bob.card", "--json"]);
        assert_eq!((code, err.as_str()), (0, ""), "JSON into a closed pipe");
    }
    // A file that cannot be delivered is an error, in one line, not a panic.
    let (code, err) = run_into_closed_pipe(w.dir.path(), &["id", "card", "bob.id", "--out", "-"]);
    assert_eq!(code, IO, "{err}");
    assert!(
        err.starts_with("vtp: error: standard output was closed"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn tp_takes_a_card_and_tp_addr_an_address() {
    let w = World::new();
    w.exchange("a", b"hi");
    // An address given to --tp: a usage error that names --tp-addr.
    let r = w.vtp(&[
        "claim",
        "--as",
        "bob.id",
        "--tp",
        "tp.example:7400",
        "a.env",
        "a.receipt",
        "--out",
        "m",
    ]);
    r.fails_as(USAGE, "use --tp-addr tp.example:7400");
    let r = w.vtp(&[
        "receipts",
        "--as",
        "alice.id",
        "--tp",
        "tp.example:7400",
        "--out-dir",
        "r",
    ]);
    r.fails_as(USAGE, "use --tp-addr tp.example:7400");
    // A card given to --tp-addr: a usage error that names --tp.
    let r = w.vtp(&["tp", "fetch", "--tp-addr", "tp.card", "--out", "t.card"]);
    r.fails_as(USAGE, "give a TP card with --tp tp.card");
    // A card without addresses (as every card made before them): say so.
    let r = w.vtp(&[
        "receipts",
        "--as",
        "alice.id",
        "--tp",
        "tp.card",
        "--out-dir",
        "r",
    ]);
    r.fails_as(USAGE, "publishes no address");
    let r = w.vtp(&[
        "claim",
        "--as",
        "bob.id",
        "a.env",
        "a.receipt",
        "--out",
        "m",
    ]);
    r.fails_as(
        USAGE,
        "the envelope's TP card publishes no address: give --tp-addr",
    );
    // No port: the default one, and the error says it was used.
    let r = w.vtp(&[
        "tp",
        "fetch",
        "--tp-addr",
        "127.0.0.1",
        "--out",
        "t.card",
        "--timeout",
        "2s",
    ]);
    if r.status == TP_UNREACHABLE {
        r.fails_as(TP_UNREACHABLE, "the default port 7400 was used");
    }
}

#[test]
fn a_service_that_is_not_a_tp_is_named_as_such() {
    use std::io::Write;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        // As sshd does: the banner first, whatever the client says.
        let (mut s, _) = l.accept().unwrap();
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n");
        std::thread::sleep(std::time::Duration::from_millis(500));
    });
    let w = World::new();
    let r = w.vtp(&["tp", "fetch", "--tp-addr", &addr, "--out", "t.card"]);
    let r = r.fails_as(
        TP_UNREACHABLE,
        "is not a vtp TP (it answered \"SSH-2.0-OpenSSH_9.6\")",
    );
    assert!(!r.stderr.contains("byte response"), "{}", r.stderr);
    server.join().unwrap();
}

#[test]
fn messages_name_the_file_kind_in_words() {
    let w = World::new();
    w.exchange("a", b"hi");
    // A cut-off receipt is "truncated receipt", not the decoder's words.
    let rc = w.read("a.receipt");
    w.write("half.receipt", &rc[..rc.len() / 2]);
    let r = w.vtp(&[
        "reveal",
        "--as",
        "alice.id",
        "a.env",
        "half.receipt",
        "--out",
        "x.op",
    ]);
    let r = r.fails_as(BAD_INPUT, "half.receipt: truncated receipt");
    assert!(
        !r.stderr.to_lowercase().contains("end of buffer"),
        "{}",
        r.stderr
    );
    w.write("tiny.receipt", b"VT");
    w.vtp(&[
        "reveal",
        "--as",
        "alice.id",
        "a.env",
        "tiny.receipt",
        "--out",
        "x.op",
    ])
    .fails_as(BAD_INPUT, "truncated receipt");
    // "an envelope", "an opening".
    w.vtp(&[
        "accept", "--as", "bob.id", "--tp", "tp.card", "bob.card", "--out", "x.rc",
    ])
    .fails_as(
        BAD_INPUT,
        "this is an identity card file, expected an envelope",
    );
    w.vtp(&[
        "reveal",
        "--as",
        "alice.id",
        "a.env",
        "a.opening",
        "--out",
        "x.op",
    ])
    .fails_as(BAD_INPUT, "this is an opening file, expected a receipt");
}

#[test]
fn deadlines_are_in_human_units_and_min_time_left_is_named() {
    let w = World::new();
    w.write("m", b"x");
    let r = w.vtp(&[
        "send",
        "--as",
        "alice.id",
        "--to",
        "bob.card",
        "--tp",
        "tp.card",
        "--deadline",
        "1000days",
        "--in",
        "m",
        "--out",
        "e",
    ]);
    let r = r.fails_as(USAGE, "the TP accepts at most 90days");
    assert!(!r.stderr.contains(" s "), "{}", r.stderr);
    w.send("a", b"hi", "1h");
    let r = w.vtp(&[
        "accept",
        "--as",
        "bob.id",
        "--tp",
        "tp.card",
        "a.env",
        "--out",
        "a.rc",
        "--min-time-left",
        "2h",
    ]);
    let r = r.fails_as(INVALID, "--min-time-left 2h");
    assert!(r.stderr.contains("at least 2h are needed"), "{}", r.stderr);
    assert!(
        r.stderr.contains("at least 6m, the TP's own minimum"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("only 1h left") || r.stderr.contains("only 59m"),
        "{}",
        r.stderr
    );
}

#[test]
fn inspect_shows_any_file_without_acting_on_it() {
    let w = World::new();
    w.exchange("a", b"look before you sign");
    let before: Vec<_> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let alice = json_of(&w.vtp(&["id", "show", "alice.card", "--json"]).ok().stdout);
    let bob = json_of(&w.vtp(&["id", "show", "bob.card", "--json"]).ok().stdout);
    let tp = json_of(&w.vtp(&["tp", "show", "tp.card", "--json"]).ok().stdout);

    let env = json_of(&w.vtp(&["inspect", "a.env", "--json"]).ok().stdout);
    assert_eq!(env["kind"], "envelope");
    assert_eq!(
        env["sender"],
        alice
            .get("id")
            .map(|id| serde_json::json!({"id": id, "name": "alice"}))
            .unwrap()
    );
    assert_eq!(env["recipient"]["id"], bob["id"]);
    assert_eq!(env["trustees"][0]["id"], tp["id"]);
    assert_eq!(env["signature_valid"], true);
    assert!(
        env["deadline_rfc3339"].as_str().unwrap().ends_with('Z'),
        "{env}"
    );
    let id = env["envelope_id"].as_str().unwrap().to_string();
    let human = w.vtp(&["inspect", "a.env"]).ok().stdout;
    assert!(
        human.contains("kind:") && human.contains("envelope") && human.contains(&id),
        "{human}"
    );
    assert!(
        human.contains("from:") && human.contains("alice"),
        "{human}"
    );

    let rc = json_of(&w.vtp(&["inspect", "a.receipt", "--json"]).ok().stdout);
    assert_eq!(rc["kind"], "receipt");
    assert_eq!(rc["envelope_id"], id.as_str());
    assert_eq!(rc["recipient"]["name"], "bob");
    let op = json_of(&w.vtp(&["inspect", "a.opening", "--json"]).ok().stdout);
    assert_eq!(op["kind"], "opening");
    assert_eq!(op["envelope_id"], id.as_str());
    assert_eq!(
        op.as_object().unwrap().len(),
        2,
        "an opening shows no secret: {op}"
    );
    let card = json_of(&w.vtp(&["inspect", "tp.card", "--json"]).ok().stdout);
    assert_eq!(card["id"], tp["id"]);
    let secret = w.vtp(&["inspect", "alice.id"]).ok().stdout;
    assert!(
        secret.contains("secret identity") && secret.contains("not shown"),
        "{secret}"
    );
    // From a pipe too.
    let (code, out, err) = vtp_piped(w.dir.path(), &["inspect", "-", "--json"], &w.read("a.env"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json_of(&String::from_utf8(out).unwrap())["envelope_id"],
        id.as_str()
    );

    // A forged envelope says so; a non-vtp file is bad input.
    let mut forged = w.read("a.env");
    let at = forged.windows(5).position(|x| x == b"alice").unwrap();
    forged[at] = b'A';
    w.write("forged.env", &forged);
    let f = w.vtp(&["inspect", "forged.env", "--json"]);
    if f.status == 0 {
        assert_eq!(json_of(&f.stdout)["signature_valid"], false);
    } else {
        assert_eq!(f.status, BAD_INPUT, "{}", f.stderr);
    }
    w.write("notes.txt", b"hello");
    w.vtp(&["inspect", "notes.txt"])
        .fails_as(BAD_INPUT, "not a vtp file");

    // Nothing was written.
    let after: Vec<_> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !["forged.env", "notes.txt", "tmpdir"].contains(&n.to_str().unwrap()))
        .collect();
    assert_eq!(before.len(), after.len(), "{before:?} / {after:?}");
}

#[test]
fn armor_for_e_mail_and_either_form_is_read() {
    let w = World::new();
    let msg = b"an armored exchange".repeat(5000);
    w.write("m", &msg);
    w.vtp(&[
        "send",
        "--armor",
        "--as",
        "alice.id",
        "--to",
        "bob.card",
        "--tp",
        "tp.card",
        "--deadline",
        "1h",
        "--in",
        "m",
        "--out",
        "m.env",
    ])
    .ok();
    let env = String::from_utf8(w.read("m.env")).expect("armor is text");
    assert!(
        env.starts_with("-----BEGIN VTP ENVELOPE-----\n"),
        "{}",
        &env[..60]
    );
    assert!(env.trim_end().ends_with("-----END VTP ENVELOPE-----"));
    assert!(env.lines().all(|l| l.len() <= 64 && l.is_ascii()));
    // Read without being told; the receipt armored too, the opening binary.
    w.vtp(&[
        "accept", "--armor", "--as", "bob.id", "--tp", "tp.card", "m.env", "--out", "m.rc",
    ])
    .ok();
    assert!(w.read("m.rc").starts_with(b"-----BEGIN VTP RECEIPT-----\n"));
    w.vtp(&[
        "reveal", "--as", "alice.id", "m.env", "m.rc", "--out", "m.op",
    ])
    .ok();
    assert!(w.read("m.op").starts_with(b"VTP"));
    w.vtp(&["open", "--as", "bob.id", "m.env", "m.op", "--out", "m.out"])
        .ok();
    assert_eq!(w.read("m.out"), msg, "the message itself is never armored");
    w.vtp(&[
        "verify",
        "--tp",
        "tp.card",
        "m.env",
        "m.rc",
        "--opening",
        "m.op",
        "--message",
        "m",
    ])
    .ok();
    // Every kind has its label.
    for (args, label) in [
        (
            &["id", "card", "bob.id", "--out", "b.card"][..],
            "VTP IDENTITY CARD",
        ),
        (
            &["id", "new", "--name", "z", "--out", "z.id"],
            "VTP SECRET IDENTITY",
        ),
    ] {
        let mut a = args.to_vec();
        a.push("--armor");
        w.vtp(&a).ok();
        let out = args[args.iter().position(|x| *x == "--out").unwrap() + 1];
        let text = String::from_utf8(w.read(out)).unwrap();
        assert!(
            text.starts_with(&format!("-----BEGIN {label}-----\n")),
            "{text}"
        );
    }
    w.vtp(&["id", "show", "z.id"]).ok();
    // A mail client's CRLF and rewrapping do not matter.
    let crlf = env.replace('\n', "\r\n");
    w.write("crlf.env", crlf.as_bytes());
    w.vtp(&["inspect", "crlf.env"]).ok();
    // Armor that lies about its kind, or was cut off, is bad input.
    let rc = String::from_utf8(w.read("m.rc")).unwrap();
    w.write(
        "lying.rc",
        rc.replace("VTP RECEIPT", "VTP OPENING").as_bytes(),
    );
    w.vtp(&[
        "reveal", "--as", "alice.id", "m.env", "lying.rc", "--out", "x.op",
    ])
    .fails_as(BAD_INPUT, "the armor says VTP OPENING but holds receipt");
    w.write("cut.env", &env.as_bytes()[..env.len() / 2]);
    w.vtp(&[
        "accept", "--as", "bob.id", "--tp", "tp.card", "cut.env", "--out", "x.rc",
    ])
    .fails_as(BAD_INPUT, "truncated armor");
    // Through a pipe as well.
    let (code, out, err) = vtp_piped(w.dir.path(), &["inspect", "-", "--json"], env.as_bytes());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json_of(&String::from_utf8(out).unwrap())["kind"],
        "envelope"
    );
}

#[test]
fn help_has_examples_and_completions_and_man_pages_come_from_it() {
    let w = World::new();
    for c in [
        "send",
        "accept",
        "reveal",
        "open",
        "claim",
        "receipts",
        "unclaimed",
        "verify",
        "inspect",
        "id",
        "tp",
    ] {
        let help = w.vtp(&[c, "--help"]).ok().stdout;
        assert!(
            help.contains("Examples:\n  vtp "),
            "{c} --help has no examples: {help}"
        );
    }
    let bash = w.vtp(&["completions", "bash"]).ok().stdout;
    assert!(
        bash.contains("complete -F _vtp") && bash.contains("--tp-addr"),
        "{bash}"
    );
    let zsh = w.vtp(&["completions", "zsh"]).ok().stdout;
    assert!(zsh.starts_with("#compdef vtp"), "{zsh}");
    w.vtp(&["completions", "tcsh"]).fails_as(USAGE, "tcsh");
    let man = w.vtp(&["man"]).ok().stdout;
    assert!(
        man.contains(".TH vtp 1") && man.contains("inspect"),
        "{man}"
    );
    w.vtp(&["man", "--dir", "man1"]).ok();
    let page = String::from_utf8(w.read("man1/vtp-send.1")).unwrap();
    assert!(page.contains("\\-\\-deadline"), "{page}");
}

/// `vtp ARGS` on a pseudo-terminal (util-linux `script`): what a person sees.
fn on_a_terminal(dir: &std::path::Path, args: &str, no_color: bool) -> String {
    let mut cmd = std::process::Command::new("script");
    cmd.current_dir(dir)
        .args([
            "-qec",
            &format!("{} {args}", env!("CARGO_BIN_EXE_vtp")),
            "/dev/null",
        ])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd.output().expect("script(1) from util-linux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let w = World::new();
    let tty = on_a_terminal(w.dir.path(), "id show nothere", false);
    assert!(tty.contains("\x1b[31mvtp: error:\x1b[0m"), "{tty:?}");
    let plain = on_a_terminal(w.dir.path(), "id show nothere", true);
    assert!(
        plain.contains("vtp: error:") && !plain.contains('\x1b'),
        "{plain:?}"
    );
    let piped = w.vtp(&["id", "show", "nothere"]);
    assert!(!piped.stderr.contains('\x1b'), "{:?}", piped.stderr);
}

#[test]
fn replacing_an_identity_asks_first() {
    let w = World::new();
    let before = w.read("alice.id");
    // No terminal: refused unless --yes.
    w.vtp(&["id", "new", "--name", "a2", "--out", "alice.id", "--force"])
        .fails_as(USAGE, "add --yes");
    assert_eq!(w.read("alice.id"), before);
    // A terminal: asked; anything but yes keeps it.
    let vtp = env!("CARGO_BIN_EXE_vtp");
    let ask = |answer: &str| {
        use std::io::Write;
        let mut c = std::process::Command::new("script")
            .current_dir(w.dir.path())
            .args([
                "-qec",
                &format!("{vtp} id new --name a2 --out alice.id --force"),
                "/dev/null",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        // Answer once the question is asked (script forwards it to the pty).
        std::thread::sleep(std::time::Duration::from_millis(500));
        stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        drop(stdin);
        out
    };
    let out = ask("n");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[y/N]"),
        "{out:?}"
    );
    assert_eq!(w.read("alice.id"), before);
    ask("y");
    assert_ne!(w.read("alice.id"), before);
    w.vtp(&[
        "id", "new", "--name", "a3", "--out", "alice.id", "--force", "--yes",
    ])
    .ok();
}
