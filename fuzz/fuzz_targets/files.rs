//! Every file a party, the TP or a judge reads, from a hostile author.
//!
//! Input: `[kind, bytes...]`:
//!   0 secret identity, 1 identity card, 2 TP card, 3 envelope (file prefix:
//!   `file_prefix_len` on the head, then `from_file_prefix`), 4 receipt,
//!   5 opening, 6 affidavit, 7 the inside of z (what the TP parses after its
//!   token decrypted z: Alice chooses it), 8 a TP card body that the harness
//!   re-signs with the fixture TP key (reaches the RSA key and policy checks
//!   behind the self-signature; any bytes after the body are
//!   `deadline, now, min_time_left` for `check_deadline`), 9 an identity card
//!   body re-signed with Alice's key.
//!
//! Properties: no panic; decode → encode → decode gives the same value and
//! re-encoding is a fixed point (openings have one encoding: the input must be
//! it); what verifies against the fixture is what the fixture's parties
//! signed; a correctly self-signed card body always decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtp_fuzz::{check_roundtrip, file_of, fixture, sign_with, Bytes, RawSigned};
use vtp_protocol::affidavit::Affidavit;
use vtp_protocol::encoding::{domain, signing_digest, Kind};
use vtp_protocol::envelope::{self, Envelope, FILE_HEAD, MAX_ENVELOPE};
use vtp_protocol::identity::{test_sign, CardBody, IdentityCard, IdentitySecret};
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::seal::{Inside, MAX_INSIDE};
use vtp_protocol::tp_card::{TpCard, TpCardBody};
use vtp_protocol::{EcPoint, ProtocolError};

fn secret(data: &[u8]) {
    let Ok(id) = IdentitySecret::from_file(data) else {
        return;
    };
    let file = id.to_file();
    let again = IdentitySecret::from_file(&file).expect("re-encoded secret identity decodes");
    assert_eq!(again.card(), id.card());
    assert_eq!(*again.to_file(), *file);
    if vtp_fuzz::STRICT_CANONICAL {
        assert_eq!(
            file.as_slice(),
            data,
            "secret identity: non-canonical encoding accepted"
        );
    }
    // The card derived from any secret is self-consistent.
    let card = IdentityCard::from_file(&id.card().to_file()).expect("derived card decodes");
    assert_eq!(&card, id.card());
}

fn card(data: &[u8]) {
    if let Ok(c) = IdentityCard::from_file(data) {
        check_roundtrip(
            "identity card",
            data,
            &c,
            IdentityCard::to_file,
            IdentityCard::from_file,
            false,
        );
        let _ = (c.id(), c.name(), c.enc_key().compressed());
    }
}

fn tp_card(data: &[u8]) {
    if let Ok(c) = TpCard::from_file(data) {
        check_roundtrip(
            "TP card",
            data,
            &c,
            TpCard::to_file,
            TpCard::from_file,
            false,
        );
        use_tp_card(&c, &mut Bytes(&[]));
    }
}

fn use_tp_card(c: &TpCard, nums: &mut Bytes) {
    let k = c.current_key();
    assert!(k.public_key().is_ok(), "a decoded TP card holds a bad key");
    let _ = k.ciphertext_len();
    for k in &c.body().enc_keys {
        assert!((2048..=4096).contains(&k.bits()));
    }
    let (deadline, now, min_left) = (nums.u64(), nums.u64(), nums.u64());
    let _ = envelope::check_deadline(deadline, now, c, min_left);
}

fn envelope_file(data: &[u8]) {
    let whole = Envelope::from_file_prefix(data);
    match Envelope::file_prefix_len(data) {
        Ok(n) => {
            assert!((FILE_HEAD..=FILE_HEAD + MAX_ENVELOPE).contains(&n));
            if data.len() != n {
                assert!(
                    whole.is_err(),
                    "envelope prefix of the wrong length accepted"
                );
            }
            if data.len() >= n {
                let prefix = &data[..n];
                if let Ok(env) = Envelope::from_file_prefix(prefix) {
                    check_roundtrip(
                        "envelope",
                        prefix,
                        &env,
                        Envelope::to_file_prefix,
                        Envelope::from_file_prefix,
                        false,
                    );
                    check_envelope(&env);
                }
            }
        }
        Err(_) => assert!(whole.is_err(), "envelope accepted whose head is refused"),
    }
}

fn check_envelope(env: &Envelope) {
    let fx = fixture();
    let _ = env.envelope_id();
    let _ = env.verify_embedded();
    if let Ok(v) = env.verify(&fx.tp) {
        // Only Alice signed an envelope header (the fixture's).
        assert_eq!(v.header(), &fx.envelope.header);
        let _ = v.check_for_recipient(fx.bob.id(), std::slice::from_ref(&fx.tp), vtp_fuzz::NOW, 60);
    }
}

fn receipt(data: &[u8]) {
    if let Ok(r) = Receipt::from_file(data) {
        check_roundtrip(
            "receipt",
            data,
            &r,
            Receipt::to_file,
            Receipt::from_file,
            false,
        );
        let _ = r.hash();
        if r.verify(&fixture().venv).is_ok() {
            assert_eq!(
                r.body,
                fixture().receipt.body,
                "a receipt Bob never signed verifies"
            );
        }
    }
}

fn opening(data: &[u8]) {
    if let Ok(o) = Opening::from_file(data) {
        // All fixed-size fields: exactly one encoding.
        check_roundtrip(
            "opening",
            data,
            &o,
            Opening::to_file,
            Opening::from_file,
            true,
        );
        let fx = fixture();
        if let Ok(opened) = o.check(&fx.venv, fx.bob.card()) {
            assert_eq!(o, fx.opening, "a different opening opens the fixture's z");
            assert_eq!(opened.inside.message_sha256, fx.message_sha256);
        }
    }
}

fn affidavit(data: &[u8]) {
    if let Ok(a) = Affidavit::from_file(data) {
        check_roundtrip(
            "affidavit",
            data,
            &a,
            Affidavit::to_file,
            Affidavit::from_file,
            false,
        );
        let fx = fixture();
        let _ = a.body.kind();
        if a.verify(&fx.tp, &fx.venv).is_ok() {
            assert!(
                fx.affidavits().iter().any(|ok| ok.body == a.body),
                "an affidavit the TP never signed verifies"
            );
        }
    }
}

fn inside(data: &[u8]) {
    let Ok(i) = Inside::decode(data) else {
        return;
    };
    assert!(data.len() <= MAX_INSIDE);
    let enc = vtp_protocol::encoding::canonical(&i);
    assert_eq!(Inside::decode(&enc).as_ref(), Ok(&i));
    let _ = i.wrapped_km_hash();
    if fixture().venv.header().check_inside(0, &i).is_ok() {
        assert_eq!(i.message_sha256, fixture().message_sha256);
    }
}

fn resigned_tp_card(data: &[u8]) {
    let Ok((mut body, tail)) = postcard::take_from_bytes::<TpCardBody>(data) else {
        return;
    };
    let fx = fixture();
    body.sign_key = fx.tp.sign_key().clone();
    let signature = sign_with(&fx.tp_sign, &body.signing_digest());
    let file = file_of(
        Kind::TpCard,
        &RawSigned {
            body: body.clone(),
            signature,
        },
    );
    match TpCard::from_file(&file) {
        Ok(c) => {
            assert_eq!(c.body(), &body);
            check_roundtrip(
                "TP card",
                &file,
                &c,
                TpCard::to_file,
                TpCard::from_file,
                false,
            );
            use_tp_card(&c, &mut Bytes(tail));
        }
        Err(e) => assert!(
            matches!(e, ProtocolError::Malformed { .. }),
            "correctly signed TP card refused for another reason than its keys: {e}"
        ),
    }
}

fn resigned_card(data: &[u8]) {
    let Ok(mut body) = postcard::from_bytes::<CardBody>(data) else {
        return;
    };
    let fx = fixture();
    body.sign_key = fx.alice.card().sign_key().clone();
    let signature = test_sign(&fx.alice, &signing_digest(domain::IDENTITY_CARD, &body));
    let file = file_of(
        Kind::IdentityCard,
        &RawSigned {
            body: body.clone(),
            signature,
        },
    );
    let c = IdentityCard::from_file(&file).expect("a correctly self-signed card decodes");
    assert_eq!(c.body(), &body);
    check_roundtrip(
        "identity card",
        &file,
        &c,
        IdentityCard::to_file,
        IdentityCard::from_file,
        true,
    );
    let _: EcPoint = c.enc_key().clone();
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind {
        0 => secret(rest),
        1 => card(rest),
        2 => tp_card(rest),
        3 => envelope_file(rest),
        4 => receipt(rest),
        5 => opening(rest),
        6 => affidavit(rest),
        7 => inside(rest),
        8 => resigned_tp_card(rest),
        9 => resigned_card(rest),
        _ => {}
    }
});
