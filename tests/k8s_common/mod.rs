//! Shared setup of the Kubernetes end-to-end tests: one [`World`] per test, holding a
//! network namespace (the pod's sandbox), a host bridge for the primary network, host
//! veth pairs as macvlan parents, a temp dir (kubeconfig, cniDir, host-local data) and a
//! running API stand-in. Everything is named uniquely and removed on drop, even when the
//! test panics. The `multus` binary is driven exactly as containerd drives it.

#![allow(dead_code)] // each test binary uses a different subset

use kube_standin::StandIn;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The primary network's name (`name` of the bridge conflist).
pub const PRIMARY: &str = "k8s-pod-network";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Run `ip` with `args`; panics with its stderr on failure.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("cannot run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `ip` with `args`, ignoring failures (cleanup).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
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

fn probe_link_type(kind: &str) -> bool {
    let probe = format!("mrsprb{}{kind:.3}", std::process::id() % 100000);
    match kind {
        "macvlan" | "ipvlan" => {
            let parent = format!("{probe}p");
            if !Command::new("ip")
                .args(["link", "add", &parent, "type", "veth", "peer", "name", &format!("{probe}q")])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                return false;
            }
            let ok = Command::new("ip")
                .args(["link", "add", "link", &parent, "name", &probe, "type", kind])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ip_quiet(&["link", "del", &probe]);
            ip_quiet(&["link", "del", &parent]);
            ok
        }
        _ => {
            let ok = Command::new("ip")
                .args(["link", "add", &probe, "type", kind])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ip_quiet(&["link", "del", &probe]);
            ok
        }
    }
}

/// Skip a test (return early with a message) when the kernel lacks a link type.
#[macro_export]
macro_rules! require_link_type {
    ($kind:expr) => {
        if !$crate::k8s_common::kernel_has_link_type($kind) {
            eprintln!("SKIPPED: the kernel cannot create {} links", $kind);
            return;
        }
    };
}

/// A pod as the runtime knows it: namespace, name, UID, sandbox container ID.
#[derive(Debug, Clone)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container_id: String,
}

/// The outcome of one invocation of the binary.
#[derive(Debug)]
pub struct Run {
    pub exit: i32,
    /// stdout as JSON (`Null` when empty).
    pub out: Value,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// The result document; panics with everything we know when the call failed.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.exit, 0, "expected success, got {}\nstderr:\n{}", self.out, self.stderr);
        &self.out
    }

    /// The CNI error `(code, msg)`; panics when the call succeeded.
    #[track_caller]
    pub fn err(&self) -> (u64, String) {
        assert_ne!(self.exit, 0, "expected a failure, got {}\nstderr:\n{}", self.out, self.stderr);
        let code = self.out["code"].as_u64().unwrap_or_else(|| panic!("no CNI error on stdout: {}", self.out));
        (code, self.out["msg"].as_str().unwrap_or_default().to_string())
    }
}

/// An address of a link inside the pod's netns.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub name: String,
    pub mac: String,
    /// `a.b.c.d/len`, global IPv4 and IPv6 addresses.
    pub addrs: Vec<String>,
}

/// A host veth pair, both ends UP (a macvlan on a veth whose peer is down gets nothing).
pub struct HostVeth {
    pub name: String,
    pub peer: String,
}

impl HostVeth {
    fn create(name: String) -> HostVeth {
        let peer = format!("{name}p");
        ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &name, "up"]);
        ip(&["link", "set", &peer, "up"]);
        HostVeth { name, peer }
    }
}

impl Drop for HostVeth {
    fn drop(&mut self) {
        ip_quiet(&["link", "del", &self.name]);
    }
}

/// A named network namespace (`/var/run/netns/<name>`).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Every link but `lo`, with its MAC and global addresses (`ip -j addr`).
    pub fn links(&self) -> Vec<Link> {
        let out = ip(&["-n", &self.name, "-j", "addr"]);
        let v: Value = serde_json::from_str(&out).expect("ip -j addr: not JSON");
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["ifname"] != "lo")
            .map(|l| Link {
                name: l["ifname"].as_str().unwrap_or_default().to_string(),
                mac: l["address"].as_str().unwrap_or_default().to_string(),
                addrs: l["addr_info"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|a| a["scope"] == "global")
                    .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or_default(), a["prefixlen"]))
                    .collect(),
            })
            .collect()
    }

    #[track_caller]
    pub fn link(&self, name: &str) -> Link {
        let links = self.links();
        links.iter().find(|l| l.name == name).cloned().unwrap_or_else(|| panic!("no {name} in the netns: {links:?}"))
    }

    /// IPv4 default routes as `(dev, gateway)`.
    pub fn default_routes_v4(&self) -> Vec<(String, String)> {
        let out = ip(&["-n", &self.name, "-j", "-4", "route", "show", "default"]);
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
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip_quiet(&["netns", "del", &self.name]);
    }
}

/// A host bridge created by the bridge plugin; we only delete it.
struct BridgeGuard(String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        ip_quiet(&["link", "del", &self.0]);
    }
}

/// One test's world. Fields drop in order: namespace (and every link in it) first.
pub struct World {
    pub id: String,
    pub netns: Netns,
    _bridge: BridgeGuard,
    pub bridge: String,
    /// Third octet of the primary subnet `10.231.<n>.0/24`.
    pub octet: u32,
    veths: Vec<HostVeth>,
    pub api: StandIn,
    pub dir: tempfile::TempDir,
    extra_netns: Vec<Netns>,
}

impl World {
    pub fn new() -> World {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let id = format!("{:04x}{n:02}", pid & 0xffff);
        let octet = (pid.wrapping_mul(7).wrapping_add(n)) % 250 + 1;
        let dir = tempfile::Builder::new().prefix("mrs-ke2e-").tempdir().expect("tempdir");
        for sub in ["multus", "ipam", "net.d", "bin"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let api = StandIn::start();
        api.write_kubeconfig(&dir.path().join("kubeconfig"), "secret-token").expect("kubeconfig");
        let bridge = format!("mkb{id}");
        World {
            netns: Netns::create(format!("mrs-k{id}")),
            _bridge: BridgeGuard(bridge.clone()),
            bridge,
            octet,
            veths: Vec::new(),
            api,
            dir,
            id,
            extra_netns: Vec::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn p(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    /// A new host veth pair to use as a macvlan `master`; returns its name.
    pub fn veth(&mut self) -> String {
        let name = format!("mkv{}{}", self.id, self.veths.len());
        self.veths.push(HostVeth::create(name.clone()));
        name
    }

    /// Another sandbox netns (a second pod in the same world).
    pub fn extra_netns(&mut self) -> String {
        let name = format!("mrs-k{}x{}", self.id, self.extra_netns.len());
        let ns = Netns::create(name);
        let path = ns.path();
        self.extra_netns.push(ns);
        path
    }

    pub fn extra(&self, i: usize) -> &Netns {
        &self.extra_netns[i]
    }

    /// The primary network: a bridge + host-local conflist (cniVersion 1.0.0) with a
    /// default route via the bridge.
    pub fn primary(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": PRIMARY,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": self.p("ipam"),
                    "ranges": [[{"subnet": format!("10.231.{}.0/24", self.octet)}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            }]
        })
    }

    /// The first address host-local gives on the primary network.
    pub fn primary_ip(&self) -> String {
        format!("10.231.{}.2", self.octet)
    }

    /// The multus config on stdin, with `extra` keys merged over the defaults.
    pub fn conf(&self, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.0.0",
            "name": "multus-cni-network",
            "type": "multus",
            "kubeconfig": self.p("kubeconfig"),
            "cniDir": self.p("multus"),
            "confDir": self.p("net.d"),
            "binDir": self.p("bin"),
            "logLevel": "debug",
            "logToStderr": true,
            "delegates": [self.primary()]
        });
        if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        conf
    }

    /// The same config, with the pod's annotations passed by the runtime
    /// (containerd's `io.kubernetes.cri.pod-annotations` capability).
    pub fn conf_with_runtime_annotations(&self, annotations: &BTreeMap<&str, &str>) -> Value {
        self.conf(json!({
            "capabilities": {"io.kubernetes.cri.pod-annotations": true},
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": annotations}
        }))
    }

    /// Register a pod with `annotations` in the API; returns how the runtime names it.
    pub fn add_pod(&self, name: &str, annotations: &[(&str, &str)]) -> PodRef {
        self.add_pod_in("default", name, annotations)
    }

    pub fn add_pod_in(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) -> PodRef {
        let pod = self.pod_ref(namespace, name);
        let anns: BTreeMap<&str, &str> = annotations.iter().copied().collect();
        self.api.add_pod(json!({
            "metadata": {"name": name, "namespace": namespace, "uid": pod.uid, "annotations": anns},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "node1"},
            "status": {"phase": "Pending"}
        }));
        pod
    }

    /// How the runtime names a pod (whether or not the API knows it).
    pub fn pod_ref(&self, namespace: &str, name: &str) -> PodRef {
        PodRef {
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-{}-{namespace}-{name}", self.id),
            container_id: format!("cid{}{}", self.id, name.replace('-', "")),
        }
    }

    /// Register a NAD whose `spec.config` is `config`.
    pub fn add_nad(&self, namespace: &str, name: &str, config: &Value) {
        self.api.add_nad(json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"config": serde_json::to_string_pretty(config).unwrap()}
        }));
    }

    /// A macvlan + host-local config (single plugin) on `master`.
    pub fn macvlan(&self, version: &str, master: &str, subnet: &str, start: &str, end: &str) -> Value {
        json!({
            "cniVersion": version,
            "type": "macvlan",
            "master": master,
            "mode": "bridge",
            "ipam": {
                "type": "host-local",
                "dataDir": self.p("ipam"),
                "subnet": subnet,
                "rangeStart": start,
                "rangeEnd": end
            }
        })
    }

    /// Run the binary as containerd does, in `netns` (a path; "" for none).
    pub fn cni_in(&self, command: &str, pod: &PodRef, netns: &str, conf: &Value) -> Run {
        // containerd's order varies between versions; so do we.
        let mut args = [
            format!("K8S_POD_UID={}", pod.uid),
            "IgnoreUnknown=1".to_string(),
            format!("K8S_POD_NAMESPACE={}", pod.namespace),
            format!("K8S_POD_NAME={}", pod.name),
            format!("K8S_POD_INFRA_CONTAINER_ID={}", pod.container_id),
        ];
        let rot = COUNTER.fetch_add(1, Ordering::SeqCst) as usize % args.len();
        args.rotate_left(rot);
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_multus"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &pod.container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env("CNI_ARGS", args.join(";"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run multus");
        child.stdin.take().unwrap().write_all(&serde_json::to_vec(conf).unwrap()).unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if std::env::var_os("KE2E_VERBOSE").is_some() {
            eprintln!(
                "--- {command} {} in {:?}: exit {:?}\n{stdout}\n{}",
                pod.name,
                started.elapsed(),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Run {
            exit: out.status.code().unwrap_or(-1),
            out: if stdout.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}"))
            },
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    /// Run the binary in the world's netns.
    pub fn cni(&self, command: &str, pod: &PodRef, conf: &Value) -> Run {
        self.cni_in(command, pod, &self.netns.path(), conf)
    }

    /// The pod's `network-status` annotation, raw.
    pub fn network_status_raw(&self, pod: &PodRef) -> Option<String> {
        let p = self.api.pod(&pod.namespace, &pod.name)?;
        p["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().map(String::from)
    }

    #[track_caller]
    pub fn network_status(&self, pod: &PodRef) -> Vec<Value> {
        let raw = self.network_status_raw(pod).expect("no network-status annotation");
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("network-status is not JSON ({e}): {raw}"))
    }

    /// `(type, reason, message)` of every event about `pod`, asserting the source.
    pub fn events(&self, pod: &PodRef) -> Vec<(String, String, String)> {
        self.api
            .events()
            .iter()
            .filter(|e| e["involvedObject"]["name"] == pod.name.as_str())
            .map(|e| {
                assert_eq!(e["source"]["component"], "multus", "event source: {e}");
                assert_eq!(e["involvedObject"]["kind"], "Pod", "{e}");
                assert_eq!(e["involvedObject"]["namespace"], pod.namespace.as_str(), "{e}");
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (s("type"), s("reason"), s("message"))
            })
            .collect()
    }

    /// `METHOD path` of every recorded API request.
    pub fn request_lines(&self) -> Vec<String> {
        self.api.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect()
    }

    /// host-local leases left in the world's IPAM data dir (any network).
    pub fn leases(&self) -> Vec<String> {
        let mut found = Vec::new();
        for net in std::fs::read_dir(self.path("ipam")).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(net.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name != "lock" && !name.starts_with("last_reserved_ip") {
                    found.push(format!("{}/{name}", net.file_name().to_string_lossy()));
                }
            }
        }
        found
    }

    /// Multus' own files left in cniDir: scratch caches and results-cache entries.
    pub fn cache_files(&self) -> Vec<String> {
        let mut found = Vec::new();
        walk(&self.path("multus"), &mut found);
        // The node's learnt status write method is node state, not a container's.
        found.retain(|f| !f.ends_with("/.status-write-method"));
        found
    }

    /// Nothing of the pod's networking left: no links in the netns, no leases, no caches.
    #[track_caller]
    pub fn assert_nothing_left(&self) {
        assert_eq!(self.netns.links(), vec![], "links left in the netns");
        assert_eq!(self.leases(), Vec::<String>::new(), "host-local leases left");
        assert_eq!(self.cache_files(), Vec::<String>::new(), "cache files left");
    }
}

fn walk(dir: &Path, found: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, found);
        } else {
            found.push(p.display().to_string());
        }
    }
}
