//! `vtp`: parse the command line, run the command, and report any failure as
//! the single line `vtp: error: …` with the exit status of its class
//! (`vtp_client::error::ErrorClass`; with `--json`, also a JSON error object
//! on stdout).

use std::ffi::OsString;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use vtp_client::cli::Cli;
use vtp_client::error::{classify, ErrorClass};
use vtp_client::report::{self, Ui};

/// One line: newlines in messages (from files or the TP) become spaces.
fn fail(class: ErrorClass, message: &str, json: bool) -> ExitCode {
    let msg = message.replace(['\n', '\r'], " ");
    if json {
        report::json_error(class, &msg);
    }
    eprintln!("{} {msg}", report::paint("vtp: error:", "31"));
    ExitCode::from(class.exit_code())
}

/// clap's multi-line usage error as one line: the message, its tip, and
/// where to read more.
fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts: Vec<String> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("Usage:") || l.starts_with("For more information") {
            break;
        }
        if !l.is_empty() {
            parts.push(l.strip_prefix("error: ").unwrap_or(l).to_string());
        }
    }
    format!("{} (see --help)", parts.join(" "))
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // Known before parsing, so that a usage error is JSON too.
    let json = args
        .iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json");
    report::init(Ui::detect(json, false, false));
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = e.print();
                return ExitCode::from(ErrorClass::Usage.exit_code());
            }
            _ => return fail(ErrorClass::Usage, &usage_line(&e), json),
        },
    };
    report::set(Ui {
        armor: cli.global.armor,
        ..Ui::detect(cli.global.json, cli.global.quiet, cli.global.verbose)
    });
    match vtp_client::commands::run(cli) {
        Ok(()) => {
            report::finish();
            ExitCode::SUCCESS
        }
        // `{:#}` joins the context chain with ": ".
        Err(e) => fail(classify(&e), &format!("{e:#}"), json),
    }
}
