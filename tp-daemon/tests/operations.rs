//! Running the daemon for real: PIN sources, root refusal, SIGTERM under
//! load, SIGHUP reloads, metrics and health, subscribers, structured logs.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use vtp_protocol::wire::{ClaimOutcome, ErrorCode, Request, Response, WireError};

fn refusal(r: Response) -> WireError {
    match r {
        Response::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn replace_line(t: &str, prefix: &str, with: &str) -> String {
    let line = t
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line"));
    t.replace(line, with)
}

#[test]
fn pin_from_a_file() {
    let tp = TestTp::new();
    // The PIN file init wrote (with a trailing newline) is what the config uses.
    let cfg = std::fs::read_to_string(&tp.config).unwrap();
    assert!(cfg.lines().any(|l| l.starts_with("pin_file = ")), "{cfg}");
    let d = tp.start();
    assert!(matches!(d.ask(&Request::GetCard), Response::Card(_)));
}

#[test]
fn pin_from_an_environment_variable() {
    let tp = TestTp::new();
    let pin = std::fs::read_to_string(tp.pin_file()).unwrap();
    tp.edit_config(|t| replace_line(t, "pin_file = ", "pin_env = \"VTP_TEST_TP_PIN\""));
    let d = tp.start_with_env(&[("VTP_TEST_TP_PIN", pin.trim())]);
    assert!(matches!(d.ask(&Request::GetCard), Response::Card(_)));
    assert!(
        !d.log_text().contains(pin.trim()),
        "the PIN is never logged"
    );
    drop(d);

    // A wrong PIN in the variable: a clear refusal, no PIN echoed.
    let (status, stderr) =
        tp.serve_expecting_failure_with(&["--allow-root"], &[("VTP_TEST_TP_PIN", "77665544wrong")]);
    assert_eq!(status.code(), Some(1));
    let line = stderr
        .lines()
        .find(|l| l.starts_with("tp-daemon: error:"))
        .unwrap();
    assert!(line.contains("wrong user PIN"), "{line}");
    assert!(!stderr.contains("77665544wrong"));
}

#[test]
fn wrong_pin_in_the_file_is_refused() {
    let tp = TestTp::new();
    std::fs::write(tp.pin_file(), "99887766wrong\n").unwrap();
    let (status, stderr) = tp.serve_expecting_failure();
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("wrong user PIN"), "{stderr}");
    assert!(!stderr.contains("99887766wrong"));
    // The key commands refuse it the same way.
    let e = tp.cli(&["keys", "list"]).fails();
    assert!(e.error_line().contains("wrong user PIN"), "{e:?}");
}

#[test]
fn insecure_literal_pin_works_with_a_loud_warning() {
    let tp = TestTp::new();
    let pin = std::fs::read_to_string(tp.pin_file()).unwrap();
    tp.edit_config(|t| {
        replace_line(
            t,
            "pin_file = ",
            &format!("insecure_literal_pin = \"{}\"", pin.trim()),
        )
    });
    let d = tp.start();
    assert!(matches!(d.ask(&Request::GetCard), Response::Card(_)));
    let log = d.log_text();
    assert!(log.contains("insecure_literal_pin is set"), "{log}");
    assert!(!log.contains(pin.trim()), "the PIN is never logged");
}

#[test]
fn serving_as_root_is_refused_unless_allowed() {
    let tp = TestTp::new();
    if unsafe { libc::geteuid() } != 0 {
        // Not root: nothing to refuse; the flag is harmless.
        let d = tp.start_with(&[], &[]);
        assert!(matches!(d.ask(&Request::GetCard), Response::Card(_)));
        return;
    }
    let (status, stderr) = tp.serve_expecting_failure_with(&[], &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("tp-daemon: error:"))
        .unwrap();
    assert!(line.contains("refusing to run as root"), "{line}");
    assert!(line.contains("--allow-root"), "{line}");
    // VTP_ALLOW_ROOT=1 is the same as --allow-root.
    let d = tp.start_with(&[], &[("VTP_ALLOW_ROOT", "1")]);
    assert!(d.log_text().contains("running as root"), "{}", d.log_text());
    // ...and VTP_ALLOW_ROOT=0 does not allow it.
    let (status, _) = tp.serve_expecting_failure_with(&[], &[("VTP_ALLOW_ROOT", "0")]);
    assert_eq!(status.code(), Some(1));
}

#[test]
fn config_errors_name_the_line_when_serving() {
    let tp = TestTp::new();
    tp.edit_config(|t| {
        let line = t.lines().find(|l| l.starts_with("signing = ")).unwrap();
        t.replace(line, &line.replace("token=vtp-dev", "token=another-token"))
    });
    let (_, stderr) = tp.serve_expecting_failure();
    let line = stderr
        .lines()
        .find(|l| l.starts_with("tp-daemon: error:"))
        .unwrap();
    assert!(line.contains("tp.toml: line "), "{line}");
    assert!(line.contains("token=\"another-token\""), "{line}");
    tp.edit_config(|t| t.replace("token=another-token", "token=vtp-dev"));
    tp.edit_config(|t| t.replace("max_deadline_secs = ", "max_deadline_secs = -"));
    let (_, stderr) = tp.serve_expecting_failure();
    assert!(
        stderr.contains("max_deadline_secs") && stderr.contains("line "),
        "{stderr}"
    );
}

/// Under a load of claims from several connections, SIGTERM: the daemon
/// stops, exits 0, and every claim it answered is in the journal.
#[test]
fn sigterm_during_a_load_of_claims_loses_no_answered_claim() {
    let tp = TestTp::new();
    let d = tp.start();
    let card = card_of(&d);
    const THREADS: usize = 6;
    const PER_THREAD: usize = 60;
    let exchanges: Vec<Vec<Exchange>> = (0..THREADS)
        .map(|_| {
            (0..PER_THREAD)
                .map(|_| Exchange::new(&card, 3600))
                .collect()
        })
        .collect();
    let answered = AtomicUsize::new(0);
    let resolved: Mutex<Vec<vtp_protocol::Digest32>> = Mutex::new(Vec::new());
    let stop_seen = AtomicBool::new(false);
    let addr = d.addr;
    let status = std::thread::scope(|s| {
        for mine in &exchanges {
            let (answered, resolved, stop_seen) = (&answered, &resolved, &stop_seen);
            s.spawn(move || {
                let Ok(mut conn) = Conn::try_connect(addr) else {
                    return;
                };
                for x in mine {
                    let body = vtp_protocol::wire::encode_request(&x.claim());
                    if write_frame(&mut conn.0, &body).is_err() {
                        stop_seen.store(true, Ordering::SeqCst);
                        return;
                    }
                    match conn.read_response() {
                        Some(Response::Claim(ClaimOutcome::Resolved { affidavit, .. })) => {
                            resolved.lock().unwrap().push(affidavit.body.z_hash);
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(other) => panic!("unexpected answer {other:?}"),
                        None => {
                            // The daemon closed the connection: shutting down.
                            stop_seen.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            });
        }
        let start = Instant::now();
        while answered.load(Ordering::SeqCst) < 20 {
            assert!(start.elapsed() < Duration::from_secs(60), "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        d.send_term();
        d.wait_exit(Duration::from_secs(60))
    });
    assert_eq!(status.code(), Some(0), "exit 0 after SIGTERM");
    let resolved = resolved.into_inner().unwrap();
    let total = THREADS * PER_THREAD;
    assert!(
        resolved.len() < total && stop_seen.load(Ordering::SeqCst),
        "the load was still running at SIGTERM ({} of {total} answered)",
        resolved.len()
    );
    let db = tp.journal_db();
    for z in &resolved {
        let n: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM resolved WHERE z_hash = ?1",
                [&z.0[..]],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "an answered claim is missing from the journal");
    }
    let (in_journal, _, _) = tp.journal_stats();
    assert!(in_journal as usize >= resolved.len());
    let log = std::fs::read_to_string(tp.path().join("daemon-1.log")).unwrap();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("server stopped"), "{log}");
}

#[test]
fn sighup_with_a_broken_config_keeps_serving_the_old_state() {
    let tp = TestTp::new();
    let d = tp.start();
    let card = card_of(&d);
    let good = std::fs::read_to_string(&tp.config).unwrap();
    tp.edit_config(|t| t.replace("[policy]", "[policy]\nmax_dedline = 5"));
    d.hup();
    let log = d.wait_log("reload failed", 1);
    assert!(log.contains("max_dedline"), "{log}");
    assert_eq!(card_of(&d), card, "the old card is still served");
    // A change that needs a restart is refused too.
    std::fs::write(
        &tp.config,
        good.replace("label = \"vtp-dev\"", "label = \"other\""),
    )
    .unwrap();
    d.hup();
    let log = d.wait_log("reload failed", 2);
    assert!(log.contains("restart the daemon"), "{log}");
    // A policy change applies.
    std::fs::write(
        &tp.config,
        good.replace("clock_skew_secs = 300", "clock_skew_secs = 120"),
    )
    .unwrap();
    d.hup();
    d.wait_log("reloaded: serving a new TP card", 1);
    let c = card_of(&d);
    assert_eq!(c.policy().clock_skew_secs, 120);
    assert_eq!(c.id(), card.id());
    let x = Exchange::new(&c, 3600);
    assert!(matches!(d.ask(&x.claim()), Response::Claim(_)));
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name_and_labels} not in\n{text}"))
}

#[test]
fn health_and_metrics_endpoint() {
    let tp = TestTp::new();
    let d = tp.start_with(&["--allow-root", "--metrics-listen", "127.0.0.1:0"], &[]);
    assert_ne!(d.metrics, Some(d.addr));
    let (status, body) = d.http_get("/healthz");
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.0 200 OK", "ok\n")
    );
    let (status, _) = d.http_get("/nope");
    assert!(status.contains("404"), "{status}");

    let card = card_of(&d);
    let x = Exchange::new(&card, 3600);
    assert!(matches!(d.ask(&x.claim()), Response::Claim(_)));
    assert!(matches!(d.ask(&x.claim()), Response::Claim(_)));
    let late = Exchange::new(&card, 3600);
    let mut claim =
        vtp_protocol::claim::Claim::new(&late.bob, &late.verified, &late.receipt, now());
    claim.signature.0[5] ^= 1;
    assert_eq!(
        refusal(d.ask(&Request::Claim(claim))).code,
        ErrorCode::Rejected
    );
    let mut c = d.connect();
    c.send_frame(b"garbage");
    c.read_response().unwrap();

    let (status, text) = d.http_get("/metrics");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert_eq!(metric(&text, "vtp_claims_total"), 3.0);
    assert_eq!(
        metric(
            &text,
            "vtp_resolutions_total{outcome=\"resolved\",source=\"device\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "vtp_resolutions_total{outcome=\"resolved\",source=\"journal\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "vtp_refusals_total{request=\"claim\",reason=\"rejected\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "vtp_refusals_total{request=\"undecodable\",reason=\"malformed\"}"
        ),
        1.0
    );
    assert_eq!(metric(&text, "vtp_requests_total{kind=\"card\"}"), 1.0);
    assert_eq!(
        metric(
            &text,
            "vtp_device_op_duration_seconds_count{op=\"resolve\"}"
        ),
        1.0
    );
    assert!(metric(&text, "vtp_device_op_duration_seconds_sum{op=\"resolve\"}") > 0.0);
    assert!(
        text.contains(&format!("tp_id=\"{}\"", card.id().0.to_hex())),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));

    let status = d.terminate();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn only_subscribers_may_claim_when_the_policy_says_so() {
    let tp = TestTp::new();
    tp.edit_config(|t| {
        t.replace(
            "require_subscription = false",
            "require_subscription = true",
        )
    });
    let d = tp.start();
    let card = card_of(&d);
    let x = Exchange::new(&card, 3600);
    let bob = x.bob.id().0.to_hex();

    let e = refusal(d.ask(&x.claim()));
    assert_eq!(e.code, ErrorCode::NotAuthorized);
    assert!(
        e.message.contains("subscribers only") && e.message.contains(&bob),
        "{}",
        e.message
    );

    // Subscribing takes effect at once (no reload).
    let out = tp
        .cli(&[
            "subscribers",
            "add",
            &bob,
            "--note",
            "Bob, invoice 42",
            "--expires",
            "365d",
        ])
        .ok()
        .stdout;
    assert!(
        out.contains("added subscriber") && out.contains("active until"),
        "{out}"
    );
    let first = d.ask(&x.claim());
    assert!(
        matches!(first, Response::Claim(ClaimOutcome::Resolved { .. })),
        "{first:?}"
    );

    let list = tp.cli(&["subscribers", "list"]).ok().stdout;
    assert!(
        list.contains("require_subscription = true (1 subscribers)"),
        "{list}"
    );
    assert!(
        list.contains(&bob) && list.contains("Bob, invoice 42"),
        "{list}"
    );

    // Removing him: what was resolved stays answerable; new claims are refused.
    tp.cli(&["subscribers", "remove", &bob]).ok();
    assert_eq!(d.ask(&x.claim()), first);
    let y = Exchange::new(&card, 3600);
    assert_eq!(refusal(d.ask(&y.claim())).code, ErrorCode::NotAuthorized);
    let e = tp.cli(&["subscribers", "remove", &bob]).fails();
    assert!(e.error_line().contains("is not a subscriber"), "{e:?}");

    // An expired subscription (added by card file).
    let card_file = tp.path().join("y-bob.card");
    std::fs::write(&card_file, y.bob.card().to_file()).unwrap();
    tp.cli(&[
        "subscribers",
        "add",
        card_file.to_str().unwrap(),
        "--expires",
        "2001-01-01T00:00:00Z",
    ])
    .ok();
    let e = refusal(d.ask(&y.claim()));
    assert!(
        e.message.contains("expired at 2001-01-01T00:00:00Z"),
        "{}",
        e.message
    );

    let e = tp.cli(&["subscribers", "add", "not-an-identity"]).fails();
    assert!(e.error_line().contains("not-an-identity"), "{e:?}");
    let audit = tp.cli(&["journal", "audit"]).ok().stdout;
    for ev in ["subscriber.added", "subscriber.removed"] {
        assert!(audit.contains(ev), "{audit}");
    }
}

#[test]
fn json_logs() {
    let tp = TestTp::new();
    let d = tp.start_with(&["--allow-root", "--log-format", "json"], &[]);
    card_of(&d);
    let log = d.log_text();
    let ready = log
        .lines()
        .find(|l| l.contains("trusted party ready"))
        .unwrap_or_else(|| panic!("{log}"));
    let v: serde_json::Value = serde_json::from_str(ready).unwrap();
    assert_eq!(v["level"], "INFO");
    assert!(v["tp"].is_string() && v["current_key"].is_string(), "{v}");
}
