//! Messages of any size in bounded memory.
//!
//! An envelope file is `Envelope::to_file_prefix()` followed by `c_m`, the
//! message encrypted in 64 KiB chunks ([`vtp_protocol::message`]). Nothing here
//! ever holds more than one chunk of a message: a 1 GiB message is encrypted,
//! checked and decrypted with a few hundred KiB of memory.
//!
//! Sending needs two passes over the message, because the envelope prefix
//! (written first) signs `H(c_m)` and commits to `SHA-256(m)`: pass 1 encrypts
//! and hashes, discarding the ciphertext; pass 2 encrypts again, writes, and
//! hashes again so a message file that changed between the passes is caught
//! instead of producing an envelope whose body does not match its header.
//!
//! Decrypting writes the plaintext to a temporary file and moves it into place
//! only if every chunk authenticated, `c_m` hashes to the signed value, and the
//! plaintext's SHA-256 is the one the sender committed to.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use sha2::{Digest, Sha256};
use vtp_protocol::encoding::{self, CmHasher, Kind};
use vtp_protocol::envelope::{Envelope, EnvelopeHeader, PreparedEnvelope, FILE_HEAD};
use vtp_protocol::evidence::{Ciphertext, CiphertextReading};
use vtp_protocol::identity::IdentitySecret;
use vtp_protocol::message::{MessageOpener, MessageSealer, CHUNK, TAG};
use vtp_protocol::Digest32;
use zeroize::Zeroizing;

use crate::files::{
    input_error, io_error, is_stdio, open_seekable, open_stream, require_regular_file, spool_stdin,
    AtomicFile, WriteMode,
};

/// What the envelope header needs to know about an encrypted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealDigests {
    pub cm_hash: Digest32,
    pub cm_len: u64,
    pub message_sha256: Digest32,
}

fn read_error(path: &Path, e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io_error(path, "the file got shorter while it was being read")
    } else {
        io_error(path, format!("cannot read: {e}"))
    }
}

/// One encryption pass over exactly `plain_len` bytes of `input`, hashing the
/// plaintext and the ciphertext, writing the ciphertext to `out` if given.
pub fn seal_pass(
    km: &[u8; 32],
    input: &mut impl Read,
    in_path: &Path,
    plain_len: u64,
    mut out: Option<&mut dyn Write>,
    out_path: &Path,
) -> Result<SealDigests> {
    let mut sealer = MessageSealer::new(km, plain_len);
    let mut sha = Sha256::new();
    let mut cm = CmHasher::default();
    let mut cm_len = 0u64;
    let mut buf = Zeroizing::new(vec![0u8; CHUNK]);
    while let Some(n) = sealer.next_len() {
        let chunk = &mut buf[..n];
        input
            .read_exact(chunk)
            .map_err(|e| read_error(in_path, e))?;
        sha.update(&*chunk);
        let sealed = sealer.seal_chunk(chunk).map_err(|e| io_error(in_path, e))?;
        cm.update(&sealed);
        cm_len += sealed.len() as u64;
        if let Some(w) = out.as_mut() {
            w.write_all(&sealed)
                .map_err(|e| io_error(out_path, format!("cannot write: {e}")))?;
        }
    }
    let mut one = [0u8; 1];
    if input.read(&mut one).map_err(|e| read_error(in_path, e))? != 0 {
        return Err(io_error(
            in_path,
            "the file got longer while it was being read",
        ));
    }
    Ok(SealDigests {
        cm_hash: cm.finish(),
        cm_len,
        message_sha256: Digest32(sha.finalize().into()),
    })
}

/// A1 on files: encrypt `input` into a new envelope file at `out`.
///
/// `prep` comes from `envelope::prepare`; the finished envelope is returned.
pub fn seal_envelope_file(
    prep: PreparedEnvelope,
    sender: &IdentitySecret,
    input: &Path,
    out: &Path,
    mode: WriteMode,
) -> Result<Envelope> {
    let mut file = if is_stdio(input) {
        spool_stdin()?
    } else {
        require_regular_file(input)?;
        File::open(input).map_err(|e| io_error(input, format!("cannot open: {e}")))?
    };
    let plain_len = file
        .metadata()
        .map_err(|e| io_error(input, format!("cannot read: {e}")))?
        .len();
    let km = Zeroizing::new(*prep.message_key());

    let first = seal_pass(&km, &mut file, input, plain_len, None, out)?;
    let env = prep
        .finish(sender, first.cm_hash, first.cm_len, first.message_sha256)
        .map_err(|e| anyhow!("cannot make the envelope: {e}"))?;

    let mut dest = AtomicFile::create_vtp(out, mode)?;
    dest.write_all(&env.to_file_prefix())
        .map_err(|e| io_error(out, format!("cannot write: {e}")))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| read_error(input, e))?;
    let mut w = io::BufWriter::with_capacity(CHUNK + TAG, &mut dest);
    let second = seal_pass(&km, &mut file, input, plain_len, Some(&mut w), out)?;
    w.flush()
        .map_err(|e| io_error(out, format!("cannot write: {e}")))?;
    drop(w);
    if second != first {
        return Err(io_error(
            input,
            "the file changed while it was being encrypted; nothing was written, try again",
        ));
    }
    dest.commit()?;
    Ok(env)
}

/// Why decryption failed. The first two say something about the sender's
/// envelope (or the key used), the last about files and disks.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    #[error("the message does not decrypt with this key (chunk {chunk} fails authentication)")]
    BadKey { chunk: u64 },
    #[error("the decrypted message has SHA-256 {got}, but the sender committed to {expected}")]
    WrongMessage { got: Digest32, expected: Digest32 },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// An envelope file: the parsed envelope, and the file positioned at `c_m`.
pub struct EnvelopeFile {
    pub envelope: Envelope,
    path: PathBuf,
    file: File,
    prefix_len: u64,
}

impl EnvelopeFile {
    /// Read and parse the prefix; check the body has the signed length.
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_file(open_seekable(path)?, path)
    }

    /// [`Self::open`] of a file already open (at any position), named `path`.
    pub fn from_file(mut file: File, path: &Path) -> Result<Self> {
        file.seek(SeekFrom::Start(0))
            .map_err(|e| read_error(path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| io_error(path, format!("cannot read: {e}")))?
            .len();
        let mut head = Vec::with_capacity(FILE_HEAD);
        (&mut file)
            .take(FILE_HEAD as u64)
            .read_to_end(&mut head)
            .map_err(|e| read_error(path, e))?;
        if head.len() < FILE_HEAD {
            // Name the kind if it is another vtp file, else "too short".
            encoding::check_prefix(Kind::Envelope, &head).map_err(|e| input_error(path, e))?;
        }
        let prefix_len = Envelope::file_prefix_len(&head).map_err(|e| input_error(path, e))?;
        let mut prefix = head;
        prefix.resize(prefix_len, 0);
        file.read_exact(&mut prefix[FILE_HEAD..]).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                input_error(path, "truncated envelope (the file ends early)")
            } else {
                read_error(path, e)
            }
        })?;
        let envelope = Envelope::from_file_prefix(&prefix).map_err(|e| input_error(path, e))?;
        let body_len = file_len - prefix_len as u64;
        if body_len != envelope.header.cm_len {
            return Err(input_error(
                path,
                format!(
                    "the message ciphertext is {body_len} bytes but the signed header says {} (truncated or altered file)",
                    envelope.header.cm_len
                ),
            ));
        }
        Ok(EnvelopeFile {
            envelope,
            path: path.to_path_buf(),
            file,
            prefix_len: prefix_len as u64,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rewind_body(&mut self) -> Result<()> {
        self.file
            .seek(SeekFrom::Start(self.prefix_len))
            .map(|_| ())
            .map_err(|e| read_error(&self.path, e))
    }

    fn cm_mismatch(&self) -> anyhow::Error {
        crate::error::invalid(format!(
            "{}: {}",
            crate::files::shown(&self.path),
            "the message ciphertext does not hash to the value in the signed header: the file was altered",
        ))
    }

    /// `c_m` in memory (for envelopes whose header bounds it to a few KiB,
    /// such as a contract signature's).
    pub fn read_cm(&mut self) -> Result<Vec<u8>> {
        self.rewind_body()?;
        let mut cm = Vec::new();
        (&mut self.file)
            .take(self.envelope.header.cm_len)
            .read_to_end(&mut cm)
            .map_err(|e| read_error(&self.path, e))?;
        Ok(cm)
    }

    /// Stream `c_m` and check its length and `H(c_m)` against the header.
    pub fn check_cm(&mut self) -> Result<()> {
        self.rewind_body()?;
        let mut h = CmHasher::default();
        let mut n = 0u64;
        let mut buf = vec![0u8; CHUNK + TAG];
        loop {
            let k = self
                .file
                .read(&mut buf)
                .map_err(|e| read_error(&self.path, e))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        if n != self.envelope.header.cm_len || h.finish() != self.envelope.header.cm_hash {
            return Err(self.cm_mismatch());
        }
        Ok(())
    }

    /// Decrypt `c_m` with `km`, writing the plaintext to `out` if given;
    /// checks every chunk and `H(c_m)`, returns the plaintext's SHA-256.
    fn decrypt_stream(
        &mut self,
        km: &[u8; 32],
        mut out: Option<(&mut dyn Write, &Path)>,
    ) -> Result<Digest32, DecryptError> {
        self.rewind_body()?;
        let mut opener = MessageOpener::new(km, self.envelope.header.cm_len)
            .map_err(|e| input_error(&self.path, e))?;
        let mut sha = Sha256::new();
        let mut cm = CmHasher::default();
        let mut buf = vec![0u8; CHUNK + TAG];
        let mut chunk = 0u64;
        while let Some(n) = opener.next_len() {
            let sealed = &mut buf[..n];
            self.file
                .read_exact(sealed)
                .map_err(|e| read_error(&self.path, e))?;
            cm.update(sealed);
            let plain = Zeroizing::new(
                opener
                    .open_chunk(sealed)
                    .map_err(|_| DecryptError::BadKey { chunk })?,
            );
            sha.update(&*plain);
            if let Some((w, path)) = out.as_mut() {
                w.write_all(&plain)
                    .map_err(|e| io_error(path, format!("cannot write: {e}")))?;
            }
            chunk += 1;
        }
        if cm.finish() != self.envelope.header.cm_hash {
            return Err(self.cm_mismatch().into());
        }
        Ok(Digest32(sha.finalize().into()))
    }

    /// Decrypt `c_m` with `km` into `out`, moving it into place only if every
    /// chunk authenticates, `H(c_m)` matches the header and the plaintext's
    /// SHA-256 is `expected_sha256`; otherwise the partial output is deleted.
    pub fn decrypt_to(
        &mut self,
        km: &[u8; 32],
        expected_sha256: Digest32,
        out: &Path,
        mode: WriteMode,
    ) -> Result<(), DecryptError> {
        let mut dest = AtomicFile::create(out, mode)?;
        let mut w = io::BufWriter::with_capacity(CHUNK, &mut dest);
        let got = self.decrypt_stream(km, Some((&mut w, out)))?;
        w.flush()
            .map_err(|e| io_error(out, format!("cannot write: {e}")))?;
        drop(w);
        if got != expected_sha256 {
            return Err(DecryptError::WrongMessage {
                got,
                expected: expected_sha256,
            });
        }
        dest.commit()?;
        Ok(())
    }

    /// Decrypt `c_m` with `km` only to check it: SHA-256 of the plaintext
    /// (the judge's check that an opening's key really yields the message).
    pub fn decrypt_sha256(&mut self, km: &[u8; 32]) -> Result<Digest32, DecryptError> {
        self.decrypt_stream(km, None)
    }
}

/// The envelope file's `c_m` as the judge reads it when it weighs void
/// evidence: streamed, checked against the signed header once.
pub struct FileCiphertext<'a> {
    file: &'a mut EnvelopeFile,
    checked: Option<Result<(), String>>,
}

impl<'a> FileCiphertext<'a> {
    pub fn new(file: &'a mut EnvelopeFile) -> Self {
        FileCiphertext {
            file,
            checked: None,
        }
    }
}

impl Ciphertext for FileCiphertext<'_> {
    fn read_under(&mut self, km: &[u8; 32], header: &EnvelopeHeader) -> CiphertextReading {
        if *header != self.file.envelope.header {
            return CiphertextReading::Unusable(format!(
                "{}: not the envelope weighed",
                self.file.path.display()
            ));
        }
        let file = &mut *self.file;
        let checked = self
            .checked
            .get_or_insert_with(|| file.check_cm().map_err(|e| format!("{e:#}")));
        if let Err(why) = checked {
            return CiphertextReading::Unusable(why.clone());
        }
        match self.file.decrypt_sha256(km) {
            Ok(sha) => CiphertextReading::Plaintext(sha),
            Err(DecryptError::BadKey { chunk }) => CiphertextReading::DoesNotDecrypt { chunk },
            Err(e) => CiphertextReading::Unusable(format!("{e:#}")),
        }
    }
}

/// SHA-256 of a file, streamed (for `vtp verify --message`).
pub fn sha256_file(path: &Path) -> Result<Digest32> {
    let mut f = open_stream(path)?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let k = f.read(&mut buf).map_err(|e| read_error(path, e))?;
        if k == 0 {
            break;
        }
        sha.update(&buf[..k]);
    }
    Ok(Digest32(sha.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_pass_detects_length_changes() {
        let km = [3u8; 32];
        let p = Path::new("m");
        let data = vec![5u8; CHUNK + 10];
        let ok = seal_pass(&km, &mut &data[..], p, data.len() as u64, None, p).unwrap();
        assert_eq!(
            ok.cm_len,
            vtp_protocol::message::sealed_len(data.len() as u64)
        );
        let e = seal_pass(&km, &mut &data[..], p, data.len() as u64 - 1, None, p).unwrap_err();
        assert!(e.to_string().contains("longer"), "{e}");
        let e = seal_pass(&km, &mut &data[..], p, data.len() as u64 + 1, None, p).unwrap_err();
        assert!(e.to_string().contains("shorter"), "{e}");
    }
}
