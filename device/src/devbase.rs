//! What both development-token backends ([`crate::softhsm`],
//! [`crate::kryoptic`]) share: the [`DevTokenKind`] and [`DevToken`] types,
//! and the directory, PIN-file and child-process helpers.
//!
//! **Not for production** (see [`crate::devtoken`], the public face, which
//! re-exports these types and chooses the backend). The types live here,
//! below the backends, so that the backends can build a [`DevToken`] without
//! importing the module that dispatches to them.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

use crate::config::{PinSource, TokenConfig, TokenSelector};
use crate::error::DeviceError;
use crate::oaep::OaepHash;

/// The environment variable that chooses the test token:
/// `softhsm` (the default when unset or empty) or `kryoptic`.
pub const TEST_TOKEN_VAR: &str = "VTP_TEST_TOKEN";

/// Which software token a development token lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DevTokenKind {
    /// SoftHSM2 (Debian package `softhsm2`).
    SoftHsm,
    /// kryoptic, built by `scripts/build-kryoptic.sh`.
    Kryoptic,
}

impl DevTokenKind {
    /// The kind named by `VTP_TEST_TOKEN` (unset or empty: SoftHSM). An
    /// unknown name is an error, never a silent fallback.
    pub fn from_env() -> Result<DevTokenKind, DeviceError> {
        match std::env::var(TEST_TOKEN_VAR) {
            Err(std::env::VarError::NotPresent) => Ok(DevTokenKind::SoftHsm),
            Ok(v) if v.trim().is_empty() => Ok(DevTokenKind::SoftHsm),
            Ok(v) => v.trim().parse(),
            Err(std::env::VarError::NotUnicode(_)) => Err(DeviceError::InvalidArgument(format!(
                "{TEST_TOKEN_VAR} is not UTF-8"
            ))),
        }
    }

    /// `softhsm` or `kryoptic`.
    pub fn name(self) -> &'static str {
        match self {
            DevTokenKind::SoftHsm => "softhsm",
            DevTokenKind::Kryoptic => "kryoptic",
        }
    }

    /// The variable through which the module finds its configuration file.
    pub const fn conf_var(self) -> &'static str {
        match self {
            DevTokenKind::SoftHsm => "SOFTHSM2_CONF",
            DevTokenKind::Kryoptic => "KRYOPTIC_CONF",
        }
    }

    /// The OAEP hash to give new keys on this kind of token (measured, see
    /// `docs/tokens.md`): SoftHSM 2.6 does OAEP with SHA-1 only, kryoptic
    /// does SHA-256. For a token not known in advance use
    /// [`crate::Token::preferred_oaep_hash`].
    pub fn preferred_oaep(self) -> OaepHash {
        match self {
            DevTokenKind::SoftHsm => OaepHash::Sha1,
            DevTokenKind::Kryoptic => OaepHash::Sha256,
        }
    }

    /// `CK_TOKEN_INFO.manufacturerID` of this kind's tokens.
    pub fn manufacturer(self) -> &'static str {
        match self {
            DevTokenKind::SoftHsm => "SoftHSM project",
            DevTokenKind::Kryoptic => "Kryoptic Project",
        }
    }
}

impl fmt::Display for DevTokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DevTokenKind {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "softhsm" | "softhsm2" => Ok(DevTokenKind::SoftHsm),
            "kryoptic" => Ok(DevTokenKind::Kryoptic),
            _ => Err(DeviceError::InvalidArgument(format!(
                "unknown token kind \"{s}\" (expected softhsm or kryoptic, e.g. in {TEST_TOKEN_VAR})"
            ))),
        }
    }
}

/// A development token created by [`crate::devtoken::create_dev_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevToken {
    pub kind: DevTokenKind,
    /// The module's configuration file: set [`DevTokenKind::conf_var`] to it
    /// (see [`DevToken::conf_env`]) before the module is initialized.
    pub conf: PathBuf,
    /// The user PIN file (mode 0600).
    pub pin_file: PathBuf,
    /// The security-officer PIN file (mode 0600).
    pub so_pin_file: PathBuf,
    /// The PKCS#11 module.
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

    /// The environment variable and value the module needs to find this
    /// token: `("SOFTHSM2_CONF" | "KRYOPTIC_CONF", conf)`.
    pub fn conf_env(&self) -> (&'static str, &Path) {
        (self.kind.conf_var(), &self.conf)
    }
}

/// The checks and files both kinds start with. Returns the canonical `dir`,
/// the PIN files and the PINs.
pub(crate) struct Prepared {
    pub(crate) dir: PathBuf,
    pub(crate) pin: zeroize::Zeroizing<String>,
    pub(crate) so_pin: zeroize::Zeroizing<String>,
    pub(crate) pin_file: PathBuf,
    pub(crate) so_pin_file: PathBuf,
}

/// Check the label, create `dir`, refuse it if `conf_name` exists already,
/// and write fresh random PINs.
pub(crate) fn prepare(dir: &Path, label: &str, conf_name: &str) -> Result<Prepared, DeviceError> {
    if label.is_empty() || label.len() > 32 {
        return Err(DeviceError::InvalidArgument(format!(
            "token label \"{label}\" must be 1 to 32 bytes"
        )));
    }
    std::fs::create_dir_all(dir).map_err(step("create the token directory"))?;
    let dir = dir
        .canonicalize()
        .map_err(step("resolve the token directory"))?;
    let conf = dir.join(conf_name);
    if conf.exists() {
        // A second token with the same label would make the label ambiguous.
        return Err(DeviceError::DevToken {
            step: "prepare the token directory".into(),
            reason: format!("{} already exists; use a fresh directory", conf.display()),
        });
    }
    let pin = random_pin();
    let so_pin = random_pin();
    let pin_file = dir.join("user.pin");
    let so_pin_file = dir.join("so.pin");
    write_private(&pin_file, &pin).map_err(step("write user.pin"))?;
    write_private(&so_pin_file, &so_pin).map_err(step("write so.pin"))?;
    Ok(Prepared {
        dir,
        pin,
        so_pin,
        pin_file,
        so_pin_file,
    })
}

pub(crate) fn step(step: &str) -> impl Fn(std::io::Error) -> DeviceError + '_ {
    move |e| DeviceError::DevToken {
        step: step.to_owned(),
        reason: e.to_string(),
    }
}

/// A failed child process as a [`DeviceError::DevToken`].
pub(crate) fn child_failed(what: &str, out: &std::process::Output) -> DeviceError {
    let mut reason = format!("{}", out.status);
    for stream in [&out.stderr, &out.stdout] {
        let text = String::from_utf8_lossy(stream);
        if !text.trim().is_empty() {
            reason.push_str(": ");
            reason.push_str(text.trim());
        }
    }
    DeviceError::DevToken {
        step: what.to_owned(),
        reason,
    }
}

/// 32 hex digits from the OS RNG.
fn random_pin() -> zeroize::Zeroizing<String> {
    let mut b = zeroize::Zeroizing::new([0u8; 16]);
    OsRng.fill_bytes(&mut *b);
    zeroize::Zeroizing::new(hex::encode(*b))
}

/// Write `content` plus a newline to a new file readable by the owner only.
pub(crate) fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_name_themselves() {
        for k in [DevTokenKind::SoftHsm, DevTokenKind::Kryoptic] {
            assert_eq!(k.name().parse::<DevTokenKind>().unwrap(), k);
            assert_eq!(k.to_string(), k.name());
        }
        assert_eq!(
            "SoftHSM2".parse::<DevTokenKind>().unwrap(),
            DevTokenKind::SoftHsm
        );
        let e = "nss".parse::<DevTokenKind>().unwrap_err().to_string();
        assert!(e.contains("\"nss\"") && e.contains(TEST_TOKEN_VAR), "{e}");
    }
}
