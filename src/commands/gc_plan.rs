//! Which networks a GC is forwarded to, each with the `cni.dev/valid-attachments` it
//! must keep.
//!
//! Go Multus forwards GC only to the cluster network, so the IPAM of a secondary network
//! never hears of attachments the runtime forgot. Here every network this node attached
//! gets GC: the primary with the runtime's own list (its attachments are the runtime's
//! `{containerID, ifname}` pairs), and each secondary network recorded in our caches
//! with the attachments of the containers the runtime still knows. A network below CNI
//! 1.1 gets no GC (it would not understand it); the DEL of each of its stale cached
//! attachments, which GC runs first for every network, is what libcni's GC would have
//! asked of it — and a valid attachment is never DELeted.

use crate::cache;
use crate::config::Attachment;
use crate::delegate::{Delegate, NetworkConfig};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

/// One network to send GC to.
#[derive(Debug, Clone, PartialEq)]
pub struct GcTarget {
    pub config: NetworkConfig,
    /// The attachments of this network that must be kept.
    pub valid: Vec<Attachment>,
}

/// The GC targets: `primary` (when resolved) with the runtime's list `valid`, then every
/// other network the caches record, by CNI network name, with its attachments of the
/// containers in `valid`.
/// Call after the stale containers were DELeted: what the caches still hold then is
/// either valid or failed to delete (and is not listed as valid).
pub fn targets(cni_dir: &Path, valid: &[Attachment], primary: Option<&Delegate>) -> Vec<GcTarget> {
    let live: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
    let mut order: Vec<String> = Vec::new();
    let mut by_network: BTreeMap<String, (NetworkConfig, BTreeSet<(String, String)>)> = BTreeMap::new();
    let mut add = |config: &NetworkConfig, attachment: Option<(String, String)>| {
        let entry = by_network.entry(config.name().to_string()).or_insert_with(|| {
            order.push(config.name().to_string());
            (config.clone(), BTreeSet::new())
        });
        entry.1.extend(attachment);
    };
    if let Some(p) = primary {
        add(&p.config, None);
        for a in valid {
            add(&p.config, Some((a.container_id.clone(), a.ifname.clone())));
        }
    }
    let mut containers: BTreeSet<String> = cache::cached_containers(cni_dir).into_iter().collect();
    let records = cache::all_results(cni_dir);
    containers.extend(records.iter().filter_map(|(_, r)| r.as_ref()).map(|r| r.container_id.clone()));
    for cid in &containers {
        let delegates = match cache::load_delegates(cni_dir, cid, "eth0") {
            Ok(Some(d)) => d,
            _ => cache::delegates_from_results(cni_dir, cid, "eth0"),
        };
        // A container still cached but not valid (its DEL failed) names a network that
        // must hear of GC too, without its attachment.
        let keep = live.contains(cid.as_str());
        for d in delegates.iter().filter(|d| !d.primary) {
            add(&d.config, keep.then(|| (cid.clone(), d.ifname.clone())));
        }
    }
    order
        .into_iter()
        .filter_map(|name| by_network.remove(&name))
        .map(|(config, set)| GcTarget {
            config,
            valid: set.into_iter().map(|(container_id, ifname)| Attachment { container_id, ifname }).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn delegate(name: &str, ifname: &str, primary: bool) -> Delegate {
        let config =
            NetworkConfig::from_value(&json!({"cniVersion": "1.1.0", "name": name, "type": "fake_delegate"})).unwrap();
        Delegate { config, name: name.into(), ifname: ifname.into(), primary, capability_args: Map::new() }
    }

    fn att(cid: &str, ifname: &str) -> Attachment {
        Attachment { container_id: cid.into(), ifname: ifname.into() }
    }

    #[test]
    fn every_secondary_network_gets_the_attachments_of_live_containers_only() {
        let dir = tempfile::tempdir().unwrap();
        let pri = delegate("pri", "eth0", true);
        cache::save_delegates(dir.path(), "live1", &[pri.clone(), delegate("sec", "net1", false)]).unwrap();
        cache::save_delegates(
            dir.path(),
            "live2",
            &[pri.clone(), delegate("sec", "net1", false), delegate("other", "net2", false)],
        )
        .unwrap();
        cache::save_delegates(dir.path(), "stale", &[pri.clone(), delegate("gone", "net1", false)]).unwrap();
        let valid = [att("live1", "eth0"), att("live2", "eth0")];
        let t = targets(dir.path(), &valid, Some(&pri));
        let summary: Vec<(&str, Vec<Attachment>)> = t.iter().map(|t| (t.config.name(), t.valid.clone())).collect();
        assert_eq!(
            summary,
            [
                ("pri", valid.to_vec()),
                ("sec", vec![att("live1", "net1"), att("live2", "net1")]),
                ("other", vec![att("live2", "net2")]),
                ("gone", vec![]),
            ]
        );
    }

    #[test]
    fn an_unresolved_primary_still_leaves_the_secondaries() {
        let dir = tempfile::tempdir().unwrap();
        cache::save_delegates(dir.path(), "c1", &[delegate("pri", "eth0", true), delegate("sec", "net1", false)])
            .unwrap();
        let t = targets(dir.path(), &[att("c1", "eth0")], None);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].config.name(), "sec");
        assert_eq!(t[0].valid, [att("c1", "net1")]);
    }

    #[test]
    fn a_network_only_stale_containers_use_gets_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        cache::save_delegates(dir.path(), "c1", &[delegate("pri", "eth0", true), delegate("sec", "net1", false)])
            .unwrap();
        let t = targets(dir.path(), &[], Some(&delegate("pri", "eth0", true)));
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|t| t.valid.is_empty()));
    }
}
