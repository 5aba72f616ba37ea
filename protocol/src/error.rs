//! One error type for every protocol check, with enough context to tell a
//! user what is wrong with which input.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// The data ends before the value does (a cut-off file or frame).
    #[error("truncated {what} (the data ends early)")]
    Truncated { what: &'static str },
    #[error("this is {} file, expected {}", a(found), a(expected))]
    WrongKind {
        expected: &'static str,
        found: &'static str,
    },
    #[error("unsupported format version {found} (this build speaks version {supported})")]
    UnsupportedVersion { found: u8, supported: u8 },
    #[error("bad signature on {what}")]
    BadSignature { what: &'static str },
    #[error("{what} does not match: {detail}")]
    Mismatch { what: &'static str, detail: String },
    #[error("deadline problem: {0}")]
    Deadline(String),
    #[error("unknown TP encryption key id {0}")]
    UnknownKey(String),
    #[error("{0}")]
    Refused(String),
    #[error("does not decrypt")]
    DoesNotDecrypt,
}

/// `name` with its indefinite article ("an envelope", "a TP card"); a
/// mass noun ("void evidence") goes without.
pub fn a(name: &str) -> String {
    if name == "void evidence" {
        return name.to_string();
    }
    match name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {name}"),
        _ => format!("a {name}"),
    }
}

/// A span of seconds in the units `--deadline` takes ("90days", "1h 59m
/// 58s", "6m"): what every message about time shows, never bare seconds.
pub fn span(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    [
        (secs / 86400, "days"),
        (secs % 86400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, u)| match (*n, *u) {
        (1, "days") => "1day".to_string(),
        (n, u) => format!("{n}{u}"),
    })
    .collect::<Vec<_>>()
    .join(" ")
}

impl ProtocolError {
    /// The wire code a TP answers this failure with.
    pub fn wire_code(&self) -> crate::wire::ErrorCode {
        use crate::wire::ErrorCode;
        match self {
            ProtocolError::Malformed { .. }
            | ProtocolError::Truncated { .. }
            | ProtocolError::WrongKind { .. }
            | ProtocolError::UnsupportedVersion { .. } => ErrorCode::Malformed,
            ProtocolError::BadSignature { .. }
            | ProtocolError::Mismatch { .. }
            | ProtocolError::DoesNotDecrypt => ErrorCode::Rejected,
            ProtocolError::Deadline(_) => ErrorCode::Deadline,
            ProtocolError::UnknownKey(_) => ErrorCode::UnknownKey,
            ProtocolError::Refused(_) => ErrorCode::NotAuthorized,
        }
    }
    pub(crate) fn malformed(what: &'static str, detail: impl ToString) -> Self {
        Self::Malformed {
            what,
            detail: detail.to_string(),
        }
    }
    pub(crate) fn mismatch(what: &'static str, detail: impl ToString) -> Self {
        Self::Mismatch {
            what,
            detail: detail.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn articles_and_spans() {
        let e = ProtocolError::WrongKind {
            expected: "envelope",
            found: "identity card",
        };
        assert_eq!(
            e.to_string(),
            "this is an identity card file, expected an envelope"
        );
        assert_eq!(a("TP card"), "a TP card");
        assert_eq!(a("opening"), "an opening");
        assert_eq!(a("void evidence"), "void evidence");
        assert_eq!(span(360), "6m");
        assert_eq!(span(86400 + 7199), "1day 1h 59m 59s");
        assert_eq!(span(0), "0s");
    }
}
