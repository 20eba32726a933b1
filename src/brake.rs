//! The node-wide brake: at most `maxNodeApiRequests` API requests in flight across all
//! plugin processes of the node, so a burst of pod starts cannot hammer the apiserver.
//!
//! A semaphore of lock files: `<cniDir>/brake/slot-<i>` for i < cap, each held with an
//! exclusive `flock` for the duration of one request. The kernel releases a lock when
//! its holder exits or is killed, so a crashed plugin never leaks a slot. A request that
//! finds no free slot polls until the deadline of its API budget, then fails with code
//! 11 ("try again later").

use crate::error::{CniError, Result, WaitError};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held slot; dropping it releases the lock.
#[derive(Debug)]
pub struct Permit {
    _lock: Flock<File>,
}

#[derive(Debug, Clone)]
pub struct Brake {
    dir: PathBuf,
    cap: u32,
}

/// How long to wait between two scans of the slots when all are taken.
const POLL: Duration = Duration::from_millis(2);

impl Brake {
    /// `None` when `cap` is 0 (no brake).
    pub fn new(cni_dir: &Path, cap: u32) -> Option<Brake> {
        (cap > 0).then(|| Brake { dir: cni_dir.join("brake"), cap })
    }

    fn open_slot(&self, i: u32) -> std::io::Result<File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC).bits())
            .open(self.dir.join(format!("slot-{i}")))
    }

    /// One scan of the slots, starting at a per-process offset so that processes
    /// starting together do not all contend for slot 0.
    fn try_acquire(&self) -> Result<Option<Permit>> {
        let start = std::process::id() % self.cap;
        for k in 0..self.cap {
            let i = (start + k) % self.cap;
            let file = self.open_slot(i).map_err(|e| {
                CniError::io(
                    format!("maxNodeApiRequests: cannot open the lock file {}/slot-{i}", self.dir.display()),
                    e,
                )
            })?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(Some(Permit { _lock: lock })),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => continue,
                Err((_, e)) => {
                    return Err(CniError::io(
                        format!("maxNodeApiRequests: cannot lock {}/slot-{i}", self.dir.display()),
                        std::io::Error::from(e),
                    ));
                }
            }
        }
        Ok(None)
    }

    /// A slot, waiting for one until `deadline`.
    pub async fn acquire(&self, deadline: Instant) -> Result<Permit> {
        crate::fsutil::create_private_dir(&self.dir)
            .map_err(|e| CniError::io(format!("maxNodeApiRequests: cannot create {}", self.dir.display()), e))?;
        loop {
            if let Some(permit) = self.try_acquire()? {
                return Ok(permit);
            }
            if Instant::now() + POLL >= deadline {
                return Err(WaitError::NodeApiRequests { cap: self.cap }.into());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn slots_are_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let brake = Brake::new(dir.path(), 2).unwrap();
        let far = Instant::now() + Duration::from_secs(5);
        let a = brake.acquire(far).await.unwrap();
        let _b = brake.acquire(far).await.unwrap();
        let err = brake.acquire(Instant::now() + Duration::from_millis(20)).await.unwrap_err();
        assert_eq!(err.code, 11);
        assert!(err.msg.contains("maxNodeApiRequests"), "{}", err.msg);
        drop(a);
        brake.acquire(Instant::now() + Duration::from_millis(20)).await.unwrap();
        assert!(Brake::new(dir.path(), 0).is_none());
    }
}
