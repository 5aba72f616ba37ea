//! The bank's private operation: raw RSA on a blinded coin, `C_Sign` with
//! `CKM_RSA_X_509` on a brand key (RFC 9474's `BlindSign` is `s = m^d mod
//! n`; the client did the PSS encoding and the blinding).
//!
//! Only brand keys are used (the brand policy in `crate::keys`: `CKA_SIGN`
//! only, `CKA_ALLOWED_MECHANISMS = [CKM_RSA_X_509]`, sensitive, never
//! extractable, not modifiable, an end date); a TP decryption key fails
//! that policy, so it never blind-signs, and a brand key fails the
//! encryption policy, so it never decrypts. Around the token call:
//!
//! - the blinded value must be exactly as long as the modulus and below n
//!   ([`BlindSignError::WrongLength`], [`BlindSignError::NotBelowModulus`]),
//!   checked before the token sees it: SoftHSM 2.6.1 ends the whole process
//!   on a longer input, and the two tokens answer the other cases
//!   differently (docs/tokens.md);
//! - the result must satisfy `s^e mod n == m` with the key's own n and e
//!   before it leaves ([`BlindSignError::FaultDetected`]): a faulty RSA
//!   computation (e.g. one bad CRT half) can reveal the factors of n.
//!
//! [`Token::blind_sign_issuance`] is the bank's entry point: it takes only
//! what the bank's rules let through (`vtp_protocol::bank::Issuance`: a
//! withdrawal or refresh that passed `decide`), and checks each brand key
//! against the bank card's brand (same modulus, not past its end date).

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::Date;
use vtp_protocol::bank::blind::{check_blinded, signature_matches, BigUint, BlindedProblem};
use vtp_protocol::bank::{BlindSig, Issuance};
use vtp_protocol::{KeyId, Timestamp};

use crate::error::DeviceError;
use crate::keys::{Role, BRAND_LABEL_PREFIX};
use crate::rv::{describe, rv_of, stale_handle};
use crate::token::Token;

/// Why a blind signature was not made. Nothing was released.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlindSignError {
    #[error("the blinded message has {got} bytes; brand key {key}'s modulus has {expected}")]
    WrongLength {
        key: KeyId,
        expected: usize,
        got: usize,
    },
    #[error("the blinded message is not below brand key {key}'s modulus")]
    NotBelowModulus { key: KeyId },
    /// The token's result is not a signature of the input: withheld.
    #[error("brand key {key}: the token's raw RSA result failed the check s^e mod n = m and was withheld (token fault?)")]
    FaultDetected { key: KeyId },
    /// The issuance is dated after the brand key's end date (or the brand's
    /// `issue_until`).
    #[error("brand key {key} issues coins only until {until}; this issuance is dated {at}")]
    Expired {
        key: KeyId,
        until: String,
        at: Timestamp,
    },
    /// The token's key for a brand is not the key the bank card lists.
    #[error("brand key {key} on the token is not the key the bank card lists for it")]
    NotTheCardsKey { key: KeyId },
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// A UTC calendar day (a brand key's end date).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Day {
    /// The UTC day `t` falls on.
    pub fn of(t: Timestamp) -> Day {
        // Howard Hinnant's civil_from_days.
        let z = (t / 86_400) as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
        Day { year, month, day }
    }
    /// Seconds since the epoch at the start of the next day: the first
    /// instant after this day.
    pub fn end(&self) -> Timestamp {
        // Howard Hinnant's days_from_civil.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        ((days + 1) * 86_400) as Timestamp
    }
    /// `YYYYMMDD`.
    pub fn label(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
    fn parse(s: &str) -> Option<Day> {
        if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let d = Day {
            year: s[..4].parse().ok()?,
            month: s[4..6].parse().ok()?,
            day: s[6..].parse().ok()?,
        };
        (Day::of(d.end() - 1) == d).then_some(d)
    }
    pub(crate) fn pkcs11(&self) -> Date {
        Date::new_from_str_slice(
            &format!("{:04}", self.year),
            &format!("{:02}", self.month),
            &format!("{:02}", self.day),
        )
        .expect("fixed-width fields")
    }
    fn from_pkcs11(d: &Date) -> Option<Day> {
        let s: String = [&d.year[..], &d.month[..], &d.day[..]]
            .concat()
            .into_iter()
            .map(char::from)
            .collect();
        Day::parse(&s)
    }
}

/// The end date recorded in a brand key's label `vtp-brand-<id>-<YYYYMMDD>`.
pub(crate) fn brand_end_from_label(label: &str, id: KeyId) -> Option<Day> {
    let rest = label
        .strip_prefix(BRAND_LABEL_PREFIX)?
        .strip_prefix(&id.to_string())?
        .strip_prefix('-')?;
    Day::parse(rest)
}

/// The brand policy's `CKA_END_DATE` check: where the token can read it,
/// it must be set and equal the label's date. SoftHSM 2.6 answers
/// `CKR_GENERAL_ERROR` for a set date (docs/tokens.md), which is accepted:
/// the label's date is the one enforced.
pub(crate) fn end_date_problem(
    s: &Session,
    h: ObjectHandle,
    label: &str,
    id: KeyId,
) -> Option<String> {
    let want = brand_end_from_label(label, id)?;
    match s.get_attributes(h, &[AttributeType::EndDate]) {
        Ok(v) => match v.into_iter().next() {
            Some(Attribute::EndDate(d)) if d.is_empty() => {
                Some("CKA_END_DATE is empty, must be the label's date".to_owned())
            }
            Some(Attribute::EndDate(d)) => match Day::from_pkcs11(&d) {
                Some(got) if got == want => None,
                _ => Some(format!(
                    "CKA_END_DATE is {d}, the label says {}",
                    want.label()
                )),
            },
            _ => Some("CKA_END_DATE is missing".to_owned()),
        },
        Err(e) if rv_of(&e) == Some(RvError::GeneralError) => None,
        Err(e) => Some(format!("cannot read CKA_END_DATE: {}", describe(&e))),
    }
}

/// A brand key's public half, as the token holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrandPublic {
    /// Big-endian, no leading zero bytes.
    pub modulus: Vec<u8>,
    pub exponent: Vec<u8>,
    /// The last UTC day the key issues coins.
    pub until: Day,
}

fn strip(v: &[u8]) -> &[u8] {
    &v[v.iter().position(|&b| b != 0).unwrap_or(v.len())..]
}

/// The result check: `s` is `k` bytes and `s^e mod n == m`.
fn check_result(
    key: KeyId,
    n: &BigUint,
    e: &BigUint,
    k: usize,
    blinded: &[u8],
    s: Vec<u8>,
) -> Result<Vec<u8>, BlindSignError> {
    // A token may drop leading zero bytes of the result.
    let s = if s.len() < k {
        let mut p = vec![0u8; k - s.len()];
        p.extend_from_slice(&s);
        p
    } else {
        s
    };
    if signature_matches(n, e, k, blinded, &s) {
        Ok(s)
    } else {
        Err(BlindSignError::FaultDetected { key })
    }
}

/// How one attempt failed.
enum Attempt {
    Refused(BlindSignError),
    Stale,
    Device(DeviceError),
}

impl Token {
    /// The public half of brand key `id` (which must pass the brand
    /// policy): the private key's own modulus and exponent, checked against
    /// the public key object's modulus.
    pub fn brand_public(&self, id: KeyId) -> Result<BrandPublic, DeviceError> {
        self.with_recovery(|| {
            let k = self.private_key(id, Role::Brand)?;
            let (n, e, label) = {
                let s = self.management_session();
                let a = s
                    .get_attributes(
                        k.handle,
                        &[
                            AttributeType::Modulus,
                            AttributeType::PublicExponent,
                            AttributeType::Label,
                        ],
                    )
                    .map_err(|e| DeviceError::pkcs11("C_GetAttributeValue (brand key)", e))?;
                let (mut n, mut e, mut label) = (None, None, String::new());
                for x in a {
                    match x {
                        Attribute::Modulus(v) => n = Some(v),
                        Attribute::PublicExponent(v) => e = Some(v),
                        Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
                        _ => {}
                    }
                }
                (n, e, label)
            };
            let bad = |problem: &str| DeviceError::KeyPolicy {
                id_hex: id.to_string(),
                problem: problem.to_owned(),
            };
            let (Some(n), Some(e)) = (n, e) else {
                return Err(bad(
                    "the brand key lacks CKA_MODULUS or CKA_PUBLIC_EXPONENT",
                ));
            };
            let public = self.public_key_handle(id, Role::Brand)?;
            let pub_n = self
                .management_session()
                .get_attributes(public, &[AttributeType::Modulus])
                .map_err(|e| DeviceError::pkcs11("C_GetAttributeValue (brand public key)", e))?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Modulus(m) => Some(m),
                    _ => None,
                });
            if pub_n.as_deref().map(strip) != Some(strip(&n)) {
                return Err(bad(
                    "the public key's modulus differs from the private key's",
                ));
            }
            let until = brand_end_from_label(&label, id)
                .ok_or_else(|| bad("the label records no end date"))?;
            Ok(BrandPublic {
                modulus: strip(&n).to_vec(),
                exponent: strip(&e).to_vec(),
                until,
            })
        })
    }

    /// Raw RSA with brand key `key` on a blinded message: refuses input that
    /// is not exactly the modulus length or not below n, runs
    /// `C_Sign(CKM_RSA_X_509)`, and returns the result only if `s^e mod n
    /// == m` (the signature, modulus-length bytes). A lost login is
    /// restored and the operation retried once.
    pub fn blind_sign(&self, key: KeyId, blinded: &[u8]) -> Result<Vec<u8>, BlindSignError> {
        let public = self.brand_public(key)?;
        self.blind_sign_with(key, &public, blinded)
    }

    fn blind_sign_with(
        &self,
        key: KeyId,
        public: &BrandPublic,
        blinded: &[u8],
    ) -> Result<Vec<u8>, BlindSignError> {
        let n = BigUint::from_bytes_be(&public.modulus);
        let e = BigUint::from_bytes_be(&public.exponent);
        let k = public.modulus.len();
        check_blinded(&n, k, blinded).map_err(|p| match p {
            BlindedProblem::WrongLength { expected, got } => {
                BlindSignError::WrongLength { key, expected, got }
            }
            BlindedProblem::NotBelowModulus => BlindSignError::NotBelowModulus { key },
        })?;
        let mut refused = None;
        let r = self.with_recovery(|| {
            let mut retried = false;
            loop {
                match self.blind_sign_once(key, &n, &e, k, blinded) {
                    Ok(s) => return Ok(Some(s)),
                    Err(Attempt::Refused(r)) => {
                        refused = Some(r);
                        return Ok(None);
                    }
                    Err(Attempt::Stale) if !retried => {
                        self.forget_key(key);
                        retried = true;
                    }
                    Err(Attempt::Stale) => {
                        return Err(DeviceError::Pkcs11 {
                            op: "C_Sign (RSA_X_509)",
                            rv: "the key handle stays invalid after finding the key again".into(),
                        })
                    }
                    Err(Attempt::Device(e)) => return Err(e),
                }
            }
        })?;
        match (r, refused) {
            (Some(s), _) => Ok(s),
            (None, Some(r)) => Err(r),
            (None, None) => unreachable!("a refusal is recorded before returning None"),
        }
    }

    fn blind_sign_once(
        &self,
        key: KeyId,
        n: &BigUint,
        e: &BigUint,
        k: usize,
        blinded: &[u8],
    ) -> Result<Vec<u8>, Attempt> {
        let h = self
            .private_key(key, Role::Brand)
            .map_err(Attempt::Device)?;
        let session = self.session().map_err(Attempt::Device)?;
        match session.check(session.sign(&Mechanism::RsaX509, h.handle, blinded)) {
            Ok(s) => match check_result(key, n, e, k, blinded, s) {
                Ok(s) => {
                    session.release();
                    Ok(s)
                }
                // The session is closed, not reused.
                Err(fault) => {
                    tracing::error!(key = %key, "raw RSA result failed its check; withheld");
                    Err(Attempt::Refused(fault))
                }
            },
            Err(e) if rv_of(&e).is_some_and(stale_handle) => Err(Attempt::Stale),
            Err(e) => Err(Attempt::Device(DeviceError::pkcs11(
                "C_Sign (CKM_RSA_X_509)",
                e,
            ))),
        }
    }

    /// The bank's blind-signing operation: one raw RSA signature per
    /// blinded coin of a withdrawal or refresh the bank's rules allowed, in
    /// order. Each brand's token key must be the key the bank card lists
    /// for the brand (same modulus), and neither the brand's `issue_until`
    /// nor the key's end date may have passed at the time the rules
    /// decided. All or nothing: on any error no signature is returned.
    pub fn blind_sign_issuance(
        &self,
        issue: &impl Issuance,
    ) -> Result<Vec<BlindSig>, BlindSignError> {
        let at = issue.at();
        let mut out = Vec::with_capacity(issue.items().len());
        let mut publics: Vec<(KeyId, BrandPublic)> = Vec::new();
        for (item, brand) in issue.items().iter().zip(issue.brands()) {
            let key = brand.id.0;
            let public = match publics.iter().find(|(k, _)| *k == key) {
                Some((_, p)) => p.clone(),
                None => {
                    let p = self.brand_public(key)?;
                    if strip(&p.modulus) != strip(&brand.modulus)
                        || strip(&p.exponent) != strip(&brand.exponent)
                    {
                        return Err(BlindSignError::NotTheCardsKey { key });
                    }
                    publics.push((key, p.clone()));
                    p
                }
            };
            if at >= brand.issue_until || at >= public.until.end() {
                return Err(BlindSignError::Expired {
                    key,
                    until: public.until.label(),
                    at,
                });
            }
            out.push(self.blind_sign_with(key, &public, &item.blinded)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip() {
        for (t, label) in [
            (0, "19700101"),
            (951_782_400, "20000229"),
            (1_800_000_000, "20270115"),
            (4_102_444_799, "20991231"),
        ] {
            let d = Day::of(t);
            assert_eq!(d.label(), label);
            assert_eq!(Day::parse(label), Some(d));
            assert!(t < d.end() && d.end() - t <= 86_400);
            assert_eq!(Day::from_pkcs11(&d.pkcs11()), Some(d));
        }
        for bad in ["20270230", "2027011", "2027-1-1", "20271301", "20270100"] {
            assert_eq!(Day::parse(bad), None, "{bad}");
        }
        let id = KeyId([0xab; 8]);
        assert_eq!(
            brand_end_from_label("vtp-brand-abababababababab-20270115", id),
            Some(Day::of(1_800_000_000))
        );
        assert_eq!(brand_end_from_label("vtp-brand-abababababababab", id), None);
        assert_eq!(
            brand_end_from_label("vtp-enc-abababababababab-20270115", id),
            None
        );
    }

    #[test]
    fn the_fault_check_withholds_a_wrong_result() {
        // n = 61 * 53 = 3233, e = 17, d = 2753 (the textbook key), 2 bytes.
        let (n, e, d) = (
            BigUint::from(3233u32),
            BigUint::from(17u32),
            BigUint::from(2753u32),
        );
        let key = KeyId([1; 8]);
        let m = [0x0a, 0x1b];
        let s = BigUint::from_bytes_be(&m).modpow(&d, &n).to_bytes_be();
        assert!(check_result(key, &n, &e, 2, &m, s.clone()).is_ok());
        let mut wrong = check_result(key, &n, &e, 2, &m, s).unwrap();
        wrong[1] ^= 1;
        assert!(matches!(
            check_result(key, &n, &e, 2, &m, wrong),
            Err(BlindSignError::FaultDetected { .. })
        ));
        assert!(matches!(
            check_result(key, &n, &e, 2, &m, vec![1, 2, 3]),
            Err(BlindSignError::FaultDetected { .. })
        ));
    }
}
