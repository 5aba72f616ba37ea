//! [`TestTp`]: one test's TP — a copy of a template made by `tp-daemon init`
//! (see [`crate::token`]), its config, its `tp-daemon` commands, its daemon
//! processes and its journal.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::bins::{bin, temp_dir};
use crate::cli::{Cli, Run};
use crate::daemon::{wait_timeout, Daemon, Serve};
use crate::token::{copy_tp, Lease, TokenKind};

/// A TP of its own for one test: token, keys, config, card and (once a
/// daemon ran) journal, in one data directory.
pub struct TestTp {
    /// The directory removed with this TP, if it owns one.
    _dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    /// Its `tp.toml`.
    pub config: PathBuf,
    _lease: Option<Lease>,
    logs: AtomicU32,
}

impl Default for TestTp {
    fn default() -> Self {
        TestTp::new()
    }
}

impl TestTp {
    /// A TP in a new temporary directory (its data directory).
    pub fn new() -> TestTp {
        let dir = TestTp::empty_dir();
        let mut tp = TestTp::new_in(dir.path().to_path_buf());
        tp._dir = Some(dir);
        tp
    }

    /// A TP whose data directory is `data_dir` (created); the caller owns
    /// and removes it.
    pub fn new_in(data_dir: PathBuf) -> TestTp {
        let lease = copy_tp(&data_dir);
        TestTp {
            config: data_dir.join("tp.toml"),
            data_dir,
            _dir: None,
            _lease: Some(lease),
            logs: AtomicU32::new(0),
        }
    }

    /// A TP in a directory the test prepared itself (config at `config`).
    pub fn custom(dir: tempfile::TempDir, config: PathBuf) -> TestTp {
        TestTp {
            data_dir: dir.path().to_path_buf(),
            _dir: Some(dir),
            config,
            _lease: None,
            logs: AtomicU32::new(0),
        }
    }

    /// An empty temporary directory (e.g. for a [`TestTp::custom`]).
    pub fn empty_dir() -> tempfile::TempDir {
        temp_dir("tpd-test-")
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.data_dir
    }

    /// The TP card `init` wrote (`tp-card.vtp`).
    pub fn card(&self) -> PathBuf {
        self.path().join("tp-card.vtp")
    }

    /// The token's user PIN file.
    pub fn pin_file(&self) -> PathBuf {
        self.path()
            .join(TokenKind::from_env().name())
            .join("user.pin")
    }

    /// Edit tp.toml.
    pub fn edit_config(&self, f: impl FnOnce(&str) -> String) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, f(&text)).unwrap();
    }

    /// A new log file for the next daemon: `daemon-N.log`.
    fn next_log(&self) -> PathBuf {
        let n = self.logs.fetch_add(1, Ordering::Relaxed) + 1;
        self.path().join(format!("daemon-{n}.log"))
    }

    /// `tp-daemon serve --listen 127.0.0.1:0 ARGS --config THIS` with `ENV`
    /// (and `RUST_LOG=info`), logging to a new `daemon-N.log`; with
    /// `--metrics-listen` among the arguments, it waits for the metrics
    /// line too.
    pub fn serve(&self, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut serve = Serve::new(bin("tp-daemon"), self.next_log())
            .expect_metrics(args.contains(&"--metrics-listen"));
        serve
            .command()
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info");
        serve
    }

    /// Start `tp-daemon serve --allow-root` on a free port.
    #[track_caller]
    pub fn start(&self) -> Daemon {
        self.start_with_env(&[])
    }

    #[track_caller]
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        self.start_with(&["--allow-root"], env)
    }

    /// Start [`TestTp::serve`] with these arguments and environment.
    #[track_caller]
    pub fn start_with(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        self.start_with_command(args, env, |_| {})
    }

    /// [`TestTp::start_with`], with `prepare` applied to the command first
    /// (e.g. a `pre_exec` that lowers a resource limit of the daemon).
    #[track_caller]
    pub fn start_with_command(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&mut Command),
    ) -> Daemon {
        let mut serve = self.serve(args, env);
        prepare(serve.command());
        serve.spawn().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Run `tp-daemon serve --allow-root` expecting it to fail at start-up:
    /// (exit status, stderr).
    #[track_caller]
    pub fn serve_expecting_failure(&self) -> (ExitStatus, String) {
        self.serve_expecting_failure_with(&["--allow-root"], &[])
    }

    /// `tp-daemon serve --listen 127.0.0.1:0 ARGS --config THIS` with only
    /// `ENV` saying whether root is allowed; it must exit within 60 s
    /// without listening: (exit status, stderr).
    #[track_caller]
    pub fn serve_expecting_failure_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (ExitStatus, String) {
        let mut child = Command::new(bin("tp-daemon"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("VTP_ALLOW_ROOT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tp-daemon serve");
        // Read both pipes while waiting, so a chatty failure cannot block.
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        let status = wait_timeout(&mut child, Duration::from_secs(60))
            .expect("wait for tp-daemon serve")
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the daemon started although it should have failed");
            });
        let stdout = stdout.join().unwrap();
        assert!(!stdout.contains("listening on"), "{stdout}");
        (status, stderr.join().unwrap())
    }

    /// `tp-daemon ARGS --config THIS`.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> Run {
        self.cli_with_env(args, &[])
    }

    /// [`TestTp::cli`] with extra environment (e.g. the clock-offset hook).
    #[track_caller]
    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        Cli::new("tp-daemon")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .envs(env)
            .run()
    }

    /// The journal file.
    pub fn journal_path(&self) -> PathBuf {
        self.path().join("journal.sqlite3")
    }

    /// The journal, read-only, with plain SQL (what a backup would hold).
    pub fn journal_db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.journal_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap_or_else(|e| panic!("open {}: {e}", self.journal_path().display()))
    }

    /// The journal's resolution records for `z_hash` (0 or 1).
    pub fn resolved_rows(&self, z_hash: &vtp_protocol::Digest32) -> i64 {
        self.journal_db()
            .query_row(
                "SELECT COUNT(*) FROM resolved WHERE z_hash = ?1",
                [&z_hash.0[..]],
                |r| r.get(0),
            )
            .expect("count resolution records")
    }

    /// Rows of a journal table.
    pub fn journal_rows(&self, table: &str) -> i64 {
        self.journal_db()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("count rows")
    }

    /// `tp-daemon journal stats`: (resolved, invalid, unclaimed).
    #[track_caller]
    pub fn journal_stats(&self) -> (u64, u64, u64) {
        let r = self.cli(&["journal", "stats"]).ok();
        let get = |key: &str| -> u64 {
            r.stdout
                .lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {}", r.stdout))
        };
        (get("resolved "), get("invalid "), get("unclaimed "))
    }
}
