//! The node agent (issue 14): the plugin reads the NAD mirror first (hit, miss → GET,
//! stale heartbeat → GET), the real `multus agent` keeps the mirror current through
//! watch, delete, and a 410 Gone relist, a killed agent never leaves a torn entry, the
//! metrics scrape carries the plugin's spool records, and the node-wide brake holds a
//! burst of 100 ADDs to its cap. Runs the real binary against the API stand-in.

mod support;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;

const WAIT: Duration = Duration::from_secs(30);
const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn nad_json(ns: &str, name: &str, config: &Value) -> Value {
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
           "spec": {"config": config.to_string()}})
}

/// ADD config with the pod's annotations passed by the runtime and the mirror configured.
fn conf(dir: &TestDir, api: &Api, mirror: &Path, extra: Value) -> Value {
    let mut c = dir.multus_conf(
        "1.0.0",
        vec![dir.fake("primary", "1.0.0", json!({"ip": "10.99.0.2/24"}))],
        json!({
            "kubeconfig": api.kubeconfig,
            "nadMirrorDir": mirror,
            "capabilities": {"io.kubernetes.cri.pod-annotations": true},
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {NETWORKS: "net-a"}},
            "apiTimeoutSeconds": 60,
        }),
    );
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

struct World {
    dir: TestDir,
    api: Api,
    mirror: PathBuf,
    ns: Netns,
}

impl World {
    fn new() -> World {
        let dir = TestDir::new().with_fake();
        let api = Api::start(&dir);
        api.add_pod("default", "pod-1", "uid-1", json!({NETWORKS: "net-a"}));
        api.standin.add_nad(nad_json("default", "net-a", &dir.fake("net-a", "1.0.0", json!({"ip": "10.99.1.2/24"}))));
        let mirror = dir.tmp.path().join("mirror");
        std::fs::create_dir(&mirror).unwrap();
        World { dir, api, mirror, ns: Netns::new() }
    }

    fn heartbeat(&self, written_at_ms: u64) {
        std::fs::write(self.mirror.join("heartbeat.json"), json!({"writtenAtMs": written_at_ms}).to_string()).unwrap();
    }

    /// A mirror entry for net-a that differs from the API's (its address), so the call
    /// log tells which one the plugin used.
    fn mirror_entry(&self) {
        let nad = nad_json("default", "net-a", &self.dir.fake("net-a", "1.0.0", json!({"ip": "10.99.7.2/24"})));
        std::fs::write(self.mirror.join("default_net-a.json"), nad.to_string()).unwrap();
    }

    fn add(&self, extra: Value) -> Outcome {
        self.api.standin.clear_requests();
        let out = Invocation::new("ADD", &format!("agent-{}", unique("m")), &self.ns.path).run_json(&conf(
            &self.dir,
            &self.api,
            &self.mirror,
            extra,
        ));
        out.ok();
        out
    }

    /// The address net-a's delegate was given in the last ADD.
    fn net_a_ip(&self) -> String {
        let calls = self.dir.calls();
        let call = calls.iter().rev().find(|c| c["command"] == "ADD" && c["name"] == "net-a").expect("net-a ADD");
        call["stdin"]["fake"]["ip"].as_str().unwrap().to_string()
    }

    /// The plugin's API requests (the agent's cluster-wide LIST/WATCH are not under /namespaces/).
    fn plugin_requests(&self) -> Vec<String> {
        self.api.request_lines().into_iter().filter(|l| l.contains("/namespaces/")).collect()
    }
}

#[test]
fn fresh_mirror_hit_needs_no_get_only_the_status_write() {
    require_root!();
    let w = World::new();
    w.mirror_entry();
    w.heartbeat(now_ms());
    // A slow API: requests sent one after another arrive at least this far apart.
    const LATENCY: Duration = Duration::from_millis(400);
    w.api.standin.set_latency(LATENCY);
    w.api.standin.clear_connections();
    w.add(json!({}));
    assert_eq!(w.net_a_ip(), "10.99.7.2/24", "the mirror's NAD was used");
    let lines = w.plugin_requests();
    assert!(!lines.iter().any(|l| l.starts_with("GET")), "no GET at all: {lines:?}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("PATCH")).count(), 1, "{lines:?}");
    // The connection was opened while the delegates ran; the status write and its
    // events then went out together on it: one blocking round trip, one handshake.
    assert_eq!(w.api.standin.connections().len(), 1, "{:?}", w.api.standin.connections());
    let arrivals: Vec<u64> =
        w.api.standin.requests().iter().filter(|r| r.path.contains("/namespaces/")).map(|r| r.arrived_us).collect();
    assert!(arrivals.len() >= 2, "the status write and at least one event: {lines:?}");
    let spread = arrivals.iter().max().unwrap() - arrivals.iter().min().unwrap();
    assert!(
        spread < LATENCY.as_micros() as u64 / 2,
        "the status write and the events were sent together, not one after another ({spread} us apart): {lines:?}"
    );
}

#[test]
fn mirror_miss_falls_back_to_get() {
    require_root!();
    let w = World::new();
    w.heartbeat(now_ms());
    w.add(json!({}));
    assert_eq!(w.net_a_ip(), "10.99.1.2/24", "the API's NAD was used");
    let lines = w.plugin_requests();
    assert!(
        lines.iter().any(|l| l.starts_with("GET") && l.ends_with("/network-attachment-definitions/net-a")),
        "{lines:?}"
    );
}

#[test]
fn stale_or_missing_heartbeat_or_bad_entry_falls_back_to_get() {
    require_root!();
    let w = World::new();
    w.mirror_entry();
    // No heartbeat at all (no agent).
    w.add(json!({}));
    assert_eq!(w.net_a_ip(), "10.99.1.2/24");
    // An old heartbeat: the agent stopped 5 minutes ago.
    w.heartbeat(now_ms() - 300_000);
    w.add(json!({}));
    assert_eq!(w.net_a_ip(), "10.99.1.2/24");
    // Fresh, but with a shorter max age than its age.
    w.heartbeat(now_ms() - 5_000);
    w.add(json!({"nadMirrorMaxAgeSeconds": 1}));
    assert_eq!(w.net_a_ip(), "10.99.1.2/24");
    // Fresh heartbeat, but a torn/garbage entry, or a symlink instead of a file.
    w.heartbeat(now_ms());
    std::fs::write(w.mirror.join("default_net-a.json"), "{\"apiVersion\":").unwrap();
    w.add(json!({}));
    assert_eq!(w.net_a_ip(), "10.99.1.2/24");
    std::fs::remove_file(w.mirror.join("default_net-a.json")).unwrap();
    let elsewhere = w.dir.tmp.path().join("elsewhere.json");
    let nad = nad_json("default", "net-a", &w.dir.fake("net-a", "1.0.0", json!({"ip": "10.99.9.2/24"})));
    std::fs::write(&elsewhere, nad.to_string()).unwrap();
    std::os::unix::fs::symlink(&elsewhere, w.mirror.join("default_net-a.json")).unwrap();
    w.add(json!({}));
    assert_eq!(w.net_a_ip(), "10.99.1.2/24", "a symlinked entry is not followed");
}

/// The real agent, killed (SIGKILL) when dropped.
struct Agent(Child);

impl Agent {
    fn start(api: &Api, mirror: &Path, extra: &[&str]) -> Agent {
        let child = Command::new(multus_bin())
            .arg("agent")
            .arg("--kubeconfig")
            .arg(&api.kubeconfig)
            .arg("--nad-mirror-dir")
            .arg(mirror)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("multus agent");
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn entries(mirror: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(mirror)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.') && n != "heartbeat.json")
        .collect();
    names.sort();
    names
}

fn entry_ip(mirror: &Path, file: &str) -> Option<String> {
    let nad: Value = serde_json::from_slice(&std::fs::read(mirror.join(file)).ok()?).ok()?;
    let config: Value = serde_json::from_str(nad["spec"]["config"].as_str()?).ok()?;
    config["fake"]["ip"].as_str().map(String::from)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

#[test]
fn agent_mirrors_watches_relists_after_410_and_serves_metrics() {
    require_root!();
    let w = World::new();
    for i in 0..20 {
        w.api.add_nad("other", &format!("n{i}"), &json!({"type": "fake_delegate"}));
    }
    let port = free_port();
    let spool = w.dir.tmp.path().join("spool");
    let addr = format!("127.0.0.1:{port}");
    let spool_arg = spool.display().to_string();
    let _agent = Agent::start(&w.api, &w.mirror, &["--metrics-bind-address", &addr, "--spool-dir", &spool_arg]);
    assert!(wait_for(WAIT, || w.mirror.join("heartbeat.json").exists()), "the agent synced");
    assert_eq!(entries(&w.mirror).len(), 21, "{:?}", entries(&w.mirror));

    // ADD with the runtime's annotations and a fresh mirror: no GET, one status write.
    w.add(json!({"metricsSpoolDir": spool}));
    assert_eq!(w.net_a_ip(), "10.99.1.2/24");
    let lines = w.plugin_requests();
    assert!(!lines.iter().any(|l| l.starts_with("GET")), "{lines:?}");

    // A change reaches the mirror; a deletion removes the entry.
    w.api.standin.add_nad(nad_json("default", "net-a", &w.dir.fake("net-a", "1.0.0", json!({"ip": "10.99.2.2/24"}))));
    assert!(wait_for(WAIT, || entry_ip(&w.mirror, "default_net-a.json").as_deref() == Some("10.99.2.2/24")));
    w.api.standin.remove_nad("other", "n3");
    assert!(wait_for(WAIT, || !w.mirror.join("other_n3.json").exists()));

    // History compacted: the next watch gets 410 Gone, the agent relists and catches up,
    // including a deletion it never saw as an event.
    let lists_before =
        w.api.request_lines().iter().filter(|l| l.ends_with("/v1/network-attachment-definitions")).count();
    w.api.standin.compact_watch_history();
    w.api.standin.remove_nad("other", "n4");
    w.api.standin.compact_watch_history();
    w.api.add_nad("default", "net-c", &json!({"type": "fake_delegate"}));
    // (net-c is written during the relist, n4 removed when it completes)
    let caught_up = || w.mirror.join("default_net-c.json").exists() && !w.mirror.join("other_n4.json").exists();
    assert!(wait_for(WAIT, caught_up), "{:?}", entries(&w.mirror));
    let lists_after =
        w.api.request_lines().iter().filter(|l| l.ends_with("/v1/network-attachment-definitions")).count();
    assert!(lists_after > lists_before, "a relist happened ({lists_before} → {lists_after})");
    assert!(wait_for(WAIT, || w.mirror.join("heartbeat.json").exists()), "healthy again after the relist");
    w.add(json!({"metricsSpoolDir": spool}));
    assert_eq!(w.net_a_ip(), "10.99.2.2/24", "the ADD saw the change through the mirror");

    let text = scrape(port);
    for expected in [
        "multus_invocations_total{verb=\"ADD\",code=\"0\"} 2",
        "multus_nad_mirror_lookups_total{result=\"hit\"} 2",
        "multus_nad_mirror_watch_healthy 1",
        "multus_nad_mirror_entries 20",
        "multus_invocation_seconds_count{verb=\"ADD\"} 2",
        "multus_delegate_seconds_count{type=\"fake_delegate\"} 4",
        "multus_spool_records_total 2",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(text.contains("multus_nad_mirror_watch_restarts_total "), "{text}");
    assert!(!text.contains("multus_nad_mirror_watch_restarts_total 0"), "the 410 counted as a restart\n{text}");
    assert!(std::fs::read_dir(&spool).unwrap().next().is_none(), "the scrape drained the spool");
}

#[test]
fn an_agent_killed_at_any_moment_leaves_no_torn_entry() {
    require_root!();
    let dir = TestDir::new();
    let api = Api::start(&dir);
    let big = "x".repeat(4 * 1024);
    for i in 0..200 {
        api.add_nad("default", &format!("big{i}"), &json!({"type": "fake_delegate", "pad": big}));
    }
    let mirror = dir.tmp.path().join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    let mut checked = 0;
    for round in 0..12u64 {
        let agent = Agent::start(&api, &mirror, &[]);
        std::thread::sleep(Duration::from_millis(30 + round * 60));
        drop(agent); // SIGKILL, wherever it is
        for file in entries(&mirror) {
            let nad: Value = serde_json::from_slice(&std::fs::read(mirror.join(&file)).unwrap())
                .unwrap_or_else(|e| panic!("round {round}: {file} is torn: {e}"));
            assert_eq!(format!("default_{}.json", nad["metadata"]["name"].as_str().unwrap()), file);
            checked += 1;
        }
    }
    assert!(checked > 0, "some rounds got far enough to write entries");
    eprintln!("{checked} entries checked after 12 kills");
}

#[test]
fn a_burst_of_100_adds_stays_under_the_node_wide_brake() {
    require_root!();
    let w = World::new();
    w.api.standin.set_latency(Duration::from_millis(10));
    const CAP: usize = 3;
    let conf = dir_conf_without_runtime(&w, CAP);
    let children: Vec<_> = (0..100)
        .map(|i| {
            let cid = format!("burst-{i}-{}", unique("b"));
            let env = Invocation::new("ADD", &cid, &w.ns.path).env;
            let out_dir = w.dir.tmp.path().join(format!("out{i}"));
            std::fs::create_dir(&out_dir).unwrap();
            (spawn_plugin(&env, conf.to_string().as_bytes(), &out_dir), out_dir)
        })
        .collect();
    let mut ok = 0;
    for (mut child, _) in children {
        if child.wait().unwrap().success() {
            ok += 1;
        }
    }
    assert_eq!(ok, 100, "every ADD of the burst succeeded");
    // The brake holds a slot until the request's answer has come; a request given up
    // while in flight (an event past its bounded wait) keeps its slot until the plugin
    // exits, when its connection closes too. An unbraked burst of 100 shows dozens.
    let max = w.api.standin.max_in_flight();
    assert!((1..=CAP).contains(&max), "at most {CAP} API requests in flight, saw {max}");
    eprintln!("burst of 100: max in flight {max} (cap {CAP}), {} API requests", w.api.request_lines().len());
}

/// Without runtime annotations: every ADD GETs the pod and the NAD and writes the status.
fn dir_conf_without_runtime(w: &World, cap: usize) -> Value {
    let mut c = conf(&w.dir, &w.api, &w.mirror, json!({"maxNodeApiRequests": cap}));
    let m = c.as_object_mut().unwrap();
    m.remove("capabilities");
    m.remove("runtimeConfig");
    m.remove("nadMirrorDir");
    c
}
