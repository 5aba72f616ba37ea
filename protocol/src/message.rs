//! The message body `c_m`: AES-256-GCM in the STREAM construction (aead's
//! `StreamBE32`), 64 KiB chunks, last chunk flagged. Callers stream files
//! through it chunk by chunk, so memory stays bounded for any message size,
//! and truncation, reordering or extension of chunks is detected.

use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::KeyInit;
use aes_gcm::Aes256Gcm;

use crate::ProtocolError;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
/// AEAD tag per chunk.
pub const TAG: usize = 16;

/// Number of chunks and length of the last plaintext chunk. A message has at
/// least one chunk (an empty message is one empty last chunk).
fn layout(plain_len: u64) -> (u64, usize) {
    let n = plain_len.div_ceil(CHUNK as u64).max(1);
    let last = plain_len - (n - 1) * CHUNK as u64;
    (n, last as usize)
}

/// Ciphertext length for a plaintext length.
pub fn sealed_len(plain_len: u64) -> u64 {
    let (n, _) = layout(plain_len);
    plain_len + n * TAG as u64
}

/// Plaintext length for a ciphertext length, if it is a possible one.
pub fn plain_len(sealed_len: u64) -> Result<u64, ProtocolError> {
    let full = (CHUNK + TAG) as u64;
    let n = sealed_len.div_ceil(full).max(1);
    let impossible = || ProtocolError::malformed("message ciphertext", "impossible length");
    let last = sealed_len
        .checked_sub((n - 1) * full)
        .filter(|l| *l >= TAG as u64)
        .ok_or_else(impossible)?;
    let plain = (n - 1) * CHUNK as u64 + last - TAG as u64;
    // Only lengths some plaintext seals to: `k` full chunks followed by a bare
    // tag would otherwise pass as `k` chunks and leave the tag unread (found
    // by the `message_opener` fuzz target).
    if self::sealed_len(plain) != sealed_len {
        return Err(impossible());
    }
    Ok(plain)
}

/// Encrypts a message of known length chunk by chunk.
pub struct MessageSealer {
    enc: Option<EncryptorBE32<Aes256Gcm>>,
    remaining_chunks: u64,
    last_len: usize,
}

impl MessageSealer {
    pub fn new(km: &[u8; 32], plain_len: u64) -> Self {
        let (n, last_len) = layout(plain_len);
        let aead = Aes256Gcm::new(km.into());
        MessageSealer {
            enc: Some(EncryptorBE32::from_aead(aead, &[0u8; 7].into())),
            remaining_chunks: n,
            last_len,
        }
    }
    /// How many plaintext bytes the next call to [`Self::seal_chunk`] takes;
    /// `None` when done.
    pub fn next_len(&self) -> Option<usize> {
        match self.remaining_chunks {
            0 => None,
            1 => Some(self.last_len),
            _ => Some(CHUNK),
        }
    }
    pub fn seal_chunk(&mut self, plain: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let want = self
            .next_len()
            .ok_or_else(|| ProtocolError::malformed("message", "longer than announced"))?;
        if plain.len() != want {
            return Err(ProtocolError::malformed(
                "message",
                "length changed while it was being read",
            ));
        }
        self.remaining_chunks -= 1;
        let r = if self.remaining_chunks == 0 {
            self.enc
                .take()
                .expect("present until last")
                .encrypt_last(plain)
        } else {
            self.enc
                .as_mut()
                .expect("present until last")
                .encrypt_next(plain)
        };
        r.map_err(|_| ProtocolError::malformed("message", "cannot encrypt chunk"))
    }
}

/// Decrypts `c_m` of known length chunk by chunk; each chunk is authenticated
/// before it is returned, the last one also proves nothing was cut off.
pub struct MessageOpener {
    dec: Option<DecryptorBE32<Aes256Gcm>>,
    remaining_chunks: u64,
    last_len: usize,
}

impl MessageOpener {
    pub fn new(km: &[u8; 32], sealed_len: u64) -> Result<Self, ProtocolError> {
        let plain = plain_len(sealed_len)?;
        let (n, last_len) = layout(plain);
        let aead = Aes256Gcm::new(km.into());
        Ok(MessageOpener {
            dec: Some(DecryptorBE32::from_aead(aead, &[0u8; 7].into())),
            remaining_chunks: n,
            last_len: last_len + TAG,
        })
    }
    /// Ciphertext bytes the next call to [`Self::open_chunk`] takes.
    pub fn next_len(&self) -> Option<usize> {
        match self.remaining_chunks {
            0 => None,
            1 => Some(self.last_len),
            _ => Some(CHUNK + TAG),
        }
    }
    pub fn open_chunk(&mut self, sealed: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let want = self.next_len().ok_or(ProtocolError::DoesNotDecrypt)?;
        if sealed.len() != want {
            return Err(ProtocolError::DoesNotDecrypt);
        }
        self.remaining_chunks -= 1;
        let r = if self.remaining_chunks == 0 {
            self.dec
                .take()
                .expect("present until last")
                .decrypt_last(sealed)
        } else {
            self.dec
                .as_mut()
                .expect("present until last")
                .decrypt_next(sealed)
        };
        r.map_err(|_| ProtocolError::DoesNotDecrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(len: usize) {
        let km = [7u8; 32];
        let msg: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut s = MessageSealer::new(&km, len as u64);
        let mut ct = Vec::new();
        let mut off = 0;
        while let Some(n) = s.next_len() {
            ct.extend(s.seal_chunk(&msg[off..off + n]).unwrap());
            off += n;
        }
        assert_eq!(ct.len() as u64, sealed_len(len as u64));
        assert_eq!(plain_len(ct.len() as u64).unwrap(), len as u64);
        let mut o = MessageOpener::new(&km, ct.len() as u64).unwrap();
        let mut pt = Vec::new();
        let mut off = 0;
        while let Some(n) = o.next_len() {
            pt.extend(o.open_chunk(&ct[off..off + n]).unwrap());
            off += n;
        }
        assert_eq!(pt, msg);
    }

    #[test]
    fn roundtrips_at_chunk_boundaries() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 5] {
            roundtrip(len);
        }
    }

    #[test]
    fn only_lengths_that_some_message_seals_to_are_accepted() {
        for len in [
            0u64,
            1,
            100,
            CHUNK as u64,
            CHUNK as u64 + 1,
            3 * CHUNK as u64,
        ] {
            assert_eq!(plain_len(sealed_len(len)).unwrap(), len);
        }
        // k full chunks plus a stray tag's worth of bytes.
        for k in 1..4u64 {
            assert!(plain_len(k * (CHUNK + TAG) as u64 + TAG as u64).is_err());
        }
        assert!(plain_len(TAG as u64 - 1).is_err());
    }

    #[test]
    fn truncation_is_detected() {
        let km = [1u8; 32];
        let len = 2 * CHUNK;
        let msg = vec![0u8; len];
        let mut s = MessageSealer::new(&km, len as u64);
        let a = s.seal_chunk(&msg[..CHUNK]).unwrap();
        // Present the first (non-last) chunk as if it were the whole message.
        let mut o = MessageOpener::new(&km, a.len() as u64).unwrap();
        assert_eq!(o.open_chunk(&a), Err(ProtocolError::DoesNotDecrypt));
    }
}
