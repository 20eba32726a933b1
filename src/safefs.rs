//! Files the plugin does not trust: `cniDir` (it may sit on a hostPath other node software
//! writes) and every operator-configured path (logFile, kubeconfig, clusterNetwork,
//! confDir files, the readiness file).
//!
//! The rules, in one place so every caller gets them:
//! * a directory is opened once, `O_DIRECTORY|O_NOFOLLOW`, and everything below it is
//!   reached with `openat`/`unlinkat`/`renameat` relative to that descriptor: a symlink
//!   planted in the tree is never followed, and a directory swapped for a link after the
//!   open changes nothing;
//! * a file is opened `O_NOFOLLOW|O_NONBLOCK` (a FIFO or a device never blocks the open)
//!   and read only when `fstat` says it is a regular file, and at most `limit` bytes;
//! * a temp file is created `O_CREAT|O_EXCL` under an unpredictable name, so a link or a
//!   file planted at the name is never written through.

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

fn to_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A regular file over its read limit: the message names the limit, the caller adds the
/// config key that raises it.
#[derive(Debug)]
pub struct TooLarge {
    pub limit: u64,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "larger than the limit of {} bytes", self.limit)
    }
}
impl std::error::Error for TooLarge {}

/// Whether an I/O error is a [`TooLarge`].
pub fn is_too_large(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TooLarge>())
}

fn not_regular(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("not a regular file ({what})"))
}

fn kind_name(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symbolic link",
        _ => "not a regular file",
    }
}

/// Read an opened file: it must be regular, and no more than `limit` bytes are read.
fn read_regular_fd(fd: OwnedFd, limit: u64) -> io::Result<Vec<u8>> {
    let st = fstat(&fd).map_err(to_io)?;
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
        return Err(not_regular(kind_name(st.st_mode)));
    }
    if st.st_size as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, TooLarge { limit }));
    }
    let mut data = Vec::with_capacity((st.st_size as u64).min(limit) as usize);
    // A file that grows while we read it is still cut at the limit.
    File::from(fd).take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, TooLarge { limit }));
    }
    Ok(data)
}

/// Open `path` for reading without blocking on a FIFO or a device; with `follow` false
/// a symlink as the last component is refused (`ELOOP`).
pub fn open_nonblocking(path: &Path, follow: bool) -> io::Result<OwnedFd> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    nix::fcntl::open(path, flags, Mode::empty()).map_err(to_io)
}

/// Read a configured file: regular only, at most `limit` bytes, never blocking.
pub fn read_regular(path: &Path, limit: u64, follow: bool) -> io::Result<Vec<u8>> {
    read_regular_fd(open_nonblocking(path, follow)?, limit)
}

/// Whether `path` is a regular file (following links: configured paths such as the
/// readiness file may be links the operator made). Never opens it.
pub fn is_regular_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// A fresh name nobody can predict: hashed by a per-process randomly keyed hasher
/// (std seeds it from the OS), with pid, time and a counter.
pub fn unpredictable_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    h.write_u128(now.as_nanos());
    let a = h.finish();
    h.write_u64(a);
    format!("{a:016x}{:016x}", h.finish())
}

/// What follows a temp file's prefix: our random suffix, or the pid of the older format.
pub fn is_temp_suffix(rest: &str) -> bool {
    (rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
        || (!rest.is_empty() && rest.len() <= 10 && rest.bytes().all(|b| b.is_ascii_digit()))
}

/// The prefix of every temp file we create (`.<name>.tmp.<random>`).
pub fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp.")
}

/// A directory opened without following a symlink; everything below is relative to it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Open an existing directory; `ENOTDIR`/`ELOOP` when it is a file or a symlink.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(to_io)?;
        Ok(Dir { fd, path: path.to_path_buf() })
    }

    /// Open `path`, creating it (and missing parents) with mode 0700 where missing.
    /// The parents are the operator's; the last component is never a followed link.
    pub fn create(path: &Path) -> io::Result<Dir> {
        match Dir::open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
                        .create(parent)?;
                }
                match std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(path) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                Dir::open(path)
            }
            other => other,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory, not following a symlink; `None` when missing.
    pub fn subdir(&self, name: &str, create: bool) -> io::Result<Option<Dir>> {
        check_name(name)?;
        if create {
            match mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(to_io(e)),
            }
        }
        match openat(
            &self.fd,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(Dir { fd, path: self.path.join(name) })),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(to_io(e)),
        }
    }

    /// Open `name` in this directory without following a link and without blocking.
    pub fn open_file(&self, name: &str, flags: OFlag, mode: u32) -> io::Result<OwnedFd> {
        check_name(name)?;
        openat(
            &self.fd,
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::from_bits_truncate(mode),
        )
        .map_err(to_io)
    }

    /// Read a regular file of this directory, at most `limit` bytes; `None` when missing.
    pub fn read(&self, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        match self.open_file(name, OFlag::O_RDONLY | OFlag::O_NOCTTY, 0) {
            Ok(fd) => read_regular_fd(fd, limit).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write `name` atomically: an exclusive temp file under an unpredictable name, fsync,
    /// rename over `name`; with `durable`, fsync the directory too.
    pub fn write_atomic(&self, name: &str, data: &[u8], mode: u32, durable: bool) -> io::Result<()> {
        self.write_atomic_with(name, mode, durable, |f| f.write_all(data))
    }

    /// Write `name` atomically without any fsync: for data that is rebuilt after a crash
    /// (a metrics sample, the agent's NAD mirror), where an fsync per write would cost a
    /// journal commit for nothing. Readers never see a torn file all the same.
    pub fn write_atomic_unsynced(&self, name: &str, data: &[u8], mode: u32) -> io::Result<()> {
        self.replace(name, mode, false, |f| f.write_all(data))
    }

    /// [`Dir::write_atomic`] with the content streamed by `write` (buffered), so a
    /// large file need not be held in memory first; an error from `write` leaves no
    /// file behind.
    pub fn write_atomic_with(
        &self,
        name: &str,
        mode: u32,
        durable: bool,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        self.stage_with(name, mode, write)?.commit(true, durable)
    }

    /// An exclusive temp file under an unpredictable name, filled by `write`, renamed
    /// over `name`.
    fn replace(
        &self,
        name: &str,
        mode: u32,
        fsync: bool,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        self.stage_with(name, mode, write)?.commit(fsync, false)
    }

    /// The first half of [`Dir::write_atomic`]: `data` written to the exclusive temp
    /// file, so that a read-only or full directory fails here, while the fsyncs and the
    /// rename ([`Staged::commit`]) can run later, on another thread.
    pub fn stage(&self, name: &str, data: &[u8], mode: u32) -> io::Result<Staged> {
        self.stage_with(name, mode, |f| f.write_all(data))
    }

    fn stage_with(
        &self,
        name: &str,
        mode: u32,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Staged> {
        check_name(name)?;
        let dir = Dir { fd: self.fd.try_clone()?, path: self.path.clone() };
        let tmp = format!("{}{}", temp_prefix(name), unpredictable_suffix());
        let fd = self.open_file(&tmp, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL, mode)?;
        // From here on, dropping the stage removes the temp file.
        let mut staged = Staged { dir, tmp, name: name.to_string(), file: None };
        let mut out = io::BufWriter::with_capacity(64 << 10, File::from(fd));
        write(&mut out)?;
        staged.file = Some(out.into_inner().map_err(io::IntoInnerError::into_error)?);
        Ok(staged)
    }

    /// Make the renames in this directory durable.
    pub fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(&self.fd).map_err(to_io)
    }

    /// Remove the entry `name` (a file or a symlink, never what a link points to); a
    /// missing entry is not an error.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(to_io(e)),
        }
    }

    /// The names in this directory with whether each is a regular file (`d_type`, or
    /// `fstatat` without following links where the filesystem does not say).
    pub fn entries(&self) -> io::Result<Vec<(String, bool)>> {
        let dup = self.fd.as_fd().try_clone_to_owned()?;
        let mut dir = nix::dir::Dir::from_fd(dup).map_err(to_io)?;
        let mut out = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(to_io)?;
            let Ok(name) = entry.file_name().to_str() else { continue };
            if name == "." || name == ".." {
                continue;
            }
            let regular = match entry.file_type() {
                Some(t) => t == nix::dir::Type::File,
                None => nix::sys::stat::fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()),
            };
            out.push((name.to_string(), regular));
        }
        Ok(out)
    }

    /// Remove what an interrupted [`Dir::write_atomic`] of `name` left behind.
    pub fn remove_stale_temps(&self, name: &str) {
        let prefix = temp_prefix(name);
        let Ok(entries) = self.entries() else { return };
        for (entry, _) in entries {
            if entry.strip_prefix(&prefix).is_some_and(is_temp_suffix) {
                let _ = self.remove(&entry);
            }
        }
    }
}

/// A file written under its temp name, not yet in place ([`Dir::stage`]). Dropped
/// without [`Staged::commit`], it removes the temp file.
#[derive(Debug)]
pub struct Staged {
    dir: Dir,
    tmp: String,
    name: String,
    /// The written temp file; `None` once renamed (or while still being written).
    file: Option<File>,
}

impl Staged {
    /// With `fsync`, flush the file; rename it over its name; with `durable`, fsync the
    /// directory too.
    pub fn commit(mut self, fsync: bool, durable: bool) -> io::Result<()> {
        let file = self.file.take().ok_or_else(|| io::Error::other("the staged file was never written"))?;
        if fsync {
            file.sync_all()?;
        }
        renameat(&self.dir.fd, self.tmp.as_str(), &self.dir.fd, self.name.as_str()).map_err(to_io)?;
        self.tmp.clear();
        if durable { self.dir.sync() } else { Ok(()) }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.tmp.is_empty() {
            let _ = unlinkat(&self.dir.fd, self.tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A name inside one directory: no separator, not `.`/`..`, not empty.
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a plain file name")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reads_only_regular_files_within_the_limit() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"hello").unwrap();
        std::os::unix::fs::symlink(d.path().join("f"), d.path().join("link")).unwrap();
        nix::unistd::mkfifo(&d.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let dir = Dir::open(d.path()).unwrap();
        assert_eq!(dir.read("f", 5).unwrap().unwrap(), b"hello");
        assert!(is_too_large(&dir.read("f", 4).unwrap_err()));
        assert!(dir.read("link", 100).is_err(), "a symlink is not followed");
        assert!(dir.read("fifo", 100).unwrap_err().to_string().contains("FIFO"), "a FIFO is refused, not waited on");
        assert!(dir.read("missing", 100).unwrap().is_none());
        assert!(dir.read("../f", 100).is_err());
        assert!(read_regular(&d.path().join("fifo"), 10, true).is_err());
        assert!(read_regular(&d.path().join("link"), 10, false).is_err());
        assert_eq!(read_regular(&d.path().join("link"), 10, true).unwrap(), b"hello");
        assert!(read_regular(Path::new("/dev/zero"), 10, true).unwrap_err().to_string().contains("character device"));
    }

    #[test]
    fn a_stage_is_invisible_until_committed_and_leaves_nothing_when_dropped() {
        let d = tempfile::tempdir().unwrap();
        let dir = Dir::create(d.path()).unwrap();
        let staged = dir.stage("cid", b"first", 0o600).unwrap();
        assert_eq!(dir.read("cid", 100).unwrap(), None, "not in place before the commit");
        drop(staged);
        assert!(dir.entries().unwrap().is_empty(), "a dropped stage removes its temp file");
        let staged = dir.stage("cid", b"second", 0o600).unwrap();
        // The commit may run on another thread (the directory handle is the stage's own).
        std::thread::spawn(move || staged.commit(true, true)).join().unwrap().unwrap();
        assert_eq!(dir.read("cid", 100).unwrap().unwrap(), b"second");
        assert_eq!(dir.entries().unwrap(), vec![("cid".to_string(), true)], "no temp file left");
        let mode = std::fs::metadata(d.path().join("cid")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn atomic_write_never_writes_through_a_planted_link() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let cni = d.path().join("cni");
        let dir = Dir::create(&cni).unwrap();
        assert_eq!(std::fs::metadata(&cni).unwrap().permissions().mode() & 0o777, 0o700);
        std::os::unix::fs::symlink(&victim, cni.join("cid")).unwrap();
        dir.write_atomic("cid", b"new", 0o600, true).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(cni.join("cid")).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(cni.join("cid")).unwrap().file_type().is_symlink());
        assert_eq!(dir.entries().unwrap(), vec![("cid".to_string(), true)]);
        // a symlinked directory is not entered
        std::os::unix::fs::symlink(d.path(), cni.join("results")).unwrap();
        assert!(dir.subdir("results", false).is_err());
        assert!(Dir::open(&cni.join("results")).is_err());
        // removal removes the link, never its target
        std::os::unix::fs::symlink(&victim, cni.join("l")).unwrap();
        dir.remove("l").unwrap();
        assert!(victim.exists());
        assert_ne!(unpredictable_suffix(), unpredictable_suffix());
    }
}
