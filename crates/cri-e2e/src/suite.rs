//! What every scenario shares: the work dir, the CNI bin dir (our plugin behind the
//! recorder plus Debian's plugins), the API stand-in with the NADs, the network configs,
//! the host links, and the checks that nothing is left behind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use kube_standin::StandIn;
use serde_json::{Value, json};

use crate::containerd;
use crate::janitor::{self, Guard};
use crate::record::{self, Call};
use crate::sys;

/// Host links (fixed names: one suite runs at a time, see the lock in main).
pub const POD_BRIDGE: &str = "ce2e-br0";
pub const NAD_BRIDGE: &str = "ce2e-br1";
pub const PODMAN_BRIDGE: &str = "ce2e-br2";
/// The macvlan parent: a veth pair, both ends up (a macvlan on a down parent drops all).
pub const PARENT: &str = "ce2e-p0";
pub const PARENT_PEER: &str = "ce2e-p1";
/// The broken NAD's macvlan master, which never exists.
pub const MISSING_MASTER: &str = "ce2e-missing";
const ALL_LINKS: [&str; 5] = [POD_BRIDGE, NAD_BRIDGE, PODMAN_BRIDGE, PARENT, PARENT_PEER];

/// Subnets: eth0, the bridge NAD, podman's eth0, podman's net1 (the macvlan NAD has static IPs).
pub const POD_SUBNET: &str = "10.200.0.0/24";
pub const NAD_BRIDGE_SUBNET: &str = "10.202.0.0/24";
pub const PODMAN_SUBNET: &str = "10.203.0.0/24";
pub const PODMAN_NET1_SUBNET: &str = "10.204.0.0/24";

/// Debian's plugins our configs use (containerd also needs `loopback`).
const PLUGINS: [&str; 7] = ["loopback", "bridge", "host-local", "macvlan", "portmap", "static", "tuning"];

/// The primary network (the pod's eth0): what a node's `10-*.conflist` would say.
pub const PRIMARY_NETWORK: &str = "e2e-pod-network";
pub const NAD_MACVLAN: &str = "e2e-macvlan";
pub const NAD_BRIDGE_NAME: &str = "e2e-bridge";
pub const NAD_BROKEN: &str = "e2e-broken";
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
pub const STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

pub struct Suite {
    pub work: PathBuf,
    /// containerd's CNI bin dir: the recorder as `multus`, Debian's plugins.
    pub bin: PathBuf,
    /// The same without the recorder (for timings).
    pub bin_direct: PathBuf,
    /// The recorder's output.
    pub calls: PathBuf,
    /// multus' `cniDir` (its scratch and results caches).
    pub multus_cache: PathBuf,
    /// host-local's `dataDir` for every network.
    pub ipam: PathBuf,
    pub kubeconfig: PathBuf,
    pub containerd: containerd::Dirs,
    pub standin: StandIn,
    pub macvlan: bool,
    _guard: Guard,
}

impl Suite {
    /// With `keep_work`, the work dir (configs, recorded calls, logs) stays for a look.
    pub fn setup(work: PathBuf, multus: &Path, cni_plugins: &Path, keep_work: bool) -> Result<Suite> {
        for plugin in PLUGINS {
            let path = cni_plugins.join(plugin);
            ensure!(path.exists(), "missing {} (Debian's containernetworking-plugins)", path.display());
        }
        remove_host_links();
        let runtime_dirs = sys::absent_runtime_dirs();
        let guard = {
            let work = work.clone();
            janitor::defer("work dir and host links", move || {
                remove_host_links();
                sys::remove_empty_dirs(&runtime_dirs);
                forget_libcni_results(&work);
                sys::unmount_under(&work);
                if keep_work {
                    println!("kept the work dir {}", work.display());
                } else if let Err(e) = std::fs::remove_dir_all(&work) {
                    eprintln!("cri-e2e: cleanup: removing {}: {e}", work.display());
                }
            })
        };
        let bin = work.join("bin");
        let bin_direct = work.join("bin-direct");
        let calls = work.join("calls");
        for dir in [&bin, &bin_direct, &calls] {
            std::fs::create_dir_all(dir)?;
        }
        for plugin in PLUGINS {
            symlink(cni_plugins.join(plugin), bin.join(plugin))?;
            symlink(cni_plugins.join(plugin), bin_direct.join(plugin))?;
        }
        record::install(&bin.join("multus"), multus, &calls)?;
        symlink(multus, bin_direct.join("multus"))?;

        sys::run("ip", &["link", "add", PARENT, "type", "veth", "peer", "name", PARENT_PEER])?;
        sys::run("ip", &["link", "set", PARENT, "up"])?;
        sys::run("ip", &["link", "set", PARENT_PEER, "up"])?;
        let macvlan = sys::run("ip", &["link", "add", "ce2e-probe", "link", PARENT, "type", "macvlan"]).is_ok();
        sys::delete_link("ce2e-probe");

        let standin = StandIn::start();
        let kubeconfig = work.join("kubeconfig");
        standin.write_kubeconfig(&kubeconfig, "cri-e2e")?;
        let suite = Suite {
            multus_cache: work.join("multus"),
            ipam: work.join("ipam"),
            containerd: containerd::Dirs { base: work.join("containerd") },
            work,
            bin,
            bin_direct,
            calls,
            kubeconfig,
            standin,
            macvlan,
            _guard: guard,
        };
        for nad in suite.nads() {
            suite.standin.add_nad(nad);
        }
        Ok(suite)
    }

    /// The pod's primary network: a bridge with host-local, then portmap.
    pub fn primary_network(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": PRIMARY_NETWORK,
            "plugins": [
                {"type": "bridge", "bridge": POD_BRIDGE, "isGateway": true, "hairpinMode": true,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": self.ipam}},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
            ]
        })
    }

    /// `00-multus.conf` as a node has it, with the primary network as its master.
    pub fn multus_conf(&self, cni_version: &str, pod_annotations_capability: bool) -> Value {
        let mut capabilities = json!({"portMappings": true});
        if pod_annotations_capability {
            capabilities["io.kubernetes.cri.pod-annotations"] = json!(true);
        }
        json!({
            "cniVersion": cni_version,
            "name": "multus-cni-network",
            "type": "multus",
            "capabilities": capabilities,
            "kubeconfig": self.kubeconfig,
            "cniDir": self.multus_cache,
            "binDir": self.bin_direct,
            "logLevel": "verbose",
            "logFile": self.work.join("multus.log"),
            "logToStderr": false,
            "delegates": [self.primary_network()]
        })
    }

    /// The NADs the pods ask for, in namespace `default`.
    fn nads(&self) -> Vec<Value> {
        let nad = |name: &str, config: Value| {
            json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                   "metadata": {"name": name, "namespace": "default"},
                   "spec": {"config": config.to_string()}})
        };
        vec![
            nad(
                NAD_MACVLAN,
                json!({"cniVersion": "0.3.1", "name": NAD_MACVLAN, "plugins": [
                    {"type": "macvlan", "master": PARENT, "mode": "bridge", "capabilities": {"ips": true},
                     "ipam": {"type": "static"}},
                    {"type": "tuning", "capabilities": {"mac": true}}
                ]}),
            ),
            nad(
                NAD_BRIDGE_NAME,
                json!({"cniVersion": "0.4.0", "name": NAD_BRIDGE_NAME, "type": "bridge", "bridge": NAD_BRIDGE,
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": NAD_BRIDGE_SUBNET}]],
                                "dataDir": self.ipam}}),
            ),
            nad(
                NAD_BROKEN,
                json!({"cniVersion": "0.3.1", "name": NAD_BROKEN, "type": "macvlan", "master": MISSING_MASTER,
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.205.0.0/24"}]],
                                "dataDir": self.ipam}}),
            ),
        ]
    }

    /// Writes a CNI conf dir holding only `file` with `config` (before containerd
    /// starts: containerd may miss a config moved in later).
    pub fn conf_dir(&self, phase: &str, file: &str, config: &Value) -> Result<PathBuf> {
        let dir = self.work.join(format!("net.d-{phase}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(file), serde_json::to_string_pretty(config)?)?;
        Ok(dir)
    }

    /// Registers a pod with the stand-in (as the apiserver has it before kubelet runs it).
    pub fn add_pod(&self, name: &str, uid: &str, annotations: &HashMap<String, String>) {
        self.standin.add_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": uid, "annotations": annotations},
            "spec": {"nodeName": "cri-e2e", "containers": [{"name": "c", "image": "busybox"}]}
        }));
    }

    pub fn calls_for(&self, container_id: &str) -> Result<Vec<Call>> {
        record::calls_for(&self.calls, container_id)
    }

    /// Checks that a container left nothing: no netns, no host veth its ADDs created,
    /// no port on our bridges, no host-local lease, no multus, libcni or tuning state
    /// file, no iptables rule naming it.
    pub fn assert_nothing_left(&self, container_id: &str, netns: Option<&Path>) -> Result<()> {
        let mut leaks = Vec::new();
        if let Some(netns) = netns.filter(|n| n.exists()) {
            leaks.push(format!("netns {}", netns.display()));
        }
        for veth in self.host_veths_of(container_id)? {
            if sys::link_exists(&veth) {
                leaks.push(format!("host link {veth}"));
            }
        }
        for link in sys::host_links()? {
            if let Some(master) = link.master.as_deref().filter(|m| [POD_BRIDGE, NAD_BRIDGE, PODMAN_BRIDGE].contains(m))
            {
                leaks.push(format!("host link {} on {master}", link.name));
            }
        }
        leaks.extend(files_mentioning(&self.ipam, container_id, true).into_iter().map(|f| format!("lease {f}")));
        leaks.extend(
            files_mentioning(&self.multus_cache, container_id, false).into_iter().map(|f| format!("multus cache {f}")),
        );
        for (dir, what) in [("/var/lib/cni/results", "libcni cache"), ("/run/cni/tuning", "tuning's saved state")] {
            leaks.extend(
                files_mentioning(Path::new(dir), container_id, false).into_iter().map(|f| format!("{what} {f}")),
            );
        }
        let nat = sys::run("iptables-save", &["-t", "nat"]).unwrap_or_default();
        leaks.extend(nat.lines().filter(|l| l.contains(container_id)).map(|l| format!("iptables: {l}")));
        if leaks.is_empty() { Ok(()) } else { bail!("left behind by {container_id}:\n    {}", leaks.join("\n    ")) }
    }

    /// Host-side interfaces named in the results our plugin printed for `container_id`.
    fn host_veths_of(&self, container_id: &str) -> Result<BTreeSet<String>> {
        let mut names = BTreeSet::new();
        for call in self.calls_for(container_id)?.iter().filter(|c| c.command() == "ADD") {
            let output = call.output();
            for iface in output["interfaces"].as_array().into_iter().flatten() {
                let host_side = iface.get("sandbox").is_none_or(|s| s.as_str().is_some_and(str::is_empty));
                let name = iface["name"].as_str().unwrap_or_default();
                if host_side && ![POD_BRIDGE, NAD_BRIDGE, PODMAN_BRIDGE].contains(&name) && !name.is_empty() {
                    names.insert(name.to_owned());
                }
            }
        }
        Ok(names)
    }
}

/// Files under `dir` whose name (or, with `contents`, content) mentions `needle`.
fn files_mentioning(dir: &Path, needle: &str, contents: bool) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_mentioning(&path, needle, contents));
        } else if path.to_string_lossy().contains(needle)
            || (contents && std::fs::read_to_string(&path).is_ok_and(|text| text.contains(needle)))
        {
            found.push(path.display().to_string());
        }
    }
    found
}

fn remove_host_links() {
    for link in ALL_LINKS {
        sys::delete_link(link);
    }
}

/// libcni caches results in /var/lib/cni/results under the container id; remove the
/// ones of containers this run created (their ids are in the recorder's output).
fn forget_libcni_results(work: &Path) {
    let ids: BTreeSet<String> = record::calls(&work.join("calls"))
        .unwrap_or_default()
        .iter()
        .map(|c| c.container_id().to_owned())
        .filter(|id| !id.is_empty())
        .collect();
    for id in &ids {
        for file in files_mentioning(Path::new("/var/lib/cni/results"), id, false) {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// The `network-status` annotation of a pod, parsed, keyed by interface.
pub fn network_status(pod: &Value) -> Result<BTreeMap<String, Value>> {
    let raw = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(STATUS_ANNOTATION))
        .and_then(Value::as_str)
        .context("the pod has no network-status annotation")?;
    let entries: Vec<Value> =
        serde_json::from_str(raw).with_context(|| format!("network-status is not JSON: {raw}"))?;
    Ok(entries.into_iter().map(|e| (e["interface"].as_str().unwrap_or_default().to_owned(), e)).collect())
}

/// A pseudo-random UUID for pods: the stand-in's own generator.
pub use kube_standin::new_uid;
