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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand_core::{OsRng, RngCore};

use crate::config::{PinSource, TokenConfig, TokenSelector};
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

/// A development token created by [`create_dev_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevToken {
    /// The SoftHSM2 configuration file: set `SOFTHSM2_CONF` to it.
    pub conf: PathBuf,
    /// The user PIN file (mode 0600).
    pub pin_file: PathBuf,
    /// The security-officer PIN file (mode 0600).
    pub so_pin_file: PathBuf,
    /// The SoftHSM2 PKCS#11 module.
    pub module: PathBuf,
    pub label: String,
}

impl DevToken {
    /// A config that opens this token by label with the PIN file.
    pub fn token_config(&self) -> TokenConfig {
        TokenConfig {
            module: self.module.clone(),
            token: TokenSelector::Label(self.label.clone()),
            pin: PinSource::File(self.pin_file.clone()),
        }
    }
}

fn step(step: &str) -> impl Fn(std::io::Error) -> DeviceError + '_ {
    move |e| DeviceError::DevToken {
        step: step.to_owned(),
        reason: e.to_string(),
    }
}

/// Create `dir/tokens/`, `dir/softhsm2.conf`, random PINs in `dir/user.pin`
/// and `dir/so.pin` (mode 0600), and initialize a token labelled `label` with
/// `softhsm2-util` (found on `PATH`). `dir` must not hold a token already.
/// For development and tests only; `softhsm/new-token.sh` does the same.
pub fn create_dev_token(dir: &Path, label: &str) -> Result<DevToken, DeviceError> {
    if label.is_empty() || label.len() > 32 {
        return Err(DeviceError::InvalidArgument(format!(
            "token label \"{label}\" must be 1 to 32 bytes"
        )));
    }
    let module = default_module_path().ok_or_else(|| DeviceError::DevToken {
        step: "find the SoftHSM2 module".into(),
        reason: format!("none of {MODULE_CANDIDATES:?} exists (install softhsm2)"),
    })?;
    std::fs::create_dir_all(dir).map_err(step("create the token directory"))?;
    let dir = dir
        .canonicalize()
        .map_err(step("resolve the token directory"))?;
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).map_err(step("create the tokens directory"))?;

    let conf = dir.join("softhsm2.conf");
    if conf.exists() {
        // A second token with the same label would make the label ambiguous.
        return Err(DeviceError::DevToken {
            step: "prepare the token directory".into(),
            reason: format!("{} already exists; use a fresh directory", conf.display()),
        });
    }
    let conf_text = format!(
        "# SoftHSM2 development token for vtp (NOT for production)\n\
         directories.tokendir = {}\n\
         objectstore.backend = file\n\
         log.level = ERROR\n",
        tokens.display()
    );
    std::fs::write(&conf, conf_text).map_err(step("write softhsm2.conf"))?;

    let pin = random_pin();
    let so_pin = random_pin();
    let pin_file = dir.join("user.pin");
    let so_pin_file = dir.join("so.pin");
    write_private(&pin_file, &pin).map_err(step("write user.pin"))?;
    write_private(&so_pin_file, &so_pin).map_err(step("write so.pin"))?;

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
        return Err(DeviceError::DevToken {
            step: "softhsm2-util --init-token".into(),
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    tracing::info!(conf = %conf.display(), label, "created a SoftHSM2 development token");
    Ok(DevToken {
        conf,
        pin_file,
        so_pin_file,
        module,
        label: label.to_owned(),
    })
}

/// 32 hex digits from the OS RNG.
fn random_pin() -> zeroize::Zeroizing<String> {
    let mut b = zeroize::Zeroizing::new([0u8; 16]);
    OsRng.fill_bytes(&mut *b);
    zeroize::Zeroizing::new(hex::encode(*b))
}

/// Write `content` plus a newline to a new file readable by the owner only.
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        // `mode` only applies when the file is created; fix an old one too.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}
