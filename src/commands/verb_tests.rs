//! The verbs in-process: a real [`Invocation`] built from the fakes (delegates, netns) and,
//! for the API, the stand-in — no root, no links, no plugin binaries. What the root
//! end-to-end suites prove with real plugins (rollback order, code pass-through, DEL
//! fallbacks, the API request sequence) is proven here in milliseconds.

use super::{Invocation, add, check, del, gc, status};
use crate::cache;
use crate::cni::{CniArgs, CniEnv, Command};
use crate::config::MultusConf;
use crate::error::CniError;
use crate::testing::{FakeExec, FakeNetns};
use kube_standin::StandIn;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const NETNS: &str = "/var/run/netns/verb-test-pod";
const CID: &str = "cid-verbs";

/// A temporary cniDir and the config of three static delegates (eth0, net1, net2).
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World { dir: tempfile::tempdir().expect("tempdir") }
    }

    fn cni_dir(&self) -> PathBuf {
        self.dir.path().join("cni")
    }

    fn conf(&self, extra: Value) -> Value {
        let delegate = |name: &str, plugin: &str| json!({"cniVersion": "1.1.0", "name": name, "type": plugin});
        let mut conf = json!({
            "cniVersion": "1.1.0", "name": "multus-cni-network", "type": "multus",
            "cniDir": self.cni_dir(),
            "delegates": [delegate("primary-net", "ptp"), delegate("second-net", "macvlan"), delegate("third-net", "bridge")],
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            conf[k] = v;
        }
        conf
    }

    /// One invocation with fresh fakes; the pod's netns exists and is empty.
    fn invocation(&self, command: Command, conf: &Value, cid: &str) -> Invocation<FakeExec, FakeNetns> {
        let netns = FakeNetns::new();
        netns.add_netns(NETNS);
        let args =
            format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID=uid-1");
        let env = CniEnv {
            command,
            container_id: cid.into(),
            netns: NETNS.into(),
            ifname: "eth0".into(),
            args: CniArgs::parse(&args).expect("CNI_ARGS"),
            path: vec![],
        };
        let conf = MultusConf::parse(&serde_json::to_vec(conf).expect("conf")).expect("conf parses");
        Invocation { conf, env, exec: FakeExec::default(), netns }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

/// `(command, plugin, ifname)` of every delegate call, in order.
fn calls(inv: &Invocation<FakeExec, FakeNetns>) -> Vec<(Command, String, String)> {
    inv.exec.calls().into_iter().map(|c| (c.command, c.plugin, c.ifname)).collect()
}

fn call(command: Command, plugin: &str, ifname: &str) -> (Command, String, String) {
    (command, plugin.into(), ifname.into())
}

const PLUGINS: [(&str, &str); 3] = [("ptp", "eth0"), ("macvlan", "net1"), ("bridge", "net2")];

fn scratch_cache_exists(dir: &Path, cid: &str) -> bool {
    dir.join(cid).exists()
}

#[test]
fn add_runs_every_delegate_in_order_caches_them_and_prints_the_primary_result() {
    let w = World::new();
    let inv = w.invocation(Command::Add, &w.conf(json!({})), CID);
    let printed = block_on(add::add(&inv)).expect("ADD");
    let expected: Vec<_> = PLUGINS.iter().map(|(p, i)| call(Command::Add, p, i)).collect();
    assert_eq!(calls(&inv), expected);
    assert_eq!(printed["cniVersion"], "1.1.0");
    assert_eq!(printed["interfaces"][0]["name"], "eth0", "the primary's result: {printed}");
    assert!(scratch_cache_exists(&w.cni_dir(), CID));
    for (_, ifname) in PLUGINS {
        let net = ["primary-net", "second-net", "third-net"][PLUGINS.iter().position(|p| p.1 == ifname).unwrap()];
        assert!(cache::load_result(&w.cni_dir(), net, CID, ifname).is_some(), "results cache of {ifname}");
    }
}

#[test]
fn add_failure_at_each_position_rolls_back_in_reverse_and_passes_the_code_through() {
    for pos in 0..PLUGINS.len() {
        let w = World::new();
        let inv = w.invocation(Command::Add, &w.conf(json!({})), CID);
        let (plugin, _) = PLUGINS[pos];
        inv.exec.answer(plugin, Command::Add, Err(CniError::new(11, format!("{plugin} is busy"))));
        let err = block_on(add::add(&inv)).expect_err("ADD fails");
        assert_eq!(err.code, 11, "the delegate's own code at {pos}: {}", err.msg);
        assert!(err.msg.contains(&format!("{plugin} is busy")), "{}", err.msg);
        let mut expected: Vec<_> = PLUGINS[..=pos].iter().map(|(p, i)| call(Command::Add, p, i)).collect();
        expected.extend(PLUGINS[..=pos].iter().rev().map(|(p, i)| call(Command::Del, p, i)));
        assert_eq!(calls(&inv), expected, "rollback at {pos}");
        assert!(!scratch_cache_exists(&w.cni_dir(), CID), "no scratch cache left at {pos}");
        assert!(cache::all_results(&w.cni_dir()).is_empty(), "no results cache left at {pos}");
    }
}

#[test]
fn add_refuses_an_interface_that_already_exists_before_running_anything() {
    let w = World::new();
    let inv = w.invocation(Command::Add, &w.conf(json!({})), CID);
    inv.netns.add_link(
        NETNS,
        crate::netns::LinkInfo {
            name: "net1".into(),
            index: 2,
            mac: None,
            mtu: None,
            addresses: vec![],
            up: true,
            promiscuous: false,
        },
    );
    let err = block_on(add::add(&inv)).expect_err("ADD fails");
    assert_eq!(err.code, crate::error::code::NETNS, "{}", err.msg);
    assert!(calls(&inv).is_empty(), "nothing ran: {:?}", calls(&inv));
}

#[test]
fn del_replays_the_cache_in_reverse_with_each_cached_result() {
    let w = World::new();
    let conf = w.conf(json!({}));
    block_on(add::add(&w.invocation(Command::Add, &conf, CID))).expect("ADD");
    let inv = w.invocation(Command::Del, &conf, CID);
    block_on(del::del(&inv)).expect("DEL");
    let expected: Vec<_> = PLUGINS.iter().rev().map(|(p, i)| call(Command::Del, p, i)).collect();
    assert_eq!(calls(&inv), expected);
    for c in inv.exec.calls() {
        assert_eq!(c.stdin["prevResult"]["interfaces"][0]["name"], c.ifname.as_str(), "cached prevResult");
    }
    assert!(!scratch_cache_exists(&w.cni_dir(), CID));
    assert!(cache::all_results(&w.cni_dir()).is_empty());
}

#[test]
fn del_without_a_scratch_cache_uses_the_results_cache() {
    let w = World::new();
    let conf = w.conf(json!({}));
    block_on(add::add(&w.invocation(Command::Add, &conf, CID))).expect("ADD");
    cache::remove_delegates(&w.cni_dir(), CID).expect("scratch cache removed");
    let inv = w.invocation(Command::Del, &conf, CID);
    block_on(del::del(&inv)).expect("DEL");
    let expected: Vec<_> = PLUGINS.iter().rev().map(|(p, i)| call(Command::Del, p, i)).collect();
    assert_eq!(calls(&inv), expected);
    assert!(cache::all_results(&w.cni_dir()).is_empty());
}

#[test]
fn del_without_any_cache_deletes_the_static_delegates_and_tolerates_their_failures() {
    let w = World::new();
    let inv = w.invocation(Command::Del, &w.conf(json!({})), CID);
    inv.exec.answer("macvlan", Command::Del, Err(CniError::new(100, "nothing to delete")));
    block_on(del::del(&inv)).expect("a guessed attachment's failure is logged, not returned");
    let expected: Vec<_> = PLUGINS.iter().rev().map(|(p, i)| call(Command::Del, p, i)).collect();
    assert_eq!(calls(&inv), expected);
}

#[test]
fn del_of_a_cached_attachment_returns_its_failure_after_trying_all() {
    let w = World::new();
    let conf = w.conf(json!({}));
    block_on(add::add(&w.invocation(Command::Add, &conf, CID))).expect("ADD");
    let inv = w.invocation(Command::Del, &conf, CID);
    inv.exec.answer("macvlan", Command::Del, Err(CniError::new(100, "device busy")));
    let err = block_on(del::del(&inv)).expect_err("DEL fails");
    assert!(err.msg.contains("device busy"), "{}", err.msg);
    assert_eq!(calls(&inv).len(), 3, "every delegate was tried: {:?}", calls(&inv));
}

#[test]
fn check_checks_every_cached_attachment_with_its_result() {
    let w = World::new();
    let conf = w.conf(json!({}));
    block_on(add::add(&w.invocation(Command::Add, &conf, CID))).expect("ADD");
    let inv = w.invocation(Command::Check, &conf, CID);
    block_on(check::check(&inv)).expect("CHECK");
    let expected: Vec<_> = PLUGINS.iter().map(|(p, i)| call(Command::Check, p, i)).collect();
    assert_eq!(calls(&inv), expected);
    assert!(inv.exec.calls().iter().all(|c| c.stdin["prevResult"].is_object()));

    let failing = w.invocation(Command::Check, &conf, CID);
    failing.exec.answer("bridge", Command::Check, Err(CniError::new(100, "bridge lost its address")));
    let err = block_on(check::check(&failing)).expect_err("CHECK fails");
    assert!(err.msg.contains("net2") && err.msg.contains("bridge lost its address"), "{}", err.msg);
}

#[test]
fn status_needs_the_readiness_file_and_passes_the_primary_code_through() {
    let w = World::new();
    let ready = w.dir.path().join("ready");
    let conf = w.conf(json!({"readinessindicatorfile": ready}));
    let inv = w.invocation(Command::Status, &conf, CID);
    let err = block_on(status::status(&inv)).expect_err("not ready");
    assert_eq!(err.code, 50, "{}", err.msg);
    assert!(calls(&inv).is_empty());

    std::fs::write(&ready, b"").expect("readiness file");
    let inv = w.invocation(Command::Status, &conf, CID);
    block_on(status::status(&inv)).expect("STATUS");
    assert_eq!(calls(&inv), vec![call(Command::Status, "ptp", "")]);

    let degraded = w.invocation(Command::Status, &conf, CID);
    degraded.exec.answer("ptp", Command::Status, Err(CniError::new(51, "degraded")));
    assert_eq!(block_on(status::status(&degraded)).expect_err("degraded").code, 51);
}

#[test]
fn gc_deletes_containers_the_runtime_no_longer_knows_then_forwards_to_every_network() {
    let w = World::new();
    let conf = w.conf(json!({}));
    block_on(add::add(&w.invocation(Command::Add, &conf, "cid-stale"))).expect("ADD stale");
    block_on(add::add(&w.invocation(Command::Add, &conf, "cid-live"))).expect("ADD live");
    let valid = json!([{"containerID": "cid-live", "ifname": "eth0"}]);
    let inv = w.invocation(Command::Gc, &w.conf(json!({"cni.dev/valid-attachments": valid})), CID);
    block_on(gc::gc(&inv)).expect("GC");
    let mut expected: Vec<_> = PLUGINS.iter().rev().map(|(p, i)| call(Command::Del, p, i)).collect();
    // The primary with the runtime's list, then each secondary network the caches
    // record with the live container's own attachment of it.
    expected.extend([call(Command::Gc, "ptp", ""), call(Command::Gc, "macvlan", ""), call(Command::Gc, "bridge", "")]);
    assert_eq!(calls(&inv), expected);
    assert!(!scratch_cache_exists(&w.cni_dir(), "cid-stale"));
    assert!(scratch_cache_exists(&w.cni_dir(), "cid-live"), "the live container is kept");
    let gc_calls: Vec<_> = inv.exec.calls().into_iter().filter(|c| c.command == Command::Gc).collect();
    assert_eq!(gc_calls[0].stdin["cni.dev/valid-attachments"], valid);
    assert_eq!(gc_calls[1].stdin["cni.dev/valid-attachments"], json!([{"containerID": "cid-live", "ifname": "net1"}]));
    assert_eq!(gc_calls[2].stdin["cni.dev/valid-attachments"], json!([{"containerID": "cid-live", "ifname": "net2"}]));
}

/// The stand-in with pod `default/web` selecting `macvlan-conf@data0`.
fn api_world() -> (World, StandIn, Value) {
    let w = World::new();
    let api = StandIn::start();
    api.add_pod(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1",
                     "annotations": {"k8s.v1.cni.cncf.io/networks": "macvlan-conf@data0"}},
        "spec": {"containers": []}
    }));
    api.add_nad(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "macvlan-conf", "namespace": "default"},
        "spec": {"config": "{\"cniVersion\":\"1.1.0\",\"name\":\"macvlan-conf\",\"type\":\"macvlan\"}"}
    }));
    let kubeconfig = w.dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig, "token").expect("kubeconfig");
    let delegate = json!({"cniVersion": "1.1.0", "name": "primary-net", "type": "ptp"});
    let conf = w.conf(json!({"kubeconfig": kubeconfig, "delegates": [delegate]}));
    (w, api, conf)
}

fn request_lines(api: &StandIn) -> Vec<String> {
    api.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect()
}

#[test]
fn add_with_the_api_makes_exactly_the_expected_requests() {
    let (w, api, conf) = api_world();
    let inv = w.invocation(Command::Add, &conf, CID);
    block_on(add::add(&inv)).expect("ADD");
    assert_eq!(calls(&inv), vec![call(Command::Add, "ptp", "eth0"), call(Command::Add, "macvlan", "data0")]);
    let lines = request_lines(&api);
    assert_eq!(
        lines[..2],
        [
            "GET /api/v1/namespaces/default/pods/web".to_string(),
            "GET /apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/macvlan-conf".to_string(),
        ],
        "{lines:?}"
    );
    // The status write and the events go out together: their order is not defined.
    let mut rest = lines[2..].to_vec();
    rest.sort();
    assert_eq!(
        rest,
        [
            "PATCH /api/v1/namespaces/default/pods/web".to_string(),
            "POST /api/v1/namespaces/default/events".to_string(),
            "POST /api/v1/namespaces/default/events".to_string(),
        ],
        "{lines:?}"
    );
    let pod = api.pod("default", "web").expect("pod");
    let status: Value =
        serde_json::from_str(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().unwrap())
            .expect("network-status");
    assert_eq!(status[1]["name"], "default/macvlan-conf");
    assert_eq!(status[1]["interface"], "data0");
}

#[test]
fn add_with_a_missing_nad_records_no_network_found_and_runs_nothing() {
    let (w, api, conf) = api_world();
    let mut pod = api.pod("default", "web").expect("pod");
    pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] = json!("absent-conf");
    api.add_pod(pod);
    let inv = w.invocation(Command::Add, &conf, CID);
    let err = block_on(add::add(&inv)).expect_err("ADD fails");
    assert_eq!(err.code, crate::error::code::KUBERNETES, "{}", err.msg);
    assert!(calls(&inv).is_empty());
    let reasons: Vec<_> = api.events().iter().map(|e| e["reason"].clone()).collect();
    assert_eq!(reasons, vec![json!("NoNetworkFound")]);
}

#[test]
fn add_rolls_back_when_the_status_write_fails() {
    let (w, api, conf) = api_world();
    // 422: refused for good, not retried.
    api.add_fault(kube_standin::Fault::new(kube_standin::FaultAction::Status(422)).method("PATCH"));
    let inv = w.invocation(Command::Add, &conf, CID);
    block_on(add::add(&inv)).expect_err("ADD fails");
    let tail: Vec<_> = calls(&inv).into_iter().skip(2).collect();
    assert_eq!(tail, vec![call(Command::Del, "macvlan", "data0"), call(Command::Del, "ptp", "eth0")]);
    assert!(!scratch_cache_exists(&w.cni_dir(), CID));
}
