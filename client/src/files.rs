//! Reading and writing vtp files.
//!
//! Every error names the file and the problem ("receipt.vtp: this is a
//! envelope file, expected a receipt"), because a user juggling envelopes,
//! receipts and openings mostly gets one of them wrong, not the cryptography.
//!
//! Outputs are written atomically (a temporary file in the destination's
//! directory, synced, then moved into place), so an interrupted command never
//! leaves a half-written receipt or message behind. By default an existing
//! destination is never replaced (`--force` allows it); the final step then
//! uses a hard link, which fails instead of replacing a file that appeared
//! meanwhile. Secret identities are created with mode `0600` from the start
//! (never `chmod`ed afterwards, so there is no window in which they are
//! readable by others).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use rand_core::{OsRng, RngCore};
use vtp_protocol::affidavit::Affidavit;
use vtp_protocol::contract::{Agreement, ContractBundle, Proposal};
use vtp_protocol::encoding::PREFIX_LEN;
use vtp_protocol::identity::{IdentityCard, IdentitySecret};
use vtp_protocol::opening::Opening;
use vtp_protocol::receipt::Receipt;
use vtp_protocol::tp_card::TpCard;
use vtp_protocol::wrap_proof::VoidEvidence;
use vtp_protocol::ProtocolError;
use zeroize::Zeroizing;

use crate::armor::{self, ArmorWriter};
use crate::error;

/// Largest small file (anything but an envelope) we read: cards, receipts,
/// openings and affidavits are a few KiB, so a bigger file is a mistake.
pub const MAX_SMALL_FILE: u64 = 1 << 20;

/// `-` stands for standard input where a file is read and standard output
/// where one is written (a file named `-` is `./-`).
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// How an input path is named in messages.
pub fn shown(path: &Path) -> String {
    if is_stdio(path) {
        "standard input".into()
    } else {
        path.display().to_string()
    }
}

/// How an output path is named in messages.
pub fn shown_out(path: &Path) -> String {
    if is_stdio(path) {
        "standard output".into()
    } else {
        path.display().to_string()
    }
}

static STDIN_TAKEN: AtomicBool = AtomicBool::new(false);

/// Standard input, for the one input given as `-` (stdin can be read once:
/// a second input `-` is a usage error, never an empty file).
pub fn take_stdin() -> Result<io::Stdin> {
    if STDIN_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(error::usage(
            "only one input can come from standard input (-)".to_string(),
        ));
    }
    Ok(io::stdin())
}

/// A private temporary file: mode 0600 and already unlinked, so nothing is
/// left behind however vtp ends.
pub fn private_tempfile(what: &str) -> Result<File> {
    tempfile::tempfile().map_err(|e| {
        error::io(format!(
            "cannot create a temporary file for {what} in {}: {e}",
            std::env::temp_dir().display()
        ))
    })
}

/// Copy standard input into a [`private_tempfile`] and return it rewound:
/// for inputs vtp reads more than once (a message to send, an envelope).
pub fn spool_stdin() -> Result<File> {
    let stdin = take_stdin()?;
    let mut f = private_tempfile("standard input")?;
    io::copy(&mut stdin.lock(), &mut f)
        .map_err(|e| error::io(format!("standard input: cannot read: {e}")))?;
    f.seek(SeekFrom::Start(0))
        .map_err(|e| error::io(format!("standard input: cannot read back: {e}")))?;
    Ok(f)
}

/// Open an input that may be read twice or sought in: the file itself, or
/// standard input spooled ([`spool_stdin`]); armor is decoded (streaming)
/// into a [`private_tempfile`]. Returned at its start.
pub fn open_seekable(path: &Path) -> Result<File> {
    let mut file = if is_stdio(path) {
        spool_stdin()?
    } else {
        File::open(path).map_err(|e| io_error(path, format!("cannot open: {e}")))?
    };
    let mut head = [0u8; armor::ARMOR_START.len()];
    let n = read_up_to(&mut file, &mut head)
        .map_err(|e| io_error(path, format!("cannot read: {e}")))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_error(path, format!("cannot read: {e}")))?;
    if !armor::is_armored(&head[..n]) {
        return Ok(file);
    }
    let mut plain = private_tempfile("the decoded armor")?;
    armor::dearmor_to(&mut io::BufReader::new(file), &mut plain)
        .map_err(|e| input_error(path, e))?;
    plain
        .seek(SeekFrom::Start(0))
        .map_err(|e| io_error(path, format!("cannot read back the decoded armor: {e}")))?;
    Ok(plain)
}

/// Fill `buf` as far as the file goes.
fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Open an input read once, front to back (a file or standard input).
pub fn open_stream(path: &Path) -> Result<Box<dyn Read>> {
    if is_stdio(path) {
        Ok(Box::new(take_stdin()?))
    } else {
        Ok(Box::new(File::open(path).map_err(|e| {
            io_error(path, format!("cannot open: {e}"))
        })?))
    }
}

/// `path: problem` — the one shape of every file error; this one of class
/// [`ErrorClass::Io`](crate::error::ErrorClass::Io): the file cannot be
/// opened, read or written.
pub fn io_error(path: &Path, problem: impl std::fmt::Display) -> anyhow::Error {
    error::io(format!("{}: {problem}", shown(path)))
}

/// `path: problem`, the file is not what it should be (class
/// [`ErrorClass::BadInput`](crate::error::ErrorClass::BadInput)).
pub fn input_error(path: &Path, problem: impl std::fmt::Display) -> anyhow::Error {
    error::bad_input(format!("{}: {problem}", shown(path)))
}

/// `path: refused: problem`, the file parsed but failed a check (class
/// [`ErrorClass::Invalid`](crate::error::ErrorClass::Invalid)).
pub fn refused(path: &Path, problem: impl std::fmt::Display) -> anyhow::Error {
    error::invalid(format!("{}: refused: {problem}", shown(path)))
}

/// Read a whole small file (or standard input), refusing anything larger
/// than [`MAX_SMALL_FILE`].
pub fn read_small(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let file = open_stream(path)?;
    let mut bytes = Zeroizing::new(Vec::new());
    // Armor takes 4/3 of the room, and some for its lines.
    file.take(2 * MAX_SMALL_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, format!("cannot read: {e}")))?;
    if armor::is_armored(&bytes) {
        bytes = Zeroizing::new(armor::dearmor(&bytes).map_err(|e| input_error(path, e))?);
    }
    if bytes.len() as u64 > MAX_SMALL_FILE {
        return Err(input_error(
            path,
            "too large to be a vtp card, receipt, opening or affidavit",
        ));
    }
    Ok(bytes)
}

fn parse<T>(path: &Path, f: impl FnOnce(&[u8]) -> Result<T, ProtocolError>) -> Result<T> {
    let bytes = read_small(path)?;
    f(&bytes).map_err(|e| input_error(path, e))
}

/// The kind byte of a vtp file read with [`read_small`], if it starts like
/// one (for commands that accept more than one kind, such as `vtp id show`).
pub fn kind_of(bytes: &[u8]) -> Option<u8> {
    (bytes.len() >= PREFIX_LEN && &bytes[..3] == b"VTP").then(|| bytes[3])
}

/// Read a secret identity. Warns on stderr (but goes on) if the file is
/// readable by group or others: the user should know their keys are exposed.
/// (Only once it parsed as a secret identity: a card passed by mistake is
/// public and gets the wrong-kind error alone.)
pub fn read_secret_identity(path: &Path) -> Result<IdentitySecret> {
    parse_secret_identity(path, &read_small(path)?)
}

/// [`read_secret_identity`] of bytes already read from `path`.
pub fn parse_secret_identity(path: &Path, bytes: &[u8]) -> Result<IdentitySecret> {
    let id = IdentitySecret::from_file(bytes).map_err(|e| input_error(path, e))?;
    let meta = (!is_stdio(path)).then(|| fs::metadata(path).ok()).flatten();
    if let Some(meta) = meta {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            crate::warn!(
                "{} holds secret keys but is readable by others (mode {mode:03o}); run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
    Ok(id)
}

pub fn read_card(path: &Path) -> Result<IdentityCard> {
    parse(path, IdentityCard::from_file)
}

pub fn read_tp_card(path: &Path) -> Result<TpCard> {
    parse(path, TpCard::from_file)
}

pub fn read_receipt(path: &Path) -> Result<Receipt> {
    parse(path, Receipt::from_file)
}

pub fn read_opening(path: &Path) -> Result<Opening> {
    parse(path, Opening::from_file)
}

pub fn read_affidavit(path: &Path) -> Result<Affidavit> {
    parse(path, Affidavit::from_file)
}

pub fn read_void_evidence(path: &Path) -> Result<VoidEvidence> {
    parse(path, VoidEvidence::from_file)
}

pub fn read_proposal(path: &Path) -> Result<Proposal> {
    parse(path, Proposal::from_file)
}

pub fn read_agreement(path: &Path) -> Result<Agreement> {
    parse(path, Agreement::from_file)
}

pub fn read_contract_bundle(path: &Path) -> Result<ContractBundle> {
    parse(path, ContractBundle::from_file)
}

/// How an output file is created.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteMode {
    /// Replace an existing destination (otherwise: refuse).
    pub force: bool,
    /// Create the file with mode `0600` (secret identities); otherwise
    /// `0666` minus the umask, like any other tool's output.
    pub secret: bool,
}

impl WriteMode {
    pub fn public(force: bool) -> Self {
        WriteMode {
            force,
            secret: false,
        }
    }
}

/// Refuse early (before any expensive work) if `path` exists and may not be
/// replaced. [`AtomicFile::commit`] checks again, race-free. (Standard
/// output can always be written.)
pub fn check_writable(path: &Path, mode: WriteMode) -> Result<()> {
    if !mode.force && !is_stdio(path) && fs::symlink_metadata(path).is_ok() {
        return Err(io_error(path, "already exists (use --force to replace it)"));
    }
    Ok(())
}

/// Write a small vtp file atomically (armored with `--armor`).
pub fn write_file(path: &Path, bytes: &[u8], mode: WriteMode) -> Result<()> {
    let mut f = AtomicFile::create_vtp(path, mode)?;
    f.write_all(bytes)
        .map_err(|e| io_error(path, format!("cannot write: {e}")))?;
    f.commit()
}

/// A file being written under a temporary name next to its destination.
/// Dropped without [`Self::commit`], the temporary file is deleted.
///
/// For standard output (`-`), the file is written to a [`private_tempfile`]
/// and copied to stdout on commit: as with a file, nothing appears unless
/// the whole of it was made and checked (a decrypted message only once its
/// hash matched).
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    /// With `--armor`, a vtp file goes through this encoder into `file`.
    armor: Option<ArmorWriter<io::BufWriter<File>>>,
    mode: WriteMode,
    stdout: bool,
}

impl AtomicFile {
    /// [`Self::create`] for a vtp file: armored if `--armor` was given.
    pub fn create_vtp(dest: &Path, mode: WriteMode) -> Result<Self> {
        let mut f = Self::create(dest, mode)?;
        if crate::report::ui().armor {
            let file = f.file.take().expect("just created");
            f.armor = Some(ArmorWriter::new(io::BufWriter::new(file)));
        }
        Ok(f)
    }

    /// A file written as given (messages, and vtp files via [`Self::create_vtp`]).
    pub fn create(dest: &Path, mode: WriteMode) -> Result<Self> {
        if is_stdio(dest) {
            crate::report::claim_stdout("a file")?;
            return Ok(AtomicFile {
                dest: dest.to_path_buf(),
                tmp: PathBuf::new(),
                file: Some(private_tempfile("standard output")?),
                armor: None,
                mode,
                stdout: true,
            });
        }
        check_writable(dest, mode)?;
        let name = dest
            .file_name()
            .ok_or_else(|| error::usage(format!("{}: not a file name", shown(dest))))?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let perm = if mode.secret { 0o600 } else { 0o666 };
        let mut attempts = 0;
        loop {
            let tmp = dir.join(format!(
                ".{}.{:08x}.vtp-tmp",
                name.to_string_lossy(),
                OsRng.next_u32()
            ));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(perm)
                .open(&tmp)
            {
                Ok(file) => {
                    return Ok(AtomicFile {
                        dest: dest.to_path_buf(),
                        tmp,
                        file: Some(file),
                        armor: None,
                        mode,
                        stdout: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
                Err(e) => {
                    return Err(io_error(
                        dest,
                        format!("cannot create a temporary file in {}: {e}", dir.display()),
                    ))
                }
            }
        }
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Sync the data and move the file into place (or copy it to stdout).
    pub fn commit(mut self) -> Result<()> {
        if let Some(a) = self.armor.take() {
            let file = a
                .finish()
                .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
                .map_err(|e| io_error(&self.dest, format!("cannot write: {e}")))?;
            self.file = Some(file);
        }
        let mut file = self.file.take().expect("present until commit");
        if self.stdout {
            file.seek(SeekFrom::Start(0))
                .map_err(|e| error::io(format!("cannot read back the output: {e}")))?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| error::io(format!("cannot read back the output: {e}")))?;
                if n == 0 {
                    break;
                }
                crate::report::write_data(&buf[..n])?;
            }
            crate::report::wrote(&self.dest);
            return Ok(());
        }
        file.sync_all()
            .map_err(|e| io_error(&self.dest, format!("cannot write: {e}")))?;
        drop(file);
        if self.mode.force {
            fs::rename(&self.tmp, &self.dest)
                .map_err(|e| io_error(&self.dest, format!("cannot move into place: {e}")))?;
        } else {
            // link(2) fails if the destination exists: no-clobber, atomically.
            match fs::hard_link(&self.tmp, &self.dest) {
                Ok(()) => {
                    let _ = fs::remove_file(&self.tmp);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(io_error(
                        &self.dest,
                        "already exists (use --force to replace it)",
                    ));
                }
                // Filesystems without hard links: check, then rename.
                Err(_) => {
                    check_writable(&self.dest, self.mode)?;
                    fs::rename(&self.tmp, &self.dest).map_err(|e| {
                        io_error(&self.dest, format!("cannot move into place: {e}"))
                    })?;
                }
            }
        }
        if let Some(dir) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Best effort: make the rename itself durable.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        crate::report::wrote(&self.dest);
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.armor {
            Some(a) => a.write(buf),
            None => self.file.as_mut().expect("present until commit").write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.armor {
            Some(a) => a.flush(),
            None => self.file.as_mut().expect("present until commit").flush(),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.stdout {
            return;
        }
        if self.file.is_some() || self.armor.is_some() || fs::symlink_metadata(&self.tmp).is_ok() {
            self.file = None;
            self.armor = None;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Create a directory (and its parents) for outputs, naming it on error.
pub fn ensure_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| io_error(path, format!("cannot create directory: {e}")))
}

/// Refuse a path that is not an existing regular file (used for inputs that
/// are read twice, which a pipe cannot be: give `-` to have vtp spool it).
pub fn require_regular_file(path: &Path) -> Result<u64> {
    let meta = fs::metadata(path).map_err(|e| io_error(path, format!("cannot open: {e}")))?;
    if !meta.is_file() {
        return Err(io_error(
            path,
            "not a regular file (vtp reads the message twice; to send from a pipe, give `-` and the input is copied to a private temporary file first)",
        ));
    }
    Ok(meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_refuses_overwrite_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.vtp");
        write_file(&p, b"one", WriteMode::default()).unwrap();
        let err = write_file(&p, b"two", WriteMode::default()).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"one");
        write_file(&p, b"two", WriteMode::public(true)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // An uncommitted file leaves nothing behind.
        let mut f = AtomicFile::create(&dir.path().join("x"), WriteMode::default()).unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn secret_files_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("me.id");
        let mode = WriteMode {
            force: false,
            secret: true,
        };
        write_file(&p, b"k", mode).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
