//! What went wrong, by class. Each class has its own exit status and JSON
//! name, so scripts can tell "the evidence is invalid" from "the TP did not
//! answer" without reading the message (documented in `vtp --help`, the
//! README and docs/cli.md).
//!
//! Commands return `anyhow::Result` and raise errors of a known class as a
//! [`VtpError`]; context added on the way up keeps it, and the top of the
//! program finds it with [`classify`] (by type, never by the message's
//! text). An error nobody classified is [`ErrorClass::Other`].

use std::fmt;

use crate::tp_client::TpRefused;

/// The kinds of failure a script can act on, each with its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Anything else (a bug, an unexpected condition): exit 1.
    Other,
    /// The command line is wrong (unknown flag, missing or conflicting
    /// arguments, a value of the wrong form): exit 2.
    Usage,
    /// A file or answer parsed but did not pass a check: an envelope for
    /// someone else, a bad signature, a deadline too near, evidence that
    /// does not prove delivery: exit 3.
    Invalid,
    /// The TP answered, and refused (deadline passed, too early, unknown
    /// key, rate limit, not subscribed): exit 4.
    TpRefused,
    /// No TP could be talked to: unresolvable address, connection refused,
    /// timeout, closed connection, or what answers is not a vtp TP: exit 5.
    TpUnreachable,
    /// An input file is not what it should be: not a vtp file, another
    /// kind, truncated, corrupted, too large, unsupported version: exit 6.
    BadInput,
    /// Local files: cannot open, read or write; an output that exists
    /// (without --force); a closed standard output: exit 7.
    Io,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::Other,
        ErrorClass::Usage,
        ErrorClass::Invalid,
        ErrorClass::TpRefused,
        ErrorClass::TpUnreachable,
        ErrorClass::BadInput,
        ErrorClass::Io,
    ];

    pub fn exit_code(self) -> u8 {
        match self {
            ErrorClass::Other => 1,
            ErrorClass::Usage => 2,
            ErrorClass::Invalid => 3,
            ErrorClass::TpRefused => 4,
            ErrorClass::TpUnreachable => 5,
            ErrorClass::BadInput => 6,
            ErrorClass::Io => 7,
        }
    }

    /// The `class` of a `--json` error object.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Other => "other",
            ErrorClass::Usage => "usage",
            ErrorClass::Invalid => "invalid",
            ErrorClass::TpRefused => "tp-refused",
            ErrorClass::TpUnreachable => "tp-unreachable",
            ErrorClass::BadInput => "bad-input",
            ErrorClass::Io => "io",
        }
    }

    pub fn meaning(self) -> &'static str {
        match self {
            ErrorClass::Other => "any other failure",
            ErrorClass::Usage => "usage: a wrong command line",
            ErrorClass::Invalid => {
                "invalid: a file or answer failed a check (invalid evidence, refused envelope)"
            }
            ErrorClass::TpRefused => "refused by the TP (deadline, too early, rate limit, ...)",
            ErrorClass::TpUnreachable => "TP unreachable: no connection, timeout, or not a vtp TP",
            ErrorClass::BadInput => {
                "bad input file: not a vtp file, wrong kind, truncated, corrupted"
            }
            ErrorClass::Io => "local I/O: cannot read or write a file, output exists",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The exit statuses, for `vtp --help`.
pub fn exit_status_help() -> String {
    let mut s = String::from("Exit status:\n  0  success (for verify: the evidence is valid)\n");
    for c in ErrorClass::ALL {
        s.push_str(&format!("  {}  {}\n", c.exit_code(), c.meaning()));
    }
    s
}

/// An error whose class is known where it is raised.
#[derive(Debug, thiserror::Error)]
pub enum VtpError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TpRefused(String),
    #[error("{0}")]
    TpUnreachable(String),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Other(String),
}

impl VtpError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        let m = message.into();
        match class {
            ErrorClass::Usage => VtpError::Usage(m),
            ErrorClass::Invalid => VtpError::Invalid(m),
            ErrorClass::TpRefused => VtpError::TpRefused(m),
            ErrorClass::TpUnreachable => VtpError::TpUnreachable(m),
            ErrorClass::BadInput => VtpError::BadInput(m),
            ErrorClass::Io => VtpError::Io(m),
            ErrorClass::Other => VtpError::Other(m),
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            VtpError::Usage(_) => ErrorClass::Usage,
            VtpError::Invalid(_) => ErrorClass::Invalid,
            VtpError::TpRefused(_) => ErrorClass::TpRefused,
            VtpError::TpUnreachable(_) => ErrorClass::TpUnreachable,
            VtpError::BadInput(_) => ErrorClass::BadInput,
            VtpError::Io(_) => ErrorClass::Io,
            VtpError::Other(_) => ErrorClass::Other,
        }
    }
}

/// The class of an error: the outermost classified error in its chain.
pub fn classify(e: &anyhow::Error) -> ErrorClass {
    for cause in e.chain() {
        if let Some(v) = cause.downcast_ref::<VtpError>() {
            return v.class();
        }
        if cause.downcast_ref::<TpRefused>().is_some() {
            return ErrorClass::TpRefused;
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return ErrorClass::Io;
        }
    }
    ErrorClass::Other
}

/// A new message for an error, keeping its class (where a message is
/// rebuilt around another error's text).
pub fn rewrap(e: &anyhow::Error, message: impl Into<String>) -> anyhow::Error {
    VtpError::new(classify(e), message).into()
}

macro_rules! ctor {
    ($($name:ident => $class:ident),* $(,)?) => {$(
        #[doc = concat!("An error of class [`ErrorClass::", stringify!($class), "`].")]
        pub fn $name(message: impl Into<String>) -> anyhow::Error {
            VtpError::new(ErrorClass::$class, message).into()
        }
    )*};
}
ctor!(
    usage => Usage,
    invalid => Invalid,
    tp_refused => TpRefused,
    tp_unreachable => TpUnreachable,
    bad_input => BadInput,
    io => Io,
);

/// `return Err(error::CLASS(format!(...)))`.
#[macro_export]
macro_rules! fail {
    ($class:ident, $($fmt:tt)*) => {
        return Err($crate::error::$class(format!($($fmt)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn classes_survive_context_and_rewrapping() {
        let e = bad_input("x: truncated receipt");
        assert_eq!(classify(&e), ErrorClass::BadInput);
        let e = Err::<(), _>(e).context("while reading").unwrap_err();
        assert_eq!(classify(&e), ErrorClass::BadInput);
        assert_eq!(classify(&rewrap(&e, "other words")), ErrorClass::BadInput);
        assert_eq!(classify(&anyhow::anyhow!("plain")), ErrorClass::Other);
        let codes: Vec<u8> = ErrorClass::ALL.iter().map(|c| c.exit_code()).collect();
        assert_eq!(codes, [1, 2, 3, 4, 5, 6, 7]);
    }
}
