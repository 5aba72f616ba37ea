//! A hostile client's byte stream, split into frames the way `tp-daemon`
//! does (tokio-util's `LengthDelimitedCodec`: 4-byte big-endian length,
//! `max_frame_length` = the daemon's `limits.max_frame_bytes`), delivered in
//! reads of fuzzer-chosen sizes; each frame goes to `decode_request`.
//!
//! Input: `[limit, read_size, stream...]`. `limit` 0 is the default
//! (`DEFAULT_MAX_FRAME`), otherwise `limit * 16` bytes, so short inputs reach
//! the too-long path; `read_size` is the size of each read (1..=256).
//!
//! Properties: no panic; frames come out exactly as a plain reference
//! splitter cuts the stream; no frame exceeds the limit; an announced length
//! over the limit is an error (the daemon closes the connection) and nothing
//! after it is decoded; a decoded request round-trips.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::length_delimited::LengthDelimitedCodecError;
use tokio_util::codec::{Decoder, LengthDelimitedCodec};
use vtp_fuzz::{check_roundtrip, Bytes};
use vtp_protocol::wire::{decode_request, encode_request, DEFAULT_MAX_FRAME};

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    // Same builder calls as tp-daemon/src/server.rs `codec`.
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame)
        .new_codec()
}

/// What the stream should yield: complete frames, then whether it ends in an
/// over-long length (fatal).
fn reference(stream: &[u8], max: usize) -> (Vec<&[u8]>, bool) {
    let mut frames = Vec::new();
    let mut rest = stream;
    while rest.len() >= 4 {
        let n = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        if n > max {
            return (frames, true);
        }
        if rest.len() - 4 < n {
            break;
        }
        frames.push(&rest[4..4 + n]);
        rest = &rest[4 + n..];
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let max = match b.u8() {
        0 => DEFAULT_MAX_FRAME,
        n => n as usize * 16,
    };
    let read = 1 + b.u8() as usize;
    let stream = b.rest();
    let (expect, expect_fatal) = reference(stream, max);

    let mut codec = codec(max);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut fatal = false;
    'reads: for chunk in stream.chunks(read) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(
                        frame.len() <= max,
                        "frame of {} bytes over limit {max}",
                        frame.len()
                    );
                    if let Ok(req) = decode_request(&frame) {
                        check_roundtrip(
                            "request",
                            &frame,
                            &req,
                            encode_request,
                            decode_request,
                            false,
                        );
                    }
                    got.push(frame.freeze());
                }
                Ok(None) => break,
                Err(e) => {
                    let too_long = e
                        .get_ref()
                        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>());
                    assert!(too_long, "unexpected frame error: {e}");
                    fatal = true;
                    break 'reads;
                }
            }
        }
    }
    if !fatal {
        // End of stream: a partial frame is an error, never a panic.
        while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
            got.push(frame.freeze());
        }
    }
    assert_eq!(
        fatal, expect_fatal,
        "over-long frame detection differs from the reference"
    );
    assert_eq!(
        got.len(),
        expect.len(),
        "frame count differs from the reference"
    );
    for (g, e) in got.iter().zip(&expect) {
        assert_eq!(&g[..], *e);
    }
});
