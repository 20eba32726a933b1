//! The pod's side of an ADD: who the pod is, which networks it asks for, and the
//! delegate list that results (Go Multus' GetPod, GetDefaultNetworks and
//! TryLoadPodDelegates).

use super::client::Kube;
use super::nad;
use super::selection::{self, DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, NetworkSelection};
use crate::cni::K8sArgs;
use crate::commands::Node;
use crate::delegate::{Delegate, NetworkConfig, PluginExec};
use crate::error::{CniError, Result, code};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
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
pub fn runtime_annotations<E, N>(node: &Node<E, N>) -> Option<BTreeMap<String, String>> {
    let declared =
        node.conf.capabilities.as_ref().and_then(|c| c.get(POD_ANNOTATIONS_CAPABILITY)).and_then(Value::as_bool)
            == Some(true);
    let rc = node.conf.runtime_config.as_ref()?;
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
pub async fn lookup<E, N>(node: &Node<E, N>, kube: &Kube, k8s: &K8sArgs) -> Result<PodLookup> {
    if let Some(annotations) = runtime_annotations(node) {
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
        .map_err(|e| e.context(format!("{} error waiting for pod", k8s.tag())))?
    else {
        return Ok(PodLookup::NotFound);
    };
    let annotations = pod.metadata.annotations.unwrap_or_default();
    let uid = pod.metadata.uid.unwrap_or_default();
    let static_pod = is_static_pod(&annotations);
    if !k8s.uid.is_empty() && k8s.uid != uid && !static_pod {
        return Err(CniError::new(
            code::KUBERNETES,
            format!("{} expected pod UID {:?} but got {:?} from Kube API", k8s.tag(), k8s.uid, uid),
        ));
    }
    Ok(PodLookup::Found(PodInfo {
        namespace: k8s.namespace.clone(),
        name: k8s.name.clone(),
        uid,
        annotations,
        from_runtime: false,
    }))
}

/// The delegates of a pod, and the default-route request of each.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub delegates: Vec<Delegate>,
    pub default_routes: Vec<Option<Vec<IpAddr>>>,
}

enum Source {
    Ready(NetworkConfig),
    /// A NAD; `or_file` also accepts a config of that name in confDir (clusterNetwork,
    /// defaultNetworks given as names).
    Nad {
        namespace: String,
        name: String,
        or_file: bool,
    },
}

struct Slot {
    source: Source,
    selection: Option<NetworkSelection>,
    master: bool,
}

fn slot_for_name<E, N>(node: &Node<E, N>, value: &str, kube: Option<&Kube>, master: bool) -> Result<Slot> {
    let source = if value.contains('/') {
        Source::Ready(nad::load_path(Path::new(value))?)
    } else if kube.is_some() {
        Source::Nad { namespace: node.conf.multus_namespace.clone(), name: value.to_string(), or_file: true }
    } else {
        Source::Ready(nad::find_in_conf_dir(Path::new(&node.conf.conf_dir), value)?)
    };
    Ok(Slot { source, selection: None, master })
}

/// Who asks for a plan: ADD records a `NoNetworkFound` warning on the pod when a NAD
/// cannot be had; a cache-less DEL rebuilding the list records nothing (as Go Multus,
/// no events on DEL: the pod is going away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanFor {
    Add,
    Del,
}

/// Build the delegate list of an ADD (also used by a DEL that has no cache).
pub async fn plan<E: PluginExec, N>(
    node: &Node<E, N>,
    kube: Option<&Kube>,
    k8s: &K8sArgs,
    pod: Option<&PodInfo>,
    purpose: PlanFor,
) -> Result<Plan> {
    let conf = &node.conf;
    let mut slots: Vec<Slot> = Vec::new();
    if !conf.cluster_network.is_empty() {
        slots.push(slot_for_name(node, &conf.cluster_network, kube, true)?);
        let system = pod.is_none_or(|p| conf.system_namespaces.contains(&p.namespace));
        if !system {
            for n in &conf.default_networks {
                slots.push(slot_for_name(node, n, kube, false)?);
            }
        }
    } else {
        for (i, d) in node.static_delegates()?.into_iter().enumerate() {
            slots.push(Slot { source: Source::Ready(d.config), selection: None, master: i == 0 });
        }
    }
    let mut selections: Vec<NetworkSelection> = Vec::new();
    if let (Some(pod), Some(_)) = (pod, kube) {
        let isolate = |sel: &NetworkSelection| -> Result<()> {
            if conf.namespace_isolation {
                selection::check_namespace_isolation(sel, &pod.namespace, &conf.global_namespaces())
                    .map_err(|e| CniError::invalid_config(format!("{} {e}", k8s.tag())))?;
            }
            Ok(())
        };
        if let Some(v) = pod.annotations.get(DEFAULT_NETWORK_ANNOTATION) {
            let sel = selection::parse_default_network(v, &conf.multus_namespace)
                .map_err(|e| CniError::invalid_config(format!("{} {DEFAULT_NETWORK_ANNOTATION}: {e}", k8s.tag())))?;
            isolate(&sel)?; // Go Multus does not isolate this annotation
            let source = Source::Nad { namespace: sel.namespace.clone(), name: sel.name.clone(), or_file: false };
            let master = Slot { source, selection: Some(sel.clone()), master: true };
            if slots.is_empty() {
                slots.push(master);
            } else {
                slots[0] = master;
            }
            selections.push(sel);
        }
        if let Some(v) = pod.annotations.get(NETWORKS_ANNOTATION) {
            let sels = selection::parse_networks(v, &pod.namespace)
                .map_err(|e| CniError::invalid_config(format!("{} {NETWORKS_ANNOTATION}: {e}", k8s.tag())))?;
            for sel in sels {
                isolate(&sel)?;
                let source = Source::Nad { namespace: sel.namespace.clone(), name: sel.name.clone(), or_file: false };
                selections.push(sel.clone());
                slots.push(Slot { source, selection: Some(sel), master: false });
            }
        }
        selection::check_default_routes(&selections)
            .map_err(|e| CniError::invalid_config(format!("{} {e}", k8s.tag())))?;
    }

    // Every NAD at once: one round trip for the whole list, not one per network, and
    // one GET per NAD however often it is listed (`a,a` gives two attachments).
    let mut unique: Vec<(&str, &str, bool)> = Vec::new();
    for slot in &slots {
        if let Source::Nad { namespace, name, or_file } = &slot.source {
            let key = (namespace.as_str(), name.as_str(), *or_file);
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
    }
    let mirror =
        &unique.first().and_then(|_| crate::mirror::Mirror::open(&conf.nad_mirror_dir, conf.nad_mirror_max_age()));
    let fetches = unique.iter().map(|&(namespace, name, or_file)| async move {
        match kube {
            Some(kube) => {
                let found = match mirror.as_ref().and_then(|m| m.get(namespace, name)) {
                    Some(obj) => Ok(Some(obj)),
                    None => kube.get_nad(namespace, name).await,
                };
                Some(match found {
                    Ok(Some(obj)) => nad::config_from_nad(&obj, &conf.conf_dir, &conf.cni_version).map(|c| (c, format!("{namespace}/{name}"))),
                    Ok(None) if or_file => nad::find_in_conf_dir(Path::new(&conf.conf_dir), name).map(|c| {
                        let n = c.name().to_string();
                        (c, n)
                    }),
                    Ok(None) => Err(CniError::new(
                        code::KUBERNETES,
                        format!("cannot find a network-attachment-definition ({name}) in namespace ({namespace}): network-attachment-definitions.k8s.cni.cncf.io {name:?} not found"),
                    )),
                    Err(e) => Err(e.context(format!("cannot find a network-attachment-definition ({name}) in namespace ({namespace})"))),
                })
            }
            None => None,
        }
    });
    let unique_fetched = futures::future::join_all(fetches).await;
    let fetched: Vec<_> = slots
        .iter()
        .map(|slot| match &slot.source {
            Source::Nad { namespace, name, or_file } => unique
                .iter()
                .position(|&key| key == (namespace.as_str(), name.as_str(), *or_file))
                .and_then(|i| unique_fetched[i].clone()),
            Source::Ready(_) => None,
        })
        .collect();

    let runtime = node.runtime_capabilities();
    let mut plan = Plan::default();
    for (i, (slot, fetched)) in slots.into_iter().zip(fetched).enumerate() {
        let (config, name) = match (slot.source, fetched) {
            (Source::Ready(c), _) => {
                let n = c.name().to_string();
                (c, n)
            }
            (_, Some(Ok(found))) => found,
            (Source::Nad { namespace, name, .. }, Some(Err(e))) => {
                if let (Some(kube), Some(pod), PlanFor::Add) = (kube, pod, purpose) {
                    send_events(kube, pod, vec![("Warning", "NoNetworkFound", e.msg.clone())]).await;
                }
                let _ = (namespace, name);
                return Err(e.context(k8s.tag()));
            }
            (Source::Nad { namespace, name, .. }, None) => {
                return Err(CniError::new(
                    code::KUBERNETES,
                    format!(
                        "{} network {namespace}/{name} needs the Kubernetes API, which is not configured",
                        k8s.tag()
                    ),
                ));
            }
        };
        let sel = slot.selection.unwrap_or_default();
        let config = match &sel.cni_args {
            Some(args) => nad::inject_cni_args(config, args)?,
            None => config,
        };
        let ifname = match &sel.interface {
            Some(i) if !i.is_empty() => i.clone(),
            _ if slot.master => node.env.ifname.clone(),
            _ => format!("net{i}"),
        };
        let capability_args =
            if slot.master { runtime.clone() } else { attachment_capabilities(&sel, &config, &name)? };
        plan.default_routes.push(sel.default_route.clone());
        plan.delegates.push(Delegate { config, name, ifname, master: slot.master, capability_args });
    }
    Ok(plan)
}

/// The attachment's own runtime values; each must be declared by a plugin of its
/// network (multi-net spec; Go Multus silently drops undeclared ones).
fn attachment_capabilities(sel: &NetworkSelection, config: &NetworkConfig, name: &str) -> Result<Map<String, Value>> {
    let mut caps = Map::new();
    if !sel.ips.is_empty() {
        caps.insert("ips".into(), sel.ips.clone().into());
    }
    if let Some(mac) = &sel.mac {
        caps.insert("mac".into(), mac.clone().into());
    }
    if let Some(pm) = &sel.port_mappings {
        caps.insert("portMappings".into(), pm.clone());
    }
    if let Some(bw) = &sel.bandwidth {
        caps.insert("bandwidth".into(), bw.clone());
    }
    if let Some(guid) = &sel.infiniband_guid {
        caps.insert("infinibandGUID".into(), guid.clone().into());
    }
    if let Some(dev) = &sel.device_id {
        caps.insert("deviceID".into(), dev.clone().into());
    }
    let declared = config.capabilities();
    if let Some(missing) = caps.keys().find(|k| !declared.contains(*k)) {
        return Err(CniError::invalid_config(format!(
            "network {name}: the pod requests {missing:?} but no plugin of the network declares the capability {missing:?}"
        )));
    }
    Ok(caps)
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
