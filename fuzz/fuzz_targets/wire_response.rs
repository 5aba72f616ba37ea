//! A hostile TP's (or network's) response frame body, as a client decodes it
//! (`decode_response`), then the checks the client makes on what it got.
//!
//! Properties: no panic; decode → encode → decode gives the same response and
//! re-encoding is a fixed point; an affidavit that verifies against the
//! fixture TP and envelope is one the fixture TP signed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtp_fuzz::{check_roundtrip, fixture};
use vtp_protocol::affidavit::Affidavit;
use vtp_protocol::opening::unwrap_released_key;
use vtp_protocol::wire::{decode_response, encode_response, ClaimOutcome, Response};

fn check_affidavit(a: &Affidavit) {
    let fx = fixture();
    if a.verify(&fx.tp, &fx.venv).is_ok() {
        assert!(
            fx.affidavits().iter().any(|ok| ok.body == a.body),
            "an affidavit the TP never signed verifies: {a:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(resp) = decode_response(data) else {
        return;
    };
    check_roundtrip(
        "response",
        data,
        &resp,
        encode_response,
        decode_response,
        false,
    );
    let fx = fixture();
    match &resp {
        Response::Card(card) => {
            let _ = card.id();
            let _ = card.current_key().ciphertext_len();
        }
        Response::Claim(ClaimOutcome::Resolved {
            affidavit,
            wrapped_km,
        }) => {
            check_affidavit(affidavit);
            let _ = unwrap_released_key(&fx.bob, &fx.venv, wrapped_km);
        }
        Response::Claim(ClaimOutcome::InvalidEnvelope { affidavit }) => check_affidavit(affidavit),
        Response::Receipts(page) => {
            let _ = page.check(0);
            for r in &page.receipts {
                check_affidavit(&r.affidavit);
                if r.receipt.verify(&fx.venv).is_ok() {
                    assert_eq!(r.receipt.body, fx.receipt.body);
                }
            }
        }
        Response::Unclaimed(a) => check_affidavit(a),
        Response::Error(e) => {
            let _ = e.to_string();
        }
    }
});
