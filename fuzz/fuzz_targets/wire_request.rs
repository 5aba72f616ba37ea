//! A hostile client's request frame body, as the daemon decodes it
//! (`decode_request`), then the checks the daemon makes before it lets its
//! token do anything (`Claim::verify_authentic` + deadline,
//! `UnclaimedRequest::verify`, `FetchRequest::verify`) against the fixture TP.
//!
//! Properties: no panic; a decoded request re-encodes to bytes that decode
//! to the same request (and re-encoding is a fixed point); a request that
//! passes the checks carries only what the fixture's honest parties signed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtp_fuzz::{check_roundtrip, fixture, FETCH_AT, RESOLVED_AT, UNCLAIMED_AT};
use vtp_protocol::wire::{decode_request, encode_request, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = decode_request(data) else {
        return;
    };
    check_roundtrip("request", data, &req, encode_request, decode_request, false);
    let fx = fixture();
    match &req {
        Request::GetCard => {}
        Request::Claim(claim) => {
            let _ = claim.z_hash_for(&fx.tp.id());
            if let Ok(vc) = claim.verify_authentic(&fx.tp, RESOLVED_AT) {
                let _ = vc.check_deadline(RESOLVED_AT);
                let _ = vc.aad();
                // Only Bob can sign a claim; only Alice an envelope to him.
                assert_eq!(
                    claim.body.receipt.recipient_card.id(),
                    vc.envelope().header().recipient
                );
                let signers = [fx.alice.id(), fx.bob.id()];
                assert!(signers.contains(&vc.envelope().header().sender));
                assert_eq!(claim.body.receipt.body, fx.receipt.body);
            }
        }
        Request::FetchReceipts(f) => {
            if let Ok(who) = f.verify(&fx.tp, FETCH_AT) {
                assert!(who == fx.alice.id() || who == fx.bob.id());
            }
        }
        Request::Unclaimed(u) => {
            if let Ok(env) = u.verify(&fx.tp, UNCLAIMED_AT) {
                assert!(
                    u.body.requester_card.id() == fx.alice.id()
                        || u.body.requester_card.id() == fx.bob.id()
                );
                let _ = env.header().envelope_id();
            }
        }
    }
});
