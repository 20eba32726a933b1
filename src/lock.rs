//! Invocations for the same container ID are serialised on the node: an exclusive
//! `flock` on `<cniDir>/.locks/<containerID>`, waited for at most `lockTimeoutSeconds`.
//!
//! Without it two simultaneous ADDs of one container both validated a free interface
//! name, both ran, and the loser's rollback deleted the winner's interface while the
//! winner reported success. With it the second ADD runs after the first finished, finds
//! the attachment in place and fails before running anything (see `commands::add`).
//!
//! The lock directory is created 0700 and opened without following a link; the lock
//! file is opened `O_NOFOLLOW|O_NONBLOCK` relative to it and must be a regular file.
//! Every invocation removes its lock file when it is done (while holding it), so lock
//! files never accumulate; a waiter that then acquires the unlinked file notices (its
//! inode is no longer the one at the name) and locks the new file instead.

use crate::error::{CniError, EnvError, IoError, Result, WaitError};
use crate::safefs;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::{FileStat, SFlag};
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

/// The lock directory inside `cniDir`: not a valid container ID (leading dot), so no
/// scratch-cache entry can ever be confused with it.
pub const LOCK_DIR: &str = ".locks";

/// How often a waiter retries the lock.
const POLL: Duration = Duration::from_millis(10);

/// A held per-container lock; released when dropped.
pub struct ContainerLock {
    dir: safefs::Dir,
    name: String,
    /// This invocation created cniDir (and may remove it again when it stayed empty).
    created_root: bool,
    _lock: Flock<File>,
}

fn same_inode(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

enum Attempt {
    Locked(ContainerLock),
    Busy,
    /// The lock directory was removed under us by a finishing invocation: start over.
    Vanished,
    /// cniDir is on a read-only filesystem: nobody can write a cache there, so there is
    /// nothing to serialise (and DEL must still converge).
    ReadOnly,
}

fn attempt(cni_dir: &Path, container_id: &str) -> Result<Attempt> {
    let io = |what: &str, e: std::io::Error| CniError::io(format!("{what} {}/{LOCK_DIR}", cni_dir.display()), e);
    let vanished = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let read_only = |e: &std::io::Error| e.raw_os_error() == Some(nix::errno::Errno::EROFS as i32);
    let created_root = !cni_dir.exists();
    let root = match safefs::Dir::create(cni_dir) {
        Ok(d) => d,
        Err(e) if vanished(&e) => return Ok(Attempt::Vanished),
        Err(e) if read_only(&e) => return Ok(Attempt::ReadOnly),
        Err(e) => return Err(io("cannot create the lock directory", e)),
    };
    let dir = match root.subdir(LOCK_DIR, true) {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(Attempt::Vanished),
        Err(e) if vanished(&e) => return Ok(Attempt::Vanished),
        Err(e) if read_only(&e) => return Ok(Attempt::ReadOnly),
        Err(e) => return Err(io("cannot open the lock directory", e)),
    };
    let fd = match dir.open_file(container_id, OFlag::O_RDWR | OFlag::O_CREAT, 0o600) {
        Ok(fd) => fd,
        Err(e) if vanished(&e) => return Ok(Attempt::Vanished),
        Err(e) if read_only(&e) => return Ok(Attempt::ReadOnly),
        Err(e) => return Err(io(&format!("cannot open the lock of {container_id} in"), e)),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| io("cannot stat a lock in", e.into()))?;
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
        return Err(IoError::Unusable(format!("the lock of {container_id} is not a regular file")).into());
    }
    match Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            // Still the file at the name? A finishing invocation may have unlinked it.
            let now = nix::sys::stat::fstatat(&dir, container_id, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
            if now.is_ok_and(|n| same_inode(&n, &st)) {
                Ok(Attempt::Locked(ContainerLock { dir, name: container_id.to_string(), created_root, _lock: lock }))
            } else {
                Ok(Attempt::Vanished)
            }
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(Attempt::Busy),
        Err((_, e)) => Err(io(&format!("cannot lock {container_id} in"), e.into())),
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
    /// Release the lock and remove its file, then the lock directory and cniDir when
    /// they are empty and this invocation made them: no lock file outlives its
    /// invocation, and a failed ADD leaves nothing on disk. A waiter that opened the
    /// removed file notices the file is gone and retries; `rmdir` only ever
    /// removes an empty directory, so a racing invocation loses nothing.
    pub fn finish(self) {
        let _ = self.dir.remove(&self.name);
        let locks = self.dir.path().to_path_buf();
        drop(self._lock);
        if std::fs::remove_dir(&locks).is_ok()
            && self.created_root
            && let Some(root) = locks.parent()
        {
            let _ = std::fs::remove_dir(root);
        }
    }
}
