//! One error type for every protocol check, with enough context to tell a
//! user what is wrong with which input.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("this is a {found} file, expected a {expected}")]
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

impl ProtocolError {
    /// The wire code a TP answers this failure with.
    pub fn wire_code(&self) -> crate::wire::ErrorCode {
        use crate::wire::ErrorCode;
        match self {
            ProtocolError::Malformed { .. }
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
