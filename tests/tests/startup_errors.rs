//! 10. The daemon refuses to start, with a clear message, on a wrong PIN, a
//!     missing module, a missing token or a missing key.

use vtp_e2e::Tp;

fn edit_config(tp: &Tp, f: impl Fn(&str) -> String) {
    let c = std::fs::read_to_string(tp.config()).unwrap();
    let new = f(&c);
    assert_ne!(c, new, "the edit changed nothing");
    std::fs::write(tp.config(), new).unwrap();
}

fn value_of(config: &str, key: &str) -> String {
    config
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("{key} ")) || l.starts_with(&format!("{key}=")))
        .and_then(|l| l.split('"').nth(1))
        .unwrap_or_else(|| panic!("no {key} in config"))
        .to_string()
}

#[test]
fn t10_startup_failures_are_clear() {
    let tp = Tp::init();
    let original = std::fs::read_to_string(tp.config()).unwrap();

    // Wrong PIN.
    let pin_file = value_of(&original, "pin_file");
    let pin = std::fs::read_to_string(&pin_file).unwrap();
    std::fs::write(&pin_file, "000000wrong\n").unwrap();
    let r = tp.serve_expect_failure();
    assert_ne!(r.status, 0);
    assert!(r.stderr.to_lowercase().contains("pin"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("000000wrong"),
        "the PIN must never be printed"
    );
    std::fs::write(&pin_file, pin).unwrap();

    // Missing module.
    let module = value_of(&original, "module");
    edit_config(&tp, |c| c.replace(&module, "/nonexistent/libpkcs11.so"));
    let r = tp.serve_expect_failure();
    assert_ne!(r.status, 0);
    assert!(
        r.stderr.contains("/nonexistent/libpkcs11.so"),
        "{}",
        r.stderr
    );
    std::fs::write(tp.config(), &original).unwrap();

    // Missing token.
    let label = value_of(&original, "label");
    edit_config(&tp, |c| {
        c.replace(&format!("\"{label}\""), "\"no-such-token\"")
    });
    let r = tp.serve_expect_failure();
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("no-such-token"), "{}", r.stderr);
    std::fs::write(tp.config(), &original).unwrap();

    // Missing key.
    let signing = value_of(&original, "signing");
    edit_config(&tp, |c| c.replace(&signing, "00112233445566ff"));
    let r = tp.serve_expect_failure();
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("00112233445566ff"), "{}", r.stderr);
    std::fs::write(tp.config(), &original).unwrap();

    // And with the original config it starts.
    let mut tp = tp;
    tp.start();
    assert!(tp.is_running());
}
