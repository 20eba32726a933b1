//! The metrics spool: each plugin invocation leaves one small record in
//! `metricsSpoolDir`; the node agent drains the directory and serves the totals as
//! Prometheus metrics (`src/agent/metrics.rs`).
//!
//! Nothing here may fail or slow an invocation: every error is logged and ignored. The
//! spool is bounded in both directions: a record is at most [`MAX_RECORD_BYTES`]
//! (delegate timings beyond [`MAX_DELEGATES`] are dropped), and when the agent is down
//! and `metricsSpoolMaxRecords` records are already waiting, the oldest are removed
//! before a new one is written.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const MAX_RECORD_BYTES: u64 = 4096;
pub const MAX_DELEGATES: usize = 16;
/// Records are named `<unix nanos>-<pid>.json`: lexical order is age order.
pub const RECORD_SUFFIX: &str = ".json";

/// API requests this process made (each attempt counts), and those that failed.
pub static API_REQUESTS: AtomicU32 = AtomicU32::new(0);
pub static API_ERRORS: AtomicU32 = AtomicU32::new(0);
static DELEGATES: Mutex<Vec<DelegateTiming>> = Mutex::new(Vec::new());

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DelegateTiming {
    #[serde(rename = "type")]
    pub plugin_type: String,
    pub seconds: f64,
}

/// One invocation, as the agent reads it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub verb: String,
    /// 0 for success, else the CNI error code.
    pub code: u32,
    pub seconds: f64,
    pub api_requests: u32,
    pub api_errors: u32,
    pub mirror_hits: u32,
    pub mirror_misses: u32,
    /// The mirror was configured but its heartbeat was stale (or no agent): API used.
    pub mirror_fallbacks: u32,
    #[serde(default)]
    pub delegates: Vec<DelegateTiming>,
}

/// Times one delegate execution until dropped.
pub struct DelegateTimer {
    plugin_type: String,
    started: Instant,
}

impl DelegateTimer {
    pub fn start(plugin_type: &str) -> DelegateTimer {
        DelegateTimer { plugin_type: plugin_type.chars().take(64).collect(), started: Instant::now() }
    }
}

impl Drop for DelegateTimer {
    fn drop(&mut self) {
        let mut all = DELEGATES.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() < MAX_DELEGATES {
            let seconds = self.started.elapsed().as_secs_f64();
            all.push(DelegateTiming { plugin_type: std::mem::take(&mut self.plugin_type), seconds });
        }
    }
}

impl Record {
    /// This process' record: its counters so far.
    pub fn of_process(verb: &str, code: u32, elapsed: Duration) -> Record {
        let load = |c: &AtomicU32| c.load(Ordering::Relaxed);
        Record {
            verb: verb.chars().take(16).collect(),
            code,
            seconds: elapsed.as_secs_f64(),
            api_requests: load(&API_REQUESTS),
            api_errors: load(&API_ERRORS),
            mirror_hits: load(&crate::mirror::HITS),
            mirror_misses: load(&crate::mirror::MISSES),
            mirror_fallbacks: load(&crate::mirror::STALE),
            delegates: DELEGATES.lock().map(|d| d.clone()).unwrap_or_default(),
        }
    }
}

/// Leave `record` in `dir`, keeping at most `max_records` there. Best effort.
pub fn write(dir: &Path, max_records: u64, record: &Record) {
    if let Err(e) = try_write(dir, max_records, record) {
        tracing::warn!("metrics spool {}: record not written: {e}", dir.display());
    }
}

fn try_write(dir: &Path, max_records: u64, record: &Record) -> std::io::Result<()> {
    let data = serde_json::to_vec(record)?;
    if data.len() as u64 > MAX_RECORD_BYTES {
        return Err(std::io::Error::other("record larger than 4 KiB"));
    }
    crate::fsutil::create_private_dir(dir)?;
    let mut waiting = records(dir)?;
    let keep = max_records.saturating_sub(1) as usize;
    if waiting.len() > keep {
        let excess = waiting.len() - keep;
        for name in waiting.drain(..excess) {
            let _ = std::fs::remove_file(dir.join(name));
        }
        tracing::info!("metrics spool {}: {excess} old records dropped (metricsSpoolMaxRecords)", dir.display());
    }
    if max_records == 0 {
        return Ok(());
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let name = format!("{nanos:020}-{}{RECORD_SUFFIX}", std::process::id());
    write_nosync(dir, &name, &data)
}

/// Exclusive temp file + rename, without fsync: a record lost in a power cut is a
/// metric sample, not state, and an fsync per invocation would cost a journal commit.
fn write_nosync(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    crate::safefs::Dir::open(dir)?.write_atomic_unsynced(name, data, 0o600)
}

/// The names of the records waiting in `dir`, oldest first.
pub fn records(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && n.ends_with(RECORD_SUFFIX))
        .collect();
    names.sort();
    Ok(names)
}

/// Read one record (the agent's side): bounded, never through a symlink.
pub fn read(path: &Path) -> Option<Record> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut data = Vec::new();
    file.take(MAX_RECORD_BYTES + 1).read_to_end(&mut data).ok()?;
    if data.len() as u64 > MAX_RECORD_BYTES {
        return None;
    }
    serde_json::from_slice(&data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spool_is_capped_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        for i in 0..12 {
            write(&spool, 5, &Record { verb: "ADD".into(), code: i, ..Record::default() });
        }
        let names = records(&spool).unwrap();
        assert_eq!(names.len(), 5, "{names:?}");
        let codes: Vec<u32> = names.iter().map(|n| read(&spool.join(n)).unwrap().code).collect();
        assert_eq!(codes, [7, 8, 9, 10, 11], "the oldest records were dropped");
        // A symlink, an oversized file and garbage are never read as records.
        std::os::unix::fs::symlink("/etc/passwd", spool.join("0-link.json")).unwrap();
        std::fs::write(spool.join("0-big.json"), vec![b' '; 10_000]).unwrap();
        std::fs::write(spool.join("0-bad.json"), "{").unwrap();
        for n in ["0-link.json", "0-big.json", "0-bad.json"] {
            assert!(read(&spool.join(n)).is_none(), "{n}");
        }
        write(&spool, 0, &Record::default());
        assert!(records(&spool).unwrap().is_empty(), "a cap of 0 keeps nothing");
    }

    #[test]
    fn a_record_is_small_even_with_many_delegates() {
        for _ in 0..100 {
            drop(DelegateTimer::start(&"x".repeat(1000)));
        }
        let r = Record::of_process("ADD", 0, Duration::from_millis(3));
        assert!(r.delegates.len() <= MAX_DELEGATES);
        assert!(serde_json::to_vec(&r).unwrap().len() as u64 <= MAX_RECORD_BYTES);
    }
}
