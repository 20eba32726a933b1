//! Network namespaces and host links behind drop guards, and the one parser of
//! `ip -j addr` every test reads links with.

use super::{COUNTER, sh, sh_quiet, unique};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

/// A network namespace `mrs-<pid>-<n>` or `mrs-k<id>` (`make clean-netns` knows the
/// prefix) and the host links a test created for it; Drop deletes both, also when the
/// test panicked.
pub struct Netns {
    pub name: String,
    pub path: String,
    host_links: std::cell::RefCell<Vec<HostLink>>,
}

/// A host link a test made or answers for (a veth pair: deleting one end deletes both;
/// a bridge a plugin created); deleted on Drop, also when the test panicked.
pub struct HostLink {
    pub name: String,
}

impl HostLink {
    /// Delete `name`, made by someone else, on Drop.
    pub fn adopt(name: &str) -> HostLink {
        HostLink { name: name.to_string() }
    }

    /// The host veth pair `name`/`peer`, both ends down.
    pub fn veth(name: &str, peer: &str) -> HostLink {
        let link = HostLink::adopt(name);
        sh(&["ip", "link", "add", name, "type", "veth", "peer", "name", peer]);
        link
    }

    /// The host veth pair `name`/`peer`, both ends UP (a macvlan on a veth whose peer is
    /// down gets nothing).
    pub fn veth_up(name: &str, peer: &str) -> HostLink {
        let link = HostLink::veth(name, peer);
        sh(&["ip", "link", "set", name, "up"]);
        sh(&["ip", "link", "set", peer, "up"]);
        link
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        sh_quiet(&["ip", "link", "del", &self.name]);
    }
}

impl Netns {
    pub fn new() -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        Netns::named(format!("mrs-{}-{n}", std::process::id()))
    }

    /// A netns called `name` (it must start with `mrs-`).
    pub fn named(name: String) -> Netns {
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns { path: format!("/var/run/netns/{name}"), name, host_links: Default::default() }
    }

    /// Delete host link `name` on Drop (a bridge a plugin created).
    pub fn own_host_link(&self, name: &str) {
        self.own(HostLink::adopt(name));
    }

    /// Delete `link` on Drop, after the netns; returns its name.
    pub fn own(&self, link: HostLink) -> String {
        let name = link.name.clone();
        self.host_links.borrow_mut().push(link);
        name
    }

    /// A host veth pair, both ends UP (a working macvlan parent); returns the end to use.
    pub fn host_veth(&self) -> String {
        self.host_veth_pair(&unique("mva"), &unique("mvb"))
    }

    /// The host veth pair `name`/`peer`, both ends UP ([`HostLink::veth_up`]), deleted on
    /// Drop; returns `name`.
    pub fn host_veth_pair(&self, name: &str, peer: &str) -> String {
        self.own(HostLink::veth_up(name, peer))
    }

    /// A link named `ifname` inside the netns (a veth pair with both ends inside).
    pub fn add_link(&self, ifname: &str) {
        let peer = unique("prr");
        sh(&["ip", "-n", &self.name, "link", "add", ifname, "type", "veth", "peer", "name", &peer]);
    }

    /// Every link inside the netns.
    pub fn links(&self) -> Vec<LinkView> {
        links_in(Some(&self.name))
    }

    pub fn link(&self, ifname: &str) -> Option<LinkView> {
        self.links().into_iter().find(|l| l.name == ifname)
    }

    /// Every link but `lo` (what a CNI ADD put there).
    pub fn pod_links(&self) -> Vec<LinkView> {
        self.links().into_iter().filter(|l| l.name != "lo").collect()
    }

    /// Link `ifname`; panics with every link when there is none.
    #[track_caller]
    pub fn expect_link(&self, ifname: &str) -> LinkView {
        let links = self.links();
        links
            .iter()
            .find(|l| l.name == ifname)
            .cloned()
            .unwrap_or_else(|| panic!("no {ifname} in the netns: {links:?}"))
    }

    /// IPv4 default routes as `(dev, gateway)`.
    pub fn default_routes_v4(&self) -> Vec<(String, String)> {
        let out = sh(&["ip", "-n", &self.name, "-j", "-4", "route", "show", "default"]);
        let v: Value = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).expect("ip -j route");
        v.as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["dev"].as_str().unwrap_or_default().to_string(),
                    r["gateway"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Names of the links inside the netns, sorted.
    pub fn link_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.links().into_iter().map(|l| l.name).collect();
        v.sort();
        v
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        sh_quiet(&["ip", "netns", "del", &self.name]);
        // The host links go after it (each one's Drop), in the order they were owned.
    }
}

/// One link as `ip -j addr` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkView {
    pub name: String,
    pub mac: String,
    /// `addr/prefix` of every IPv4 and global IPv6 address.
    pub addrs: Vec<String>,
    pub up: bool,
}

/// Links of netns `ns` (or of the host with `None`).
pub fn links_in(ns: Option<&str>) -> Vec<LinkView> {
    let mut args = vec!["ip"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-j", "addr", "show"]);
    let out = sh(&args);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j: {e}: {out}"));
    v.as_array()
        .expect("ip -j addr prints an array")
        .iter()
        .map(|l| LinkView {
            name: l["ifname"].as_str().unwrap_or_default().to_string(),
            mac: l["address"].as_str().unwrap_or_default().to_string(),
            addrs: l["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["family"] == "inet" || a["scope"] == "global")
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
                .collect(),
            up: l["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP")),
        })
        .collect()
}

pub fn host_link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Ports of bridge `bridge` (veths the bridge plugin attached).
pub fn bridge_ports(bridge: &str) -> Vec<String> {
    let out = Command::new("ip").args(["-j", "link", "show", "master", bridge]).output();
    let Ok(out) = out else { return Vec::new() };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array().into_iter().flatten().filter_map(|l| l["ifname"].as_str().map(String::from)).collect()
}

/// Whether the kernel can create links of `kind` (ipvlan, dummy and macvlan are modules
/// that may be missing).
pub fn kernel_has_link_type(kind: &str) -> bool {
    // Probed once per process, under the lock: two threads probing with the same link
    // names would see "File exists" and wrongly skip.
    static KNOWN: Mutex<BTreeMap<String, bool>> = Mutex::new(BTreeMap::new());
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    *known.entry(kind.to_string()).or_insert_with(|| probe_link_type(kind))
}

/// Whether `ip` with `args` succeeds (its stderr is not ours to show).
fn ip_succeeds(args: &[&str]) -> bool {
    Command::new("ip").args(args).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn probe_link_type(kind: &str) -> bool {
    let probe = format!("mrsprb{}{kind:.3}", std::process::id() % 100000);
    let ok = match kind {
        "macvlan" | "ipvlan" => {
            let parent = format!("{probe}p");
            if !ip_succeeds(&["link", "add", &parent, "type", "veth", "peer", "name", &format!("{probe}q")]) {
                return false;
            }
            let ok = ip_succeeds(&["link", "add", "link", &parent, "name", &probe, "type", kind]);
            sh_quiet(&["ip", "link", "del", &parent]);
            ok
        }
        _ => ip_succeeds(&["link", "add", &probe, "type", kind]),
    };
    sh_quiet(&["ip", "link", "del", &probe]);
    ok
}
