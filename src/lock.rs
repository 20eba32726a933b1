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
//! A DEL that removed the container's cache also removes its lock file (while holding
//! it); a waiter that then acquires the unlinked file notices (its inode is no longer
//! the one at the name) and locks the new file instead.

use crate::error::{CniError, Result, code};
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
    _lock: Flock<File>,
}

fn same_inode(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Take the lock of `container_id`, waiting at most `timeout`.
pub async fn acquire(cni_dir: &Path, container_id: &str, timeout: Duration) -> Result<ContainerLock> {
    let io = |what: &str, e: std::io::Error| CniError::io(format!("{what} {}/{LOCK_DIR}", cni_dir.display()), e);
    let root = safefs::Dir::create(cni_dir).map_err(|e| io("cannot create the lock directory", e))?;
    let dir = root
        .subdir(LOCK_DIR, true)
        .map_err(|e| io("cannot open the lock directory", e))?
        .ok_or_else(|| CniError::new(code::IO, "the lock directory vanished"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let fd = dir
            .open_file(container_id, OFlag::O_RDWR | OFlag::O_CREAT, 0o600)
            .map_err(|e| io(&format!("cannot open the lock of {container_id} in"), e))?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| io("cannot stat a lock in", e.into()))?;
        if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
            return Err(CniError::new(code::IO, format!("the lock of {container_id} is not a regular file")));
        }
        match Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                // Still the file at the name? A DEL may have unlinked it meanwhile.
                let now = nix::sys::stat::fstatat(&dir, container_id, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
                if now.is_ok_and(|n| same_inode(&n, &st)) {
                    return Ok(ContainerLock { dir, name: container_id.to_string(), _lock: lock });
                }
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
            Err((_, e)) => return Err(io(&format!("cannot lock {container_id} in"), e.into())),
        }
        if Instant::now() >= deadline {
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "another invocation for container {container_id} still holds its lock after {timeout:?} \
                     (lockTimeoutSeconds)"
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

impl ContainerLock {
    /// Remove the lock file (the container is gone), then release the lock.
    pub fn release_and_remove(self) {
        let _ = self.dir.remove(&self.name);
    }
}
