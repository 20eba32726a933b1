//! A small, honest stand-in for the Kubernetes API server.
//!
//! It speaks the real kube-apiserver REST shapes for the handful of resources
//! multus-rs touches (Pods and `pods/status`, NetworkAttachmentDefinitions,
//! core/v1 and events.k8s.io/v1 Events, SelfSubjectAccessReviews, `/version`),
//! with real JSON merge patch, real `Status` bodies and real status codes, over
//! the real transport: HTTPS by default (a CA and serving certificate made at
//! start, SAN 127.0.0.1/::1/localhost; HTTP/2 or HTTP/1.1 by ALPN), a bearer token
//! required once a kubeconfig is written, RBAC-like 403s ([`StandIn::deny`]), and
//! a record of every connection and TLS handshake ([`StandIn::connections`]).
//! Plain HTTP stays available ([`Transport::Http`], `--plain-http`).
//! Tests use it in-process through [`StandIn`]; `make demo` runs the
//! `kube-standin` binary, which adds nothing but flags and signal handling.
//!
//! Besides the API it serves a small admin API under `/_standin/` (see the
//! binary's docs) so that out-of-process callers can inspect and steer it.
//! Admin calls bypass recording, latency, faults, tokens and `deny()`.
//!
//! ```no_run
//! use kube_standin::{Fault, FaultAction, StandIn};
//! let api = StandIn::start();
//! api.add_pod(serde_json::json!({"metadata": {"name": "web", "namespace": "default"}}));
//! api.add_fault(Fault::new(FaultAction::Status(503)).times(2));
//! println!("{}", api.url());
//! ```

mod admin;
mod api;
mod files;
mod request;
mod server;
mod state;
mod tls;

/// A version-4-shaped UUID, as the stand-in gives new objects (tools use it for pods too).
pub use state::new_uid;
mod status;
mod watch;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

use state::{Kind, State};

/// A running stand-in API server. Dropping the handle stops the server and
/// closes every connection, including ones held open by [`FaultAction::Hang`].
pub struct StandIn {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    /// `None` when serving plain HTTP.
    tls: Option<Arc<tls::Tls>>,
    /// Dropping this sender tells the accept loop to stop.
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// One API request as it arrived (admin calls are not recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string without `?` (empty when there is none).
    pub query: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    /// The body, decoded as UTF-8 (lossily).
    pub body: String,
    /// The RBAC verb: `get`, `list`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// The plural resource, with a subresource appended (`pods/status`);
    /// empty when the path is not an API resource.
    pub resource: String,
    /// When the request arrived: microseconds since the Unix epoch (so benchmarks can
    /// tell which requests waited for which).
    #[serde(default)]
    pub arrived_us: u64,
    /// The id of the connection it came on (see [`ConnectionRecord`]).
    #[serde(default)]
    pub connection: u64,
}

/// One accepted TCP connection (admin-only connections included: tell them apart by
/// `api_requests`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// Serial number, from 1, in accept order.
    pub id: u64,
    /// The client's address and port: one client process, one or more connections.
    pub peer: String,
    /// When it was accepted: microseconds since the Unix epoch.
    pub opened_us: u64,
    /// A TLS handshake completed on it (always false on a plain-HTTP server).
    pub tls_handshake: bool,
    /// The protocol ALPN settled on (`h2`, `http/1.1`), if the client offered any.
    pub alpn: Option<String>,
    /// API requests served on it (admin calls are not counted).
    pub api_requests: u64,
}

/// A fault to inject into matching API requests.
///
/// Faults are tried in insertion order; the first one that matches (method
/// and path filters) and has uses left is applied and its use counted.
/// Serde form: `{"method":"GET","path_contains":"/pods/","times":2,"action":{"status":503}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Only requests with this HTTP method (case-insensitive); `None` = any.
    #[serde(default)]
    pub method: Option<String>,
    /// Only requests whose path contains this string; `None` = any.
    #[serde(default)]
    pub path_contains: Option<String>,
    /// How many requests it applies to; `None` = forever.
    #[serde(default)]
    pub times: Option<usize>,
    pub action: FaultAction,
}

/// What a [`Fault`] does to a request.
///
/// Serde form: `{"status":503}`, `{"delay_ms":300}`, `"hang"`, `"reset"`, `"endless_body"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this code and a real `Status` body with the usual reason
    /// (`500 InternalError`, `503 ServiceUnavailable`, `429 TooManyRequests`
    /// plus `Retry-After: 1`, `409 Conflict`, `403 Forbidden`, `404 NotFound`...).
    Status(u16),
    /// Wait this long, then serve the request normally.
    #[serde(rename = "delay_ms", with = "millis")]
    Delay(Duration),
    /// Never answer; the connection stays open until the client gives up.
    Hang,
    /// Close the TCP connection with a reset, without any answer.
    Reset,
    /// Answer 200 with a JSON body that never ends (a broken proxy, a hostile server):
    /// what a client without a body size limit reads until memory runs out.
    EndlessBody,
}

impl Fault {
    /// A fault that applies `action` to every request, forever.
    pub fn new(action: FaultAction) -> Fault {
        Fault { method: None, path_contains: None, times: None, action }
    }

    /// Restrict the fault to one HTTP method.
    pub fn method(mut self, method: &str) -> Fault {
        self.method = Some(method.to_owned());
        self
    }

    /// Restrict the fault to paths containing `fragment`.
    pub fn path_contains(mut self, fragment: &str) -> Fault {
        self.path_contains = Some(fragment.to_owned());
        self
    }

    /// Apply the fault to the next `n` matching requests only.
    pub fn times(mut self, n: usize) -> Fault {
        self.times = Some(n);
        self
    }
}

/// How the stand-in talks: HTTPS like a real kube-apiserver (the default), or plain
/// HTTP (e.g. behind `kubectl proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Https,
    Http,
}

impl StandIn {
    /// Starts an HTTPS server on `127.0.0.1:<ephemeral port>`.
    ///
    /// # Panics
    /// If no loopback port can be bound (a broken test machine).
    pub fn start() -> StandIn {
        StandIn::start_with(Transport::Https)
    }

    /// Starts a server on `127.0.0.1:<ephemeral port>` speaking `transport`.
    ///
    /// # Panics
    /// If no loopback port can be bound (a broken test machine).
    pub fn start_with(transport: Transport) -> StandIn {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        TcpListener::bind(loopback)
            .and_then(|l| StandIn::start_with_listeners(l, Vec::new(), transport))
            .expect("kube-standin: cannot listen on 127.0.0.1")
    }

    /// Starts an HTTPS server on `addr`, on its own thread with its own tokio runtime,
    /// so it works from both sync and async tests.
    pub fn start_on(addr: SocketAddr) -> io::Result<StandIn> {
        StandIn::start_with_listeners(TcpListener::bind(addr)?, Vec::new(), Transport::Https)
    }

    /// Starts a server on an already bound `listener`, also accepting on `extra`
    /// listeners that share the same state (e.g. sockets bound inside other network
    /// namespaces, so "nodes" in netns reach one API server on their own loopback).
    pub fn start_with_listeners(
        listener: TcpListener,
        extra: Vec<TcpListener>,
        transport: Transport,
    ) -> io::Result<StandIn> {
        listener.set_nonblocking(true)?;
        for l in &extra {
            l.set_nonblocking(true)?;
        }
        let tls = match transport {
            Transport::Https => Some(Arc::new(tls::Tls::generate()?)),
            Transport::Http => None,
        };
        let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let state = Arc::new(Mutex::new(State::default()));
        let (shutdown, stopped) = oneshot::channel();
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new().name("kube-standin".into()).spawn(move || {
            runtime.block_on(async move {
                for l in extra {
                    // These end when the runtime is dropped below.
                    let (_keep, never) = oneshot::channel::<()>();
                    let state = Arc::clone(&shared);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let _keep = _keep;
                        server::serve(l, state, acceptor, never).await
                    });
                }
                server::serve(listener, shared, acceptor, stopped).await
            });
            // Dropping the runtime here cancels every connection task.
            drop(runtime);
        })?;
        Ok(StandIn { state, addr, tls, shutdown: Some(shutdown), thread: Some(thread) })
    }

    /// The base URL, e.g. `https://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) that signed the serving certificate; `None` over HTTP.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// Writes a kubeconfig (mode 0600, replaced atomically) whose current context
    /// points at this server with bearer `token` and, over HTTPS, the CA inline
    /// (`certificate-authority-data`), as kubeadm writes them. Unless a token was
    /// already required ([`StandIn::require_token`]), the server now requires this one.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> io::Result<()> {
        self.lock().token.get_or_insert_with(|| token.to_owned());
        files::write_private(path, &files::kubeconfig(&self.url(), token, self.ca_pem()))
    }

    /// When `Some`, API requests without `Authorization: Bearer <token>` get a
    /// 401 `Unauthorized` Status. `None` turns the check off (the default until a
    /// kubeconfig is written).
    pub fn require_token(&self, token: Option<&str>) {
        self.lock().token = token.map(str::to_owned);
    }

    /// Every connection accepted since the start (or the last
    /// [`StandIn::clear_connections`]), in accept order.
    pub fn connections(&self) -> Vec<ConnectionRecord> {
        self.lock().connections.clone()
    }

    /// Forgets the connection records (ids keep counting).
    pub fn clear_connections(&self) {
        self.lock().connections.clear();
    }

    /// Adds (or replaces) a Pod. `apiVersion`/`kind`, `metadata.namespace`
    /// (`default`), `uid` and `creationTimestamp` are filled when missing;
    /// `resourceVersion` is always assigned.
    ///
    /// # Panics
    /// If `pod` is not an object with `metadata.name` (a broken test).
    pub fn add_pod(&self, pod: Value) {
        if let Err(err) = self.lock().admit(Kind::Pod, pod) {
            panic!("kube-standin: add_pod: {err}");
        }
    }

    /// Adds (or replaces) a NetworkAttachmentDefinition, filled like `add_pod`.
    ///
    /// # Panics
    /// If `nad` is not an object with `metadata.name`.
    pub fn add_nad(&self, nad: Value) {
        if let Err(err) = self.lock().admit(Kind::Nad, nad) {
            panic!("kube-standin: add_nad: {err}");
        }
    }

    /// Loads Pods and NetworkAttachmentDefinitions from a file or from every
    /// `*.yaml`, `*.yml` and `*.json` file of a directory (sorted by name).
    /// YAML files may hold several documents; `kind: List` is unpacked; other
    /// kinds are ignored. Returns how many objects were added.
    pub fn load_manifests(&self, dir_or_file: &Path) -> io::Result<usize> {
        let documents = files::read_manifests(dir_or_file)?;
        let mut state = self.lock();
        let mut added = 0;
        for doc in documents {
            let kind = match doc.get("kind").and_then(Value::as_str) {
                Some("Pod") => Kind::Pod,
                Some("NetworkAttachmentDefinition") => Kind::Nad,
                _ => continue,
            };
            state.admit(kind, doc).map_err(|err| {
                let where_ = dir_or_file.display();
                io::Error::new(io::ErrorKind::InvalidData, format!("{where_}: {err}"))
            })?;
            added += 1;
        }
        Ok(added)
    }

    /// The most API requests that were ever in flight at once (admin calls excluded).
    pub fn max_in_flight(&self) -> usize {
        self.lock().max_in_flight
    }

    /// Removes a NetworkAttachmentDefinition (watchers get DELETED).
    pub fn remove_nad(&self, ns: &str, name: &str) {
        self.lock().remove(Kind::Nad, ns, name);
    }

    /// Compacts the watch history (as etcd does): a watch from an older
    /// resourceVersion gets a 410 Gone ERROR event and must relist.
    pub fn compact_watch_history(&self) {
        self.lock().compact();
    }

    /// Removes a Pod (no-op when it does not exist).
    pub fn remove_pod(&self, ns: &str, name: &str) {
        self.lock().remove(Kind::Pod, ns, name);
    }

    /// The current Pod object, if any.
    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.lock().get(Kind::Pod, ns, name).map(|pod| Value::clone(pod))
    }

    /// Every Event created through the API (core/v1 and events.k8s.io/v1),
    /// in creation order, as currently stored.
    pub fn events(&self) -> Vec<Value> {
        self.lock().events()
    }

    /// Every API request in arrival order, including ones that hit a fault.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Adds `d` before every API request is served.
    pub fn set_latency(&self, d: Duration) {
        self.lock().latency = d;
    }

    /// Appends a fault; faults are matched in insertion order.
    pub fn add_fault(&self, f: Fault) {
        self.lock().faults.push(f);
    }

    /// Removes all faults.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// RBAC emulation: requests with this `verb` on this `resource` (as in
    /// [`RecordedRequest`], e.g. `("patch", "pods/status")`) get the
    /// apiserver's 403 Forbidden Status, and SelfSubjectAccessReviews say no.
    pub fn deny(&self, verb: &str, resource: &str) {
        self.lock().denied.insert((verb.to_owned(), resource.to_owned()));
    }

    /// Undoes [`StandIn::deny`].
    pub fn allow(&self, verb: &str, resource: &str) {
        self.lock().denied.remove(&(verb.to_owned(), resource.to_owned()));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread has already been reported there.
            let _ = thread.join();
        }
    }
}

/// Locks the state, ignoring poisoning: a panicking test must not cascade.
pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serde helper: a `Duration` as integer milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
