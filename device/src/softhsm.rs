//! SoftHSM2 tokens for development, tests and CI demos.
//!
//! **Not for production.** A production TP key belongs in a real HSM whose
//! token is initialized by its operators. These helpers create a throw-away
//! SoftHSM2 token in a directory with random PINs written to files.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, at `C_Initialize`, and a process can
//! initialize the module only once, so one process works with one SoftHSM
//! configuration. This module never sets the variable in the current process:
//! whoever opens the token (the daemon, a test) sets `SOFTHSM2_CONF` to
//! [`DevToken::conf`] before the first [`crate::Token::open`].

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::devbase::{child_failed, prepare, step, DevTokenKind, Prepared};
use crate::error::DeviceError;

/// Where Debian/Ubuntu install the SoftHSM2 module.
const MODULE_CANDIDATES: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// The SoftHSM2 module on this machine, if installed in a usual place.
pub fn default_module_path() -> Option<PathBuf> {
    MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A development token; the same type as [`crate::devtoken::DevToken`]
/// (`kind` is [`DevTokenKind::SoftHsm`] for tokens made here).
pub use crate::devbase::DevToken;

/// The SoftHSM2 module, or an error that says how to get it.
pub(crate) fn module_path() -> Result<PathBuf, DeviceError> {
    default_module_path().ok_or_else(|| DeviceError::DevToken {
        step: "find the SoftHSM2 module".into(),
        reason: format!("none of {MODULE_CANDIDATES:?} exists (install softhsm2)"),
    })
}

/// Create `dir/tokens/`, `dir/softhsm2.conf`, random PINs in `dir/user.pin`
/// and `dir/so.pin` (mode 0600), and initialize a token labelled `label` with
/// `softhsm2-util` (found on `PATH`). `dir` must not hold a token already.
/// For development and tests only; `softhsm/new-token.sh` does the same.
pub fn create_dev_token(dir: &Path, label: &str) -> Result<DevToken, DeviceError> {
    let module = module_path()?;
    let Prepared {
        dir,
        pin,
        so_pin,
        pin_file,
        so_pin_file,
    } = prepare(dir, label, "softhsm2.conf")?;
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).map_err(step("create the tokens directory"))?;
    let conf = dir.join("softhsm2.conf");
    let conf_text = format!(
        "# SoftHSM2 development token for vtp (NOT for production)\n\
         directories.tokendir = {}\n\
         objectstore.backend = file\n\
         log.level = ERROR\n",
        tokens.display()
    );
    std::fs::write(&conf, conf_text).map_err(step("write softhsm2.conf"))?;

    // The PINs go on this child's argv, where other local users could see
    // them in `ps`. Acceptable only because this is a throw-away dev token
    // with random PINs; production tokens are initialized by their operators.
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", so_pin.as_str(), "--pin", pin.as_str()])
        .output()
        .map_err(step("run softhsm2-util (is softhsm2 installed?)"))?;
    if !out.status.success() {
        return Err(child_failed("softhsm2-util --init-token", &out));
    }
    tracing::info!(conf = %conf.display(), label, "created a SoftHSM2 development token");
    Ok(DevToken {
        kind: DevTokenKind::SoftHsm,
        conf,
        pin_file,
        so_pin_file,
        module,
        label: label.to_owned(),
    })
}
