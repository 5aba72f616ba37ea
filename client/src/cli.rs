//! The command line: every command and flag with its help text.
//!
//! Kept apart from the code that runs the commands so `vtp --help` reads as
//! the manual, and so tests can check the definitions without running any.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::timeparse::{parse_deadline, parse_duration, DeadlineSpec};

const ABOUT: &str = "Certified mail with an invisible trusted party (TP)";

const LONG_ABOUT: &str = "\
Certified mail with an invisible trusted party (TP).

The sender (Alice) gets a receipt if and only if the recipient (Bob) gets the
message. Honest exchanges never involve the TP:

  Alice:  vtp send    ->  envelope   (A1)
  Bob:    vtp accept  ->  receipt    (B1)
  Alice:  vtp reveal  ->  opening    (A2)
  Bob:    vtp open    ->  message    (B2)

If Bob gets no valid opening, he runs `vtp claim` before the deadline and the
TP completes the exchange; Alice then gets her receipt with `vtp receipts`.
After the deadline, `vtp unclaimed` certifies that the TP never resolved an
envelope. `vtp verify` lets anyone check the evidence offline.

Conventions (docs/cli.md): `-` is stdin or stdout wherever a file goes;
--json prints one JSON object (or {\"error\":{...}}) on stdout; the exit
status says what kind of failure it was (below).";

#[derive(Parser, Debug)]
#[command(
    name = "vtp",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = crate::error::exit_status_help()
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Print the result as one JSON object on stdout (on failure:
    /// {"error":{"class":...,"code":...,"message":...}}); see docs/cli.md
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors and warnings
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Say more about what is being done (on stderr)
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Write vtp files (envelopes, receipts, cards, ...) as ASCII armor for
    /// e-mail: -----BEGIN VTP ENVELOPE----- ... Input is read either way
    #[arg(long, global = true)]
    pub armor: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create and inspect identities (your secret keys and public card)
    #[command(
        subcommand,
        after_help = "Examples:\n  vtp id new --name Alice --out alice.id\n  vtp id card alice.id --out alice.card\n  vtp id show alice.card --json"
    )]
    Id(IdCommand),
    /// Fetch and inspect the trusted party's public card
    #[command(
        subcommand,
        after_help = "Examples:\n  vtp tp fetch --tp-addr tp.example:7400 --out tp.card\n  vtp tp fetch --tp tp.card --out tp-new.card\n  vtp tp show tp.card"
    )]
    Tp(TpCommand),
    /// A1 (sender): encrypt a message into an envelope for a recipient
    #[command(
        after_help = "Examples:\n  vtp send --as alice.id --to bob.card --tp tp.card --deadline 2h --in report.pdf --out report.env\n  tar c docs | vtp send --as alice.id --to bob.card --tp tp.card --deadline 1day --in - --out - --armor | mail bob"
    )]
    Send(SendArgs),
    /// B1 (recipient): check an envelope and sign a receipt for it
    #[command(
        after_help = "Examples:\n  vtp inspect report.env      # look first: who, to whom, which TP, until when\n  vtp accept --as bob.id --tp tp.card report.env --out report.receipt\n  vtp accept --as bob.id --tp tp.card - --out - --armor < report.env > report.receipt"
    )]
    Accept(AcceptArgs),
    /// A2 (sender): check the recipient's receipt and release the opening
    ///
    /// The opening secret is stored nowhere: it is re-derived from your
    /// identity's master seed and the envelope's nonce, so all you keep after
    /// `vtp send` is your identity and the envelope.
    #[command(
        after_help = "Examples:\n  vtp reveal --as alice.id report.env report.receipt --out report.opening"
    )]
    Reveal(RevealArgs),
    /// B2 (recipient): check the sender's opening and decrypt the message
    #[command(
        after_help = "Examples:\n  vtp open --as bob.id report.env report.opening --out report.pdf\n  vtp open --as bob.id report.env report.opening --out - | less"
    )]
    Open(OpenArgs),
    /// Recipient: have the TP release the message key (no valid opening came)
    #[command(
        after_help = "Examples:\n  vtp claim --as bob.id --tp tp.card report.env report.receipt --out report.pdf --affidavit-out report.aff\n  vtp claim --as bob.id --tp-addr tp.example:7400 report.env report.receipt --out report.pdf"
    )]
    Claim(ClaimArgs),
    /// Sender: fetch the receipts (and affidavits) the TP holds for you
    #[command(
        after_help = "Examples:\n  vtp receipts --as alice.id --tp tp.card --out-dir receipts/\n  vtp receipts --as alice.id --tp tp.card --out-dir receipts/ --since 42 --json"
    )]
    Receipts(ReceiptsArgs),
    /// After the deadline: get the TP's statement that it never resolved an envelope
    #[command(
        after_help = "Examples:\n  vtp unclaimed --as alice.id --tp tp.card report.env --out report.unclaimed"
    )]
    Unclaimed(UnclaimedArgs),
    /// Judge: check delivery evidence offline and give a verdict
    ///
    /// Valid means: the envelope and receipt are genuine and for each other,
    /// the envelope file's message ciphertext is the signed one, and an
    /// opening (whose key must really decrypt the message) or a TP affidavit
    /// proves which message the recipient got; with --message, it must be
    /// that one. Exit 0 only if valid. A file that cannot be read or parsed
    /// is an error (exit 1, no verdict printed).
    #[command(
        after_help = "Examples:\n  vtp verify --tp tp.card report.env report.receipt --opening report.opening --message report.pdf\n  vtp verify --tp tp.card report.env report.receipt --affidavit report.aff --json"
    )]
    Verify(VerifyArgs),
    /// Show what any vtp file is and says (kind, parties, deadline, ids,
    /// hashes) without signing or sending anything
    ///
    /// Look before you sign: `vtp inspect report.env` shows who sent the
    /// envelope, to whom, through which TP and until when. Works on every
    /// kind (identities show only their public part, openings not their
    /// secret). An envelope's signature is checked against the cards it
    /// carries; whether you trust its TP is for `vtp accept` to check.
    #[command(
        after_help = "Examples:\n  vtp inspect report.env\n  vtp inspect report.receipt --json"
    )]
    Inspect(InspectArgs),
    /// Contract signing: both sign a preliminary agreement, then Alice's
    /// signature of the contract is exchanged for Bob's receipt
    ///
    ///   Alice:  vtp contract propose   ->  proposal     (signs the agreement)
    ///   Bob:    vtp contract accept    ->  agreement    (countersigns it)
    ///   Alice:  vtp contract sign      ->  envelope     (her contract signature, A1)
    ///   Bob:    vtp contract commit    ->  receipt      (his commitment, B1)
    ///   Alice:  vtp contract complete  ->  bundle + opening (A2)
    ///   Bob:    vtp contract complete  ->  bundle       (B2)
    ///
    /// If no valid opening comes, Bob runs `vtp contract claim` before the
    /// deadline; after it, `vtp contract unclaimed` certifies that the TP never
    /// completed the exchange. `vtp contract verify` checks a bundle offline.
    /// See docs/contract.md.
    #[command(subcommand, verbatim_doc_comment)]
    Contract(ContractCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(
        after_help = "Examples:\n  vtp completions bash > /etc/bash_completion.d/vtp\n  vtp completions zsh > \"${fpath[1]}/_vtp\""
    )]
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one per command into a directory
    #[command(
        after_help = "Examples:\n  vtp man | man -l -\n  vtp man --dir /usr/local/share/man/man1"
    )]
    Man(ManArgs),
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write vtp.1 and vtp-COMMAND.1 for every command into this directory
    /// instead of printing vtp.1
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ContractCommand {
    /// Proposer (Alice): sign a preliminary agreement on a contract with a counterparty
    Propose(ContractProposeArgs),
    /// Counterparty (Bob): check a proposal and countersign it (nobody is bound to the contract yet)
    Accept(ContractAcceptArgs),
    /// Proposer (Alice): sign the contract and put the signature in an envelope for the counterparty (A1)
    Sign(ContractSignArgs),
    /// Counterparty (Bob): check the envelope is the agreement's exchange and sign a receipt: your commitment (B1)
    Commit(ContractCommitArgs),
    /// Either party: complete directly and write the executed-contract bundle
    ///
    /// The proposer checks the receipt and writes the opening for the
    /// counterparty (--opening-out, A2); the counterparty checks the opening
    /// and Alice's contract signature (--opening, B2).
    Complete(ContractCompleteArgs),
    /// Counterparty: have the TP complete the exchange (no valid opening came)
    Claim(ContractClaimArgs),
    /// After the deadline: the TP's certificate that the exchange was never completed
    Unclaimed(ContractUnclaimedArgs),
    /// Judge: check a contract bundle offline (exit 0 only if the contract is executed)
    Verify(ContractVerifyArgs),
}

#[derive(Args, Debug)]
pub struct ContractProposeArgs {
    /// Your secret identity (the proposer)
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    /// The counterparty's identity card
    #[arg(long, value_name = "CARD")]
    pub with: PathBuf,
    /// The TP card that can complete the exchange
    #[arg(long, value_name = "TPCARD")]
    pub tp: PathBuf,
    /// The contract, as negotiated (only its SHA-256 is signed)
    #[arg(long, value_name = "FILE")]
    pub contract: PathBuf,
    /// The deadline T of the exchange: a duration from now or an RFC 3339
    /// instant. The contract is executed by T or (through the TP) never
    #[arg(long, value_name = "DURATION|RFC3339", value_parser = parse_deadline)]
    pub deadline: DeadlineSpec,
    /// Where to write the proposal (send it to the counterparty)
    #[arg(long, value_name = "PROPOSAL")]
    pub out: PathBuf,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ContractAcceptArgs {
    /// Your secret identity (the counterparty)
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    /// The proposer's identity card: proposals from anyone else are refused
    #[arg(long, value_name = "CARD")]
    pub with: PathBuf,
    /// The TP card you trust; proposals naming another TP are refused
    #[arg(long, value_name = "TPCARD")]
    pub tp: PathBuf,
    /// Your copy of the contract: the proposal must be for exactly this file
    #[arg(long, value_name = "FILE")]
    pub contract: PathBuf,
    /// The proposal
    #[arg(value_name = "PROPOSAL")]
    pub proposal: PathBuf,
    /// Where to write the agreement (send it to the proposer)
    #[arg(long, value_name = "AGREEMENT")]
    pub out: PathBuf,
    /// Refuse unless at least this much time is left before the deadline
    /// (for the exchange and a claim). The TP's own minimum applies too
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub min_time_left: Duration,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ContractSignArgs {
    /// Your secret identity (the proposer)
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    /// The TP card (must be the agreement's TP)
    #[arg(long, value_name = "TPCARD")]
    pub tp: PathBuf,
    /// The contract (must be the agreed one)
    #[arg(long, value_name = "FILE")]
    pub contract: PathBuf,
    /// The agreement countersigned by the counterparty
    #[arg(value_name = "AGREEMENT")]
    pub agreement: PathBuf,
    /// Where to write the envelope for the counterparty
    #[arg(long, value_name = "ENVELOPE")]
    pub out: PathBuf,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ContractCommitArgs {
    /// Your secret identity (the counterparty)
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    /// The TP card you trust
    #[arg(long, value_name = "TPCARD")]
    pub tp: PathBuf,
    /// The agreement you countersigned
    #[arg(value_name = "AGREEMENT")]
    pub agreement: PathBuf,
    /// The proposer's envelope
    #[arg(value_name = "ENVELOPE")]
    pub envelope: PathBuf,
    /// Where to write your receipt (send it to the proposer)
    #[arg(long, value_name = "RECEIPT")]
    pub out: PathBuf,
    /// Refuse unless at least this much time is left before the deadline to
    /// wait for the opening and still claim. The TP's own minimum applies too
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub min_time_left: Duration,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ContractCompleteArgs {
    /// Your secret identity (proposer or counterparty)
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    /// The TP card (the agreement's TP)
    #[arg(long, value_name = "TPCARD")]
    pub tp: PathBuf,
    /// The agreement
    #[arg(value_name = "AGREEMENT")]
    pub agreement: PathBuf,
    /// The envelope
    #[arg(value_name = "ENVELOPE")]
    pub envelope: PathBuf,
    /// The counterparty's receipt for it
    #[arg(value_name = "RECEIPT")]
    pub receipt: PathBuf,
    /// Counterparty: the proposer's opening
    #[arg(long, value_name = "OPENING", conflicts_with = "opening_out")]
    pub opening: Option<PathBuf>,
    /// Proposer: where to write the opening (send it to the counterparty)
    #[arg(long, value_name = "OPENING")]
    pub opening_out: Option<PathBuf>,
    /// Where to write the executed-contract bundle
    #[arg(long, value_name = "BUNDLE")]
    pub out: PathBuf,
    /// Replace existing output files
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ContractClaimArgs {
    /// Your secret identity (the counterparty)
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    #[command(flatten)]
    pub tp: TpTarget,
    /// The agreement
    #[arg(value_name = "AGREEMENT")]
    pub agreement: PathBuf,
    /// The envelope
    #[arg(value_name = "ENVELOPE")]
    pub envelope: PathBuf,
    /// The receipt you issued for it
    #[arg(value_name = "RECEIPT")]
    pub receipt: PathBuf,
    /// Where to write the bundle: executed, or (invalid envelope) the proof
    /// that your receipt is void. Claims are idempotent
    #[arg(long, value_name = "BUNDLE")]
    pub out: PathBuf,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ContractUnclaimedArgs {
    /// Your secret identity (proposer or counterparty)
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    #[command(flatten)]
    pub tp: TpTarget,
    /// The agreement
    #[arg(value_name = "AGREEMENT")]
    pub agreement: PathBuf,
    /// The envelope
    #[arg(value_name = "ENVELOPE")]
    pub envelope: PathBuf,
    /// Where to write the never-completed bundle
    #[arg(long, value_name = "BUNDLE")]
    pub out: PathBuf,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ContractVerifyArgs {
    /// The TP card you trust (obtained out of band)
    #[arg(long, value_name = "TPCARD")]
    pub tp: PathBuf,
    /// The contract as shown to you: it must be the agreed one
    #[arg(long, value_name = "FILE")]
    pub contract: PathBuf,
    /// The contract bundle
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Any vtp file (`-`: standard input)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum IdCommand {
    /// Create a new secret identity (signing and encryption keys, master seed)
    New(IdNewArgs),
    /// Write the public card of a secret identity, to give to others
    Card(IdCardArgs),
    /// Show the name and id of a secret identity or a card
    Show(IdShowArgs),
}

#[derive(Args, Debug)]
pub struct IdNewArgs {
    /// Your name as shown to others (informative: identities are compared by id)
    #[arg(long)]
    pub name: String,
    /// Where to write the secret identity (created with mode 0600)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing file (the identity in it is lost for good). On a
    /// terminal vtp asks first; elsewhere it refuses unless --yes is given too
    #[arg(long)]
    pub force: bool,
    /// With --force: replace an existing identity without asking
    #[arg(long, requires = "force")]
    pub yes: bool,
}

#[derive(Args, Debug)]
pub struct IdCardArgs {
    /// The secret identity
    #[arg(value_name = "FILE")]
    pub identity: PathBuf,
    /// Where to write the public card
    #[arg(long, value_name = "CARD")]
    pub out: PathBuf,
    /// Replace an existing file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct IdShowArgs {
    /// A secret identity or an identity card (nothing secret is printed)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum TpCommand {
    /// Ask a running TP for its card and save it; compare the printed id with
    /// the one the TP's operator published before you trust the card
    Fetch(TpFetchArgs),
    /// Show a TP card: name, id, encryption keys, policy
    Show(TpShowArgs),
}

/// Which TP to talk to: its card (vtp connects to the addresses the card
/// publishes, and refuses a TP with another id) or an address.
#[derive(Args, Debug, Clone)]
pub struct TpTarget {
    /// The TP card: vtp connects to the addresses it publishes (signed by
    /// the TP) and talks only to a TP with this card's id
    #[arg(long = "tp", value_name = "TPCARD")]
    pub card: Option<PathBuf>,
    /// Connect to this address instead of the card's (HOST[:PORT], default
    /// port 7400)
    #[arg(long = "tp-addr", value_name = "HOST[:PORT]")]
    pub addr: Option<String>,
    /// Give up if connecting, sending or receiving takes longer than this
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// How to reach the trustees of an envelope: its one TP, or several
/// trustees of a group. Without --tp or --tp-addr, the addresses published
/// by the TP cards the envelope carries.
#[derive(Args, Debug, Clone)]
pub struct TrusteeTargets {
    /// A TP card; repeat for each trustee of a group envelope (they are
    /// tried in the order given until enough have answered). vtp connects
    /// to the addresses each card publishes. Default: the cards in the
    /// envelope
    #[arg(long = "tp", value_name = "TPCARD", conflicts_with = "addrs")]
    pub cards: Vec<PathBuf>,
    /// Connect to this address instead (HOST[:PORT], default port 7400);
    /// repeat for each trustee of a group envelope
    #[arg(long = "tp-addr", value_name = "HOST[:PORT]")]
    pub addrs: Vec<String>,
    /// Give up on a TP if connecting, sending or receiving takes longer than this
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct TpFetchArgs {
    #[command(flatten)]
    pub tp: TpTarget,
    /// Where to write the TP card
    #[arg(long, value_name = "CARD")]
    pub out: PathBuf,
    /// Replace an existing file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct TpShowArgs {
    /// The TP card
    #[arg(value_name = "CARD")]
    pub card: PathBuf,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Your secret identity (the sender)
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    /// The recipient's identity card
    #[arg(long, value_name = "CARD")]
    pub to: PathBuf,
    /// The TP card to use (the TP that can complete the exchange). Repeat it
    /// to split the TP across several trustees (each its own TP daemon and
    /// token), with --threshold
    #[arg(long, value_name = "TPCARD", required = true)]
    pub tp: Vec<PathBuf>,
    /// With several --tp: how many trustees must act to complete the
    /// exchange (fewer, even together with the recipient, learn nothing about
    /// the message). Within what every trustee's card allows
    #[arg(long, value_name = "T")]
    pub threshold: Option<usize>,
    /// When the exchange expires: a duration from now (2h, 30m, 7days) or an
    /// RFC 3339 instant (2026-12-01T12:00:00Z). The TP resolves claims only
    /// before it
    #[arg(long, value_name = "DURATION|RFC3339", value_parser = parse_deadline)]
    pub deadline: DeadlineSpec,
    /// The message to send, read twice and never held in memory (`-`:
    /// standard input, first copied to a private temporary file)
    #[arg(long = "in", value_name = "MSGFILE")]
    pub input: PathBuf,
    /// Where to write the envelope (header and encrypted message) for the
    /// recipient (`-`: standard output)
    #[arg(long, value_name = "ENVELOPE")]
    pub out: PathBuf,
    /// Replace an existing output file (by default vtp never overwrites)
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct AcceptArgs {
    /// Your secret identity (the recipient)
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    /// The TP card you trust; envelopes for any other TP, or sealed to a key
    /// that is not this card's current key, are refused. For a group
    /// envelope give every trustee's card (repeat --tp)
    #[arg(long, value_name = "TPCARD", required = true)]
    pub tp: Vec<PathBuf>,
    /// The envelope you received
    #[arg(value_name = "ENVELOPE")]
    pub envelope: PathBuf,
    /// Where to write your receipt (send it to the sender)
    #[arg(long, value_name = "RECEIPT")]
    pub out: PathBuf,
    /// Refuse the envelope unless at least this much time is left before its
    /// deadline (time to wait for the opening and still claim from the TP).
    /// The TP's own minimum applies too
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub min_time_left: Duration,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct RevealArgs {
    /// Your secret identity (the sender). The opening is re-derived from its
    /// master seed and the envelope's nonce: you need to keep nothing but
    /// your identity and the envelope
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    /// The envelope you sent
    #[arg(value_name = "ENVELOPE")]
    pub envelope: PathBuf,
    /// The recipient's receipt for it (checked before anything is revealed)
    #[arg(value_name = "RECEIPT")]
    pub receipt: PathBuf,
    /// Where to write the opening (send it to the recipient)
    #[arg(long, value_name = "OPENING")]
    pub out: PathBuf,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct OpenArgs {
    /// Your secret identity (the recipient)
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    /// The envelope
    #[arg(value_name = "ENVELOPE")]
    pub envelope: PathBuf,
    /// The sender's opening
    #[arg(value_name = "OPENING")]
    pub opening: PathBuf,
    /// Where to write the message (only if it decrypts and matches the
    /// sender's commitment)
    #[arg(long, value_name = "MSGFILE")]
    pub out: PathBuf,
    /// Also require the envelope's TP (every trustee, for a group) to be
    /// among these TP cards (by default the cards carried in the envelope,
    /// which `vtp accept` checked)
    #[arg(long, value_name = "TPCARD")]
    pub tp: Vec<PathBuf>,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ClaimArgs {
    /// Your secret identity (the recipient)
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    #[command(flatten)]
    pub tp: TrusteeTargets,
    /// The envelope
    #[arg(value_name = "ENVELOPE")]
    pub envelope: PathBuf,
    /// The receipt you issued for it
    #[arg(value_name = "RECEIPT")]
    pub receipt: PathBuf,
    /// Where to write the message
    #[arg(long, value_name = "MSGFILE")]
    pub out: PathBuf,
    /// Where to save the TP's signed affidavit (your evidence). For a group
    /// envelope, each acting trustee's affidavit goes to FILE.N, N being the
    /// trustee's position in the envelope (1, 2, ...). Claims are
    /// idempotent: claiming again returns the same affidavit
    #[arg(long, value_name = "FILE")]
    pub affidavit_out: Option<PathBuf>,
    /// Replace existing output files
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ReceiptsArgs {
    /// Your secret identity (the sender)
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    #[command(flatten)]
    pub tp: TpTarget,
    /// Directory for <envelope id>.receipt.vtp and <envelope id>.affidavit.vtp
    /// (created if missing; files already there for the same envelope are replaced)
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// With --tp-addr: refuse unless the TP there has the id of this TP
    /// card (without it, the fetched card's id is printed for you to compare)
    #[arg(long, value_name = "TPCARD")]
    pub expect_tp: Option<PathBuf>,
    /// Only receipts the TP recorded after its journal record SEQ (each run
    /// ends by printing the SEQ to give next time; default: all receipts)
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub since: u64,
}

#[derive(Args, Debug)]
pub struct UnclaimedArgs {
    /// Your secret identity (the envelope's sender or recipient)
    #[arg(long = "as", value_name = "ID")]
    pub identity: PathBuf,
    #[command(flatten)]
    pub tp: TrusteeTargets,
    /// The envelope
    #[arg(value_name = "ENVELOPE")]
    pub envelope: PathBuf,
    /// Where to write the TP's unclaimed affidavit. For a group envelope,
    /// each trustee's certificate goes to FILE.N (N = its position); the
    /// group's exchange is certified unclaimed once more than n - t trustees
    /// certified it, as then fewer than t can ever have resolved
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The TP card you trust (obtained out of band); for a group envelope,
    /// every trustee's card (repeat --tp)
    #[arg(long, value_name = "TPCARD", required = true)]
    pub tp: Vec<PathBuf>,
    /// The envelope (its message ciphertext is checked too)
    #[arg(value_name = "ENVELOPE")]
    pub envelope: PathBuf,
    /// The recipient's receipt
    #[arg(value_name = "RECEIPT")]
    pub receipt: PathBuf,
    /// The sender's opening (evidence of delivery without the TP)
    #[arg(long, value_name = "FILE")]
    pub opening: Option<PathBuf>,
    /// A TP affidavit (evidence of delivery through the TP, or of its
    /// absence); repeat for the affidavits of several trustees
    #[arg(long, value_name = "FILE")]
    pub affidavit: Vec<PathBuf>,
    /// The recipient's evidence that the key the TP released does not open
    /// the message (written by `vtp claim`); weighed with the resolved
    /// affidavits, it voids the receipt if the released key indeed fails
    #[arg(long, value_name = "FILE")]
    pub void_evidence: Option<PathBuf>,
    /// The message as shown to you: valid only if it is the one delivered
    #[arg(long, value_name = "FILE")]
    pub message: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str) {
            assert!(cmd.get_about().is_some(), "{path} has no help");
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(a.get_help().is_some(), "{path} {id} has no help");
            }
            for s in cmd.get_subcommands() {
                if s.get_name() != "help" {
                    walk(s, &format!("{path} {}", s.get_name()));
                }
            }
        }
        walk(&Cli::command(), "vtp");
    }
}
