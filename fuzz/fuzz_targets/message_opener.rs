//! `MessageOpener` (the STREAM-chunked AES-256-GCM of `c_m`) over a tampered
//! ciphertext, fed in arbitrary pieces.
//!
//! Input: `[message, edits, feed, ...]`:
//!   message  even: the plaintext is up to 255 fuzz bytes sealed here;
//!            odd: one of three prebuilt multi-chunk messages (a whole chunk,
//!            two chunks and a bit, three chunks) so chunk boundaries and the
//!            last-chunk flag are reachable with small inputs.
//!   edits    up to 7 edits of the ciphertext: flip a byte, truncate, append,
//!            delete a range, swap two chunks, duplicate a chunk, or replace
//!            the key.
//!   feed     0 (even): the well-behaved reader (sizes from `next_len`, stop at
//!            the first error); odd: a sloppy reader that feeds pieces of
//!            fuzzer-chosen sizes and keeps going after errors.
//!
//! Properties: no panic; every piece the opener returns is the original
//! plaintext of the chunk at that position; a run that ends with every chunk
//! opened (the last one included) happened only on the unmodified ciphertext
//! and returned exactly the original message; the unmodified ciphertext
//! always opens.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use vtp_fuzz::{seal_message, Bytes};
use vtp_protocol::message::{plain_len, sealed_len, MessageOpener, CHUNK, TAG};

const KM: [u8; 32] = [0x5A; 32];

struct Big {
    plain: Vec<u8>,
    sealed: Vec<u8>,
}

static BIG: LazyLock<Vec<Big>> = LazyLock::new(|| {
    [CHUNK, 2 * CHUNK + 5, 3 * CHUNK]
        .into_iter()
        .map(|len| {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let sealed = seal_message(&KM, &plain);
            assert_eq!(sealed.len() as u64, sealed_len(len as u64));
            Big { plain, sealed }
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let sel = b.u8();
    let small_plain;
    let small_sealed;
    let (plain, original): (&[u8], &[u8]) = if sel % 2 == 0 {
        let n = b.u8() as usize;
        small_plain = b.take(n).to_vec();
        small_sealed = seal_message(&KM, &small_plain);
        (&small_plain, &small_sealed)
    } else {
        let big = &BIG[(sel as usize / 2) % BIG.len()];
        (&big.plain, &big.sealed)
    };

    let mut ct = original.to_vec();
    let mut key = KM;
    let full = CHUNK + TAG;
    for _ in 0..b.u8() % 8 {
        let op = b.u8();
        let at = b.u32() as usize;
        match op % 7 {
            0 if !ct.is_empty() => {
                let i = at % ct.len();
                ct[i] ^= b.u8() | 1;
            }
            1 => ct.truncate(at % (ct.len() + 1)),
            2 => {
                let n = b.u8() as usize;
                let extra = b.take(n);
                ct.extend_from_slice(extra);
            }
            3 if !ct.is_empty() => {
                let i = at % ct.len();
                let n = (b.u16() as usize).min(ct.len() - i);
                ct.drain(i..i + n);
            }
            4 if ct.len() >= 2 * full => {
                let n = ct.len() / full;
                let (x, y) = (at % n, b.u8() as usize % n);
                if x != y {
                    let cx = ct[x * full..(x + 1) * full].to_vec();
                    let cy = ct[y * full..(y + 1) * full].to_vec();
                    ct[x * full..(x + 1) * full].copy_from_slice(&cy);
                    ct[y * full..(y + 1) * full].copy_from_slice(&cx);
                }
            }
            5 if ct.len() >= full => {
                let x = at % (ct.len() / full);
                let c = ct[x * full..(x + 1) * full].to_vec();
                let to = (b.u8() as usize % (ct.len() / full + 1)) * full;
                ct.splice(to..to, c);
            }
            6 => key[at % 32] ^= b.u8() | 1,
            _ => {}
        }
    }
    let modified = ct != original || key != KM;

    let Ok(mut opener) = MessageOpener::new(&key, ct.len() as u64) else {
        return;
    };
    let plain_n = plain_len(ct.len() as u64).expect("the opener accepted this length");
    // The opener must only accept lengths that some plaintext seals to: else
    // it stops before the end of `c_m` (the rest is never authenticated).
    assert_eq!(
        sealed_len(plain_n),
        ct.len() as u64,
        "MessageOpener accepted a ciphertext length that no plaintext seals to"
    );
    let chunks = plain_n.div_ceil(CHUNK as u64).max(1) as usize;
    let sloppy = b.u8() % 2 == 1;
    let mut off = 0;
    let mut opened = 0usize; // chunks returned so far
    let mut out = Vec::new();
    let mut failed = false;
    let mut steps = 0;
    loop {
        steps += 1;
        if steps > 64 {
            break;
        }
        let want = opener.next_len();
        let n = if sloppy {
            match b.u8() {
                0 => break,
                1 => want.unwrap_or(0),
                2 => want.unwrap_or(0) + 1,
                3 => want.unwrap_or(1).saturating_sub(1),
                4 => full,
                k => k as usize,
            }
        } else {
            match want {
                Some(n) => n,
                None => break,
            }
        };
        let piece = &ct[off.min(ct.len())..(off + n).min(ct.len())];
        off += piece.len();
        match opener.open_chunk(piece) {
            Ok(p) => {
                // Authentic: the original plaintext of chunk number `opened`.
                let start = opened * CHUNK;
                let expect = plain.get(start..(start + p.len()).min(plain.len()));
                assert_eq!(
                    Some(&p[..]),
                    expect,
                    "returned plaintext that is not the original chunk {opened}"
                );
                assert!(
                    p.len() == CHUNK || start + p.len() == plain.len(),
                    "short chunk that is not the last"
                );
                out.extend_from_slice(&p);
                opened += 1;
            }
            Err(_) => {
                failed = true;
                if !sloppy {
                    break;
                }
            }
        }
        if sloppy && b.is_empty() {
            break;
        }
    }
    // Every chunk of the layout opened, the last one included.
    let finished = opener.next_len().is_none() && opened == chunks;
    if finished {
        assert!(!modified, "a modified ciphertext opened completely");
        assert_eq!(out, plain, "complete run returned another message");
    }
    if !modified && !sloppy {
        assert!(
            finished && !failed && out == plain,
            "the unmodified ciphertext does not open"
        );
    }
});
