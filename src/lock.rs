//! Invocations for the same container ID are serialised on the node: an exclusive
//! open-file-description lock (`F_OFD_SETLK`) on one byte of `<cniDir>/.container-locks`,
//! the byte at an offset hashed from the container ID, waited for at most
//! `lockTimeoutSeconds`.
//!
//! Without it two simultaneous ADDs of one container both validated a free interface
//! name, both ran, and the loser's rollback deleted the winner's interface while the
//! winner reported success. With it the second ADD runs after the first finished, finds
//! the attachment in place and fails before running anything (see `commands::add`).
//!
//! One lock file for the node, created once and kept, rather than a file per container:
//! creating and removing a file (and its directory) at every invocation cost four
//! journaled metadata changes, ~0.2 ms of an ADD on ext4, and the churn slows every later
//! inode allocation of the filesystem (ext4 skips recently deleted inodes when it looks
//! for a free one). Two container IDs whose offsets collide share a byte and are
//! serialised too: harmless (one waits for the other), and over 2^62 offsets it does not
//! happen in practice. The kernel drops the lock when its holder exits or is killed.
//!
//! The file is opened `O_NOFOLLOW|O_NONBLOCK` relative to cniDir (itself opened without
//! following a link) and must be a regular file: a FIFO, a device or a symlink planted
//! there is refused without blocking. The invocation that created cniDir removes the
//! lock file and cniDir again when nothing else is in them and nobody holds a lock (a
//! failed first ADD leaves nothing on disk); a waiter that then acquires the unlinked
//! file notices (its inode is no longer the one at the name) and locks the new file.

use crate::error::{CniError, EnvError, IoError, Result, WaitError};
use crate::safefs;
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::{FileStat, SFlag};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// The lock file inside `cniDir`: not a valid container ID (leading dot), so no
/// scratch-cache entry can ever be confused with it.
pub const LOCK_FILE: &str = ".container-locks";

/// How often a waiter retries the lock.
const POLL: Duration = Duration::from_millis(10);

/// A held per-container lock; released when dropped (or by [`ContainerLock::finish`]).
pub struct ContainerLock {
    dir: safefs::Dir,
    /// The open lock file; closing it releases the lock.
    file: OwnedFd,
    /// This invocation created cniDir (and may remove it again when it stayed empty).
    created_root: bool,
}

/// Where in the lock file the lock of `container_id` lives: FNV-1a (64 bits) of the ID,
/// within the non-negative range of `off_t` and clear of its very end. A stable hash, not
/// std's `DefaultHasher`, whose output may change between Rust releases: two versions of
/// this binary running side by side during an upgrade lock the same byte.
fn offset_of(container_id: &str) -> i64 {
    let hash =
        container_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (hash >> 2) as i64
}

/// A write lock (`F_WRLCK`) of `len` bytes at `start` (`len` 0: to the end of any file),
/// or its release.
fn range(kind: i32, start: i64, len: i64) -> nix::libc::flock {
    // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value.
    let mut lock: nix::libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as i16;
    lock.l_whence = nix::libc::SEEK_SET as i16;
    lock.l_start = start;
    lock.l_len = len;
    lock
}

fn same_inode(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

enum Attempt {
    Locked(ContainerLock),
    Busy,
    /// The lock file or cniDir was removed under us by a finishing invocation: start over.
    Vanished,
    /// cniDir is on a read-only filesystem: nobody can write a cache there, so there is
    /// nothing to serialise (and DEL must still converge).
    ReadOnly,
}

fn attempt(cni_dir: &Path, container_id: &str) -> Result<Attempt> {
    let io = |what: &str, e: std::io::Error| CniError::io(format!("{what} {}/{LOCK_FILE}", cni_dir.display()), e);
    let vanished = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let read_only = |e: &std::io::Error| e.raw_os_error() == Some(nix::errno::Errno::EROFS as i32);
    let created_root = !cni_dir.exists();
    let dir = match safefs::Dir::create(cni_dir) {
        Ok(d) => d,
        Err(e) if vanished(&e) => return Ok(Attempt::Vanished),
        Err(e) if read_only(&e) => return Ok(Attempt::ReadOnly),
        Err(e) => return Err(io("cannot open the directory of", e)),
    };
    let file = match dir.open_file(LOCK_FILE, OFlag::O_RDWR | OFlag::O_CREAT, 0o600) {
        Ok(fd) => fd,
        Err(e) if vanished(&e) => return Ok(Attempt::Vanished),
        Err(e) if read_only(&e) => return Ok(Attempt::ReadOnly),
        Err(e) => return Err(io("cannot open the lock file", e)),
    };
    let st = nix::sys::stat::fstat(&file).map_err(|e| io("cannot stat the lock file", e.into()))?;
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
        return Err(IoError::Unusable(format!(
            "the lock file {}/{LOCK_FILE} is not a regular file",
            cni_dir.display()
        ))
        .into());
    }
    let byte = range(nix::libc::F_WRLCK, offset_of(container_id), 1);
    match nix::fcntl::fcntl(&file, FcntlArg::F_OFD_SETLK(&byte)) {
        Ok(_) => {
            // Still the file at the name? A finishing invocation may have unlinked it.
            let now = nix::sys::stat::fstatat(&dir, LOCK_FILE, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
            if now.is_ok_and(|n| same_inode(&n, &st)) {
                Ok(Attempt::Locked(ContainerLock { dir, file, created_root }))
            } else {
                Ok(Attempt::Vanished)
            }
        }
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(Attempt::Busy),
        Err(e) => Err(io(&format!("cannot lock {container_id} in"), e.into())),
    }
}

/// Take the lock of `container_id`, waiting at most `timeout`; `None` when cniDir is on
/// a read-only filesystem (no cache can be written there, so nothing to serialise).
pub async fn acquire(cni_dir: &Path, container_id: &str, timeout: Duration) -> Result<Option<ContainerLock>> {
    if !crate::cni::env::valid_container_id(container_id) {
        return Err(EnvError::InvalidContainerId(container_id.to_string()).into());
    }
    let deadline = Instant::now() + timeout;
    loop {
        match attempt(cni_dir, container_id)? {
            Attempt::Locked(lock) => return Ok(Some(lock)),
            Attempt::ReadOnly => {
                tracing::warn!("{} is read-only: running without the per-container lock", cni_dir.display());
                return Ok(None);
            }
            Attempt::Vanished => {
                tokio::task::yield_now().await;
                if Instant::now() < deadline {
                    continue;
                }
            }
            Attempt::Busy => {}
        }
        if Instant::now() >= deadline {
            return Err(WaitError::ContainerLock { container_id: container_id.to_string(), timeout }.into());
        }
        tokio::time::sleep(POLL).await;
    }
}

impl ContainerLock {
    /// Release the lock. The invocation that created cniDir also removes the lock file and
    /// cniDir when nothing else is in them and no other invocation holds a lock (its own
    /// byte aside, a lock on the whole file can then be had): a failed first ADD leaves
    /// nothing on disk. `rmdir` only ever removes an empty directory, so a racing
    /// invocation loses nothing; one that opened the removed file notices and retries.
    pub fn finish(self) {
        if self.created_root && self.only_the_lock_file_left() {
            let whole = range(nix::libc::F_WRLCK, 0, 0);
            if nix::fcntl::fcntl(&self.file, FcntlArg::F_OFD_SETLK(&whole)).is_ok() {
                let _ = self.dir.remove(LOCK_FILE);
                drop(self.file);
                let _ = std::fs::remove_dir(self.dir.path());
            }
        }
    }

    fn only_the_lock_file_left(&self) -> bool {
        self.dir.entries().is_ok_and(|names| names.iter().all(|(name, _)| name == LOCK_FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(dir: &Path, cid: &str) -> Option<ContainerLock> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(acquire(dir, cid, Duration::ZERO)).ok().flatten()
    }

    #[test]
    fn one_holder_per_container_and_none_between_containers() {
        let tmp = tempfile::tempdir().unwrap();
        let first = lock(tmp.path(), "c1").expect("free");
        assert!(lock(tmp.path(), "c1").is_none(), "a second holder of c1");
        let other = lock(tmp.path(), "c2").expect("c2 is independent of c1");
        drop(first);
        assert!(lock(tmp.path(), "c1").is_some(), "released on drop");
        drop(other);
    }

    #[test]
    fn offsets_are_stable_and_in_range() {
        // Pinned: a change would make two versions of the binary lock different bytes.
        assert_eq!(offset_of("c1"), 0x0228_9fc1_ed52_9a16);
        for id in ["a", "0123456789abcdef".repeat(4).as_str(), "x.y-z_0"] {
            let o = offset_of(id);
            assert!((0..i64::MAX).contains(&o), "{id}: {o}");
        }
    }

    #[test]
    fn the_creator_of_cni_dir_removes_it_when_nothing_else_is_there() {
        let tmp = tempfile::tempdir().unwrap();
        let cni = tmp.path().join("multus");
        lock(&cni, "c1").unwrap().finish();
        assert!(!cni.exists(), "an empty cniDir made by this invocation is removed");

        lock(&cni, "c1").unwrap();
        assert!(cni.join(LOCK_FILE).exists(), "a dropped (not finished) lock keeps its file");
        lock(&cni, "c2").unwrap().finish();
        assert!(cni.join(LOCK_FILE).exists(), "cniDir was not made by this invocation");
    }

    #[test]
    fn the_lock_file_is_kept_while_another_container_holds_its_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let cni = tmp.path().join("multus");
        let creator = lock(&cni, "c1").unwrap();
        let other = lock(&cni, "c2").unwrap();
        creator.finish();
        assert!(cni.join(LOCK_FILE).exists(), "removed under a holder");
        assert!(lock(&cni, "c2").is_none(), "c2 is still held on the same file");
        drop(other);
    }
}
