//! Splitting the message key across several trustees (t of n).
//!
//! An envelope names n trustees (each a TP with its own token) and a
//! threshold t. The message key is `k_m = HKDF(σ)`, where σ is the constant
//! term of a random polynomial P of degree t - 1 over the P-256 scalar field
//! (Shamir's secret sharing). Trustee i's z carries `E_B(P(i))`, the share
//! wrapped to the recipient; resolving releases that share and nothing else.
//! Any t shares give σ by Lagrange interpolation at 0; t - 1 shares — even
//! together with everything a colluding trustee's token holds — are
//! independent of σ, so Bob learns nothing about `k_m` from them.
//!
//! The polynomial is drawn from a ChaCha20 stream keyed by the opening secret,
//! so an opening recomputes every share (and every z) byte for byte. With one
//! trustee (t = n = 1) P is the constant σ and the share is σ itself.
//!
//! The field arithmetic is the `p256` crate's; only the interpolation
//! formula lives here.

use p256::elliptic_curve::{Field, PrimeField};
use p256::Scalar;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use zeroize::{Zeroize, Zeroizing};

use crate::ProtocolError;

/// Most trustees an envelope may name.
pub const MAX_TRUSTEES: usize = 16;

/// One trustee's share `(x, P(x))`, `x` = slot index + 1. Wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    pub x: u8,
    y: Zeroizing<[u8; 32]>,
}

impl Share {
    pub fn new(x: u8, y: [u8; 32]) -> Self {
        Share {
            x,
            y: Zeroizing::new(y),
        }
    }
    pub fn value(&self) -> &[u8; 32] {
        &self.y
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share({}, ***)", self.x)
    }
}

/// The polynomial's coefficients `a_0 = σ, a_1, …, a_{t-1}`, from a seed.
fn coefficients(seed: &[u8; 32], threshold: usize) -> Vec<Scalar> {
    let mut rng = ChaCha20Rng::from_seed(*seed);
    (0..threshold).map(|_| Scalar::random(&mut rng)).collect()
}

fn eval(coeffs: &[Scalar], x: u8) -> Scalar {
    let x = Scalar::from(u64::from(x));
    // Horner's rule.
    coeffs.iter().rev().fold(Scalar::ZERO, |acc, a| acc * x + a)
}

fn check_shape(threshold: usize, trustees: usize) -> Result<(), ProtocolError> {
    if trustees == 0 || trustees > MAX_TRUSTEES {
        return Err(ProtocolError::malformed(
            "trustee group",
            format!("{trustees} trustees (allowed: 1 to {MAX_TRUSTEES})"),
        ));
    }
    if threshold == 0 || threshold > trustees {
        return Err(ProtocolError::malformed(
            "trustee group",
            format!("threshold {threshold} with {trustees} trustees (allowed: 1 to {trustees})"),
        ));
    }
    Ok(())
}

/// Deal shares for `trustees` slots with the given threshold; returns σ's
/// bytes and the shares in slot order.
pub(crate) fn deal(
    seed: &[u8; 32],
    threshold: usize,
    trustees: usize,
) -> Result<(Zeroizing<[u8; 32]>, Vec<Share>), ProtocolError> {
    check_shape(threshold, trustees)?;
    let mut coeffs = coefficients(seed, threshold);
    let sigma = Zeroizing::new(coeffs[0].to_repr().into());
    let shares = (1..=trustees as u8)
        .map(|x| {
            let mut y = eval(&coeffs, x);
            let share = Share::new(x, y.to_repr().into());
            y.zeroize();
            share
        })
        .collect();
    coeffs.iter_mut().for_each(Zeroize::zeroize);
    Ok((sigma, shares))
}

/// Recover σ from exactly `threshold` shares with distinct `x` (Lagrange
/// interpolation at 0). A value that is not a field element, a repeated or
/// zero `x`, or the wrong number of shares is refused.
pub fn combine(shares: &[Share], threshold: usize) -> Result<Zeroizing<[u8; 32]>, ProtocolError> {
    if shares.len() != threshold || threshold == 0 {
        return Err(ProtocolError::malformed(
            "key shares",
            format!("{} shares given, {threshold} needed", shares.len()),
        ));
    }
    let mut points = Vec::with_capacity(shares.len());
    for s in shares {
        if s.x == 0
            || points
                .iter()
                .any(|(x, _): &(Scalar, Scalar)| *x == Scalar::from(u64::from(s.x)))
        {
            return Err(ProtocolError::malformed(
                "key shares",
                format!("share index {} is zero or repeated", s.x),
            ));
        }
        let y = Option::<Scalar>::from(Scalar::from_repr((*s.y).into())).ok_or_else(|| {
            ProtocolError::malformed(
                "key shares",
                format!("share {} is not a field element", s.x),
            )
        })?;
        points.push((Scalar::from(u64::from(s.x)), y));
    }
    let mut sigma = Scalar::ZERO;
    for (j, (xj, yj)) in points.iter().enumerate() {
        let mut num = Scalar::ONE;
        let mut den = Scalar::ONE;
        for (m, (xm, _)) in points.iter().enumerate() {
            if m != j {
                num *= xm;
                den *= *xm - xj;
            }
        }
        let inv = Option::<Scalar>::from(den.invert()).expect("distinct non-zero indices");
        sigma += *yj * num * inv;
    }
    for (_, y) in points.iter_mut() {
        y.zeroize();
    }
    let out = Zeroizing::new(sigma.to_repr().into());
    sigma.zeroize();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subsets(n: usize, t: usize) -> Vec<Vec<usize>> {
        (0u32..1 << n)
            .filter(|m| m.count_ones() as usize == t)
            .map(|m| (0..n).filter(|i| m & (1 << i) != 0).collect())
            .collect()
    }

    #[test]
    fn any_t_shares_recover_sigma_and_fewer_do_not() {
        for (t, n) in [(1, 1), (1, 3), (2, 3), (3, 3), (3, 5)] {
            let (sigma, shares) = deal(&[7; 32], t, n).unwrap();
            for set in subsets(n, t) {
                let pick: Vec<Share> = set.iter().map(|&i| shares[i].clone()).collect();
                assert_eq!(*combine(&pick, t).unwrap(), *sigma, "t={t} n={n} {set:?}");
            }
            if t > 1 {
                // t - 1 shares interpolated as if they were enough give
                // something else.
                let pick: Vec<Share> = shares[..t - 1].to_vec();
                assert_ne!(*combine(&pick, t - 1).unwrap(), *sigma);
            }
        }
    }

    #[test]
    fn one_trustee_share_is_sigma() {
        let (sigma, shares) = deal(&[1; 32], 1, 1).unwrap();
        assert_eq!(shares[0].value(), &*sigma);
    }

    #[test]
    fn bad_shapes_and_shares_are_refused() {
        assert!(deal(&[0; 32], 0, 3).is_err());
        assert!(deal(&[0; 32], 4, 3).is_err());
        assert!(deal(&[0; 32], 1, MAX_TRUSTEES + 1).is_err());
        let (_, shares) = deal(&[2; 32], 2, 3).unwrap();
        assert!(combine(&shares[..1], 2).is_err());
        assert!(combine(&[shares[0].clone(), shares[0].clone()], 2).is_err());
        assert!(combine(&[Share::new(0, [1; 32]), shares[1].clone()], 2).is_err());
        assert!(combine(&[Share::new(1, [0xff; 32]), shares[1].clone()], 2).is_err());
    }
}
