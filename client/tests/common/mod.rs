//! Test helpers: run the real `vtp` binary (through the workspace's test
//! kit, `vtp-testkit`), and make a TP card without a token.
//!
//! The TP here is a STAND-IN built from host keys (the RSA key in
//! `tests/data/test-tp-rsa2048.pem` and a fixed P-256 signing key), exactly as
//! `protocol/tests/flow.rs` does. It exists only so the client's offline
//! paths can be tested without a PKCS#11 token; the real TP (keys in the
//! token, behind the daemon) is exercised by the end-to-end tests.

#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

use p256::ecdsa::signature::hazmat::PrehashSigner;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use vtp_protocol::tp_card::{OaepHash, Policy, TpCard, TpCardBody, TpEncKey};
use vtp_protocol::{Digest32, EcPoint, KeyId, Signature};
pub use vtp_testkit::{now, read_frame, write_frame, Run};

pub const KEY_ID: KeyId = KeyId([1, 2, 3, 4, 5, 6, 7, 8]);

/// A host-key stand-in for the TP: its card and the keys behind it.
pub struct TestTp {
    pub card: TpCard,
    pub rsa: RsaPrivateKey,
    pub sign: p256::ecdsa::SigningKey,
}

impl TestTp {
    /// `sign_seed` picks the signing key, hence the TP id: two seeds, two TPs.
    pub fn new(sign_seed: u8) -> TestTp {
        let rsa =
            RsaPrivateKey::from_pkcs8_pem(include_str!("../data/test-tp-rsa2048.pem")).unwrap();
        let sign = p256::ecdsa::SigningKey::from_slice(&[sign_seed; 32]).unwrap();
        let body = TpCardBody {
            name: format!("test TP {sign_seed}"),
            sign_key: EcPoint::from_public(p256::PublicKey::from(sign.verifying_key())),
            enc_keys: vec![TpEncKey {
                id: KEY_ID,
                modulus: rsa.n().to_bytes_be(),
                exponent: rsa.e().to_bytes_be(),
                oaep: OaepHash::Sha1,
            }],
            current_key: KEY_ID,
            policy: Policy::default(),
            // Signed now: senders and recipients accept deadlines only up to
            // the horizon after a card's signing.
            created: now(),
        };
        let sig = sign_digest(&sign, &body.signing_digest());
        TestTp {
            card: TpCard::assemble(body, sig).unwrap(),
            rsa,
            sign,
        }
    }

    pub fn sign_digest(&self, d: &Digest32) -> Signature {
        sign_digest(&self.sign, d)
    }
}

pub fn sign_digest(k: &p256::ecdsa::SigningKey, d: &Digest32) -> Signature {
    let s: p256::ecdsa::Signature = k.sign_prehash(&d.0).unwrap();
    Signature(s.to_bytes().into())
}

/// Write the stand-in TP's card file.
pub fn write_tp_card(path: &Path, sign_seed: u8) {
    std::fs::write(path, TestTp::new(sign_seed).card.to_file()).unwrap();
}

/// Run `vtp` with `args` in `dir`.
pub fn vtp(dir: &Path, args: &[&str]) -> Run {
    vtp_testkit::vtp_in(dir, args)
}

/// A scratch directory with Alice, Bob, Chris and two TP cards.
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let w = World { dir };
        for name in ["alice", "bob", "chris"] {
            w.vtp(&["id", "new", "--name", name, "--out", &format!("{name}.id")])
                .ok();
            w.vtp(&[
                "id",
                "card",
                &format!("{name}.id"),
                "--out",
                &format!("{name}.card"),
            ])
            .ok();
        }
        write_tp_card(&w.path("tp.card"), 0x42);
        write_tp_card(&w.path("other-tp.card"), 0x43);
        w
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn vtp(&self, args: &[&str]) -> Run {
        vtp(self.dir.path(), args)
    }
    pub fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).unwrap();
    }
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
    /// A copy of `from` with the byte at `at` (negative: from the end) flipped.
    pub fn flipped(&self, from: &str, at: isize, to: &str) {
        let mut b = self.read(from);
        let i = if at < 0 { b.len() as isize + at } else { at } as usize;
        b[i] ^= 0x01;
        self.write(to, &b);
    }
    /// Alice sends `msg` to Bob: writes `<tag>.msg` and `<tag>.env`.
    pub fn send(&self, tag: &str, msg: &[u8], deadline: &str) {
        self.write(&format!("{tag}.msg"), msg);
        self.vtp(&[
            "send",
            "--as",
            "alice.id",
            "--to",
            "bob.card",
            "--tp",
            "tp.card",
            "--deadline",
            deadline,
            "--in",
            &format!("{tag}.msg"),
            "--out",
            &format!("{tag}.env"),
        ])
        .ok();
    }
    /// The whole honest exchange for `<tag>`: envelope, receipt, opening.
    pub fn exchange(&self, tag: &str, msg: &[u8]) {
        self.send(tag, msg, "1h");
        let (env, rc, op) = (
            format!("{tag}.env"),
            format!("{tag}.receipt"),
            format!("{tag}.opening"),
        );
        self.vtp(&[
            "accept", "--as", "bob.id", "--tp", "tp.card", &env, "--out", &rc,
        ])
        .ok();
        self.vtp(&["reveal", "--as", "alice.id", &env, &rc, "--out", &op])
            .ok();
    }
}
