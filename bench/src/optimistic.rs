//! Phase 3, the optimistic path: the honest exchange with no TP at all, and
//! the client's streaming throughput for a big message.

use std::time::{Duration, Instant};

use anyhow::bail;
use rand_core::{OsRng, RngCore};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use vtp_protocol::encoding::CmHasher;
use vtp_protocol::envelope::{self, Envelope};
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::message::{MessageOpener, MessageSealer, CHUNK};
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::Digest32;

use crate::claims::seal_small;
use crate::report::{round, Report};
use crate::{now, BenchOptions};

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

/// `optimistic_exchange`, `client_send_big`, `client_open_big`.
pub fn optimistic_phases(
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
