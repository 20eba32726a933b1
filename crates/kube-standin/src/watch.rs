//! WATCH for NetworkAttachmentDefinitions, in the apiserver's REST shape:
//! `GET .../network-attachment-definitions?watch=true&resourceVersion=N
//! &allowWatchBookmarks=true` answers `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR",
//! "object":...}`. A resourceVersion older than the compacted history gets an ERROR
//! event carrying a 410 `Status` ("too old resource version"), as from etcd compaction;
//! the client must relist.
//!
//! Each watch response carries ONE event and then ends, as a real watch does when its
//! `timeoutSeconds` runs out: the client re-watches from the event's resourceVersion.
//! With nothing newer, the request waits (up to `timeoutSeconds`, at most
//! [`MAX_WAIT`]) and then answers a BOOKMARK at the current revision. The wait sleeps
//! until the NAD history changes (`State::history_changed`), not on a timer: a held
//! watch costs nothing while nothing happens, as with a real apiserver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::request::{ApiRequest, Route, param};
use crate::state::{Change, Kind, State};
use crate::status::Reply;

/// The longest a watch request is held open without an event.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(2);

fn namespace_of<'a>(req: &ApiRequest<'a>) -> Option<Option<&'a str>> {
    match req.route {
        Some(Route::Resource { kind: Kind::Nad, namespace, name: None, status: false }) => Some(*namespace),
        _ => None,
    }
}

fn since(query: &str) -> u64 {
    param(query, "resourceVersion").and_then(|rv| rv.parse().ok()).unwrap_or(0)
}

/// Hold a watch request until there is something newer to send (or the wait is over).
/// Call without the state lock held.
pub(crate) async fn wait(state: &Arc<Mutex<State>>, req: &ApiRequest<'_>) {
    if req.verb != "watch" {
        return;
    }
    let Some(ns) = namespace_of(req) else { return };
    let timeout = param(req.query, "timeoutSeconds").and_then(|s| s.parse().ok()).map(Duration::from_secs);
    let deadline = tokio::time::Instant::now() + timeout.unwrap_or(MAX_WAIT).min(MAX_WAIT);
    let rv = since(req.query);
    loop {
        let mut changed = {
            let state = crate::lock(state);
            if rv < state.compacted || state.next_change(rv, ns).is_some() {
                return;
            }
            // Subscribed under the lock every change is made under, so a change after
            // this check is one the receiver has not seen: no wake-up is lost.
            state.history_changed.subscribe()
        };
        // A change elsewhere (another namespace) wakes the wait too: look again.
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => {}
            // Err(_) inside: the sender went with the state; nothing will change any more.
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// The watch answer (see the module doc).
pub(crate) fn serve(state: &State, req: &ApiRequest<'_>) -> Reply {
    let Some(ns) = namespace_of(req) else {
        return crate::status::method_not_allowed();
    };
    let rv = since(req.query);
    if rv < state.compacted {
        let message = format!("too old resource version: {rv} ({})", state.compacted);
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "Expired", "code": 410});
        return Reply::ok(json!({"type": "ERROR", "object": status}));
    }
    match state.next_change(rv, ns) {
        Some(change) => Reply::ok(json!({"type": change.kind, "object": Value::clone(&change.object)})),
        None => {
            let info = Kind::Nad.info();
            let bookmark = json!({"kind": info.kind, "apiVersion": info.api_version,
                "metadata": {"resourceVersion": state.current_resource_version()}});
            Reply::ok(json!({"type": "BOOKMARK", "object": bookmark}))
        }
    }
}

impl State {
    /// The first NAD change after revision `rv`, in `ns` (or any namespace).
    pub(crate) fn next_change(&self, rv: u64, ns: Option<&str>) -> Option<&Change> {
        let start = self.changes.partition_point(|c| c.revision <= rv);
        self.changes[start..].iter().find(|c| ns.is_none_or(|ns| ns == c.namespace))
    }

    /// Record a NAD change for watchers.
    pub(crate) fn log_change(&mut self, kind: &'static str, object: Arc<Value>) {
        let revision = crate::state::meta_str(&object, "resourceVersion").and_then(|rv| rv.parse().ok()).unwrap_or(0);
        let namespace = crate::state::meta_str(&object, "namespace").unwrap_or_default().to_owned();
        self.changes.push(Change { revision, kind, namespace, object });
        self.history_changed.send_replace(());
    }

    /// Forget the watch history up to now, as etcd compaction does: a watch from an
    /// older resourceVersion gets 410 Gone.
    pub(crate) fn compact(&mut self) {
        self.compacted = self.current_resource_version().parse().unwrap_or(0);
        self.changes.clear();
        self.history_changed.send_replace(());
    }
}

/// Counts API requests in flight (from arrival to reply), and the most at once, so
/// tests can check a client-side cap (the plugin's `maxNodeApiRequests`).
pub(crate) struct InFlight(Arc<Mutex<State>>);

impl InFlight {
    pub(crate) fn enter(state: &Arc<Mutex<State>>) -> InFlight {
        let mut s = crate::lock(state);
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        InFlight(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        crate::lock(&self.0).in_flight -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::is_watch;

    #[test]
    fn query_parameters() {
        assert!(is_watch("allowWatchBookmarks=true&resourceVersion=5&watch=true"));
        assert!(!is_watch("watchx=true&limit=500"));
        assert_eq!(since("resourceVersion=17&watch=1"), 17);
        assert_eq!(since("watch=1"), 0);
    }
}
