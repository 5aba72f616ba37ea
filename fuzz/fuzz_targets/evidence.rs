//! The judge (`evidence::judge`) on evidence where one piece was tampered with.
//!
//! The fixture is a valid exchange (TP card, envelope, receipt, opening,
//! affidavits). Input: `[target, flags, file...]`: `file` replaces the
//! encoded file of one piece (`target` % 5: 0 TP card, 1 envelope prefix,
//! 2 receipt, 3 opening, 4 affidavit); the rest of the evidence is the
//! fixture's. `flags`:
//!   bits 0-1  evidence given: 0 opening, 1 affidavit, 2 both, 3 neither
//!   bits 2-3  which fixture affidavit: 0/3 resolved, 1 invalid-envelope,
//!             2 unclaimed (when the affidavit is not the replaced piece)
//!   bits 4-5  message shown: 0 none, 1 the real one, 2 another
//!   bit 6     re-sign the replaced piece with its honest signer's key (the
//!             TP for cards and affidavits, Alice for the envelope header, Bob
//!             for the receipt), to reach the checks behind the signatures.
//!
//! Properties: judge never panics; `valid` implies the delivered message is
//! the original one (unless the sender herself re-signed a header with
//! another message commitment), that it was delivered via something, and
//! that the message shown (if any) is that one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtp_fuzz::{fixture, sign_with, RawSigned};
use vtp_protocol::affidavit::Affidavit;
use vtp_protocol::encoding::{self, domain, signing_digest, Kind};
use vtp_protocol::envelope::Envelope;
use vtp_protocol::evidence::judge;
use vtp_protocol::identity::test_sign;
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::{TpCard, TpCardBody};
use vtp_protocol::Digest32;

fuzz_target!(|data: &[u8]| {
    let [target, flags, file @ ..] = data else {
        return;
    };
    let fx = fixture();
    let resign = flags & 0x40 != 0;
    let mut tp = fx.tp.clone();
    let mut envelope = fx.envelope.clone();
    let mut receipt = fx.receipt.clone();
    let mut opening = fx.opening.clone();
    let mut affidavit = match (flags >> 2) & 3 {
        1 => fx.aff_invalid.clone(),
        2 => fx.aff_unclaimed.clone(),
        _ => fx.aff_resolved.clone(),
    };
    match target % 5 {
        0 => {
            tp = if resign {
                let Ok(raw) = encoding::decode::<RawSigned<TpCardBody>>(Kind::TpCard, file) else {
                    return;
                };
                let sig = sign_with(&fx.tp_sign, &raw.body.signing_digest());
                let Ok(c) = TpCard::assemble(raw.body, sig) else {
                    return;
                };
                c
            } else {
                let Ok(c) = TpCard::from_file(file) else {
                    return;
                };
                c
            }
        }
        1 => {
            let Ok(mut e) = Envelope::from_file_prefix(file) else {
                return;
            };
            if resign {
                e.signature = test_sign(&fx.alice, &signing_digest(domain::ENVELOPE, &e.header));
            }
            envelope = e;
        }
        2 => {
            let Ok(mut r) = Receipt::from_file(file) else {
                return;
            };
            if resign {
                r.signature = test_sign(&fx.bob, &signing_digest(domain::RECEIPT, &r.body));
            }
            receipt = r;
        }
        3 => {
            let Ok(o) = Opening::from_file(file) else {
                return;
            };
            opening = o;
        }
        _ => {
            let Ok(mut a) = Affidavit::from_file(file) else {
                return;
            };
            if resign {
                a.signature = sign_with(&fx.tp_sign, &a.body.signing_digest());
            }
            affidavit = a;
        }
    }
    let (use_opening, use_affidavit) = match flags & 3 {
        0 => (true, false),
        1 => (false, true),
        2 => (true, true),
        _ => (false, false),
    };
    let other = Digest32([0xAA; 32]);
    let shown = match (flags >> 4) & 3 {
        1 => Some(fx.message_sha256),
        2 => Some(other),
        _ => None,
    };
    let v = judge(
        &tp,
        &envelope,
        &receipt,
        use_opening.then_some(&opening),
        use_affidavit.then_some(&affidavit),
        shown,
    );
    if v.valid {
        assert!(v.delivered_via.is_some() && v.reason.is_none(), "{v:?}");
        let sha = v
            .message_sha256
            .clone()
            .expect("a valid verdict names the message");
        if let Some(s) = shown {
            assert_eq!(
                sha,
                s.to_hex(),
                "valid for a message other than the one shown"
            );
        }
        let sender_recommitted = target % 5 == 1
            && resign
            && envelope.header.message_commitment != fx.envelope.header.message_commitment;
        if !sender_recommitted {
            assert_eq!(
                sha,
                fx.message_sha256.to_hex(),
                "tampered evidence proves delivery of another message: {v:?}"
            );
        }
    } else {
        assert!(
            v.reason.is_some(),
            "an invalid verdict gives a reason: {v:?}"
        );
    }
});
