//! The node's own networks without a pod: the primary (`delegates[0]` or
//! `clusterNetwork`) and, for DEL, the `defaultNetworks`. STATUS, GC and a cache-less
//! DEL resolve them here, the same way in every configuration mode:
//!
//! | form of the value | resolved from |
//! |---|---|
//! | `delegates` (no `clusterNetwork`) | `delegates[0]` of the config |
//! | a path to a file | that file (`.conflist` or a single config) |
//! | a path to a directory | its first config that is not a Multus config |
//! | a name, no API configured | the config of that name in `confDir` |
//! | a name, API configured | the NAD in `multusNamespace`, else the config of that name in `confDir` |
//!
//! When the API is configured but does not answer, a name resolves from `confDir`, then
//! from what this node recorded itself: the config bytes of an earlier attachment of
//! that NAD in a scratch cache. Only when none of them knows the network is it
//! unresolved, and the caller says so (DEL logs it and goes on; STATUS answers 50).

use super::Invocation;
use crate::cache;
use crate::delegate::{Delegate, NetworkConfig, PluginExec};
use crate::error::{CniError, KubeError, Result, code};
use crate::k8s::client::Kube;
use crate::k8s::nad;
use serde_json::Map;
use std::path::Path;
use std::time::Duration;

/// How long STATUS, GC and a cache-less DEL may spend asking the API for a NAD.
pub const API_BUDGET: Duration = Duration::from_secs(3);

/// Whether a `clusterNetwork`/`defaultNetworks` value names a NAD (needs the API when
/// one is configured) rather than a path.
pub fn is_name(value: &str) -> bool {
    !value.contains('/')
}

/// The client for the resolution of NAD names; `None` when no name needs it, no API is
/// configured, or the client cannot be built (then names resolve locally).
pub async fn connect_if_needed<E, N>(inv: &Invocation<E, N>, with_defaults: bool) -> Option<Kube> {
    let conf = &inv.conf;
    let mut values = std::iter::once(&conf.cluster_network)
        .filter(|v| !v.is_empty())
        .chain(conf.default_networks.iter().filter(|_| with_defaults && !conf.cluster_network.is_empty()));
    if !values.any(|v| is_name(v)) {
        return None;
    }
    match Kube::connect(conf, conf.api_timeout().min(API_BUDGET)).await {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!("no API client for resolving networks by name: {}", e.msg);
            None
        }
    }
}

/// The primary network as a master delegate on interface `ifname`; `Ok(None)` in
/// `delegates` mode with an empty list (which [`crate::config::MultusConf::require_networks`]
/// refuses before).
pub async fn primary<E: PluginExec, N>(
    inv: &Invocation<E, N>,
    kube: Option<&Kube>,
    ifname: &str,
) -> Result<Option<Delegate>> {
    let conf = &inv.conf;
    if conf.cluster_network.is_empty() {
        return Ok(inv.static_delegates()?.into_iter().next().map(|mut d| {
            d.ifname = ifname.to_string();
            d
        }));
    }
    let (config, name) = resolve(inv, kube, &conf.cluster_network)
        .await
        .map_err(|e| e.context(format!("cannot resolve clusterNetwork {:?}", conf.cluster_network)))?;
    Ok(Some(Delegate {
        config,
        name,
        ifname: ifname.to_string(),
        primary: true,
        capability_args: inv.runtime_capabilities(),
    }))
}

/// The node's networks of a pod in namespace `namespace` as ADD would attach them
/// without annotations: the primary on `ifname`, then each `defaultNetworks` entry on
/// `net1..` (not for `systemNamespaces`). Networks that cannot be resolved are left
/// out and returned as errors next to the list.
pub async fn node_networks<E: PluginExec, N>(
    inv: &Invocation<E, N>,
    kube: Option<&Kube>,
    ifname: &str,
    namespace: &str,
) -> (Vec<Delegate>, Vec<CniError>) {
    let conf = &inv.conf;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    match primary(inv, kube, ifname).await {
        Ok(Some(d)) => found.push(d),
        Ok(None) => {}
        Err(e) => errors.push(e),
    }
    if conf.cluster_network.is_empty() {
        // `delegates` mode: the static list is the whole of it.
        match inv.static_delegates() {
            Ok(all) => found.extend(all.into_iter().skip(1)),
            Err(e) => errors.push(e),
        }
        return (found, errors);
    }
    if conf.system_namespaces.iter().any(|s| s == namespace) {
        return (found, errors);
    }
    for (i, value) in conf.default_networks.iter().enumerate() {
        match resolve(inv, kube, value).await {
            Ok((config, name)) => found.push(Delegate {
                config,
                name,
                ifname: format!("net{}", i + 1),
                primary: false,
                capability_args: Map::new(),
            }),
            Err(e) => errors.push(e.context(format!("cannot resolve defaultNetworks entry {value:?}"))),
        }
    }
    (found, errors)
}

/// One `clusterNetwork`/`defaultNetworks` value: its config and its attachment name
/// (`<ns>/<nad>` for a NAD, else the network name).
pub async fn resolve<E, N>(
    inv: &Invocation<E, N>,
    kube: Option<&Kube>,
    value: &str,
) -> Result<(NetworkConfig, String)> {
    let conf = &inv.conf;
    let named = |c: NetworkConfig| {
        let n = c.name().to_string();
        (c, n)
    };
    if !is_name(value) {
        return nad::load_path(Path::new(value)).map(named);
    }
    let conf_dir = Path::new(&conf.conf_dir);
    let Some(kube) = kube else {
        return nad::find_in_conf_dir(conf_dir, value).map(named);
    };
    let ns = &conf.multus_namespace;
    match kube.get_nad(ns, value).await {
        Ok(Some(obj)) => {
            nad::config_from_nad(&obj, &conf.conf_dir, &conf.cni_version).map(|c| (c, format!("{ns}/{value}")))
        }
        Ok(None) => nad::find_in_conf_dir(conf_dir, value).map(named),
        Err(api) => {
            // The API is down: what the node itself knows of the network.
            if let Ok(c) = nad::find_in_conf_dir(conf_dir, value) {
                tracing::warn!("{}; using {value:?} from {}", api.msg, conf_dir.display());
                return Ok(named(c));
            }
            let attachment = format!("{ns}/{value}");
            if let Some(c) = recorded_config(Path::new(&conf.cni_dir), &attachment) {
                tracing::warn!("{}; using the config this node recorded for {attachment}", api.msg);
                return Ok((c, attachment));
            }
            Err(KubeError::NadUnknownOffline {
                transient: api.code == code::TRY_AGAIN_LATER,
                attachment,
                why: api.msg,
                conf_dir: conf_dir.display().to_string(),
            }
            .into())
        }
    }
}

/// The config of NAD attachment `attachment` (`<ns>/<nad>`) as the newest scratch cache
/// of this node recorded it. (The results cache names networks by their CNI name, not
/// by NAD, so it cannot tell which NAD a record came from.)
fn recorded_config(cni_dir: &Path, attachment: &str) -> Option<NetworkConfig> {
    let mut newest: Option<(std::time::SystemTime, NetworkConfig)> = None;
    for cid in cache::cached_containers(cni_dir) {
        let Ok(Some(delegates)) = cache::load_delegates(cni_dir, &cid, "eth0") else { continue };
        let Some(d) = delegates.into_iter().find(|d| d.name == attachment) else { continue };
        let when = std::fs::metadata(cache::scratch_path(cni_dir, &cid))
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        if newest.as_ref().is_none_or(|(t, _)| when > *t) {
            newest = Some((when, d.config));
        }
    }
    newest.map(|(_, c)| c)
}
