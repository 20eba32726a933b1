//! Transport: HTTPS (or plain HTTP), HTTP/2 or HTTP/1.1, one task per connection;
//! connection and handshake records, request recording, latency, faults.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio_rustls::TlsAcceptor;

use crate::api::{self, ApiRequest, Route};
use crate::state::State;
use crate::status::Reply;
use crate::{ConnectionRecord, FaultAction, RecordedRequest, admin, lock};

type Shared = Arc<Mutex<State>>;

/// HTTP/1.1 or HTTP/2 (by ALPN or preface): the same settings for every connection,
/// made once per listener.
type HttpBuilder = auto::Builder<TokioExecutor>;

/// Accepts connections until `stop` fires (or its sender is dropped).
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    state: Shared,
    tls: Option<TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("kube-standin: cannot use the listening socket: {err}");
            return;
        }
    };
    let builder = Arc::new(HttpBuilder::new(TokioExecutor::new()));
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let builder = Arc::clone(&builder);
                    tokio::spawn(serve_connection(stream, peer, Arc::clone(&state), tls.clone(), builder));
                }
                Err(err) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    eprintln!("kube-standin: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Returned by the service to make hyper drop the connection unanswered.
#[derive(Debug)]
struct ResetConnection;

impl fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset by an injected fault")
    }
}

impl std::error::Error for ResetConnection {}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or_default()
}

/// What a request handler knows about its connection.
struct Connection {
    id: u64,
    /// A second descriptor for the socket, so a Reset fault can set SO_LINGER=0
    /// (close => RST) although hyper owns the stream.
    socket: Option<OwnedFd>,
    /// Fired by a Reset fault: the connection task drops the connection (with HTTP/2 a
    /// failed request only resets its stream, not the connection).
    reset: Notify,
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Shared,
    tls: Option<TlsAcceptor>,
    builder: Arc<HttpBuilder>,
) {
    let _ = stream.set_nodelay(true);
    let id = {
        let mut state = lock(&state);
        state.next_connection += 1;
        let id = state.next_connection;
        state.connections.push(ConnectionRecord {
            id,
            peer: peer.to_string(),
            opened_us: now_us(),
            tls_handshake: false,
            alpn: None,
            api_requests: 0,
        });
        id
    };
    let connection =
        Arc::new(Connection { id, socket: stream.as_fd().try_clone_to_owned().ok(), reset: Notify::new() });
    let service = {
        let connection = Arc::clone(&connection);
        let state = Arc::clone(&state);
        service_fn(move |req| {
            let state = Arc::clone(&state);
            let connection = Arc::clone(&connection);
            async move { handle(&state, req, &connection).await }
        })
    };
    // Errors here are clients going away, failed handshakes, or a Reset fault:
    // nothing to report (a failed handshake shows as `tls_handshake: false`).
    let served = async {
        match tls {
            None => {
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            }
            Some(acceptor) => {
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let alpn = stream.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
                if let Some(record) = lock(&state).connection_mut(id) {
                    record.tls_handshake = true;
                    record.alpn = alpn;
                }
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            }
        }
    };
    tokio::select! {
        _ = served => {}
        _ = connection.reset.notified() => {}
    }
}

async fn handle(
    state: &Shared,
    req: Request<Incoming>,
    connection: &Connection,
) -> Result<Response<ApiBody>, ResetConnection> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| ResetConnection)?.to_bytes();
    let path = parts.uri.path();
    let method = parts.method.as_str();
    if let Some(admin_path) = path.strip_prefix("/_standin/") {
        return Ok(respond(admin::serve(state, method, admin_path, &body)));
    }

    let _in_flight = crate::watch::InFlight::enter(state);
    let header = |name| parts.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let route = Route::parse(path);
    let query = parts.uri.query().unwrap_or("");
    let verb = api::verb_with_query(method, route.as_ref(), query);
    let req = ApiRequest {
        method,
        route: route.as_ref(),
        verb: &verb,
        authorization: header(AUTHORIZATION),
        content_type: header(CONTENT_TYPE),
        accept: header(ACCEPT),
        query,
        body: &body,
    };
    let (latency, fault) = {
        let mut state = lock(state);
        if let Some(record) = state.connection_mut(connection.id) {
            record.api_requests += 1;
        }
        state.requests.push(RecordedRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            content_type: req.content_type.map(str::to_owned),
            authorization: req.authorization.map(str::to_owned),
            body: String::from_utf8_lossy(&body).into_owned(),
            verb: String::from(verb.as_ref()),
            resource: route.as_ref().map(|r| r.resource().into_owned()).unwrap_or_default(),
            arrived_us: now_us(),
            connection: connection.id,
        });
        (state.latency, state.take_fault(method, path))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        None => {}
        Some(FaultAction::Status(code)) => return Ok(respond(api::fault_reply(code, &req))),
        Some(FaultAction::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(FaultAction::Hang) => {
            // Never answer; the client gives up on its own, and the task (with
            // its connection) goes when the server stops.
            std::future::pending::<()>().await;
        }
        Some(FaultAction::EndlessBody) => {
            let mut response = Response::new(Either::Right(EndlessBody::new()));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Ok(response);
        }
        Some(FaultAction::Reset) => {
            if let Some(socket) = &connection.socket {
                let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
            }
            connection.reset.notify_one();
            return Err(ResetConnection);
        }
    }
    crate::watch::wait(state, &req).await;
    let reply = api::serve(&mut lock(state), &req);
    Ok(respond(reply))
}

/// A whole answer, or [`FaultAction::EndlessBody`]'s.
type ApiBody = Either<Full<Bytes>, EndlessBody>;

/// `{"apiVersion":"v1","kind":"Status","pad":"xxxx…` and never the end: 64 KiB frames of
/// the same (shared) bytes, as fast as the client reads them.
struct EndlessBody {
    started: bool,
    chunk: Bytes,
}

impl EndlessBody {
    fn new() -> EndlessBody {
        EndlessBody { started: false, chunk: Bytes::from(vec![b'x'; 64 << 10]) }
    }
}

impl hyper::body::Body for EndlessBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let data = if std::mem::replace(&mut self.started, true) {
            self.chunk.clone()
        } else {
            Bytes::from_static(br#"{"apiVersion":"v1","kind":"Status","pad":""#)
        };
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
    }
}

fn respond(reply: Reply) -> Response<ApiBody> {
    let body = serde_json::to_vec(&*reply.body).unwrap_or_default();
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *response.status_mut() =
        hyper::StatusCode::from_u16(reply.code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if reply.code == 429 {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
