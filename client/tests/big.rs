//! A 1 GiB message through send, accept, reveal, open and verify, with the
//! peak memory of every `vtp` process checked to stay under 64 MiB.
//!
//! Ignored by default (it writes 2 GiB and takes a while); run it with
//! `cargo test -p vtp-client --release --test big -- --ignored`. It has its
//! own test binary so that `getrusage(RUSAGE_CHILDREN)` sees only its
//! children.

mod common;

use std::fs::File;
use std::io::{Read, Write};

use common::World;

/// Largest resident set of any child process waited for so far, in bytes.
fn peak_child_rss() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes into the struct we pass.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) },
        0
    );
    ru.ru_maxrss as u64 * 1024 // kilobytes on Linux
}

#[test]
#[ignore = "writes 2 GiB; run explicitly"]
fn one_gib_message_in_bounded_memory() {
    const LEN: usize = 1 << 30;
    let w = World::new();
    // A patterned (not sparse) message, written in 1 MiB blocks.
    {
        let mut f = File::create(w.path("big.msg")).unwrap();
        let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        for _ in 0..LEN / block.len() {
            f.write_all(&block).unwrap();
        }
    }
    w.vtp(&[
        "send",
        "--as",
        "alice.id",
        "--to",
        "bob.card",
        "--tp",
        "tp.card",
        "--deadline",
        "1h",
        "--in",
        "big.msg",
        "--out",
        "big.env",
    ])
    .ok();
    w.vtp(&[
        "accept",
        "--as",
        "bob.id",
        "--tp",
        "tp.card",
        "big.env",
        "--out",
        "big.receipt",
    ])
    .ok();
    w.vtp(&[
        "reveal",
        "--as",
        "alice.id",
        "big.env",
        "big.receipt",
        "--out",
        "big.opening",
    ])
    .ok();
    w.vtp(&[
        "open",
        "--as",
        "bob.id",
        "big.env",
        "big.opening",
        "--out",
        "big.out",
    ])
    .ok();
    w.vtp(&[
        "verify",
        "--tp",
        "tp.card",
        "big.env",
        "big.receipt",
        "--opening",
        "big.opening",
        "--message",
        "big.out",
    ])
    .ok();
    let peak = peak_child_rss();
    eprintln!("peak RSS of any vtp process: {} KiB", peak / 1024);
    assert!(peak < 64 << 20, "peak RSS {peak} bytes");

    // Same bytes, compared in blocks.
    let (mut a, mut b) = (
        File::open(w.path("big.msg")).unwrap(),
        File::open(w.path("big.out")).unwrap(),
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        b.read_exact(&mut y[..n]).unwrap();
        assert!(x[..n] == y[..n]);
        if n == 0 {
            break;
        }
    }
    assert_eq!(b.read(&mut y).unwrap(), 0);
}
