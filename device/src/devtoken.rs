//! Development tokens of either software token vtp is tested against:
//! SoftHSM2 (Debian's 2.6.1) or kryoptic (built by `scripts/build-kryoptic.sh`).
//!
//! **Not for production.** A production TP key belongs in a real HSM whose
//! token is initialized by its operators. [`create_dev_token`] makes a
//! throw-away token in a directory, with random PINs written to files (0600).
//!
//! Both modules read their configuration file from an environment variable
//! once, at `C_Initialize` (`SOFTHSM2_CONF`, `KRYOPTIC_CONF`), and a process
//! initializes a module only once: one process works with one configuration
//! of each module. Nothing here sets the variable in the current process:
//! whoever opens the token (the daemon, a test) sets [`DevToken::conf_env`]
//! before the first [`crate::Token::open`]. The token is initialized in child
//! processes (`softhsm2-util`, `pkcs11-tool`), so the current process's
//! PKCS#11 state is never touched.

use std::path::{Path, PathBuf};

pub use crate::devbase::{DevToken, DevTokenKind, TEST_TOKEN_VAR};
use crate::error::DeviceError;

/// The choice of backend. Written here, above the backends, rather than
/// with the type (in `devbase.rs`, below them), so the backends never import
/// this module.
impl DevTokenKind {
    /// The module on this machine; the error says how to get it.
    pub fn module_path(self) -> Result<PathBuf, DeviceError> {
        match self {
            DevTokenKind::SoftHsm => crate::softhsm::module_path(),
            DevTokenKind::Kryoptic => crate::kryoptic::module_path(),
        }
    }
}

/// Create a development token of `kind` labelled `label` in `dir` (which
/// must not hold a token already): the module's configuration file, random
/// PINs in `dir/user.pin` and `dir/so.pin` (0600), and an initialized token
/// with its user PIN set. For development and tests only.
pub fn create_dev_token(
    kind: DevTokenKind,
    dir: &Path,
    label: &str,
) -> Result<DevToken, DeviceError> {
    match kind {
        DevTokenKind::SoftHsm => crate::softhsm::create_dev_token(dir, label),
        DevTokenKind::Kryoptic => crate::kryoptic::create_dev_token(dir, label),
    }
}
