//! Planning an ADD (and a cache-less DEL): which delegates a pod gets, in which order,
//! with which interface names and requests (Go Multus' GetDefaultNetworks and
//! TryLoadPodDelegates), in three steps:
//!
//! 1. [`slots`] (pure): config + pod + annotations → one slot per attachment, each
//!    either a ready config or a NAD to fetch;
//! 2. [`fetch_networks`] (I/O): every NAD the slots name, concurrently, each once;
//! 3. [`build`] (pure): the slots and what was fetched → a [`Plan`] of attachments.
//!
//! Events are the verb's business: a NAD that cannot be had comes back as
//! [`PlanError::NetworkUnavailable`] and ADD records it on the pod.

use super::Invocation;
use crate::config::MultusConf;
use crate::delegate::{Delegate, NetworkConfig, PluginExec};
use crate::error::{CniError, KubeError, Result};
use crate::k8s::client::Kube;
use crate::k8s::nad;
use crate::k8s::pod::PodInfo;
use crate::k8s::selection::{self, DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, NetworkSelection};
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::Path;

/// One attachment of the pod: the delegate, and the gateways it must own as the pod's
/// default route (the selection's `default-route`; empty for none).
#[derive(Debug, Clone)]
pub struct Attachment {
    pub delegate: Delegate,
    pub default_route: Vec<IpAddr>,
    /// The NAD's `k8s.v1.cni.cncf.io/resourceName`, when it names one.
    pub resource: Option<String>,
    /// The device the kubelet allocated for it: `(resource, device ID)`.
    pub device: Option<(String, String)>,
}

/// The attachments of a pod, in ADD order; the primary one first.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub attachments: Vec<Attachment>,
}

impl Plan {
    pub fn delegates(&self) -> impl Iterator<Item = &Delegate> {
        self.attachments.iter().map(|a| &a.delegate)
    }
}

/// Where a slot's network config comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Ready(NetworkConfig),
    /// A NAD; `or_file` also accepts a config of that name in confDir (clusterNetwork,
    /// defaultNetworks given as names).
    Nad {
        namespace: String,
        name: String,
        or_file: bool,
    },
}

/// One attachment before its network is known.
#[derive(Debug, Clone)]
pub struct Slot {
    pub source: Source,
    pub selection: Option<NetworkSelection>,
    pub primary: bool,
}

/// Why no plan: ADD records a `NoNetworkFound` event for the first, not for the second.
#[derive(Debug)]
pub enum PlanError {
    /// A NAD could not be had. `message` is the event's text, `error` the verb's.
    NetworkUnavailable {
        message: String,
        error: CniError,
    },
    Invalid(CniError),
}

impl From<CniError> for PlanError {
    fn from(e: CniError) -> Self {
        PlanError::Invalid(e)
    }
}

impl From<PlanError> for CniError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::NetworkUnavailable { error, .. } | PlanError::Invalid(error) => error,
        }
    }
}

/// The three steps in order: the pod's plan. `use_api` is false in static mode.
pub async fn plan<E: PluginExec, N>(
    inv: &Invocation<E, N>,
    kube: Option<&Kube>,
    pod: Option<&PodInfo>,
) -> std::result::Result<Plan, PlanError> {
    let slots = slots(inv, kube.is_some(), pod)?;
    let fetched = fetch_networks(kube, &inv.conf, &slots).await.map_err(CniError::about_pod)?;
    let mut plan = build(inv, slots, fetched)?;
    assign_devices(inv, kube, pod, &mut plan).await?;
    // The auxiliary chain (auxiliaryCNIChainName) runs last, after every network.
    let mut delegates: Vec<Delegate> = Vec::new();
    super::aux_chain::append_to(inv, plan.attachments.len(), &mut delegates).map_err(CniError::about_pod)?;
    plan.attachments.extend(delegates.into_iter().map(|delegate| Attachment {
        delegate,
        default_route: Vec::new(),
        resource: None,
        device: None,
    }));
    Ok(plan)
}

/// Each attachment whose NAD names a `resourceName` gets its device from the kubelet
/// ([`crate::devices`]). Required on ADD; a DEL rebuilding its list goes on without.
async fn assign_devices<E: PluginExec, N>(
    inv: &Invocation<E, N>,
    kube: Option<&Kube>,
    pod: Option<&PodInfo>,
    plan: &mut Plan,
) -> Result<()> {
    let strict = inv.env.command == crate::cni::Command::Add;
    // Moved out and back, not cloned: a pod's configs may be many MiB (maxCacheFileBytes).
    type Rest = (Vec<IpAddr>, Option<String>);
    let (mut delegates, rest): (Vec<Delegate>, Vec<Rest>) =
        std::mem::take(&mut plan.attachments).into_iter().map(|a| (a.delegate, (a.default_route, a.resource))).unzip();
    let resources: Vec<Option<String>> = rest.iter().map(|(_, r)| r.clone()).collect();
    let cid = &inv.env.container_id;
    let assigned = crate::devices::attach(&inv.conf, kube, pod, cid, &mut delegates, &resources, strict).await?;
    plan.attachments = delegates
        .into_iter()
        .zip(rest)
        .zip(assigned)
        .map(|((delegate, (default_route, resource)), device)| Attachment { delegate, default_route, resource, device })
        .collect();
    Ok(())
}

/// Step 1: the slots from the config (clusterNetwork + defaultNetworks, or the static
/// delegates), the default-network override and the networks annotation.
pub fn slots<E: PluginExec, N>(inv: &Invocation<E, N>, use_api: bool, pod: Option<&PodInfo>) -> Result<Vec<Slot>> {
    let conf = &inv.conf;
    let mut slots = config_slots(inv, use_api, pod)?;
    let (Some(pod), true) = (pod, use_api) else { return Ok(slots) };
    let isolate = |sel: &NetworkSelection| -> Result<()> {
        if conf.namespace_isolation {
            selection::check_namespace_isolation(sel, &pod.namespace, &conf.global_namespaces())
                .map_err(|e| CniError::invalid_config(e.to_string()).about_pod_phrase())?;
        }
        Ok(())
    };
    let mut selections: Vec<NetworkSelection> = Vec::new();
    if let Some(v) = pod.annotations.get(DEFAULT_NETWORK_ANNOTATION) {
        let sel = selection::parse_default_network(v, &conf.multus_namespace)
            .map_err(|e| CniError::invalid_config(format!("{DEFAULT_NETWORK_ANNOTATION}: {e}")).about_pod_phrase())?;
        isolate(&sel)?; // Go Multus does not isolate this annotation
        let primary = selected_slot(&sel, true);
        if slots.is_empty() {
            slots.push(primary);
        } else {
            slots[0] = primary;
        }
        selections.push(sel);
    }
    if let Some(v) = pod.annotations.get(NETWORKS_ANNOTATION) {
        let sels = selection::parse_networks(v, &pod.namespace)
            .map_err(|e| CniError::invalid_config(format!("{NETWORKS_ANNOTATION}: {e}")).about_pod_phrase())?;
        // Before any selection is looked at: the count alone decides.
        check_attachments(slots.len() + sels.len(), &conf.limits()).map_err(CniError::about_pod)?;
        for sel in sels {
            isolate(&sel)?;
            slots.push(selected_slot(&sel, false));
            selections.push(sel);
        }
    }
    selection::check_default_routes(&selections)
        .map_err(|e| CniError::invalid_config(e.to_string()).about_pod_phrase())?;
    check_attachments(slots.len(), &conf.limits()).map_err(CniError::about_pod)?;
    Ok(slots)
}

/// `maxAttachments`: a pod's annotation decides how many delegates run, GETs are made
/// and records cached; the node decides how many it accepts.
pub fn check_attachments(count: usize, limits: &crate::limits::Limits) -> Result<()> {
    if count as u64 > limits.max_attachments {
        return Err(crate::limits::over_limit(
            "the pod asks for too many attachments",
            count as u64,
            limits.max_attachments,
            "maxAttachments",
        ));
    }
    Ok(())
}

/// `maxNadConfigBytes`: checked on the NAD's `spec.config` before it is parsed.
pub fn check_nad_config(obj: &kube::core::DynamicObject, limits: &crate::limits::Limits) -> Result<()> {
    let len = obj.data.pointer("/spec/config").and_then(Value::as_str).map_or(0, str::len) as u64;
    if len > limits.max_nad_config_bytes {
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        return Err(crate::limits::over_limit(
            &format!("network-attachment-definition {name}: spec.config is too large (bytes)"),
            len,
            limits.max_nad_config_bytes,
            "maxNadConfigBytes",
        ));
    }
    Ok(())
}

/// The scratch cache stores every attachment's config once (a NAD listed `n` times,
/// `n` times: DEL replays each one), base64-encoded (crate::cache). Configs whose
/// encoding alone is over `maxCacheFileBytes` could neither be cached nor read back by
/// DEL: refused before a copy per attachment is made and before anything runs.
/// [`crate::cache::save_delegates`] checks the exact record size.
pub fn check_cache_bytes(config_bytes: impl IntoIterator<Item = usize>, limits: &crate::limits::Limits) -> Result<()> {
    let total: u64 = config_bytes.into_iter().map(|n| 4 * (n as u64).div_ceil(3)).sum();
    if total > limits.max_cache_file_bytes {
        return Err(crate::limits::over_limit(
            "the pod's network configs together are too large to cache (bytes)",
            total,
            limits.max_cache_file_bytes,
            "maxCacheFileBytes",
        ));
    }
    Ok(())
}

/// The config's own networks: clusterNetwork and (outside systemNamespaces)
/// defaultNetworks, else the static `delegates`.
fn config_slots<E: PluginExec, N>(inv: &Invocation<E, N>, use_api: bool, pod: Option<&PodInfo>) -> Result<Vec<Slot>> {
    let conf = &inv.conf;
    let mut slots = Vec::new();
    if conf.cluster_network.is_empty() {
        for (i, d) in inv.static_delegates()?.into_iter().enumerate() {
            slots.push(Slot { source: Source::Ready(d.config), selection: None, primary: i == 0 });
        }
        return Ok(slots);
    }
    slots.push(slot_for_name(conf, &conf.cluster_network, use_api, true)?);
    let system = pod.is_none_or(|p| conf.system_namespaces.contains(&p.namespace));
    if !system {
        for n in &conf.default_networks {
            slots.push(slot_for_name(conf, n, use_api, false)?);
        }
    }
    Ok(slots)
}

fn slot_for_name(conf: &MultusConf, value: &str, use_api: bool, primary: bool) -> Result<Slot> {
    let source = if value.contains('/') {
        Source::Ready(nad::load_path(Path::new(value))?)
    } else if use_api {
        Source::Nad { namespace: conf.multus_namespace.clone(), name: value.to_string(), or_file: true }
    } else {
        Source::Ready(nad::find_in_conf_dir(Path::new(&conf.conf_dir), value)?)
    };
    Ok(Slot { source, selection: None, primary })
}

fn selected_slot(sel: &NetworkSelection, primary: bool) -> Slot {
    let source = Source::Nad { namespace: sel.namespace.clone(), name: sel.name.clone(), or_file: false };
    Slot { source, selection: Some(sel.clone()), primary }
}

/// A fetched network: its config, its status/event name and the NAD's resourceName.
pub type Fetched = Result<(NetworkConfig, String, Option<String>)>;

/// Step 2: every NAD concurrently — at most `Limits::API_REQUESTS_IN_FLIGHT`
/// (crate::limits) GETs at a time whatever the annotation lists — and one GET per NAD
/// however often it is listed (`a,a` gives two attachments). One entry per slot: `None`
/// for a ready slot, and for every NAD slot without an API. Err when the configs
/// together are over `maxCacheFileBytes` ([`check_cache_bytes`]).
pub async fn fetch_networks(kube: Option<&Kube>, conf: &MultusConf, slots: &[Slot]) -> Result<Vec<Option<Fetched>>> {
    use futures::StreamExt;
    let mut unique: Vec<(&str, &str, bool)> = Vec::new();
    for slot in slots {
        if let Source::Nad { namespace, name, or_file } = &slot.source {
            let key = (namespace.as_str(), name.as_str(), *or_file);
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
    }
    // The node agent's NAD mirror, when it is fresh: a hit costs no request; anything
    // else falls back to the GET (crate::mirror).
    let mirror =
        &unique.first().and_then(|_| crate::mirror::Mirror::open(&conf.nad_mirror_dir, conf.nad_mirror_max_age()));
    let fetches = unique.iter().map(|&(namespace, name, or_file)| async move {
        let kube = kube?;
        Some(fetch_network(kube, mirror.as_ref(), conf, namespace, name, or_file).await)
    });
    let unique_fetched: Vec<Option<Fetched>> =
        futures::stream::iter(fetches).buffered(crate::limits::Limits::API_REQUESTS_IN_FLIGHT).collect().await;
    let config_len = |slot: &Slot| match &slot.source {
        Source::Ready(c) => c.bytes.len(),
        Source::Nad { namespace, name, or_file } => unique
            .iter()
            .position(|&key| key == (namespace.as_str(), name.as_str(), *or_file))
            .and_then(|i| unique_fetched[i].as_ref())
            .and_then(|f| f.as_ref().ok())
            .map_or(0, |(c, _, _)| c.bytes.len()),
    };
    check_cache_bytes(slots.iter().map(config_len), &conf.limits())?;
    Ok(slots
        .iter()
        .map(|slot| match &slot.source {
            Source::Nad { namespace, name, or_file } => unique
                .iter()
                .position(|&key| key == (namespace.as_str(), name.as_str(), *or_file))
                .and_then(|i| unique_fetched[i].clone()),
            Source::Ready(_) => None,
        })
        .collect())
}

async fn fetch_network(
    kube: &Kube,
    mirror: Option<&crate::mirror::Mirror>,
    conf: &MultusConf,
    namespace: &str,
    name: &str,
    or_file: bool,
) -> Fetched {
    let found = match mirror.and_then(|m| m.get(namespace, name)) {
        Some(obj) => Ok(Some(obj)),
        None => kube.get_nad(namespace, name).await,
    };
    match found {
        Ok(Some(obj)) => {
            check_nad_config(&obj, &conf.limits())?;
            let resource = crate::devices::resource_name(&obj);
            nad::config_from_nad(&obj, &conf.conf_dir, &conf.cni_version)
                .map(|c| (c, format!("{namespace}/{name}"), resource))
        }
        Ok(None) if or_file => nad::find_in_conf_dir(Path::new(&conf.conf_dir), name).map(|c| {
            let n = c.name().to_string();
            (c, n, None)
        }),
        Ok(None) => Err(KubeError::NadNotFound { namespace: namespace.to_string(), name: name.to_string() }.into()),
        Err(e) => {
            Err(e.context(format!("cannot find a network-attachment-definition ({name}) in namespace ({namespace})")))
        }
    }
}

/// Step 3: each slot with its network becomes an attachment: interface name, the
/// capability values it requests (declared by its plugins), its default route.
pub fn build<E: PluginExec, N>(
    inv: &Invocation<E, N>,
    slots: Vec<Slot>,
    fetched: Vec<Option<Fetched>>,
) -> std::result::Result<Plan, PlanError> {
    let runtime = inv.runtime_capabilities();
    let mut plan = Plan::default();
    for (i, (slot, fetched)) in slots.into_iter().zip(fetched).enumerate() {
        let (config, name, resource) = match (slot.source, fetched) {
            (Source::Ready(c), _) => {
                let n = c.name().to_string();
                (c, n, None)
            }
            (_, Some(Ok(found))) => found,
            (Source::Nad { .. }, Some(Err(e))) => {
                return Err(PlanError::NetworkUnavailable { message: e.msg.clone(), error: e.about_pod() });
            }
            (Source::Nad { namespace, name, .. }, None) => {
                return Err(PlanError::Invalid(
                    CniError::from(KubeError::NeedsApi { namespace, name }).about_pod_phrase(),
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
            _ if slot.primary => inv.env.ifname.clone(),
            _ => format!("net{i}"),
        };
        let capability_args =
            if slot.primary { runtime.clone() } else { attachment_capabilities(&sel, &config, &name)? };
        let delegate = Delegate { config, name, ifname, primary: slot.primary, capability_args };
        let default_route = sel.default_route.unwrap_or_default();
        plan.attachments.push(Attachment { delegate, default_route, resource, device: None });
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

#[cfg(test)]
mod bounds_tests {
    use super::*;
    use crate::error::code;
    use crate::limits::Limits;

    #[test]
    fn attachments_over_the_limit_name_the_key() {
        let limits = Limits { max_attachments: 3, ..Limits::DEFAULT };
        check_attachments(3, &limits).unwrap();
        let e = check_attachments(4, &limits).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("maxAttachments") && e.msg.contains("4") && e.msg.contains("3"), "{}", e.msg);
    }

    #[test]
    fn a_nad_config_over_the_limit_names_the_key() {
        let limits = Limits { max_nad_config_bytes: 10, ..Limits::DEFAULT };
        let nad = |config: &str| -> kube::core::DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": "big", "namespace": "default"}, "spec": {"config": config}
            }))
            .unwrap()
        };
        check_nad_config(&nad("0123456789"), &limits).unwrap();
        let e = check_nad_config(&nad("0123456789a"), &limits).unwrap_err();
        assert!(e.msg.contains("maxNadConfigBytes") && e.msg.contains("big"), "{}", e.msg);
    }

    #[test]
    fn cached_bytes_are_counted_per_attachment() {
        let limits = Limits { max_cache_file_bytes: 400, ..Limits::DEFAULT };
        check_cache_bytes([150, 150], &limits).unwrap(); // 200 + 200 encoded
        let e = check_cache_bytes([150, 150, 3], &limits).unwrap_err();
        assert!(e.msg.contains("maxCacheFileBytes"), "{}", e.msg);
    }
}
