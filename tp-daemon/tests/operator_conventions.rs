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

    // An ACL is judged by its entries: systemd's LoadCredential= copy
    // (owner read, plus read for the service user through the ACL) passes,
    // one that lets another user read is refused. (Skipped where the file
    // system has no ACLs.)
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    chmod(&pin, 0o400);
    if set_acl(
        &pin,
        &[
            (0x01, 4, u32::MAX),
            (0x02, 4, me),
            (0x04, 0, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ],
    ) {
        assert!(tp.start().terminate().success());
        let other = if me == 1000 { 1001 } else { 1000 };
        set_acl(
            &pin,
            &[
                (0x01, 4, u32::MAX),
                (0x02, 4, other),
                (0x04, 0, u32::MAX),
                (0x10, 4, u32::MAX),
                (0x20, 0, u32::MAX),
            ],
        );
        let line = serve_error(&tp);
        assert!(
            line.contains(&format!("its ACL lets user {other} read it")),
            "{line}"
        );
    }
}

/// Set a POSIX access ACL (tag, permissions, id) the way `setfacl` does;
/// false where the file system does not support ACLs.
fn set_acl(path: &std::path::Path, entries: &[(u16, u16, u32)]) -> bool {
    let mut value = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        value.extend(tag.to_le_bytes());
        value.extend(perm.to_le_bytes());
        value.extend(id.to_le_bytes());
    }
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: valid C strings and a buffer of the given length.
    unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
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

// ---- 4. `tp-daemon check`, systemd readiness, /healthz -------------------------

/// Every file directly in the data directory, with its contents (daemon
/// logs left out): what `check` must not change.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("daemon-"))
        .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
        .collect();
    files.sort();
    files
}

#[track_caller]
fn check_fails_with(tp: &TestTp, needles: &[&str]) {
    let run = tp.cli(&["check"]).fails();
    let line = run.error_line();
    for n in needles {
        assert!(line.contains(n), "{n:?} not in {line:?}");
    }
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.starts_with("tp-daemon:"))
            .count(),
        1,
        "one line: {run:?}"
    );
}

#[test]
fn check_tests_every_key_and_the_journal_without_writing_anything() {
    let tp = TestTp::new();
    let d = tp.start();
    let card = card_of(&d);
    assert!(matches!(
        d.ask(&Exchange::new(&card, 3600).claim()),
        Response::Claim(_)
    ));
    assert!(d.terminate().success());
    let key = card.body().current_key.to_string();

    let before = snapshot(tp.path());
    let out = tp.cli(&["check"]).ok().stdout;
    for needle in [
        "token \"vtp-dev\"",
        "signed a test digest, the signature verifies",
        &format!("encryption key {key} (RSA-2048 OAEP-SHA1, current): OAEP wrap/unwrap"),
        "head #1 ",
        "no daemon is serving this data directory",
        &format!("check passed: \"test TP\", TP id {}", card.id()),
    ] {
        assert!(out.contains(needle), "{needle:?} not in\n{out}");
    }
    assert_eq!(snapshot(tp.path()), before, "check wrote nothing");

    // Beside a running daemon (before a reload): passes, names it.
    let d = tp.start();
    let out = tp.cli(&["check"]).ok().stdout;
    assert!(
        out.contains(&format!("(pid {}) is serving", d.pid())),
        "{out}"
    );
    assert!(d.terminate().success());

    // Each problem: exit 1 and one line naming it.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let listen = config_value(&tp, "listen");
    tp.edit_config(|t| {
        t.replace(
            &format!("listen = \"{listen}\""),
            &format!("listen = \"{port}\""),
        )
    });
    check_fails_with(&tp, &[&format!("cannot listen on {port} (listen)")]);
    drop(busy);
    tp.cli(&["check"]).ok();

    let signing = config_value(&tp, "signing");
    tp.edit_config(|t| t.replace(&signing, "0123456789abcdef"));
    check_fails_with(&tp, &["signing key 0123456789abcdef"]);
    tp.edit_config(|t| t.replace("0123456789abcdef", &signing));

    let secret = std::fs::read(tp.pin_file()).unwrap();
    std::fs::write(tp.pin_file(), "wrong-pin-4711\n").unwrap();
    check_fails_with(&tp, &["token: ", "PIN"]);
    std::fs::write(tp.pin_file(), &secret).unwrap();

    let db = rusqlite::Connection::open(tp.path().join("journal.sqlite3")).unwrap();
    db.execute("UPDATE records SET hash = zeroblob(32) WHERE seq = 1", [])
        .unwrap();
    drop(db);
    check_fails_with(&tp, &["journal ", "journal.sqlite3"]);
}

/// A fake service manager: the NOTIFY_SOCKET end.
fn notify_socket(tp: &TestTp) -> (std::os::unix::net::UnixDatagram, String) {
    let path = tp.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    (sock, path.display().to_string())
}

fn next_message(sock: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn systemd_readiness_once_the_sockets_are_bound_and_stopping_at_sigterm() {
    let tp = TestTp::new();
    let (sock, path) = notify_socket(&tp);
    let d = tp.start_with(
        &["--allow-root", "--metrics-listen", "127.0.0.1:0"],
        &[("NOTIFY_SOCKET", &path)],
    );
    let ready = next_message(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", d.pid()))
            && ready.contains(&format!("STATUS=serving on {}", d.addr)),
        "{ready}"
    );
    // Ready means both sockets answer.
    assert!(matches!(d.ask(&Request::GetCard), Response::Card(_)));
    assert_eq!(d.http_get("/healthz").0, "HTTP/1.0 200 OK");
    d.send_term();
    let stopping = next_message(&sock);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    assert!(d.wait_exit(std::time::Duration::from_secs(30)).success());
}

#[test]
fn healthz_reports_a_token_that_stops_signing_and_recovers() {
    let tp = TestTp::new();
    let d = tp.start_with(
        &["--allow-root", "--metrics-listen", "127.0.0.1:0"],
        // Every decryption logs the process out of the token (as another
        // module user or a token reset would).
        &[("VTP_TEST_DEVICE_FAULT", "logout-every:1")],
    );
    assert_eq!(
        d.http_get("/healthz"),
        ("HTTP/1.0 200 OK".to_owned(), "ok\n".to_owned())
    );
    // Logged out, and the PIN cannot be read again: the token is lost.
    let pin = tp.pin_file();
    let away = tp.path().join("pin-away");
    std::fs::rename(&pin, &away).unwrap();
    let card = card_of(&d);
    let _ = d.ask(&Exchange::new(&card, 3600).claim());
    let wait_for = |want: &str| {
        let start = std::time::Instant::now();
        loop {
            let (status, body) = d.http_get("/healthz");
            if status.contains(want) {
                return body;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(40),
                "/healthz stays {status} {body:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let body = wait_for("503");
    assert!(
        body.starts_with("token: ") && body.ends_with('\n'),
        "{body:?}"
    );
    assert_eq!(body.lines().count(), 1, "{body:?}");
    assert_eq!(d.metric("vtp_healthy"), Some(0.0));
    d.wait_log("unhealthy: /healthz answers 503", 1);
    // The PIN is back: the probe logs in again, healthy again.
    std::fs::rename(&away, &pin).unwrap();
    assert_eq!(wait_for("200"), "ok\n");
    assert_eq!(d.metric("vtp_healthy"), Some(1.0));
    assert!(d.terminate().success());
}

// ---- 5. the sample config, relative module paths, verify on a backup ----------

/// docs/tp.toml.sample copied verbatim, with only what names this machine
/// changed: the token ([token] module, PIN file, SoftHSM config) and the
/// data directory; the addresses become port 0, to keep tests apart.
#[test]
fn a_verbatim_copy_of_the_sample_listens_on_loopback_and_serves_once_keys_exist() {
    let sample = include_str!("../../docs/tp.toml.sample");
    // Loopback unless the operator opens it up.
    assert!(
        sample.contains("\nlisten = \"127.0.0.1:7400\"\n"),
        "{sample}"
    );
    let dir = TestTp::empty_dir();
    let dev =
        vtp_device::softhsm::create_dev_token(&dir.path().join("softhsm"), "vtp-prod").unwrap();
    let data = dir.path().join("data");
    let config = sample
        .replace("metrics_listen = \"127.0.0.1:7401\"\n", "")
        .replace(
            "\nlisten = \"127.0.0.1:7400\"\n",
            "\nlisten = \"127.0.0.1:0\"\n",
        )
        .replace("\"/etc/vtp/user.pin\"", &format!("{:?}", dev.pin_file))
        .replace(
            "data_dir = \"/var/lib/vtp\"",
            &format!("data_dir = {data:?}"),
        )
        .replace(
            "# softhsm2_conf = \"/var/lib/vtp/softhsm/softhsm2.conf\"",
            &format!("softhsm2_conf = {:?}", dev.conf),
        )
        .replace(
            "module = \"/usr/lib/softhsm/libsofthsm2.so\"",
            &format!("module = {:?}", dev.module),
        );
    let path = dir.path().join("tp.toml");
    std::fs::write(&path, &config).unwrap();
    let tp = TestTp::custom(dir, path);

    // The copy names no key that is not there: it says what to do.
    let line = serve_error(&tp);
    assert!(
        line.contains("[keys] `signing` is not set")
            && line.contains("`tp-daemon keys generate --signing`"),
        "{line}"
    );
    let out = tp.cli(&["keys", "generate", "--signing"]).ok().stdout;
    let uri = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("uri: "))
        .unwrap()
        .to_owned();
    tp.edit_config(|t| {
        let commented = t
            .lines()
            .find(|l| l.starts_with("# signing = "))
            .expect("the sample shows `signing` commented out");
        t.replace(commented, &format!("signing = \"{uri}\""))
    });
    tp.cli(&["keys", "generate", "--encryption"]).ok();
    tp.cli(&["check"]).ok();
    let d = tp.start();
    assert!(matches!(
        d.ask(&Exchange::new(&card_of(&d), 3600).claim()),
        Response::Claim(_)
    ));
}

#[test]
fn a_relative_module_path_is_resolved_from_the_config_directory_and_named_if_missing() {
    let tp = TestTp::new();
    let module = config_value(&tp, "module");
    std::fs::create_dir(tp.path().join("lib")).unwrap();
    std::os::unix::fs::symlink(&module, tp.path().join("lib/module.so")).unwrap();
    tp.edit_config(|t| {
        t.replace(
            &format!("module = \"{module}\""),
            "module = \"lib/module.so\"",
        )
    });
    // From another working directory: the path is the config's, not ours.
    let run = std::process::Command::new(vtp_testkit::bin("tp-daemon"))
        .current_dir("/")
        .args(["check", "--config"])
        .arg(&tp.config)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    tp.edit_config(|t| t.replace("\"lib/module.so\"", "\"lib/missing-pkcs11.so\""));
    let line = serve_error(&tp);
    let tried = tp.path().join("lib/missing-pkcs11.so");
    assert!(
        line.contains("\"lib/missing-pkcs11.so\"")
            && line.contains(&format!("no such file {}", tried.display()))
            && line.contains("resolved from the directory of the config file"),
        "{line}"
    );
}

#[test]
fn journal_verify_on_a_backup_in_a_read_only_directory_writes_nothing_beside_it() {
    use std::os::unix::fs::PermissionsExt;
    let tp = TestTp::new();
    let d = tp.start();
    let card = card_of(&d);
    for _ in 0..2 {
        assert!(matches!(
            d.ask(&Exchange::new(&card, 3600).claim()),
            Response::Claim(_)
        ));
    }
    // A backup taken while the daemon runs, as docs/operators.md shows.
    let vacuumed = tp.path().join("backup-vacuum");
    std::fs::create_dir(&vacuumed).unwrap();
    let live = rusqlite::Connection::open(tp.path().join("journal.sqlite3")).unwrap();
    live.execute(
        "VACUUM INTO ?1",
        [vacuumed.join("journal.sqlite3").to_str().unwrap()],
    )
    .unwrap();
    drop(live);
    assert!(d.terminate().success());
    // And a plain copy of a stopped TP's file (in WAL mode).
    let copied = tp.path().join("backup-copy");
    std::fs::create_dir(&copied).unwrap();
    std::fs::copy(
        tp.path().join("journal.sqlite3"),
        copied.join("journal.sqlite3"),
    )
    .unwrap();

    for backup in [vacuumed, copied] {
        std::fs::set_permissions(&backup, std::fs::Permissions::from_mode(0o555)).unwrap();
        let config = backup.with_extension("toml");
        let text = std::fs::read_to_string(&tp.config).unwrap();
        let data_dir = config_value(&tp, "data_dir");
        std::fs::write(
            &config,
            text.replace(
                &format!("data_dir = \"{data_dir}\""),
                &format!("data_dir = {backup:?}"),
            ),
        )
        .unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new(vtp_testkit::bin("tp-daemon"))
                .args(args)
                .arg("--config")
                .arg(&config)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let out = run(&["journal", "verify"]);
        assert!(out.contains("journal OK: 2 records"), "{out}");
        run(&["journal", "stats"]);
        run(&["journal", "audit"]);
        let names: Vec<String> = std::fs::read_dir(&backup)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            ["journal.sqlite3"],
            "nothing written beside {backup:?}"
        );
        std::fs::set_permissions(&backup, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

// ---- 6. metrics: build, key ages, the refusals the operator sees --------------

#[test]
fn metrics_show_the_build_the_key_ages_and_refusals_clients_do_not_precheck() {
    let tp = TestTp::new();
    let day = 86_400.0;
    // The TP's clock a day ahead: the keys `init` just made are a day old.
    let d = tp.start_with(
        &["--allow-root", "--metrics-listen", "127.0.0.1:0"],
        &[("VTP_TEST_CLOCK_OFFSET_SECS", "86400")],
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        d.metric(&format!("vtp_build_info{{version=\"{version}\"}}")),
        Some(1.0)
    );
    let card = card_of(&d);
    let current = card.body().current_key.to_string();
    let signing = config_value(&tp, "signing");
    let signing = signing
        .split("object=vtp-sign-")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let around_a_day = |series: &str| {
        let v = d
            .metric(series)
            .unwrap_or_else(|| panic!("{series} not in /metrics"));
        assert!((day..day + 600.0).contains(&v), "{series} = {v}");
    };
    around_a_day(&format!(
        "vtp_key_age_seconds{{role=\"signing\",key_id=\"{signing}\"}}"
    ));
    around_a_day(&format!(
        "vtp_key_age_seconds{{role=\"encryption\",key_id=\"{current}\"}}"
    ));
    around_a_day(&format!("vtp_key_current_seconds{{key_id=\"{current}\"}}"));

    // The vtp client checks envelopes and receipts before it claims, but
    // not the deadline: a late claim reaches the TP and is counted.
    let late = Exchange::new(&card, 3600);
    let r = d.ask(&late.claim());
    assert!(matches!(r, Response::Error(_)), "{r:?}");
    assert_eq!(
        d.metric("vtp_refusals_total{request=\"claim\",reason=\"deadline\"}"),
        Some(1.0)
    );

    // A rotation, once reloaded, moves the gauges to the new key.
    tp.cli(&["keys", "rotate"]).ok();
    d.hup();
    d.wait_log("reloaded: serving a new TP card", 1);
    let new = card_of(&d).body().current_key.to_string();
    assert_ne!(new, current);
    let v = d
        .metric(&format!("vtp_key_current_seconds{{key_id=\"{new}\"}}"))
        .expect("the new key's series");
    assert!(v < day + 600.0, "{v}");
    let (_, text) = d.http_get("/metrics");
    assert!(
        !text.contains(&format!("vtp_key_current_seconds{{key_id=\"{current}\"}}")),
        "{text}"
    );
    assert!(d.terminate().success());
}
