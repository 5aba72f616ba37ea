//! How one value of `tp.toml` is read: the config text and its path (so that
//! every error names the file and the line), relative paths, and the single
//! defaulting and range helper every section uses. It exists so that the
//! sections state only their rules, never how an error is located.

use std::ops::{Range, RangeInclusive, RangeToInclusive};
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::ConfigError;

/// A value as written, with its byte span in the config text.
pub(super) type S<T> = Spanned<T>;

/// The config text being validated. Turns a problem into a [`ConfigError`]
/// naming the file and, where known, the line.
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    pub text: &'a str,
    pub path: &'a Path,
}

/// Which values a setting accepts: an inclusive range (`1..=3600`), an upper
/// bound (`..=86_400`), or a list (`&[2048, 3072, 4096][..]`).
pub(super) trait Allowed<T> {
    fn allows(&self, value: &T) -> bool;
}

impl<T: PartialOrd> Allowed<T> for RangeInclusive<T> {
    fn allows(&self, value: &T) -> bool {
        self.contains(value)
    }
}

impl<T: PartialOrd> Allowed<T> for RangeToInclusive<T> {
    fn allows(&self, value: &T) -> bool {
        self.contains(value)
    }
}

impl<T: PartialEq> Allowed<T> for &[T] {
    fn allows(&self, value: &T) -> bool {
        self.contains(value)
    }
}

/// The value as written, or `default` when the setting is absent.
pub(super) fn given_or<T: Copy>(v: &Option<S<T>>, default: T) -> T {
    v.as_ref().map_or(default, |s| *s.get_ref())
}

impl Source<'_> {
    /// A problem with the file as a whole (`detail` may name a line itself).
    pub fn error(&self, detail: String) -> ConfigError {
        ConfigError {
            path: self.path.to_owned(),
            detail,
        }
    }

    /// Line (1-based) of a byte offset.
    pub fn line_at(&self, offset: usize) -> usize {
        self.text.as_bytes()[..offset.min(self.text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// A problem with the value written at `span`.
    pub fn at(&self, span: Range<usize>, msg: impl Into<String>) -> ConfigError {
        let line = self.line_at(span.start);
        self.error(format!("line {line}: {}", msg.into()))
    }

    /// A problem with a `[section]` as a whole (a value is missing): names
    /// the line of its header, if it has one.
    pub fn in_section(&self, section: &str, msg: impl Into<String>) -> ConfigError {
        match section_line(self.text, section) {
            Some(l) => self.error(format!("line {l}: {}", msg.into())),
            None => self.error(msg.into()),
        }
    }

    /// A problem with a setting that may have been left at its default: the
    /// line of the value if written, else of the section header.
    pub fn at_or_in<T>(
        &self,
        v: &Option<S<T>>,
        section: &str,
        msg: impl Into<String>,
    ) -> ConfigError {
        match v {
            Some(s) => self.at(s.span(), msg),
            None => self.in_section(section, msg),
        }
    }

    /// A path setting: not empty, and relative to the config file's directory.
    pub fn path(&self, v: S<PathBuf>, what: &str) -> Result<PathBuf, ConfigError> {
        if v.get_ref().as_os_str().is_empty() {
            return Err(self.at(v.span(), format!("{what} must not be empty")));
        }
        let p = v.into_inner();
        if p.is_absolute() {
            return Ok(p);
        }
        let base = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok(base.join(p))
    }

    /// A number setting: the value as written if `allowed` accepts it, else
    /// the error `problem(value)` on its line; `default` when absent (a
    /// default is not checked: it is valid on its own, and a bound that
    /// depends on another setting applies only to a value the operator
    /// wrote, e.g. `first_frame_timeout_secs` against `idle_timeout_secs`).
    pub fn setting<T: Copy>(
        &self,
        v: &Option<S<T>>,
        default: T,
        allowed: impl Allowed<T>,
        problem: impl FnOnce(T) -> String,
    ) -> Result<T, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) if allowed.allows(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err(self.at(s.span(), problem(*s.get_ref()))),
        }
    }
}

/// Line of a `[section]` header, if present.
fn section_line(text: &str, section: &str) -> Option<usize> {
    let header = format!("[{section}]");
    text.lines()
        .position(|l| {
            let l = l.trim();
            l == header
                || l.starts_with(&format!("{header} "))
                || l.starts_with(&format!("{header}#"))
        })
        .map(|i| i + 1)
}
