//! The kubelet pod-resources API (gRPC `v1.PodResourcesLister`) over its unix socket:
//! which devices the kubelet allocated to a pod.
//!
//! `Get` (one pod) is asked first, where the kubelet offers it; a kubelet that has it
//! disabled or lacks it answers with an error and we `List` (every pod of the node, as Go
//! Multus always does). Every call runs under the caller's deadline; the kubelet's rate
//! limiter (`ResourceExhausted` during pod churn) and a restarting kubelet (`Unavailable`)
//! are retried with backoff inside it.

use super::ResourceMap;
use crate::error::{CniError, Result, code};
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
    let c = if transient(s) || s.code() == tonic::Code::DeadlineExceeded {
        code::TRY_AGAIN_LATER
    } else {
        code::KUBERNETES
    };
    CniError::new(c, format!("kubelet pod-resources {what} on {}: {:?}: {}", socket.display(), s.code(), s.message()))
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
    let mut client = client(socket)?;
    let timed_out = || {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "kubelet pod-resources on {} did not answer within {budget:?} (the API budget, apiTimeoutSeconds)",
                socket.display()
            ),
        )
    };
    let mut backoff = Duration::from_millis(50);
    // One pod: `Get`. Any failure but a transient one sends us to `List` (a kubelet
    // without the method, or with KubeletPodResourcesGet off).
    let get = v1::GetPodResourcesRequest { pod_name: name.into(), pod_namespace: namespace.into() };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, client.get(get.clone())).await {
            Err(_) => return Err(timed_out()),
            Ok(Ok(resp)) => {
                let pod = resp.into_inner().pod_resources.unwrap_or_default();
                let mut map = ResourceMap::default();
                if pod.name == name && pod.namespace == namespace {
                    map.add_pod(&pod);
                }
                map.finish();
                return Ok(map);
            }
            Ok(Err(s)) if transient(&s) && Instant::now() + backoff < deadline => {
                tracing::debug!("pod-resources Get: {:?} {}; retrying in {backoff:?}", s.code(), s.message());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Ok(Err(s)) if transient(&s) => return Err(grpc_error(socket, "Get", &s)),
            Ok(Err(s)) => {
                tracing::debug!("pod-resources Get unavailable ({:?}: {}); using List", s.code(), s.message());
                break;
            }
        }
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, client.list(v1::ListPodResourcesRequest {})).await {
            Err(_) => return Err(timed_out()),
            Ok(Ok(resp)) => {
                let mut map = ResourceMap::default();
                for pod in resp.into_inner().pod_resources.iter().filter(|p| p.name == name && p.namespace == namespace)
                {
                    map.add_pod(pod);
                }
                map.finish();
                return Ok(map);
            }
            Ok(Err(s)) if transient(&s) && Instant::now() + backoff < deadline => {
                tracing::debug!("pod-resources List: {:?} {}; retrying in {backoff:?}", s.code(), s.message());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Ok(Err(s)) => return Err(grpc_error(socket, "List", &s)),
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
        Err(_) => Err(CniError::new(code::TRY_AGAIN_LATER, format!("no answer within {budget:?}"))),
        Ok(Err(s)) => Err(grpc_error(socket, "List", &s)),
        Ok(Ok(resp)) => Ok(resp.into_inner().pod_resources.len()),
    }
}
