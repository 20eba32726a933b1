//! The NAD mirror, writer side: one kube-rs watcher over all
//! NetworkAttachmentDefinitions (a list, then a watch with bookmarks; after an error it
//! resumes, after 410 Gone it relists), one atomically written file per NAD, and a
//! heartbeat refreshed while the watch is synced. The reader is `src/mirror.rs`.

use super::Agent;
use crate::mirror::{HEARTBEAT_FILE, Heartbeat, entry_file_name, now_ms};
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after a watch error the mirror is not vouched for.
pub const ERROR_QUIET: Duration = Duration::from_secs(10);

/// How often the heartbeat is rewritten while the watch is healthy. The plugin's
/// `nadMirrorMaxAgeSeconds` (default 30) must be comfortably larger.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

pub fn nad_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition");
    ApiResource::from_gvk_with_plural(&gvk, "network-attachment-definitions")
}

/// Write `data` to `dir/name` through a temp file and a rename: a reader (or a kill of
/// the agent at any instant) never sees a torn entry. No fsync: after a crash or
/// reboot the agent relists and rewrites everything.
pub fn write_entry(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    crate::safefs::Dir::open(dir)?.write_atomic_unsynced(name, data, 0o644)
}

/// Entry files now in `dir` (temp files of an earlier, killed agent are removed).
fn existing_entries(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for name in std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()?.file_name().into_string().ok()) {
        let is_temp = name.starts_with('.')
            && name.rsplit_once(".tmp.").is_some_and(|(_, rest)| crate::safefs::is_temp_suffix(rest));
        if is_temp {
            let _ = std::fs::remove_file(dir.join(&name));
        } else if name.ends_with(".json") && name != HEARTBEAT_FILE {
            found.insert(name);
        }
    }
    found
}

struct Mirror<'a> {
    agent: &'a Agent,
    dir: &'a Path,
    entries: BTreeSet<String>,
    /// Entries seen since the current (re)list began.
    relisted: BTreeSet<String>,
    /// A list completed and no relist is under way.
    listed: bool,
    /// After a watch error the heartbeat pauses until then: the watcher resumes on its
    /// own (a successful resume yields no event), so "no error for a while" is the
    /// signal that the watch is back.
    quiet_until: Instant,
    resource_version: String,
}

impl Mirror<'_> {
    fn apply(&mut self, obj: &DynamicObject) -> Option<String> {
        let (ns, name) = (obj.metadata.namespace.as_deref()?, obj.metadata.name.as_deref()?);
        let file = entry_file_name(ns, name)?;
        if let Some(rv) = &obj.metadata.resource_version {
            self.resource_version.clone_from(rv);
        }
        match serde_json::to_vec(obj) {
            Ok(data) => {
                if let Err(e) = write_entry(self.dir, &file, &data) {
                    tracing::error!("NAD mirror: cannot write {file}: {e}");
                    let _ = std::fs::remove_file(self.dir.join(&file));
                    self.entries.remove(&file);
                    return None;
                }
            }
            Err(e) => tracing::error!("NAD mirror: cannot encode {ns}/{name}: {e}"),
        }
        self.entries.insert(file.clone());
        Some(file)
    }

    fn delete(&mut self, obj: &DynamicObject) {
        let (Some(ns), Some(name)) = (obj.metadata.namespace.as_deref(), obj.metadata.name.as_deref()) else { return };
        if let Some(file) = entry_file_name(ns, name) {
            let _ = std::fs::remove_file(self.dir.join(&file));
            self.entries.remove(&file);
        }
    }

    fn heartbeat(&self) {
        let beat = Heartbeat {
            written_at_ms: now_ms(),
            resource_version: self.resource_version.clone(),
            nads: self.entries.len() as u64,
        };
        let data = serde_json::to_vec(&beat).unwrap_or_default();
        if let Err(e) = write_entry(self.dir, HEARTBEAT_FILE, &data) {
            tracing::error!("NAD mirror: cannot write the heartbeat: {e}");
        }
        self.agent.metrics.mirrored_nads.set(self.entries.len() as i64);
    }

    fn synced(&self) -> bool {
        self.listed && Instant::now() >= self.quiet_until
    }

    /// Refresh the heartbeat when the watch is synced, withdraw it when not: the plugin
    /// stops trusting the mirror at once, not only when the heartbeat ages.
    fn vouch(&self) {
        let synced = self.synced();
        self.agent.metrics.watch_healthy.set(synced.into());
        if synced {
            self.heartbeat();
        } else {
            let _ = std::fs::remove_file(self.dir.join(HEARTBEAT_FILE));
        }
    }

    fn on_event(&mut self, event: watcher::Event<DynamicObject>) {
        match event {
            watcher::Event::Init => {
                self.relisted.clear();
                self.listed = false;
            }
            watcher::Event::InitApply(obj) => {
                if let Some(file) = self.apply(&obj) {
                    self.relisted.insert(file);
                }
            }
            watcher::Event::InitDone => {
                // What the relist did not return was deleted while we were not watching.
                for gone in self.entries.difference(&self.relisted).cloned().collect::<Vec<_>>() {
                    let _ = std::fs::remove_file(self.dir.join(&gone));
                    self.entries.remove(&gone);
                }
                self.listed = true;
                // A completed relist is proof of health: no need to wait out an error.
                self.quiet_until = Instant::now();
                tracing::info!("NAD mirror: synced, {} NADs", self.entries.len());
            }
            watcher::Event::Apply(obj) => {
                self.apply(&obj);
            }
            watcher::Event::Delete(obj) => self.delete(&obj),
        }
        self.vouch();
    }
}

/// Keep the mirror in `dir` until the task is dropped.
pub async fn run(client: Client, dir: &Path, agent: Arc<Agent>) {
    let api: Api<DynamicObject> = Api::all_with(client, &nad_resource());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut mirror = Mirror {
        agent: &agent,
        dir,
        entries: existing_entries(dir),
        relisted: BTreeSet::new(),
        listed: false,
        quiet_until: Instant::now(),
        resource_version: String::new(),
    };
    mirror.vouch();
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(event)) => mirror.on_event(event),
                Some(Err(e)) => {
                    tracing::warn!("NAD mirror: watch error, resuming: {e}");
                    agent.metrics.watch_restarts.inc();
                    mirror.quiet_until = Instant::now() + ERROR_QUIET;
                    mirror.vouch();
                }
                None => return,
            },
            _ = tick.tick() => mirror.vouch(),
        }
    }
}
