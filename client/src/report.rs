//! What vtp tells the user, and where: the one place that writes to stdout
//! and stderr (see docs/cli.md).
//!
//! - [`say!`](crate::say) — the report of a command (human text on stdout);
//!   silent with `--json` or `-q`; on stderr when stdout carries a file
//!   (`--out -`).
//! - [`note!`](crate::note) — progress and hints on stderr; silent with `-q`.
//! - [`detail!`](crate::detail) — more of the same, only with `-v`.
//! - [`warn!`](crate::warn) — `vtp: warning: …` on stderr, always.
//! - [`json`] — the one JSON object of a `--json` run, on stdout.
//!
//! A closed stdout (`vtp tp show card | head -c1`) ends the program quietly
//! (exit 0): the reader chose to stop. A *file* written to stdout that
//! cannot be delivered is an I/O error instead ([`write_data`]).

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::error;

/// The global output options (`--json`, `-q`, `-v`) and the terminal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ui {
    pub json: bool,
    pub quiet: bool,
    pub verbose: bool,
    /// Colour on stderr: a terminal and no `NO_COLOR`.
    pub color: bool,
    /// stderr is a terminal (progress bars).
    pub stderr_tty: bool,
    /// `--armor`: vtp files are written as ASCII armor.
    pub armor: bool,
}

impl Ui {
    /// The options with what the terminal and environment allow.
    pub fn detect(json: bool, quiet: bool, verbose: bool) -> Ui {
        let stderr_tty = io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Ui {
            json,
            quiet,
            verbose,
            color: stderr_tty
                && !no_color
                && !matches!(std::env::var_os("TERM"), Some(t) if t == "dumb"),
            stderr_tty,
            armor: false,
        }
    }
}

static UI: std::sync::RwLock<Option<Ui>> = std::sync::RwLock::new(None);
static STDOUT_DATA: AtomicBool = AtomicBool::new(false);
static JSON_DONE: AtomicBool = AtomicBool::new(false);
static WRITTEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Set the options before any command runs (`main` sets what it knows
/// before parsing, then the parsed options with [`set`]).
pub fn init(ui: Ui) {
    set(ui)
}

pub fn set(ui: Ui) {
    *UI.write().unwrap_or_else(|p| p.into_inner()) = Some(ui);
}

pub fn ui() -> Ui {
    UI.read()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or_default()
}

/// Whether the run prints JSON.
pub fn json_mode() -> bool {
    ui().json
}

/// Exit quietly if stdout is closed; other write errors are ignored (there
/// is nobody left to tell).
fn out_or_exit(r: io::Result<()>) {
    if let Err(e) = r {
        if e.kind() == io::ErrorKind::BrokenPipe {
            let _ = io::stderr().flush();
            std::process::exit(0);
        }
    }
}

#[doc(hidden)]
pub fn say_args(args: fmt::Arguments) {
    let u = ui();
    if u.json || u.quiet {
        return;
    }
    if STDOUT_DATA.load(Ordering::SeqCst) {
        let _ = writeln!(io::stderr().lock(), "{args}");
    } else {
        out_or_exit(writeln!(io::stdout().lock(), "{args}"));
    }
}

#[doc(hidden)]
pub fn note_args(args: fmt::Arguments, verbose_only: bool) {
    let u = ui();
    if u.quiet || (verbose_only && !u.verbose) {
        return;
    }
    let _ = writeln!(io::stderr().lock(), "{args}");
}

#[doc(hidden)]
pub fn warn_args(args: fmt::Arguments) {
    let prefix = paint("vtp: warning:", "33");
    let _ = writeln!(io::stderr().lock(), "{prefix} {args}");
}

/// `text` in an ANSI colour when colour is on (`code`: "31" red, "33" yellow).
pub fn paint(text: &str, code: &str) -> String {
    if ui().color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// A line of the command's report (see the module docs).
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::report::say_args(format_args!($($t)*)) };
}
/// Progress or a hint on stderr, unless `-q`.
#[macro_export]
macro_rules! note {
    ($($t:tt)*) => { $crate::report::note_args(format_args!($($t)*), false) };
}
/// Detail on stderr, only with `-v`.
#[macro_export]
macro_rules! detail {
    ($($t:tt)*) => { $crate::report::note_args(format_args!($($t)*), true) };
}
/// `vtp: warning: …` on stderr.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::report::warn_args(format_args!($($t)*)) };
}

/// Print the run's JSON object (only with `--json`).
pub fn json(value: &impl Serialize) {
    if !json_mode() {
        return;
    }
    JSON_DONE.store(true, Ordering::SeqCst);
    let text = serde_json::to_string(value).expect("JSON of plain data");
    out_or_exit(writeln!(io::stdout().lock(), "{text}"));
}

/// Remember a file the command wrote (for the default JSON object).
pub fn wrote(path: &std::path::Path) {
    let mut w = WRITTEN.lock().unwrap_or_else(|p| p.into_inner());
    w.push(crate::files::shown(path));
}

/// At the end of a successful `--json` run: a command that printed no JSON
/// of its own prints `{"ok":true,"written":[…]}`.
pub fn finish() {
    if json_mode() && !JSON_DONE.load(Ordering::SeqCst) {
        let w = WRITTEN.lock().unwrap_or_else(|p| p.into_inner()).clone();
        json(&serde_json::json!({ "ok": true, "written": w }));
    }
}

/// The JSON error object of a failed `--json` run, unless the command
/// already printed its object (a verdict of invalid evidence is the
/// result, not an error: one run, one JSON document).
pub fn json_error(class: error::ErrorClass, message: &str) {
    if JSON_DONE.load(Ordering::SeqCst) {
        return;
    }
    let v = serde_json::json!({
        "error": { "class": class.name(), "code": class.exit_code(), "message": message }
    });
    out_or_exit(writeln!(io::stdout().lock(), "{v}"));
}

/// Claim stdout for a file (`--out -`): reports move to stderr. Only one
/// file can go there, and not with `--json`.
pub fn claim_stdout(what: &str) -> anyhow::Result<()> {
    if json_mode() {
        return Err(error::usage(format!(
            "{what} to standard output (-) and --json cannot share it: write {what} to a file"
        )));
    }
    if STDOUT_DATA.swap(true, Ordering::SeqCst) {
        return Err(error::usage(
            "only one output can go to standard output (-)".to_string(),
        ));
    }
    Ok(())
}

/// Write (part of) a file to stdout; a closed stdout is an I/O error that
/// says the file was not delivered.
pub fn write_data(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => error::io(
                "standard output was closed before the whole file was written".to_string(),
            ),
            _ => error::io(format!("cannot write to standard output: {e}")),
        })
}
