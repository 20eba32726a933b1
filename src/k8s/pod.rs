//! The pod in the API: who the pod is (Go Multus' GetPod, or the runtime's annotations)
//! and the events recorded on it. Planning its networks is `commands::plan`.

use super::client::Kube;
use crate::cni::K8sArgs;
use crate::config::MultusConf;
use crate::error::{CniError, KubeError, Result};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The capability through which containerd passes the pod's annotations.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// What we know of the pod.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub annotations: BTreeMap<String, String>,
    /// The annotations came from the runtime: no pod GET was made.
    pub from_runtime: bool,
}

impl PodInfo {
    /// The UID a status write must find on the pod (a precondition, so the status of a
    /// sandbox never lands on a pod recreated under the same name). `None` when unknown,
    /// and for a static pod whose UID came from the runtime: its mirror pod in the API
    /// has another UID.
    pub fn precondition_uid(&self) -> Option<&str> {
        if self.uid.is_empty() || (self.from_runtime && is_static_pod(&self.annotations)) {
            return None;
        }
        Some(&self.uid)
    }
}

/// A static pod (from a file or URL, not the API): the API only has its mirror pod,
/// whose UID differs from the kubelet's.
fn is_static_pod(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get("kubernetes.io/config.source").is_some_and(|s| s != "api")
}

pub enum PodLookup {
    Found(PodInfo),
    /// The API says the pod does not exist.
    NotFound,
}

/// The pod's annotations as the runtime passed them, when our config declares the
/// capability and the runtime filled it (a `null` value means "no annotations").
pub fn runtime_annotations(conf: &MultusConf) -> Option<BTreeMap<String, String>> {
    let declared = conf.capabilities.as_ref().and_then(|c| c.get(POD_ANNOTATIONS_CAPABILITY)).and_then(Value::as_bool)
        == Some(true);
    let rc = conf.runtime_config.as_ref()?;
    if !declared {
        return None;
    }
    match rc.get(POD_ANNOTATIONS_CAPABILITY)? {
        Value::Null => Some(BTreeMap::new()),
        Value::Object(m) => {
            Some(m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        }
        _ => None,
    }
}

/// Find the pod: from the runtime's annotations (no API call), else one GET.
/// A UID that differs from the runtime's fails the ADD, unless the pod is a static pod
/// (its mirror pod has another UID), as in Go Multus.
pub async fn lookup(conf: &MultusConf, kube: &Kube, k8s: &K8sArgs) -> Result<PodLookup> {
    if let Some(annotations) = runtime_annotations(conf) {
        return Ok(PodLookup::Found(PodInfo {
            namespace: k8s.namespace.clone(),
            name: k8s.name.clone(),
            uid: k8s.uid.clone(),
            annotations,
            from_runtime: true,
        }));
    }
    let Some(pod) = kube
        .get_pod(&k8s.namespace, &k8s.name)
        .await
        .map_err(|e| e.context("error waiting for pod").about_pod_phrase())?
    else {
        return Ok(PodLookup::NotFound);
    };
    let annotations = pod.metadata.annotations.unwrap_or_default();
    let uid = pod.metadata.uid.unwrap_or_default();
    let static_pod = is_static_pod(&annotations);
    if !k8s.uid.is_empty() && k8s.uid != uid && !static_pod {
        return Err(
            CniError::from(KubeError::PodUidMismatch { expected: k8s.uid.clone(), got: uid }).about_pod_phrase()
        );
    }
    Ok(PodLookup::Found(PodInfo {
        namespace: k8s.namespace.clone(),
        name: k8s.name.clone(),
        uid,
        annotations,
        from_runtime: false,
    }))
}

/// A core/v1 Event about the pod, from the component `multus` (as Go Multus' recorder).
pub fn event(pod: &PodInfo, type_: &str, reason: &str, message: String) -> Event {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let nanos = now.0.as_nanosecond();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", pod.name, nanos)),
            namespace: Some(pod.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: (!pod.uid.is_empty()).then(|| pod.uid.clone()),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(type_.into()),
        source: Some(EventSource { component: Some("multus".into()), host: None }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("multus".into()),
        ..Default::default()
    }
}

/// The longest we wait for events before exiting (they are best effort, but a process
/// that exits before sending them loses them, as Go Multus' often are).
pub const EVENTS_DEADLINE: Duration = Duration::from_secs(2);

/// Send events concurrently, bounded by [`EVENTS_DEADLINE`]; failures are logged.
pub async fn send_events(kube: &Kube, pod: &PodInfo, events: Vec<(&str, &str, String)>) {
    let sends = events.into_iter().map(|(t, r, m)| {
        let ev = event(pod, t, r, m);
        async move {
            if let Err(e) = kube.create_event(&pod.namespace, &ev).await {
                tracing::warn!("event for pod {}/{} not recorded: {}", pod.namespace, pod.name, e.msg);
            }
        }
    });
    let deadline = EVENTS_DEADLINE.min(kube.remaining().max(Duration::from_millis(200)));
    if tokio::time::timeout(deadline, futures::future::join_all(sends)).await.is_err() {
        tracing::warn!("events for pod {}/{} not all recorded within {deadline:?}", pod.namespace, pod.name);
    }
}
