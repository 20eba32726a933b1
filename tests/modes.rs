//! Every configuration mode × every verb, through the built binary.
//!
//! The primary network is given as `delegates[0]`, or as `clusterNetwork`: a file, a
//! directory, a name in `confDir`, a NAD name (the API stand-in). The secondary is
//! `delegates[1]` or a `defaultNetworks` entry (`net1`). Real plugins (bridge and
//! macvlan, each with host-local leases) show what is attached and released; the fake
//! 1.1.0 plugin (`examples/fake_delegate.rs`) records STATUS and GC forwarding, which
//! Debian's plugins (CNI ≤ 1.0.0) do not speak.

mod support;

use serde_json::{Value, json};
use std::path::PathBuf;
use support::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Delegates,
    File,
    Dir,
    ConfDirName,
    Nad,
}

const NAD: &str = "modes-primary";

/// The environment libcni gives STATUS and GC: no container, netns or interface.
fn write_json(path: &std::path::Path, v: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, v.to_string()).unwrap();
}

fn file_name(v: &Value, stem: &str) -> String {
    format!("{stem}.{}", if v.get("plugins").is_some() { "conflist" } else { "conf" })
}

/// One test's world: dirs, the API when the mode needs it, and the config of `mode`.
struct World {
    dir: TestDir,
    mode: Mode,
    api: Option<Api>,
}

impl World {
    fn new(mode: Mode) -> World {
        let dir = TestDir::new().with_fake();
        // clusterNetwork mode has the API (Go Multus requires it; defaultNetworks need the pod)
        let api = (mode != Mode::Delegates).then(|| {
            let api = Api::start(&dir);
            api.add_pod("default", "pod-1", "uid-1", json!({}));
            api
        });
        World { dir, mode, api }
    }

    fn tmp(&self) -> PathBuf {
        self.dir.tmp.path().to_path_buf()
    }

    /// Our config with `primary` placed as the mode says, and `secondary` as
    /// `delegates[1]` or a `defaultNetworks` file.
    fn conf(&self, version: &str, primary: Value, secondary: Option<Value>, extra: Value) -> Value {
        let mut conf = match self.mode {
            Mode::Delegates => {
                return self.dir.multus_conf(
                    version,
                    [Some(primary), secondary].into_iter().flatten().collect(),
                    extra,
                );
            }
            _ => self.dir.multus_conf(version, vec![], extra),
        };
        conf.as_object_mut().unwrap().remove("delegates");
        conf["kubeconfig"] = self.api.as_ref().unwrap().kubeconfig.display().to_string().into();
        let cluster_network = match self.mode {
            Mode::File => {
                let p = self.tmp().join("net.d").join(file_name(&primary, "10-primary"));
                write_json(&p, &primary);
                p.display().to_string()
            }
            Mode::Dir => {
                let d = self.tmp().join("primary.d");
                write_json(&d.join(file_name(&primary, "10-primary")), &primary);
                d.display().to_string()
            }
            Mode::ConfDirName => {
                let d = self.tmp().join("confdir");
                write_json(&d.join(file_name(&primary, "10-primary")), &primary);
                conf["confDir"] = d.display().to_string().into();
                primary["name"].as_str().unwrap().to_string()
            }
            Mode::Nad => {
                let api = self.api.as_ref().unwrap();
                api.add_nad("kube-system", NAD, &primary);
                // an empty confDir: the NAD is the only source
                conf["confDir"] = self.tmp().join("empty-confdir").display().to_string().into();
                NAD.to_string()
            }
            Mode::Delegates => unreachable!(),
        };
        conf["clusterNetwork"] = cluster_network.into();
        if let Some(sec) = secondary {
            let p = self.tmp().join("extra").join(file_name(&sec, "20-secondary"));
            write_json(&p, &sec);
            conf["defaultNetworks"] = json!([p]);
        }
        conf
    }
}

/// A pod's netns and the real networks: bridge (eth0) and macvlan (net1), each with
/// host-local leases in the test's dataDir.
struct Real {
    bridge: String,
    parent: String,
    subnets: [(String, String); 2],
}

impl Real {
    fn new(ns: &Netns) -> Real {
        let bridge = unique("mds");
        ns.own_host_link(&bridge);
        Real { bridge, parent: ns.host_veth(), subnets: [unique_subnet(), unique_subnet()] }
    }

    fn primary(&self, w: &World) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "modes-bridge",
            "plugins": [{"type": "bridge", "bridge": self.bridge, "isGateway": false, "ipMasq": false,
                         "ipam": {"type": "host-local", "dataDir": w.dir.data_dir,
                                  "ranges": [[{"subnet": self.subnets[0].0}]]}}]
        })
    }

    fn secondary(&self, w: &World) -> Value {
        json!({
            "cniVersion": "0.4.0", "name": "modes-macvlan", "type": "macvlan", "master": self.parent,
            "mode": "bridge",
            "ipam": {"type": "host-local", "dataDir": w.dir.data_dir, "ranges": [[{"subnet": self.subnets[1].0}]]}
        })
    }

    fn conf(&self, w: &World) -> Value {
        w.conf("1.1.0", self.primary(w), Some(self.secondary(w)), json!({}))
    }
}

/// `(bridge leases, macvlan leases)`.
fn lease_counts(w: &World) -> (usize, usize) {
    (leases(&w.dir.data_dir, "modes-bridge").len(), leases(&w.dir.data_dir, "modes-macvlan").len())
}

fn cid(tag: &str) -> String {
    format!("modes-{}", unique(tag))
}

/// ADD attaches both networks; CHECK checks them; DEL (from the cache) releases both
/// leases and removes both links; a second DEL is fine.
fn add_check_del(mode: Mode) {
    let w = World::new(mode);
    let ns = Netns::new();
    let real = Real::new(&ns);
    let conf = real.conf(&w);
    let id = cid("a");
    let add = Invocation::new("ADD", &id, &ns.path);
    let result = add.run_json(&conf).ok();
    assert_eq!(result["interfaces"].as_array().map(|a| a.is_empty()), Some(false), "{result}");
    assert!(ns.link("eth0").is_some() && ns.link("net1").is_some(), "{:?}", ns.link_names());
    assert_eq!(lease_counts(&w), (1, 1));
    add.command("CHECK").run_json(&conf).ok();
    add.command("DEL").run_json(&conf).ok();
    assert_eq!(lease_counts(&w), (0, 0));
    assert!(ns.link("eth0").is_none() && ns.link("net1").is_none(), "{:?}", ns.link_names());
    assert!(w.dir.cache_files().is_empty(), "{:?}", w.dir.cache_files());
    add.command("DEL").run_json(&conf).ok();
}

/// DEL with neither scratch nor results cache, the pod already gone from the API (Go
/// Multus deletes nothing then, #586): the primary and the default network are resolved
/// as ADD resolved them, and both leases are released.
fn cacheless_del(mode: Mode) {
    cacheless_del_with(mode, false)
}

/// The same with the API server down instead of the pod gone.
fn cacheless_del_with(mode: Mode, api_down: bool) {
    let mut w = World::new(mode);
    let ns = Netns::new();
    let real = Real::new(&ns);
    let conf = real.conf(&w);
    let id = cid("c");
    let add = Invocation::new("ADD", &id, &ns.path);
    add.run_json(&conf).ok();
    assert_eq!(lease_counts(&w), (1, 1));
    std::fs::remove_dir_all(&w.dir.cni_dir).unwrap();
    if api_down {
        drop(w.api.take());
    } else if let Some(api) = &w.api {
        api.standin.remove_pod("default", "pod-1");
    }
    add.command("DEL").run_json(&conf).ok();
    assert_eq!(lease_counts(&w), (0, 0), "the cache-less DEL leaked a lease");
    assert!(ns.link("eth0").is_none() && ns.link("net1").is_none(), "{:?}", ns.link_names());
    // the runtime's second DEL, sandbox gone: nothing left, still fine
    Invocation::new("DEL", &id, "").run_json(&conf).ok();
}

/// GC with two pods, one of them forgotten by the runtime: the forgotten pod's leases
/// (primary and secondary, both below CNI 1.1) are released by DEL, the kept pod's are
/// untouched.
fn gc_real(mode: Mode) {
    let w = World::new(mode);
    let (ns_keep, ns_stale) = (Netns::new(), Netns::new());
    let real = Real::new(&ns_keep);
    let conf = real.conf(&w);
    let (keep, stale) = (cid("k"), cid("s"));
    Invocation::new("ADD", &keep, &ns_keep.path).run_json(&conf).ok();
    Invocation::new("ADD", &stale, &ns_stale.path).run_json(&conf).ok();
    assert_eq!(lease_counts(&w), (2, 2));
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep, "ifname": "eth0"}]);
    Invocation::node_wide("GC").run_json(&gc).ok();
    assert_eq!(lease_counts(&w), (1, 1));
    assert!(ns_stale.link("eth0").is_none() && ns_stale.link("net1").is_none());
    assert!(ns_keep.link("eth0").is_some() && ns_keep.link("net1").is_some());
    assert!(w.dir.cache_files().iter().all(|f| f.contains(&keep)), "{:?}", w.dir.cache_files());
    Invocation::new("DEL", &keep, &ns_keep.path).run_json(&conf).ok();
    assert_eq!(lease_counts(&w), (0, 0));
}

/// STATUS asks the primary (a fake 1.1.0 plugin) in this mode, and its code 50 passes.
fn status_fake(mode: Mode) {
    let w = World::new(mode);
    let conf = w.conf("1.1.0", w.dir.fake("pri", "1.1.0", json!({})), None, json!({}));
    Invocation::node_wide("STATUS").run_json(&conf).ok();
    assert_eq!(w.dir.call_summary(), [call("STATUS", "pri", "")]);
    let w = World::new(mode);
    let conf = w.conf("1.1.0", w.dir.fake("pri", "1.1.0", json!({"status": "fail50"})), None, json!({}));
    Invocation::node_wide("STATUS").run_json(&conf).err(50);
}

/// GC reaches the primary with the runtime's list and the secondary with the kept pod's
/// net1, after DELeting the stale pod's attachments.
fn gc_fake(mode: Mode) {
    let w = World::new(mode);
    let ns = Netns::new();
    let conf =
        w.conf("1.1.0", w.dir.fake("pri", "1.1.0", json!({})), Some(w.dir.fake("sec", "1.1.0", json!({}))), json!({}));
    let (keep, stale) = (cid("k"), cid("s"));
    for id in [&keep, &stale] {
        Invocation::new("ADD", id, &ns.path).run_json(&conf).ok();
    }
    std::fs::remove_file(&w.dir.record).unwrap();
    let mut gc = conf.clone();
    let valid = json!([{"containerID": keep, "ifname": "eth0"}]);
    gc["cni.dev/valid-attachments"] = valid.clone();
    Invocation::node_wide("GC").run_json(&gc).ok();
    let calls = w.dir.calls();
    assert_eq!(
        w.dir.call_summary_by("containerId"),
        [call("DEL", "sec", &stale), call("DEL", "pri", &stale), call("GC", "pri", ""), call("GC", "sec", "")]
    );
    assert_eq!(calls[2]["stdin"]["cni.dev/valid-attachments"], valid);
    assert_eq!(calls[3]["stdin"]["cni.dev/valid-attachments"], json!([{"containerID": keep, "ifname": "net1"}]));
}

macro_rules! mode_tests {
    ($($mode:ident: $add:ident, $cacheless:ident, $gc:ident, $status:ident, $gc_fwd:ident;)*) => {$(
        #[test]
        fn $add() {
            require_root!();
            add_check_del(Mode::$mode);
        }
        #[test]
        fn $cacheless() {
            require_root!();
            cacheless_del(Mode::$mode);
        }
        #[test]
        fn $gc() {
            require_root!();
            gc_real(Mode::$mode);
        }
        #[test]
        fn $status() {
            require_root!();
            status_fake(Mode::$mode);
        }
        #[test]
        fn $gc_fwd() {
            require_root!();
            gc_fake(Mode::$mode);
        }
    )*};
}

mode_tests! {
    Delegates: delegates_add_check_del, delegates_cacheless_del, delegates_gc_releases_stale_leases,
        delegates_status_asks_the_primary, delegates_gc_reaches_every_network;
    File: file_add_check_del, file_cacheless_del, file_gc_releases_stale_leases,
        file_status_asks_the_primary, file_gc_reaches_every_network;
    Dir: dir_add_check_del, dir_cacheless_del, dir_gc_releases_stale_leases,
        dir_status_asks_the_primary, dir_gc_reaches_every_network;
    ConfDirName: confdir_name_add_check_del, confdir_name_cacheless_del, confdir_name_gc_releases_stale_leases,
        confdir_name_status_asks_the_primary, confdir_name_gc_reaches_every_network;
    Nad: nad_add_check_del, nad_cacheless_del, nad_gc_releases_stale_leases,
        nad_status_asks_the_primary, nad_gc_reaches_every_network;
}

#[test]
fn file_api_down_cacheless_del() {
    require_root!();
    cacheless_del_with(Mode::File, true);
}

#[test]
fn dir_api_down_cacheless_del() {
    require_root!();
    cacheless_del_with(Mode::Dir, true);
}

/// A name: the NAD GET fails, the `confDir` file of that name is used.
#[test]
fn confdir_name_api_down_cacheless_del() {
    require_root!();
    cacheless_del_with(Mode::ConfDirName, true);
}

/// A NAD-named primary with the API down: a cache-less DEL resolves the primary from
/// the config another pod's scratch cache recorded for that NAD, and releases the lease.
#[test]
fn nad_api_down_cacheless_del_uses_what_the_node_recorded() {
    require_root!();
    let mut w = World::new(Mode::Nad);
    let (ns_a, ns_b) = (Netns::new(), Netns::new());
    let real = Real::new(&ns_a);
    let conf = real.conf(&w);
    let (a, b) = (cid("a"), cid("b"));
    Invocation::new("ADD", &a, &ns_a.path).run_json(&conf).ok();
    Invocation::new("ADD", &b, &ns_b.path).run_json(&conf).ok();
    assert_eq!(lease_counts(&w), (2, 2));
    std::fs::remove_file(w.dir.scratch_cache(&b)).unwrap();
    for f in w.dir.cache_files().iter().filter(|f| f.contains(&b)) {
        std::fs::remove_file(w.dir.cni_dir.join(f)).unwrap();
    }
    drop(w.api.take()); // the API server is down
    Invocation::new("DEL", &b, &ns_b.path).run_json(&conf).ok();
    assert_eq!(lease_counts(&w), (1, 1), "b's leases released, a's kept");
    assert!(ns_b.link("eth0").is_none() && ns_b.link("net1").is_none());
    // a still has its cache: a normal DEL without the API
    Invocation::new("DEL", &a, &ns_a.path).run_json(&conf).ok();
    assert_eq!(lease_counts(&w), (0, 0));
}

/// A NAD-named primary, API down and nothing on the node knows the NAD: DEL still
/// succeeds and releases what the node can resolve (the default network from its file);
/// the primary's lease stays until a GC or DEL that can resolve it. STATUS says 50.
#[test]
fn nad_api_down_nothing_known_del_succeeds_status_is_50() {
    require_root!();
    let mut w = World::new(Mode::Nad);
    let ns = Netns::new();
    let real = Real::new(&ns);
    let conf = real.conf(&w);
    let id = cid("n");
    Invocation::new("ADD", &id, &ns.path).run_json(&conf).ok();
    std::fs::remove_dir_all(&w.dir.cni_dir).unwrap();
    drop(w.api.take());
    let run = Invocation::new("DEL", &id, &ns.path).run_json(&conf);
    run.ok();
    assert!(run.stderr.contains(NAD) && run.stderr.contains("not deleted"), "{}", run.stderr);
    assert_eq!(lease_counts(&w), (1, 0), "the default network is released, the unknown primary is not");
    let e = Invocation::node_wide("STATUS").run_json(&conf).err(50);
    assert!(e["msg"].as_str().unwrap().contains(NAD), "{e}");
}

/// `auxiliaryCNIChainName`: passthru then the plugin files of the chain directory, as the
/// last delegate (net1 here: the primary is eth0), replayed on CHECK and DEL.
#[test]
fn auxiliary_chain_runs_last_and_is_replayed() {
    require_root!();
    let w = World::new(Mode::File);
    std::os::unix::fs::symlink(multus_bin(), w.dir.bin_dir.join("passthru")).unwrap();
    let ns = Netns::new();
    let conf =
        w.conf("1.0.0", w.dir.fake("pri", "1.0.0", json!({})), None, json!({"auxiliaryCNIChainName": "modes-aux"}));
    let mut chained = w.dir.fake("ignored", "1.0.0", json!({}));
    chained.as_object_mut().unwrap().remove("name");
    write_json(&w.tmp().join("net.d/modes-aux/10-rec.conf"), &chained);
    let id = cid("x");
    let add = Invocation::new("ADD", &id, &ns.path);
    let result = add.run_json(&conf).ok();
    assert_eq!(result["ips"][0]["address"], "10.99.0.2/24", "the primary's result: {result}");
    add.command("CHECK").run_json(&conf).ok();
    add.command("DEL").run_json(&conf).ok();
    assert_eq!(
        w.dir.call_summary(),
        [
            call("ADD", "pri", "eth0"),
            call("ADD", "modes-aux", "net1"),
            call("CHECK", "pri", "eth0"),
            call("CHECK", "modes-aux", "net1"),
            call("DEL", "modes-aux", "net1"),
            call("DEL", "pri", "eth0"),
        ]
    );
    let calls = w.dir.calls();
    assert_eq!(calls[1]["stdin"]["prevResult"], json!({"cniVersion": "1.0.0"}), "passthru's empty result");
    assert!(w.dir.cache_files().is_empty(), "{:?}", w.dir.cache_files());

    // the error case: clusterNetwork must be a path
    let w = World::new(Mode::ConfDirName);
    let conf =
        w.conf("1.0.0", w.dir.fake("pri", "1.0.0", json!({})), None, json!({"auxiliaryCNIChainName": "modes-aux"}));
    let e = Invocation::new("ADD", &cid("y"), &ns.path).run_json(&conf).err(7);
    assert!(e["msg"].as_str().unwrap().contains("must be a path"), "{e}");
    assert!(w.dir.calls().is_empty());
}
