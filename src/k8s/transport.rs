//! The HTTP stack under the kube client, built here rather than by `Client::try_from`,
//! because kube's own stack is slow for a process that makes a handful of requests
//! and exits:
//!
//! * its `HttpConnector` leaves `TCP_NODELAY` off, so a small request written in two
//!   TLS records waits for the peer's delayed ACK (a 40 ms stall per ADD against a real
//!   apiserver, where Go's client sets it on);
//! * it offers only HTTP/1.1, so the concurrent NAD GETs of one ADD each open a
//!   connection and pay a TLS handshake of their own.
//!
//! Here every connection has `TCP_NODELAY`, TLS offers ALPN `h2` then `http/1.1`, and
//! the pool keeps the connection: with HTTP/2 (what kube-apiserver speaks) every
//! request of an invocation, concurrent ones included, shares ONE connection and ONE
//! handshake. The TLS trust is kube's (`rustls_client_config`): only the kubeconfig's
//! CA when it has one (no system trust-store load), client certificates, exec
//! identities, `tls-server-name`, `insecure-skip-tls-verify`. Authentication,
//! extra headers and the base URI are kube's own layers.
//!
//! The one connection is opened by [`Preconnect::start`]: by the first request, or
//! ahead of it. An ADD whose pod annotations came from the runtime and whose NADs came
//! from the node agent's mirror has the status write as its only request; it opens the
//! connection just before its first delegate, so that the TCP + TLS + HTTP/2 handshakes
//! do not wait until the delegates have finished. When that connection speaks HTTP/2,
//! requests go straight onto it, all at once (the NAD GETs of one ADD, the status write
//! with its events); otherwise it is handed to the pool.
//!
//! Every response body is read through a `maxApiBodyBytes` cap ([`ApiBodyTooLarge`]): a
//! hostile or broken server streaming an endless body ends the call, not the process.

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::{Client, Config};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tower::{BoxError, ServiceBuilder};

/// A response body went past `maxApiBodyBytes`; what [`super::errors::Cause`] finds
/// below kube's error to name the key.
#[derive(Debug)]
pub struct ApiBodyTooLarge {
    pub limit: u64,
}

impl std::fmt::Display for ApiBodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the API server's response body is larger than the limit of {} bytes (raise it with the config key \"maxApiBodyBytes\")",
            self.limit
        )
    }
}

impl std::error::Error for ApiBodyTooLarge {}

/// `body`, ending in [`ApiBodyTooLarge`] once more than `limit` bytes have come.
fn capped<B>(body: B, limit: u64) -> impl http_body_util::BodyExt<Data = B::Data, Error = BoxError>
where
    B: http_body_util::BodyExt,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    let max = usize::try_from(limit).unwrap_or(usize::MAX);
    http_body_util::Limited::new(body, max).map_err(move |e: BoxError| {
        if e.is::<http_body_util::LengthLimitError>() { Box::new(ApiBodyTooLarge { limit }) as BoxError } else { e }
    })
}

/// The kube client over a fast transport, and the handle that opens its connection
/// early. `connect_timeout` bounds each TCP connect; the caller bounds whole requests;
/// `max_body_bytes` (`maxApiBodyBytes`) each body.
pub fn client(cfg: &Config, connect_timeout: Duration, max_body_bytes: u64) -> kube::Result<(Client, Preconnect)> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));

    let builder =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(cfg.rustls_client_config()?).https_or_http();
    let builder = match &cfg.tls_server_name {
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| kube::Error::RustlsTls(kube::client::RustlsTlsError::InvalidServerName(e)))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let https = builder.enable_all_versions().wrap_connector(tcp);
    let early = Preconnect {
        connector: https,
        server: cfg.cluster_url.clone(),
        timeout: connect_timeout,
        started: Arc::default(),
        h2: Arc::default(),
        slot: Arc::default(),
    };
    let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(early.clone());
    // The connection is made by `Preconnect` (started by the first request at the latest)
    // and, when it speaks HTTP/2, every request goes onto it at once. Otherwise (HTTP/1.1,
    // or the early connection failed) requests go through the pool, which cannot know the
    // server speaks HTTP/2 before a first answer (ALPN is only learnt in the handshake):
    // requests sent together would each open a connection and pay a handshake. Hold them
    // until the first answer; after that they share its connection.
    let gate = Arc::new(FirstRequestGate::new());
    let preconnected = early.clone();
    let pool = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (pool, gate, early) = (pool.clone(), Arc::clone(&gate), preconnected.clone());
        async move {
            // The first request opens the one connection if nothing has yet: requests sent
            // together then share it at once, without waiting for a first answer.
            early.start();
            let response = match early.h2_sender().await {
                Some(mut h2) => h2.send_request(req).await.map_err(BoxError::from)?,
                None => {
                    let _leader = gate.enter().await;
                    pool.request(req).await.map_err(BoxError::from)?
                }
            };
            Ok::<_, BoxError>(response.map(|body| capped(body, max_body_bytes)))
        }
    });

    let service = ServiceBuilder::new()
        .layer(cfg.base_uri_layer())
        .option_layer(cfg.auth_layer()?)
        .layer(cfg.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(pool);
    Ok((Client::new(service, cfg.default_namespace.clone()), early))
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type Connection = <Connector as tower::Service<http::Uri>>::Response;
type H2Sender = hyper::client::conn::http2::SendRequest<kube::client::Body>;

/// The pool's connector, able to open the invocation's connection before anybody asks.
/// An early connection that negotiated HTTP/2 gets its own HTTP/2 handshake and serves
/// every request; one that did not (HTTP/1.1, a plain-http proxy) is handed to the pool's
/// next connect. An early failure costs nothing but the attempt: requests then connect
/// through the pool as if nothing had been started.
#[derive(Clone)]
pub struct Preconnect {
    connector: Connector,
    server: http::Uri,
    /// How long the early connection may take, handshakes included; past it, requests
    /// connect through the pool (a fresh attempt each retry).
    timeout: Duration,
    /// Whether [`Preconnect::start`] was called.
    started: Arc<AtomicBool>,
    /// The early connection's HTTP/2 sender, once it is made (`None`: not HTTP/2, or failed).
    h2: Arc<tokio::sync::OnceCell<Option<H2Sender>>>,
    /// An early HTTP/1.1 connection, until the pool takes it.
    slot: Arc<std::sync::Mutex<Option<Connection>>>,
}

impl Preconnect {
    /// Start connecting to the API server in the background (TCP, TLS, ALPN, and the
    /// HTTP/2 handshake) unless already started (by this or by a first request). Needs a
    /// running tokio runtime; the connection is made while the caller awaits something
    /// else (the delegates).
    pub fn start(&self) {
        if !self.started.swap(true, Ordering::AcqRel) {
            let early = self.clone();
            tokio::spawn(async move { early.h2_sender().await });
        }
    }

    /// The early HTTP/2 connection, waiting for it while it is being made; `None` when
    /// none was started, it is not HTTP/2, it failed, or it has since closed.
    async fn h2_sender(&self) -> Option<H2Sender> {
        if !self.started.load(Ordering::Acquire) {
            return None;
        }
        let early = || async { tokio::time::timeout(self.timeout, self.connect_early()).await.ok().flatten() };
        let sender = self.h2.get_or_init(early).await.as_ref()?;
        (!sender.is_closed()).then(|| sender.clone())
    }

    async fn connect_early(&self) -> Option<H2Sender> {
        use hyper_util::client::legacy::connect::Connection as _;
        let connection = tower::ServiceExt::oneshot(self.connector.clone(), self.server.clone()).await.ok()?;
        if !connection.connected().is_negotiated_h2() {
            *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(connection);
            return None;
        }
        let (sender, driver) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(connection)
            .await
            .inspect_err(|e| tracing::debug!("early HTTP/2 handshake failed: {e}"))
            .ok()?;
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::debug!("early HTTP/2 connection ended: {e}");
            }
        });
        Some(sender)
    }
}

impl tower::Service<http::Uri> for Preconnect {
    type Response = Connection;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Connection, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        // The HTTPS connector is always ready; each connect below drives its own clone.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let early = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        let connector = self.connector.clone();
        Box::pin(async move {
            match early {
                Some(connection) => Ok(connection),
                None => tower::ServiceExt::oneshot(connector, uri).await,
            }
        })
    }
}

/// Lets the first request through alone; the others wait until it has finished
/// (answered, failed or cancelled).
struct FirstRequestGate {
    taken: AtomicBool,
    done: watch::Sender<bool>,
}

/// Held by the first request; dropping it opens the gate.
struct Leader<'a>(&'a watch::Sender<bool>);

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl FirstRequestGate {
    fn new() -> FirstRequestGate {
        FirstRequestGate { taken: AtomicBool::new(false), done: watch::Sender::new(false) }
    }

    async fn enter(&self) -> Option<Leader<'_>> {
        if !self.taken.swap(true, Ordering::AcqRel) {
            return Some(Leader(&self.done));
        }
        let mut opened = self.done.subscribe();
        // The sender lives as long as `self`: `wait_for` cannot fail here.
        let _ = opened.wait_for(|done| *done).await;
        None
    }
}
