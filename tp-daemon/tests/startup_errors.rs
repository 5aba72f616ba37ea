//! `tp-daemon serve` refuses to start with a clear one-line message when its
//! token, PIN, keys or config are wrong.

mod common;

use common::*;

fn fails_with(tp: &TestTp, needles: &[&str]) -> String {
    let (status, stderr) = tp.serve_expecting_failure();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("tp-daemon: error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    for n in needles {
        assert!(line.contains(n), "{n:?} not in {line:?}");
    }
    stderr
}

#[test]
fn wrong_pin() {
    let tp = TestTp::new();
    std::fs::write(tp.pin_file(), "wrong-pin-4711\n").unwrap();
    let stderr = fails_with(&tp, &["PIN"]);
    assert!(
        !stderr.contains("wrong-pin-4711"),
        "never print a PIN: {stderr}"
    );
}

#[test]
fn missing_module() {
    let tp = TestTp::new();
    tp.edit_config(|t| {
        t.replace(
            "/usr/lib/softhsm/libsofthsm2.so",
            "/nonexistent/lib/libnope-pkcs11.so",
        )
    });
    fails_with(&tp, &["/nonexistent/lib/libnope-pkcs11.so"]);
}

#[test]
fn missing_token() {
    let tp = TestTp::new();
    tp.edit_config(|t| t.replace("label = \"vtp-dev\"", "label = \"no-such-token\""));
    fails_with(&tp, &["no-such-token"]);
}

#[test]
fn missing_key() {
    let tp = TestTp::new();
    tp.edit_config(|t| {
        let line = t.lines().find(|l| l.starts_with("signing = ")).unwrap();
        t.replace(line, "signing = \"0123456789abcdef\"")
    });
    fails_with(&tp, &["0123456789abcdef"]);
}

#[test]
fn unset_pin_variable() {
    let tp = TestTp::new();
    tp.edit_config(|t| {
        let line = t.lines().find(|l| l.starts_with("pin_file = ")).unwrap();
        t.replace(line, "pin_env = \"VTP_TEST_SURELY_UNSET_PIN_VAR\"")
    });
    fails_with(&tp, &["VTP_TEST_SURELY_UNSET_PIN_VAR", "not set"]);
}

#[test]
fn config_errors_name_the_file_and_line() {
    let tp = TestTp::new();
    tp.edit_config(|t| t.replace("[limits]", "[limits]\nmax_conections = 5"));
    let stderr = fails_with(&tp, &["tp.toml"]);
    assert!(stderr.contains("max_conections"), "{stderr}");
    assert!(stderr.contains("line "), "{stderr}");

    tp.edit_config(|t| {
        t.replace("max_conections = 5\n", "")
            .replace("pin_file = ", "pin = \"1234\"\npin_file = ")
    });
    fails_with(&tp, &["literal PIN is not supported"]);
}
