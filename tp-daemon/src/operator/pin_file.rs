//! The PIN file policy, checked every time the daemon or a command opens
//! the token: a file others can read or write is refused, and so is one
//! that a group other than the daemon's own may read. What passes is what
//! docs/operators.md recommends: `root:vtp` mode `0640` (the daemon reads it
//! through its group, and cannot change it), or `0600` owned by the daemon's
//! user (what `tp-daemon init` and systemd's `LoadCredential=` make).
//!
//! Refusing rather than warning: a warning at every start that the operator
//! followed the documented set-up teaches to ignore warnings, and a PIN
//! that every local user could read is not a state to run in.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How a PIN file breaks the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinFileError {
    #[error(
        "PIN file {} is {what} by every user (mode {mode:04o}): `chmod o-rwx` it (recommended: \
         owner root, group the daemon's, mode 0640)",
        path.display()
    )]
    OpenToOthers {
        path: PathBuf,
        mode: u32,
        what: &'static str,
    },
    #[error(
        "PIN file {} is writable by its group {gid} (mode {mode:04o}): `chmod g-w` it \
         (recommended: owner root, group the daemon's, mode 0640)",
        path.display()
    )]
    GroupWritable { path: PathBuf, mode: u32, gid: u32 },
    #[error(
        "PIN file {} is readable by group {gid}, which this daemon is not in (mode {mode:04o}): \
         `chgrp` it to the daemon's group (e.g. root:vtp 0640) or `chmod g-r` it",
        path.display()
    )]
    ForeignGroup { path: PathBuf, mode: u32, gid: u32 },
}

/// The groups this process is in (effective and supplementary).
fn own_groups() -> Vec<u32> {
    // SAFETY: getegid cannot fail; getgroups is asked for the count first,
    // then given a buffer of that size.
    unsafe {
        let mut groups = vec![libc::getegid()];
        let n = libc::getgroups(0, std::ptr::null_mut());
        if n > 0 {
            let mut buf = vec![0 as libc::gid_t; n as usize];
            let got = libc::getgroups(n, buf.as_mut_ptr());
            if got > 0 {
                groups.extend_from_slice(&buf[..got as usize]);
            }
        }
        groups
    }
}

/// Check the PIN file's permissions. A file that cannot be inspected is
/// left to the read, whose error names it.
pub fn check(path: &Path) -> Result<(), PinFileError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    check_mode(path, meta.mode() & 0o7777, meta.gid(), &own_groups())
}

fn check_mode(path: &Path, mode: u32, gid: u32, groups: &[u32]) -> Result<(), PinFileError> {
    let others = match (mode & 0o004 != 0, mode & 0o002 != 0) {
        (true, true) => Some("readable and writable"),
        (true, false) => Some("readable"),
        (false, true) => Some("writable"),
        (false, false) => None,
    };
    if let Some(what) = others {
        return Err(PinFileError::OpenToOthers {
            path: path.to_owned(),
            mode,
            what,
        });
    }
    if mode & 0o020 != 0 {
        return Err(PinFileError::GroupWritable {
            path: path.to_owned(),
            mode,
            gid,
        });
    }
    if mode & 0o040 != 0 && !groups.contains(&gid) {
        return Err(PinFileError::ForeignGroup {
            path: path.to_owned(),
            mode,
            gid,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_modes_pass_and_open_ones_are_refused() {
        let p = Path::new("/etc/vtp/user.pin");
        let vtp = 998;
        for mode in [0o600, 0o400, 0o640, 0o440] {
            check_mode(p, mode, vtp, &[vtp]).unwrap();
        }
        for (mode, needle) in [
            (0o644, "readable by every user"),
            (0o602, "writable by every user"),
            (0o666, "readable and writable by every user"),
            (0o660, "writable by its group 998"),
        ] {
            let e = check_mode(p, mode, vtp, &[vtp]).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("/etc/vtp/user.pin"), "{e}");
        }
        let e = check_mode(p, 0o640, 100, &[vtp]).unwrap_err().to_string();
        assert!(e.contains("group 100, which this daemon is not in"), "{e}");
        // Not group-readable: the group does not matter.
        check_mode(p, 0o600, 100, &[vtp]).unwrap();
    }
}
