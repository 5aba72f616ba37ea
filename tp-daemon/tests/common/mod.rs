//! Test harness: a real SoftHSM token made by the real `tp-daemon init`,
//! real daemon processes on 127.0.0.1:0, real TCP frames.
//!
//! One token per test file: `init` runs once per test process into a
//! template directory; every test copies it (token files, config, PIN) into
//! its own directory, so tests run in parallel without sharing a journal.
//! A daemon prints `listening on ADDR` as its first stdout line; that is how
//! tests learn the port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_core::{OsRng, RngCore};
use sha2::{Digest as _, Sha256};
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding::CmHasher;
use vtp_protocol::envelope::{self, Envelope, VerifiedEnvelope};
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::message::MessageSealer;
use vtp_protocol::receipt::{Receipt, VerifiedReceipt};
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{decode_response, encode_request, Request, Response};
use vtp_protocol::{Digest32, Timestamp};

pub const BIN: &str = env!("CARGO_BIN_EXE_tp-daemon");

pub fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---- the token --------------------------------------------------------------

/// Template made once per test process by `tp-daemon init`.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(root).unwrap();
        let exe = std::env::current_exe().unwrap();
        let stem = exe.file_stem().unwrap().to_string_lossy().into_owned();
        let prefix = format!("tpd-template-{stem}-");
        // Remove templates of earlier runs whose process is gone.
        for entry in std::fs::read_dir(root).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(&prefix) {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = root.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(BIN)
            .args(["init", "--softhsm", "--rsa-bits", "2048", "--data-dir"])
            .arg(&dir)
            .args(["--name", "test TP"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("next: tp-daemon serve --config"),
            "{stdout}"
        );
        dir
    })
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

/// A TP of its own for one test: a copy of the template token, its config
/// and (once a daemon ran) its journal.
pub struct TestTp {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    log_count: std::cell::Cell<u32>,
}

impl TestTp {
    pub fn new() -> TestTp {
        let template = template();
        let dir = tempfile::Builder::new()
            .prefix("tpd-test-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        copy_dir(template, dir.path());
        let from = template.display().to_string();
        let to = dir.path().display().to_string();
        for file in ["tp.toml", "softhsm/softhsm2.conf"] {
            let p = dir.path().join(file);
            let text = std::fs::read_to_string(&p).unwrap().replace(&from, &to);
            std::fs::write(&p, text).unwrap();
        }
        TestTp {
            config: dir.path().join("tp.toml"),
            dir,
            log_count: std::cell::Cell::new(0),
        }
    }

    /// A TP in a directory the test prepared itself (config at `config`).
    pub fn custom(dir: tempfile::TempDir, config: PathBuf) -> TestTp {
        TestTp {
            dir,
            config,
            log_count: std::cell::Cell::new(0),
        }
    }

    /// An empty directory for a [`TestTp::custom`].
    pub fn empty_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("tpd-test-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Edit tp.toml.
    pub fn edit_config(&self, f: impl FnOnce(&str) -> String) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, f(&text)).unwrap();
    }

    pub fn pin_file(&self) -> PathBuf {
        self.path().join("softhsm/user.pin")
    }

    fn next_log(&self) -> PathBuf {
        let n = self.log_count.get() + 1;
        self.log_count.set(n);
        self.path().join(format!("daemon-{n}.log"))
    }

    /// Start `tp-daemon serve` on a free port.
    pub fn start(&self) -> Daemon {
        self.start_with_env(&[])
    }

    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        self.start_with(&["--allow-root"], env)
    }

    /// Start `tp-daemon serve --listen 127.0.0.1:0` with extra arguments; with
    /// `--metrics-listen`, also read the `metrics on ADDR` line.
    pub fn start_with(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        self.start_with_command(args, env, |_| {})
    }

    /// [`TestTp::start_with`], with `prepare` applied to the command first
    /// (e.g. a `pre_exec` that lowers a resource limit of the daemon).
    pub fn start_with_command(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&mut Command),
    ) -> Daemon {
        let log = self.next_log();
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        prepare(&mut command);
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = if args.contains(&"--metrics-listen") {
            2
        } else {
            1
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            for _ in 0..lines {
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "daemon did not start (stdout {line:?}); its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let metrics = (lines == 2).then(|| {
            let m = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
            m.trim()
                .strip_prefix("metrics on ")
                .unwrap_or_else(|| panic!("no metrics line: {m:?}"))
                .parse()
                .unwrap()
        });
        Daemon {
            child,
            addr: addr.parse().unwrap(),
            metrics,
            log,
        }
    }

    /// Run `tp-daemon serve` expecting it to fail at start-up.
    pub fn serve_expecting_failure(&self) -> (ExitStatus, String) {
        self.serve_expecting_failure_with(&["--allow-root"], &[])
    }

    pub fn serve_expecting_failure_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (ExitStatus, String) {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .envs(env.iter().copied())
            .env_remove("VTP_ALLOW_ROOT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(60)).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("the daemon started although it should have failed");
        });
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(!stdout.contains("listening on"), "{stdout}");
        (status, stderr)
    }

    /// Run `tp-daemon ARGS --config THIS`; (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> CliRun {
        self.cli_with_env(args, &[])
    }

    /// [`TestTp::cli`] with extra environment (e.g. the clock-offset hook).
    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> CliRun {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        CliRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The journal, read-only, with plain SQL (what a backup would hold).
    pub fn journal_db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.path().join("journal.sqlite3"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    /// `tp-daemon journal stats`: (resolved, invalid, unclaimed).
    pub fn journal_stats(&self) -> (u64, u64, u64) {
        let out = Command::new(BIN)
            .args(["journal", "stats", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let get = |key: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {text}"))
        };
        (get("resolved "), get("invalid "), get("unclaimed "))
    }
}

/// The result of one `tp-daemon` command.
#[derive(Debug)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    #[track_caller]
    pub fn ok(self) -> CliRun {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }
    #[track_caller]
    pub fn fails(self) -> CliRun {
        assert_eq!(self.code, 1, "command should have failed: {self:#?}");
        assert!(
            self.stderr.contains("tp-daemon: error: "),
            "a failure says why: {self:#?}"
        );
        self
    }
    /// The `tp-daemon: error:` line.
    pub fn error_line(&self) -> &str {
        self.stderr
            .lines()
            .find(|l| l.starts_with("tp-daemon: error: "))
            .unwrap_or_else(|| panic!("no error line in {}", self.stderr))
    }
}

/// Raise this process's soft open-file limit to its hard limit (tests that
/// hold thousands of sockets); returns the new soft limit.
pub fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        // (An unlimited hard limit still stops at the kernel's nr_open.)
        let want = lim.rlim_max.min(1 << 20);
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    lim.rlim_cur
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    /// The metrics endpoint, when started with `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// One request on a fresh connection.
    pub fn ask(&self, request: &Request) -> Response {
        self.connect().request(request)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// SIGHUP: reload the config and the key ring.
    pub fn hup(&self) {
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGHUP) }, 0);
    }

    /// Send SIGTERM without waiting.
    pub fn send_term(&self) {
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGTERM) }, 0);
    }

    /// Wait for the exit (after a signal).
    pub fn wait_exit(mut self, limit: Duration) -> ExitStatus {
        wait_timeout(&mut self.child, limit).expect("daemon did not exit")
    }

    /// Poll the log until it contains `needle` (count times).
    pub fn wait_log(&self, needle: &str, count: usize) -> String {
        let start = Instant::now();
        loop {
            let log = self.log_text();
            if log.matches(needle).count() >= count {
                return log;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{needle:?} x{count} not in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One HTTP GET on the metrics endpoint: (status line, body).
    pub fn http_get(&self, path: &str) -> (String, String) {
        let addr = self.metrics.expect("started with --metrics-listen");
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    /// One sample from `/metrics`, e.g. `vtp_connections_open` or
    /// `vtp_refusals_total{request="connection",reason="busy"}`; `None` if
    /// that series is not there (yet).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.http_get("/metrics");
        body.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        wait_timeout(&mut self.child, Duration::from_secs(30))
            .expect("daemon did not exit after SIGTERM")
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- the wire ---------------------------------------------------------------

/// A client connection speaking raw length-delimited frames.
pub struct Conn(pub TcpStream);

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Conn(s)
    }

    /// A connection from a chosen local address (e.g. 127.0.0.2, to be
    /// another client address than 127.0.0.1 for the per-address limits).
    pub fn connect_from(source: IpAddr, addr: SocketAddr) -> Conn {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::new(source, 0)).unwrap();
            sock.connect(addr).await.unwrap()
        });
        let s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Conn(s)
    }

    pub fn send_frame(&mut self, body: &[u8]) {
        let mut buf = (body.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(body);
        self.0.write_all(&buf).unwrap();
    }

    /// The next response, or `None` at end of stream (or reset).
    pub fn read_response(&mut self) -> Option<Response> {
        let mut len = [0u8; 4];
        if self.0.read_exact(&mut len).is_err() {
            return None;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).unwrap();
        Some(decode_response(&body).expect("the daemon sends decodable responses"))
    }

    pub fn request(&mut self, r: &Request) -> Response {
        self.send_frame(&encode_request(r));
        self.read_response().expect("a response")
    }

    /// True if the daemon closed the connection (EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}

pub fn card_of(d: &Daemon) -> TpCard {
    match d.ask(&Request::GetCard) {
        Response::Card(c) => c,
        other => panic!("expected a card, got {other:?}"),
    }
}

// ---- the parties ------------------------------------------------------------

pub fn identity(name: &str) -> IdentitySecret {
    IdentitySecret::generate(name, now() - 10, &mut OsRng).unwrap()
}

/// An envelope Alice sent Bob, Bob's receipt for it, and the message key.
pub struct Exchange {
    pub alice: IdentitySecret,
    pub bob: IdentitySecret,
    pub envelope: Envelope,
    pub verified: VerifiedEnvelope,
    pub receipt: VerifiedReceipt,
    pub message_key: [u8; 32],
}

impl Exchange {
    /// A1 + B1 for a fresh pair of parties, deadline `deadline_in` s from now.
    pub fn new(card: &TpCard, deadline_in: u64) -> Exchange {
        let alice = identity("alice");
        let bob = identity("bob");
        let t = now();
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        let prep = envelope::prepare(&alice, bob.card(), card, t + deadline_in, t, nonce).unwrap();
        let message_key = *prep.message_key();
        let msg = b"the signed contract, page 1 of 1".repeat(50);
        let mut sealer = MessageSealer::new(&message_key, msg.len() as u64);
        let mut cm = Vec::new();
        let mut off = 0;
        while let Some(n) = sealer.next_len() {
            cm.extend(sealer.seal_chunk(&msg[off..off + n]).unwrap());
            off += n;
        }
        let mut h = CmHasher::default();
        h.update(&cm);
        let envelope = prep
            .finish(
                &alice,
                h.finish(),
                cm.len() as u64,
                Digest32(Sha256::digest(&msg).into()),
            )
            .unwrap();
        let verified = envelope.verify(card).unwrap();
        let receipt = Receipt::issue(&bob, &verified, t)
            .verify(&verified)
            .unwrap();
        Exchange {
            alice,
            bob,
            envelope,
            verified,
            receipt,
            message_key,
        }
    }

    /// Bob's claim, dated now.
    pub fn claim(&self) -> Request {
        Request::Claim(Claim::new(&self.bob, &self.verified, &self.receipt, now()))
    }
}
