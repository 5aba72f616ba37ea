//! `vtp`: parse the command line, run the command, and report any failure as
//! the single line `vtp: error: …` (exit status 1; usage errors exit 2).

use std::process::ExitCode;

use clap::Parser;
use vtp_client::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match vtp_client::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the context chain with ": "; keep it on one line.
            let msg = format!("{e:#}").replace(['\n', '\r'], " ");
            eprintln!("vtp: error: {msg}");
            ExitCode::from(1)
        }
    }
}
