//! Leak accounting: what a scenario must not leave behind (links, caches, leases,
//! bridge ports, iptables rules, delegate processes), and where to look for it.

use super::{Netns, bridge_ports, container_cache_files, leases_by_network, process_alive, read_calls};
use std::path::PathBuf;
use std::process::Command;

/// Every line of `iptables-save` (all tables) that mentions `needle`.
pub fn iptables_lines(needle: &str) -> Vec<String> {
    let out = Command::new("iptables-save").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    out.unwrap_or_default().lines().filter(|l| l.contains(needle)).map(String::from).collect()
}

/// The portmap chains (`CNI-DN-*`) the rules of container `cid` jump to.
pub fn portmap_chains(cid: &str) -> Vec<String> {
    let mut v: Vec<String> = iptables_lines(cid)
        .iter()
        .flat_map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .filter(|w| w.starts_with("CNI-DN-"))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// What a scenario must not leave behind, and where to look for it.
#[derive(Default)]
pub struct LeakCheck<'a> {
    pub netns: Vec<&'a Netns>,
    pub cache_dirs: Vec<PathBuf>,
    pub lease_dirs: Vec<PathBuf>,
    pub bridges: Vec<String>,
    /// Container IDs: no iptables rule may mention them.
    pub cids: Vec<String>,
    /// Portmap chains seen after ADD: they must be gone.
    pub chains: Vec<String>,
    /// Call logs of fake delegates: every process they record must be gone.
    pub records: Vec<PathBuf>,
}

impl LeakCheck<'_> {
    /// Everything found, one line per leak; empty when nothing was left.
    pub fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        for ns in &self.netns {
            let names = ns.link_names();
            if names != ["lo"] {
                leaks.push(format!("netns {}: links {names:?}", ns.name));
            }
        }
        for d in &self.cache_dirs {
            let files = container_cache_files(d);
            if !files.is_empty() {
                leaks.push(format!("cache {}: {files:?}", d.display()));
            }
        }
        for d in &self.lease_dirs {
            for (net, held) in leases_by_network(d) {
                if !held.is_empty() {
                    leaks.push(format!("host-local {}: leases {held:?}", d.join(net).display()));
                }
            }
        }
        for b in &self.bridges {
            let ports = bridge_ports(b);
            if !ports.is_empty() {
                leaks.push(format!("bridge {b}: ports {ports:?}"));
            }
        }
        for cid in &self.cids {
            let lines = iptables_lines(cid);
            if !lines.is_empty() {
                leaks.push(format!("iptables rules of {cid}: {lines:?}"));
            }
        }
        for chain in &self.chains {
            let lines = iptables_lines(chain);
            if !lines.is_empty() {
                leaks.push(format!("iptables chain {chain}: {lines:?}"));
            }
        }
        for r in &self.records {
            for c in read_calls(r) {
                if let Some(pid) = c["pid"].as_u64()
                    && process_alive(pid)
                    && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|s| s.contains("fake_delegate"))
                {
                    leaks.push(format!("delegate process {pid} ({} {}) still runs", c["command"], c["name"]));
                }
            }
        }
        leaks
    }

    pub fn assert_clean(&self, what: &str) {
        let leaks = self.leaks();
        assert!(leaks.is_empty(), "{what}: left behind:\n  {}", leaks.join("\n  "));
    }
}
