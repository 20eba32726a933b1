//! The object store and the knobs tests turn (faults, latency, RBAC, token).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::{Fault, FaultAction, RecordedRequest};

/// The resources the stand-in serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Pod,
    Nad,
    /// core/v1 Event.
    CoreEvent,
    /// events.k8s.io/v1 Event.
    Event,
    SelfSubjectAccessReview,
}

/// How a [`Kind`] is named on the wire.
pub(crate) struct KindInfo {
    pub group: &'static str,
    pub api_version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
}

impl Kind {
    pub fn info(self) -> KindInfo {
        let (group, api_version, kind, plural) = match self {
            Kind::Pod => ("", "v1", "Pod", "pods"),
            Kind::Nad => (
                "k8s.cni.cncf.io",
                "k8s.cni.cncf.io/v1",
                "NetworkAttachmentDefinition",
                "network-attachment-definitions",
            ),
            Kind::CoreEvent => ("", "v1", "Event", "events"),
            Kind::Event => ("events.k8s.io", "events.k8s.io/v1", "Event", "events"),
            Kind::SelfSubjectAccessReview => (
                "authorization.k8s.io",
                "authorization.k8s.io/v1",
                "SelfSubjectAccessReview",
                "selfsubjectaccessreviews",
            ),
        };
        KindInfo { group, api_version, kind, plural }
    }

    pub fn is_event(self) -> bool {
        matches!(self, Kind::CoreEvent | Kind::Event)
    }
}

type Key = (Kind, String, String);

/// One change of a NAD, kept for watchers.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub revision: u64,
    pub kind: &'static str,
    pub namespace: String,
    pub object: Value,
}

#[derive(Default)]
pub(crate) struct State {
    objects: BTreeMap<Key, Value>,
    /// Keys of created events, in creation order.
    event_log: Vec<Key>,
    /// The etcd-like global revision; every write takes the next one.
    revision: u64,
    pub requests: Vec<RecordedRequest>,
    pub faults: Vec<Fault>,
    /// (verb, resource) pairs RBAC says no to.
    pub denied: BTreeSet<(String, String)>,
    pub latency: Duration,
    pub token: Option<String>,
    /// Every accepted connection, in order (see [`crate::ConnectionRecord`]).
    pub connections: Vec<crate::ConnectionRecord>,
    /// The id the next accepted connection gets (ids survive `clear_connections`).
    pub next_connection: u64,
    /// NAD changes for watchers (`watch.rs`), oldest first.
    pub(crate) changes: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    pub(crate) compacted: u64,
    /// API requests being served now, and the most ever at once.
    pub(crate) in_flight: usize,
    pub(crate) max_in_flight: usize,
}

impl State {
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(kind, ns.to_owned(), name.to_owned()))
    }

    pub fn get_mut(&mut self, kind: Kind, ns: &str, name: &str) -> Option<&mut Value> {
        self.objects.get_mut(&(kind, ns.to_owned(), name.to_owned()))
    }

    pub fn remove(&mut self, kind: Kind, ns: &str, name: &str) {
        let removed = self.objects.remove(&(kind, ns.to_owned(), name.to_owned()));
        if let (Kind::Nad, Some(mut obj)) = (kind, removed) {
            // The apiserver gives the deletion a revision of its own.
            let rv = self.next_resource_version();
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), rv.into());
            }
            self.log_change("DELETED", &obj);
        }
    }

    /// Objects of `kind`, in one namespace or (with `None`) all of them.
    pub fn list(&self, kind: Kind, ns: Option<&str>) -> Vec<Value> {
        let in_scope = |(k, n, _): &&Key| *k == kind && ns.is_none_or(|ns| ns == n);
        self.objects.iter().filter(|(key, _)| in_scope(key)).map(|(_, v)| v.clone()).collect()
    }

    pub fn events(&self) -> Vec<Value> {
        self.event_log.iter().filter_map(|key| self.objects.get(key)).cloned().collect()
    }

    pub fn is_denied(&self, verb: &str, resource: &str) -> bool {
        self.denied.contains(&(verb.to_owned(), resource.to_owned()))
    }

    /// Takes the next revision, as a `resourceVersion` string.
    pub fn next_resource_version(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }

    pub fn current_resource_version(&self) -> String {
        self.revision.to_string()
    }

    /// Stores an object given by a test (or the admin API), filling in what
    /// the apiserver would, and returns it. Replaces an object of the same name.
    pub fn admit(&mut self, kind: Kind, mut obj: Value) -> Result<Value, String> {
        let info = kind.info();
        let map = obj.as_object_mut().ok_or("the object is not a JSON object")?;
        map.entry("apiVersion").or_insert_with(|| info.api_version.into());
        map.entry("kind").or_insert_with(|| info.kind.into());
        let meta = map.entry("metadata").or_insert_with(|| json!({}));
        let meta = meta.as_object_mut().ok_or("metadata is not an object")?;
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => return Err("metadata.name is missing".into()),
        };
        let ns = meta.entry("namespace").or_insert_with(|| "default".into());
        let ns = ns.as_str().ok_or("metadata.namespace is not a string")?.to_owned();
        self.stamp_new(meta);
        let replaced = self.objects.insert((kind, ns, name), obj.clone()).is_some();
        if kind == Kind::Nad {
            self.log_change(if replaced { "MODIFIED" } else { "ADDED" }, &obj);
        }
        Ok(obj)
    }

    /// Stores an object created through the API; the caller validated it.
    pub fn create(&mut self, kind: Kind, ns: &str, name: &str, mut obj: Value) -> Value {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            self.stamp_new(meta);
        }
        let key = (kind, ns.to_owned(), name.to_owned());
        if kind.is_event() {
            self.event_log.push(key.clone());
        }
        self.objects.insert(key, obj.clone());
        obj
    }

    /// Fills uid/creationTimestamp when missing and assigns a resourceVersion.
    fn stamp_new(&mut self, meta: &mut Map<String, Value>) {
        meta.entry("uid").or_insert_with(|| new_uid().into());
        meta.entry("creationTimestamp").or_insert_with(|| now_rfc3339().into());
        meta.insert("resourceVersion".into(), self.next_resource_version().into());
    }

    /// Finds the first fault matching the request, counts one use of it and
    /// returns its action. Used-up faults are dropped.
    pub fn take_fault(&mut self, method: &str, path: &str) -> Option<FaultAction> {
        let index = self.faults.iter().position(|f| {
            f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
                && f.path_contains.as_deref().is_none_or(|p| path.contains(p))
                && f.times != Some(0)
        })?;
        let fault = &mut self.faults[index];
        let action = fault.action.clone();
        if let Some(times) = fault.times.as_mut() {
            *times -= 1;
            if *times == 0 {
                self.faults.remove(index);
            }
        }
        Some(action)
    }
}

/// Reads `metadata.<field>` as a string.
pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// A fresh random u64 (std's hasher keys are randomly seeded per instance).
fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// A version-4-shaped UUID.
pub fn new_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// The 5-character suffix the apiserver appends to `generateName`.
pub(crate) fn generated_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bits = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize];
            bits /= ALPHABET.len() as u64;
            char::from(c)
        })
        .collect()
}

/// The current UTC time as RFC 3339 with second precision, as in metadata.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_look_like_uuids_and_differ() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn timestamp_is_rfc3339() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }

    #[test]
    fn faults_are_used_up_in_order() {
        let mut state = State::default();
        state.faults.push(Fault::new(FaultAction::Status(500)).method("PATCH").times(1));
        state.faults.push(Fault::new(FaultAction::Status(503)).path_contains("/pods/").times(2));
        assert_eq!(state.take_fault("GET", "/api/v1/nodes"), None);
        assert_eq!(state.take_fault("patch", "/x/pods/a"), Some(FaultAction::Status(500)));
        assert_eq!(state.take_fault("PATCH", "/x/pods/a"), Some(FaultAction::Status(503)));
        assert_eq!(state.take_fault("GET", "/x/pods/a"), Some(FaultAction::Status(503)));
        assert_eq!(state.take_fault("GET", "/x/pods/a"), None);
        assert!(state.faults.is_empty());
    }
}
