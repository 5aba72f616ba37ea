//! kryoptic tokens for development and tests (the second software token vtp
//! is tested against; see `docs/tokens.md`).
//!
//! **Not for production**, like [`crate::softhsm`]. The module is built from
//! crates.io by `scripts/build-kryoptic.sh` and found through
//! `VTP_KRYOPTIC_MODULE` or the script's cache path. kryoptic reads the TOML
//! file named by `KRYOPTIC_CONF` at `C_Initialize`; a token is a slot of that
//! file backed by an SQLite database. This module writes the file, then
//! initializes the token (`C_InitToken` with the SO PIN, `C_InitPIN` for the
//! user PIN) with `pkcs11-tool` (Debian package `opensc`) in child processes,
//! so the current process's PKCS#11 state is never touched. The PINs reach
//! the children through their environment (`--pin env:VAR`), not argv.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::devbase::{child_failed, prepare, step, DevToken, DevTokenKind, Prepared};
use crate::error::DeviceError;

/// The kryoptic version `scripts/build-kryoptic.sh` builds by default.
pub const KRYOPTIC_VERSION: &str = "1.5.4";
/// Names the kryoptic module explicitly (overrides the cache path).
pub const MODULE_VAR: &str = "VTP_KRYOPTIC_MODULE";
/// The variable kryoptic reads its configuration file from.
pub const CONF_VAR: &str = DevTokenKind::Kryoptic.conf_var();
/// The slot id of development tokens in their configuration file.
pub const DEV_SLOT: u64 = 1;

/// Where `scripts/build-kryoptic.sh` leaves the module:
/// `${VTP_CACHE:-$HOME/.cache/vtp}/kryoptic-<version>/libkryoptic_pkcs11.so`
/// (whether or not it exists).
pub fn cached_module_path() -> Option<PathBuf> {
    let cache = match std::env::var_os("VTP_CACHE").filter(|v| !v.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/vtp"),
    };
    Some(
        cache
            .join(format!("kryoptic-{KRYOPTIC_VERSION}"))
            .join("libkryoptic_pkcs11.so"),
    )
}

/// The kryoptic module on this machine: `VTP_KRYOPTIC_MODULE` if set, else
/// the build script's cache path; `None` unless the file exists.
pub fn default_module_path() -> Option<PathBuf> {
    module_path().ok()
}

/// Like [`default_module_path`], with an error that says what was looked at
/// and how to get the module.
pub(crate) fn module_path() -> Result<PathBuf, DeviceError> {
    let missing = |reason: String| DeviceError::DevToken {
        step: "find the kryoptic module".into(),
        reason,
    };
    if let Some(p) = std::env::var_os(MODULE_VAR).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(missing(format!(
                "{MODULE_VAR} names {}, which does not exist",
                p.display()
            )))
        };
    }
    match cached_module_path() {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => Err(missing(format!(
            "{MODULE_VAR} is not set and {} does not exist (run scripts/build-kryoptic.sh)",
            p.display()
        ))),
        None => Err(missing(format!(
            "neither {MODULE_VAR} nor HOME is set (run scripts/build-kryoptic.sh)"
        ))),
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Create `dir/kryoptic.conf` (one slot, SQLite database `dir/token.sqlite`),
/// random PINs in `dir/user.pin` and `dir/so.pin` (mode 0600), and
/// initialize a token labelled `label` with `pkcs11-tool` (found on `PATH`).
/// `dir` must not hold a token already. For development and tests only.
pub fn create_dev_token(dir: &Path, label: &str) -> Result<DevToken, DeviceError> {
    let module = module_path()?;
    let Prepared {
        dir,
        pin,
        so_pin,
        pin_file,
        so_pin_file,
    } = prepare(dir, label, "kryoptic.conf")?;
    let conf = dir.join("kryoptic.conf");
    let db = dir.join("token.sqlite");
    let db = db.to_str().ok_or_else(|| DeviceError::DevToken {
        step: "write kryoptic.conf".into(),
        reason: format!("the path {} is not UTF-8", db.display()),
    })?;
    let conf_text = format!(
        "# kryoptic development token for vtp (NOT for production)\n\
         [[slots]]\n\
         slot = {DEV_SLOT}\n\
         description = \"vtp development token\"\n\
         dbtype = \"sqlite\"\n\
         dbargs = {}\n",
        toml_string(db)
    );
    std::fs::write(&conf, conf_text).map_err(step("write kryoptic.conf"))?;

    let slot = DEV_SLOT.to_string();
    let tool = |what: &str, args: &[&str]| -> Result<(), DeviceError> {
        let out = Command::new("pkcs11-tool")
            .env(CONF_VAR, &conf)
            .env("VTP_DEV_SO_PIN", so_pin.as_str())
            .env("VTP_DEV_USER_PIN", pin.as_str())
            .arg("--module")
            .arg(&module)
            .args(["--slot", slot.as_str()])
            .args(args)
            .output()
            .map_err(step("run pkcs11-tool (is opensc installed?)"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(child_failed(what, &out))
        }
    };
    tool(
        "pkcs11-tool --init-token",
        &[
            "--init-token",
            "--label",
            label,
            "--so-pin",
            "env:VTP_DEV_SO_PIN",
        ],
    )?;
    tool(
        "pkcs11-tool --init-pin",
        &[
            "--init-pin",
            "--login",
            "--login-type",
            "so",
            "--so-pin",
            "env:VTP_DEV_SO_PIN",
            "--pin",
            "env:VTP_DEV_USER_PIN",
        ],
    )?;
    tracing::info!(conf = %conf.display(), label, "created a kryoptic development token");
    Ok(DevToken {
        kind: DevTokenKind::Kryoptic,
        conf,
        pin_file,
        so_pin_file,
        module,
        label: label.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("/a b/c"), "\"/a b/c\"");
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }
}
