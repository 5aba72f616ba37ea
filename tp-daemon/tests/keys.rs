//! Key lifecycle with a real token and a running daemon: generate → list →
//! rotate (while serving, then SIGHUP) → an envelope made for the old key
//! still resolves → retire → claims for it are refused with a clear error.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vtp_protocol::claim::Claim;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{ClaimOutcome, ErrorCode, Request, Response, WireError};

fn outcome(r: Response) -> ClaimOutcome {
    match r {
        Response::Claim(o) => o,
        other => panic!("expected a claim outcome, got {other:?}"),
    }
}

fn refusal(r: Response) -> WireError {
    match r {
        Response::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn hex(k: vtp_protocol::KeyId) -> String {
    k.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `keys list` row of a key: its columns.
fn row<'a>(list: &'a str, id: &str) -> Vec<&'a str> {
    list.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{list}"))
        .split_whitespace()
        .collect()
}

/// Keys of a given state in `keys list` output.
fn ids_in_state(list: &str, state: &str) -> Vec<String> {
    list.lines()
        .filter(|l| l.starts_with("encryption") && l.split_whitespace().nth(5) == Some(state))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect()
}

/// Poll the daemon until its card satisfies `f` (after a SIGHUP).
fn wait_card(d: &Daemon, f: impl Fn(&TpCard) -> bool) -> TpCard {
    let start = Instant::now();
    loop {
        let c = card_of(d);
        if f(&c) {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the card did not change:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn generate_list_rotate_old_envelope_resolves_retire_refuses() {
    let tp = TestTp::new();

    // list: what init made.
    let list = tp.cli(&["keys", "list", "--uri"]).ok().stdout;
    let k1 = ids_in_state(&list, "current");
    assert_eq!(k1.len(), 1, "{list}");
    let k1 = k1[0].clone();
    let r = row(&list, &k1);
    assert_eq!(
        &r[..4],
        ["encryption", &k1, &format!("vtp-enc-{k1}-sha1"), "RSA-2048"]
    );
    assert_eq!(r[5], "current");
    assert!(r[6].ends_with('Z'), "creation time: {r:?}");
    assert_eq!(r[7], "ok", "attribute checks: {r:?}");
    let signing = list
        .lines()
        .find(|l| l.starts_with("signing"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        signing.contains("ECDSA P-256") && signing.contains("in-use"),
        "{signing}"
    );
    assert!(
        list.contains(&format!(
            "pkcs11:token=vtp-dev;object=vtp-enc-{k1}-sha1;id=%"
        )),
        "{list}"
    );

    // generate: a standby key, published but not current.
    let out = tp
        .cli(&["keys", "generate", "--encryption", "--rsa-bits", "2048"])
        .ok()
        .stdout;
    assert!(out.contains("state standby"), "{out}");
    let list = tp.cli(&["keys", "list"]).ok().stdout;
    let k2 = ids_in_state(&list, "standby");
    assert_eq!(k2.len(), 1, "{list}");
    let k2 = k2[0].clone();
    assert_eq!(row(&list, &k2)[7], "ok");

    let d = tp.start();
    let card1 = card_of(&d);
    assert_eq!(hex(card1.body().current_key), k1);
    assert_eq!(card1.body().enc_keys.len(), 2);
    // Envelopes made for K1 (a client holding the first card).
    let old = Exchange::new(&card1, 3600);
    let old_unclaimed = Exchange::new(&card1, 3600);
    assert_eq!(hex(old.envelope.header.trustees[0].key_id), k1);

    // rotate while the daemon runs: a new key K3 becomes current.
    let out = tp.cli(&["keys", "rotate"]).ok().stdout;
    assert!(out.contains("is now current") && out.contains(&k1), "{out}");
    let list = tp.cli(&["keys", "list"]).ok().stdout;
    let k3 = ids_in_state(&list, "current")[0].clone();
    assert_ne!(k3, k1);
    assert_eq!(ids_in_state(&list, "previous"), std::slice::from_ref(&k1));
    // The daemon still serves the old card until SIGHUP...
    assert_eq!(hex(card_of(&d).body().current_key), k1);
    d.hup();
    let card2 = wait_card(&d, |c| hex(c.body().current_key) == k3);
    assert_eq!(card2.id(), card1.id(), "same TP identity");
    assert_eq!(card2.body().enc_keys.len(), 3);
    d.wait_log("reloaded: serving a new TP card", 1);

    // A new envelope uses K3 and resolves.
    let new = Exchange::new(&card2, 3600);
    assert_eq!(hex(new.envelope.header.trustees[0].key_id), k3);
    assert!(matches!(
        outcome(d.ask(&new.claim())),
        ClaimOutcome::Resolved { .. }
    ));
    // The envelope made for the old key still resolves.
    let first = outcome(d.ask(&old.claim()));
    assert!(matches!(first, ClaimOutcome::Resolved { .. }), "{first:?}");

    // retire: refused while envelopes for K1 may be claimable...
    let e = tp.cli(&["keys", "retire", &k1]).fails();
    assert!(e.error_line().contains("--force"), "{e:?}");
    // ...and the current key cannot be retired at all.
    let e = tp.cli(&["keys", "retire", &k3, "--force"]).fails();
    assert!(e.error_line().contains("current encryption key"), "{e:?}");
    // By URI, with --force.
    let uri = format!("pkcs11:token=vtp-dev;object=vtp-enc-{k1}-sha1;type=private");
    let out = tp.cli(&["keys", "retire", &uri, "--force"]).ok().stdout;
    assert!(
        out.contains(&format!("encryption key {k1} retired")),
        "{out}"
    );
    d.hup();
    let card3 = wait_card(&d, |c| c.body().enc_keys.len() == 2);
    assert!(
        card3.key(old.envelope.header.trustees[0].key_id).is_err(),
        "K1 no longer published"
    );

    // A claim for another envelope made for K1: a clear refusal.
    let e = refusal(d.ask(&old_unclaimed.claim()));
    assert_eq!(e.code, ErrorCode::UnknownKey);
    assert!(
        e.message.contains(&format!("retired encryption key {k1}")),
        "{}",
        e.message
    );
    // The claim resolved before retirement is still answered, the same way.
    assert_eq!(outcome(d.ask(&old.claim())), first);

    // An id the TP never had.
    let mut claim = Claim::new(
        &old_unclaimed.bob,
        &old_unclaimed.verified,
        &old_unclaimed.receipt,
        now(),
    );
    claim.body.envelope.header.trustees[0].key_id = vtp_protocol::KeyId([7; 8]);
    let e = refusal(d.ask(&Request::Claim(claim)));
    assert_eq!(e.code, ErrorCode::UnknownKey);
    assert!(
        e.message.contains("has no encryption key 0707070707070707"),
        "{}",
        e.message
    );

    // Retirement survives a restart.
    drop(d);
    let d = tp.start();
    assert_eq!(card_of(&d).body().enc_keys.len(), 2);
    let e = refusal(d.ask(&old_unclaimed.claim()));
    assert!(e.message.contains("retired"), "{}", e.message);
    assert_eq!(tp.journal_stats(), (2, 0, 0));

    // Every key event is in the audit log.
    let audit = tp.cli(&["journal", "audit"]).ok().stdout;
    for needle in [
        format!("key.generated {k2}"),
        format!("key.generated {k3}"),
        format!("key.current {k3}"),
        format!("key.retired {k1}"),
        "retired with --force".to_owned(),
        "card.signed".to_owned(),
        "tp-daemon serve (SIGHUP)".to_owned(),
        "tp-daemon keys rotate (uid".to_owned(),
    ] {
        assert!(audit.contains(&needle), "{needle} not in:\n{audit}");
    }
    let list = tp.cli(&["keys", "list"]).ok().stdout;
    assert_eq!(ids_in_state(&list, "retired"), [k1]);
}

#[test]
fn rotate_to_a_standby_key_and_export_the_card() {
    let tp = TestTp::new();
    let out = tp
        .cli(&["keys", "generate", "--rsa-bits", "2048", "--oaep", "sha1"])
        .ok()
        .stdout;
    let k2 = out.split_whitespace().nth(3).unwrap().to_owned();
    let out = tp.cli(&["keys", "rotate", "--to", &k2]).ok().stdout;
    assert!(
        out.contains(&format!("encryption key {k2} is now current")),
        "{out}"
    );
    let e = tp.cli(&["keys", "rotate", "--to", &k2]).fails();
    assert!(e.error_line().contains("already current"), "{e:?}");

    let card = tp.path().join("exported.card");
    let out = tp
        .cli(&["keys", "export", "--out", card.to_str().unwrap()])
        .ok()
        .stdout;
    assert!(out.contains("wrote TP card"), "{out}");
    let c = TpCard::from_file(&std::fs::read(&card).unwrap()).unwrap();
    assert_eq!(hex(c.body().current_key), k2);
    let audit = tp.cli(&["journal", "audit"]).ok().stdout;
    assert!(audit.contains("card.exported"), "{audit}");

    // Bad sizes are refused (and the failure is audited).
    let e = tp.cli(&["keys", "generate", "--rsa-bits", "1024"]).fails();
    assert!(e.error_line().contains("1024"), "{e:?}");
    assert!(tp
        .cli(&["journal", "audit"])
        .ok()
        .stdout
        .contains("key.generate-failed"));
}

#[test]
fn signing_key_rotation_needs_new_identity_and_edits_the_config_in_place() {
    let tp = TestTp::new();
    let before = std::fs::read_to_string(&tp.config).unwrap();
    let e = tp.cli(&["keys", "rotate", "--signing"]).fails();
    assert!(e.error_line().contains("--new-identity"), "{e:?}");
    let out = tp
        .cli(&["keys", "rotate", "--signing", "--new-identity"])
        .ok()
        .stdout;
    assert!(out.contains("NEW TP identity"), "{out}");
    let after = std::fs::read_to_string(&tp.config).unwrap();
    assert_ne!(before, after);
    // Only the signing line changed; comments and layout are kept.
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0]
        .1
        .starts_with("signing = \"pkcs11:token=vtp-dev;object=vtp-sign-"));
    assert_eq!(before.lines().count(), after.lines().count());
    let d = tp.start();
    let written =
        TpCard::from_file(&std::fs::read(tp.path().join("tp-card.vtp")).unwrap()).unwrap();
    assert_ne!(card_of(&d).id(), written.id(), "a new identity");
}

#[test]
fn a_legacy_config_is_imported_into_the_key_ring() {
    let tp = TestTp::new();
    let list = tp.cli(&["keys", "list"]).ok().stdout;
    let k1 = ids_in_state(&list, "current")[0].clone();
    // A pre-key-ring data directory: the keys listed in tp.toml, no ring.
    std::fs::remove_file(tp.path().join("journal.sqlite3")).unwrap();
    tp.edit_config(|t| {
        t.replace(
            "rsa_bits = 2048",
            &format!("encryption = [\"{k1}\"]\ncurrent = \"{k1}\"\nrsa_bits = 2048"),
        )
    });
    let d = tp.start();
    assert_eq!(hex(card_of(&d).body().current_key), k1);
    drop(d);
    let audit = tp.cli(&["journal", "audit"]).ok().stdout;
    assert!(audit.contains(&format!("key.imported {k1}")), "{audit}");
    // Once the ring exists, the legacy lines are ignored (with a warning).
    let d = tp.start();
    assert!(d.log_text().contains("are ignored"), "{}", d.log_text());
}

/// The operator's guide on a fresh token: the documented sample config
/// without a signing key, `keys generate --signing`, the URI into the
/// config, `keys generate --encryption`, `serve`.
#[test]
fn setting_up_a_tp_from_scratch_with_the_documented_sample() {
    let dir = TestTp::empty_dir();
    let dev =
        vtp_device::softhsm::create_dev_token(&dir.path().join("softhsm"), "vtp-prod").unwrap();
    let sample = include_str!("../../docs/tp.toml.sample");
    let data = dir.path().join("data");
    let config = sample
        .replace("metrics_listen = \"127.0.0.1:7401\"\n", "")
        .replace("\"/etc/vtp/user.pin\"", &format!("{:?}", dev.pin_file))
        .replace(
            "data_dir = \"/var/lib/vtp\"",
            &format!("data_dir = {:?}", data),
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

    // Without a signing key the daemon says what to do.
    let (_, stderr) = tp.serve_expecting_failure();
    assert!(
        stderr.contains("`tp-daemon keys generate --signing`"),
        "{stderr}"
    );

    let out = tp.cli(&["keys", "generate", "--signing"]).ok().stdout;
    let uri = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("uri: "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    assert!(out.contains("put that URI into [keys] signing"), "{out}");
    assert!(
        uri.starts_with("pkcs11:token=vtp-prod;object=vtp-sign-"),
        "{uri}"
    );
    tp.edit_config(|t| t.replace("[keys]\n", &format!("[keys]\nsigning = \"{uri}\"\n")));

    // The first encryption key becomes current; oaep = "auto" probes the
    // token (SoftHSM 2.6: SHA-1).
    let out = tp
        .cli(&["keys", "generate", "--encryption", "--rsa-bits", "2048"])
        .ok()
        .stdout;
    assert!(
        out.contains("OAEP-SHA1") && out.contains("state current"),
        "{out}"
    );
    let list = tp.cli(&["keys", "list"]).ok().stdout;
    assert_eq!(
        list.lines().filter(|l| l.ends_with(" ok")).count(),
        2,
        "{list}"
    );
    assert!(list.contains("in-use"), "{list}");

    let d = tp.start();
    let card = card_of(&d);
    assert_eq!(card.body().name, "Example Corp certified-mail TP");
    let x = Exchange::new(&card, 3600);
    assert!(matches!(
        outcome(d.ask(&x.claim())),
        ClaimOutcome::Resolved { .. }
    ));
}

/// The key's `superseded_at` in the journal.
fn superseded_at(tp: &TestTp, k: vtp_protocol::KeyId) -> u64 {
    tp.journal_db()
        .query_row(
            "SELECT superseded_at FROM keyring WHERE key_id = ?1",
            [&k.0[..]],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as u64
}

/// Audit finding 3: a daemon that was not sent SIGHUP after `keys rotate`
/// keeps offering the old key as current, and keeps re-signing its card
/// (refresh). An envelope Bob accepted under such a card has a deadline
/// after `superseded_at + horizon + skew` (the old retirement rule), and it
/// stays claimable: a non-forced retire waits for the latest deadline of
/// the last card that offered the key.
#[test]
fn retire_waits_for_the_last_card_that_offered_the_key() {
    use vtp_tp_daemon::clock::rfc3339;
    let tp = TestTp::new();
    // Horizon 160 s (the daemon re-signs its card every 10 s), skew 20 s.
    tp.edit_config(|t| {
        t.replace("max_deadline_secs = 7776000", "max_deadline_secs = 160")
            .replace("clock_skew_secs = 300", "clock_skew_secs = 20")
    });
    let reach = 160 + 20;
    let d = tp.start();
    let card1 = card_of(&d);
    let k1 = card1.body().current_key;
    assert_eq!(card1.latest_deadline(), card1.body().created + reach);

    // Rotate, but the daemon is not told yet.
    tp.cli(&["keys", "rotate"]).ok();
    let s = superseded_at(&tp, k1);
    // It re-signs its card, still with K1 current.
    let card2 = wait_card(&d, |c| c.body().created > s);
    assert_eq!(card2.body().current_key, k1);
    assert!(d.log_text().contains("re-signed the TP card (refresh)"));

    // Bob accepts an envelope under that card with the latest deadline it
    // allows: later than the old rule's retirement moment.
    let x = Exchange::new(&card2, card2.latest_deadline() - now() - 1);
    let deadline = x.envelope.header.deadline;
    x.verified
        .check_for_recipient(x.bob.id(), std::slice::from_ref(&card2), now(), 60)
        .unwrap();
    let old_rule = s + reach;
    assert!(deadline > old_rule + 5, "{deadline} {old_rule}");

    d.hup();
    wait_card(&d, |c| c.body().current_key != k1);
    let k1_hex = hex(k1);
    // What the journal recorded for K1: the last card offering it.
    let (last_signed, safe): (i64, i64) = tp
        .journal_db()
        .query_row(
            "SELECT last_signed, latest_deadline FROM key_offers WHERE key_id = ?1",
            [&k1.0[..]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let safe = safe as u64;
    assert!(last_signed as u64 >= card2.body().created);
    assert!(safe >= card2.latest_deadline() && safe > deadline);

    // Retiring now is refused, naming the time.
    let e = tp.cli(&["keys", "retire", &k1_hex]).fails();
    assert!(
        e.error_line()
            .contains(&format!("Wait until {}", rfc3339(safe))),
        "{e:?}"
    );
    // At the old rule's moment (the command's clock shifted): still refused.
    let shifted = |at: u64| (at as i64 - now() as i64).to_string();
    let e = tp
        .cli_with_env(
            &["keys", "retire", &k1_hex],
            &[("VTP_TEST_CLOCK_OFFSET_SECS", &shifted(old_rule + 1))],
        )
        .fails();
    assert!(e.error_line().contains(&rfc3339(safe)), "{e:?}");
    assert!(e.stderr.contains("SHIFTED clock"), "{e:?}");

    // And the envelope is indeed still claimable then (the daemon's clock
    // shifted past the old rule's moment, before the deadline).
    drop(d);
    let d = tp.start_with_env(&[("VTP_TEST_CLOCK_OFFSET_SECS", &shifted(old_rule + 3))]);
    let first = outcome(d.ask(&x.claim()));
    assert!(matches!(first, ClaimOutcome::Resolved { .. }), "{first:?}");

    // Just before the safe moment: refused; from it on: retired, no --force.
    tp.cli_with_env(
        &["keys", "retire", &k1_hex],
        &[("VTP_TEST_CLOCK_OFFSET_SECS", &shifted(safe - 5))],
    )
    .fails();
    let out = tp
        .cli_with_env(
            &["keys", "retire", &k1_hex],
            &[("VTP_TEST_CLOCK_OFFSET_SECS", &shifted(safe))],
        )
        .ok()
        .stdout;
    assert!(
        out.contains(&format!("encryption key {k1_hex} retired")),
        "{out}"
    );
    assert!(!out.contains("forced before"), "{out}");
    let audit = tp.cli(&["journal", "audit"]).ok().stdout;
    assert!(audit.contains("tp-daemon serve (card refresh)"), "{audit}");
}

/// `--force` still retires early, and says what it may strand.
#[test]
fn forced_retire_says_what_it_may_strand() {
    let tp = TestTp::new();
    let d = tp.start();
    let k1 = hex(card_of(&d).body().current_key);
    tp.cli(&["keys", "rotate"]).ok();
    let out = tp.cli(&["keys", "retire", &k1, "--force"]).ok().stdout;
    assert!(
        out.contains("forced before") && out.contains("can no longer claim"),
        "{out}"
    );
}
