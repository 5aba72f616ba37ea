//! A hostile client's request frame body, as the daemon decodes it
//! (`decode_request`), then the checks the daemon makes before it lets its
//! token do anything (`Claim::authenticate` and the decision core's
//! `decide`, `UnclaimedRequest::authenticate` and `decide`,
//! `FetchRequest::verify`) against the fixture TP.
//!
//! Properties: no panic; a decoded request re-encodes to bytes that decode
//! to the same request (and re-encoding is a fixed point); a request that
//! passes the checks carries only what the fixture's honest parties signed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtp_fuzz::{check_roundtrip, fixture, FETCH_AT, RESOLVED_AT, UNCLAIMED_AT};
use vtp_protocol::decide::{ClaimContext, ClaimDecision, Recorded, RecordedResolution};
use vtp_protocol::wire::{decode_request, encode_request, ClaimOutcome, Request};

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
            if let Ok(vc) = claim.authenticate(&fx.tp, RESOLVED_AT) {
                let _ = vc.subject();
                // Only Bob can sign a claim; only Alice an envelope to him.
                assert_eq!(
                    claim.body.receipt.recipient_card.id(),
                    vc.envelope().header().recipient
                );
                let signers = [fx.alice.id(), fx.bob.id()];
                assert!(signers.contains(&vc.envelope().header().sender));
                assert_eq!(claim.body.receipt.body, fx.receipt.body);
                // The decision core, against a journal holding the fixture's
                // resolution: the recorded answer goes only to a claim whose
                // header agrees with it on every field z is sealed to.
                let recorded = Recorded {
                    resolution: Some(RecordedResolution {
                        outcome: ClaimOutcome::Resolved {
                            affidavit: fx.aff_resolved.clone(),
                            wrapped_km: Vec::new(),
                        },
                        receipt: fx.receipt.clone(),
                    }),
                    ..Recorded::nothing()
                };
                let h = vc.envelope().header().clone();
                if let ClaimDecision::Answer(_) =
                    vc.decide(&fx.tp, &recorded, &ClaimContext::OPEN, RESOLVED_AT)
                {
                    let g = fx.venv.header();
                    assert_eq!(h.aad(0), g.aad(0), "a recorded answer for another header");
                }
            }
        }
        Request::FetchReceipts(f) => {
            if let Ok(who) = f.verify(&fx.tp, FETCH_AT) {
                assert!(who == fx.alice.id() || who == fx.bob.id());
            }
        }
        Request::Unclaimed(u) => {
            if let Ok(au) = u.authenticate(&fx.tp, UNCLAIMED_AT) {
                let env = au.envelope().clone();
                assert!(
                    u.body.requester_card.id() == fx.alice.id()
                        || u.body.requester_card.id() == fx.bob.id()
                );
                let _ = env.header().envelope_id();
                let _ = au.decide(&Recorded::nothing(), UNCLAIMED_AT);
            }
        }
    }
});
