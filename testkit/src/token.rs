//! Throwaway TP data directories — a software token with fresh TP keys, the
//! commented `tp.toml`, the TP card, the journal — made by the real
//! `tp-daemon init`.
//!
//! `init` is the slow step (keys generated on the token), so it runs once
//! per test process into a *template* directory, and each test gets a copy
//! (token files, config, PIN, journal) with the template's paths rewritten.
//! TPs alive at the same time in one process get copies of *different*
//! templates, so a test with three trustees has three TPs with keys and ids
//! of their own; a template is made when all the others are in use, and
//! free again when its copy is dropped.
//!
//! The token is SoftHSM2 unless `VTP_TEST_TOKEN=kryoptic` (scripts/test.sh
//! runs the device and end-to-end suites again that way); RSA-2048 keys,
//! for speed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::bins::{bin, canonical, scratch_root};

/// Which software token the tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    SoftHsm,
    Kryoptic,
}

impl TokenKind {
    /// From `VTP_TEST_TOKEN` (`softhsm`, the default, or `kryoptic`).
    pub fn from_env() -> TokenKind {
        match std::env::var("VTP_TEST_TOKEN")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "softhsm" | "softhsm2" => TokenKind::SoftHsm,
            "kryoptic" => TokenKind::Kryoptic,
            other => panic!("VTP_TEST_TOKEN={other}: expected softhsm or kryoptic"),
        }
    }

    /// The name `tp-daemon init --dev-token` takes, and the token's
    /// directory inside the data directory.
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::SoftHsm => "softhsm",
            TokenKind::Kryoptic => "kryoptic",
        }
    }
}

/// One template directory, and whether a living copy uses it.
struct Template {
    dir: PathBuf,
    made: OnceLock<Result<(), String>>,
    in_use: AtomicBool,
}

/// Templates of this process, in order; a lease takes the first free one.
static TEMPLATES: Mutex<Vec<Arc<Template>>> = Mutex::new(Vec::new());
const PREFIX: &str = "vtp-tp-template-";

/// A template in use by one TP copy; free again when dropped.
pub struct Lease(Arc<Template>);

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.in_use.store(false, Ordering::Release);
    }
}

fn remove_stale_templates(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A free template, made now if there is none.
fn lease() -> Lease {
    let template = {
        let mut all = TEMPLATES.lock().unwrap_or_else(|e| e.into_inner());
        if all.is_empty() {
            remove_stale_templates(&scratch_root());
        }
        let free = all.iter().find(|t| {
            t.in_use
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        match free {
            Some(t) => Arc::clone(t),
            None => {
                let dir =
                    scratch_root().join(format!("{PREFIX}{}-{}", std::process::id(), all.len()));
                let t = Arc::new(Template {
                    dir,
                    made: OnceLock::new(),
                    in_use: AtomicBool::new(true),
                });
                all.push(Arc::clone(&t));
                t
            }
        }
    };
    // Made outside the lock: two tests may wait for two inits at once.
    if let Err(e) = template.made.get_or_init(|| init(&template.dir)) {
        panic!("{e}");
    }
    Lease(template)
}

/// `tp-daemon init` into `dir`.
fn init(dir: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    let kind = TokenKind::from_env();
    let out = std::process::Command::new(bin("tp-daemon"))
        .args(["init", "--dev-token", kind.name(), "--rsa-bits", "2048"])
        .args(["--name", "test TP", "--data-dir"])
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run tp-daemon init: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("next: tp-daemon serve --config") {
        return Err(format!(
            "tp-daemon init --dev-token {} failed ({}):\n{stdout}{}",
            kind.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Copy a template TP into `to` (created; must not hold a TP) and rewrite
/// the template's paths in its config files (`tp.toml`, the token's
/// `*.conf`). The returned lease keeps that template's keys to this copy
/// while it lives.
pub fn copy_tp(to: &Path) -> Lease {
    let lease = lease();
    let from = canonical(&lease.0.dir);
    std::fs::create_dir_all(to).unwrap();
    let to = canonical(to);
    copy_dir(&from, &to);
    let (from, to_text) = (from.display().to_string(), to.display().to_string());
    let kind = TokenKind::from_env();
    let mut configs = vec![to.join("tp.toml")];
    if let Ok(entries) = std::fs::read_dir(to.join(kind.name())) {
        configs.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf")),
        );
    }
    for p in configs {
        let text = std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
            .replace(&from, &to_text);
        std::fs::write(&p, text).unwrap();
    }
    lease
}
