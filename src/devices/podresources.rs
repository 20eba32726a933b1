//! The kubelet pod-resources API (gRPC `v1.PodResourcesLister`) over its unix socket:
//! which devices the kubelet allocated to a pod.
//!
//! `Get` (one pod) is asked first, where the kubelet offers it; a kubelet that has it
//! disabled or lacks it answers with an error and we `List` (every pod of the node, as Go
//! Multus always does). Every call runs under the caller's deadline; the kubelet's rate
//! limiter (`ResourceExhausted` during pod churn) and a restarting kubelet (`Unavailable`)
//! are retried with backoff inside it.

use super::ResourceMap;
use crate::error::{CniError, KubeError, Result, WaitError};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::{Endpoint, Uri};

/// The generated messages and stubs of `proto/podresources/v1/api.proto`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("v1");
}

use v1::pod_resources_lister_client::PodResourcesListerClient;

/// The kubelet's own limit on what it sends is 16 MiB (as Go Multus' client accepts): a
/// `List` on a dense node is large. Beyond that we refuse rather than buffer without bound.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

fn transient(s: &tonic::Status) -> bool {
    matches!(s.code(), tonic::Code::ResourceExhausted | tonic::Code::Unavailable)
}

fn grpc_error(socket: &Path, what: &str, s: &tonic::Status) -> CniError {
    KubeError::Kubelet {
        method: what.to_string(),
        socket: socket.display().to_string(),
        status: format!("{:?}", s.code()),
        message: s.message().to_string(),
        transient: transient(s) || s.code() == tonic::Code::DeadlineExceeded,
    }
    .into()
}

/// Connect to the socket; the connection is made lazily by the first call.
fn client(socket: &Path) -> Result<PodResourcesListerClient<tonic::transport::Channel>> {
    let path: PathBuf = socket.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    let endpoint = Endpoint::try_from("http://kubelet.sock")
        .map_err(|e| CniError::invalid_config(format!("pod-resources endpoint: {e}")))?;
    let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
    }));
    Ok(PodResourcesListerClient::new(channel).max_decoding_message_size(MAX_MESSAGE))
}

/// The devices (device plugins and DRA) the kubelet allocated to `namespace/name`,
/// within `budget`.
pub async fn pod_resources(socket: &Path, namespace: &str, name: &str, budget: Duration) -> Result<ResourceMap> {
    if namespace.is_empty() || name.is_empty() {
        return Err(CniError::invalid_config("pod-resources lookup needs the pod's name and namespace"));
    }
    let deadline = Instant::now() + budget;
    let client = client(socket)?;
    let timed_out = || CniError::from(WaitError::PodResources { socket: socket.display().to_string(), budget });
    let mut retry = Retry { socket, deadline, backoff: Duration::from_millis(50), timed_out: &timed_out };
    let of_pod = |p: &v1::PodResources| p.name == name && p.namespace == namespace;
    let mut map = ResourceMap::default();
    // One pod: `Get`. Any failure but a transient one sends us to `List` (a kubelet
    // without the method, or with KubeletPodResourcesGet off).
    let get = v1::GetPodResourcesRequest { pod_name: name.into(), pod_namespace: namespace.into() };
    let answer = retry
        .call("Get", || {
            let (mut client, get) = (client.clone(), get.clone());
            async move { client.get(get).await }
        })
        .await?;
    match answer {
        Ok(resp) => {
            let pod = resp.into_inner().pod_resources.unwrap_or_default();
            if of_pod(&pod) {
                map.add_pod(&pod);
            }
        }
        Err(s) => {
            tracing::debug!("pod-resources Get unavailable ({:?}: {}); using List", s.code(), s.message());
            let resp = retry
                .call("List", || {
                    let mut client = client.clone();
                    async move { client.list(v1::ListPodResourcesRequest {}).await }
                })
                .await?
                .map_err(|s| grpc_error(socket, "List", &s))?;
            resp.into_inner().pod_resources.iter().filter(|p| of_pod(p)).for_each(|pod| map.add_pod(pod));
        }
    }
    map.finish();
    Ok(map)
}

/// Calls to the kubelet under one deadline; transient failures retried with a backoff
/// that carries over from one method to the next.
struct Retry<'a, F> {
    socket: &'a Path,
    deadline: Instant,
    backoff: Duration,
    timed_out: &'a F,
}

impl<F: Fn() -> CniError> Retry<'_, F> {
    /// The answer, or the non-transient failure for the caller to judge; a timeout or a
    /// transient failure with no time left for another try is an error.
    async fn call<T, Fut>(
        &mut self,
        method: &str,
        call: impl Fn() -> Fut,
    ) -> Result<std::result::Result<tonic::Response<T>, tonic::Status>>
    where
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, call()).await {
                Err(_) => return Err((self.timed_out)()),
                Ok(Err(s)) if transient(&s) && Instant::now() + self.backoff < self.deadline => {
                    tracing::debug!(
                        "pod-resources {method}: {:?} {}; retrying in {:?}",
                        s.code(),
                        s.message(),
                        self.backoff
                    );
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
                }
                Ok(Err(s)) if transient(&s) => return Err(grpc_error(self.socket, method, &s)),
                Ok(answer) => return Ok(answer),
            }
        }
    }
}

impl ResourceMap {
    /// Every container's devices: device-plugin IDs by resource name, and DRA CDI devices
    /// (`vendor.com/class=<id>`) by their class name, as Go Multus v4.3 reads them.
    pub(crate) fn add_pod(&mut self, pod: &v1::PodResources) {
        for c in &pod.containers {
            for d in &c.devices {
                self.add(&d.resource_name, d.device_ids.iter().cloned());
            }
            for dr in c.dynamic_resources.iter().filter(|d| !d.class_name.is_empty()) {
                let ids = dr.claim_resources.iter().flat_map(|r| &r.cdi_devices).filter_map(|cdi| {
                    match cdi.name.split_once('=') {
                        Some((_, id)) if !id.is_empty() && !id.contains('=') => Some(id.to_string()),
                        _ => {
                            tracing::warn!(
                                "ignoring CDI device {:?} of claim {}: not vendor/class=device",
                                cdi.name,
                                dr.claim_name
                            );
                            None
                        }
                    }
                });
                self.add(&dr.class_name, ids);
            }
        }
    }
}

/// `multus doctor`: can the kubelet's pod-resources API be reached? The number of pods it
/// reports, within `budget`.
pub async fn probe(socket: &Path, budget: Duration) -> Result<usize> {
    let mut client = client(socket)?;
    match tokio::time::timeout(budget, client.list(v1::ListPodResourcesRequest {})).await {
        Err(_) => Err(WaitError::NoAnswer(budget).into()),
        Ok(Err(s)) => Err(grpc_error(socket, "List", &s)),
        Ok(Ok(resp)) => Ok(resp.into_inner().pod_resources.len()),
    }
}
