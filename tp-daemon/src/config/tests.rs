//! `Config::parse` and `Config::load` as a whole: defaults, every field, and
//! that each problem names the file, the line and the setting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vtp_device::TokenSelector;
use vtp_protocol::tp_card::Policy;
use vtp_protocol::wire::DEFAULT_MAX_FRAME;

use super::*;

const GOOD: &str = r#"name = "test TP"
data_dir = "data"
[token]
module = "/usr/lib/softhsm/libsofthsm2.so"
label = "vtp-dev"
pin_file = "user.pin"
[keys]
signing = "pkcs11:token=vtp-dev;object=vtp-sign-0011223344556677;id=%00%11%22%33%44%55%66%77;type=private"
[policy]
max_deadline_secs = 86400
[limits]
max_connections = 10
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/vtp/tp.toml"))
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

/// The error names the file, the line and each needle.
#[track_caller]
fn fails(text: &str, line: usize, needles: &[&str]) {
    let e = error(text);
    assert!(e.starts_with("config file /etc/vtp/tp.toml: "), "{e}");
    assert!(e.contains(&format!("line {line}")), "want line {line}: {e}");
    for n in needles {
        assert!(e.contains(n), "{n:?} not in {e}");
    }
}

fn with(line: &str, replacement: &str) -> String {
    assert!(GOOD.contains(line), "{line}");
    GOOD.replace(line, replacement)
}

#[test]
fn minimal_config_gets_defaults_and_absolute_paths() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(c.metrics_listen, None);
    assert_eq!(c.data_dir, Path::new("/etc/vtp/data"));
    assert_eq!(c.pin, PinSpec::File(PathBuf::from("/etc/vtp/user.pin")));
    assert_eq!(c.selector, TokenSelector::Label("vtp-dev".into()));
    assert_eq!(c.policy.max_deadline_secs, 86400);
    assert_eq!(c.policy.min_claim_window_secs, 60);
    assert_eq!(c.policy.clock_skew_secs, 300);
    assert!(!c.require_subscription);
    assert_eq!(c.limits.max_connections, 10);
    assert_eq!(c.limits.max_frame_bytes, DEFAULT_MAX_FRAME);
    assert_eq!(
        c.keys.signing.clone().unwrap().id.unwrap().to_string(),
        "0011223344556677"
    );
    assert_eq!(c.keys.signing.clone().unwrap().line, 8);
    assert_eq!(
        c.keys
            .signing
            .clone()
            .unwrap()
            .uri
            .as_ref()
            .unwrap()
            .token
            .as_deref(),
        Some("vtp-dev")
    );
    assert_eq!(c.keys.rsa_bits, 3072);
    assert_eq!(c.keys.oaep, OaepChoice::Auto);
    assert!(c.keys.legacy_encryption.is_empty());
    assert!(c.softhsm2_conf.is_none());
}

#[test]
fn every_field_parses() {
    let c = parse(
        r#"name = "TP"
listen = "0.0.0.0:7400"
metrics_listen = "127.0.0.1:7401"
data_dir = "/var/lib/vtp"
[token]
module = "/usr/lib/x.so"
serial = "0123456789abcdef"
pin_env = "VTP_TP_PIN"
softhsm2_conf = "softhsm2.conf"
[keys]
signing = "0011223344556677"
rsa_bits = 4096
oaep = "sha256"
[policy]
max_deadline_secs = 3600
min_claim_window_secs = 120
clock_skew_secs = 30
require_subscription = true
min_threshold = 2
max_trustees = 5
[limits]
max_frame_bytes = 65536
max_connections = 5
idle_timeout_secs = 9
first_frame_timeout_secs = 4
max_connections_per_ip = 3
max_connection_secs = 120
identity_rate_per_sec = 2
identity_burst = 7
device_threads = 8
commit_delay_us = 500
"#,
    )
    .unwrap();
    assert_eq!(c.metrics_listen, Some("127.0.0.1:7401".parse().unwrap()));
    assert_eq!(c.selector, TokenSelector::Serial("0123456789abcdef".into()));
    assert_eq!(c.pin, PinSpec::Env("VTP_TP_PIN".into()));
    assert_eq!(
        c.softhsm2_conf.as_deref(),
        Some(Path::new("/etc/vtp/softhsm2.conf"))
    );
    assert_eq!(c.keys.rsa_bits, 4096);
    assert_eq!(c.keys.oaep, OaepChoice::Sha256);
    assert!(c.keys.signing.clone().unwrap().uri.is_none());
    assert_eq!(
        c.policy,
        Policy {
            max_deadline_secs: 3600,
            min_claim_window_secs: 120,
            clock_skew_secs: 30,
            min_threshold: 2,
            max_trustees: 5,
        }
    );
    assert!(c.require_subscription);
    assert_eq!(
        c.limits,
        Limits {
            max_frame_bytes: 65536,
            max_connections: 5,
            idle_timeout_secs: 9,
            first_frame_timeout_secs: 4,
            max_connections_per_ip: 3,
            max_connection_secs: 120,
            identity_rate_per_sec: 2,
            identity_burst: 7,
            device_threads: 8,
            commit_delay_us: 500,
        }
    );
    assert_eq!(c.limits.device_threads(), 8);
    assert_eq!(c.limits.commit_delay(), Duration::from_micros(500));
    assert_eq!(c.limits.first_frame_timeout(), Duration::from_secs(4));
}

#[test]
fn unknown_fields_name_file_line_and_field() {
    fails(&with("[keys]", "[keys]\nsigninq = \"x\""), 8, &["signinq"]);
    fails(
        &with("max_connections = 10", "max_conections = 5"),
        12,
        &["max_conections"],
    );
    fails(&format!("{GOOD}[logging]\nlevel = 1\n"), 13, &["logging"]);
    fails(
        &with("label = \"vtp-dev\"", "label = \"vtp-dev\"\nslot = 0"),
        6,
        &["slot"],
    );
    fails(
        &with("[policy]", "[policy]\nmax_deadline = 5"),
        10,
        &["max_deadline"],
    );
}

#[test]
fn bad_values_name_their_line() {
    // Each bad field on its own.
    fails(&with("name = \"test TP\"", "name = \" \""), 1, &["`name`"]);
    fails(&with("name = \"test TP\"", "name = 5"), 1, &["string"]);
    fails(
        &with("data_dir = \"data\"", "data_dir = \"\""),
        2,
        &["`data_dir`"],
    );
    fails(
        &with("data_dir", "listen = \"not an address\"\ndata_dir"),
        2,
        &["invalid socket address"],
    );
    fails(
        &with("data_dir", "metrics_listen = \"127.0.0.1\"\ndata_dir"),
        2,
        &["invalid socket address"],
    );
    fails(
        &with(
            "data_dir",
            "listen = \"127.0.0.1:7400\"\nmetrics_listen = \"127.0.0.1:7400\"\ndata_dir",
        ),
        3,
        &["must differ from `listen`"],
    );
    fails(
        &with(
            "module = \"/usr/lib/softhsm/libsofthsm2.so\"",
            "module = \"\"",
        ),
        4,
        &["`module`"],
    );
    fails(
        &with("label = \"vtp-dev\"", "label = \"\""),
        5,
        &["`label`"],
    );
    fails(
        &with("label = \"vtp-dev\"", "serial = \"\""),
        5,
        &["`serial`"],
    );
    fails(
        &with("pin_file = \"user.pin\"", "pin_env = \"A=B\""),
        6,
        &["`pin_env`"],
    );
    fails(
        &with("pin_file = \"user.pin\"", "pin_file = 7"),
        6,
        &["pin_file"],
    );
    fails(
        &with("pin_file = \"user.pin\"", "insecure_literal_pin = \"\""),
        6,
        &["`insecure_literal_pin`"],
    );
    fails(
        &with("[keys]", "[keys]\nrsa_bits = 1024"),
        8,
        &["`rsa_bits` is 1024", "2048"],
    );
    fails(
        &with("[keys]", "[keys]\nrsa_bits = \"big\""),
        8,
        &["rsa_bits"],
    );
    fails(&with("[keys]", "[keys]\noaep = \"md5\""), 8, &["md5"]);
    fails(
        &with("max_deadline_secs = 86400", "max_deadline_secs = 0"),
        10,
        &["max_deadline_secs"],
    );
    fails(
        &with(
            "max_deadline_secs = 86400",
            "max_deadline_secs = 999999999999",
        ),
        10,
        &["10 years"],
    );
    fails(
        &with("max_deadline_secs = 86400", "max_deadline_secs = -5"),
        10,
        &["max_deadline_secs"],
    );
    fails(
        &with("[policy]", "[policy]\nmin_claim_window_secs = 999999999"),
        10,
        &["min_claim_window_secs"],
    );
    fails(
        &with("[policy]", "[policy]\nmin_claim_window_secs = 0"),
        10,
        &["min_claim_window_secs"],
    );
    fails(
        &with("[policy]", "[policy]\nclock_skew_secs = 100000"),
        10,
        &["clock_skew_secs"],
    );
    fails(
        &with("[policy]", "[policy]\nclock_skew_secs = 86380"),
        10,
        &["min_claim_window_secs", "clock_skew_secs", "86400"],
    );
    fails(
        &with("[policy]", "[policy]\nrequire_subscription = \"yes\""),
        10,
        &["require_subscription"],
    );
    fails(
        &format!("{GOOD}max_frame_bytes = 10\n"),
        13,
        &["max_frame_bytes", "8192"],
    );
    fails(
        &with("max_connections = 10", "max_connections = 0"),
        12,
        &["max_connections"],
    );
    fails(
        &format!("{GOOD}idle_timeout_secs = 0\n"),
        13,
        &["idle_timeout_secs"],
    );
    fails(
        &format!("{GOOD}idle_timeout_secs = 99999\n"),
        13,
        &["idle_timeout_secs"],
    );
    fails(
        &format!("{GOOD}first_frame_timeout_secs = 0\n"),
        13,
        &["first_frame_timeout_secs"],
    );
    fails(
        &format!("{GOOD}idle_timeout_secs = 10\nfirst_frame_timeout_secs = 11\n"),
        14,
        &["first_frame_timeout_secs", "(10)"],
    );
    fails(
        &format!("{GOOD}max_connections_per_ip = 0\n"),
        13,
        &["max_connections_per_ip"],
    );
    fails(
        &format!("{GOOD}idle_timeout_secs = 60\nmax_connection_secs = 59\n"),
        14,
        &["max_connection_secs", "(60)"],
    );
    fails(
        &format!("{GOOD}identity_rate_per_sec = 1.5\n"),
        13,
        &["identity_rate_per_sec"],
    );
    fails(
        &format!("{GOOD}identity_burst = 0\n"),
        13,
        &["identity_burst"],
    );
    fails(
        &format!("{GOOD}device_threads = 1025\n"),
        13,
        &["device_threads", "1025", "1024"],
    );
    fails(
        &format!("{GOOD}commit_delay_us = 100001\n"),
        13,
        &["commit_delay_us", "100001"],
    );
    fails(
        &format!("{GOOD}device_threads = -1\n"),
        13,
        &["device_threads"],
    );
}

#[test]
fn missing_required_fields_are_named() {
    let e = error(&with("name = \"test TP\"\n", ""));
    assert!(e.contains("missing field `name`"), "{e}");
    let e = error(&with("data_dir = \"data\"\n", ""));
    assert!(e.contains("`data_dir`"), "{e}");
    let e = error(&with("module = \"/usr/lib/softhsm/libsofthsm2.so\"\n", ""));
    assert!(e.contains("`module`"), "{e}");
    // No [keys] yet (setting up a TP): valid here, refused by `serve`.
    let c = parse(&GOOD.replace(
        &GOOD[GOOD.find("[keys]").unwrap()..GOOD.find("[policy]").unwrap()],
        "",
    ))
    .unwrap();
    assert!(c.keys.signing.is_none());
}

#[test]
fn key_references_are_checked() {
    let sig = GOOD.lines().nth(7).unwrap();
    fails(
        &with(sig, "signing = \"00112233\""),
        8,
        &["[keys] `signing`", "\"00112233\"", "16-hex-digit"],
    );
    fails(
        &with(
            sig,
            "signing = \"pkcs11:token=a;colour=blue;id=%00%11%22%33%44%55%66%77\"",
        ),
        8,
        &["unknown attribute `colour`"],
    );
    fails(&with(sig, "signing = \"pkcs11:id=%00%11\""), 8, &["8-byte"]);
    fails(
        &with(sig, "signing = \"pkcs11:token=vtp-dev\""),
        8,
        &["names no key"],
    );
    fails(
        &with(
            sig,
            "signing = \"pkcs11:id=%00%11%22%33%44%55%66%77?pin-value=4711\"",
        ),
        8,
        &["never put a PIN"],
    );
    assert!(!error(&with(
        sig,
        "signing = \"pkcs11:id=%00%11%22%33%44%55%66%77?pin-value=4711\""
    ))
    .contains("4711"));
    // Query attributes other tools write: fine when they agree with [token]
    // (relative paths as in tp.toml), refused saying where they go.
    let id = "pkcs11:id=%00%11%22%33%44%55%66%77";
    for q in [
        "module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/vtp/user.pin",
        "module-path=/usr/lib/softhsm&module-name=softhsm2&pin-source=user.pin",
        "module-name=libsofthsm2.so&pin-source=file:///etc/vtp/user.pin",
    ] {
        parse(&with(sig, &format!("signing = \"{id}?{q}\""))).unwrap();
    }
    for (q, needle) in [
        ("pin-source=file:/etc/vtp/other.pin", "[token] `pin_file`"),
        ("pin-source=env:VTP_PIN", "[token] `pin_env`"),
        ("module-path=/opt/hsm/lib.so", "[token] `module`"),
        ("module-name=yubihsm_pkcs11", "[token] `module`"),
    ] {
        fails(
            &with(sig, &format!("signing = \"{id}?{q}\"")),
            8,
            &["[keys] `signing`", "tp.toml", needle],
        );
    }
    fails(
        &with(sig, &format!("signing = \"{id}?pin-source=user.pin\""))
            .replace("pin_file = \"user.pin\"", "pin_env = \"VTP_PIN\""),
        8,
        &["[token] `pin_file = \"/etc/vtp/user.pin\"`"],
    );
    // Object-only URIs and bare ids are fine.
    let c = parse(&with(sig, "signing = \"pkcs11:object=vtp-sign-x\"")).unwrap();
    assert_eq!(c.keys.signing.clone().unwrap().id, None);
    let c = parse(&with(sig, "signing = \"0011223344556677\"")).unwrap();
    assert!(c.keys.signing.clone().unwrap().uri.is_none());
}

#[test]
fn legacy_encryption_keys_are_accepted_for_import() {
    let c = parse(&with(
        "[policy]",
        "encryption = [\"8899aabbccddeeff\", \"0102030405060708\"]\ncurrent = \"8899aabbccddeeff\"\n[policy]",
    ))
    .unwrap();
    assert_eq!(c.keys.legacy_encryption.len(), 2);
    assert_eq!(
        c.keys.legacy_current.unwrap().id.unwrap().to_string(),
        "8899aabbccddeeff"
    );
    fails(
        &with(
            "[policy]",
            "encryption = [\"8899aabbccddeeff\"]\ncurrent = \"1111111111111111\"\n[policy]",
        ),
        10,
        &["`current`", "must be one of"],
    );
    fails(
        &with("[policy]", "encryption = [\"8899aabbccddeeff\"]\n[policy]"),
        9,
        &["needs `current`"],
    );
    fails(
        &with(
            "[policy]",
            "encryption = [\"xyz\"]\ncurrent = \"xyz\"\n[policy]",
        ),
        9,
        &["`encryption`"],
    );
}

#[test]
fn pin_sources() {
    let pin_line = "pin_file = \"user.pin\"";
    fails(
        &with(pin_line, "pin = \"1234\""),
        6,
        &["literal PIN is not supported"],
    );
    assert!(!error(&with(pin_line, "pin = \"1234\"")).contains("1234"));
    fails(
        &with(pin_line, "pin_file = \"p\"\npin_env = \"X\""),
        7,
        &["exactly one of `pin_file`, `pin_env`"],
    );
    fails(
        &with(&format!("{pin_line}\n"), ""),
        3,
        &["set one of `pin_file` and `pin_env`"],
    );
    let c = parse(&with(pin_line, "pin_env = \"VTP_TP_PIN\"")).unwrap();
    assert_eq!(c.pin, PinSpec::Env("VTP_TP_PIN".into()));
    let c = parse(&with(pin_line, "insecure_literal_pin = \"4711\"")).unwrap();
    assert_eq!(format!("{:?}", c.pin), "InsecureLiteral(***)");
    assert!(!format!("{c:?}").contains("4711"));
}

#[test]
fn exactly_one_token_selector() {
    fails(
        &with("label = \"vtp-dev\"", "label = \"a\"\nserial = \"b\""),
        6,
        &["exactly one of `label` and `serial`"],
    );
    fails(
        &with("label = \"vtp-dev\"\n", ""),
        3,
        &["exactly one of `label` and `serial`"],
    );
}

#[test]
fn missing_file_is_named() {
    let e = Config::load(Path::new("/nonexistent/tp.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/nonexistent/tp.toml") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn the_documented_sample_is_valid() {
    let text = include_str!("../../../docs/tp.toml.sample");
    let c = Config::parse(text, Path::new("/etc/vtp/tp.toml")).unwrap();
    // Loopback unless opened up; no example key that exists on no token.
    assert_eq!(c.listen, "127.0.0.1:7400".parse().unwrap());
    assert_eq!(c.metrics_listen, Some("127.0.0.1:7401".parse().unwrap()));
    assert_eq!(c.pin, PinSpec::File("/etc/vtp/user.pin".into()));
    assert_eq!(c.keys.signing, None);
    let signing = text
        .lines()
        .find_map(|l| l.strip_prefix("# signing = "))
        .unwrap();
    let c = Config::parse(
        &text.replace(
            &format!("# signing = {signing}"),
            &format!("signing = {signing}"),
        ),
        Path::new("/etc/vtp/tp.toml"),
    )
    .unwrap();
    assert_eq!(
        c.keys.signing.clone().unwrap().id.unwrap().to_string(),
        "8f1e0c2b9a7d6e5f"
    );
    assert_eq!(c.policy, Policy::default());
    assert_eq!(c.limits, Limits::default());
    // Every commented-out alternative parses too.
    for (from, to) in [
        ("label = \"vtp-prod\"", "serial = \"8b4201fdcfdf8fe0\""),
        (
            "pin_file = \"/etc/vtp/user.pin\"",
            "pin_env = \"VTP_TP_PIN\"",
        ),
        ("# softhsm2_conf", "softhsm2_conf"),
    ] {
        assert!(text.contains(from), "{from}");
        Config::parse(&text.replace(from, to), Path::new("/etc/vtp/tp.toml")).unwrap();
    }
}

#[test]
fn syntax_errors_name_the_line() {
    fails(&with("[limits]", "[limits\n"), 11, &["tp.toml"]);
}

#[test]
fn card_addresses() {
    assert!(parse(GOOD).unwrap().addresses.is_empty());
    let c = parse(&with(
        "data_dir = \"data\"",
        "data_dir = \"data\"\naddresses = [\"tp.example:7400\", \"[::1]:7400\"]",
    ))
    .unwrap();
    assert_eq!(c.addresses, ["tp.example:7400", "[::1]:7400"]);
    fails(
        &with(
            "data_dir = \"data\"",
            "data_dir = \"data\"\naddresses = [\"tp example:7400\"]",
        ),
        3,
        &["`addresses`", "printable ASCII"],
    );
    let sample = include_str!("../../../docs/tp.toml.sample");
    assert_eq!(
        Config::parse(sample, Path::new("/etc/vtp/tp.toml"))
            .unwrap()
            .addresses,
        ["tp.example.com:7400"]
    );
}
