//! The node agent's NAD mirror, as the plugin reads it (the agent writes it:
//! `src/agent/mirror.rs`).
//!
//! Layout of `nadMirrorDir`: one file per NetworkAttachmentDefinition,
//! `<namespace>_<name>.json` (the NAD object as the API returned it; `_` cannot occur in
//! a namespace or an object name), and `heartbeat.json`, rewritten by the agent every
//! few seconds while its watch is synced. Every file is written atomically (temp +
//! rename), so a reader sees a whole old or a whole new file, never a torn one.
//!
//! The mirror can only make ADD faster, never fail it: a stale heartbeat, no agent, a
//! missing, oversized, non-regular or unparsable entry all mean "ask the API".

use kube::api::DynamicObject;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const HEARTBEAT_FILE: &str = "heartbeat.json";
/// A NAD larger than this is not read from the mirror (the API path has its own limits).
pub const MAX_ENTRY_BYTES: u64 = 1024 * 1024;
const MAX_HEARTBEAT_BYTES: u64 = 4096;

/// What the agent says about its watch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// When the agent last confirmed its watch healthy, milliseconds since the epoch.
    pub written_at_ms: u64,
    /// The resourceVersion the mirror reflects.
    #[serde(default)]
    pub resource_version: String,
    /// NADs in the mirror.
    #[serde(default)]
    pub nads: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

/// A namespace or object name as the API allows it (DNS-1123 subdomain characters):
/// anything else (a pod author's `../x`) is never looked up in the mirror.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The file name of a NAD's entry, `None` for names the API would not accept.
pub fn entry_file_name(namespace: &str, name: &str) -> Option<String> {
    (valid_name(namespace) && valid_name(name)).then(|| format!("{namespace}_{name}.json"))
}

/// Read a regular file without following a symlink, at most `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Option<Vec<u8>> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc_flags()).open(path).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.file_type().is_file() || meta.len() > limit {
        return None;
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    (&file).take(limit + 1).read_to_end(&mut data).ok()?;
    (data.len() as u64 <= limit).then_some(data)
}

fn libc_flags() -> i32 {
    (nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC).bits()
}

pub fn read_heartbeat(dir: &Path) -> Option<Heartbeat> {
    serde_json::from_slice(&read_bounded(&dir.join(HEARTBEAT_FILE), MAX_HEARTBEAT_BYTES)?).ok()
}

/// Lookups of this process, for the metrics record (`src/spool.rs`).
pub static HITS: AtomicU32 = AtomicU32::new(0);
pub static MISSES: AtomicU32 = AtomicU32::new(0);
/// The mirror was configured but not used: stale heartbeat or no agent.
pub static STALE: AtomicU32 = AtomicU32::new(0);

/// A mirror whose heartbeat was fresh when opened.
#[derive(Debug)]
pub struct Mirror {
    dir: PathBuf,
}

impl Mirror {
    /// `None` when no mirror is configured or its heartbeat is older than `max_age`
    /// (or missing, or from the future by more than `max_age`: a clock jump).
    pub fn open(dir: &str, max_age: Duration) -> Option<Mirror> {
        if dir.is_empty() {
            return None;
        }
        let dir = PathBuf::from(dir);
        let fresh =
            read_heartbeat(&dir).is_some_and(|h| now_ms().abs_diff(h.written_at_ms) <= max_age.as_millis() as u64);
        if !fresh {
            STALE.fetch_add(1, Ordering::Relaxed);
            tracing::info!("NAD mirror {}: no fresh heartbeat, using the API", dir.display());
            return None;
        }
        Some(Mirror { dir })
    }

    /// The NAD, when the mirror has a readable entry for it; `None` means "ask the API".
    pub fn get(&self, namespace: &str, name: &str) -> Option<DynamicObject> {
        let found = entry_file_name(namespace, name)
            .and_then(|file| read_bounded(&self.dir.join(file), MAX_ENTRY_BYTES))
            .and_then(|data| serde_json::from_slice::<DynamicObject>(&data).ok())
            .filter(|obj| {
                obj.metadata.name.as_deref() == Some(name) && obj.metadata.namespace.as_deref() == Some(namespace)
            });
        let counter = if found.is_some() { &HITS } else { &MISSES };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_are_refused() {
        assert_eq!(entry_file_name("default", "macvlan-conf").as_deref(), Some("default_macvlan-conf.json"));
        for (ns, n) in [("..", "x"), ("default", "../x"), ("a/b", "x"), ("default", ""), ("Default", "x"), ("a_b", "c")]
        {
            assert_eq!(entry_file_name(ns, n), None, "{ns}/{n}");
        }
    }
}
