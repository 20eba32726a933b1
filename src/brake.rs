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

/// A held slot; dropping it releases the lock, unless its request was abandoned.
#[derive(Debug)]
pub struct Permit {
    lock: Option<Flock<File>>,
    answered: bool,
}

/// Slots whose requests were abandoned while possibly still at the server, held until
/// the process exits (the kernel then releases them).
static ABANDONED: std::sync::Mutex<Vec<Flock<File>>> = std::sync::Mutex::new(Vec::new());

impl Permit {
    /// The request this slot was taken for has its answer (or failed at our end): the
    /// slot may go back as soon as the permit is dropped.
    pub fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Permit {
    /// A request given up while in flight (a timeout, the events' bounded wait) may still
    /// be at the server: releasing its slot now would let another plugin send while the
    /// server still counts it. Its slot is kept until this process exits.
    fn drop(&mut self) {
        if let (false, Some(lock)) = (self.answered, self.lock.take()) {
            ABANDONED.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
        }
    }
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
                Ok(lock) => return Ok(Some(Permit { lock: Some(lock), answered: false })),
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
        let b = brake.acquire(far).await.unwrap();
        let err = brake.acquire(Instant::now() + Duration::from_millis(20)).await.unwrap_err();
        assert_eq!(err.code, 11);
        assert!(err.msg.contains("maxNodeApiRequests"), "{}", err.msg);
        a.answered();
        let c = brake.acquire(Instant::now() + Duration::from_millis(20)).await.unwrap();
        // An abandoned request keeps its slot for the life of the process.
        drop(b);
        assert!(brake.acquire(Instant::now() + Duration::from_millis(20)).await.is_err());
        c.answered();
        brake.acquire(Instant::now() + Duration::from_millis(20)).await.unwrap().answered();
        assert!(Brake::new(dir.path(), 0).is_none());
    }
}
