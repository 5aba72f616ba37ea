//! A `tp-daemon serve` process: start it, learn where it listens, keep its
//! log, signal it, see it exit — and never leave it behind.
//!
//! The daemon prints `listening on ADDR` as its first stdout line, and
//! `metrics on ADDR` right after it when its metrics endpoint is on; its
//! logs go to stderr, which [`Serve`] sends to a file. [`Serve::spawn`] is
//! fallible (a [`StartError`] says what the daemon printed and logged):
//! the bench, an operator's tool, starts its daemon with it. The methods
//! that panic are test conveniences on top. A [`Daemon`] is killed when it
//! is dropped.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use vtp_protocol::wire::{Request, Response};

use crate::frame::Conn;

/// How long [`Serve::spawn`] waits for `listening on` unless told otherwise.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A `serve` command to start: the program, its arguments and environment
/// (the [`Command`] is open to the caller), where its log goes.
pub struct Serve {
    cmd: Command,
    log: PathBuf,
    append: bool,
    metrics: bool,
    timeout: Duration,
}

impl Serve {
    /// `PROGRAM serve`, logging to `log` (created afresh).
    pub fn new(program: impl AsRef<OsStr>, log: impl Into<PathBuf>) -> Serve {
        let mut cmd = Command::new(program);
        cmd.arg("serve");
        Serve {
            cmd,
            log: log.into(),
            append: false,
            metrics: false,
            timeout: START_TIMEOUT,
        }
    }

    /// The command, for arguments, environment or a `pre_exec`.
    pub fn command(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Append to the log instead of creating it afresh (a restarted daemon).
    pub fn append_log(mut self) -> Serve {
        self.append = true;
        self
    }

    /// The daemon serves metrics: wait for its `metrics on ADDR` line too.
    pub fn expect_metrics(mut self, yes: bool) -> Serve {
        self.metrics = yes;
        self
    }

    /// Wait this long for `listening on ADDR`.
    pub fn start_timeout(mut self, limit: Duration) -> Serve {
        self.timeout = limit;
        self
    }

    /// Start the daemon and wait until it listens. On failure the process
    /// is killed and the error carries its first stdout line and its log.
    pub fn spawn(mut self) -> Result<Daemon, StartError> {
        let log_file = if self.append {
            File::options().create(true).append(true).open(&self.log)
        } else {
            File::create(&self.log)
        }
        .map_err(|source| StartError::Log {
            path: self.log.clone(),
            source,
        })?;
        let mut child = self
            .cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|source| StartError::Spawn {
                program: PathBuf::from(self.cmd.get_program()),
                source,
            })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Every line goes to the starter; after the ones it waits for,
            // nobody listens, but reading on keeps the daemon from ever
            // blocking on (or failing to write) its stdout.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut daemon = Daemon {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: None,
            log: self.log,
        };
        let first = lines.recv_timeout(self.timeout).unwrap_or_default();
        let Some(addr) = first.trim().strip_prefix("listening on ") else {
            return Err(daemon.failed(first));
        };
        daemon.addr = match addr.parse() {
            Ok(a) => a,
            Err(_) => return Err(daemon.failed(first)),
        };
        if self.metrics {
            let line = lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_default();
            match line.trim().strip_prefix("metrics on ").map(str::parse) {
                Some(Ok(m)) => daemon.metrics = Some(m),
                _ => return Err(daemon.failed(line)),
            }
        }
        Ok(daemon)
    }
}

/// Why a daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the daemon's log {}: {source}", path.display())]
    Log { path: PathBuf, source: io::Error },
    #[error("cannot start {}: {source}", program.display())]
    Spawn { program: PathBuf, source: io::Error },
    /// It printed something else than the address lines (or nothing, in
    /// time); it has been killed.
    #[error("the daemon did not start (stdout {line:?}, {}); its log {}:\n{log_text}",
        match status { Some(s) => format!("exited: {s}"), None => "killed".into() },
        log.display())]
    NotListening {
        /// The line read where an address line was expected.
        line: String,
        /// How it exited, if it exited on its own.
        status: Option<ExitStatus>,
        log: PathBuf,
        log_text: String,
    },
}

impl StartError {
    /// The last `n` lines of the daemon's log, if it got as far as writing one.
    pub fn log_tail(&self, n: usize) -> Option<(&Path, String)> {
        match self {
            StartError::NotListening { log, log_text, .. } => {
                let lines: Vec<&str> = log_text.lines().collect();
                let tail = lines[lines.len().saturating_sub(n)..].join("\n");
                Some((log.as_path(), tail))
            }
            _ => None,
        }
    }
}

/// Wait up to `limit` for `child` to exit.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> io::Result<Option<ExitStatus>> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if start.elapsed() >= limit {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP GET (the daemon's `/healthz`, `/metrics`): (status line, body).
pub fn http_get(addr: SocketAddr, path: &str) -> io::Result<(String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no end of the HTTP head"))?;
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

/// One sample from a Prometheus text body, e.g. `vtp_connections_open` or
/// `vtp_refusals_total{request="connection",reason="busy"}`; `None` if that
/// series is not there (yet).
pub fn metric_sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Child,
    /// Where it listens for frames.
    pub addr: SocketAddr,
    /// Its metrics endpoint, when started with [`Serve::expect_metrics`].
    pub metrics: Option<SocketAddr>,
    /// Its stderr.
    pub log: PathBuf,
}

impl Daemon {
    /// Kill a daemon that did not start, and say what it did instead.
    fn failed(&mut self, line: String) -> StartError {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => Some(s),
            _ => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                None
            }
        };
        StartError::NotListening {
            line,
            status,
            log: self.log.clone(),
            log_text: self.log_text(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Poll the log until it contains `needle` `count` times (60 s at most).
    #[track_caller]
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

    /// Send a signal (`libc::SIGHUP`, `libc::SIGTERM`, …).
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        match unsafe { libc::kill(self.child.id() as libc::pid_t, signal) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// SIGHUP: reload the config and the key ring.
    #[track_caller]
    pub fn hup(&self) {
        self.signal(libc::SIGHUP).expect("SIGHUP the daemon");
    }

    /// SIGTERM, without waiting.
    #[track_caller]
    pub fn send_term(&self) {
        self.signal(libc::SIGTERM).expect("SIGTERM the daemon");
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait for the exit (after a signal); panics after `limit`.
    #[track_caller]
    pub fn wait_exit(mut self, limit: Duration) -> ExitStatus {
        wait_timeout(&mut self.child, limit)
            .expect("wait for the daemon")
            .expect("daemon did not exit")
    }

    /// SIGTERM, then wait up to `limit` for the exit; if it does not come,
    /// SIGKILL and a `TimedOut` error.
    pub fn stop(mut self, limit: Duration) -> io::Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        match wait_timeout(&mut self.child, limit)? {
            Some(status) => Ok(status),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the daemon did not exit within {limit:?} of SIGTERM"),
                ))
            }
        }
    }

    /// SIGTERM, then the exit status (30 s at most).
    #[track_caller]
    pub fn terminate(self) -> ExitStatus {
        self.stop(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("daemon did not exit after SIGTERM: {e}"))
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new connection to it.
    #[track_caller]
    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }

    /// One request on a fresh connection.
    #[track_caller]
    pub fn ask(&self, request: &Request) -> Response {
        self.connect().request(request)
    }

    /// One HTTP GET on the metrics endpoint: (status line, body).
    #[track_caller]
    pub fn http_get(&self, path: &str) -> (String, String) {
        let addr = self.metrics.expect("started with --metrics-listen");
        http_get(addr, path).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
    }

    /// One sample from `/metrics` (see [`metric_sample`]).
    #[track_caller]
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_sample(&self.http_get("/metrics").1, series)
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

#[cfg(test)]
mod tests {
    use super::metric_sample;

    #[test]
    fn metric_samples_are_found_by_their_whole_series() {
        let body = "# HELP x\nvtp_open 3\nvtp_open_total{a=\"b\"} 7.5\n";
        assert_eq!(metric_sample(body, "vtp_open"), Some(3.0));
        assert_eq!(metric_sample(body, "vtp_open_total{a=\"b\"}"), Some(7.5));
        assert_eq!(metric_sample(body, "vtp_missing"), None);
    }
}
