//! DEL: every delegate of the ADD, in reverse, from the cache. Never needs the API when
//! the cache is there; never silently does nothing when it is not.
//!
//! When no cache records the attachments, the list is a guess (rebuilt from the pod or
//! taken from the config): then a delegate's failure only means the attachment it was
//! asked to remove may never have existed — e.g. the runtime's DEL after an ADD we rolled
//! back — so it is logged, not returned (the spec: DEL of what is gone succeeds).

use super::Invocation;
use super::{aux_chain, primary};
use crate::cache;
use crate::cni::K8sArgs;
use crate::delegate::{self, Delegate, PluginExec};
use crate::error::{ErrorList, Result};
use crate::k8s::client::Kube;
use crate::k8s::pod::{self, PodLookup};
use std::time::Duration;

pub async fn del<E: PluginExec, N>(inv: &Invocation<E, N>) -> Result<()> {
    inv.conf.require_networks()?;
    let k8s = inv.k8s_args()?;
    super::for_pod(&k8s, del_pod(inv, &k8s)).await
}

async fn del_pod<E: PluginExec, N>(inv: &Invocation<E, N>, k8s: &K8sArgs) -> Result<()> {
    let cni_dir = inv.cni_dir();
    let cid = &inv.env.container_id;
    let (delegates, known) = match cache::load_delegates(&cni_dir, cid, &inv.env.ifname) {
        Ok(Some(d)) => (d, Known::Cached),
        Ok(None) => fallback_delegates(inv, k8s).await?,
        Err(e) => {
            // Go Multus returns success here and leaks every IP (#1087).
            tracing::error!("{}; deleting what the results cache and the config know", e.msg);
            fallback_delegates(inv, k8s).await?
        }
    };
    let runtime = inv.runtime_capabilities();
    let mut errors = ErrorList::default();
    for d in delegates.iter().rev() {
        let mut d = d.clone();
        if d.primary && !runtime.is_empty() {
            d.capability_args = runtime.clone();
        }
        let rt = inv.runtime_conf(k8s, &d);
        let cached = inv.prev_result_for(&d);
        let deleted = delegate::del_network(&inv.exec, &d.config, &rt, cached.as_ref()).await;
        crate::devices::remove_device_info(&inv.conf, cid, &d);
        match deleted {
            Ok(()) => cache::remove_result(&cni_dir, d.config.name(), cid, &d.ifname),
            Err(e) if known == Known::Guessed => {
                tracing::warn!("DEL of {} ({}), which no cache records, failed: {}", d.ifname, d.name, e.msg)
            }
            Err(e) => errors.push(e.context(format!("error deleting {} ({})", d.ifname, d.name)).about_pod_phrase()),
        }
    }
    if (!inv.conf.retry_delete_on_error || errors.is_empty())
        && let Err(e) = cache::remove_delegates(&cni_dir, cid)
    {
        errors.push(e);
    }
    errors.into_result()
}

/// How long a cache-less DEL may spend asking the API for the pod's networks.
const DEL_API_BUDGET: Duration = Duration::from_secs(3);

/// Whether a cache recorded the attachments or the list is a best guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Cached,
    Guessed,
}

/// No usable scratch cache: the attachments the results cache still records for this
/// container (each record holds its config bytes); else, when the API answers, the
/// delegates rebuilt from the pod as ADD would; else the node's own networks — the
/// primary and the `defaultNetworks`, resolved in every mode as [`super::primary`]
/// does (a NAD name with the API down: from `confDir` or this node's scratch caches;
/// a network nobody can resolve is logged and skipped, the DEL still succeeds).
/// (Go Multus returns success without deleting anything when the pod is gone, #586.)
/// The runtime's second DEL (empty netns: the sandbox is gone and the first DEL ran)
/// does not ask the API for the pod: the node's networks are enough to release what is left.
pub async fn fallback_delegates<E: PluginExec, N>(
    inv: &Invocation<E, N>,
    k8s: &K8sArgs,
) -> Result<(Vec<Delegate>, Known)> {
    let from_results = cache::delegates_from_results(&inv.cni_dir(), &inv.env.container_id, &inv.env.ifname);
    if !from_results.is_empty() {
        tracing::info!("deleting {} attachments found in the results cache", from_results.len());
        return Ok((from_results, Known::Cached));
    }
    let ask_pod = k8s.has_pod() && !inv.env.netns.is_empty();
    let kube = if ask_pod {
        let budget = inv.conf.api_timeout().min(DEL_API_BUDGET);
        Kube::connect(&inv.conf, budget).await.unwrap_or_else(|e| {
            tracing::warn!("no API client: {}", e.msg);
            None
        })
    } else {
        primary::connect_if_needed(inv, true).await
    };
    if let (true, Some(kube)) = (ask_pod, &kube) {
        match from_api(inv, kube, k8s).await {
            Ok(Some(d)) => return Ok((d, Known::Guessed)),
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot rebuild the delegates from the API: {}", e.msg),
        }
    }
    if inv.conf.cluster_network.is_empty() {
        return Ok((inv.static_delegates()?, Known::Guessed));
    }
    let (found, unresolved) = primary::node_networks(inv, kube.as_ref(), &inv.env.ifname, &k8s.namespace).await;
    for e in unresolved {
        tracing::warn!("{}: its attachment, if any, is not deleted", e.msg);
    }
    let mut found = found;
    aux_chain::append(inv, &mut found).unwrap_or_else(|e| tracing::warn!("auxiliary chain not deleted: {}", e.msg));
    Ok((found, Known::Guessed))
}

async fn from_api<E: PluginExec, N>(
    inv: &Invocation<E, N>,
    kube: &Kube,
    k8s: &K8sArgs,
) -> Result<Option<Vec<Delegate>>> {
    let PodLookup::Found(pod) = pod::lookup(&inv.conf, kube, k8s).await? else { return Ok(None) };
    // No events on DEL (as Go Multus): the pod is going away.
    let plan = super::plan::plan(inv, Some(kube), Some(&pod)).await?;
    Ok(Some(plan.attachments.into_iter().map(|a| a.delegate).collect()))
}
