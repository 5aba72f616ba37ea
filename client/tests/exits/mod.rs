//! The exit status of each class of failure (docs/cli.md), for tests that
//! check a command failed for the right reason.

#![allow(dead_code)]

use crate::common::Run;

pub const OTHER: i32 = 1;
pub const USAGE: i32 = 2;
pub const INVALID: i32 = 3;
pub const TP_REFUSED: i32 = 4;
pub const TP_UNREACHABLE: i32 = 5;
pub const BAD_INPUT: i32 = 6;
pub const IO: i32 = 7;

pub trait FailsAs {
    /// Failed with exit `code` and exactly one `vtp: error:` line
    /// containing `needle`.
    fn fails_as(self, code: i32, needle: &str) -> Run;
}

impl FailsAs for Run {
    #[track_caller]
    fn fails_as(self, code: i32, needle: &str) -> Run {
        assert_eq!(
            self.status, code,
            "expected exit {code}\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.assert_one_error_line();
        assert!(
            self.stderr.contains(needle),
            "stderr does not mention {needle:?}: {}",
            self.stderr
        );
        self
    }
}
