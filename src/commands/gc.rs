//! GC (CNI 1.1): clean up every attachment the runtime no longer knows.
//!
//! Go Multus ignores the runtime's `cni.dev/valid-attachments` and only forwards GC to
//! the cluster network with its own cache as keep-list, so stale scratch-cache entries
//! (and the IPs behind them) live forever. Here, when the runtime gives the list: every
//! cached container not in it is DELeted with what its caches recorded (netns, CNI_ARGS,
//! config), then its entries are removed; then GC is forwarded to the primary network
//! and to every secondary network the caches record, each with its own valid
//! attachments (`super::gc_plan`), so their IPAM releases what the runtime forgot.
//! Without a list nothing is removed and nothing is forwarded: deleting live pods'
//! addresses on a malformed GC would be far worse than keeping a stale entry.

use super::Invocation;
use super::{gc_plan, primary};
use crate::cache;
use crate::cni::{K8sArgs, Version};
use crate::config::Attachment;
use crate::delegate::{self, PluginExec, RuntimeConf};
use crate::error::{ErrorList, Result, VersionError};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::Duration;

pub async fn gc<E: PluginExec, N>(inv: &Invocation<E, N>) -> Result<()> {
    if inv.conf.version() < Version::V1_1_0 {
        return Err(VersionError::VerbNotAllowed("GC").into());
    }
    inv.conf.require_networks()?;
    let mut errors = ErrorList::default();
    match &inv.conf.valid_attachments {
        Some(valid) => collect_stale(inv, valid, &mut errors).await,
        None => tracing::info!("GC without cni.dev/valid-attachments: nothing of ours is removed"),
    }
    // Without the runtime's list there is nothing safe to forward: an empty list would
    // tell the primary network that none of its attachments is valid.
    if let Some(valid) = &inv.conf.valid_attachments {
        forward(inv, valid, &mut errors).await;
    }
    errors.into_result()
}

/// GC to the primary network (resolved in any mode) and to every secondary network the
/// caches record, each with its own valid attachments ([`super::gc_plan`]).
async fn forward<E: PluginExec, N>(inv: &Invocation<E, N>, valid: &[Attachment], errors: &mut ErrorList) {
    let kube = primary::connect_if_needed(inv, false).await;
    let primary_net = match primary::primary(inv, kube.as_ref(), "").await {
        Ok(m) => m,
        Err(e) => {
            errors.push(e.context("GC of the primary network"));
            None
        }
    };
    for target in gc_plan::targets(&inv.cni_dir(), valid, primary_net.as_ref()) {
        let list = serde_json::to_value(&target.valid).unwrap_or_default();
        if let Err(e) = delegate::gc_network(&inv.exec, &target.config, &RuntimeConf::default(), &list).await {
            errors.push(e.context(format!("GC of network {:?}", target.config.name())));
        }
    }
}

async fn collect_stale<E: PluginExec, N>(inv: &Invocation<E, N>, valid: &[Attachment], errors: &mut ErrorList) {
    let cni_dir = inv.cni_dir();
    let valid: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
    let records = cache::all_results(&cni_dir);
    let mut stale: BTreeSet<String> = cache::cached_containers(&cni_dir).into_iter().collect();
    stale.extend(records.iter().filter_map(|(_, r)| r.as_ref()).map(|r| r.container_id.clone()));
    stale.retain(|cid| !valid.contains(cid.as_str()));
    for cid in stale {
        // An ADD or DEL of this container running now owns it: leave it to them.
        let lock = match crate::lock::acquire(&cni_dir, &cid, GC_LOCK_WAIT).await {
            Ok(lock) => lock,
            Err(e) => {
                tracing::warn!("GC skips container {cid}: {}", e.msg);
                continue;
            }
        };
        if delete_container(inv, &cni_dir, &cid, errors).await {
            tracing::info!("GC removed the stale attachments of container {cid}");
        }
        if let Some(lock) = lock {
            lock.finish();
        }
    }
    // Records nobody can read, or that fail validation (a tampered container ID, a name
    // that does not match), cannot be DELeted; they only mislead later GCs. Removed by
    // name inside the results directory, never through a link.
    for (name, record) in records {
        if record.is_none() {
            cache::remove_result_file(&cni_dir, &name);
        }
    }
}

/// How long GC waits for a container another invocation is working on.
const GC_LOCK_WAIT: Duration = Duration::from_millis(200);

/// The netns a cached record names, as GC may use it: never this process's own
/// namespace (a tampered record must not make a delegate delete a host link), so such
/// a netns is dropped and the delegate only releases what it holds outside (IPAM).
fn safe_netns(cid: &str, netns: &str) -> String {
    if !netns.is_empty() && crate::netns::is_own_netns(Path::new(netns)) {
        tracing::warn!("GC: the cache of {cid} names the host's own netns {netns:?}; deleting without a netns");
        return String::new();
    }
    netns.to_string()
}

/// DEL every attachment of a stale container; true when all went away.
async fn delete_container<E: PluginExec, N>(
    inv: &Invocation<E, N>,
    cni_dir: &Path,
    cid: &str,
    errors: &mut ErrorList,
) -> bool {
    let delegates = match cache::load_delegates(cni_dir, cid, "eth0") {
        Ok(Some(d)) => d,
        Ok(None) => cache::delegates_from_results(cni_dir, cid, "eth0"),
        Err(e) => {
            tracing::warn!("GC: unreadable cache of {cid} ({}); using the results cache", e.msg);
            cache::delegates_from_results(cni_dir, cid, "eth0")
        }
    };
    let mut all_gone = true;
    for d in delegates.iter().rev() {
        let record = cache::load_result(cni_dir, d.config.name(), cid, &d.ifname);
        // The netns and pod identity the attachment was made with: plugins such as
        // Calico need the pod name on DEL.
        let rt = RuntimeConf {
            container_id: cid.to_string(),
            netns: safe_netns(cid, record.as_ref().map(|r| r.netns.as_str()).unwrap_or_default()),
            ifname: d.ifname.clone(),
            cni_args: record
                .as_ref()
                .map(|r| r.cni_args.clone())
                .unwrap_or_else(|| inv.delegate_cni_args(&K8sArgs::default(), d)),
            capability_args: d.capability_args.clone(),
        };
        let cached = record.and_then(|r| r.result);
        match delegate::del_network(&inv.exec, &d.config, &rt, cached.as_ref()).await {
            Ok(()) => cache::remove_result(cni_dir, d.config.name(), cid, &d.ifname),
            Err(e) => {
                all_gone = false;
                errors.push(e.context(format!("GC of stale container {cid}")));
            }
        }
    }
    if all_gone {
        let _ = cache::remove_delegates(cni_dir, cid);
    }
    all_gone
}
