//! `tp-daemon bench`: how fast is this TP, on this machine, with this token?
//!
//! One run measures, in phases that never overlap, each bounded in time
//! (`--seconds` per phase) and in count:
//!
//! 1. **device_raw** — the bare device operation (`TrustedParty::resolve`:
//!    OAEP unwrap + AES-GCM + ECDSA sign through cryptoki; no daemon, no
//!    journal), in this process, at 1 and N threads (N = the number of
//!    CPUs). The device operation is stateless, so one pre-built claim is
//!    resolved again and again.
//! 2. **tp_visible_vs_invisible** — for `--exchanges` exchanges of which
//!    `--cheat-percent` cheat: the TP device operations and CPU seconds of
//!    vtp's invisible TP (one device operation per cheating exchange)
//!    against a visible TP that handles every exchange (Micali's virtual-TP paper's CEM0),
//!    modelled as the same device operation per exchange; both measured by
//!    running those operations.
//! 3. **optimistic** — the honest path with no TP at all: full exchanges
//!    (A1 + B1 + A2 + B2 with a 1 KiB message, every file encoded and
//!    decoded) per second on one thread, and the client's streaming
//!    throughput for a `--big-mb` message (the two encryption passes of
//!    `vtp send`, the decryption pass of `vtp open`; in memory, no disk).
//! 4. **claim_e2e** — claims through the real daemon: `tp-daemon serve` as
//!    a child process on 127.0.0.1:0 with a throwaway data directory (the
//!    operator's journal is never touched: the key ring is imported into a
//!    fresh journal), one connection per concurrent worker, every claim a
//!    new envelope (so a real resolution and a durable journal commit),
//!    claims made before the clock starts. Per level: ops/s, p50/p99
//!    latency, the daemon's CPU per claim. Then the daemon's memory with
//!    `--idle-connections` idle connections open.
//!
//! stdout: one JSON object per figure (`name`, `ops_per_s`, and where they
//! apply `threads` / `concurrency`, `p50_ms`, `p99_ms`), ending with
//! `{"name":"ratio_claim_e2e_to_device_raw","value":…}`. stderr: progress
//! and a readable table. See docs/performance.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vtp_device::{Token, TrustedParty};
use vtp_protocol::affidavit::ChainPosition;
use vtp_protocol::claim::Claim;
use vtp_protocol::decide::ResolvableClaim;
use vtp_protocol::encoding::CmHasher;
use vtp_protocol::envelope::{self, Envelope};
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::message::{MessageOpener, MessageSealer, CHUNK};
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{decode_response, encode_request, ClaimOutcome, Request, Response};
use vtp_protocol::{Digest32, Timestamp};

use crate::config::{Config, PinSpec};
use crate::journal::Journal;
use crate::operator::{open_token, resolve_key};

/// What to measure, and how long.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub config: PathBuf,
    /// Seconds per timed phase.
    pub seconds: f64,
    /// Concurrency levels of the claim_e2e phase.
    pub concurrency: Vec<usize>,
    /// Paced runs at the highest concurrency, offering these fractions of
    /// the best closed-loop claim rate.
    pub paced_load: Vec<f64>,
    /// Exchanges of the visible-vs-invisible comparison.
    pub exchanges: usize,
    /// Percentage of them that cheat (need the TP).
    pub cheat_percent: f64,
    /// Size of the big message, MiB.
    pub big_mb: u64,
    /// Idle connections held open while the daemon's memory is read.
    pub idle_connections: usize,
    /// Distinct parties the claims are spread over.
    pub identities: usize,
    /// Where the throwaway daemon keeps its journal (default: a new
    /// directory under the system's temporary directory).
    pub scratch_dir: Option<PathBuf>,
    /// Pass `--allow-root` to the daemon.
    pub allow_root: bool,
}

/// Where the device-only runs say their affidavits are recorded (they are
/// not recorded anywhere; the device does not care).
const POSITION: ChainPosition = ChainPosition {
    seq: 1,
    prev: ChainPosition::GENESIS_PREV,
};
/// Most claims made for one concurrency level.
const MAX_CLAIMS_PER_LEVEL: usize = 200_000;
/// Longest the visible-TP run may take before it is scaled from what ran.
const VISIBLE_TP_MAX: Duration = Duration::from_secs(60);

fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Figures collected so far: JSON lines out as they come, a table at the end.
struct Report {
    rows: Vec<(String, String)>,
}

impl Report {
    fn figure(&mut self, v: Value, readable: String) {
        println!("{v}");
        let _ = std::io::stdout().flush();
        let name = v["name"].as_str().unwrap_or("?").to_owned();
        eprintln!("bench: {name}: {readable}");
        self.rows.push((name, readable));
    }

    fn table(&self) {
        let w = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(4);
        eprintln!();
        eprintln!("{:w$}  result", "figure");
        eprintln!("{:-<w$}  {:-<60}", "", "");
        for (name, text) in &self.rows {
            eprintln!("{name:w$}  {text}");
        }
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// CPU seconds (user + system) this process used so far.
fn self_cpu() -> f64 {
    // SAFETY: getrusage with a valid pointer.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// CPU seconds (user + system) process `pid` used so far.
fn proc_cpu(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("cannot parse /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime is field 14, stime 15.
    let utime: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let stime: f64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((utime + stime) / hz)
}

/// (VmRSS, VmHWM) of process `pid`, in KiB.
fn proc_rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let get = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok((get("VmRSS:"), get("VmHWM:")))
}

/// The 1-minute load average (other work on the machine skews every figure).
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

// ---- the parties ------------------------------------------------------------

fn parties(n: usize) -> anyhow::Result<Vec<IdentitySecret>> {
    let n = n.max(2);
    let per = n.div_ceil(threads());
    let t = now() - 60;
    let made: Vec<Vec<IdentitySecret>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .step_by(per)
            .map(|start| {
                s.spawn(move || {
                    (start..(start + per).min(n))
                        .map(|i| IdentitySecret::generate(&format!("party {i}"), t, &mut OsRng))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("party thread"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok(made.into_iter().flatten().collect())
}

/// A 1 KiB message sealed under `km`: (c_m, H(c_m), SHA-256(m)).
fn seal_small(km: &[u8; 32], msg: &[u8]) -> anyhow::Result<(Vec<u8>, Digest32, Digest32)> {
    let mut sealer = MessageSealer::new(km, msg.len() as u64);
    let mut cm = Vec::with_capacity(msg.len() + 16);
    let mut off = 0;
    while let Some(n) = sealer.next_len() {
        cm.extend(sealer.seal_chunk(&msg[off..off + n])?);
        off += n;
    }
    let mut h = CmHasher::default();
    h.update(&cm);
    Ok((cm, h.finish(), Digest32(Sha256::digest(msg).into())))
}

/// A1 + B1 + Bob's claim: a new envelope from `alice` to `bob`.
fn new_claim(
    card: &TpCard,
    alice: &IdentitySecret,
    bob: &IdentitySecret,
    t: Timestamp,
) -> anyhow::Result<Claim> {
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    let deadline = t + card.policy().max_deadline_secs.min(24 * 3600);
    let prep = envelope::prepare(alice, bob.card(), card, deadline, t, nonce)?;
    let msg = [0x5au8; 1024];
    let (cm, cm_hash, sha) = seal_small(prep.message_key(), &msg)?;
    let env = prep.finish(alice, cm_hash, cm.len() as u64, sha)?;
    let venv = env.verify(card)?;
    let receipt = Receipt::issue(bob, &venv, t).verify(&venv)?;
    Ok(Claim::new(bob, &venv, &receipt, t))
}

/// `count` claim frames (length prefix included), made on all CPUs.
fn claim_frames(
    card: &TpCard,
    pool: &[IdentitySecret],
    count: usize,
    salt: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let t = now();
    let n = threads();
    let per = count.div_ceil(n).max(1);
    let chunks: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..count)
            .step_by(per)
            .map(|start| {
                s.spawn(move || -> anyhow::Result<Vec<Vec<u8>>> {
                    let mut out = Vec::with_capacity(per);
                    for i in start..(start + per).min(count) {
                        let k = i + salt;
                        let alice = &pool[k % pool.len()];
                        let bob = &pool[(k / pool.len() + k + 1) % pool.len()];
                        let bob = if bob.id() == alice.id() {
                            &pool[(k + 1) % pool.len()]
                        } else {
                            bob
                        };
                        let claim = new_claim(card, alice, bob, t)?;
                        let body = encode_request(&Request::Claim(claim));
                        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
                        frame.extend_from_slice(&body);
                        out.push(frame);
                    }
                    Ok(out)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("claim thread"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    Ok(chunks.into_iter().flatten().collect())
}

// ---- phase 1 and 2: the device, in this process -------------------------------

/// Resolve `claim` on `threads` threads for `secs`: (ops, wall seconds, CPU seconds).
fn device_run(
    tp: &TrustedParty,
    claim: &ResolvableClaim,
    threads: usize,
    secs: f64,
    max_ops: usize,
) -> anyhow::Result<(usize, f64, f64)> {
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failed = AtomicBool::new(false);
    let cpu0 = self_cpu();
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    if done.fetch_add(1, Ordering::Relaxed) >= max_ops {
                        done.fetch_sub(1, Ordering::Relaxed);
                        break;
                    }
                    match tp.resolve(claim, POSITION) {
                        Ok(ClaimOutcome::Resolved { .. }) => {}
                        _ => {
                            failed.store(true, Ordering::Relaxed);
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    if start.elapsed().as_secs_f64() >= secs {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let cpu = self_cpu() - cpu0;
    if failed.load(Ordering::Relaxed) {
        bail!("the device did not resolve the benchmark claim");
    }
    Ok((done.load(Ordering::Relaxed), wall, cpu))
}

struct DeviceFigures {
    ops_1: f64,
    ops_n: f64,
    cpu_per_op: f64,
}

fn open_tp(config: &Config) -> anyhow::Result<(Arc<Token>, TrustedParty, vtp_device::TpKeys)> {
    let token = open_token(config)?;
    let signing_ref = config.keys.signing.as_ref().ok_or_else(|| {
        anyhow!(
            "config file {}: [keys] `signing` is not set",
            config.path.display()
        )
    })?;
    let signing = resolve_key(config, &token, signing_ref, "signing", true)?;
    let ring = Journal::open_read_only(&config.data_dir)?.key_ring()?;
    let keys = ring
        .tp_keys(signing)
        .map_err(|e| anyhow!("the key ring in {}: {e}", config.data_dir.display()))?;
    let tp = TrustedParty::open(
        Arc::clone(&token),
        keys.clone(),
        &config.name,
        config.policy.clone(),
        now(),
    )?;
    Ok((token, tp, keys))
}

fn device_phases(
    opts: &BenchOptions,
    tp: &TrustedParty,
    pool: &[IdentitySecret],
    report: &mut Report,
) -> anyhow::Result<DeviceFigures> {
    let card = tp.card().clone();
    let t = now();
    let claim = new_claim(&card, &pool[0], &pool[1], t)?.decide_fresh(&card, t)?;
    // Warm-up: sessions, key handles.
    device_run(tp, &claim, 1, 0.2, 50)?;
    let n = threads();
    let (ops1, wall1, cpu1) = device_run(tp, &claim, 1, opts.seconds, usize::MAX)?;
    let ops_1 = ops1 as f64 / wall1;
    report.figure(
        json!({"name": "device_raw", "threads": 1, "ops_per_s": round(ops_1, 1),
               "cpu_ms_per_op": round(cpu1 * 1e3 / ops1.max(1) as f64, 3)}),
        format!("{ops_1:.0} ops/s on 1 thread"),
    );
    let (opsn, walln, _) = device_run(tp, &claim, n, opts.seconds, usize::MAX)?;
    let ops_n = opsn as f64 / walln;
    report.figure(
        json!({"name": "device_raw", "threads": n, "ops_per_s": round(ops_n, 1)}),
        format!("{ops_n:.0} ops/s on {n} threads"),
    );
    if std::env::var_os("VTP_BENCH_DEVICE_THREADS").is_some() {
        let many: usize = std::env::var("VTP_BENCH_DEVICE_THREADS")?.parse()?;
        let (ops, wall, cpu) = device_run(tp, &claim, many, opts.seconds, usize::MAX)?;
        report.figure(
            json!({"name": "device_raw_oversubscribed", "threads": many,
                   "ops_per_s": round(ops as f64 / wall, 1),
                   "cpu_ms_per_op": round(cpu * 1e3 / ops.max(1) as f64, 3)}),
            format!("{:.0} ops/s on {many} threads", ops as f64 / wall),
        );
    }

    // Visible (every exchange) vs invisible (cheating exchanges only).
    let exchanges = opts.exchanges.max(1);
    let cheating = ((exchanges as f64) * opts.cheat_percent / 100.0).round() as usize;
    let (vtp_ops, _, vtp_cpu) = device_run(tp, &claim, n, f64::INFINITY, cheating)?;
    let (vis_ran, vis_wall_ran, vis_cpu_ran) =
        device_run(tp, &claim, n, VISIBLE_TP_MAX.as_secs_f64(), exchanges)?;
    let scaled = vis_ran < exchanges;
    let vis_cpu = vis_cpu_ran * exchanges as f64 / vis_ran.max(1) as f64;
    let vis_wall = vis_wall_ran * exchanges as f64 / vis_ran.max(1) as f64;
    report.figure(
        json!({
            "name": "tp_visible_vs_invisible",
            "exchanges": exchanges,
            "cheat_percent": opts.cheat_percent,
            "threads": n,
            "ops_per_s": round(vis_ran as f64 / vis_wall_ran.max(1e-9), 1),
            "visible_tp_device_ops": exchanges,
            "visible_tp_cpu_s": round(vis_cpu, 3),
            "visible_tp_wall_s": round(vis_wall, 3),
            "vtp_tp_device_ops": vtp_ops,
            "vtp_tp_cpu_s": round(vtp_cpu, 3),
            "device_ops_saved_factor": round(exchanges as f64 / vtp_ops.max(1) as f64, 1),
            "visible_scaled_from_ops": if scaled { json!(vis_ran) } else { Value::Null },
        }),
        format!(
            "{exchanges} exchanges, {}% cheating: visible TP {exchanges} device ops, {vis_cpu:.2} CPU s \
             ({vis_wall:.1} s on {n} threads{}); vtp {vtp_ops} device ops, {vtp_cpu:.3} CPU s",
            opts.cheat_percent,
            if scaled {
                format!(", scaled from {vis_ran} ops")
            } else {
                String::new()
            }
        ),
    );
    Ok(DeviceFigures {
        ops_1,
        ops_n,
        cpu_per_op: cpu1 / ops1.max(1) as f64,
    })
}

/// What the daemon does to every claim before the device sees it: decode
/// the frame and check every signature ([`Claim::verify_authentic`]), on
/// one thread, for claims between known parties (their cards remembered).
fn claim_checks(
    opts: &BenchOptions,
    card: &TpCard,
    pool: &[IdentitySecret],
    report: &mut Report,
) -> anyhow::Result<()> {
    let count = 2000;
    let frames = claim_frames(card, pool, count, 7)?;
    let t = now();
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed().as_secs_f64() < opts.seconds.min(2.0) {
        let f = &frames[done % count];
        match vtp_protocol::wire::decode_request(&f[4..])? {
            Request::Claim(c) => {
                c.authenticate(card, t)?;
            }
            _ => bail!("not a claim"),
        }
        done += 1;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    report.figure(
        json!({"name": "claim_checks", "threads": 1, "ops_per_s": round(rate, 1),
               "us_per_claim": round(1e6 / rate, 1)}),
        format!(
            "{rate:.0} claims/s decoded and signature-checked on 1 thread ({:.0} µs each)",
            1e6 / rate
        ),
    );
    Ok(())
}

// ---- phase 3: the optimistic path ------------------------------------------------

/// One honest exchange, every message through its file encoding.
fn honest_exchange(
    card: &TpCard,
    alice: &IdentitySecret,
    bob: &IdentitySecret,
    msg: &[u8],
) -> anyhow::Result<()> {
    let t = now();
    // A1
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    let prep = envelope::prepare(alice, bob.card(), card, t + 3600, t, nonce)?;
    let (cm, cm_hash, sha) = seal_small(prep.message_key(), msg)?;
    let env = prep.finish(alice, cm_hash, cm.len() as u64, sha)?;
    let env_file = env.to_file_prefix();
    // B1
    let env_b = Envelope::from_file_prefix(&env_file)?;
    let venv_b = env_b.verify(card)?;
    venv_b.check_for_recipient(bob.id(), std::slice::from_ref(card), t, 0)?;
    let mut h = CmHasher::default();
    h.update(&cm);
    if h.finish() != venv_b.header().cm_hash {
        bail!("c_m does not match");
    }
    let receipt_file = Receipt::issue(bob, &venv_b, t).to_file();
    // A2
    let venv_a = env.verify(card)?;
    let receipt = Receipt::from_file(&receipt_file)?.verify(&venv_a)?;
    let opening_file = Opening::reveal(alice, &venv_a, &receipt)?.to_file();
    // B2
    let opened = Opening::from_file(&opening_file)?.check(&venv_b, bob.card())?;
    let mut opener = MessageOpener::new(&opened.message_key, cm.len() as u64)?;
    let mut plain = Vec::with_capacity(msg.len());
    let mut off = 0;
    while let Some(n) = opener.next_len() {
        plain.extend(opener.open_chunk(&cm[off..off + n])?);
        off += n;
    }
    if Digest32(Sha256::digest(&plain).into()) != opened.inside.message_sha256 {
        bail!("the message does not match the commitment");
    }
    Ok(())
}

/// One streaming pass over `len` bytes as `vtp send` makes it: encrypt in
/// chunks, hash the plaintext and the ciphertext.
fn seal_pass(km: &[u8; 32], chunk: &[u8], len: u64) -> anyhow::Result<Digest32> {
    let mut sealer = MessageSealer::new(km, len);
    let mut sha = Sha256::new();
    let mut cm = CmHasher::default();
    while let Some(n) = sealer.next_len() {
        sha.update(&chunk[..n]);
        cm.update(&sealer.seal_chunk(&chunk[..n])?);
    }
    Ok(cm.finish())
}

fn optimistic_phases(
    opts: &BenchOptions,
    card: &TpCard,
    pool: &[IdentitySecret],
    report: &mut Report,
) -> anyhow::Result<()> {
    let msg = [0x42u8; 1024];
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed().as_secs_f64() < opts.seconds {
        let a = &pool[done % pool.len()];
        let b = &pool[(done + 1) % pool.len()];
        honest_exchange(card, a, b, &msg)?;
        done += 1;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    report.figure(
        json!({"name": "optimistic_exchange", "threads": 1, "message_bytes": msg.len(),
               "tp_device_ops": 0, "ops_per_s": round(rate, 1)}),
        format!(
            "{rate:.0} full honest exchanges/s (A1+B1+A2+B2, 1 KiB) on 1 thread, 0 TP operations"
        ),
    );

    // The big message: send = two sealing passes, open = one opening pass.
    let len = opts.big_mb.max(1) * 1024 * 1024;
    let mut km = [0u8; 32];
    OsRng.fill_bytes(&mut km);
    let mut chunk = vec![0u8; CHUNK];
    OsRng.fill_bytes(&mut chunk);
    let start = Instant::now();
    let first = seal_pass(&km, &chunk, len)?;
    let second = seal_pass(&km, &chunk, len)?;
    let send = start.elapsed().as_secs_f64();
    if first != second {
        bail!("sealing is not deterministic");
    }
    // Opening: each ciphertext chunk is made just before it is opened
    // (untimed), so memory stays at one chunk; only opening is timed.
    let mut sealer = MessageSealer::new(&km, len);
    let mut opener = MessageOpener::new(&km, vtp_protocol::message::sealed_len(len))?;
    let mut sha = Sha256::new();
    let mut cm = CmHasher::default();
    let mut open = Duration::ZERO;
    while let Some(n) = sealer.next_len() {
        let sealed = sealer.seal_chunk(&chunk[..n])?;
        let t = Instant::now();
        cm.update(&sealed);
        sha.update(opener.open_chunk(&sealed)?);
        open += t.elapsed();
    }
    let open = open.as_secs_f64();
    if cm.finish() != first {
        bail!("H(c_m) differs between sealing and opening");
    }
    let mb = len as f64 / 1e6;
    report.figure(
        json!({"name": "client_send_big", "message_mib": opts.big_mb, "passes": 2,
               "mb_per_s": round(mb / send, 1), "ops_per_s": round(1.0 / send, 4)}),
        format!("{:.0} MB/s: vtp send of a {} MiB message (2 passes: AES-256-GCM + 2x SHA-256; memory only)", mb / send, opts.big_mb),
    );
    report.figure(
        json!({"name": "client_open_big", "message_mib": opts.big_mb, "passes": 1,
               "mb_per_s": round(mb / open, 1), "ops_per_s": round(1.0 / open, 4)}),
        format!(
            "{:.0} MB/s: vtp open of a {} MiB message (1 pass; memory only)",
            mb / open,
            opts.big_mb
        ),
    );
    Ok(())
}

// ---- phase 4: the real daemon --------------------------------------------------

/// A `tp-daemon serve` child with a throwaway data directory.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("the benchmark daemon did not stop after SIGTERM");
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

/// A copy of the operator's config that serves the same token and keys
/// from a fresh journal in `scratch`, on loopback, with room for the idle
/// connections.
fn scratch_config(
    config: &Config,
    keys: &vtp_device::TpKeys,
    scratch: &Path,
    connections: usize,
    metrics: SocketAddr,
) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(&config.path)
        .with_context(|| format!("cannot read {}", config.path.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("cannot parse {}", config.path.display()))?;
    let path = |p: &Path| toml_edit::value(p.display().to_string());
    doc["data_dir"] = path(&scratch.join("data"));
    doc["listen"] = toml_edit::value("127.0.0.1:0");
    doc["metrics_listen"] = toml_edit::value(metrics.to_string());
    {
        let token = doc["token"]
            .as_table_mut()
            .ok_or_else(|| anyhow!("no [token] in {}", config.path.display()))?;
        token["module"] = path(&config.module);
        if let PinSpec::File(p) = &config.pin {
            token["pin_file"] = path(p);
        }
        if let Some(p) = &config.softhsm2_conf {
            token["softhsm2_conf"] = path(p);
        }
        if let Some(p) = &config.kryoptic_conf {
            token["kryoptic_conf"] = path(p);
        }
    }
    // The fresh journal's key ring: imported from these (the legacy form).
    let mut enc = toml_edit::Array::new();
    for k in &keys.encryption {
        enc.push(k.to_string());
    }
    doc["keys"]["encryption"] = toml_edit::value(enc);
    doc["keys"]["current"] = toml_edit::value(keys.current.to_string());
    let conns = (connections as i64).max(config.limits.max_connections as i64);
    doc["limits"]["max_connections"] = toml_edit::value(conns);
    doc["limits"]["max_connections_per_ip"] = toml_edit::value(conns);
    let out = scratch.join("tp.toml");
    std::fs::write(&out, doc.to_string())
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(out)
}

fn start_daemon(config: &Path, scratch: &Path, allow_root: bool) -> anyhow::Result<Daemon> {
    let exe = std::env::current_exe().context("cannot find this program")?;
    let log = scratch.join("daemon.log");
    let mut cmd = Command::new(exe);
    cmd.arg("serve").arg("--config").arg(config);
    cmd.args(["--listen", "127.0.0.1:0"]);
    if allow_root {
        cmd.arg("--allow-root");
    }
    let mut child = cmd
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env_remove("VTP_TEST_CLOCK_OFFSET_SECS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("cannot start tp-daemon serve")?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        // Keep reading so the daemon never blocks on stdout.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_default();
    let mut daemon = Daemon {
        child,
        addr: "127.0.0.1:0".parse().expect("address"),
        log,
    };
    match line.trim().strip_prefix("listening on ") {
        Some(a) => daemon.addr = a.parse()?,
        None => {
            let _ = daemon.child.kill();
            let mut text = String::new();
            let _ = std::fs::File::open(&daemon.log).and_then(|mut f| f.read_to_string(&mut text));
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            bail!(
                "the benchmark daemon did not start; last lines of {}:\n{}",
                daemon.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    Ok(daemon)
}

/// A loopback address with a port nobody listens on right now, for the
/// benchmark daemon's metrics.
fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The daemon's committed journal batches and the records in them, from
/// its Prometheus `/metrics` (`None` if it cannot be read).
fn journal_commits(metrics: SocketAddr) -> Option<(f64, f64)> {
    let mut s = std::net::TcpStream::connect(metrics).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    if !text.starts_with("HTTP/1.") || !text.contains(" 200 ") {
        return None;
    }
    // A counter appears with its first batch: absent means zero.
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or(Some(0.0), |v| v.trim().parse::<f64>().ok())
    };
    Some((
        value("vtp_journal_batches_total{result=\"committed\"}")?,
        value("vtp_journal_records_total{result=\"committed\"}")?,
    ))
}

fn fetch_card(addr: SocketAddr) -> anyhow::Result<TpCard> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = encode_request(&Request::GetCard);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.write_all(&frame)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut resp = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp)?;
    match decode_response(&resp)? {
        Response::Card(c) => Ok(c),
        other => bail!("the daemon answered a card request with {other:?}"),
    }
}

/// Results of one concurrency level.
struct Level {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    wall: f64,
    latencies: Vec<Duration>,
}

/// Drive `concurrency` connections through `frames` for at most `secs`.
///
/// Closed loop (`pace` = `None`): each connection sends its next claim as
/// soon as the last one is answered, so the daemon is saturated and the
/// latency is what a claim waits behind the others in flight.
///
/// Open loop (`pace` = claims per second, all connections together): claim
/// `i` is due at `i / pace` seconds after the start, on connection
/// `i mod concurrency`, and its latency counts from when it was due, not
/// from when it could be sent, so a slow answer that holds up the next
/// claim on its connection is charged to that claim too (no "coordinated
/// omission").
fn drive(
    addr: SocketAddr,
    frames: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    secs: f64,
    pace: Option<f64>,
) -> anyhow::Result<Level> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Connect everyone before the clock starts.
        let mut conns = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            conns.push(s);
        }
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let limit = Duration::from_secs_f64(secs);
        let mut tasks = tokio::task::JoinSet::new();
        for (k, mut s) in conns.into_iter().enumerate() {
            let frames = Arc::clone(&frames);
            let next = Arc::clone(&next);
            tasks.spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0usize;
                let mut first_error = None;
                let mut buf = Vec::new();
                let mut round = 0usize;
                while start.elapsed() < limit {
                    let (i, t0) = match pace {
                        None => (next.fetch_add(1, Ordering::Relaxed), Instant::now()),
                        Some(rate) => {
                            let i = round * concurrency + k;
                            round += 1;
                            let due = start + Duration::from_secs_f64(i as f64 / rate);
                            if due - start >= limit {
                                break;
                            }
                            tokio::time::sleep_until(due.into()).await;
                            (i, due)
                        }
                    };
                    let Some(frame) = frames.get(i) else { break };
                    s.write_all(frame).await?;
                    let mut len = [0u8; 4];
                    s.read_exact(&mut len).await?;
                    buf.resize(u32::from_be_bytes(len) as usize, 0);
                    s.read_exact(&mut buf).await?;
                    let took = t0.elapsed();
                    match decode_response(&buf) {
                        Ok(Response::Claim(ClaimOutcome::Resolved { .. })) => lat.push(took),
                        other => {
                            errors += 1;
                            if first_error.is_none() {
                                first_error = Some(format!("{other:?}"));
                            }
                        }
                    }
                }
                anyhow::Ok((lat, errors, first_error))
            });
        }
        let mut level = Level {
            ok: 0,
            errors: 0,
            first_error: None,
            wall: 0.0,
            latencies: Vec::new(),
        };
        while let Some(r) = tasks.join_next().await {
            let (lat, errors, first) = r??;
            level.ok += lat.len();
            level.latencies.extend(lat);
            level.errors += errors;
            if level.first_error.is_none() {
                level.first_error = first;
            }
        }
        level.wall = start.elapsed().as_secs_f64();
        level.latencies.sort();
        anyhow::Ok(level)
    })
}

fn e2e_phases(
    opts: &BenchOptions,
    config: &Config,
    keys: &vtp_device::TpKeys,
    pool: &[IdentitySecret],
    device: &DeviceFigures,
    report: &mut Report,
) -> anyhow::Result<(f64, f64)> {
    let scratch = match &opts.scratch_dir {
        Some(d) => d.join(format!("vtp-bench-{}", std::process::id())),
        None => std::env::temp_dir().join(format!("vtp-bench-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let result = (|| -> anyhow::Result<(f64, f64)> {
        let max_c = opts.concurrency.iter().copied().max().unwrap_or(1);
        let metrics = free_loopback_addr()?;
        let cfg = scratch_config(
            config,
            keys,
            &scratch,
            opts.idle_connections + max_c + 64,
            metrics,
        )?;
        let daemon = start_daemon(&cfg, &scratch, opts.allow_root)?;
        eprintln!(
            "bench: daemon pid {} on {} (journal and log in {})",
            daemon.pid(),
            daemon.addr,
            scratch.display()
        );
        let card = fetch_card(daemon.addr)?;
        let (rss0, _) = proc_rss(daemon.pid())?;
        report.figure(
            json!({"name": "daemon_rss_start", "rss_kib": rss0, "ops_per_s": Value::Null}),
            format!("{:.1} MiB resident after start-up", rss0 as f64 / 1024.0),
        );
        let mut best = 0f64;
        let mut cpu_at_best = 0f64;
        for (li, &c) in opts.concurrency.iter().enumerate() {
            let c = c.max(1);
            let expect = if c == 1 { device.ops_1 } else { device.ops_n };
            let count =
                ((expect * opts.seconds * 1.3) as usize + 2 * c + 16).min(MAX_CLAIMS_PER_LEVEL);
            let t = Instant::now();
            let frames = Arc::new(claim_frames(&card, pool, count, li * 1_000_003)?);
            eprintln!(
                "bench: made {count} claims for concurrency {c} in {:.1} s (not timed)",
                t.elapsed().as_secs_f64()
            );
            let commits0 = journal_commits(metrics);
            let cpu0 = proc_cpu(daemon.pid())?;
            let client0 = self_cpu();
            let level = drive(daemon.addr, Arc::clone(&frames), c, opts.seconds, None)?;
            let cpu = proc_cpu(daemon.pid())? - cpu0;
            let client = self_cpu() - client0;
            // Group commit: records per journal transaction (and fsync).
            let per_commit = match (commits0, journal_commits(metrics)) {
                (Some((b0, r0)), Some((b1, r1))) if b1 > b0 => Some((r1 - r0) / (b1 - b0)),
                _ => None,
            };
            let rate = level.ok as f64 / level.wall;
            if rate > best {
                best = rate;
                cpu_at_best = cpu / level.ok.max(1) as f64;
            }
            let p50 = percentile(&level.latencies, 0.50);
            let p99 = percentile(&level.latencies, 0.99);
            let ran_out = level.ok + level.errors >= frames.len();
            report.figure(
                json!({
                    "name": "claim_e2e", "concurrency": c, "ops_per_s": round(rate, 1),
                    "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                    "claims": level.ok, "errors": level.errors,
                    "daemon_cpu_ms_per_claim": round(cpu * 1e3 / level.ok.max(1) as f64, 3),
                    "client_cpu_ms_per_claim": round(client * 1e3 / level.ok.max(1) as f64, 3),
                    "records_per_commit": per_commit.map(|r| round(r, 2)),
                    "ran_out_of_claims": ran_out,
                }),
                format!(
                    "{rate:.0} claims/s at concurrency {c}: p50 {p50:.2} ms, p99 {p99:.2} ms, \
                     daemon CPU {:.3} ms/claim, {} claims per journal commit{}{}",
                    cpu * 1e3 / level.ok.max(1) as f64,
                    per_commit.map_or("?".to_owned(), |r| format!("{r:.1}")),
                    if level.errors > 0 {
                        format!(
                            ", {} errors (first: {})",
                            level.errors,
                            level.first_error.clone().unwrap_or_default()
                        )
                    } else {
                        String::new()
                    },
                    if ran_out {
                        " (ran out of claims before the time)"
                    } else {
                        ""
                    }
                ),
            );
        }
        // Open loop: the highest concurrency, offered a fixed rate below
        // saturation, so the latency is the daemon's, not the queue's.
        for (pi, &load) in opts.paced_load.iter().enumerate() {
            if best <= 0.0 {
                break;
            }
            let c = max_c.max(1);
            let offered = best * load;
            let count = ((offered * opts.seconds) as usize + c + 16).min(MAX_CLAIMS_PER_LEVEL);
            let frames = Arc::new(claim_frames(&card, pool, count, (100 + pi) * 1_000_003)?);
            let level = drive(daemon.addr, frames, c, opts.seconds, Some(offered))?;
            let rate = level.ok as f64 / level.wall;
            let p50 = percentile(&level.latencies, 0.50);
            let p99 = percentile(&level.latencies, 0.99);
            report.figure(
                json!({
                    "name": "claim_e2e_paced", "concurrency": c,
                    "offered_per_s": round(offered, 1), "load": round(load, 2),
                    "ops_per_s": round(rate, 1),
                    "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                    "claims": level.ok, "errors": level.errors,
                }),
                format!(
                    "{rate:.0} claims/s answered of {offered:.0}/s offered ({:.0}% of the best \
                     closed-loop rate) over {c} connections: p50 {p50:.2} ms, p99 {p99:.2} ms{}",
                    load * 100.0,
                    if level.errors > 0 {
                        format!(", {} errors", level.errors)
                    } else {
                        String::new()
                    }
                ),
            );
        }
        let (rss1, hwm1) = proc_rss(daemon.pid())?;
        report.figure(
            json!({"name": "daemon_rss_after_claims", "rss_kib": rss1, "hwm_kib": hwm1, "ops_per_s": Value::Null}),
            format!("{:.1} MiB resident after the claims (peak {:.1} MiB)", rss1 as f64 / 1024.0, hwm1 as f64 / 1024.0),
        );
        // Idle connections: open them all, let the daemon accept them.
        let mut idle = Vec::with_capacity(opts.idle_connections);
        for _ in 0..opts.idle_connections {
            idle.push(std::net::TcpStream::connect(daemon.addr)?);
        }
        let fds = |pid: u32| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .unwrap_or(0)
        };
        let want = opts.idle_connections;
        let t = Instant::now();
        while fds(daemon.pid()) < want && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        let (rss2, hwm2) = proc_rss(daemon.pid())?;
        let open_fds = fds(daemon.pid());
        report.figure(
            json!({"name": "daemon_rss_idle_1000", "idle_connections": want, "rss_kib": rss2,
                   "hwm_kib": hwm2, "open_fds": open_fds, "ops_per_s": Value::Null}),
            format!(
                "{:.1} MiB resident with {want} idle connections open (peak {:.1} MiB, {open_fds} fds)",
                rss2 as f64 / 1024.0,
                hwm2 as f64 / 1024.0
            ),
        );
        drop(idle);
        daemon.stop()?;
        Ok((best, cpu_at_best))
    })();
    match &result {
        Ok(_) => {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        Err(_) => eprintln!("bench: kept {} for inspection", scratch.display()),
    }
    result
}

/// Run the whole benchmark.
pub fn run(opts: BenchOptions) -> anyhow::Result<()> {
    if opts.seconds <= 0.0 || !opts.seconds.is_finite() {
        bail!("--seconds must be positive");
    }
    if opts.concurrency.is_empty() {
        bail!("--concurrency needs at least one level");
    }
    if let Some(l) = opts
        .paced_load
        .iter()
        .find(|l| !(l.is_finite() && **l > 0.0 && **l <= 1.0))
    {
        bail!("--paced-load {l}: each load must be a fraction above 0 and at most 1");
    }
    let config = Config::load(&opts.config)?;
    let mut report = Report { rows: Vec::new() };
    let load_before = loadavg();
    eprintln!(
        "bench: {} threads; {} s per phase; load average {load_before:.2}",
        threads(),
        opts.seconds
    );

    // The token first, while this process is single-threaded (open_token
    // sets SOFTHSM2_CONF).
    let (token, tp, keys) = open_tp(&config)?;
    let info = token.info();
    let card = tp.card().clone();
    let bits = card.current_key().bits();
    eprintln!(
        "bench: token \"{}\" ({} {}), RSA-{bits} decryption key {}",
        info.label, info.manufacturer, info.model, keys.current
    );
    let t = Instant::now();
    let pool = parties(opts.identities)?;
    eprintln!(
        "bench: made {} parties in {:.1} s (not timed)",
        pool.len(),
        t.elapsed().as_secs_f64()
    );

    let device = device_phases(&opts, &tp, &pool, &mut report)?;
    drop(tp);
    claim_checks(&opts, &card, &pool, &mut report)?;
    drop(token);
    optimistic_phases(&opts, &card, &pool, &mut report)?;
    let (e2e, daemon_cpu) = e2e_phases(&opts, &config, &keys, &pool, &device, &mut report)?;
    // The same ratio from CPU time, which other work on the machine does
    // not skew: at saturation the daemon does device_cpu of device work
    // for every daemon_cpu it spends.
    let cpu_ratio = device.cpu_per_op / daemon_cpu.max(1e-9);
    report.figure(
        json!({"name": "ratio_cpu_device_op_to_daemon_claim", "value": round(cpu_ratio, 3),
               "device_cpu_ms_per_op": round(device.cpu_per_op * 1e3, 3),
               "daemon_cpu_ms_per_claim": round(daemon_cpu * 1e3, 3), "ops_per_s": Value::Null}),
        format!(
            "{cpu_ratio:.2} (device {:.3} ms CPU per op / daemon {:.3} ms CPU per claim at the best level)",
            device.cpu_per_op * 1e3,
            daemon_cpu * 1e3
        ),
    );
    let ratio = e2e / device.ops_n.max(1e-9);
    report.figure(
        json!({"name": "ratio_claim_e2e_to_device_raw", "value": round(ratio, 3),
               "rsa_bits": bits, "device_cpu_ms_per_op": round(device.cpu_per_op * 1e3, 3),
               "loadavg_before": load_before, "loadavg_after": loadavg()}),
        format!(
            "{ratio:.2} (best claim_e2e {e2e:.0}/s over device_raw {:.0}/s at {} threads)",
            device.ops_n,
            threads()
        ),
    );
    report.table();
    Ok(())
}
