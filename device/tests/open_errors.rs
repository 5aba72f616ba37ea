//! `Token::open` failures, each with a message that names what to fix.
//!
//! A separate test binary: a wrong-PIN login is only checked by the token in
//! a process that is not logged in yet (login state is per process), so no
//! test here ever logs in successfully.

use std::path::PathBuf;
use std::sync::OnceLock;

use vtp_device::devtoken::{create_dev_token, DevToken, DevTokenKind};
use vtp_device::{DeviceError, PinSource, Token, TokenConfig, TokenSelector};

mod common;

const LABEL: &str = "vtp-open-errors";
const PIN_VAR: &str = "VTP_DEVICE_TEST_PIN_FROM_ENV";

struct Fixture {
    dir: tempfile::TempDir,
    dev: DevToken,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("vtp-device-open-errors-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        // All environment changes happen here, once, before any test reads it.
        let dev = common::dev_token(dir.path(), LABEL);
        std::env::set_var(PIN_VAR, "env-pin-value\n");
        Fixture { dir, dev }
    })
}

/// Every test of this binary runs alone. The fixture changes the process
/// environment (`set_var`) while other threads could be reading it (spawning
/// `softhsm2-util`, a module calling `getenv` in `C_Initialize`), which is
/// undefined behaviour in glibc and was seen here as a SIGSEGV in about one
/// parallel run in three. The tests take milliseconds; serializing costs
/// nothing.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn config() -> TokenConfig {
    fixture().dev.token_config()
}

#[test]
fn missing_module_names_the_path() {
    let _serial = serial();
    let mut cfg = config();
    cfg.module = PathBuf::from("/nonexistent/libpkcs11-missing.so");
    let e = Token::open(&cfg).unwrap_err();
    assert!(matches!(e, DeviceError::ModuleLoad { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("/nonexistent/libpkcs11-missing.so"), "{msg}");
    assert!(msg.contains("check `module`"), "{msg}");
}

#[test]
fn a_file_that_is_not_a_module_is_a_module_error() {
    let _serial = serial();
    let mut cfg = config();
    cfg.module = fixture().dev.conf.clone();
    let e = Token::open(&cfg).unwrap_err();
    assert!(matches!(e, DeviceError::ModuleLoad { .. }), "{e}");
    let name = fixture().dev.conf.file_name().unwrap().to_str().unwrap();
    assert!(e.to_string().contains(name), "{e}");
}

#[test]
fn unknown_label_lists_the_tokens_present() {
    let _serial = serial();
    let mut cfg = config();
    cfg.token = TokenSelector::Label("no-such-token".into());
    let e = Token::open(&cfg).unwrap_err();
    match &e {
        DeviceError::TokenNotFound {
            selector,
            available,
        } => {
            assert!(selector.contains("no-such-token"));
            assert!(available.iter().any(|t| t.contains(LABEL)), "{available:?}");
        }
        other => panic!("expected TokenNotFound, got {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("no-such-token") && msg.contains(LABEL),
        "{msg}"
    );
}

#[test]
fn unknown_serial_is_not_found() {
    let _serial = serial();
    let mut cfg = config();
    cfg.token = TokenSelector::Serial("0000000000000000".into());
    let e = Token::open(&cfg).unwrap_err();
    assert!(matches!(e, DeviceError::TokenNotFound { .. }), "{e}");
    assert!(e.to_string().contains("serial \"0000000000000000\""), "{e}");
}

#[test]
fn wrong_pin_is_reported_as_such() {
    let _serial = serial();
    let f = fixture();
    let wrong = f.dir.path().join("wrong.pin");
    std::fs::write(&wrong, "not-the-pin\n").unwrap();
    let mut cfg = config();
    cfg.pin = PinSource::File(wrong);
    let e = Token::open(&cfg).unwrap_err();
    assert!(matches!(e, DeviceError::WrongPin { .. }), "{e}");
    assert!(e.to_string().contains(LABEL), "{e}");
}

#[test]
fn unset_pin_variable_names_it() {
    let _serial = serial();
    fixture();
    let mut cfg = config();
    cfg.pin = PinSource::Env("VTP_DEVICE_TEST_PIN_NEVER_SET".into());
    let e = Token::open(&cfg).unwrap_err();
    assert!(matches!(e, DeviceError::PinSource { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("VTP_DEVICE_TEST_PIN_NEVER_SET") && msg.contains("not set"),
        "{msg}"
    );
}

#[test]
fn missing_pin_file_names_it() {
    let _serial = serial();
    let f = fixture();
    let mut cfg = config();
    let missing = f.dir.path().join("missing.pin");
    cfg.pin = PinSource::File(missing.clone());
    let e = Token::open(&cfg).unwrap_err();
    assert!(matches!(e, DeviceError::PinSource { .. }), "{e}");
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
}

#[test]
fn pin_from_environment_is_read_and_trimmed() {
    let _serial = serial();
    fixture();
    let pin = PinSource::Env(PIN_VAR.into()).read().unwrap();
    assert_eq!(format!("{pin:?}"), "Pin(***)");
}

#[test]
fn dev_token_files_are_private() {
    let _serial = serial();
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    for p in [&f.dev.pin_file, &f.dev.so_pin_file] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    let conf = std::fs::read_to_string(&f.dev.conf).unwrap();
    let dir = f.dir.path().canonicalize().unwrap();
    match f.dev.kind {
        DevTokenKind::SoftHsm => {
            assert!(conf.contains("objectstore.backend = file"), "{conf}");
            assert!(conf.contains(&dir.join("tokens").display().to_string()));
        }
        DevTokenKind::Kryoptic => {
            assert!(conf.contains("dbtype = \"sqlite\""), "{conf}");
            let db = dir.join("token.sqlite");
            assert!(conf.contains(&db.display().to_string()), "{conf}");
            assert!(db.is_file(), "{}", db.display());
        }
    }
    assert_eq!(f.dev.conf_env().0, f.dev.kind.conf_var());
}

#[test]
fn dev_token_directory_must_be_fresh() {
    let _serial = serial();
    let f = fixture();
    let e = create_dev_token(f.dev.kind, f.dir.path(), "again").unwrap_err();
    assert!(matches!(e, DeviceError::DevToken { .. }), "{e}");
    assert!(e.to_string().contains("already exists"), "{e}");
}
