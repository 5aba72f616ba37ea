//! `tp-daemon`: the command line of the vtp trusted party. Only wiring lives
//! here; see the library's modules for the substance.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Parser, Subcommand, ValueEnum};
use vtp_device::OaepHash;

use vtp_tp_daemon::daemon::{serve, ServeOptions};
use vtp_tp_daemon::operator::init::{init_dev, InitOptions};
use vtp_tp_daemon::operator::{commands, records, NewKeyOptions};

/// The vtp trusted party (TP): resolves certified-mail claims with keys held
/// in a PKCS#11 token, and keeps a durable journal of every answer.
#[derive(Parser)]
#[command(name = "tp-daemon", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "VTP_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines with key=value fields.
    Text,
    /// One JSON object per line (for journald/Loki/Elasticsearch).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create a development TP: a SoftHSM2 token with fresh keys, a commented
    /// tp.toml, the key ring and the TP card, all in one directory.
    Init(InitArgs),
    /// Run the TP daemon (SIGTERM: drain and exit; SIGHUP: reload). One
    /// daemon per data directory (a second one is refused, naming the
    /// first); under systemd it signals READY=1 once it can answer.
    Serve(ServeArgs),
    /// Check a deployment without changing anything: the config, the PIN
    /// file, the token and a real operation with every key (a signature
    /// verified with the public key; an OAEP round trip), the journal's
    /// head (read-only), the data directory and the addresses. Exit 0 with a
    /// summary, or 1 with one line naming the problem. For CI and before
    /// reloads.
    Check(ConfigArg),
    /// Write the TP card (same as `keys export`).
    Card(ExportArgs),
    /// Manage the TP's keys: generate, list, rotate, retire, export.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage subscribers (who may claim when [policy] require_subscription).
    Subscribers {
        #[command(subcommand)]
        command: SubscribersCommand,
    },
    /// Measure this TP: the bare device operation, claims through a real
    /// daemon (a throwaway copy: the journal is not touched), the honest
    /// path, memory. JSON lines on stdout, a table on stderr; see
    /// docs/performance.md.
    Bench(BenchArgs),
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
    /// Put the keys in a new SoftHSM2 development token (same as
    /// `--dev-token softhsm`). For a real HSM, see docs/operators.md.
    #[arg(long, conflicts_with = "dev_token")]
    softhsm: bool,
    /// Put the keys in a new development token of this software token:
    /// `softhsm` or `kryoptic` (kryoptic: build it with scripts/build-kryoptic.sh).
    #[arg(long, value_name = "KIND")]
    dev_token: Option<vtp_device::devtoken::DevTokenKind>,
    /// Size of the TP's RSA decryption key: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 3072, value_name = "BITS")]
    rsa_bits: u32,
    /// OAEP hash of the decryption key (default: the best the token supports:
    /// sha1 on SoftHSM 2.6, sha256 on kryoptic).
    #[arg(long, value_enum)]
    oaep: Option<OaepArg>,
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

impl From<OaepArg> for OaepHash {
    fn from(o: OaepArg) -> Self {
        match o {
            OaepArg::Sha1 => OaepHash::Sha1,
            OaepArg::Sha256 => OaepHash::Sha256,
        }
    }
}

#[derive(Args)]
struct ConfigArg {
    /// The tp.toml to use.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Listen here instead of the config's `listen` (port 0: any free port;
    /// the bound address is printed as `listening on ADDR`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Serve /healthz and /metrics here instead of the config's
    /// `metrics_listen` (printed as `metrics on ADDR`).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Run even as root (not recommended). Also: VTP_ALLOW_ROOT=1.
    #[arg(long, env = "VTP_ALLOW_ROOT", value_parser = clap::builder::BoolishValueParser::new())]
    allow_root: bool,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Seconds per timed phase.
    #[arg(long, default_value_t = 5.0, value_name = "N")]
    seconds: f64,
    /// Concurrency levels of the claims through the daemon.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,4,16,64",
        value_name = "LIST"
    )]
    concurrency: Vec<usize>,
    /// Paced (open-loop) runs at the highest concurrency: claims offered at
    /// these fractions of the best closed-loop rate (empty: none).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.5,0.8",
        value_name = "LIST"
    )]
    paced_load: Vec<f64>,
    /// Exchanges of the visible-vs-invisible TP comparison.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    exchanges: usize,
    /// Percentage of those exchanges that cheat (and so need the TP).
    #[arg(long, default_value_t = 1.0, value_name = "PCT")]
    cheat_percent: f64,
    /// Size of the big message for the client throughput, MiB.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    big_mb: u64,
    /// Idle connections held open while the daemon's memory is read.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    idle_connections: usize,
    /// Parties (identities) the claims are spread over.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    identities: usize,
    /// Directory for the throwaway daemon's journal (default: the system's
    /// temporary directory); put it on the journal's disk to measure that disk.
    #[arg(long, value_name = "DIR")]
    scratch_dir: Option<PathBuf>,
    /// Alternating device_raw / claim_e2e pairs (--seconds each) for the
    /// headline ratio, reported as their median and range; 0: the single
    /// run of the earlier phases only
    #[arg(long, value_name = "N", default_value_t = 5)]
    pairs: usize,
    /// Run the benchmark daemon even as root. Also: VTP_ALLOW_ROOT=1.
    #[arg(long, env = "VTP_ALLOW_ROOT", value_parser = clap::builder::BoolishValueParser::new())]
    allow_root: bool,
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Where to write the card.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Args)]
struct NewKeyArgs {
    /// RSA size of the new key (2048, 3072, 4096); default: [keys] rsa_bits.
    #[arg(long, value_name = "BITS")]
    rsa_bits: Option<u32>,
    /// OAEP hash of the new key; default: [keys] oaep.
    #[arg(long, value_enum)]
    oaep: Option<OaepArg>,
}

impl NewKeyArgs {
    fn options(&self) -> NewKeyOptions {
        NewKeyOptions {
            rsa_bits: self.rsa_bits,
            oaep: self.oaep.map(Into::into),
        }
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a key on the token (sensitive, non-extractable, one
    /// mechanism; checked after generation). An encryption key joins the
    /// key ring as `standby` (or `current` if it is the first one); a signing
    /// key is printed for `[keys] signing`.
    Generate {
        #[command(flatten)]
        config: ConfigArg,
        /// Generate an RSA encryption key (the default).
        #[arg(long, conflicts_with = "signing")]
        encryption: bool,
        /// Generate a P-256 signing key (a new TP identity once in use).
        #[arg(long)]
        signing: bool,
        /// Make the new encryption key current right away.
        #[arg(long, conflicts_with = "signing")]
        current: bool,
        #[command(flatten)]
        new_key: NewKeyArgs,
    },
    /// List the TP's keys: id, label, algorithm, state, creation time and
    /// the attribute checks.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Also print each key's PKCS#11 URI.
        #[arg(long)]
        uri: bool,
    },
    /// Make a new encryption key current (generated now, or --to an existing
    /// one). Older keys keep resolving envelopes made for them until retired.
    /// Then send the daemon SIGHUP.
    Rotate {
        #[command(flatten)]
        config: ConfigArg,
        /// Promote this key (id, label or URI) instead of generating one.
        #[arg(long, value_name = "KEY")]
        to: Option<String>,
        /// Replace the signing key instead: a NEW TP identity (needs
        /// --new-identity); rewrites [keys] signing in the config.
        #[arg(long)]
        signing: bool,
        /// Confirm that rotating the signing key makes a new TP identity.
        #[arg(long, requires = "signing")]
        new_identity: bool,
        #[command(flatten)]
        new_key: NewKeyArgs,
    },
    /// Stop honouring an encryption key: claims for envelopes made for it are
    /// refused. Then send the daemon SIGHUP.
    Retire {
        #[command(flatten)]
        config: ConfigArg,
        /// The key: id, label or PKCS#11 URI.
        key: String,
        /// Retire even though envelopes made for it may still be claimable.
        #[arg(long)]
        force: bool,
    },
    /// Write the TP card (the public file users need).
    Export(ExportArgs),
}

#[derive(Subcommand)]
enum SubscribersCommand {
    /// Subscribe an identity (id or card file); again to update it.
    Add {
        #[command(flatten)]
        config: ConfigArg,
        /// Identity id (64 hex digits) or identity card file.
        identity: String,
        /// Free text: who this is, an invoice number...
        #[arg(long, default_value = "")]
        note: String,
        /// Subscription end: RFC 3339 time or duration from now ("365d").
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
    },
    /// Remove a subscriber.
    Remove {
        #[command(flatten)]
        config: ConfigArg,
        identity: String,
    },
    /// List subscribers.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Print how many resolutions, invalid-envelope verdicts and unclaimed
    /// certificates the journal holds (safe while the daemon runs).
    Stats {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Check the journal's hash chain: sequence numbers, hashes and links,
    /// every affidavit's signature and chain position, the lookup index.
    /// Prints the first bad record and exits 1; safe while the daemon runs,
    /// and on a backup (data_dir pointing at the copy) it writes nothing
    /// beside it.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Trust only this TP card (repeatable); default: the TP cards the
        /// daemon recorded in the journal.
        #[arg(long = "card", value_name = "FILE")]
        cards: Vec<PathBuf>,
    },
    /// Print the audit log (key and subscriber events), oldest first.
    Audit {
        #[command(flatten)]
        config: ConfigArg,
        /// Only the last N records.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tp-daemon: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries `listening on ADDR` for scripts);
/// `RUST_LOG` filters, default `info`.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init(args) => init(args),
        Command::Serve(a) => serve(ServeOptions {
            config: a.config.config,
            listen: a.listen,
            metrics_listen: a.metrics_listen,
            allow_root: a.allow_root,
        }),
        Command::Check(a) => Ok(vtp_tp_daemon::operator::check::check(&a.config)?),
        Command::Card(a) => commands::export(&a.config.config, &a.out, "tp-daemon card"),
        Command::Keys { command } => keys(command),
        Command::Subscribers { command } => subscribers(command),
        Command::Journal { command } => journal(command),
        Command::Bench(a) => vtp_tp_daemon::bench::run(
            &a.config.config,
            &vtp_bench::BenchOptions {
                seconds: a.seconds,
                concurrency: a.concurrency,
                paced_load: a.paced_load,
                exchanges: a.exchanges,
                cheat_percent: a.cheat_percent,
                big_mb: a.big_mb,
                idle_connections: a.idle_connections,
                identities: a.identities,
                scratch_dir: a.scratch_dir,
                allow_root: a.allow_root,
                pairs: a.pairs,
            },
        ),
    }
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let kind = match (args.softhsm, args.dev_token) {
        (true, _) => vtp_device::devtoken::DevTokenKind::SoftHsm,
        (false, Some(k)) => k,
        (false, None) => bail!(
            "only development TPs can be created automatically (add --softhsm). For a real \
             HSM, initialize the token with its vendor's tools, write tp.toml (see \
             docs/tp.toml.sample) and generate the keys with `tp-daemon keys generate` \
             (docs/operators.md walks through it)"
        ),
    };
    let opts = InitOptions {
        data_dir: args.data_dir,
        kind,
        rsa_bits: args.rsa_bits,
        oaep: args.oaep.map(Into::into),
        name: args.name,
        listen: args.listen,
    };
    let made = init_dev(&opts)?;
    let enc: Vec<String> = made.keys.encryption.iter().map(|k| k.to_string()).collect();
    println!(
        "created a development TP ({kind} token \"{}\"; not for production) in {}",
        vtp_tp_daemon::operator::init::DEV_LABEL,
        made.data_dir.display()
    );
    println!("  config:    {}", made.config.display());
    println!(
        "  TP card:   {}  (give this file to users)",
        made.card.display()
    );
    println!("  token:     {}", made.module_conf.display());
    println!("  user PIN:  {}", made.pin_file.display());
    println!(
        "  keys:      signing {}, encryption {} (RSA-{}, OAEP-{}; key ring in the journal)",
        made.keys.signing,
        enc.join(", "),
        opts.rsa_bits,
        made.oaep
    );
    println!("next: tp-daemon serve --config {}", made.config.display());
    Ok(())
}

fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Generate {
            config,
            encryption: _,
            signing,
            current,
            new_key,
        } => commands::keys_generate(&config.config, signing, current, new_key.options()),
        KeysCommand::List { config, uri } => commands::keys_list(&config.config, uri),
        KeysCommand::Rotate {
            config,
            to,
            signing,
            new_identity,
            new_key,
        } => commands::keys_rotate(
            &config.config,
            to.as_deref(),
            signing,
            new_identity,
            new_key.options(),
        ),
        KeysCommand::Retire { config, key, force } => {
            commands::keys_retire(&config.config, &key, force)
        }
        KeysCommand::Export(a) => {
            commands::export(&a.config.config, &a.out, "tp-daemon keys export")
        }
    }
}

fn subscribers(command: SubscribersCommand) -> anyhow::Result<()> {
    match command {
        SubscribersCommand::Add {
            config,
            identity,
            note,
            expires,
        } => records::subscribers_add(&config.config, &identity, &note, expires.as_deref()),
        SubscribersCommand::Remove { config, identity } => {
            records::subscribers_remove(&config.config, &identity)
        }
        SubscribersCommand::List { config } => records::subscribers_list(&config.config),
    }
}

fn journal(command: JournalCommand) -> anyhow::Result<()> {
    match command {
        JournalCommand::Stats { config } => records::journal_stats(&config.config),
        JournalCommand::Verify { config, cards } => records::journal_verify(&config.config, &cards),
        JournalCommand::Audit { config, limit } => records::journal_audit(&config.config, limit),
    }
}
