//! The daemon suite's kit: the workspace's test kit (`vtp-testkit`: a TP
//! copied from one made by the real `tp-daemon init`, real daemon processes
//! on 127.0.0.1:0, real TCP frames, `tp-daemon` runs), and what only this
//! suite does: exchanges made in-process with the protocol crate, to claim
//! over raw frames.

#![allow(dead_code, unused_imports)]

use rand_core::{OsRng, RngCore};
use sha2::{Digest as _, Sha256};
use vtp_protocol::claim::Claim;
use vtp_protocol::encoding::CmHasher;
use vtp_protocol::envelope::{self, Envelope, VerifiedEnvelope};
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::message::MessageSealer;
use vtp_protocol::receipt::{Receipt, VerifiedReceipt};
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wire::{Request, Response};
use vtp_protocol::Digest32;
pub use vtp_testkit::frame::try_ask;
pub use vtp_testkit::{frame, now, read_frame, write_frame, Cli, Conn, Daemon, Run, TestTp};

/// Raise this process's soft open-file limit to its hard limit (tests that
/// hold thousands of sockets); returns the new soft limit.
pub fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        // (An unlimited hard limit still stops at the kernel's nr_open.)
        let want = lim.rlim_max.min(1 << 20);
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    lim.rlim_cur
}

pub fn card_of(d: &Daemon) -> TpCard {
    match d.ask(&Request::GetCard) {
        Response::Card(c) => c,
        other => panic!("expected a card, got {other:?}"),
    }
}

// ---- the parties ------------------------------------------------------------

pub fn identity(name: &str) -> IdentitySecret {
    IdentitySecret::generate(name, now() - 10, &mut OsRng).unwrap()
}

/// An envelope Alice sent Bob, Bob's receipt for it, and the message key.
pub struct Exchange {
    pub alice: IdentitySecret,
    pub bob: IdentitySecret,
    pub envelope: Envelope,
    pub verified: VerifiedEnvelope,
    pub receipt: VerifiedReceipt,
    pub message_key: [u8; 32],
}

impl Exchange {
    /// A1 + B1 for a fresh pair of parties, deadline `deadline_in` s from now.
    pub fn new(card: &TpCard, deadline_in: u64) -> Exchange {
        let alice = identity("alice");
        let bob = identity("bob");
        let t = now();
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        let prep = envelope::prepare(&alice, bob.card(), card, t + deadline_in, t, nonce).unwrap();
        let message_key = *prep.message_key();
        let msg = b"the signed contract, page 1 of 1".repeat(50);
        let mut sealer = MessageSealer::new(&message_key, msg.len() as u64);
        let mut cm = Vec::new();
        let mut off = 0;
        while let Some(n) = sealer.next_len() {
            cm.extend(sealer.seal_chunk(&msg[off..off + n]).unwrap());
            off += n;
        }
        let mut h = CmHasher::default();
        h.update(&cm);
        let envelope = prep
            .finish(
                &alice,
                h.finish(),
                cm.len() as u64,
                Digest32(Sha256::digest(&msg).into()),
            )
            .unwrap();
        let verified = envelope.verify(card).unwrap();
        let receipt = Receipt::issue(&bob, &verified, t)
            .verify(&verified)
            .unwrap();
        Exchange {
            alice,
            bob,
            envelope,
            verified,
            receipt,
            message_key,
        }
    }

    /// Bob's claim, dated now.
    pub fn claim(&self) -> Request {
        Request::Claim(Claim::new(&self.bob, &self.verified, &self.receipt, now()))
    }
}
