//! Where the workspace binaries are.
//!
//! The suites run exactly what users run: the `tp-daemon` and `vtp` that
//! cargo built for this workspace, found in the profile directory above the
//! test executable (`target/<profile>/deps/<test>` → `target/<profile>/`).
//! Cargo builds a package's own binaries before its integration tests; the
//! end-to-end suite needs `cargo build --workspace --bins` first, and says so.

use std::io;
use std::path::{Path, PathBuf};

/// `target/<profile>/`: where cargo puts the workspace binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's directory");
    deps.parent().expect("the profile directory").to_path_buf()
}

/// The workspace binary `name`, or an error naming the build to run.
pub fn try_bin(name: &str) -> io::Result<PathBuf> {
    let p = bin_dir().join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} not built: run `cargo build --workspace --bins` first (scripts/test.sh does)",
                p.display()
            ),
        ))
    }
}

/// [`try_bin`] for tests: panics with the build to run.
#[track_caller]
pub fn bin(name: &str) -> PathBuf {
    try_bin(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Where the kit puts its directories: `target/tmp` (cargo's
/// `CARGO_TARGET_TMPDIR`), next to the build rather than in the system's
/// temporary directory.
pub fn scratch_root() -> PathBuf {
    let root = bin_dir()
        .parent()
        .map(|target| target.join("tmp"))
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&root).expect("create target/tmp");
    root.canonicalize().unwrap_or(root)
}

/// A new temporary directory under [`scratch_root`], removed on drop.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(scratch_root())
        .expect("create a temporary directory")
}

/// `path` without symlinks, so that paths written by `tp-daemon init`
/// (which canonicalizes) can be found and replaced textually.
pub(crate) fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}
