//! The PIN file policy, checked every time the daemon or a command opens
//! the token: a file others can read or write is refused, and so is one
//! that a group other than the daemon's own may read. What passes is what
//! docs/operators.md recommends: `root:vtp` mode `0640` (the daemon reads it
//! through its group, and cannot change it), or `0600` owned by the daemon's
//! user (what `tp-daemon init` and systemd's `LoadCredential=` make).
//!
//! A file with a POSIX access ACL is judged by its entries (systemd's
//! `LoadCredential=` grants the service user read access with one): every
//! user or group an entry lets read must be the daemon's, and nobody but
//! the owner may write.
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
    #[error(
        "PIN file {}: its ACL lets {who} {what} it: remove that entry (`setfacl -x`), the PIN \
         must be readable by the daemon only",
        path.display()
    )]
    AclEntry {
        path: PathBuf,
        who: String,
        what: &'static str,
    },
}

/// One entry of a POSIX access ACL (`system.posix_acl_access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AclEntry {
    tag: u16,
    perm: u16,
    id: u32,
}

const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_READ: u16 = 4;
const ACL_WRITE: u16 = 2;

/// Decode the kernel's ACL xattr: a version word (2), then 8-byte entries.
fn parse_acl(bytes: &[u8]) -> Option<Vec<AclEntry>> {
    let (version, rest) = bytes.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*version) != 2 || rest.len() % 8 != 0 {
        return None;
    }
    Some(
        rest.chunks_exact(8)
            .map(|e| AclEntry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect(),
    )
}

/// The file's access ACL, if it has one.
fn access_acl(path: &Path) -> Option<Vec<AclEntry>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let name = c"system.posix_acl_access";
    let mut buf = [0u8; 4096];
    // SAFETY: valid NUL-terminated strings and a buffer of the given size.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n).ok().and_then(|n| parse_acl(&buf[..n]))
}

/// Judge the named-user and group entries of an ACL (the owner and
/// "other" entries are the mode's bits, checked by [`check_mode`]).
fn check_acl(
    path: &Path,
    acl: &[AclEntry],
    gid: u32,
    uid: u32,
    groups: &[u32],
) -> Result<(), PinFileError> {
    let mask = acl
        .iter()
        .find(|e| e.tag == ACL_MASK)
        .map_or(0o7, |e| e.perm);
    for e in acl {
        let (who, ours) = match e.tag {
            ACL_USER => (format!("user {}", e.id), e.id == uid),
            ACL_GROUP_OBJ => (format!("group {gid}"), groups.contains(&gid)),
            ACL_GROUP => (format!("group {}", e.id), groups.contains(&e.id)),
            _ => continue,
        };
        let perm = e.perm & mask;
        let what = if perm & ACL_WRITE != 0 {
            "write"
        } else if perm & ACL_READ != 0 && !ours {
            "read"
        } else {
            continue;
        };
        return Err(PinFileError::AclEntry {
            path: path.to_owned(),
            who,
            what,
        });
    }
    Ok(())
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
    let groups = own_groups();
    let mode = meta.mode() & 0o7777;
    match access_acl(path) {
        // With an ACL the group bits are its mask: judge the entries.
        Some(acl) => {
            check_mode(path, mode & !0o070, meta.gid(), &groups)?;
            // SAFETY: geteuid cannot fail.
            check_acl(path, &acl, meta.gid(), unsafe { libc::geteuid() }, &groups)
        }
        None => check_mode(path, mode, meta.gid(), &groups),
    }
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

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<AclEntry> {
        let mut bytes = 2u32.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            bytes.extend(tag.to_le_bytes());
            bytes.extend(perm.to_le_bytes());
            bytes.extend(id.to_le_bytes());
        }
        parse_acl(&bytes).unwrap()
    }

    #[test]
    fn acls_are_judged_by_their_entries() {
        let p = Path::new("/run/credentials/tp-daemon.service/tp-pin");
        let (root, vtp, staff) = (0, 998, 50);
        const UNDEFINED: u32 = u32::MAX;
        // systemd's LoadCredential=: root:root 0400 plus user:vtp:r, mask r.
        let credential = acl(&[
            (0x01, 4, UNDEFINED),
            (ACL_USER, 4, vtp),
            (ACL_GROUP_OBJ, 0, UNDEFINED),
            (ACL_MASK, 4, UNDEFINED),
            (0x20, 0, UNDEFINED),
        ]);
        check_acl(p, &credential, root, vtp, &[vtp]).unwrap();
        // Another user, a foreign group, or a writer: refused by name.
        for (entries, needle) in [
            (
                vec![(ACL_USER, 4, 1000), (ACL_MASK, 4, UNDEFINED)],
                "user 1000 read",
            ),
            (
                vec![(ACL_GROUP, 4, staff), (ACL_MASK, 7, UNDEFINED)],
                "group 50 read",
            ),
            (
                vec![(ACL_USER, 6, vtp), (ACL_MASK, 6, UNDEFINED)],
                "user 998 write",
            ),
            (vec![(ACL_GROUP_OBJ, 4, UNDEFINED)], "group 0 read"),
        ] {
            let e = check_acl(p, &acl(&entries), root, vtp, &[vtp])
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
        // The mask limits named entries.
        let masked = acl(&[(ACL_GROUP, 4, staff), (ACL_MASK, 0, UNDEFINED)]);
        check_acl(p, &masked, root, vtp, &[vtp]).unwrap();
        assert_eq!(parse_acl(&[1, 0, 0, 0]), None);
    }
}
