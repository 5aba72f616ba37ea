//! `tp-daemon`: the command line of the vtp trusted party. Only wiring lives
//! here; see the library's modules for the substance.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing::{info, warn};
use vtp_device::{OaepHash, Token, TrustedParty};

use vtp_tp_daemon::clock::{Clock, OFFSET_ENV};
use vtp_tp_daemon::config::Config;
use vtp_tp_daemon::init::{init_softhsm, InitOptions};
use vtp_tp_daemon::journal::Journal;
use vtp_tp_daemon::server::Server;
use vtp_tp_daemon::service::Service;

/// The vtp trusted party (TP): resolves certified-mail claims with keys held
/// in a PKCS#11 token, and keeps a durable journal of every answer.
#[derive(Parser)]
#[command(name = "tp-daemon", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a development TP: a SoftHSM2 token with fresh keys, a commented
    /// tp.toml and the TP card, all in one directory.
    Init(InitArgs),
    /// Run the TP daemon.
    Serve(ServeArgs),
    /// Write the TP card (the public file users need) from the token.
    Card(CardArgs),
    /// Inspect the journal.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
}

#[derive(Args)]
struct InitArgs {
    /// Directory to create the TP in (token, tp.toml, card, journal).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Put the keys in a new SoftHSM2 development token (required: for a real
    /// HSM, write tp.toml by hand).
    #[arg(long)]
    softhsm: bool,
    /// Size of the TP's RSA decryption key: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 3072, value_name = "BITS")]
    rsa_bits: u32,
    /// OAEP hash of the decryption key. SoftHSM 2.6 supports only sha1.
    #[arg(long, value_enum, default_value_t = OaepArg::Sha1)]
    oaep: OaepArg,
    /// Name shown in the TP card.
    #[arg(long, default_value = "vtp TP")]
    name: String,
    /// Address to write into tp.toml as `listen`.
    #[arg(long, default_value = vtp_tp_daemon::config::DEFAULT_LISTEN, value_name = "ADDR")]
    listen: SocketAddr,
}

#[derive(Clone, Copy, ValueEnum)]
enum OaepArg {
    Sha1,
    Sha256,
}

#[derive(Args)]
struct ServeArgs {
    /// The tp.toml to use.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Listen here instead of the config's `listen` (port 0: any free port;
    /// the bound address is printed as `listening on ADDR`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
struct CardArgs {
    /// The tp.toml to use.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where to write the card.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Print how many resolutions, invalid-envelope verdicts and unclaimed
    /// certificates the journal holds (safe while the daemon runs).
    Stats {
        /// The tp.toml to use.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tp-daemon: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries `listening on ADDR` for scripts);
/// `RUST_LOG` filters, default `info`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init(args) => init(args),
        Command::Serve(args) => serve(args),
        Command::Card(args) => card(args),
        Command::Journal {
            command: JournalCommand::Stats { config },
        } => journal_stats(&config),
    }
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    if !args.softhsm {
        bail!(
            "only development TPs can be created automatically (add --softhsm). For a real \
             HSM, initialize the token with its vendor's tools, write tp.toml by hand (see the \
             commented tp.toml that `init --softhsm` writes) and generate the keys with \
             `tp-daemon keys generate` (coming soon)"
        );
    }
    let opts = InitOptions {
        data_dir: args.data_dir,
        rsa_bits: args.rsa_bits,
        oaep: match args.oaep {
            OaepArg::Sha1 => OaepHash::Sha1,
            OaepArg::Sha256 => OaepHash::Sha256,
        },
        name: args.name,
        listen: args.listen,
    };
    let made = init_softhsm(&opts)?;
    let enc: Vec<String> = made.keys.encryption.iter().map(|k| k.to_string()).collect();
    println!(
        "created a development TP (SoftHSM2 token \"{}\"; not for production) in {}",
        vtp_tp_daemon::init::DEV_LABEL,
        made.data_dir.display()
    );
    println!("  config:    {}", made.config.display());
    println!(
        "  TP card:   {}  (give this file to users)",
        made.card.display()
    );
    println!("  token:     {}", made.softhsm2_conf.display());
    println!("  user PIN:  {}", made.pin_file.display());
    println!(
        "  keys:      signing {}, encryption {} (RSA-{}, OAEP-{})",
        made.keys.signing,
        enc.join(", "),
        opts.rsa_bits,
        opts.oaep
    );
    println!("next: tp-daemon serve --config {}", made.config.display());
    Ok(())
}

/// Load the config and open the token and the TP (everything before the
/// runtime starts: SOFTHSM2_CONF must be set while we are single-threaded).
fn open_tp(config_path: &Path, clock: Clock) -> anyhow::Result<(Config, Arc<TrustedParty>)> {
    let config = Config::load(config_path)?;
    if let Some(conf) = &config.softhsm2_conf {
        if !conf.is_file() {
            bail!(
                "config file {}: [token] softhsm2_conf {}: no such file",
                config.path.display(),
                conf.display()
            );
        }
        std::env::set_var("SOFTHSM2_CONF", conf);
    }
    let token = Arc::new(Token::open(&config.token)?);
    let tp = TrustedParty::open(
        token,
        config.keys.clone(),
        &config.name,
        config.policy.clone(),
        clock.now(),
    )?;
    Ok((config, Arc::new(tp)))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let clock = Clock::from_env().map_err(|e| anyhow!(e))?;
    if clock.offset_secs() != 0 {
        warn!(
            offset_secs = clock.offset_secs(),
            "!!! {OFFSET_ENV} is set: the TP's clock is SHIFTED. This is a TEST HOOK; deadlines \
             are judged on the shifted clock. Never set it in production. !!!"
        );
    }
    let (config, tp) = open_tp(&args.config, clock)?;
    let journal = Journal::open(&config.data_dir)?;
    let stats = journal.stats()?;
    info!(
        tp = %tp.card().id(),
        journal = %journal.path().display(),
        resolved = stats.resolved,
        invalid = stats.invalid,
        unclaimed = stats.unclaimed,
        "trusted party ready"
    );
    let listen = args.listen.unwrap_or(config.listen);
    let service = Arc::new(Service::new(tp, journal, clock));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(listen, service, config.limits.clone())
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = server.local_addr()?;
        let shutdown = shutdown_signal()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {addr}")?;
            out.flush()?;
        }
        info!(%addr, "listening");
        server.run(shutdown).await;
        Ok(())
    })
}

/// Completes at the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
    })
}

fn card(args: CardArgs) -> anyhow::Result<()> {
    let (_config, tp) = open_tp(&args.config, Clock::system())?;
    std::fs::write(&args.out, tp.card().to_file())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("wrote TP card {} to {}", tp.card().id(), args.out.display());
    Ok(())
}

fn journal_stats(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let stats = Journal::open_read_only(&config.data_dir)?.stats()?;
    println!("resolved {}", stats.resolved);
    println!("invalid {}", stats.invalid);
    println!("unclaimed {}", stats.unclaimed);
    Ok(())
}
