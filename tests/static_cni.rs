//! The core CNI path with static delegates and Debian's real plugins, in real network
//! namespaces, driven as a runtime drives the plugin: ADD, CHECK, DEL (twice, and with
//! an empty CNI_NETNS), VERSION.
//!
//! The pod gets three attachments:
//! * eth0 (master): bridge + host-local, chained with tuning setting the MAC from the
//!   runtime's `runtimeConfig.mac` (the master receives the runtime's capabilities);
//! * net1: macvlan + static IPAM on a host veth parent, chained with tuning setting
//!   the MAC from its own `mac` key (non-master static delegates get no capabilities);
//! * net2: macvlan (private) + host-local on the same parent.

mod support;

use serde_json::{Value, json};
use support::*;

const MAC_ETH0: &str = "02:4d:52:53:00:01";
const MAC_NET1: &str = "02:4d:52:53:00:02";

/// Everything one pod's static setup is made of.
struct Pod {
    dir: TestDir,
    ns: Netns,
    cid: String,
    bridge: String,
    net1_addr: String,
    subnets: [String; 3],
}

impl Pod {
    fn new() -> Pod {
        let dir = TestDir::new();
        let ns = Netns::new();
        let bridge = unique("mbr");
        ns.own_host_link(&bridge);
        let subnets = [unique_subnet(), unique_subnet(), unique_subnet()];
        Pod {
            cid: format!("itest-{}", unique("c")),
            net1_addr: format!("{}.5/24", subnets[1].1),
            subnets: subnets.map(|(s, _)| s),
            bridge,
            dir,
            ns,
        }
    }

    fn prefix(&self, i: usize) -> String {
        self.subnets[i].trim_end_matches(".0/24").to_string()
    }

    /// The three delegates, each in `dv` (the delegates' own cniVersion).
    fn delegates(&self, dv: &str) -> Vec<Value> {
        let parent = self.ns.host_veth();
        let data_dir = self.dir.data_dir.display().to_string();
        vec![
            json!({
                "cniVersion": dv, "name": "itest-bridge",
                "plugins": [
                    {"type": "bridge", "bridge": self.bridge, "isGateway": false, "ipMasq": false,
                     "ipam": {"type": "host-local", "dataDir": data_dir,
                              "ranges": [[{"subnet": self.subnets[0], "gateway": format!("{}.1", self.prefix(0))}]],
                              "routes": [{"dst": "0.0.0.0/0"}]}},
                    {"type": "tuning", "capabilities": {"mac": true}}
                ]
            }),
            json!({
                "cniVersion": dv, "name": "itest-macvlan",
                "plugins": [
                    {"type": "macvlan", "master": parent, "mode": "bridge", "capabilities": {"ips": true},
                     "ipam": {"type": "static", "addresses": [{"address": self.net1_addr}]}},
                    {"type": "tuning", "capabilities": {"mac": true}, "mac": MAC_NET1}
                ]
            }),
            json!({
                "cniVersion": dv, "name": "itest-private", "type": "macvlan", "master": parent,
                "mode": "private",
                "ipam": {"type": "host-local", "dataDir": data_dir,
                         "ranges": [[{"subnet": self.subnets[2]}]]}
            }),
        ]
    }

    /// Our config in `version`, as the runtime fills it for capability `mac`.
    fn conf(&self, version: &str, delegates: Vec<Value>) -> Value {
        self.dir.multus_conf(
            version,
            delegates,
            json!({"capabilities": {"mac": true}, "runtimeConfig": {"mac": MAC_ETH0}}),
        )
    }

    fn add(&self) -> Invocation {
        Invocation::new("ADD", &self.cid, &self.ns.path)
    }

    /// Host-side ports of our bridge (the bridge plugin's veth peers).
    fn bridge_ports(&self) -> Vec<String> {
        let out = sh(&["ip", "-j", "link", "show", "master", &self.bridge]);
        let v: Value = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).unwrap();
        v.as_array().unwrap().iter().map(|l| l["ifname"].as_str().unwrap().to_string()).collect()
    }
}

impl Drop for Pod {
    /// tuning keeps per-attachment state outside our dirs; a test that failed before
    /// its DEL must not leave it behind.
    fn drop(&mut self) {
        for ifname in ["eth0", "net1", "net2"] {
            let _ = std::fs::remove_file(format!("/run/cni/tuning/{}_{ifname}.json", self.cid));
        }
    }
}

/// ADD, inspect, CHECK, DEL ×3 with our config in `version` and delegates in `dv`.
fn lifecycle(version: &str, dv: &str) {
    let pod = Pod::new();
    let conf = pod.conf(version, pod.delegates(dv));
    let add = pod.add();

    // ADD
    let result = add.run_json(&conf).ok();
    assert_eq!(result["cniVersion"], version, "{result}");
    let ips = result["ips"].as_array().expect("ips");
    let eth0_addr = ips[0]["address"].as_str().unwrap().to_string();
    assert!(eth0_addr.starts_with(&format!("{}.", pod.prefix(0))), "{result}");
    if version.starts_with("0.") {
        assert_eq!(ips[0]["version"], "4", "0.3.x/0.4.0 results carry ip version: {result}");
    } else {
        assert!(ips[0].get("version").is_none(), "{result}");
    }
    let sandbox: Vec<&Value> =
        result["interfaces"].as_array().unwrap().iter().filter(|i| i.get("sandbox").is_some()).collect();
    assert_eq!(sandbox.len(), 1, "only eth0 is in the pod: {result}");
    assert_eq!(sandbox[0]["name"], "eth0");
    assert_eq!(sandbox[0]["sandbox"], pod.ns.path.as_str());

    // inside the netns
    assert_eq!(pod.ns.link_names(), ["eth0", "lo", "net1", "net2"]);
    let eth0 = pod.ns.link("eth0").unwrap();
    assert_eq!(eth0.addrs, std::slice::from_ref(&eth0_addr));
    assert_eq!(eth0.mac, MAC_ETH0, "tuning on the master got runtimeConfig.mac");
    let net1 = pod.ns.link("net1").unwrap();
    assert_eq!(net1.addrs, std::slice::from_ref(&pod.net1_addr));
    assert_eq!(net1.mac, MAC_NET1, "tuning chained after macvlan set the MAC");
    let net2 = pod.ns.link("net2").unwrap();
    assert_eq!(net2.addrs.len(), 1);
    assert!(net2.addrs[0].starts_with(&format!("{}.", pod.prefix(2))), "{net2:?}");
    assert!(eth0.up && net1.up && net2.up);

    // host-local leases: exactly the addresses in the pod
    let lease = |a: &str| a.split('/').next().unwrap().to_string();
    assert_eq!(leases(&pod.dir.data_dir, "itest-bridge"), [lease(&eth0_addr)]);
    assert_eq!(leases(&pod.dir.data_dir, "itest-private"), [lease(&net2.addrs[0])]);
    assert_eq!(pod.bridge_ports().len(), 1);

    // our caches, private
    let scratch = pod.dir.scratch_cache(&pod.cid);
    assert_eq!(mode(&pod.dir.cni_dir), 0o700);
    assert_eq!(mode(&scratch), 0o600);
    assert_eq!(mode(&pod.dir.cni_dir.join("results")), 0o700);
    let results = [
        pod.dir.result_cache("itest-bridge", &pod.cid, "eth0"),
        pod.dir.result_cache("itest-macvlan", &pod.cid, "net1"),
        pod.dir.result_cache("itest-private", &pod.cid, "net2"),
    ];
    for r in &results {
        assert_eq!(mode(r), 0o600, "{}", r.display());
        let rec: Value = serde_json::from_slice(&std::fs::read(r).unwrap()).unwrap();
        assert_eq!(rec["kind"], "cniCacheV1");
        assert_eq!(rec["containerId"], pod.cid.as_str());
        assert_eq!(rec["result"]["cniVersion"], dv, "raw delegate result is cached");
    }
    assert_eq!(pod.dir.cache_files().len(), 4, "{:?}", pod.dir.cache_files());
    let scratch_json: Value = serde_json::from_slice(&std::fs::read(&scratch).unwrap()).unwrap();
    assert_eq!(scratch_json.as_array().unwrap().len(), 3);

    // CHECK (the spec allows it from 0.4.0 on)
    let check = add.command("CHECK").run_json(&conf);
    if version == "0.3.1" {
        check.err(1);
    } else {
        check.ok();
    }

    // DEL removes everything
    add.command("DEL").run_json(&conf).ok();
    assert_eq!(pod.ns.link_names(), ["lo"]);
    assert!(leases(&pod.dir.data_dir, "itest-bridge").is_empty());
    assert!(leases(&pod.dir.data_dir, "itest-private").is_empty());
    assert!(pod.dir.cache_files().is_empty(), "{:?}", pod.dir.cache_files());
    assert!(pod.bridge_ports().is_empty());

    // containerd's second DEL (StopPodSandbox again), then RemovePodSandbox's with no netns
    add.command("DEL").run_json(&conf).ok();
    add.command("DEL").set("CNI_NETNS", "").run_json(&conf).ok();
    assert!(pod.dir.cache_files().is_empty(), "{:?}", pod.dir.cache_files());
}

#[test]
fn lifecycle_config_0_3_1_delegates_1_0_0() {
    require_root!();
    lifecycle("0.3.1", "1.0.0");
}

#[test]
fn lifecycle_config_0_4_0_delegates_1_0_0() {
    require_root!();
    lifecycle("0.4.0", "1.0.0");
}

#[test]
fn lifecycle_config_1_0_0_delegates_1_0_0() {
    require_root!();
    lifecycle("1.0.0", "1.0.0");
}

/// Our caller speaks 1.1.0, which Debian's plugins refuse: they must still be spoken to
/// in their own config's version.
#[test]
fn lifecycle_config_1_1_0_delegates_1_0_0() {
    require_root!();
    lifecycle("1.1.0", "1.0.0");
}

/// The seeds' attachments are 0.3.x; a 1.0.0 caller gets the master's result converted up.
#[test]
fn lifecycle_config_1_0_0_delegates_0_3_1() {
    require_root!();
    lifecycle("1.0.0", "0.3.1");
}

/// A 0.2.0 caller (or one naming no version) gets the legacy `ip4` layout.
#[test]
fn legacy_caller_gets_the_ip4_layout() {
    require_root!();
    let pod = Pod::new();
    let master = pod.delegates("1.0.0").remove(0);
    for version in ["0.2.0", ""] {
        let mut conf = pod.conf(version, vec![master.clone()]);
        if version.is_empty() {
            conf.as_object_mut().unwrap().remove("cniVersion");
        }
        let add = pod.add();
        let result = add.run_json(&conf).ok();
        let lease = leases(&pod.dir.data_dir, "itest-bridge");
        assert_eq!(lease.len(), 1);
        assert_eq!(result["cniVersion"], if version.is_empty() { "0.1.0" } else { version });
        assert_eq!(result["ip4"]["ip"], format!("{}/24", lease[0]), "{result}");
        assert!(result.get("ips").is_none());
        add.command("DEL").run_json(&conf).ok();
        assert_eq!(pod.ns.link_names(), ["lo"]);
        assert!(pod.dir.cache_files().is_empty());
    }
}

/// A delegate without cniVersion inherits ours (Multus' InjectCNIVersionInConfList).
#[test]
fn delegates_without_version_inherit_the_config_version() {
    require_root!();
    let pod = Pod::new();
    let mut delegates = pod.delegates("0.4.0");
    for d in &mut delegates {
        d.as_object_mut().unwrap().remove("cniVersion");
    }
    let conf = pod.conf("0.4.0", delegates);
    let add = pod.add();
    let result = add.run_json(&conf).ok();
    assert_eq!(result["cniVersion"], "0.4.0");
    let rec: Value =
        serde_json::from_slice(&std::fs::read(pod.dir.result_cache("itest-macvlan", &pod.cid, "net1")).unwrap())
            .unwrap();
    assert_eq!(rec["result"]["cniVersion"], "0.4.0");
    add.command("CHECK").run_json(&conf).ok();
    add.command("DEL").run_json(&conf).ok();
    assert_eq!(pod.ns.link_names(), ["lo"]);
    assert!(pod.dir.cache_files().is_empty());
}

/// DEL without any cache (a node that lost /var/lib/cni) still deletes every static
/// delegate: links and leases are gone.
#[test]
fn del_without_caches_uses_the_static_delegates() {
    require_root!();
    let pod = Pod::new();
    let conf = pod.conf("1.0.0", pod.delegates("1.0.0"));
    let add = pod.add();
    add.run_json(&conf).ok();
    std::fs::remove_dir_all(&pod.dir.cni_dir).unwrap();
    add.command("DEL").run_json(&conf).ok();
    assert_eq!(pod.ns.link_names(), ["lo"]);
    assert!(leases(&pod.dir.data_dir, "itest-bridge").is_empty());
    assert!(leases(&pod.dir.data_dir, "itest-private").is_empty());
}

/// The scratch cache is gone but the results cache is not: DEL replays the cached
/// configs (with their prevResult) and cleans the results cache.
#[test]
fn del_from_the_results_cache_alone() {
    require_root!();
    let pod = Pod::new();
    let conf = pod.conf("1.0.0", pod.delegates("1.0.0"));
    let add = pod.add();
    add.run_json(&conf).ok();
    std::fs::remove_file(pod.dir.scratch_cache(&pod.cid)).unwrap();
    // a config without delegates proves the results cache alone is used
    let mut bare = conf.clone();
    bare["delegates"] = json!([{"cniVersion": "1.0.0", "name": "unrelated", "type": "does-not-exist"}]);
    add.command("DEL").run_json(&bare).ok();
    assert_eq!(pod.ns.link_names(), ["lo"]);
    assert!(leases(&pod.dir.data_dir, "itest-bridge").is_empty());
    assert!(pod.dir.cache_files().is_empty(), "{:?}", pod.dir.cache_files());
}

#[test]
fn version_lists_every_spec_version() {
    // no root needed: VERSION touches nothing
    let expected = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
    for (stdin, answer) in
        [(r#"{"cniVersion":"0.3.1"}"#, "0.3.1"), (r#"{"cniVersion":"1.1.0"}"#, "1.1.0"), ("", "1.1.0")]
    {
        let out = Invocation::new("VERSION", "", "").run(stdin.as_bytes());
        let v = out.ok();
        assert_eq!(v["cniVersion"], answer);
        assert_eq!(v["supportedVersions"], json!(expected));
    }
}

/// shared/SEEDS.md §A, byte for byte: the config the Multus DaemonSet writes next to
/// Calico. No calico here: ADD must fail cleanly, having run and written nothing.
const SEED_A: &str = include_str!("data/seed-00-multus.conf");

#[test]
fn seed_a_calico_config_fails_cleanly_without_calico() {
    require_root!();
    let dir = TestDir::new();
    let ns = Netns::new();
    let mut conf: Value = serde_json::from_str(SEED_A).unwrap();
    conf["cniDir"] = json!(dir.cni_dir);
    conf["binDir"] = json!(dir.bin_dir);
    // as containerd fills it for the declared capabilities
    conf["runtimeConfig"] = json!({"portMappings": [], "bandwidth": {}});
    let cid = format!("itest-{}", unique("s"));
    let out = Invocation::new("ADD", &cid, &ns.path).run_json(&conf);
    let e = out.err(7);
    let msg = e["msg"].as_str().unwrap();
    assert!(msg.contains(r#"failed to find plugin "calico""#), "{msg}");
    assert_eq!(e["cniVersion"], "0.3.1");
    dir.assert_no_cache_files();
    assert!(!dir.cni_dir.exists(), "nothing created in cniDir");
    assert_eq!(ns.link_names(), ["lo"]);
    // DEL of that pod falls back to the static delegates: it may only complain about
    // the missing binary (as Go Multus does), with one clean document
    let del = Invocation::new("DEL", &cid, &ns.path).run_json(&conf);
    if del.exit_code != 0 {
        let e = del.err(7);
        assert!(e["msg"].as_str().unwrap().contains("calico"), "{e}");
    }
    assert!(!dir.cni_dir.join(&cid).exists());
}
