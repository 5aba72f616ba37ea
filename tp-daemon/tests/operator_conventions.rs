//! Operator conventions (issue 13), each through the real daemon or CLI:
//! one daemon per data directory, the PIN file policy and key URIs,
//! `tp-daemon check`, systemd readiness and `/healthz`, the sample config,
//! `journal verify` on a read-only backup, build and key-age metrics.

mod common;

use common::*;
use vtp_protocol::wire::{Request, Response};

/// The `tp-daemon: error:` line of a failed start.
fn serve_error(tp: &TestTp) -> String {
    let (status, stderr) = tp.serve_expecting_failure();
    assert_eq!(status.code(), Some(1), "{stderr}");
    stderr
        .lines()
        .find(|l| l.starts_with("tp-daemon: error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"))
        .to_owned()
}

// ---- 1. one daemon per data directory ---------------------------------------

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused_naming_the_first() {
    let tp = TestTp::new();
    let first = tp.start();
    let line = serve_error(&tp);
    assert!(
        line.contains(&format!("pid {}", first.pid())),
        "names the daemon holding the data directory: {line}"
    );
    assert!(line.contains(&tp.path().display().to_string()), "{line}");
    // The first one is untouched and still resolves claims.
    let card = card_of(&first);
    assert!(matches!(
        first.ask(&Exchange::new(&card, 3600).claim()),
        Response::Claim(_)
    ));
    // Operator commands run beside it: they write the key ring, the audit
    // log and the subscribers in their own transactions, never the chain.
    let bob = identity("bob");
    let card_file = tp.path().join("bob.card");
    std::fs::write(&card_file, bob.card().to_file()).unwrap();
    tp.cli(&["subscribers", "add", card_file.to_str().unwrap()])
        .ok();
    let out = tp.cli(&["keys", "generate", "--encryption"]).ok().stdout;
    assert!(
        out.contains(&format!("pid {}", first.pid())),
        "the hint names the running daemon to reload: {out}"
    );
    first.hup();
    first.wait_log("reloaded: serving a new TP card", 1);
    assert!(matches!(
        first.ask(&Exchange::new(&card_of(&first), 3600).claim()),
        Response::Claim(_)
    ));
    // Once it is gone (even killed: the lock dies with the process), the
    // data directory is free again.
    first.kill();
    let again = tp.start();
    assert!(matches!(again.ask(&Request::GetCard), Response::Card(_)));
    assert!(again.terminate().success());
}

// ---- 3. the PIN file policy and key URIs --------------------------------------

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chgrp(path: &std::path::Path, gid: u32) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; uid -1 leaves the owner as it is.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) }, 0);
}

/// The value of `key = "..."` in the test TP's config.
fn config_value(tp: &TestTp, key: &str) -> String {
    let text = std::fs::read_to_string(&tp.config).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    line.split_once(" = ")
        .unwrap()
        .1
        .trim_matches('"')
        .to_owned()
}

#[test]
fn pin_file_policy_accepts_the_documented_0640_and_refuses_open_files() {
    let tp = TestTp::new();
    let pin = tp.pin_file();
    let secret = std::fs::read_to_string(&pin).unwrap();
    // SAFETY: getegid cannot fail.
    let own_group = unsafe { libc::getegid() };

    // The documented set-up: group-readable by the daemon's group. It
    // starts without a word about the PIN file.
    chgrp(&pin, own_group);
    chmod(&pin, 0o640);
    let d = tp.start();
    assert!(matches!(d.ask(&Request::GetCard), Response::Card(_)));
    let log = d.log_text();
    assert!(!log.contains("PIN file"), "no warning for 0640: {log}");
    drop(d);

    for (mode, needle) in [
        (0o644, "is readable by every user (mode 0644)"),
        (0o606, "is readable and writable by every user"),
        (0o660, "is writable by its group"),
    ] {
        chmod(&pin, mode);
        let line = serve_error(&tp);
        assert!(line.contains(needle), "{mode:o}: {line}");
        assert!(line.contains(&pin.display().to_string()), "{line}");
        assert!(!line.contains(secret.trim()), "never the PIN: {line}");
        // The operator commands open the token under the same policy.
        let run = tp.cli(&["keys", "list"]).fails();
        assert!(run.error_line().contains(needle), "{run:?}");
    }

    // Group-readable by a group the daemon is not in: refused (root can
    // hand the file to another group; others cannot).
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let foreign = 54_321;
        chgrp(&pin, foreign);
        chmod(&pin, 0o640);
        let line = serve_error(&tp);
        assert!(
            line.contains(&format!(
                "readable by group {foreign}, which this daemon is not in"
            )),
            "{line}"
        );
    }
    chmod(&pin, 0o600);
    assert!(tp.start().terminate().success());
}

#[test]
fn key_uris_may_carry_module_path_and_pin_source_that_agree_with_token() {
    let tp = TestTp::new();
    let module = config_value(&tp, "module");
    let pin = config_value(&tp, "pin_file");
    let signing = config_value(&tp, "signing");
    let with_query = |query: &str| {
        let query = query.to_owned();
        let signing = signing.clone();
        tp.edit_config(move |t| {
            let line = t.lines().find(|l| l.starts_with("signing = ")).unwrap();
            t.replace(line, &format!("signing = \"{signing}?{query}\""))
        });
    };

    // As step-ca and cosign users write them: accepted when they agree.
    with_query(&format!("module-path={module}&pin-source=file:{pin}"));
    let d = tp.start();
    assert!(matches!(d.ask(&Request::GetCard), Response::Card(_)));
    drop(d);
    // module-path may name the module's directory (RFC 7512).
    let dir = std::path::Path::new(&module)
        .parent()
        .unwrap()
        .display()
        .to_string();
    with_query(&format!("module-path={dir}&module-name=softhsm2"));
    assert!(tp.start().terminate().success());

    // Disagreeing: refused, saying where the setting goes in tp.toml.
    with_query("pin-source=file:/etc/other.pin");
    let line = serve_error(&tp);
    assert!(
        line.contains("tp.toml") && line.contains("[token] `pin_file`") && line.contains("line "),
        "{line}"
    );
    with_query("module-path=/usr/lib/other-pkcs11.so");
    let line = serve_error(&tp);
    assert!(line.contains("[token] `module`"), "{line}");
    with_query("pin-value=4711");
    let line = serve_error(&tp);
    assert!(
        line.contains("never put a PIN") && !line.contains("4711"),
        "{line}"
    );
}
