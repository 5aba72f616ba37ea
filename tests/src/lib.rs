//! Harness for the end-to-end tests: a TP daemon process on a throwaway
//! SoftHSM token, and parties that act only through the `vtp` CLI.
//!
//! The binaries are the ones cargo built for this workspace (found next to
//! the test executable), so the tests exercise exactly what users run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// `target/<profile>/` — where cargo puts the workspace binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace --bins` first (the README's test command does)",
        p.display()
    );
    p
}

/// The result of one CLI run.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            status: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.status, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    pub fn fails(self) -> Run {
        assert_ne!(
            self.status, 0,
            "command should have failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            !self.stderr.trim().is_empty(),
            "a failure must say why on stderr"
        );
        self
    }
}

/// Run `vtp` with arguments.
pub fn vtp<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Run::from(
        Command::new(bin("vtp"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run vtp"),
    )
}

/// A TP: data dir with a SoftHSM token and config, and maybe a running daemon.
pub struct Tp {
    pub dir: tempfile::TempDir,
    pub addr: String,
    child: Option<Child>,
    /// Shifts the daemon's clock (test hook VTP_TEST_CLOCK_OFFSET_SECS).
    pub clock_offset: i64,
    /// Extra environment of the daemon (e.g. the test hooks VTP_TEST_FAULT,
    /// VTP_TEST_DEVICE_FAULT).
    pub env: Vec<(String, String)>,
}

impl Tp {
    /// `tp-daemon init` of a development token in a fresh directory
    /// (RSA-2048 for speed). The token is SoftHSM2 unless `VTP_TEST_TOKEN`
    /// says `kryoptic`: the whole suite runs on either.
    pub fn init() -> Tp {
        let dir = tempfile::tempdir().expect("tempdir");
        let kind = std::env::var("VTP_TEST_TOKEN")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .unwrap_or_else(|| "softhsm".into());
        let out = Command::new(bin("tp-daemon"))
            .args([
                "init",
                "--dev-token",
                &kind,
                "--rsa-bits",
                "2048",
                "--data-dir",
            ])
            .arg(dir.path().join("tp"))
            .output()
            .expect("run tp-daemon init");
        let r = Run::from(out);
        assert_eq!(r.status, 0, "tp-daemon init failed: {}", r.stderr);
        Tp {
            dir,
            addr: String::new(),
            child: None,
            clock_offset: 0,
            env: Vec::new(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("tp")
    }
    pub fn config(&self) -> PathBuf {
        self.data_dir().join("tp.toml")
    }
    pub fn card(&self) -> PathBuf {
        self.data_dir().join("tp-card.vtp")
    }

    /// For tests that move the TP's clock past a deadline. A client accepts
    /// a deadline only if it leaves the TP's claim window plus its clock
    /// skew, and its requests must be within the skew of the TP's clock; so
    /// a test can move the TP's clock ahead by the skew at most, and real
    /// time must pass the window. This makes the window 1 s (tp.toml, and
    /// the card re-exported, so envelopes carry the new policy; before the
    /// first start): send with [`Tp::SHORT_DEADLINE`], and later
    /// [`Tp::pass_short_deadline`].
    pub fn short_claim_window(&mut self) {
        assert!(self.child.is_none(), "call before start");
        let config = std::fs::read_to_string(self.config()).unwrap();
        let edited = config.replace(
            "min_claim_window_secs = 60\n",
            "min_claim_window_secs = 1\n",
        );
        assert_ne!(config, edited, "no default claim window in tp.toml");
        std::fs::write(self.config(), edited).unwrap();
        let out = Command::new(bin("tp-daemon"))
            .arg("card")
            .arg("--config")
            .arg(self.config())
            .arg("--out")
            .arg(self.card())
            .output()
            .expect("run tp-daemon card");
        Run::from(out).ok();
    }
    /// The deadline to send with after [`Tp::short_claim_window`]: the
    /// window and the default skew (300 s), plus 8 s to accept in.
    pub const SHORT_DEADLINE: &'static str = "309s";

    /// Restart the daemon with its clock 300 s (the skew) ahead, once real
    /// time passed the rest of a [`Tp::SHORT_DEADLINE`] sent at `sent`
    /// (Unix seconds).
    pub fn pass_short_deadline(&mut self, sent: u64) {
        let past = sent + 309 - 300 + 1;
        while cheat::now() < past {
            std::thread::sleep(Duration::from_millis(200));
        }
        self.kill();
        self.clock_offset = 300;
        self.start();
    }

    /// Start `tp-daemon serve` on an ephemeral port and wait until it listens.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut child = self.spawn_serve();
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listen line");
        if !line.starts_with("listening on ") {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("daemon did not start: stdout={line:?} stderr={err}");
        }
        self.addr = line["listening on ".len()..].trim().to_string();
        // Drain stderr in the background so the daemon never blocks on it.
        if let Some(mut e) = child.stderr.take() {
            let log = self.data_dir().join("daemon.log");
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap();
                let _ = std::io::copy(&mut e, &mut f);
            });
        }
        self.child = Some(child);
    }

    fn spawn_serve(&self) -> Child {
        let mut cmd = Command::new(bin("tp-daemon"));
        cmd.args([
            "serve",
            "--allow-root",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(self.config())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if self.clock_offset != 0 {
            cmd.env("VTP_TEST_CLOCK_OFFSET_SECS", self.clock_offset.to_string());
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.spawn().expect("spawn tp-daemon serve")
    }

    /// Run `tp-daemon serve` expecting it to fail at start-up.
    pub fn serve_expect_failure(&self) -> Run {
        let out = Command::new(bin("tp-daemon"))
            .args([
                "serve",
                "--allow-root",
                "--listen",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(self.config())
            .stdin(Stdio::null())
            .output()
            .expect("run tp-daemon serve");
        Run::from(out)
    }

    /// SIGKILL the daemon (no chance to clean up).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> i32 {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().expect("wait").code().unwrap_or(-1)
    }

    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Read the journal file directly (read-only) and count rows of a table.
    pub fn journal_rows(&self, table: &str) -> i64 {
        let path = journal_path(&self.data_dir());
        let conn =
            rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open journal");
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("count rows")
    }

    /// Send raw bytes as one length-prefixed frame and read one frame back.
    pub fn raw_frame(&self, payload: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(&(payload.len() as u32).to_be_bytes())?;
        s.write_all(payload)?;
        read_frame(&mut s)
    }
}

impl Drop for Tp {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// The journal database inside a TP data directory.
pub fn journal_path(data_dir: &Path) -> PathBuf {
    for name in ["journal.sqlite", "journal.db", "journal.sqlite3"] {
        let p = data_dir.join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("no journal file in {}", data_dir.display());
}

/// A party with an identity file and a card, acting through the CLI.
pub struct Party {
    pub name: String,
    pub id: PathBuf,
    pub card: PathBuf,
    pub dir: PathBuf,
}

impl Party {
    pub fn new(dir: &Path, name: &str) -> Party {
        let pdir = dir.join(name);
        std::fs::create_dir_all(&pdir).unwrap();
        let id = pdir.join("id.vtp");
        let card = pdir.join("card.vtp");
        vtp(["id", "new", "--name", name, "--out"]
            .iter()
            .map(|s| s.as_ref())
            .chain([id.as_os_str()])
            .collect::<Vec<&std::ffi::OsStr>>())
        .ok();
        vtp([
            std::ffi::OsStr::new("id"),
            "card".as_ref(),
            id.as_os_str(),
            "--out".as_ref(),
            card.as_os_str(),
        ])
        .ok();
        Party {
            name: name.to_string(),
            id,
            card,
            dir: pdir,
        }
    }
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// Flip one bit of a file in place at `offset` (negative: from the end).
pub fn flip_byte(p: &Path, offset: i64) {
    let mut b = std::fs::read(p).unwrap();
    let i = if offset < 0 {
        b.len() as i64 + offset
    } else {
        offset
    } as usize;
    b[i] ^= 0x01;
    std::fs::write(p, b).unwrap();
}

/// Library-side helpers for tests of cheating parties: the CLI refuses to make
/// bad envelopes, so a cheater's envelope is built with the protocol crate and
/// the cheater's real identity file.
pub mod cheat {
    use std::path::Path;

    use sha2::{Digest, Sha256};
    use vtp_protocol::encoding::CmHasher;
    use vtp_protocol::envelope::{self, Envelope, EnvelopeHeader};
    use vtp_protocol::identity::{IdentityCard, IdentitySecret};
    use vtp_protocol::message::MessageSealer;
    use vtp_protocol::seal::{Inside, Z};
    use vtp_protocol::tp_card::TpCard;
    use vtp_protocol::Digest32;

    pub fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// `t` (Unix seconds) as an RFC 3339 deadline the CLI accepts: for
    /// several envelopes or agreements with exactly one deadline.
    pub fn rfc3339(t: u64) -> String {
        time::OffsetDateTime::from_unix_timestamp(t as i64)
            .expect("a time after 1970")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("formats")
    }

    pub fn identity(p: &Path) -> IdentitySecret {
        IdentitySecret::from_file(&std::fs::read(p).unwrap()).unwrap()
    }
    pub fn card(p: &Path) -> IdentityCard {
        IdentityCard::from_file(&std::fs::read(p).unwrap()).unwrap()
    }
    pub fn tp_card(p: &Path) -> TpCard {
        TpCard::from_file(&std::fs::read(p).unwrap()).unwrap()
    }

    /// Read an envelope file: the envelope and the message ciphertext.
    pub fn read_envelope(p: &Path) -> (Envelope, Vec<u8>) {
        let bytes = std::fs::read(p).unwrap();
        let n = Envelope::file_prefix_len(&bytes).unwrap();
        (
            Envelope::from_file_prefix(&bytes[..n]).unwrap(),
            bytes[n..].to_vec(),
        )
    }

    pub fn write_envelope(p: &Path, env: &Envelope, cm: &[u8]) {
        let mut out = env.to_file_prefix();
        out.extend_from_slice(cm);
        std::fs::write(p, out).unwrap();
    }

    /// An envelope whose z decrypts under its header but whose inside was
    /// altered by `tamper` (a cheating sender).
    pub fn envelope_with_bad_inside(
        sender: &Path,
        recipient_card: &Path,
        tp: &Path,
        msg: &[u8],
        deadline_in: u64,
        out: &Path,
        tamper: impl FnOnce(&mut Inside),
    ) {
        let now = now();
        envelope_made_at(
            sender,
            recipient_card,
            tp,
            msg,
            now + deadline_in,
            now,
            out,
            tamper,
        );
    }

    /// An envelope made at `made` on the sender's clock (a sender whose
    /// clock is off), with the inside altered by `tamper` (`|_| {}`: none).
    #[allow(clippy::too_many_arguments)]
    pub fn envelope_made_at(
        sender: &Path,
        recipient_card: &Path,
        tp: &Path,
        msg: &[u8],
        deadline: u64,
        made: u64,
        out: &Path,
        tamper: impl FnOnce(&mut Inside),
    ) {
        let me = identity(sender);
        let prep = envelope::prepare(
            &me,
            &card(recipient_card),
            &tp_card(tp),
            deadline,
            made,
            rand_nonce(),
        )
        .unwrap();
        let mut sealer = MessageSealer::new(prep.message_key(), msg.len() as u64);
        let mut cm = Vec::new();
        let mut off = 0;
        while let Some(n) = sealer.next_len() {
            cm.extend(sealer.seal_chunk(&msg[off..off + n]).unwrap());
            off += n;
        }
        let mut h = CmHasher::default();
        h.update(&cm);
        let sha = Digest32(Sha256::digest(msg).into());
        let env = prep
            .finish_cheating(&me, h.finish(), cm.len() as u64, sha, tamper)
            .unwrap();
        write_envelope(out, &env, &cm);
    }

    /// A signer's own envelope around an arbitrary header and z (one TP).
    pub fn reframe(signer: &Path, header: EnvelopeHeader, z: Z, tp: &Path) -> Envelope {
        let me = identity(signer);
        let digest = vtp_protocol::encoding::signing_digest(
            vtp_protocol::encoding::domain::ENVELOPE,
            &header,
        );
        Envelope {
            signature: vtp_protocol::identity::test_sign(&me, &digest),
            header,
            zs: vec![z],
            sender_card: me.card().clone(),
            tp_cards: vec![tp_card(tp)],
        }
    }

    /// The same z values (one per trustee) in a header changed by `edit`,
    /// signed by `signer` as the sender: what anyone who has seen an
    /// envelope can make of it (a cheating sender moving the deadline, or a
    /// third party naming himself). Set `h.sender` to the signer's id for a
    /// third party's envelope.
    pub fn resign(
        signer: &Path,
        env: &Envelope,
        edit: impl FnOnce(&mut EnvelopeHeader),
    ) -> Envelope {
        let me = identity(signer);
        let mut header = env.header.clone();
        edit(&mut header);
        let digest = vtp_protocol::encoding::signing_digest(
            vtp_protocol::encoding::domain::ENVELOPE,
            &header,
        );
        Envelope {
            signature: vtp_protocol::identity::test_sign(&me, &digest),
            header,
            zs: env.zs.clone(),
            sender_card: me.card().clone(),
            tp_cards: env.tp_cards.clone(),
        }
    }

    fn rand_nonce() -> [u8; 32] {
        use rand_core::RngCore;
        let mut n = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut n);
        n
    }
}

/// Many resolved envelopes quickly, for tests about volume: the claims are
/// made in-process with the protocol crate, exactly as `vtp send`, `accept`
/// and `claim` would make them (one process each would take minutes for
/// hundreds), and sent to the real daemon over its socket.
pub mod bulk {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::Duration;

    use rand_core::{OsRng, RngCore};
    use sha2::{Digest, Sha256};
    use vtp_protocol::claim::Claim;
    use vtp_protocol::encoding::CmHasher;
    use vtp_protocol::envelope;
    use vtp_protocol::identity::IdentitySecret;
    use vtp_protocol::message::MessageSealer;
    use vtp_protocol::receipt::Receipt;
    use vtp_protocol::tp_card::TpCard;
    use vtp_protocol::wire::{self, ClaimOutcome, Request, Response};
    use vtp_protocol::Digest32;

    /// `n` claims by one recipient for envelopes from `alice` (deadline in
    /// an hour), each with its own message.
    pub fn make_claims(tp: &TpCard, alice: &IdentitySecret, n: usize) -> Vec<Claim> {
        let now = super::cheat::now();
        let bob = IdentitySecret::generate("bob", now, &mut OsRng).unwrap();
        (0..n)
            .map(|i| {
                let msg = format!("message number {i}").into_bytes();
                let mut nonce = [0u8; 32];
                OsRng.fill_bytes(&mut nonce);
                let prep =
                    envelope::prepare(alice, bob.card(), tp, now + 3600, now, nonce).unwrap();
                let mut s = MessageSealer::new(prep.message_key(), msg.len() as u64);
                let cm = s.seal_chunk(&msg).unwrap();
                let mut h = CmHasher::default();
                h.update(&cm);
                let env = prep
                    .finish(
                        alice,
                        h.finish(),
                        cm.len() as u64,
                        Digest32(Sha256::digest(&msg).into()),
                    )
                    .unwrap();
                let venv = env.verify(tp).unwrap();
                let receipt = Receipt::issue(&bob, &venv, now).verify(&venv).unwrap();
                Claim::new(&bob, &venv, &receipt, now)
            })
            .collect()
    }

    /// Send one claim; `None` if the connection died before an answer.
    pub fn send_claim(addr: &str, claim: &Claim) -> Option<ClaimOutcome> {
        let mut s = TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
        let payload = wire::encode_request(&Request::Claim(claim.clone()));
        s.write_all(&(payload.len() as u32).to_be_bytes()).ok()?;
        s.write_all(&payload).ok()?;
        match wire::decode_response(&super::read_frame(&mut s).ok()?).ok()? {
            Response::Claim(o) => Some(o),
            Response::Error(e) => panic!("claim refused: {e}"),
            other => panic!("unexpected answer {other:?}"),
        }
    }
}
