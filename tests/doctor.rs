//! `multus doctor` against a temporary node (config file, binDir with Debian's plugins,
//! cniDir, readiness file) and the Kubernetes API stand-in. The master-link tests create
//! a real veth pair and need root; they skip with a message otherwise.

mod support;

use kube_standin::{Fault, FaultAction, StandIn};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use support::{HostLink, ip, is_root, multus_cli};

const DEBIAN_PLUGINS: &str = "/usr/lib/cni";

/// A node layout in a temporary directory; everything goes with it.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    /// A healthy node: every plugin of its delegate installed, readiness file present, an
    /// empty private cniDir, and a kubeconfig pointing at `api` when given.
    fn new(api: Option<&StandIn>) -> Node {
        let node = Node { dir: tempfile::tempdir().expect("tempdir") };
        std::fs::create_dir_all(node.bin()).expect("binDir");
        for plugin in ["bridge", "host-local", "portmap", "macvlan", "ipvlan", "tuning", "static"] {
            std::os::unix::fs::symlink(Path::new(DEBIAN_PLUGINS).join(plugin), node.bin().join(plugin))
                .expect("plugin symlink");
        }
        multus::fsutil::create_private_dir(&node.cache()).expect("cniDir");
        std::fs::write(node.path("ready"), "").expect("readiness file");
        if let Some(api) = api {
            api.write_kubeconfig(&node.path("multus.kubeconfig"), "t0ken").expect("kubeconfig");
        }
        node.write_config(api.is_some());
        node
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn bin(&self) -> PathBuf {
        self.path("bin")
    }

    fn cache(&self) -> PathBuf {
        self.path("cache")
    }

    fn config(&self) -> PathBuf {
        self.path("00-multus.conf")
    }

    fn write_config(&self, with_kubeconfig: bool) {
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus",
            "binDir": self.bin(), "cniDir": self.cache(), "readinessindicatorfile": self.path("ready"),
            // Short API deadlines keep the unreachable-API tests quick.
            "apiTimeoutSeconds": 2,
            "delegates": [{"cniVersion": "1.0.0", "name": "podnet", "plugins": [
                {"type": "bridge", "bridge": "mrs-doc0", "ipam": {"type": "host-local", "subnet": "10.250.0.0/24"}},
                {"type": "portmap", "capabilities": {"portMappings": true}}]}]
        });
        if with_kubeconfig {
            conf["kubeconfig"] = self.path("multus.kubeconfig").to_string_lossy().into();
        }
        std::fs::write(self.config(), conf.to_string()).expect("config");
    }

    fn doctor(&self, extra: &[&str]) -> Outcome {
        let out = multus_cli(&["doctor"])
            .arg("--config")
            .arg(self.config())
            .arg("--cni-path")
            .arg(self.bin())
            .args(extra)
            .output()
            .expect("run multus doctor");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let checks = if extra.contains(&"--json") {
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("--json printed no JSON ({e}): {stdout}"))
        } else {
            Vec::new()
        };
        Outcome { code: out.status.code(), stdout, checks }
    }

    fn doctor_json(&self) -> Outcome {
        self.doctor(&["--json"])
    }
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    checks: Vec<Value>,
}

impl Outcome {
    fn named(&self, check: &str) -> Vec<&Value> {
        self.checks.iter().filter(|c| c["check"] == check).collect()
    }

    /// The status of the one check named `check`.
    fn status(&self, check: &str) -> &str {
        let found = self.named(check);
        assert_eq!(found.len(), 1, "expected one {check:?} check in {:#?}", self.checks);
        found[0]["status"].as_str().unwrap_or_default()
    }

    fn not_ok(&self) -> Vec<&Value> {
        self.checks.iter().filter(|c| c["status"] != "ok").collect()
    }
}

fn nad(namespace: &str, name: &str, config: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace}, "spec": {"config": config.to_string()}})
}

fn macvlan_nad(name: &str, master: &str, subnet: &str) -> Value {
    nad(
        "default",
        name,
        json!({"cniVersion": "0.3.1", "name": name, "type": "macvlan", "master": master, "mode": "bridge",
               "ipam": {"type": "host-local", "subnet": subnet}}),
    )
}

#[test]
fn healthy_node_is_all_ok() {
    let api = StandIn::start();
    api.add_nad(nad("default", "br-net", json!({"cniVersion": "1.0.0", "name": "br-net", "type": "bridge"})));
    let node = Node::new(Some(&api));
    let out = node.doctor_json();
    assert_eq!(out.code, Some(0), "{:#?}", out.checks);
    assert!(out.not_ok().is_empty(), "{:#?}", out.not_ok());
    for check in [
        "config",
        "kubeconfig",
        "api server",
        "rbac: get pods",
        "rbac: patch pods",
        "rbac: update pods/status",
        "rbac: get network-attachment-definitions.k8s.cni.cncf.io",
        "rbac: create events",
        "delegate podnet",
        "plugin binaries",
        "readiness indicator",
        "cache",
        "network-attachment-definitions",
    ] {
        assert_eq!(out.status(check), "ok", "{check}");
    }
    for c in &out.checks {
        let keys: Vec<&str> = c.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        assert_eq!(keys, ["check", "hint", "message", "status"], "{c}");
    }
    let reviews = api.requests().iter().filter(|r| r.resource == "selfsubjectaccessreviews").count();
    assert_eq!(reviews, 5, "one review per permission");

    let text = node.doctor(&[]);
    assert_eq!(text.code, Some(0));
    assert!(text.stdout.starts_with("✓ config: "), "{}", text.stdout);
    assert!(text.stdout.trim_end().ends_with("0 failures, 0 warnings, 13 ok"), "{}", text.stdout);
}

#[test]
fn missing_plugin_fails() {
    let node = Node::new(None);
    std::fs::remove_file(node.bin().join("portmap")).expect("remove portmap");
    let out = node.doctor_json();
    assert_eq!(out.code, Some(1));
    assert_eq!(out.status("plugin portmap"), "fail");
    let c = out.named("plugin portmap")[0];
    assert!(c["message"].as_str().unwrap_or_default().contains("used by delegate podnet"), "{c}");
    assert_eq!(out.status("kubeconfig"), "warn", "no kubeconfig: static delegates only");
}

#[test]
fn api_down_fails_fast() {
    let api = StandIn::start();
    let node = Node::new(Some(&api));
    drop(api); // nothing listens on that port any more
    let started = Instant::now();
    let out = node.doctor_json();
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert_eq!(out.code, Some(1));
    assert_eq!(out.status("api server"), "fail");
    let message = out.named("api server")[0]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("refused"), "{message}");
    assert!(out.named("rbac: get pods").is_empty(), "no RBAC checks without an API");
    assert_eq!(out.status("delegate podnet"), "ok", "the offline checks still run");
}

#[test]
fn api_that_never_answers_is_not_a_hang() {
    let api = StandIn::start();
    api.add_fault(Fault::new(FaultAction::Hang));
    let node = Node::new(Some(&api));
    let started = Instant::now();
    let out = node.doctor_json();
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert_eq!(out.code, Some(1));
    assert_eq!(out.status("api server"), "fail");
}

#[test]
fn rbac_denials() {
    let api = StandIn::start();
    let node = Node::new(Some(&api));
    api.deny("patch", "pods");
    let out = node.doctor_json();
    assert_eq!(out.code, Some(0), "patch denied alone: the status fallback works");
    assert_eq!(out.status("rbac: patch pods"), "warn");
    assert_eq!(out.status("rbac: update pods/status"), "ok");

    api.deny("update", "pods/status");
    let out = node.doctor_json();
    assert_eq!(out.code, Some(1));
    assert_eq!(out.status("rbac: patch pods"), "fail");
    assert_eq!(out.status("rbac: update pods/status"), "fail");

    api.deny("get", "network-attachment-definitions");
    api.deny("create", "events");
    let out = node.doctor_json();
    assert_eq!(out.status("rbac: get network-attachment-definitions.k8s.cni.cncf.io"), "fail");
    assert_eq!(out.status("rbac: create events"), "fail");
    let hint = out.named("rbac: create events")[0]["hint"].as_str().unwrap_or_default().to_string();
    assert!(hint.contains("resources: [\"events\"], verbs: [\"create\"]"), "{hint}");
}

#[test]
fn nad_master_that_does_not_exist_fails() {
    let api = StandIn::start();
    api.add_nad(macvlan_nad("bad-master", "mrs-nolink0", "10.251.0.0/24"));
    let node = Node::new(Some(&api));
    let out = node.doctor_json();
    assert_eq!(out.code, Some(1));
    assert_eq!(out.status("master mrs-nolink0"), "fail");
    let message = out.named("master mrs-nolink0")[0]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("NAD default/bad-master"), "{message}");
}

#[test]
fn static_delegate_master_is_checked_too() {
    let node = Node::new(None);
    let mut conf: Value = serde_json::from_slice(&std::fs::read(node.config()).expect("config")).expect("json");
    conf["delegates"].as_array_mut().expect("delegates").push(
        json!({"cniVersion": "1.0.0", "name": "extra", "type": "macvlan", "master": "mrs-nolink1", "ipam": {"type": "static"}}),
    );
    std::fs::write(node.config(), conf.to_string()).expect("config");
    let out = node.doctor_json();
    assert_eq!(out.status("master mrs-nolink1"), "fail");
}

#[test]
fn corrupt_and_old_cache_entries() {
    let node = Node::new(None);
    let corrupt = node.cache().join("0123456789abcdef");
    std::fs::write(&corrupt, "{not json").expect("write corrupt entry");
    let out = node.doctor_json();
    assert_eq!(out.code, Some(1));
    let entries = out.named("cache entry");
    assert_eq!(entries.len(), 1, "{:#?}", out.checks);
    assert_eq!(entries[0]["status"], "fail");
    let message = entries[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&corrupt.display().to_string()), "{message}");

    let forty_days_ago = SystemTime::now() - Duration::from_secs(40 * 86400);
    let f = std::fs::File::options().write(true).open(&corrupt).expect("open");
    f.set_modified(forty_days_ago).expect("set mtime");
    let out = node.doctor(&["--json", "--stale-days", "30"]);
    let stale: Vec<&Value> = out.named("cache entry").into_iter().filter(|c| c["status"] == "warn").collect();
    assert_eq!(stale.len(), 1, "{:#?}", out.checks);
    assert!(stale[0]["message"].as_str().unwrap_or_default().starts_with("1 entry older than 30 days"));
}

#[test]
fn bad_config_fails_and_stops() {
    let node = Node::new(None);
    std::fs::write(node.config(), "{\"name\": \"multus\", \"delegates\": [").expect("config");
    let out = node.doctor_json();
    assert_eq!(out.code, Some(1));
    assert_eq!(out.checks.len(), 1, "{:#?}", out.checks);
    assert_eq!(out.status("config"), "fail");
}

// ---------------------------------------------------------------------------------------
// A real master link (root)
// ---------------------------------------------------------------------------------------

/// A veth pair (both ends UP, promiscuous mode off) with a name unique to this process
/// and test; deleted on drop.
fn master_veth() -> HostLink {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let base = format!("mrsd{}x{n}", std::process::id() % 100_000); // at most 15 bytes with a/b
    let veth = HostLink::veth_up(&format!("{base}a"), &format!("{base}b"));
    ip(&["link", "set", "dev", &veth.name, "promisc", "off"]);
    veth
}

#[test]
fn real_master_link_promiscuity_and_own_address() {
    if !is_root() {
        eprintln!("skipped: needs root to create a veth pair (run the tests as root)");
        return;
    }
    let veth = master_veth();
    let check = format!("master {}", veth.name);
    let api = StandIn::start();
    api.add_nad(macvlan_nad("lan", &veth.name, "10.252.7.0/24"));
    let node = Node::new(Some(&api));

    let out = node.doctor_json();
    assert_eq!(out.code, Some(0), "a warning is not a failure: {:#?}", out.checks);
    assert_eq!(out.status(&check), "warn");
    let hint = out.named(&check)[0]["hint"].as_str().unwrap_or_default().to_string();
    assert!(hint.starts_with(&format!("ip link set dev {} promisc on", veth.name)), "{hint}");

    ip(&["link", "set", "dev", &veth.name, "promisc", "on"]);
    let out = node.doctor_json();
    assert_eq!(out.status(&check), "ok");
    assert!(out.not_ok().is_empty(), "{:#?}", out.not_ok());

    // The node's own address in the NAD's subnet: pods cannot reach it over that link.
    ip(&["addr", "add", "10.252.7.1/24", "dev", &veth.name]);
    let out = node.doctor_json();
    let notes: Vec<&Value> = out.named(&check).into_iter().filter(|c| c["status"] == "warn").collect();
    assert_eq!(notes.len(), 1, "{:#?}", out.checks);
    let message = notes[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("cannot reach this node's 10.252.7.1"), "{message}");

    ip(&["link", "set", &veth.name, "down"]);
    let out = node.doctor_json();
    assert_eq!(out.code, Some(1));
    assert_eq!(out.status(&check), "fail", "a master that is down");
}
