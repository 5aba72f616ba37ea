//! RFC 9474 blind RSA signatures, RSABSSA-SHA384-PSS-Randomized: the client
//! side (blind, finalize) through the `blind-rsa-signatures` crate, coin
//! verification, and the arithmetic checks the bank's device makes around
//! its raw RSA operation (`s = m^d mod n`, `C_Sign(CKM_RSA_X_509)`).
//!
//! The randomized variant prefixes the message with 32 random bytes (the
//! *message randomizer*) that travel with the coin; the signature is then a
//! standard RSASSA-PSS signature (SHA-384, MGF1-SHA-384, 48-byte salt) over
//! `randomizer || message`, which any RSASSA-PSS verifier accepts.
//!
//! The crate takes `rand_core` 0.10 generators; this crate's callers pass
//! `rand_core` 0.6 ones (as everywhere else in vtp), bridged by
//! [`Rng10`]. No randomness is drawn here on its own.

use blind_rsa_signatures::reexports::rsa as rsa10;
use blind_rsa_signatures::{BlindingResult, MessageRandomizer, PublicKeySha384PSSRandomized};
use rand_core::{CryptoRng, RngCore};
/// The big integers of the checks (for the device).
pub use rsa::BigUint;

use crate::ProtocolError;

/// Salt length of the PSS encoding (the SHA-384 output length).
pub const PSS_SALT_LEN: usize = 48;
/// Length of the message randomizer.
pub const RANDOMIZER_LEN: usize = 32;
/// Modulus sizes a brand key may have.
pub const BRAND_KEY_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// A brand's RSA public key, checked: 2048 to 4096 bits, exponent 65537.
#[derive(Clone, Debug)]
pub struct BrandKey {
    key: PublicKeySha384PSSRandomized,
    n: BigUint,
    e: BigUint,
    /// Modulus length in bytes.
    k: usize,
}

impl BrandKey {
    pub fn new(modulus: &[u8], exponent: &[u8]) -> Result<Self, ProtocolError> {
        let bad = |d: &str| ProtocolError::malformed("brand key", d);
        let lead = modulus.iter().take_while(|b| **b == 0).count();
        let modulus = &modulus[lead..];
        let n = BigUint::from_bytes_be(modulus);
        let e = BigUint::from_bytes_be(exponent);
        let bits = n.bits();
        if !BRAND_KEY_BITS.contains(&bits) {
            return Err(bad("the modulus must have 2048 to 4096 bits"));
        }
        if e != BigUint::from(65537u32) {
            return Err(bad("the public exponent must be 65537"));
        }
        if modulus.last().is_some_and(|b| b & 1 == 0) {
            return Err(bad("the modulus is even"));
        }
        let precision = (modulus.len() * 8) as u32;
        let n10 = rsa10::BoxedUint::from_be_slice(modulus, precision)
            .map_err(|_| bad("cannot read the modulus"))?;
        let e10 = rsa10::BoxedUint::from_be_slice(&[1, 0, 1], 64)
            .map_err(|_| bad("cannot read the exponent"))?;
        let inner = rsa10::RsaPublicKey::new(n10, e10).map_err(|e| bad(&e.to_string()))?;
        Ok(BrandKey {
            key: PublicKeySha384PSSRandomized::new(inner),
            k: modulus.len(),
            n,
            e,
        })
    }

    /// Modulus length in bytes: the length of every blinded message, blind
    /// signature and signature under this key.
    pub fn modulus_len(&self) -> usize {
        self.k
    }

    /// Blind `msg` (RFC 9474 `Blind`, with the randomized message
    /// preparation): the blinded message goes to the bank, the rest stays
    /// with the client until [`Self::finalize`].
    pub fn blind(
        &self,
        rng: &mut (impl RngCore + CryptoRng),
        msg: &[u8],
    ) -> Result<Blinding, ProtocolError> {
        let r = self
            .key
            .blind(&mut Rng10(rng), msg)
            .map_err(|e| ProtocolError::Refused(format!("cannot blind the coin: {e}")))?;
        Ok(Blinding(r))
    }

    /// Unblind the bank's blind signature and check the result (RFC 9474
    /// `Finalize`, which verifies the signature before returning it).
    pub fn finalize(
        &self,
        blind_sig: &[u8],
        blinding: &Blinding,
        msg: &[u8],
    ) -> Result<Vec<u8>, ProtocolError> {
        let sig = self
            .key
            .finalize(
                &blind_rsa_signatures::BlindSignature(blind_sig.to_vec()),
                &blinding.0,
                msg,
            )
            .map_err(|_| ProtocolError::BadSignature {
                what: "blind signature from the bank (it does not finalize to a valid coin)",
            })?;
        Ok(sig.0)
    }

    /// Verify a finalized signature on `msg` with its randomizer.
    pub fn verify(
        &self,
        sig: &[u8],
        randomizer: &[u8; RANDOMIZER_LEN],
        msg: &[u8],
        what: &'static str,
    ) -> Result<(), ProtocolError> {
        self.key
            .verify(
                &blind_rsa_signatures::Signature(sig.to_vec()),
                Some(MessageRandomizer(*randomizer)),
                msg,
            )
            .map_err(|_| ProtocolError::BadSignature { what })
    }

    /// Whether `blinded` is something the bank's raw RSA operation may be
    /// applied to: exactly [`Self::modulus_len`] bytes, and below n as a
    /// number. (SoftHSM 2.6.1 ends the process on a longer input and
    /// kryoptic refuses a shorter one; see docs/tokens.md.)
    pub fn check_blinded(&self, blinded: &[u8]) -> Result<(), BlindedProblem> {
        check_blinded(&self.n, self.k, blinded)
    }

    /// The device's fault check: `s^e mod n == m`.
    pub fn signature_matches(&self, blinded: &[u8], blind_sig: &[u8]) -> bool {
        signature_matches(&self.n, &self.e, self.k, blinded, blind_sig)
    }
}

/// What is wrong with a blinded message (the device refuses it before the
/// token sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlindedProblem {
    #[error("the blinded message has {got} bytes, the brand key's modulus {expected}")]
    WrongLength { expected: usize, got: usize },
    #[error("the blinded message is not below the brand key's modulus")]
    NotBelowModulus,
}

/// [`BrandKey::check_blinded`] for a key given as `n` (`k` bytes long).
pub fn check_blinded(n: &BigUint, k: usize, blinded: &[u8]) -> Result<(), BlindedProblem> {
    if blinded.len() != k {
        return Err(BlindedProblem::WrongLength {
            expected: k,
            got: blinded.len(),
        });
    }
    if &BigUint::from_bytes_be(blinded) >= n {
        return Err(BlindedProblem::NotBelowModulus);
    }
    Ok(())
}

/// `s^e mod n == m` for `k`-byte `m` and `s` (s below n).
pub fn signature_matches(n: &BigUint, e: &BigUint, k: usize, m: &[u8], s: &[u8]) -> bool {
    if m.len() != k || s.len() != k {
        return false;
    }
    let s = BigUint::from_bytes_be(s);
    &s < n && s.modpow(e, n) == BigUint::from_bytes_be(m)
}

/// A blinded coin's secret half (RFC 9474's `inv` and the randomizer), kept
/// by the client between withdrawal and finalization.
#[derive(Clone)]
pub struct Blinding(BlindingResult);

impl Blinding {
    /// The blinded message to send to the bank.
    pub fn blinded(&self) -> &[u8] {
        &self.0.blind_message.0
    }
    /// The message randomizer the coin will carry.
    pub fn randomizer(&self) -> [u8; RANDOMIZER_LEN] {
        self.0
            .msg_randomizer
            .expect("the randomized variant always draws a randomizer")
            .0
    }
}

impl std::fmt::Debug for Blinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Blinding(..)")
    }
}

/// A `rand_core` 0.6 generator seen as a `rand_core` 0.10 one (what the
/// blind-signature crate takes).
pub(crate) struct Rng10<'a, R: RngCore + CryptoRng>(pub(crate) &'a mut R);

impl<R: RngCore + CryptoRng> rsa10::rand_core::TryRng for Rng10<'_, R> {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.0.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.next_u64())
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}
impl<R: RngCore + CryptoRng> rsa10::rand_core::TryCryptoRng for Rng10<'_, R> {}
