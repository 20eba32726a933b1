//! The `k8s.v1.cni.cncf.io/network-status` annotation and the `AddedInterface` events.

use crate::cni::CniResult;
use crate::cni::result::{Dns, cidr_ip};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";
/// The deprecated key older Multus also wrote (opt-in: `writeLegacyNetworksStatus`).
pub const LEGACY_NETWORKS_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks-status";

/// One entry, fields in Go Multus' order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    pub dns: Dns,
    #[serde(default, rename = "device-info", skip_serializing_if = "Option::is_none")]
    pub device_info: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<String>,
    /// Only when the attachment asked for `default-route` (multi-net spec §5.3).
    #[serde(default, rename = "default-route", skip_serializing_if = "Vec::is_empty")]
    pub default_route: Vec<String>,
}

fn bare_ip(cidr: &str) -> String {
    cidr_ip(cidr).map(|ip| ip.to_string()).unwrap_or_else(|| cidr.to_string())
}

fn default_gateways(result: &CniResult) -> Vec<String> {
    result
        .routes
        .iter()
        .filter(|r| r.dst.is_empty() || r.dst.ends_with("/0"))
        .filter_map(|r| r.gw.clone()) // Go prints "<nil>" for a default route without gw
        .collect()
}

/// Entries for one attachment, after Go Multus' `CreateNetworkStatuses`:
/// one interface → one entry with every IP; otherwise one entry per sandbox interface
/// with the IPs that reference it (IPs without an index go to the last one). Where Go
/// writes nothing (no sandbox interface at all: IPAM-only or Calico-style results), we
/// write a minimal entry for the interface we asked for, as the multi-net spec wants.
pub fn entries(
    name: &str,
    requested_ifname: &str,
    master: bool,
    result: &CniResult,
    default_route: &[IpAddr],
) -> Vec<NetworkStatus> {
    let base = NetworkStatus {
        name: name.to_string(),
        dns: result.dns.clone(),
        gateway: default_gateways(result),
        default_route: default_route.iter().map(IpAddr::to_string).collect(),
        ..Default::default()
    };
    let sandbox: Vec<usize> = result.sandbox_interfaces().map(|(i, _)| i).collect();
    if result.interfaces.len() == 1 || sandbox.is_empty() {
        return vec![single_entry(base, requested_ifname, master, result)];
    }
    per_interface_entries(base, master, result, &sandbox)
}

/// One entry for the whole result: one interface (named only when it is in the
/// sandbox), or none in the sandbox (then the requested name, if any).
fn single_entry(mut s: NetworkStatus, requested_ifname: &str, master: bool, result: &CniResult) -> NetworkStatus {
    if result.interfaces.len() == 1 {
        let iface = &result.interfaces[0];
        if iface.sandbox.as_deref().is_some_and(|x| !x.is_empty()) {
            set_interface(&mut s, iface);
        }
    } else if !requested_ifname.is_empty() {
        s.interface = requested_ifname.to_string();
    }
    s.ips = result.ips.iter().map(|ip| bare_ip(&ip.address)).collect();
    s.default = master;
    s
}

/// One entry per sandbox interface, each with its IPs (an IP naming no interface
/// belongs to the last one); the default is the one the first IP with a gateway names.
fn per_interface_entries(
    base: NetworkStatus,
    master: bool,
    result: &CniResult,
    sandbox: &[usize],
) -> Vec<NetworkStatus> {
    let last = *sandbox.last().unwrap_or(&0);
    let default_idx = result
        .ips
        .iter()
        .find(|ip| ip.gateway.is_some())
        .and_then(|ip| ip.interface)
        .filter(|i| sandbox.contains(i))
        .unwrap_or(sandbox[0]);
    sandbox
        .iter()
        .map(|&idx| {
            let mut s = base.clone();
            set_interface(&mut s, &result.interfaces[idx]);
            s.ips = result
                .ips
                .iter()
                .filter(|ip| ip.interface.unwrap_or(last) == idx)
                .map(|ip| bare_ip(&ip.address))
                .collect();
            s.default = master && idx == default_idx;
            s
        })
        .collect()
}

fn set_interface(s: &mut NetworkStatus, i: &crate::cni::result::Interface) {
    s.interface = i.name.clone();
    s.mac = i.mac.clone().unwrap_or_default();
    s.mtu = i.mtu.filter(|m| *m > 0);
}

/// The annotation value, formatted as Go Multus writes it: a list whose entries are
/// indented with four spaces.
pub fn annotation_value(entries: &[NetworkStatus]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|e| {
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            let _ = e.serialize(&mut ser);
            String::from_utf8(buf).unwrap_or_default()
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// `Add <if> [<ip/prefix> ...] from <name>`, the AddedInterface event message.
pub fn added_interface_message(ifname: &str, result: &CniResult, name: &str) -> String {
    let ips: Vec<&str> = result.ips.iter().map(|ip| ip.address.as_str()).collect();
    let from = if name.is_empty() { String::new() } else { format!(" from {name}") };
    format!("Add {ifname} [{}]{from}", ips.join(" "))
}

/// How this node's ClusterRole lets the plugin write the network status, learnt once
/// per node: Go Multus' stock ClusterRole has no `patch` on pods, so the merge patch
/// gets 403 and the GET + `PUT pods/status` fallback follows — on every ADD, one request
/// known to fail. After the first 403 the plugin records [`StatusWrite::UpdateStatus`]
/// in `<cniDir>/.status-write-method` and later ADDs go straight to the fallback; a 403
/// there (the ClusterRole changed) removes the hint and tries the patch again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWrite {
    /// One merge patch of the pod (needs `patch pods`): the fastest path.
    MergePatch,
    /// `PUT pods/status` with the pod read before (needs `update pods/status`).
    UpdateStatus,
}

/// The hint's file name in cniDir: a dot file, so the cache's GC never takes it for a
/// container's scratch cache.
pub const STATUS_WRITE_HINT: &str = ".status-write-method";
const UPDATE_STATUS: &str = "update-pods-status";

impl StatusWrite {
    /// The method the hint names; `MergePatch` when there is no (usable) hint. The file
    /// is opened without following symlinks and must be a small regular file.
    pub fn learnt(path: &std::path::Path) -> StatusWrite {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path);
        let Ok(file) = opened else { return StatusWrite::MergePatch };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return StatusWrite::MergePatch;
        }
        let mut text = String::new();
        // A tampered file is at most 64 bytes of our time.
        if file.take(64).read_to_string(&mut text).is_err() {
            return StatusWrite::MergePatch;
        }
        if text.trim() == UPDATE_STATUS { StatusWrite::UpdateStatus } else { StatusWrite::MergePatch }
    }

    /// Remember `self` for the next ADDs on this node (best effort: a failure only costs
    /// the next ADD one request). Written atomically, mode 0600; `MergePatch`, the
    /// default, removes the hint.
    pub fn remember(self, path: &std::path::Path) {
        let written = match self {
            StatusWrite::UpdateStatus => crate::fsutil::write_atomic_deferred(path, UPDATE_STATUS.as_bytes(), 0o600),
            StatusWrite::MergePatch => crate::fsutil::remove_if_exists(path),
        };
        if let Err(e) = written {
            tracing::warn!("cannot record the status write method in {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(v: serde_json::Value) -> CniResult {
        CniResult::from_value(&v, "1.0.0").unwrap()
    }

    #[test]
    fn status_write_hint_round_trip_and_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let hint = dir.path().join(STATUS_WRITE_HINT);
        assert_eq!(StatusWrite::learnt(&hint), StatusWrite::MergePatch, "no hint: the fast path");
        StatusWrite::UpdateStatus.remember(&hint);
        assert_eq!(StatusWrite::learnt(&hint), StatusWrite::UpdateStatus);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&hint).unwrap().permissions().mode() & 0o777, 0o600);
        StatusWrite::MergePatch.remember(&hint);
        assert!(!hint.exists());
        // A symlink to a file that says the right words is not followed.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, UPDATE_STATUS).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &hint).unwrap();
        assert_eq!(StatusWrite::learnt(&hint), StatusWrite::MergePatch);
        std::fs::remove_file(&hint).unwrap();
        // A FIFO does not block, a directory is not a hint, garbage is not a hint.
        nix::unistd::mkfifo(&hint, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(StatusWrite::learnt(&hint), StatusWrite::MergePatch);
        std::fs::remove_file(&hint).unwrap();
        std::fs::create_dir(&hint).unwrap();
        assert_eq!(StatusWrite::learnt(&hint), StatusWrite::MergePatch);
        std::fs::remove_dir(&hint).unwrap();
        std::fs::write(&hint, "x".repeat(1 << 20)).unwrap();
        assert_eq!(StatusWrite::learnt(&hint), StatusWrite::MergePatch);
    }

    #[test]
    fn seed_shape_calico_and_macvlan() {
        // Calico: one host-side interface, no sandbox.
        let calico = result(
            json!({"cniVersion":"0.3.1","interfaces":[{"name":"cali123"}],"ips":[{"version":"4","address":"10.244.5.2/32"}],"dns":{}}),
        );
        let macvlan = result(
            json!({"cniVersion":"0.3.0","interfaces":[{"name":"net1","mac":"2e:c2:b8:fe:13:6f","sandbox":"/var/run/netns/x"}],"ips":[{"version":"4","interface":0,"address":"10.12.34.201/24","gateway":"10.12.34.254"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}),
        );
        let mut all = entries("k8s-pod-network", "eth0", true, &calico, &[]);
        all.extend(entries("default/privatezone-macvlan-conf", "net1", false, &macvlan, &[]));
        let v = annotation_value(&all);
        assert_eq!(
            v,
            "[{\n    \"name\": \"k8s-pod-network\",\n    \"ips\": [\n        \"10.244.5.2\"\n    ],\n    \"default\": true,\n    \"dns\": {}\n},{\n    \"name\": \"default/privatezone-macvlan-conf\",\n    \"interface\": \"net1\",\n    \"ips\": [\n        \"10.12.34.201\"\n    ],\n    \"mac\": \"2e:c2:b8:fe:13:6f\",\n    \"dns\": {}\n}]"
        );
        assert_eq!(
            added_interface_message("eth0", &calico, "k8s-pod-network"),
            "Add eth0 [10.244.5.2/32] from k8s-pod-network"
        );
    }

    #[test]
    fn bridge_result_multi_interface_and_ipam_only() {
        let bridge = result(
            json!({"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa:aa:aa:aa:aa:aa"},{"name":"veth1","mac":"bb:bb:bb:bb:bb:bb"},{"name":"eth0","mac":"cc:cc:cc:cc:cc:cc","sandbox":"/n"}],"ips":[{"interface":2,"address":"10.244.0.5/24","gateway":"10.244.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.0.1"},{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.96.0.10"]}}),
        );
        let e = entries("cbr0", "eth0", true, &bridge, &[]);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].interface.as_str(), e[0].mac.as_str(), e[0].default), ("eth0", "cc:cc:cc:cc:cc:cc", true));
        assert_eq!(e[0].gateway, vec!["10.244.0.1"], "no <nil> gateway");
        assert_eq!(e[0].dns.nameservers, vec!["10.96.0.10"]);
        let ipam_only = result(json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}));
        let e = entries("ns/net", "net1", false, &ipam_only, &["10.0.0.1".parse().unwrap()]);
        assert_eq!(
            (e[0].interface.as_str(), e[0].ips.clone(), e[0].default_route.clone()),
            ("net1", vec!["10.0.0.2".to_string()], vec!["10.0.0.1".to_string()])
        );
    }
}
