//! The CNI 1.1 verbs with fake delegates: STATUS asks the master (and the readiness
//! file); GC deletes every cached container the runtime no longer knows and forwards
//! GC to the master with the runtime's list and to each secondary network with its own.

mod support;

use serde_json::{Value, json};
use support::*;

/// The environment libcni gives STATUS and GC: no container, netns or interface.
fn two_fakes(dir: &TestDir, version: &str, fa: Value, fb: Value) -> Vec<Value> {
    vec![dir.fake("fa", version, fa), dir.fake("fb", version, fb)]
}

#[test]
fn status_asks_only_the_master() {
    require_root!();
    let dir = TestDir::new().with_fake();
    let conf = dir.multus_conf("1.1.0", two_fakes(&dir, "1.1.0", json!({}), json!({})), json!({}));
    assert_eq!(Invocation::node_wide("STATUS").run_json(&conf).ok(), Value::Null);
    assert_eq!(dir.call_summary(), [call("STATUS", "fa", "")]);
    assert!(!dir.cni_dir.exists());
}

#[test]
fn status_passes_the_master_code_through() {
    require_root!();
    let dir = TestDir::new().with_fake();
    let conf = dir.multus_conf("1.1.0", two_fakes(&dir, "1.1.0", json!({"status": "fail50"}), json!({})), json!({}));
    Invocation::node_wide("STATUS").run_json(&conf).err(50);
}

/// Debian's plugins speak 1.0.0 at most: a master below 1.1.0 is not asked.
#[test]
fn status_skips_a_master_older_than_1_1_0() {
    require_root!();
    let dir = TestDir::new().with_fake();
    let conf = dir.multus_conf("1.1.0", two_fakes(&dir, "1.0.0", json!({}), json!({})), json!({}));
    Invocation::node_wide("STATUS").run_json(&conf).ok();
    assert!(dir.calls().is_empty());
}

#[test]
fn status_without_the_readiness_file_is_50() {
    require_root!();
    let dir = TestDir::new().with_fake();
    let ready = dir.tmp.path().join("ready");
    let conf = dir.multus_conf(
        "1.1.0",
        two_fakes(&dir, "1.1.0", json!({}), json!({})),
        json!({"readinessindicatorfile": ready}),
    );
    let e = Invocation::node_wide("STATUS").run_json(&conf).err(50);
    assert!(e["msg"].as_str().unwrap().contains("ready"), "{e}");
    assert!(dir.calls().is_empty());
    std::fs::write(&ready, b"").unwrap();
    Invocation::node_wide("STATUS").run_json(&conf).ok();
}

/// Two pods ADDed; GC keeping only the first DELs the second (in reverse, from its
/// cache) and forwards GC with the runtime's list to the master and with the kept pod's
/// net1 to the secondary network.
#[test]
fn gc_deletes_containers_the_runtime_no_longer_knows() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let conf = dir.multus_conf("1.1.0", two_fakes(&dir, "1.1.0", json!({}), json!({})), json!({}));
    let keep = format!("itest-{}", unique("k"));
    let stale = format!("itest-{}", unique("s"));
    for cid in [&keep, &stale] {
        Invocation::new("ADD", cid, &ns.path).run_json(&conf).ok();
    }
    assert_eq!(dir.cache_files().len(), 6, "{:?}", dir.cache_files());
    std::fs::remove_file(&dir.record).unwrap();

    let mut gc_conf = conf.clone();
    let valid = json!([{"containerID": keep, "ifname": "eth0"}, {"containerID": keep, "ifname": "net1"}]);
    gc_conf["cni.dev/valid-attachments"] = valid.clone();
    Invocation::node_wide("GC").run_json(&gc_conf).ok();

    let calls = dir.calls();
    assert_eq!(
        dir.call_summary_by("containerId"),
        [call("DEL", "fb", &stale), call("DEL", "fa", &stale), call("GC", "fa", ""), call("GC", "fb", "")]
    );
    assert_eq!(calls[0]["ifname"], "net1");
    assert!(calls[0]["stdin"]["prevResult"]["ips"].is_array(), "DEL replays the cached result");
    assert_eq!(calls[2]["stdin"]["cni.dev/valid-attachments"], valid);
    // the secondary network hears of its own attachment of the kept container
    assert_eq!(calls[3]["stdin"]["cni.dev/valid-attachments"], json!([{"containerID": keep, "ifname": "net1"}]));
    let left = dir.cache_files();
    assert!(left.iter().all(|f| f.contains(&keep)), "{left:?}");
    assert_eq!(left.len(), 3, "{left:?}");

    // an empty list: nothing is valid any more
    gc_conf["cni.dev/valid-attachments"] = json!([]);
    Invocation::node_wide("GC").run_json(&gc_conf).ok();
    dir.assert_no_cache_files();
}

/// A stale container whose DEL fails keeps its scratch cache for the next GC.
#[test]
fn gc_keeps_what_it_could_not_delete() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let conf = dir.multus_conf("1.1.0", two_fakes(&dir, "1.1.0", json!({}), json!({"del": "fail7:once"})), json!({}));
    let cid = format!("itest-{}", unique("g"));
    Invocation::new("ADD", &cid, &ns.path).run_json(&conf).ok();
    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([]);
    let e = Invocation::node_wide("GC").run_json(&gc_conf).err(7);
    assert!(e["msg"].as_str().unwrap().contains(&cid), "{e}");
    assert!(dir.scratch_cache(&cid).exists());
    Invocation::node_wide("GC").run_json(&gc_conf).ok();
    dir.assert_no_cache_files();
}

#[test]
fn gc_and_status_need_1_1_0() {
    require_root!();
    let dir = TestDir::new().with_fake();
    let conf = dir.multus_conf("1.0.0", two_fakes(&dir, "1.0.0", json!({}), json!({})), json!({}));
    Invocation::node_wide("GC").run_json(&conf).err(1);
    Invocation::node_wide("STATUS").run_json(&conf).err(1);
    assert!(dir.calls().is_empty());
}

/// A GC without `cni.dev/valid-attachments` removes nothing and forwards nothing: an
/// empty list would tell the primary network that none of its attachments is valid.
#[test]
fn gc_without_a_list_touches_nothing() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let conf = dir.multus_conf("1.1.0", two_fakes(&dir, "1.1.0", json!({}), json!({})), json!({}));
    let cid = format!("itest-{}", unique("n"));
    Invocation::new("ADD", &cid, &ns.path).run_json(&conf).ok();
    std::fs::remove_file(&dir.record).unwrap();
    Invocation::node_wide("GC").run_json(&conf).ok();
    assert!(dir.calls().is_empty(), "{:?}", dir.call_summary());
    assert_eq!(dir.cache_files().len(), 3, "{:?}", dir.cache_files());
}

/// `logFile`, `logLevel` and `logToStderr: false` are honoured: the error goes to the
/// file, not to stderr (stdout carries only the CNI error).
#[test]
fn logging_follows_the_config() {
    require_root!();
    let dir = TestDir::new().with_fake();
    let log = dir.tmp.path().join("multus.log");
    let conf = dir.multus_conf(
        "1.1.0",
        vec![],
        json!({"logFile": log, "logLevel": "debug", "logToStderr": false, "delegates": []}),
    );
    let run = Invocation::node_wide("STATUS").run_json(&conf);
    assert!(run.stderr.trim().is_empty(), "stderr: {}", run.stderr);
    run.err(7);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("at least one delegate/clusterNetwork must be specified"), "{logged}");
}
