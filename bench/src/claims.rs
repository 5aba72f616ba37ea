//! What the bench claims with: parties, sealed messages, claims and their
//! request frames — all made before any clock starts, on every CPU.

use rand_core::{OsRng, RngCore};
use sha2::{Digest as _, Sha256};
use vtp_client::tp_client::request_frame;
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding::CmHasher;
use vtp_protocol::envelope;
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::message::MessageSealer;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::Request;
use vtp_protocol::{Digest32, Timestamp};

use crate::{now, threads};

/// `n` parties (at least 2), made on all CPUs.
pub fn parties(n: usize) -> anyhow::Result<Vec<IdentitySecret>> {
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

/// A small message sealed under `km`: (c_m, H(c_m), SHA-256(m)).
pub fn seal_small(km: &[u8; 32], msg: &[u8]) -> anyhow::Result<(Vec<u8>, Digest32, Digest32)> {
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

/// A1 + B1 + Bob's claim: a new envelope (1 KiB message) from `alice` to `bob`.
pub fn new_claim(
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

/// `count` claim frames (length prefix included, as the client sends
/// them), each a new envelope between two parties of `pool` (`salt` picks
/// which), made on all CPUs.
pub fn claim_frames(
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
                        out.push(request_frame(&Request::Claim(claim))?);
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
