//! Shared by the device test binaries: the token they run against.
//!
//! `VTP_TEST_TOKEN=softhsm|kryoptic` (default softhsm) picks the kind; for
//! kryoptic the module comes from `VTP_KRYOPTIC_MODULE` or the cache path of
//! `scripts/build-kryoptic.sh`. A requested token that is not available fails
//! the tests loudly: they are never skipped.

#![allow(dead_code)]

use std::path::Path;

use vtp_device::devtoken::{create_dev_token, DevToken, DevTokenKind, TEST_TOKEN_VAR};

/// The kind of token these tests run against.
pub fn kind() -> DevTokenKind {
    DevTokenKind::from_env().unwrap_or_else(|e| panic!("{e}"))
}

/// Create the test binary's one development token in `dir` and point the
/// module's configuration variable at it. Call once per process, before the
/// first `Token::open` (each module reads its variable at C_Initialize).
pub fn dev_token(dir: &Path, label: &str) -> DevToken {
    let kind = kind();
    let dev = create_dev_token(kind, dir, label).unwrap_or_else(|e| {
        panic!(
            "cannot create the {kind} test token ({TEST_TOKEN_VAR}={kind}); \
             tests are not skipped when their token is missing: {e}"
        )
    });
    eprintln!(
        "device tests: {TEST_TOKEN_VAR}={kind}, module {}",
        dev.module.display()
    );
    let (var, conf) = dev.conf_env();
    std::env::set_var(var, conf);
    dev
}
