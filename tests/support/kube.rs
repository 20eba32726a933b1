//! The Kubernetes side: the API stand-in (`crates/kube-standin`) with a kubeconfig for
//! it, the Pod and NetworkAttachmentDefinition objects tests register, and the
//! end-to-end [`World`] (a pod sandbox netns, a host bridge for the primary network,
//! host veths as macvlan parents, a temp dir and the stand-in). Everything is named
//! uniquely and removed on drop, even when the test panics. The `multus` binary is
//! driven exactly as containerd drives it.

use super::{COUNTER, Netns, TestDir, container_cache_files, leases_by_network, unique};
use kube_standin::StandIn;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The API stand-in with a kubeconfig for it. Dropping it stops the server (the "API
/// server down" fault). Derefs to the stand-in for faults and recorded requests.
pub struct Api {
    pub standin: StandIn,
    pub kubeconfig: PathBuf,
    pub token: String,
}

impl Api {
    /// A stand-in with its kubeconfig in `dir`'s temp dir and a token unique to the test.
    pub fn start(dir: &TestDir) -> Api {
        Api::start_at(dir.tmp.path().join("multus.kubeconfig"), format!("mrs-secret-token-{}", unique("tok")))
    }

    /// A stand-in whose kubeconfig (written to `kubeconfig`) carries `token`.
    pub fn start_at(kubeconfig: PathBuf, token: String) -> Api {
        let standin = StandIn::start();
        standin.write_kubeconfig(&kubeconfig, &token).expect("write kubeconfig");
        Api { standin, kubeconfig, token }
    }

    /// A pod whose uid matches [`super::Invocation::new`]'s `K8S_POD_UID` when `uid` is
    /// `uid-1`.
    pub fn add_pod(&self, ns: &str, name: &str, uid: &str, annotations: Value) {
        self.standin.add_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "pause"}], "nodeName": "node1"},
            "status": {"phase": "Pending"}
        }));
    }

    /// A NetworkAttachmentDefinition whose `spec.config` is `config` (a JSON value is
    /// serialised, a string is taken as is).
    pub fn add_nad(&self, ns: &str, name: &str, config: &Value) {
        let config = match config {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        self.standin.add_nad(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"config": config},
        }));
    }

    /// `(method, path)` of every request so far.
    pub fn request_lines(&self) -> Vec<String> {
        self.standin.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect()
    }
}

impl Deref for Api {
    type Target = StandIn;

    fn deref(&self) -> &StandIn {
        &self.standin
    }
}

/// The primary network's name (`name` of the bridge conflist).
pub const PRIMARY: &str = "k8s-pod-network";

/// A pod as the runtime knows it: namespace, name, UID, sandbox container ID.
#[derive(Debug, Clone)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container_id: String,
}

/// The outcome of one invocation of the binary, as the end-to-end tests read it.
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

/// One test's world. Fields drop in order: the namespace (and every link in it, the
/// bridge and the host veths it owns) first.
pub struct World {
    pub id: String,
    pub netns: Netns,
    pub bridge: String,
    /// Third octet of the primary subnet `10.231.<n>.0/24`.
    pub octet: u32,
    veths: usize,
    pub api: Api,
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
        let api = Api::start_at(dir.path().join("kubeconfig"), "secret-token".into());
        let bridge = format!("mkb{id}");
        let netns = Netns::named(format!("mrs-k{id}"));
        // The bridge plugin creates it; we only delete it.
        netns.own_host_link(&bridge);
        World { netns, bridge, octet, veths: 0, api, dir, id, extra_netns: Vec::new() }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn p(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    /// A new host veth pair to use as a macvlan `master`; returns its name.
    pub fn veth(&mut self) -> String {
        let name = format!("mkv{}{}", self.id, self.veths);
        self.veths += 1;
        self.netns.host_veth_pair(&name, &format!("{name}p"))
    }

    /// Another sandbox netns (a second pod in the same world).
    pub fn extra_netns(&mut self) -> String {
        let ns = Netns::named(format!("mrs-k{}x{}", self.id, self.extra_netns.len()));
        let path = ns.path.clone();
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
        self.api.add_pod(namespace, name, &pod.uid, json!(anns));
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

    /// Register a NAD whose `spec.config` is `config`, pretty-printed as `kubectl` users
    /// write it.
    pub fn add_nad(&self, namespace: &str, name: &str, config: &Value) {
        self.api.add_nad(namespace, name, &Value::String(serde_json::to_string_pretty(config).unwrap()));
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
        let invocation = super::Invocation::new(command, &pod.container_id, netns).set("CNI_ARGS", &args.join(";"));
        let outcome = invocation.run_json(conf);
        if std::env::var_os("KE2E_VERBOSE").is_some() {
            eprintln!(
                "--- {command} {} in {:?}: exit {}\n{}\n{}",
                pod.name, outcome.elapsed, outcome.exit_code, outcome.stdout, outcome.stderr
            );
        }
        let out = match outcome.docs.as_slice() {
            [] => Value::Null,
            [doc] => doc.clone(),
            _ => panic!("several JSON documents on stdout: {}", outcome.stdout),
        };
        Run { exit: outcome.exit_code, out, stderr: outcome.stderr, elapsed: outcome.elapsed }
    }

    /// Run the binary in the world's netns.
    pub fn cni(&self, command: &str, pod: &PodRef, conf: &Value) -> Run {
        self.cni_in(command, pod, &self.netns.path, conf)
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
        self.api.request_lines()
    }

    /// host-local leases left in the world's IPAM data dir, as `network/address`.
    pub fn leases(&self) -> Vec<String> {
        leases_by_network(&self.path("ipam"))
            .into_iter()
            .flat_map(|(net, held)| held.into_iter().map(move |ip| format!("{net}/{ip}")))
            .collect()
    }

    /// Multus' own files left in cniDir (scratch caches and results-cache entries), as
    /// absolute paths.
    pub fn cache_files(&self) -> Vec<String> {
        let cni_dir = self.path("multus");
        container_cache_files(&cni_dir).into_iter().map(|f| cni_dir.join(f).display().to_string()).collect()
    }

    /// Nothing of the pod's networking left: no links in the netns, no leases, no caches.
    #[track_caller]
    pub fn assert_nothing_left(&self) {
        assert_eq!(self.netns.pod_links(), vec![], "links left in the netns");
        assert_eq!(self.leases(), Vec::<String>::new(), "host-local leases left");
        assert_eq!(self.cache_files(), Vec::<String>::new(), "cache files left");
    }
}
