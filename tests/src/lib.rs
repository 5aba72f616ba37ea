//! Harness for the end-to-end tests: a TP daemon process on a throwaway
//! token, and parties that act only through the `vtp` CLI.
//!
//! The generic jobs (the workspace binaries, the token made by `tp-daemon
//! init`, the daemon process, frames, CLI runs) are the workspace's test kit,
//! `vtp-testkit`; this crate adds what only the end-to-end tests do: a [`Tp`]
//! that is started, killed and restarted in place, parties with identity
//! files ([`Party`]), cheaters built with the protocol crate ([`cheat`]) and
//! claims in bulk ([`bulk`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use vtp_testkit::{bin, read_frame, vtp, Conn, Run};
use vtp_testkit::{Daemon, TestTp};

/// A TP: a data directory (`dir/tp`) with a token and config from the kit,
/// and maybe a running daemon. `dir` is the test's scratch root too.
pub struct Tp {
    pub dir: tempfile::TempDir,
    /// Where the running daemon listens (empty before the first start).
    pub addr: String,
    daemon: Option<Daemon>,
    /// Shifts the daemon's clock (test hook VTP_TEST_CLOCK_OFFSET_SECS).
    pub clock_offset: i64,
    /// Extra environment of the daemon (e.g. the test hooks VTP_TEST_FAULT,
    /// VTP_TEST_DEVICE_FAULT).
    pub env: Vec<(String, String)>,
    tp: TestTp,
}

impl Tp {
    /// A TP of its own (see `vtp_testkit::token`: made by `tp-daemon init`,
    /// RSA-2048, keys distinct from every other TP alive in this process).
    /// The token is SoftHSM2 unless `VTP_TEST_TOKEN` says `kryoptic`: the
    /// whole suite runs on either.
    pub fn init() -> Tp {
        let dir = vtp_testkit::bins::temp_dir("vtp-e2e-");
        let tp = TestTp::new_in(dir.path().join("tp"));
        Tp {
            dir,
            addr: String::new(),
            daemon: None,
            clock_offset: 0,
            env: Vec::new(),
            tp,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.tp.path().to_path_buf()
    }
    pub fn config(&self) -> PathBuf {
        self.tp.config.clone()
    }
    pub fn card(&self) -> PathBuf {
        self.tp.card()
    }

    /// `tp-daemon ARGS --config THIS`.
    pub fn cli(&self, args: &[&str]) -> Run {
        self.tp.cli(args)
    }

    /// [`Tp::cli`] with extra environment (e.g. the clock-offset hook).
    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.tp.cli_with_env(args, env)
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
        assert!(self.daemon.is_none(), "call before start");
        let config = std::fs::read_to_string(self.config()).unwrap();
        let edited = config.replace(
            "min_claim_window_secs = 60\n",
            "min_claim_window_secs = 1\n",
        );
        assert_ne!(config, edited, "no default claim window in tp.toml");
        std::fs::write(self.config(), edited).unwrap();
        let card = self.card();
        self.cli(&["card", "--out", card.to_str().unwrap()]).ok();
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
        assert!(self.daemon.is_none(), "already running");
        let offset = self.clock_offset.to_string();
        let mut env: Vec<(&str, &str)> = Vec::new();
        if self.clock_offset != 0 {
            env.push(("VTP_TEST_CLOCK_OFFSET_SECS", &offset));
        }
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let daemon = self.tp.start_with(&["--allow-root"], &env);
        self.addr = daemon.addr.to_string();
        self.daemon = Some(daemon);
    }

    /// Run `tp-daemon serve` expecting it to fail at start-up.
    pub fn serve_expect_failure(&self) -> Run {
        let (status, stderr) = self.tp.serve_expecting_failure();
        Run {
            program: "tp-daemon".into(),
            status: status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr,
        }
    }

    /// SIGKILL the daemon (no chance to clean up).
    pub fn kill(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.kill();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> i32 {
        let d = self.daemon.take().expect("running");
        d.terminate().code().unwrap_or(-1)
    }

    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    pub fn is_running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(|d| d.is_running())
    }

    /// The journal file.
    pub fn journal_path(&self) -> PathBuf {
        self.tp.journal_path()
    }

    /// The journal, read-only, with plain SQL.
    pub fn journal_db(&self) -> rusqlite::Connection {
        self.tp.journal_db()
    }

    /// The journal's resolution records for `z_hash` (0 or 1).
    pub fn resolved_rows(&self, z_hash: &vtp_protocol::Digest32) -> i64 {
        self.tp.resolved_rows(z_hash)
    }

    /// Read the journal file directly (read-only) and count rows of a table.
    pub fn journal_rows(&self, table: &str) -> i64 {
        self.tp.journal_rows(table)
    }

    /// Send raw bytes as one length-prefixed frame and read one frame back.
    pub fn raw_frame(&self, payload: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut c = Conn::try_connect(&self.addr)?;
        c.0.set_read_timeout(Some(Duration::from_secs(10)))?;
        vtp_testkit::write_frame(&mut c.0, payload)?;
        c.read_frame()
    }
}

impl Drop for Tp {
    fn drop(&mut self) {
        self.kill();
    }
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

    pub use vtp_testkit::now;

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
    use vtp_testkit::Conn;

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
        let mut c = Conn::try_connect(addr).ok()?;
        c.0.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
        let payload = wire::encode_request(&Request::Claim(claim.clone()));
        vtp_testkit::write_frame(&mut c.0, &payload).ok()?;
        match wire::decode_response(&c.read_frame().ok()?).ok()? {
            Response::Claim(o) => Some(o),
            Response::Error(e) => panic!("claim refused: {e}"),
            other => panic!("unexpected answer {other:?}"),
        }
    }
}
