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
