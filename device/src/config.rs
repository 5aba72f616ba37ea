//! How the device finds its token and PIN.
//!
//! PINs are never taken from the command line (argv is visible to every user
//! of the machine in `ps`): they come from a file or an environment variable
//! and live in a [`Pin`] that is wiped on drop and never printed.

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::error::DeviceError;

/// Which token to use. Slot ids are not stable across restarts (SoftHSM
/// renumbers them), so a token is always chosen by label or serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    Label(String),
    Serial(String),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "label \"{l}\""),
            TokenSelector::Serial(s) => write!(f, "serial \"{s}\""),
        }
    }
}

/// Where the user PIN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file holding the PIN; one trailing newline (`\n` or `\r\n`) is removed.
    File(PathBuf),
    /// The name of an environment variable holding the PIN.
    Env(String),
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(p) => write!(f, "file {}", p.display()),
            PinSource::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

impl PinSource {
    /// Read the PIN now. Errors name the file or variable, never the PIN.
    pub fn read(&self) -> Result<Pin, DeviceError> {
        let fail = |problem: String| DeviceError::PinSource {
            from: self.to_string(),
            problem,
        };
        let mut value = match self {
            // Who may read the file is the caller's policy (tp-daemon
            // refuses PIN files others can read before it opens the token).
            PinSource::File(path) => {
                let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| fail(e.to_string()))?);
                match std::str::from_utf8(&bytes) {
                    Ok(s) => Zeroizing::new(s.to_owned()),
                    Err(_) => return Err(fail("the file is not UTF-8 text".into())),
                }
            }
            PinSource::Env(name) => match std::env::var(name) {
                Ok(v) => Zeroizing::new(v),
                Err(std::env::VarError::NotPresent) => return Err(fail("it is not set".into())),
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(fail("its value is not UTF-8".into()))
                }
            },
        };
        // Truncating keeps the buffer; Zeroizing wipes its whole capacity.
        let keep = value
            .strip_suffix("\r\n")
            .or_else(|| value.strip_suffix('\n'))
            .map(str::len);
        if let Some(keep) = keep {
            value.truncate(keep);
        }
        if value.is_empty() {
            return Err(fail("the PIN is empty".into()));
        }
        Ok(Pin(value))
    }
}

/// A token PIN: wiped from memory on drop, printed as `Pin(***)`.
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Build a PIN from a string already in memory (tests, tools).
    pub fn new(pin: String) -> Self {
        Pin(Zeroizing::new(pin))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(***)")
    }
}

/// Everything needed to open the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// Path of the PKCS#11 shared library (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    pub token: TokenSelector,
    pub pin: PinSource,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, content).unwrap();
        (dir, p)
    }

    #[test]
    fn file_pin_trims_one_newline() {
        for (content, want) in [
            (&b"1234\n"[..], "1234"),
            (b"1234\r\n", "1234"),
            (b"1234", "1234"),
            (b"1234\n\n", "1234\n"),
            (b" 12 34 ", " 12 34 "),
        ] {
            let (_d, p) = file_with(content);
            assert_eq!(PinSource::File(p).read().unwrap().expose(), want);
        }
    }

    #[test]
    fn file_pin_errors_name_the_path() {
        let (_d, p) = file_with(b"\n");
        let e = PinSource::File(p.clone()).read().unwrap_err().to_string();
        assert!(
            e.contains(&p.display().to_string()) && e.contains("empty"),
            "{e}"
        );
        let missing = p.with_file_name("nope");
        let e = PinSource::File(missing.clone())
            .read()
            .unwrap_err()
            .to_string();
        assert!(e.contains(&missing.display().to_string()), "{e}");
    }

    #[test]
    fn env_pin_unset_names_the_variable() {
        let e = PinSource::Env("VTP_DEVICE_UNIT_TEST_UNSET_PIN".into())
            .read()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("VTP_DEVICE_UNIT_TEST_UNSET_PIN") && e.contains("not set"),
            "{e}"
        );
    }

    #[test]
    fn pin_debug_is_redacted() {
        assert_eq!(format!("{:?}", Pin::new("secret".into())), "Pin(***)");
    }
}
