//! Running a command line (`vtp`, `tp-daemon`) and judging what it did.
//!
//! Both commands promise the same: exit 0, or an error status with a line
//! `PROGRAM: error: …` on stderr (for `vtp`, that line is all of stderr;
//! its status names the class of failure, docs/cli.md; `tp-daemon` exits 1).
//! [`Run`] checks that promise one way for every suite.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::bins::try_bin;

/// A command line to run: a workspace binary, its arguments, environment,
/// working directory and standard input (none unless given).
pub struct Cli {
    program: String,
    cmd: Command,
    stdin: Option<Vec<u8>>,
    spawn_error: Option<io::Error>,
}

impl Cli {
    /// The workspace binary `program` (see [`crate::bins`]).
    pub fn new(program: &str) -> Cli {
        let (cmd, spawn_error) = match try_bin(program) {
            Ok(p) => (Command::new(p), None),
            Err(e) => (Command::new(program), Some(e)),
        };
        Cli {
            program: program.to_owned(),
            cmd,
            stdin: None,
            spawn_error,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cli {
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cli
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cli {
        self.cmd.env(key, value);
        self
    }

    pub fn envs<'a>(mut self, vars: impl IntoIterator<Item = &'a (&'a str, &'a str)>) -> Cli {
        self.cmd.envs(vars.into_iter().copied());
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Cli {
        self.cmd.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Cli {
        self.cmd.current_dir(dir);
        self
    }

    /// Feed these bytes on standard input (default: none, `/dev/null`).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cli {
        self.stdin = Some(bytes.into());
        self
    }

    /// Run to the end.
    pub fn try_run(mut self) -> io::Result<Run> {
        if let Some(e) = self.spawn_error.take() {
            return Err(e);
        }
        let out = match self.stdin.take() {
            None => self.cmd.stdin(Stdio::null()).output()?,
            Some(bytes) => {
                let mut child = self
                    .cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()?;
                let mut input = child.stdin.take().expect("piped stdin");
                // Written from a thread: a command that does not read all of
                // its input must not deadlock against a full stdout pipe.
                let writer = std::thread::spawn(move || {
                    let _ = input.write_all(&bytes);
                });
                let out = child.wait_with_output()?;
                let _ = writer.join();
                out
            }
        };
        Ok(Run::from_output(&self.program, out))
    }

    /// [`Cli::try_run`] for tests: panics if the program cannot be run.
    #[track_caller]
    pub fn run(self) -> Run {
        let program = self.program.clone();
        self.try_run()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }
}

/// `vtp ARGS` (no stdin).
#[track_caller]
pub fn vtp<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Cli::new("vtp").args(args).run()
}

/// `vtp ARGS` in directory `dir` (relative paths in ARGS are under `dir`).
#[track_caller]
pub fn vtp_in<I, S>(dir: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Cli::new("vtp").current_dir(dir).args(args).run()
}

/// What one command line did.
#[derive(Debug)]
pub struct Run {
    /// The program's name (`vtp`, `tp-daemon`): its error lines start with it.
    pub program: String,
    /// The exit status; -1 if a signal ended it.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(program: &str, o: Output) -> Run {
        Run {
            program: program.to_owned(),
            status: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn error_prefix(&self) -> String {
        format!("{}: error: ", self.program)
    }

    /// Exited 0.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.status, 0,
            "{} failed:\nstdout: {}\nstderr: {}",
            self.program, self.stdout, self.stderr
        );
        self
    }

    /// Exited with an error status (1-7) and said why in a `PROGRAM: error:` line.
    #[track_caller]
    pub fn fails(self) -> Run {
        // `vtp` exits with a status per class of failure (docs/cli.md),
        // `tp-daemon` with 1; a panic (101) or a signal (-1) is never a
        // failure that says why.
        assert!(
            (1..=7).contains(&self.status),
            "{} should have failed with an error status (1-7), not {}:\nstdout: {}\nstderr: {}",
            self.program,
            self.status,
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr
                .lines()
                .any(|l| l.starts_with(&self.error_prefix())),
            "a failure says why in a `{}` line:\nstderr: {}",
            self.error_prefix(),
            self.stderr
        );
        self
    }

    /// Failed ([`Run::fails`]) with exactly one line on stderr, the error line, and it
    /// mentions `needle`.
    #[track_caller]
    pub fn fails_with(self, needle: &str) -> Run {
        let r = self.fails();
        r.assert_one_error_line();
        assert!(
            r.stderr.contains(needle),
            "stderr does not mention {needle:?}: {}",
            r.stderr
        );
        r
    }

    /// Stderr is one line, the `PROGRAM: error:` line.
    #[track_caller]
    pub fn assert_one_error_line(&self) {
        let lines: Vec<_> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr is not one line: {:?}", self.stderr);
        assert!(
            lines[0].starts_with(&self.error_prefix()),
            "{:?}",
            self.stderr
        );
    }

    /// The `PROGRAM: error:` line.
    #[track_caller]
    pub fn error_line(&self) -> &str {
        let prefix = self.error_prefix();
        self.stderr
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {}", self.stderr))
    }
}

#[cfg(test)]
mod tests {
    use super::Run;

    fn run(status: i32, stderr: &str) -> Run {
        Run {
            program: "vtp".into(),
            status,
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn a_failure_is_an_error_status_with_an_error_line() {
        let r = run(1, "vtp: error: no such file x.env\n").fails_with("x.env");
        assert_eq!(r.error_line(), "vtp: error: no such file x.env");
        // vtp's status per class of failure (docs/cli.md) counts as failing.
        run(6, "vtp: error: truncated receipt\n").fails_with("truncated");
        let caught = |f: fn() -> Run| std::panic::catch_unwind(f).is_err();
        assert!(caught(|| run(101, "vtp: error: panicked\n").fails()));
        assert!(caught(|| run(1, "something broke\n").fails()));
        assert!(caught(|| run(1, "vtp: error: a\nmore\n").fails_with("a")));
        assert!(caught(|| run(0, "").fails()));
    }
}
