//! GC (CNI 1.1): clean up every attachment the runtime no longer knows.
//!
//! Go Multus ignores the runtime's `cni.dev/valid-attachments` and only forwards GC to
//! the cluster network with its own cache as keep-list, so stale scratch-cache entries
//! (and the IPs behind them) live forever. Here: every cached container that is not
//! valid is DELeted from its cache, then its entries are removed, then GC is forwarded
//! to the primary network with the runtime's list.

use super::Node;
use crate::cache;
use crate::cni::{K8sArgs, Version};
use crate::config::Attachment;
use crate::delegate::{self, PluginExec, RuntimeConf};
use crate::error::{CniError, ErrorList, Result, code};
use std::collections::HashSet;

pub async fn gc<E: PluginExec, N>(node: &Node<E, N>) -> Result<()> {
    if node.conf.version() < Version::V1_1_0 {
        return Err(CniError::new(code::INCOMPATIBLE_VERSION, "config version does not allow GC"));
    }
    node.conf.require_networks()?;
    let valid: Vec<Attachment> = node.conf.valid_attachments.clone().unwrap_or_default();
    let valid_containers: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
    let cni_dir = node.cni_dir();
    let mut errors = ErrorList::default();

    for cid in cache::cached_containers(&cni_dir) {
        if valid_containers.contains(cid.as_str()) {
            continue;
        }
        match cache::load_delegates(&cni_dir, &cid, "eth0") {
            Ok(Some(delegates)) => {
                let mut failed = false;
                for d in delegates.iter().rev() {
                    let rt = RuntimeConf {
                        container_id: cid.clone(),
                        netns: String::new(),
                        ifname: d.ifname.clone(),
                        cni_args: node.delegate_cni_args(&K8sArgs::default(), d),
                        capability_args: d.capability_args.clone(),
                    };
                    let cached = cache::load_result(&cni_dir, d.config.name(), &cid, &d.ifname).and_then(|r| r.result);
                    match delegate::del_network(&node.exec, &d.config, &rt, cached.as_ref()).await {
                        Ok(()) => cache::remove_result(&cni_dir, d.config.name(), &cid, &d.ifname),
                        Err(e) => {
                            failed = true;
                            errors.push(e.context(format!("GC of stale container {cid}")));
                        }
                    }
                }
                if !failed {
                    let _ = cache::remove_delegates(&cni_dir, &cid);
                    tracing::info!("GC removed stale attachments of container {cid}");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("GC: removing unreadable cache of {cid}: {}", e.msg);
                let _ = cache::remove_delegates(&cni_dir, &cid);
            }
        }
    }
    // Results of containers that are not valid and have no scratch entry left.
    for (path, record) in cache::all_results(&cni_dir) {
        let stale = record.as_ref().is_none_or(|r| !valid_containers.contains(r.container_id.as_str()));
        if stale
            && !cache::cached_containers(&cni_dir).iter().any(|c| record.as_ref().is_some_and(|r| &r.container_id == c))
        {
            let _ = crate::fsutil::remove_if_exists(&path);
        }
    }
    if let Some(master) = node.static_delegates()?.into_iter().next() {
        let list = serde_json::to_value(&valid).unwrap_or_default();
        if let Err(e) = delegate::gc_network(&node.exec, &master.config, &RuntimeConf::default(), &list).await {
            errors.push(e);
        }
    }
    errors.into_result()
}
