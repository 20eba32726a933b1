//! End-to-end tests of the Kubernetes path, through the built `multus` binary, in real
//! network namespaces, with Debian's CNI plugins and the API stand-in.
//!
//! Every test builds its own [`World`] (netns, host links, temp dirs, API stand-in) and
//! tears it down on drop. Run as root: `cargo test --test k8s_e2e -- --test-threads=2`.

mod support;

use serde_json::{Value, json};
use support::{Api, PRIMARY, PodRef, World};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// Seed 002's `privatezone-macvlan-conf` (C1) on `master`, with a per-test host-local
/// data dir (the seed's default, /var/lib/cni/networks, is shared by every run).
fn privatezone(w: &World, master: &str) -> Value {
    json!({
        "cniVersion": "0.3.0",
        "type": "macvlan",
        "master": master,
        "mode": "bridge",
        "ipam": {
            "type": "host-local",
            "dataDir": w.p("ipam"),
            "subnet": "10.12.34.0/24",
            "rangeStart": "10.12.34.200",
            "rangeEnd": "10.12.34.220",
            "routes": [{"dst": "0.0.0.0/0"}],
            "gateway": "10.12.34.254"
        }
    })
}

/// Seeds C1/D1/E: one NAD by name → eth0 + net1, the status annotation as Go writes it,
/// one AddedInterface event per interface.
#[test]
fn seed_privatezone_macvlan_gives_net1_status_and_events() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let master = w.veth();
    w.add_nad("default", "privatezone-macvlan-conf", &privatezone(&w, &master));
    let pod = w.add_pod("samplepod", &[(NETWORKS, "privatezone-macvlan-conf")]);

    let run = w.cni("ADD", &pod, &w.conf(json!({})));
    let result = run.ok();
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["ips"][0]["address"], format!("{}/24", w.primary_ip()));

    let eth0 = w.netns.expect_link("eth0");
    let net1 = w.netns.expect_link("net1");
    assert_eq!(eth0.addrs, vec![format!("{}/24", w.primary_ip())]);
    assert_eq!(net1.addrs, vec!["10.12.34.200/24"], "first address of the range");

    let expected = format!(
        "[{{\n    \"name\": \"{PRIMARY}\",\n    \"interface\": \"eth0\",\n    \"ips\": [\n        \"{}\"\n    ],\n    \"mac\": \"{}\",\n    \"default\": true,\n    \"dns\": {{}}\n}},{{\n    \"name\": \"default/privatezone-macvlan-conf\",\n    \"interface\": \"net1\",\n    \"ips\": [\n        \"10.12.34.200\"\n    ],\n    \"mac\": \"{}\",\n    \"dns\": {{}}\n}}]",
        w.primary_ip(),
        eth0.mac,
        net1.mac
    );
    assert_eq!(w.network_status_raw(&pod).unwrap(), expected);

    // Sent concurrently: compare in sorted order (kubectl sorts by timestamp anyway).
    let mut events = w.events(&pod);
    events.sort();
    assert_eq!(
        events,
        vec![
            ev("Normal", "AddedInterface", &format!("Add eth0 [{}/24] from {PRIMARY}", w.primary_ip())),
            ev("Normal", "AddedInterface", "Add net1 [10.12.34.200/24] from default/privatezone-macvlan-conf"),
        ]
    );
}

fn ev(t: &str, reason: &str, msg: &str) -> (String, String, String) {
    (t.into(), reason.into(), msg.into())
}

/// Seed 001's `macvlan-conf` (C2): macvlan with the `ips` capability and static IPAM,
/// then tuning with the `mac` capability.
fn macvlan_conf(master: &str) -> Value {
    json!({
        "cniVersion": "0.3.1",
        "plugins": [
            {
                "type": "macvlan",
                "capabilities": {"ips": true},
                "master": master,
                "mode": "bridge",
                "ipam": {"type": "static", "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.1.1"}]}
            },
            {"type": "tuning", "capabilities": {"mac": true}}
        ]
    })
}

/// Seeds C2/D3: the JSON form with a static address, and with a MAC.
#[test]
fn seed_json_annotation_static_ip_and_mac() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let master = w.veth();
    w.add_nad("default", "macvlan-conf", &macvlan_conf(&master));
    let pod = w.add_pod(
        "pod1",
        &[(NETWORKS, r#"[{ "name": "macvlan-conf", "ips": [ "10.1.1.101/24" ], "gateway": [ "10.1.1.1" ] }]"#)],
    );
    w.cni("ADD", &pod, &w.conf(json!({}))).ok();
    assert_eq!(w.netns.expect_link("net1").addrs, vec!["10.1.1.101/24"]);
    let status = w.network_status(&pod);
    assert_eq!(status[1]["name"], "default/macvlan-conf");
    assert_eq!(status[1]["ips"], json!(["10.1.1.101"]));
    w.cni("DEL", &pod, &w.conf(json!({}))).ok();
    w.assert_nothing_left();

    // pod2 of the seed, with a MAC on top.
    let ns2 = w.extra_netns();
    let pod2 = w.add_pod(
        "pod2",
        &[(NETWORKS, r#"[{"name":"macvlan-conf","ips":["10.1.1.102/24"],"mac":"c2:b0:57:49:47:f1"}]"#)],
    );
    w.cni_in("ADD", &pod2, &ns2, &w.conf(json!({}))).ok();
    let net1 = w.extra(0).expect_link("net1");
    assert_eq!(net1.addrs, vec!["10.1.1.102/24"]);
    assert_eq!(net1.mac, "c2:b0:57:49:47:f1");
    let status = w.network_status(&pod2);
    assert_eq!(status[1]["mac"], "c2:b0:57:49:47:f1", "status reports the MAC tuning set: {status:?}");
    w.cni_in("DEL", &pod2, &ns2, &w.conf(json!({}))).ok();
    assert_eq!(w.extra(0).pod_links(), vec![]);
}

/// Seed 004's `ipvlan-conf-1`/`-2` with macvlan standing in for ipvlan (the kernel here
/// has no ipvlan), each on its own parent: the comma list with a space after the comma
/// gives net1 on the first parent's network and net2 on the second's.
#[test]
fn comma_list_with_space_gives_net1_and_net2_in_order() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let (eth1, eth2) = (w.veth(), w.veth());
    w.add_nad("default", "ipvlan-conf-1", &w.macvlan("0.3.0", &eth1, "10.0.4.0/24", "10.0.4.70", "10.0.4.80"));
    w.add_nad("default", "ipvlan-conf-2", &w.macvlan("0.3.0", &eth2, "10.0.6.0/24", "10.0.6.70", "10.0.6.80"));
    let pod = w.add_pod("sampleapp-dual-1", &[(NETWORKS, "ipvlan-conf-1, ipvlan-conf-2")]);
    w.cni("ADD", &pod, &w.conf(json!({}))).ok();
    assert_eq!(w.netns.expect_link("net1").addrs, vec!["10.0.4.70/24"]);
    assert_eq!(w.netns.expect_link("net2").addrs, vec!["10.0.6.70/24"]);
    let names: Vec<Value> = w.network_status(&pod).iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, vec![json!(PRIMARY), json!("default/ipvlan-conf-1"), json!("default/ipvlan-conf-2")]);
    // Each macvlan child sits on the parent its NAD names.
    for (ifname, parent) in [("net1", &eth1), ("net2", &eth2)] {
        let out = support::ip(&["-n", &w.netns.name, "-j", "-d", "link", "show", ifname]);
        let link: Value = serde_json::from_str(&out).unwrap();
        let host_index = support::ip(&["-j", "link", "show", parent]);
        let host: Value = serde_json::from_str(&host_index).unwrap();
        assert_eq!(link[0]["link_index"], host[0]["ifindex"], "{ifname} is not on {parent}");
    }
    w.cni("DEL", &pod, &w.conf(json!({}))).ok();
    w.assert_nothing_left();
}

/// `ns/name@ifname` names the interface; the same NAD twice gives two attachments.
#[test]
fn namespaced_name_with_ifname_and_same_nad_twice() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let parent = w.veth();
    w.add_nad("default", "a-conf", &w.macvlan("0.3.1", &parent, "10.0.4.0/24", "10.0.4.70", "10.0.4.80"));
    let pod = w.add_pod("named", &[(NETWORKS, "default/a-conf@data0, a-conf")]);
    w.cni("ADD", &pod, &w.conf(json!({}))).ok();
    assert_eq!(w.netns.expect_link("data0").addrs, vec!["10.0.4.70/24"]);
    // The named attachment still consumes index 1 (Go Multus §1.6).
    assert_eq!(w.netns.expect_link("net2").addrs, vec!["10.0.4.71/24"]);
    let status = w.network_status(&pod);
    assert_eq!(status[1]["interface"], "data0");
    assert_eq!(status[2]["interface"], "net2");
    w.cni("DEL", &pod, &w.conf(json!({}))).ok();
    w.assert_nothing_left();

    let ns2 = w.extra_netns();
    let twice = w.add_pod("twice", &[(NETWORKS, "a-conf,a-conf")]);
    w.api.clear_requests();
    w.cni_in("ADD", &twice, &ns2, &w.conf(json!({}))).ok();
    let nad_gets = w.request_lines().iter().filter(|l| l.contains("network-attachment-definitions/a-conf")).count();
    assert_eq!(nad_gets, 1, "one GET per NAD, however often it is listed: {:?}", w.request_lines());
    let links = w.extra(0).pod_links();
    let addrs = |n: &str| links.iter().find(|l| l.name == n).map(|l| l.addrs.clone());
    // host-local goes on from its last reservation: .72 and .73, two leases.
    let (a1, a2) = (addrs("net1").expect("net1"), addrs("net2").expect("net2"));
    assert_eq!((a1.len(), a2.len()), (1, 1), "{links:?}");
    assert_ne!(a1, a2, "two attachments, two addresses");
    assert!(a1[0].starts_with("10.0.4.7") && a2[0].starts_with("10.0.4.7"), "{links:?}");
    assert_eq!(w.leases().len(), 3, "eth0 + two leases on a-conf: {:?}", w.leases());
    let status = w.network_status(&twice);
    assert_eq!(
        (status[1]["name"].as_str(), status[2]["name"].as_str()),
        (Some("default/a-conf"), Some("default/a-conf"))
    );
    // Two results-cache entries, one per interface.
    let caches = w.cache_files();
    assert!(caches.iter().any(|c| c.ends_with(&format!("a-conf-{}-net1", twice.container_id))), "{caches:?}");
    assert!(caches.iter().any(|c| c.ends_with(&format!("a-conf-{}-net2", twice.container_id))), "{caches:?}");
    w.cni_in("DEL", &twice, &ns2, &w.conf(json!({}))).ok();
    assert_eq!(w.extra(0).pod_links(), vec![]);
    assert_eq!(w.leases(), Vec::<String>::new());
    assert_eq!(w.cache_files(), Vec::<String>::new());
}

/// The `spec.config` of NAD `name` in a seed's multi-document manifest.
fn seed_nad_config(manifest: &str, name: &str) -> Value {
    let docs: Vec<Value> = serde_saphyr::from_multiple(manifest).expect("seed manifest");
    let nad = docs.iter().find(|d| d["metadata"]["name"] == name).unwrap_or_else(|| panic!("no NAD {name}"));
    serde_json::from_str(nad["spec"]["config"].as_str().expect("spec.config")).expect("spec.config is JSON")
}

/// Seed 004's real `ipvlan-conf-1` (ipvlan, master eth1, mode l3): on this node the
/// delegate fails (no eth1, or no ipvlan in the kernel). Its own error reaches the
/// runtime with its code, naming the network, and eth0 is rolled back.
#[test]
fn seed_ipvlan_failure_is_reported_and_rolled_back() {
    let w = World::new();
    let mut config = seed_nad_config(include_str!("data/seed-004-ipvlan-nads.yaml"), "ipvlan-conf-1");
    config["ipam"]["dataDir"] = w.p("ipam").into();
    w.add_nad("default", "ipvlan-conf-1", &config);
    if support::kernel_has_link_type("ipvlan")
        && std::process::Command::new("ip").args(["link", "show", "eth1"]).output().unwrap().status.success()
    {
        eprintln!("SKIPPED: this node has eth1 and ipvlan; the seed NAD would succeed");
        return;
    }
    let pod = w.add_pod("sampleapp-1", &[(NETWORKS, "ipvlan-conf-1")]);
    let run = w.cni("ADD", &pod, &w.conf(json!({})));
    let (code, msg) = run.err();
    // The ipvlan plugin answers with code 999 (Go's skel for a plain error).
    assert_eq!(code, 999, "the delegate's own code: {msg}");
    assert!(msg.contains("ipvlan-conf-1"), "the message names the network: {msg}");
    assert!(msg.contains("eth1") || msg.contains("ipvlan"), "the delegate's words: {msg}");
    w.assert_nothing_left();
    assert_eq!(w.network_status_raw(&pod), None, "no status for a failed ADD");
    assert!(w.events(&pod).iter().all(|e| e.1 != "AddedInterface"), "{:?}", w.events(&pod));
}

/// Seed C1 verbatim: `master: enp0s8`, which this node does not have (SEEDS §F: the
/// master must name the node's real NIC). The macvlan plugin's error reaches the
/// runtime, naming the network; eth0 is rolled back.
#[test]
fn seed_macvlan_with_a_wrong_master_fails_and_rolls_back() {
    let w = World::new();
    if std::process::Command::new("ip").args(["link", "show", "enp0s8"]).output().unwrap().status.success() {
        eprintln!("SKIPPED: this node has an enp0s8");
        return;
    }
    let mut config = privatezone(&w, "enp0s8");
    config["name"] = "privatezone-macvlan-conf".into();
    w.add_nad("default", "privatezone-macvlan-conf", &config);
    let pod = w.add_pod("samplepod", &[(NETWORKS, "privatezone-macvlan-conf")]);
    let (code, msg) = w.cni("ADD", &pod, &w.conf(json!({}))).err();
    assert_eq!(code, 999, "macvlan's own code: {msg}");
    // macvlan 1.1.1 says only "Link not found"; we add which network it was.
    assert!(msg.contains("error adding container to network \"privatezone-macvlan-conf\""), "{msg}");
    assert!(msg.contains("macvlan"), "{msg}");
    w.assert_nothing_left();
    assert_eq!(w.network_status_raw(&pod), None);
}

/// A NAD that does not exist: the error names it (code 101), a `NoNetworkFound` warning
/// is recorded, and nothing is left behind.
#[test]
fn missing_nad_fails_with_warning_event_and_leaves_nothing() {
    let w = World::new();
    let pod = w.add_pod("lonely", &[(NETWORKS, "no-such-net")]);
    let (code, msg) = w.cni("ADD", &pod, &w.conf(json!({}))).err();
    assert_eq!(code, 101, "{msg}");
    assert!(msg.contains("no-such-net") && msg.contains("default"), "names the NAD and its namespace: {msg}");
    let events = w.events(&pod);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].0.as_str(), events[0].1.as_str()), ("Warning", "NoNetworkFound"));
    assert!(
        events[0].2.starts_with("cannot find a network-attachment-definition (no-such-net) in namespace (default)")
    );
    w.assert_nothing_left();
    assert_eq!(w.network_status_raw(&pod), None);
    assert!(w.api.requests().iter().all(|r| r.method != "PATCH" && r.method != "PUT"), "{:?}", w.request_lines());
}

/// `v1.multus-cni.io/default-network` replaces the primary network: by name (in
/// multusNamespace, kube-system) or as `ns/name`.
#[test]
fn default_network_annotation_replaces_eth0() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let parent = w.veth();
    w.add_nad("kube-system", "alt-net", &w.macvlan("0.3.1", &parent, "10.77.0.0/24", "10.77.0.10", "10.77.0.20"));
    w.add_nad("other", "alt-net2", &w.macvlan("0.3.1", &parent, "10.78.0.0/24", "10.78.0.10", "10.78.0.20"));
    let pod = w.add_pod("override", &[("v1.multus-cni.io/default-network", "alt-net")]);
    let run = w.cni("ADD", &pod, &w.conf(json!({})));
    assert_eq!(run.ok()["ips"][0]["address"], "10.77.0.10/24", "the result is the override's");
    assert_eq!(w.netns.pod_links().len(), 1);
    assert_eq!(w.netns.expect_link("eth0").addrs, vec!["10.77.0.10/24"]);
    let status = w.network_status(&pod);
    assert_eq!(status.len(), 1);
    assert_eq!((status[0]["name"].as_str(), status[0]["default"].as_bool()), (Some("kube-system/alt-net"), Some(true)));
    assert_eq!(
        w.events(&pod),
        vec![ev("Normal", "AddedInterface", "Add eth0 [10.77.0.10/24] from kube-system/alt-net")]
    );
    w.cni("DEL", &pod, &w.conf(json!({}))).ok();
    w.assert_nothing_left();
    assert!(w.leases().is_empty());

    let ns2 = w.extra_netns();
    let pod2 = w.add_pod("override2", &[("v1.multus-cni.io/default-network", "other/alt-net2")]);
    w.cni_in("ADD", &pod2, &ns2, &w.conf(json!({}))).ok();
    assert_eq!(w.extra(0).expect_link("eth0").addrs, vec!["10.78.0.10/24"]);
    w.cni_in("DEL", &pod2, &ns2, &w.conf(json!({}))).ok();
    assert_eq!(w.extra(0).pod_links(), vec![]);
}

/// `namespaceIsolation`: a pod in `default` may not use `kube-system/x` unless
/// `globalNamespaces` lists kube-system; that holds for the default-network annotation too.
#[test]
fn namespace_isolation_for_networks_and_default_network() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let parent = w.veth();
    w.add_nad("kube-system", "x", &w.macvlan("0.3.1", &parent, "10.79.0.0/24", "10.79.0.10", "10.79.0.20"));
    let isolated = w.conf(json!({"namespaceIsolation": true}));
    let global = w.conf(json!({"namespaceIsolation": true, "globalNamespaces": "kube-system"}));

    for (name, key, value) in [
        ("iso-networks", NETWORKS, "kube-system/x"),
        ("iso-default", "v1.multus-cni.io/default-network", "x"),
        ("iso-default-ns", "v1.multus-cni.io/default-network", "kube-system/x"),
        ("iso-json", NETWORKS, r#"[{"name":"x","namespace":"kube-system"}]"#),
    ] {
        let pod = w.add_pod(name, &[(key, value)]);
        w.api.clear_requests();
        let (code, msg) = w.cni("ADD", &pod, &isolated).err();
        assert_eq!(code, 7, "{msg}");
        assert!(
            msg.contains("namespace isolation") && msg.contains("kube-system") && msg.contains("default"),
            "{key}={value}: {msg}"
        );
        w.assert_nothing_left();
        assert!(
            !w.api.requests().iter().any(|r| r.path.contains("network-attachment-definitions")),
            "no NAD is fetched for a rejected selection: {:?}",
            w.request_lines()
        );

        let run = w.cni("ADD", &pod, &global);
        run.ok();
        let links = w.netns.pod_links();
        assert!(links.iter().any(|l| l.addrs.iter().any(|a| a.starts_with("10.79.0."))), "{key}={value}: {links:?}");
        w.cni("DEL", &pod, &global).ok();
        w.assert_nothing_left();
    }

    // A pod's own namespace is always allowed; status and events go to that namespace.
    w.add_nad("team-a", "own", &w.macvlan("0.3.1", &parent, "10.79.1.0/24", "10.79.1.10", "10.79.1.20"));
    let pod = w.add_pod_in("team-a", "mine", &[(NETWORKS, "own")]);
    w.cni("ADD", &pod, &isolated).ok();
    assert_eq!(w.netns.expect_link("net1").addrs, vec!["10.79.1.10/24"]);
    assert_eq!(w.network_status(&pod)[1]["name"], "team-a/own");
    let events = w.events(&pod);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        w.api.events().iter().all(|e| e["metadata"]["namespace"] == "team-a" || e["involvedObject"]["name"] != "mine")
    );
    w.cni("DEL", &pod, &isolated).ok();
    w.assert_nothing_left();
}

/// The pod's UID in the API is not the runtime's: ADD fails and runs nothing.
#[test]
fn uid_mismatch_fails_before_anything_runs() {
    let w = World::new();
    let mut pod = w.add_pod("recreated", &[]);
    pod.uid = "some-older-uid".into();
    let (code, msg) = w.cni("ADD", &pod, &w.conf(json!({}))).err();
    assert_eq!(code, 101, "{msg}");
    assert!(msg.contains("expected pod UID \"some-older-uid\""), "{msg}");
    w.assert_nothing_left();
    assert_eq!(w.request_lines(), vec![format!("GET /api/v1/namespaces/default/pods/{}", pod.name)]);
}

/// A pod the API does not know (a racing deletion): success with Go Multus' synthetic
/// `0.0.0.0/0` result, and no delegate runs.
#[test]
fn pod_missing_from_api_succeeds_with_empty_result() {
    let w = World::new();
    let pod = w.pod_ref("default", "ghost");
    let run = w.cni("ADD", &pod, &w.conf(json!({})));
    let result = run.ok();
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["interfaces"], json!([{"name": "eth0", "sandbox": w.netns.path}]));
    assert_eq!(result["ips"][0]["address"], "0.0.0.0/0");
    assert_eq!(result["ips"][0]["gateway"], "0.0.0.0");
    w.assert_nothing_left();
    assert!(w.api.events().is_empty());
    assert_eq!(w.request_lines(), vec!["GET /api/v1/namespaces/default/pods/ghost".to_string()]);
}

/// Sorted `METHOD path` lines of what one ADD asked the API.
fn sorted_requests(w: &World) -> Vec<String> {
    let mut lines = w.request_lines();
    lines.sort();
    lines
}

/// World with `n` macvlan NADs `net-0..net-<n-1>` on one parent; returns the annotation.
fn nads(w: &mut World, n: usize) -> String {
    let parent = w.veth();
    for i in 0..n {
        let config =
            w.macvlan("0.3.1", &parent, &format!("10.8{i}.0.0/24"), &format!("10.8{i}.0.10"), &format!("10.8{i}.0.20"));
        w.add_nad("default", &format!("net-{i}"), &config);
    }
    (0..n).map(|i| format!("net-{i}")).collect::<Vec<_>>().join(",")
}

/// A world with one macvlan NAD (`net-0`) and pod `name` asking for it by name: the
/// setup of the single-attachment tests. Returns the world, the annotation and the pod.
fn one_nad_world(name: &str) -> (World, String, PodRef) {
    let mut w = World::new();
    let annotation = nads(&mut w, 1);
    let pod = w.add_pod(name, &[(NETWORKS, &annotation)]);
    (w, annotation, pod)
}

/// ADD `pod` with the default config (it must succeed), `check` the world, DEL it, and
/// nothing of it is left.
fn add_check_del(w: &World, pod: &PodRef, check: impl FnOnce(&World)) {
    w.cni("ADD", pod, &w.conf(json!({}))).ok();
    check(w);
    w.cni("DEL", pod, &w.conf(json!({}))).ok();
    w.assert_nothing_left();
}

/// `verb resource` of every request on pods and their subresources, in order.
fn pod_requests(w: &World) -> Vec<String> {
    w.api
        .requests()
        .iter()
        .filter(|r| r.resource.starts_with("pods"))
        .map(|r| format!("{} {}", r.verb, r.resource))
        .collect()
}

fn expected_requests(pod: &str, nads: usize, pod_get: bool) -> Vec<String> {
    let mut lines = Vec::new();
    if pod_get {
        lines.push(format!("GET /api/v1/namespaces/default/pods/{pod}"));
    }
    for i in 0..nads {
        lines.push(format!("GET /apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/net-{i}"));
    }
    lines.push(format!("PATCH /api/v1/namespaces/default/pods/{pod}"));
    for _ in 0..=nads {
        lines.push("POST /api/v1/namespaces/default/events".into());
    }
    lines.sort();
    lines
}

/// The API requests of one ADD, with a pod GET: 1 GET pod, 1 GET per NAD, 1 merge-patch,
/// one event per interface. DEL afterwards makes none.
#[test]
fn request_counts_with_pod_get() {
    require_link_type!("macvlan");
    for n in [0, 1, 3] {
        let mut w = World::new();
        let annotation = nads(&mut w, n);
        let annotations: &[(&str, &str)] = if n == 0 { &[] } else { &[(NETWORKS, &annotation)] };
        let pod = w.add_pod("counted", annotations);
        w.cni("ADD", &pod, &w.conf(json!({}))).ok();
        assert_eq!(sorted_requests(&w), expected_requests("counted", n, true), "{n} NADs");
        let patch = w.api.requests().into_iter().find(|r| r.method == "PATCH").unwrap();
        assert_eq!(patch.content_type.as_deref(), Some("application/merge-patch+json"));
        let body: Value = serde_json::from_str(&patch.body).unwrap();
        assert_eq!(body["metadata"]["annotations"].as_object().unwrap().len(), 1, "only network-status: {body}");
        assert_eq!(body["metadata"]["uid"], pod.uid.as_str(), "the UID is a precondition: {body}");
        assert!(body["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].is_string());
        assert_eq!(w.network_status(&pod).len(), n + 1);

        w.api.clear_requests();
        w.cni("DEL", &pod, &w.conf(json!({}))).ok();
        assert_eq!(w.request_lines(), Vec::<String>::new(), "DEL after ADD asks the API nothing");
        w.assert_nothing_left();
    }
}

/// With the annotations passed by the runtime there is no pod GET at all.
#[test]
fn request_counts_with_runtime_annotations() {
    require_link_type!("macvlan");
    for n in [1, 3] {
        let mut w = World::new();
        let annotation = nads(&mut w, n);
        let pod = w.add_pod("rt-annotated", &[(NETWORKS, &annotation)]);
        let conf = w.conf_with_runtime_annotations(&[(NETWORKS, annotation.as_str())].into_iter().collect());
        w.cni("ADD", &pod, &conf).ok();
        assert_eq!(sorted_requests(&w), expected_requests("rt-annotated", n, false), "{n} NADs");
        assert_eq!(w.netns.pod_links().len(), n + 1);
        assert_eq!(w.network_status(&pod).len(), n + 1);
        w.api.clear_requests();
        w.cni("DEL", &pod, &conf).ok();
        assert_eq!(w.request_lines(), Vec::<String>::new());
        w.assert_nothing_left();
    }
}

/// The three NADs are fetched at once: with each NAD GET delayed by 1.5 s, the ADD takes
/// about 1.5 s longer than without, not 4.5 s.
#[test]
fn nads_are_fetched_concurrently() {
    require_link_type!("macvlan");
    use kube_standin::{Fault, FaultAction};
    use std::time::Duration;
    let delay = Duration::from_millis(1500);
    let mut w = World::new();
    let annotation = nads(&mut w, 3);
    let conf = w.conf(json!({}));
    let base = w.add_pod("baseline", &[(NETWORKS, &annotation)]);
    let ns2 = w.extra_netns();
    let baseline = w.cni_in("ADD", &base, &ns2, &conf);
    baseline.ok();
    w.cni_in("DEL", &base, &ns2, &conf).ok();

    w.api.add_fault(Fault::new(FaultAction::Delay(delay)).path_contains("network-attachment-definitions"));
    let pod = w.add_pod("slow-nads", &[(NETWORKS, &annotation)]);
    let slow = w.cni("ADD", &pod, &conf);
    slow.ok();
    assert!(slow.elapsed >= delay, "the delay was applied: {:?}", slow.elapsed);
    // Sequential GETs would add 3 x 1.5 s to the baseline; concurrent ones add 1.5 s.
    assert!(
        slow.elapsed < baseline.elapsed + delay * 2,
        "3 delayed NAD GETs took {:?} (baseline {:?}): not concurrent",
        slow.elapsed,
        baseline.elapsed
    );
    w.cni("DEL", &pod, &conf).ok();
    w.assert_nothing_left();
}

/// DEL never needs the API: with the kubeconfig gone it still cleans up from the cache,
/// and a DEL of a container nobody knows succeeds.
#[test]
fn del_without_kubeconfig_succeeds() {
    require_link_type!("macvlan");
    let (w, _, pod) = one_nad_world("nokubeconfig");
    w.cni("ADD", &pod, &w.conf(json!({}))).ok();
    std::fs::remove_file(w.path("kubeconfig")).unwrap();
    w.api.clear_requests();
    w.cni("DEL", &pod, &w.conf(json!({}))).ok();
    w.assert_nothing_left();
    let unknown = w.pod_ref("default", "never-added");
    w.cni("DEL", &unknown, &w.conf(json!({}))).ok();
    w.assert_nothing_left();
    assert_eq!(w.request_lines(), Vec::<String>::new());
}

mod faults {
    use super::*;
    use kube_standin::{Fault, FaultAction};
    use std::time::Duration;

    /// Two 503s on the pod GET are retried; the ADD succeeds.
    #[test]
    fn pod_get_503_twice_is_retried() {
        require_link_type!("macvlan");
        let (w, _, pod) = one_nad_world("flaky");
        w.api.add_fault(Fault::new(FaultAction::Status(503)).method("GET").path_contains("/pods/").times(2));
        add_check_del(&w, &pod, |w| {
            let gets =
                w.request_lines().iter().filter(|l| l.starts_with("GET /api/v1/namespaces/default/pods/")).count();
            assert_eq!(gets, 3, "{:?}", w.request_lines());
            assert_eq!(w.network_status(&pod).len(), 2);
        });
    }

    /// The API server is gone (connection refused): code 11 within the budget, nothing
    /// left behind.
    #[test]
    fn api_down_fails_with_try_again_later() {
        require_link_type!("macvlan");
        let (w, _, pod) = one_nad_world("unlucky");
        drop(Api::start_at(w.path("kubeconfig"), "t".into()));
        let run = w.cni("ADD", &pod, &w.conf(json!({"apiTimeoutSeconds": 2})));
        let (code, msg) = run.err();
        assert_eq!(code, 11, "{msg}");
        assert!(msg.contains("pod"), "{msg}");
        assert!(run.elapsed < Duration::from_secs(10), "bounded by the budget: {:?}", run.elapsed);
        w.assert_nothing_left();
    }

    /// An API server that accepts but never answers, on the pod GET, a NAD GET or the
    /// status write: code 11 once `apiTimeoutSeconds` is spent; nothing left behind (a
    /// failed status write rolls the delegates back).
    #[test]
    fn api_hang_fails_with_try_again_later_and_rolls_back() {
        require_link_type!("macvlan");
        let mut w = World::new();
        let annotation = nads(&mut w, 1);
        let conf = w.conf(json!({"apiTimeoutSeconds": 2}));
        for (i, (method, fragment)) in
            [("GET", "/pods/"), ("GET", "network-attachment-definitions"), ("PATCH", "/pods/")].into_iter().enumerate()
        {
            let pod = w.add_pod(&format!("hang{i}"), &[(NETWORKS, &annotation)]);
            w.api.clear_faults();
            w.api.add_fault(Fault::new(FaultAction::Hang).method(method).path_contains(fragment));
            let run = w.cni("ADD", &pod, &conf);
            let (code, msg) = run.err();
            assert_eq!(code, 11, "{method} {fragment}: {msg}");
            assert!(run.elapsed >= Duration::from_millis(1500), "{method} {fragment}: waited {:?}", run.elapsed);
            assert!(run.elapsed < Duration::from_secs(12), "{method} {fragment}: waited {:?}", run.elapsed);
            w.assert_nothing_left();
            assert_eq!(w.network_status_raw(&pod), None);
            // Before the status write, no interface was announced. (Events are sent
            // together with the status write, so a hanging PATCH may have been
            // accompanied by them: one round trip less on every ADD.)
            if method == "GET" {
                let events = w.events(&pod);
                assert!(events.iter().all(|e| e.1 != "AddedInterface"), "{method} {fragment}: {events:?}");
            }
        }
    }

    /// The pod deleted between our GET and our status write: not an error (Go Multus
    /// tolerates it too); the runtime will tear the sandbox down.
    #[test]
    fn pod_gone_at_status_write_is_not_an_error() {
        require_link_type!("macvlan");
        let (w, _, pod) = one_nad_world("vanishing");
        w.api.add_fault(Fault::new(FaultAction::Status(404)).method("PATCH").path_contains("/pods/").times(1));
        add_check_del(&w, &pod, |w| {
            assert_eq!(w.network_status_raw(&pod), None);
            assert_eq!(w.netns.pod_links().len(), 2);
        });
    }

    /// A reset connection on a NAD GET and a 429 on the PATCH are retried.
    #[test]
    fn reset_and_too_many_requests_are_retried() {
        require_link_type!("macvlan");
        let (w, _, pod) = one_nad_world("bumpy");
        w.api.add_fault(Fault::new(FaultAction::Reset).path_contains("network-attachment-definitions").times(1));
        w.api.add_fault(Fault::new(FaultAction::Status(429)).method("PATCH").times(1));
        add_check_del(&w, &pod, |w| {
            assert_eq!(w.network_status(&pod).len(), 2);
            let lines = w.request_lines();
            assert_eq!(lines.iter().filter(|l| l.contains("network-attachment-definitions")).count(), 2, "{lines:?}");
            assert_eq!(lines.iter().filter(|l| l.starts_with("PATCH")).count(), 2, "{lines:?}");
        });
    }

    /// Go Multus' stock ClusterRole has no `patch` on pods: we fall back to a PUT of
    /// pods/status (on the pod read at the start of the ADD), a 409 on that PUT is
    /// retried with a fresh GET, and the node remembers: later ADDs skip the PATCH.
    #[test]
    fn patch_forbidden_falls_back_to_update_status_with_conflict_retry() {
        require_link_type!("macvlan");
        let (mut w, annotation, pod) = one_nad_world("rbac");
        w.api.deny("patch", "pods");
        add_check_del(&w, &pod, |w| {
            assert_eq!(w.network_status(&pod).len(), 2);
            assert_eq!(pod_requests(w), vec!["get pods", "patch pods", "update pods/status"]);
        });

        let ns2 = w.extra_netns();
        let pod2 = w.add_pod("rbac-conflict", &[(NETWORKS, &annotation)]);
        w.api.clear_requests();
        w.api.add_fault(Fault::new(FaultAction::Status(409)).method("PUT").path_contains("/status").times(1));
        w.cni_in("ADD", &pod2, &ns2, &w.conf(json!({}))).ok();
        assert_eq!(w.network_status(&pod2).len(), 2);
        assert_eq!(
            pod_requests(&w),
            vec!["get pods", "update pods/status", "get pods", "update pods/status"],
            "learnt on the first ADD: no PATCH known to fail"
        );
        // The annotations the pod had are kept by the full-object update.
        let p = w.api.pod("default", "rbac-conflict").unwrap();
        assert_eq!(p["metadata"]["annotations"][NETWORKS], annotation.as_str());
        w.cni_in("DEL", &pod2, &ns2, &w.conf(json!({}))).ok();
        assert_eq!(w.extra(0).pod_links(), vec![]);
    }
}

/// `default-route` on net1: inside the pod the only IPv4 default route is via the
/// requested gateway on net1, and the status entry says so.
#[test]
fn default_route_request_moves_the_default_route_to_net1() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let master = w.veth();
    w.add_nad("default", "macvlan-conf", &macvlan_conf(&master));
    let pod = w.add_pod(
        "routed",
        &[(NETWORKS, r#"[{"name":"macvlan-conf","ips":["10.1.1.101/24"],"default-route":["10.1.1.1"]}]"#)],
    );
    let run = w.cni("ADD", &pod, &w.conf(json!({})));
    run.ok();
    assert_eq!(w.netns.default_routes_v4(), vec![("net1".to_string(), "10.1.1.1".to_string())]);
    let status = w.network_status(&pod);
    assert_eq!(status[1]["default-route"], json!(["10.1.1.1"]), "{status:?}");
    assert!(status[0].get("default-route").is_none(), "{status:?}");
    // The primary's result (what the runtime gets) no longer claims a default route.
    let routes = run.out["routes"].as_array().cloned().unwrap_or_default();
    assert!(routes.iter().all(|r| r["dst"] != "0.0.0.0/0"), "{routes:?}");
    w.cni("DEL", &pod, &w.conf(json!({}))).ok();
    w.assert_nothing_left();
}

/// Two IPv4 `default-route` gateways: Multus does not do ECMP; the ADD fails before
/// anything runs (not even a NAD GET).
#[test]
fn two_ipv4_default_routes_fail_before_anything_runs() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let master = w.veth();
    w.add_nad("default", "macvlan-conf", &macvlan_conf(&master));
    let pod = w.add_pod(
        "ecmp",
        &[(
            NETWORKS,
            r#"[{"name":"macvlan-conf","ips":["10.1.1.101/24"],"default-route":["10.1.1.1"]},
                {"name":"macvlan-conf","ips":["10.1.1.102/24"],"default-route":["10.1.1.2"]}]"#,
        )],
    );
    let (code, msg) = w.cni("ADD", &pod, &w.conf(json!({}))).err();
    assert_eq!(code, 7, "{msg}");
    assert!(msg.contains("ECMP") && msg.contains("10.1.1.1") && msg.contains("10.1.1.2"), "{msg}");
    w.assert_nothing_left();
    assert_eq!(w.request_lines(), vec!["GET /api/v1/namespaces/default/pods/ecmp".to_string()]);
}

/// CHECK after ADD (cniVersion >= 0.4.0 everywhere) succeeds and notices a missing
/// interface; DEL removes everything and may be repeated; DEL without a netns works.
#[test]
fn check_then_del_then_del_again_and_del_without_netns() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let parent = w.veth();
    w.add_nad("default", "checked", &w.macvlan("0.4.0", &parent, "10.90.0.0/24", "10.90.0.10", "10.90.0.20"));
    let pod = w.add_pod("checked", &[(NETWORKS, "checked")]);
    let conf = w.conf(json!({}));
    w.cni("ADD", &pod, &conf).ok();
    w.api.clear_requests();
    w.cni("CHECK", &pod, &conf).ok();
    assert_eq!(w.request_lines(), Vec::<String>::new(), "CHECK asks the API nothing");

    support::ip(&["-n", &w.netns.name, "link", "del", "net1"]);
    let (_, msg) = w.cni("CHECK", &pod, &conf).err();
    assert!(msg.contains("net1"), "CHECK names the broken attachment: {msg}");

    w.cni("DEL", &pod, &conf).ok();
    w.assert_nothing_left();
    w.cni("DEL", &pod, &conf).ok();
    w.assert_nothing_left();

    let ns2 = w.extra_netns();
    let pod2 = w.add_pod("netns-gone", &[(NETWORKS, "checked")]);
    w.cni_in("ADD", &pod2, &ns2, &conf).ok();
    assert_eq!(w.leases().len(), 2);
    w.cni_in("DEL", &pod2, "", &conf).ok();
    assert_eq!(w.leases(), Vec::<String>::new(), "leases released without a netns");
    assert_eq!(w.cache_files(), Vec::<String>::new());
    w.cni_in("DEL", &pod2, "", &conf).ok();
}

/// Write an executable plugin `name` into the world's binDir: a shell script that sleeps
/// `secs` on ADD, then runs the real macvlan plugin with the same stdin.
fn slow_macvlan_plugin(w: &World, name: &str, secs: u32) {
    use std::os::unix::fs::PermissionsExt;
    // Written by a `cp` child: a file this multi-threaded test process held open for
    // writing could be inherited by another test's fork, and exec would fail (ETXTBSY).
    let path = w.path("bin").join(name);
    let src = w.path("bin").join(format!(".{name}.src"));
    std::fs::write(&src, format!("#!/bin/sh\n[ \"$CNI_COMMAND\" = ADD ] && sleep {secs}\nexec /usr/lib/cni/macvlan\n"))
        .unwrap();
    assert!(std::process::Command::new("cp").arg(&src).arg(&path).status().unwrap().success());
    std::fs::remove_file(&src).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `apiTimeoutSeconds` bounds the API calls, not the delegates: a delegate that takes
/// longer than the whole API budget must not make the status write fail afterwards.
#[test]
fn slow_delegates_do_not_eat_the_api_budget() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let parent = w.veth();
    slow_macvlan_plugin(&w, "slowvlan", 3);
    let mut config = w.macvlan("0.3.1", &parent, "10.91.0.0/24", "10.91.0.10", "10.91.0.20");
    config["type"] = "slowvlan".into();
    w.add_nad("default", "slow", &config);
    let pod = w.add_pod("patient", &[(NETWORKS, "slow")]);
    let conf = w.conf(json!({"apiTimeoutSeconds": 2}));
    let run = w.cni("ADD", &pod, &conf);
    run.ok();
    assert_eq!(w.network_status(&pod).len(), 2);
    assert_eq!(w.events(&pod).len(), 2);
    w.cni("DEL", &pod, &conf).ok();
    w.assert_nothing_left();
}

/// The pod was deleted and recreated under the same name while the runtime still set up
/// the old sandbox (annotations passed by the runtime, so no GET saw the new UID): the
/// status must not land on the new pod.
#[test]
fn status_is_not_written_onto_a_recreated_pod() {
    require_link_type!("macvlan");
    let (w, annotation, mut pod) = one_nad_world("reborn");
    pod.uid = "uid-of-the-old-incarnation".into();
    let conf = w.conf_with_runtime_annotations(&[(NETWORKS, annotation.as_str())].into_iter().collect());
    let run = w.cni("ADD", &pod, &conf);
    assert_eq!(w.network_status_raw(&pod), None, "status written onto the new pod; ADD: {}", run.out);
    let (code, msg) = run.err();
    assert_eq!(code, 101, "{msg}");
    assert!(msg.contains("uid-of-the-old-incarnation"), "{msg}");
    w.assert_nothing_left();

    // The same through Go Multus' GET + PUT pods/status fallback.
    w.api.deny("patch", "pods");
    let run = w.cni("ADD", &pod, &conf);
    assert_eq!(w.network_status_raw(&pod), None, "status written onto the new pod; ADD: {}", run.out);
    assert_eq!(run.err().0, 101);
    assert!(!w.api.requests().iter().any(|r| r.method == "PUT"), "{:?}", w.request_lines());
    w.assert_nothing_left();
}

/// A static pod's mirror pod has another UID than the kubelet's pod: not a mismatch
/// (Go Multus exempts `kubernetes.io/config.source` != api); the status goes onto the
/// mirror pod.
#[test]
fn static_pod_uid_differs_from_mirror_pod_and_that_is_fine() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let annotation = nads(&mut w, 1);
    let mut pod = w.add_pod("etcd-node1", &[(NETWORKS, &annotation), ("kubernetes.io/config.source", "file")]);
    pod.uid = "kubelet-side-uid".into();
    w.cni("ADD", &pod, &w.conf(json!({}))).ok();
    assert_eq!(w.network_status(&pod).len(), 2);
    w.cni("DEL", &pod, &w.conf(json!({}))).ok();
    w.assert_nothing_left();

    // The same with the annotations passed by the runtime (no GET at all).
    let ns2 = w.extra_netns();
    let mut pod2 =
        w.add_pod("kube-apiserver-node1", &[(NETWORKS, &annotation), ("kubernetes.io/config.source", "file")]);
    pod2.uid = "kubelet-side-uid-2".into();
    let conf = w.conf_with_runtime_annotations(
        &[(NETWORKS, annotation.as_str()), ("kubernetes.io/config.source", "file")].into_iter().collect(),
    );
    w.cni_in("ADD", &pod2, &ns2, &conf).ok();
    assert_eq!(w.network_status(&pod2).len(), 2);
    w.cni_in("DEL", &pod2, &ns2, &conf).ok();
}

/// Events are best effort: forbidden or hanging event writes do not fail the ADD.
#[test]
fn event_failures_do_not_fail_the_add() {
    require_link_type!("macvlan");
    use kube_standin::{Fault, FaultAction};
    let mut w = World::new();
    let annotation = nads(&mut w, 1);
    w.api.deny("create", "events");
    let pod = w.add_pod("quiet", &[(NETWORKS, &annotation)]);
    w.cni("ADD", &pod, &w.conf(json!({}))).ok();
    assert_eq!(w.network_status(&pod).len(), 2);
    assert!(w.api.events().is_empty());

    let ns2 = w.extra_netns();
    let pod2 = w.add_pod("quiet2", &[(NETWORKS, &annotation)]);
    w.api.add_fault(Fault::new(FaultAction::Hang).method("POST").path_contains("/events"));
    let run = w.cni_in("ADD", &pod2, &ns2, &w.conf(json!({"apiTimeoutSeconds": 20})));
    run.ok();
    assert!(run.elapsed < std::time::Duration::from_secs(10), "events are bounded: {:?}", run.elapsed);
    assert_eq!(w.network_status(&pod2).len(), 2);
    w.cni("DEL", &pod, &w.conf(json!({}))).ok();
    w.cni_in("DEL", &pod2, &ns2, &w.conf(json!({}))).ok();
    assert_eq!(w.leases(), Vec::<String>::new());
}

/// Both caches lost (e.g. a wiped /var/lib/cni): DEL rebuilds the attachments from the
/// pod and its NADs, as ADD would, and releases everything.
#[test]
fn del_without_any_cache_rebuilds_from_the_api() {
    require_link_type!("macvlan");
    let (w, _, pod) = one_nad_world("amnesia");
    let conf = w.conf(json!({}));
    w.cni("ADD", &pod, &conf).ok();
    std::fs::remove_dir_all(w.path("multus")).unwrap();
    w.api.clear_requests();
    w.cni("DEL", &pod, &conf).ok();
    assert_eq!(
        w.request_lines(),
        vec![
            "GET /api/v1/namespaces/default/pods/amnesia".to_string(),
            "GET /apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/net-0".to_string()
        ]
    );
    w.assert_nothing_left();
    assert!(w.api.events().iter().all(|e| e["reason"] != "NoNetworkFound"));
}

/// Both caches lost and the API hanging: DEL gives up on the API quickly and still
/// tears down the static primary network (Go Multus would do nothing: #586).
#[test]
fn del_without_cache_and_hanging_api_still_deletes_the_primary() {
    require_link_type!("macvlan");
    use kube_standin::{Fault, FaultAction};
    let (w, _, pod) = one_nad_world("stranded");
    let conf = w.conf(json!({}));
    w.cni("ADD", &pod, &conf).ok();
    std::fs::remove_dir_all(w.path("multus")).unwrap();
    w.api.add_fault(Fault::new(FaultAction::Hang));
    let run = w.cni("DEL", &pod, &conf);
    run.ok();
    assert!(run.elapsed < std::time::Duration::from_secs(8), "DEL is bounded: {:?}", run.elapsed);
    // The primary's lease is released; net1's cannot be known without the API.
    let leases = w.leases();
    assert!(leases.iter().all(|l| !l.starts_with(PRIMARY)), "{leases:?}");
    assert!(w.netns.pod_links().iter().all(|l| l.name != "eth0"));
}

/// CHECK after a `default-route` ADD (everything cniVersion >= 0.4.0): the cached
/// results were rewritten to match the pod's routes, so every plugin's CHECK passes.
#[test]
fn check_after_default_route_passes() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let master = w.veth();
    let mut config = macvlan_conf(&master);
    config["cniVersion"] = "1.0.0".into();
    w.add_nad("default", "macvlan-conf", &config);
    let pod = w.add_pod(
        "routed-checked",
        &[(NETWORKS, r#"[{"name":"macvlan-conf","ips":["10.1.1.101/24"],"default-route":["10.1.1.1"]}]"#)],
    );
    let conf = w.conf(json!({}));
    w.cni("ADD", &pod, &conf).ok();
    assert_eq!(w.netns.default_routes_v4(), vec![("net1".to_string(), "10.1.1.1".to_string())]);
    w.cni("CHECK", &pod, &conf).ok();
    w.cni("DEL", &pod, &conf).ok();
    w.assert_nothing_left();
}

/// A NAD without `spec.config` names a config file in `confDir` (Go Multus §3.7).
#[test]
fn nad_without_config_uses_the_conf_dir_file() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let parent = w.veth();
    let mut file = w.macvlan("0.3.1", &parent, "10.92.0.0/24", "10.92.0.10", "10.92.0.20");
    file["name"] = "from-file".into();
    std::fs::write(w.path("net.d").join("10-from-file.conf"), serde_json::to_vec(&file).unwrap()).unwrap();
    w.api.standin.add_nad(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "from-file", "namespace": "default"}, "spec": {}
    }));
    let pod = w.add_pod("filed", &[(NETWORKS, "from-file")]);
    w.cni("ADD", &pod, &w.conf(json!({}))).ok();
    assert_eq!(w.netns.expect_link("net1").addrs, vec!["10.92.0.10/24"]);
    assert_eq!(w.network_status(&pod)[1]["name"], "default/from-file");
    w.cni("DEL", &pod, &w.conf(json!({}))).ok();
    w.assert_nothing_left();
}

/// Seed A's config shape: multus at cniVersion 0.3.1 while the primary speaks 1.0.0.
/// The result is printed in the caller's version; status and events are unchanged.
#[test]
fn seed_multus_config_version_031_gets_a_031_result() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let master = w.veth();
    w.add_nad("default", "privatezone-macvlan-conf", &privatezone(&w, &master));
    let pod = w.add_pod("oldconf", &[(NETWORKS, "privatezone-macvlan-conf")]);
    let conf = w.conf(json!({"cniVersion": "0.3.1", "capabilities": {"bandwidth": true, "portMappings": true}}));
    let run = w.cni("ADD", &pod, &conf);
    let result = run.ok();
    assert_eq!(result["cniVersion"], "0.3.1");
    assert_eq!(result["ips"][0]["version"], "4");
    assert_eq!(result["ips"][0]["address"], format!("{}/24", w.primary_ip()));
    assert_eq!(w.network_status(&pod).len(), 2);
    w.cni("DEL", &pod, &conf).ok();
    w.assert_nothing_left();
}

/// The default-network annotation and the networks annotation together: eth0 from the
/// override, net1 from the list; DEL removes both.
#[test]
fn default_network_override_with_additional_networks() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let (p1, p2) = (w.veth(), w.veth());
    w.add_nad("kube-system", "alt-net", &w.macvlan("0.3.1", &p1, "10.77.0.0/24", "10.77.0.10", "10.77.0.20"));
    w.add_nad("default", "extra", &w.macvlan("0.3.1", &p2, "10.93.0.0/24", "10.93.0.10", "10.93.0.20"));
    let pod = w.add_pod("both", &[("v1.multus-cni.io/default-network", "alt-net"), (NETWORKS, "extra")]);
    let conf = w.conf(json!({}));
    w.cni("ADD", &pod, &conf).ok();
    assert_eq!(w.netns.expect_link("eth0").addrs, vec!["10.77.0.10/24"]);
    assert_eq!(w.netns.expect_link("net1").addrs, vec!["10.93.0.10/24"]);
    let names: Vec<Value> = w.network_status(&pod).iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, vec![json!("kube-system/alt-net"), json!("default/extra")]);
    w.cni("DEL", &pod, &conf).ok();
    w.assert_nothing_left();
}

/// A dual-stack attachment: both addresses in the status (bare) and in the event.
#[test]
fn dual_stack_attachment_status_and_event() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let parent = w.veth();
    let config = json!({
        "cniVersion": "1.0.0",
        "type": "macvlan",
        "master": parent,
        "mode": "bridge",
        "ipam": {
            "type": "host-local",
            "dataDir": w.p("ipam"),
            "ranges": [[{"subnet": "10.94.0.0/24", "rangeStart": "10.94.0.10"}], [{"subnet": "fd00:94::/64", "rangeStart": "fd00:94::10"}]]
        }
    });
    w.add_nad("default", "dual", &config);
    let pod = w.add_pod("dual", &[(NETWORKS, "dual")]);
    w.cni("ADD", &pod, &w.conf(json!({}))).ok();
    let status = w.network_status(&pod);
    assert_eq!(status[1]["ips"], json!(["10.94.0.10", "fd00:94::10"]), "{status:?}");
    let events = w.events(&pod);
    assert!(events.iter().any(|e| e.2 == "Add net1 [10.94.0.10/24 fd00:94::10/64] from default/dual"), "{events:?}");
    w.cni("DEL", &pod, &w.conf(json!({}))).ok();
    w.assert_nothing_left();
}

/// A `default-route` gateway that is not reachable on net1: the route cannot be added,
/// the ADD fails and everything is rolled back.
#[test]
fn unreachable_default_route_gateway_rolls_back() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let master = w.veth();
    w.add_nad("default", "macvlan-conf", &macvlan_conf(&master));
    let pod = w.add_pod(
        "offlink",
        &[(NETWORKS, r#"[{"name":"macvlan-conf","ips":["10.1.1.101/24"],"default-route":["10.99.99.1"]}]"#)],
    );
    let (code, msg) = w.cni("ADD", &pod, &w.conf(json!({}))).err();
    assert!(msg.contains("10.99.99.1") && msg.contains("net1"), "{code}: {msg}");
    w.assert_nothing_left();
    assert_eq!(w.network_status_raw(&pod), None);
}

/// DEL without caches, after the pod's NAD was deleted: the primary is still torn down,
/// and DEL records no event (events are ADD's business).
#[test]
fn del_without_cache_and_nad_gone_tears_down_primary_without_events() {
    require_link_type!("macvlan");
    let (w, _, pod) = one_nad_world("orphan");
    let conf = w.conf(json!({}));
    w.cni("ADD", &pod, &conf).ok();
    let events_after_add = w.api.events().len();
    std::fs::remove_dir_all(w.path("multus")).unwrap();
    // The NAD disappears: replace the API with one that only knows the pod.
    let fresh = Api::start_at(w.path("kubeconfig"), "t".into());
    fresh.standin.add_pod(w.api.pod("default", "orphan").unwrap());
    w.cni("DEL", &pod, &conf).ok();
    assert!(w.netns.pod_links().iter().all(|l| l.name != "eth0"), "{:?}", w.netns.pod_links());
    assert!(w.leases().iter().all(|l| !l.starts_with(PRIMARY)), "{:?}", w.leases());
    assert_eq!(fresh.events(), Vec::<Value>::new(), "no events on DEL");
    assert_eq!(w.api.events().len(), events_after_add);
}

/// Annotations that cannot work fail the ADD before any delegate runs or any NAD is
/// fetched, with a message that quotes the culprit; nothing is left behind.
#[test]
fn bad_annotations_fail_before_anything_runs() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let parent = w.veth();
    w.add_nad("default", "a-conf", &w.macvlan("0.3.1", &parent, "10.0.4.0/24", "10.0.4.70", "10.0.4.80"));
    w.add_nad("default", "b-conf", &w.macvlan("0.3.1", &parent, "10.0.6.0/24", "10.0.6.70", "10.0.6.80"));
    let cases: &[(&str, &str, &str, bool)] = &[
        // (annotation key, value, text the message must contain, NAD GETs allowed)
        (NETWORKS, "Bad_Name", "Bad_Name", false),
        (NETWORKS, "a-conf@has space", "has space", false),
        (NETWORKS, "a-conf@averyveryverylongname", "averyveryverylongname", false),
        (NETWORKS, r#"{"name":"a-conf"}"#, "list", false),
        (NETWORKS, r#"[{"name":"a-conf","ips":["300.1.1.1/24"]}]"#, "300.1.1.1", false),
        (NETWORKS, r#"[{"name":"a-conf","mac":"not-a-mac"}]"#, "not-a-mac", false),
        (NETWORKS, "a-conf@eth0", "eth0", true),
        (NETWORKS, "a-conf@net2, b-conf", "net2", true),
        ("v1.multus-cni.io/default-network", "a-conf, b-conf", "a-conf, b-conf", false),
        ("v1.multus-cni.io/default-network", "", "empty", false),
    ];
    for (i, (key, value, needle, nad_gets)) in cases.iter().enumerate() {
        let pod = w.add_pod(&format!("bad{i}"), &[(key, value)]);
        w.api.clear_requests();
        let (code, msg) = w.cni("ADD", &pod, &w.conf(json!({}))).err();
        assert_eq!(code, 7, "{key}={value}: {msg}");
        assert!(msg.contains(needle), "{key}={value}: the message should quote {needle:?}: {msg}");
        w.assert_nothing_left();
        if !nad_gets {
            let lines = w.request_lines();
            assert!(!lines.iter().any(|l| l.contains("network-attachment")), "{key}={value}: {lines:?}");
        }
        assert!(w.api.requests().iter().all(|r| r.method == "GET" || r.path.ends_with("/events")));
        assert_eq!(w.network_status_raw(&pod), None);
    }
}

/// More of the grammar, with effects observed in the pod: spaces around every piece of
/// the comma form, the legacy `interfaceRequest` key, `cni-args` reaching host-local
/// (`args.cni.ips`), and the `ips` capability of host-local.
#[test]
fn grammar_details_reach_the_plugins() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let parent = w.veth();
    w.add_nad("default", "a-conf", &w.macvlan("0.3.1", &parent, "10.0.4.0/24", "10.0.4.70", "10.0.4.80"));
    let mut with_ips = w.macvlan("0.3.1", &parent, "10.0.6.0/24", "10.0.6.70", "10.0.6.80");
    with_ips["capabilities"] = json!({"ips": true});
    w.add_nad("default", "b-conf", &with_ips);
    let conf = w.conf(json!({}));
    let cases: &[(&str, &[(&str, &str)])] = &[
        (" default / a-conf @ data9 ", &[("data9", "10.0.4.")]),
        (r#"[{"name":"a-conf","interfaceRequest":"legacy1"}]"#, &[("legacy1", "10.0.4.")]),
        (r#"[{"name":"a-conf","cni-args":{"ips":["10.0.4.77"]}}]"#, &[("net1", "10.0.4.77/24")]),
        (r#"[{"name":"b-conf","ips":["10.0.6.78/24"]}]"#, &[("net1", "10.0.6.78/24")]),
    ];
    for (i, (annotation, want)) in cases.iter().enumerate() {
        let pod = w.add_pod(&format!("grammar{i}"), &[(NETWORKS, annotation)]);
        w.cni("ADD", &pod, &conf).ok();
        for (ifname, addr) in *want {
            let link = w.netns.expect_link(ifname);
            assert!(link.addrs.iter().any(|a| a.starts_with(addr)), "{annotation}: {ifname} has {:?}", link.addrs);
        }
        w.cni("DEL", &pod, &conf).ok();
        w.assert_nothing_left();
    }
}

/// `writeLegacyNetworksStatus` also writes the deprecated key the seed's older Multus
/// wrote (SEEDS §E), with the same value; by default only the current key is written.
#[test]
fn legacy_networks_status_key_is_opt_in() {
    require_link_type!("macvlan");
    let (w, annotation, pod) = one_nad_world("legacy");
    let conf = w.conf(json!({"writeLegacyNetworksStatus": true}));
    w.cni("ADD", &pod, &conf).ok();
    let anns = w.api.pod("default", "legacy").unwrap()["metadata"]["annotations"].clone();
    assert_eq!(anns["k8s.v1.cni.cncf.io/networks-status"], anns["k8s.v1.cni.cncf.io/network-status"]);
    assert!(anns["k8s.v1.cni.cncf.io/network-status"].is_string());
    w.cni("DEL", &pod, &conf).ok();

    let pod2 = w.add_pod("modern", &[(NETWORKS, &annotation)]);
    w.cni("ADD", &pod2, &w.conf(json!({}))).ok();
    let anns = w.api.pod("default", "modern").unwrap()["metadata"]["annotations"].clone();
    assert!(anns.get("k8s.v1.cni.cncf.io/networks-status").is_none(), "{anns}");
    w.cni("DEL", &pod2, &w.conf(json!({}))).ok();
    w.assert_nothing_left();
}

/// A NAD whose config names its network differently: the status and events use the
/// NAD (`ns/nad`), the results cache the config's own name (as libcni keys it).
#[test]
fn nad_with_its_own_network_name() {
    require_link_type!("macvlan");
    let mut w = World::new();
    let parent = w.veth();
    let mut config = w.macvlan("1.0.0", &parent, "10.95.0.0/24", "10.95.0.10", "10.95.0.20");
    config["name"] = "inner-name".into();
    w.add_nad("default", "outer-nad", &config);
    let pod = w.add_pod("named-inside", &[(NETWORKS, "outer-nad")]);
    let conf = w.conf(json!({}));
    w.cni("ADD", &pod, &conf).ok();
    assert_eq!(w.network_status(&pod)[1]["name"], "default/outer-nad");
    assert!(w.events(&pod).iter().any(|e| e.2.ends_with("from default/outer-nad")));
    let caches = w.cache_files();
    assert!(caches.iter().any(|c| c.ends_with(&format!("results/inner-name-{}-net1", pod.container_id))), "{caches:?}");
    assert!(w.leases().iter().all(|l| l.starts_with(PRIMARY) || l.starts_with("inner-name/")), "{:?}", w.leases());
    w.cni("CHECK", &pod, &conf).ok();
    w.cni("DEL", &pod, &conf).ok();
    w.assert_nothing_left();
}

/// With every API request taking 1 s, an ADD with 3 NADs spends 3 round trips on the
/// API (pod GET; the 3 NAD GETs at once; the status patch with the events at once), not
/// the 6 or more that fetching the NADs one by one and the events after would take.
#[test]
fn api_time_of_an_add_is_three_round_trips() {
    use std::time::Duration;
    require_link_type!("macvlan");
    // Long enough that the margin to a fourth round trip (1 s) dwarfs a loaded CI's noise.
    let rtt = Duration::from_millis(1000);
    let mut w = World::new();
    let annotation = nads(&mut w, 3);
    let conf = w.conf(json!({}));
    let ns2 = w.extra_netns();
    let base = w.add_pod("fast", &[(NETWORKS, &annotation)]);
    let baseline = w.cni_in("ADD", &base, &ns2, &conf);
    baseline.ok();
    w.cni_in("DEL", &base, &ns2, &conf).ok();
    w.api.set_latency(rtt);
    let pod = w.add_pod("slow-api", &[(NETWORKS, &annotation)]);
    let slow = w.cni("ADD", &pod, &conf);
    slow.ok();
    w.api.set_latency(Duration::ZERO);
    let api_time = slow.elapsed.saturating_sub(baseline.elapsed);
    eprintln!("ADD with 3 NADs: {:?} without latency, {:?} with {rtt:?} per request", baseline.elapsed, slow.elapsed);
    assert!(slow.elapsed >= rtt * 3, "{:?}", slow.elapsed);
    assert!(api_time < rtt * 4, "API time {api_time:?}: more than 3 round trips of {rtt:?}");
    w.cni("DEL", &pod, &conf).ok();
    w.assert_nothing_left();
}
