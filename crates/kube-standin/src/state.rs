//! The object store and the knobs tests turn (faults, latency, RBAC, token).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
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

/// Stored objects of one kind by namespace, then name: looked up with borrowed names
/// (no key to build per request), listed in (namespace, name) order. Objects are never
/// changed in place, only replaced, so replies share them.
type Namespaces = BTreeMap<String, BTreeMap<String, Arc<Value>>>;

/// One change of a NAD, kept for watchers.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub revision: u64,
    pub kind: &'static str,
    pub namespace: String,
    pub object: Arc<Value>,
}

#[derive(Default)]
pub(crate) struct State {
    objects: BTreeMap<Kind, Namespaces>,
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
    /// Bumped whenever `changes` or `compacted` change, to wake held watches.
    pub(crate) history_changed: tokio::sync::watch::Sender<()>,
    /// API requests being served now, and the most ever at once.
    pub(crate) in_flight: usize,
    pub(crate) max_in_flight: usize,
}

impl State {
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<&Arc<Value>> {
        self.objects.get(&kind)?.get(ns)?.get(name)
    }

    pub fn get_mut(&mut self, kind: Kind, ns: &str, name: &str) -> Option<&mut Arc<Value>> {
        self.objects.get_mut(&kind)?.get_mut(ns)?.get_mut(name)
    }

    /// Stores `obj` under its key; true when it replaced an object.
    fn insert(&mut self, kind: Kind, ns: &str, name: &str, obj: Arc<Value>) -> bool {
        let namespace = self.objects.entry(kind).or_default().entry(ns.to_owned()).or_default();
        namespace.insert(name.to_owned(), obj).is_some()
    }

    pub fn remove(&mut self, kind: Kind, ns: &str, name: &str) {
        let removed = self.objects.get_mut(&kind).and_then(|m| m.get_mut(ns)).and_then(|m| m.remove(name));
        if let (Kind::Nad, Some(obj)) = (kind, removed) {
            let mut obj = Arc::unwrap_or_clone(obj);
            // The apiserver gives the deletion a revision of its own.
            let rv = self.next_resource_version();
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), rv.into());
            }
            self.log_change("DELETED", Arc::new(obj));
        }
    }

    /// Objects of `kind`, in one namespace or (with `None`) all of them.
    pub fn list(&self, kind: Kind, ns: Option<&str>) -> Vec<Value> {
        let Some(namespaces) = self.objects.get(&kind) else { return Vec::new() };
        let objects = |namespace: &BTreeMap<String, Arc<Value>>| namespace.values().map(|v| Value::clone(v)).collect();
        match ns {
            Some(ns) => namespaces.get(ns).map(objects).unwrap_or_default(),
            None => namespaces.values().flat_map(objects).collect(),
        }
    }

    pub fn events(&self) -> Vec<Value> {
        self.event_log
            .iter()
            .filter_map(|(kind, ns, name)| self.get(*kind, ns, name))
            .map(|v| Value::clone(v))
            .collect()
    }

    /// Whether RBAC says no. The set holds the few denials a test made, so a scan
    /// costs less than building an owned key to look up.
    pub fn is_denied(&self, verb: &str, resource: &str) -> bool {
        self.denied.iter().any(|(v, r)| v == verb && r == resource)
    }

    /// The record of connection `id`, if not cleared. Ids are handed out in increasing
    /// order and records are only ever appended or all cleared, so the list stays sorted.
    pub fn connection_mut(&mut self, id: u64) -> Option<&mut crate::ConnectionRecord> {
        let index = self.connections.binary_search_by_key(&id, |c| c.id).ok()?;
        self.connections.get_mut(index)
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
    pub fn admit(&mut self, kind: Kind, mut obj: Value) -> Result<Arc<Value>, String> {
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
        let obj = Arc::new(obj);
        let replaced = self.insert(kind, &ns, &name, Arc::clone(&obj));
        if kind == Kind::Nad {
            self.log_change(if replaced { "MODIFIED" } else { "ADDED" }, Arc::clone(&obj));
        }
        Ok(obj)
    }

    /// Stores an object created through the API; the caller validated it.
    pub fn create(&mut self, kind: Kind, ns: &str, name: &str, mut obj: Value) -> Arc<Value> {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            self.stamp_new(meta);
        }
        if kind.is_event() {
            self.event_log.push((kind, ns.to_owned(), name.to_owned()));
        }
        let obj = Arc::new(obj);
        self.insert(kind, ns, name, Arc::clone(&obj));
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

/// A version-4-shaped UUID: `{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}` of random bits,
/// written digit by digit (every created object gets one; `format!` costs more).
pub fn new_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    let mut uid = String::with_capacity(36);
    push_hex(&mut uid, a >> 32, 8);
    uid.push('-');
    push_hex(&mut uid, a >> 16, 4);
    uid.push_str("-4");
    push_hex(&mut uid, a, 3);
    uid.push('-');
    push_hex(&mut uid, 0x8000 | ((b >> 48) & 0x3fff), 4);
    uid.push('-');
    push_hex(&mut uid, b, 12);
    uid
}

/// The low `digits` hex digits of `value`, zero-padded.
fn push_hex(out: &mut String, value: u64, digits: u32) {
    for digit in (0..digits).rev() {
        out.push(char::from(b"0123456789abcdef"[((value >> (digit * 4)) & 0xf) as usize]));
    }
}

/// `value` in decimal, zero-padded to `width` digits (`{value:0width$}`).
fn push_decimal(out: &mut String, value: u64, width: u32) {
    let mut digits = 1;
    while 10u64.checked_pow(digits).is_some_and(|power| power <= value) {
        digits += 1;
    }
    for digit in (0..digits.max(width)).rev() {
        out.push(char::from(b'0' + (value / 10u64.pow(digit) % 10) as u8));
    }
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
    // `{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z`, without `format!` (every
    // created object gets one).
    let mut time = String::with_capacity(20);
    push_decimal(&mut time, year as u64, 4);
    time.push('-');
    push_decimal(&mut time, month as u64, 2);
    time.push('-');
    push_decimal(&mut time, day as u64, 2);
    time.push('T');
    push_decimal(&mut time, h, 2);
    time.push(':');
    push_decimal(&mut time, m, 2);
    time.push(':');
    push_decimal(&mut time, s, 2);
    time.push('Z');
    time
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
        // Version 4, variant 10xx.
        assert_eq!(&a[14..15], "4", "{a}");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn hand_written_digits_match_format() {
        let mut out = String::new();
        push_hex(&mut out, 0xabc_1234_5678, 12);
        push_hex(&mut out, 0xf00d_0042, 4);
        push_decimal(&mut out, 7, 2);
        push_decimal(&mut out, 2025, 4);
        push_decimal(&mut out, 12_345, 4);
        push_decimal(&mut out, u64::MAX, 2);
        let expected =
            format!("{:012x}{:04x}{:02}{:04}{:04}{:02}", 0xabc_1234_5678u64, 0x0042, 7, 2025, 12_345, u64::MAX);
        assert_eq!(out, expected);
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
