//! DEL: every delegate of the ADD, in reverse, from the cache. Never needs the API when
//! the cache is there; never silently does nothing when it is not.
//!
//! When no cache records the attachments, the list is a guess (rebuilt from the pod or
//! taken from the config): then a delegate's failure only means the attachment it was
//! asked to remove may never have existed — e.g. the runtime's DEL after an ADD we rolled
//! back — so it is logged, not returned (the spec: DEL of what is gone succeeds).

use super::Node;
use crate::cache;
use crate::cni::K8sArgs;
use crate::delegate::{self, Delegate, PluginExec};
use crate::error::{ErrorList, Result};
use crate::k8s::client::Kube;
use crate::k8s::pod::{self, PlanFor, PodLookup};
use std::time::Duration;

pub async fn del<E: PluginExec, N>(node: &Node<E, N>) -> Result<()> {
    node.conf.require_networks()?;
    let k8s = node.k8s_args()?;
    let cni_dir = node.cni_dir();
    let cid = &node.env.container_id;
    let (delegates, known) = match cache::load_delegates(&cni_dir, cid, &node.env.ifname) {
        Ok(Some(d)) => (d, Known::Cached),
        Ok(None) => fallback_delegates(node, &k8s).await?,
        Err(e) => {
            // Go Multus returns success here and leaks every IP (#1087).
            tracing::error!("{} {}; deleting what the results cache and the config know", k8s.tag(), e.msg);
            fallback_delegates(node, &k8s).await?
        }
    };
    let runtime = node.runtime_capabilities();
    let mut errors = ErrorList::default();
    for d in delegates.iter().rev() {
        let mut d = d.clone();
        if d.master && !runtime.is_empty() {
            d.capability_args = runtime.clone();
        }
        let rt = node.runtime_conf(&k8s, &d);
        let cached = node.prev_result_for(&d);
        let deleted = delegate::del_network(&node.exec, &d.config, &rt, cached.as_ref()).await;
        crate::devices::remove_device_info(&node.conf, cid, &d);
        match deleted {
            Ok(()) => cache::remove_result(&cni_dir, d.config.name(), cid, &d.ifname),
            Err(e) if known == Known::Guessed => {
                tracing::warn!(
                    "{} DEL of {} ({}), which no cache records, failed: {}",
                    k8s.tag(),
                    d.ifname,
                    d.name,
                    e.msg
                )
            }
            Err(e) => errors.push(e.context(format!("{} error deleting {} ({})", k8s.tag(), d.ifname, d.name))),
        }
    }
    if (!node.conf.retry_delete_on_error || errors.is_empty())
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
/// delegates rebuilt from the pod as ADD would; else the config's static delegates.
/// (Go Multus returns success without deleting anything when the pod is gone, #586.)
/// The runtime's second DEL (empty netns: the sandbox is gone and the first DEL ran)
/// does not ask the API: the config's delegates are enough to release what is left.
pub async fn fallback_delegates<E: PluginExec, N>(node: &Node<E, N>, k8s: &K8sArgs) -> Result<(Vec<Delegate>, Known)> {
    let from_results = cache::delegates_from_results(&node.cni_dir(), &node.env.container_id, &node.env.ifname);
    if !from_results.is_empty() {
        tracing::info!("{} deleting {} attachments found in the results cache", k8s.tag(), from_results.len());
        return Ok((from_results, Known::Cached));
    }
    if k8s.has_pod() && !node.env.netns.is_empty() {
        match from_api(node, k8s).await {
            Ok(Some(d)) => return Ok((d, Known::Guessed)),
            Ok(None) => {}
            Err(e) => tracing::warn!("{} cannot rebuild the delegates from the API: {}", k8s.tag(), e.msg),
        }
    }
    Ok((node.static_delegates()?, Known::Guessed))
}

async fn from_api<E: PluginExec, N>(node: &Node<E, N>, k8s: &K8sArgs) -> Result<Option<Vec<Delegate>>> {
    let budget = node.conf.api_timeout().min(DEL_API_BUDGET);
    let Some(kube) = Kube::connect(&node.conf, budget).await? else { return Ok(None) };
    let PodLookup::Found(pod) = pod::lookup(node, &kube, k8s).await? else { return Ok(None) };
    Ok(Some(pod::plan(node, Some(&kube), k8s, Some(&pod), PlanFor::Del).await?.delegates))
}
