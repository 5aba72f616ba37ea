//! ASCII armor: every vtp file kind as text that survives e-mail.
//!
//! ```text
//! -----BEGIN VTP ENVELOPE-----
//! VlRQBAE...   (base64, 64 characters a line)
//! -----END VTP ENVELOPE-----
//! ```
//!
//! The label is `VTP ` and the file kind's name in capitals (`VTP RECEIPT`,
//! `VTP TP CARD`, `VTP CONTRACT BUNDLE`, ...), the body the binary file as
//! is (RFC 7468 textual encoding). `--armor` writes it; every command reads
//! armored or binary input without being told, by the leading
//! `-----BEGIN VTP `, and refuses armor whose label is not the kind of the
//! file inside.
//!
//! Small files are encoded and decoded whole with `pem-rfc7468`. Envelopes,
//! which can be gigabytes, stream: [`ArmorWriter`] encodes 48-byte groups
//! into 64-character lines as the envelope is written, and [`dearmor_to`]
//! decodes line by line into a private temporary file (memory bounded; the
//! decoder accepts lines rewrapped to any length). The base64 itself is
//! `base64ct`'s (constant-time, strict).

use std::io::{self, BufRead, Write};

use base64ct::{Base64, Encoding};
use vtp_protocol::encoding::{Kind, PREFIX_LEN};

/// What every armored vtp file starts with.
pub const ARMOR_START: &[u8] = b"-----BEGIN VTP ";
/// Bytes per armored line (48 bytes of data).
const LINE_CHARS: usize = 64;
const LINE_BYTES: usize = 48;

/// Whether `head` (the first bytes of a file) is armor.
pub fn is_armored(head: &[u8]) -> bool {
    head.starts_with(ARMOR_START)
}

/// The armor label of a file kind.
pub fn label(kind: Kind) -> String {
    format!("VTP {}", kind.name().to_ascii_uppercase())
}

/// The armor label of a binary vtp file (by its kind byte).
fn label_of(bytes: &[u8]) -> Option<String> {
    let k = *bytes.get(3)?;
    if bytes.len() < PREFIX_LEN || &bytes[..3] != b"VTP" {
        return None;
    }
    Kind::from_byte(k).map(label)
}

/// Armor a small binary vtp file.
pub fn armor(bytes: &[u8]) -> Result<String, String> {
    let label = label_of(bytes).ok_or("not a vtp file")?;
    pem_rfc7468::encode_string(&label, pem_rfc7468::LineEnding::LF, bytes)
        .map_err(|e| format!("cannot armor: {e}"))
}

/// The binary file inside armor, checked: the label names the kind inside.
pub fn dearmor(text: &[u8]) -> Result<Vec<u8>, String> {
    let (label, bytes) =
        pem_rfc7468::decode_vec(text).map_err(|e| format!("malformed armor ({e})"))?;
    check_label(label, &bytes)?;
    Ok(bytes)
}

fn check_label(label: &str, bytes: &[u8]) -> Result<(), String> {
    match label_of(bytes) {
        Some(l) if l == label => Ok(()),
        Some(l) => Err(format!(
            "the armor says {label} but holds {}",
            l.trim_start_matches("VTP ").to_lowercase()
        )),
        None => Err(format!("the armor ({label}) holds no vtp file")),
    }
}

/// Streams a binary vtp file out as armor: write the file's bytes, then
/// [`ArmorWriter::finish`].
pub struct ArmorWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
    label: Option<String>,
}

impl<W: Write> ArmorWriter<W> {
    pub fn new(inner: W) -> Self {
        ArmorWriter {
            inner,
            pending: Vec::with_capacity(LINE_BYTES * 2),
            label: None,
        }
    }

    fn line(&mut self, data: &[u8]) -> io::Result<()> {
        let mut buf = [0u8; LINE_CHARS];
        let s =
            Base64::encode(data, &mut buf).map_err(|e| io::Error::other(format!("armor: {e}")))?;
        self.inner.write_all(s.as_bytes())?;
        self.inner.write_all(b"\n")
    }

    /// The last line and the END line; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let label = self
            .label
            .clone()
            .ok_or_else(|| io::Error::other("armor: nothing was written"))?;
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.line(&rest)?;
        }
        writeln!(self.inner, "-----END {label}-----")?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ArmorWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.label.is_none() {
            if self.pending.len() < PREFIX_LEN {
                return Ok(buf.len());
            }
            let label =
                label_of(&self.pending).ok_or_else(|| io::Error::other("armor: not a vtp file"))?;
            writeln!(self.inner, "-----BEGIN {label}-----")?;
            self.label = Some(label);
        }
        let full = self.pending.len() / LINE_BYTES * LINE_BYTES;
        let mut at = 0;
        while at < full {
            let chunk: [u8; LINE_BYTES] = self.pending[at..at + LINE_BYTES]
                .try_into()
                .expect("a full line");
            self.line(&chunk)?;
            at += LINE_BYTES;
        }
        self.pending.drain(..full);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decode armor from `input` into `out`, line by line (lines of any length
/// that add up to whole base64 groups); checks the BEGIN and END labels
/// agree and name the kind of the file inside.
pub fn dearmor_to(input: &mut impl BufRead, out: &mut impl Write) -> Result<u64, String> {
    let mut line = String::new();
    let read = |input: &mut dyn BufRead, line: &mut String| -> Result<usize, String> {
        line.clear();
        input
            .read_line(line)
            .map_err(|e| format!("cannot read: {e}"))
    };
    read(input, &mut line)?;
    let begin = line.trim_end();
    let label = begin
        .strip_prefix("-----BEGIN ")
        .and_then(|l| l.strip_suffix("-----"))
        .ok_or("malformed armor (no BEGIN line)")?
        .to_string();
    let mut carry = String::new();
    let mut head: Vec<u8> = Vec::new();
    let mut written = 0u64;
    let mut buf = vec![0u8; 3 * 1024];
    loop {
        if read(input, &mut line)? == 0 {
            return Err(format!("truncated armor (no END line for {label})"));
        }
        let l = line.trim();
        if let Some(end) = l.strip_prefix("-----END ") {
            if end.strip_suffix("-----") != Some(label.as_str()) {
                return Err(format!("malformed armor (BEGIN {label} ends with {l})"));
            }
            break;
        }
        carry.push_str(l);
        let whole = if carry.ends_with('=') {
            carry.len()
        } else {
            carry.len() / 4 * 4
        };
        let mut at = 0;
        while at < whole {
            // 4096 characters decode to at most 3072 bytes.
            let end = (at + 4096).min(whole);
            let bytes = Base64::decode(&carry[at..end], &mut buf)
                .map_err(|e| format!("malformed armor ({e})"))?;
            if head.len() < PREFIX_LEN {
                head.extend_from_slice(&bytes[..bytes.len().min(PREFIX_LEN - head.len())]);
            }
            out.write_all(bytes)
                .map_err(|e| format!("cannot write the decoded file: {e}"))?;
            written += bytes.len() as u64;
            at = end;
        }
        carry.drain(..whole);
    }
    if !carry.is_empty() {
        return Err("malformed armor (base64 that does not end on a whole group)".into());
    }
    check_label(&label, &head)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(kind: Kind, len: usize) -> Vec<u8> {
        let mut v = b"VTP".to_vec();
        v.push(kind as u8);
        v.push(1);
        v.extend((0..len).map(|i| (i * 7 % 251) as u8));
        v
    }

    #[test]
    fn small_files_round_trip_and_labels_are_checked() {
        let r = fake(Kind::Receipt, 300);
        let a = armor(&r).unwrap();
        assert!(a.starts_with("-----BEGIN VTP RECEIPT-----\n"), "{a}");
        assert!(a.lines().all(|l| l.len() <= 64));
        assert_eq!(dearmor(a.as_bytes()).unwrap(), r);
        let lying = a.replace("VTP RECEIPT", "VTP OPENING");
        assert!(dearmor(lying.as_bytes())
            .unwrap_err()
            .contains("holds receipt"));
        assert_eq!(label(Kind::Affidavit), "VTP TP AFFIDAVIT");
    }

    #[test]
    fn envelopes_stream_and_rewrapped_lines_decode() {
        for len in [0, 1, 43, 44, 100, 100_000] {
            let e = fake(Kind::Envelope, len);
            let mut w = ArmorWriter::new(Vec::new());
            for piece in e.chunks(1000) {
                w.write_all(piece).unwrap();
            }
            let text = w.finish().unwrap();
            assert_eq!(
                text,
                armor(&e).unwrap().into_bytes(),
                "same as pem-rfc7468's"
            );
            let mut out = Vec::new();
            dearmor_to(&mut &text[..], &mut out).unwrap();
            assert_eq!(out, e);
            // A mail client rewrapped it to 76 columns, with CRLF.
            let s = String::from_utf8(text).unwrap();
            let body: String = s.lines().filter(|l| !l.starts_with("-----")).collect();
            let mut rewrapped = String::from("-----BEGIN VTP ENVELOPE-----\r\n");
            for c in body.as_bytes().chunks(76) {
                rewrapped.push_str(std::str::from_utf8(c).unwrap());
                rewrapped.push_str("\r\n");
            }
            rewrapped.push_str("-----END VTP ENVELOPE-----\r\n");
            let mut out = Vec::new();
            dearmor_to(&mut rewrapped.as_bytes(), &mut out).unwrap();
            assert_eq!(out, e);
        }
        let cut = armor(&fake(Kind::Envelope, 500)).unwrap();
        let cut = &cut[..cut.len() - 30];
        assert!(dearmor_to(&mut cut.as_bytes(), &mut Vec::new())
            .unwrap_err()
            .contains("truncated armor"));
    }
}
