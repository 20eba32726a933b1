//! Failure paths of ADD and DEL with fake delegates (examples/fake_delegate.rs) and,
//! where it matters, real ones: whatever fails, the caller gets one clean CNI error with
//! the delegate's code (or 100), every delegate that ran is DELeted in reverse, and
//! nothing is left in cniDir, in the netns or in host-local's leases.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::*;

const NAMES: [&str; 3] = ["fa", "fb", "fc"];
const IFNAMES: [&str; 3] = ["eth0", "net1", "net2"];
/// The per-delegate deadline of the `hang` cases, seconds.
const DEADLINE: u64 = 2;

/// Three fake delegates `fa`, `fb`, `fc` (eth0, net1, net2); `fake[i]` is delegate i's
/// behaviour.
fn three_fakes(dir: &TestDir, fake: [Value; 3]) -> Vec<Value> {
    fake.into_iter().enumerate().map(|(i, f)| dir.fake(NAMES[i], "1.0.0", f)).collect()
}

/// `add: behaviour` at position `pos`, `ok` elsewhere.
fn failing_at(pos: usize, behaviour: &str) -> [Value; 3] {
    std::array::from_fn(|i| {
        if i == pos {
            json!({"add": behaviour, "ip": format!("10.99.{i}.2/24")})
        } else {
            json!({"ip": format!("10.99.{i}.2/24")})
        }
    })
}

/// The calls an ADD failing at `pos` must make: ADD 0..=pos, then DEL pos..=0.
fn expected_rollback(pos: usize) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = (0..=pos).map(|i| call("ADD", NAMES[i], IFNAMES[i])).collect();
    v.extend((0..=pos).rev().map(|i| call("DEL", NAMES[i], IFNAMES[i])));
    v
}

fn cid() -> String {
    format!("itest-{}", unique("f"))
}

/// Run an ADD whose delegate at `pos` behaves as `behaviour`; check the rollback and the
/// clean state, and return the error document and the outcome.
fn add_failing(ns: &Netns, pos: usize, behaviour: &str, code: u64) -> (Value, Outcome, TestDir) {
    let dir = TestDir::new().with_fake();
    let conf = dir.multus_conf(
        "1.0.0",
        three_fakes(&dir, failing_at(pos, behaviour)),
        json!({"delegateTimeoutSeconds": DEADLINE}),
    );
    let out = Invocation::new("ADD", &cid(), &ns.path).run_json(&conf);
    let e = out.err(code);
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains(&format!(r#"error adding container to network "{}""#, NAMES[pos])),
        "the failing network is named: {msg}"
    );
    assert!(msg.contains("[default/pod-1/uid-1"), "pod context: {msg}");
    assert_eq!(dir.call_summary(), expected_rollback(pos), "{behaviour} at {pos}");
    // the delegates that succeeded got their result back as prevResult on DEL
    for c in dir.calls().iter().filter(|c| c["command"] == "DEL") {
        let i = NAMES.iter().position(|n| *n == c["name"]).unwrap();
        if i < pos {
            assert_eq!(c["stdin"]["prevResult"]["ips"][0]["address"], format!("10.99.{i}.2/24"), "{c}");
        } else {
            assert!(c["stdin"].get("prevResult").is_none(), "{c}");
        }
    }
    dir.assert_no_cache_files();
    assert_eq!(ns.link_names(), ["lo"]);
    (e, out, dir)
}

#[test]
fn delegate_cni_error_code_is_passed_through() {
    require_root!();
    let ns = Netns::new();
    for pos in 0..3 {
        let (e, ..) = add_failing(&ns, pos, "fail7", 7);
        assert!(e["msg"].as_str().unwrap().contains("fake failure on ADD"), "{e}");
        assert!(e["details"].as_str().unwrap().contains("fake details"), "{e}");
        assert_eq!(e["cniVersion"], "1.0.0");
    }
}

#[test]
fn delegate_printing_garbage_is_100() {
    require_root!();
    let ns = Netns::new();
    for pos in 0..3 {
        let (e, ..) = add_failing(&ns, pos, "garbage", 100);
        let msg = e["msg"].as_str().unwrap();
        assert!(msg.contains("no CNI error on stdout"), "{msg}");
        assert!(e["details"].as_str().unwrap().contains("this is not JSON"), "{e}");
    }
}

#[test]
fn hanging_delegate_is_killed_at_its_deadline() {
    require_root!();
    let ns = Netns::new();
    for pos in 0..3 {
        let (e, out, dir) = add_failing(&ns, pos, "hang", 100);
        let msg = e["msg"].as_str().unwrap();
        assert!(msg.contains("did not finish within") && msg.contains("killed"), "{msg}");
        // generous: 10× the deadline, on 2 loaded cores
        assert!(out.elapsed < Duration::from_secs(10 * DEADLINE), "took {:?}", out.elapsed);
        let hung = dir.calls()[pos]["pid"].as_u64().unwrap();
        assert!(gone_soon(hung), "the hung delegate (pid {hung}) is still running");
    }
}

/// Whether process `pid` is gone (or a zombie) within a few seconds.
fn gone_soon(pid: u64) -> bool {
    for _ in 0..100 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(s) if s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')) => {
                return true;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    false
}

#[test]
fn delegate_stderr_lands_in_details() {
    require_root!();
    let ns = Netns::new();
    for pos in 0..3 {
        let (e, ..) = add_failing(&ns, pos, "stderr", 7);
        let details = e["details"].as_str().unwrap();
        assert!(details.contains("FAKE-STDERR-END"), "{details}");
        assert!(details.contains("fake details"), "the delegate's own details first");
        assert!(details.len() < 16 * 1024, "stderr is truncated: {}", details.len());
    }
}

#[test]
fn delegate_killed_by_a_signal_is_100() {
    require_root!();
    let ns = Netns::new();
    for pos in 0..3 {
        let (e, ..) = add_failing(&ns, pos, "signal", 100);
        let msg = e["msg"].as_str().unwrap();
        assert!(msg.contains("signal 11") && msg.contains("SIGSEGV"), "{msg}");
    }
}

#[test]
fn other_broken_delegates_are_100() {
    require_root!();
    let ns = Netns::new();
    for (behaviour, text) in [
        ("sigkill", "SIGKILL"),
        ("empty", "printed no result"),
        ("garbage0", "printed invalid JSON"),
        ("exit1", "no CNI error on stdout"),
    ] {
        let (e, ..) = add_failing(&ns, 1, behaviour, 100);
        let msg = e["msg"].as_str().unwrap();
        assert!(msg.contains(text), "{behaviour}: {msg}");
    }
}

/// The rollback goes on when a DEL of the rollback hangs: the ADD error is what the
/// caller gets, and the hung DEL is killed.
#[test]
fn rollback_survives_a_hanging_del() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let conf = dir.multus_conf(
        "1.0.0",
        three_fakes(&dir, [json!({"del": "hang"}), json!({"add": "fail7"}), json!({})]),
        json!({"delegateTimeoutSeconds": DEADLINE}),
    );
    let out = Invocation::new("ADD", &cid(), &ns.path).run_json(&conf);
    out.err(7);
    assert_eq!(dir.call_summary(), expected_rollback(1));
    assert!(out.elapsed < Duration::from_secs(10 * DEADLINE));
    dir.assert_no_cache_files();
}

/// A real master (bridge + host-local) and a real macvlan succeed, the third fails: the
/// rollback removes their links and leases.
#[test]
fn rollback_releases_real_links_and_leases() {
    require_root!();
    for behaviour in ["fail7", "signal"] {
        let ns = Netns::new();
        let dir = TestDir::new().with_fake();
        let bridge = unique("mbr");
        ns.own_host_link(&bridge);
        let (subnet, _) = unique_subnet();
        let (subnet2, _) = unique_subnet();
        let data_dir = dir.data_dir.display().to_string();
        let delegates = vec![
            json!({"cniVersion": "1.0.0", "name": "itest-bridge", "type": "bridge", "bridge": bridge,
                   "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet}]]}}),
            json!({"cniVersion": "1.0.0", "name": "itest-macvlan", "type": "macvlan",
                   "master": ns.host_veth(), "mode": "bridge",
                   "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet2}]]}}),
            dir.fake("fc", "1.0.0", json!({"add": behaviour})),
        ];
        let conf = dir.multus_conf("1.0.0", delegates, json!({}));
        let code = if behaviour == "fail7" { 7 } else { 100 };
        let out = Invocation::new("ADD", &cid(), &ns.path).run_json(&conf);
        out.err(code);
        assert_eq!(dir.call_summary(), [call("ADD", "fc", "net2"), call("DEL", "fc", "net2")]);
        assert_eq!(ns.link_names(), ["lo"], "eth0 and net1 were rolled back");
        assert!(leases(&dir.data_dir, "itest-bridge").is_empty());
        assert!(leases(&dir.data_dir, "itest-macvlan").is_empty());
        dir.assert_no_cache_files();
    }
}

/// A real delegate's own error (macvlan on a master that does not exist, seeds §F)
/// reaches the caller with the plugin's code and message; the master is rolled back.
/// (Debian's macvlan 1.1.1 says only "Link not found"; newer ones name the master.)
#[test]
fn real_delegate_error_is_passed_through() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new();
    let bridge = unique("mbr");
    ns.own_host_link(&bridge);
    let (subnet, _) = unique_subnet();
    let data_dir = dir.data_dir.display().to_string();
    let delegates = vec![
        json!({"cniVersion": "1.0.0", "name": "itest-bridge", "type": "bridge", "bridge": bridge,
               "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet}]]}}),
        json!({"cniVersion": "0.3.1", "name": "macvlan-conf", "type": "macvlan",
               "master": "mrs-no-such-nic", "mode": "bridge",
               "ipam": {"type": "static", "addresses": [{"address": "10.1.1.101/24"}]}}),
    ];
    let conf = dir.multus_conf("0.3.1", delegates, json!({}));
    let out = Invocation::new("ADD", &cid(), &ns.path).run_json(&conf);
    assert_eq!(out.exit_code, 1);
    let e = out.json();
    let msg = e["msg"].as_str().unwrap();
    assert!(msg.contains("Link not found") || msg.contains("mrs-no-such-nic"), "{msg}");
    assert!(msg.contains(r#"network "macvlan-conf""#), "{msg}");
    // skel wraps a plugin's plain Go error as code 999 (ErrInternal); kept as is
    assert_eq!(e["code"], 999, "{e}");
    assert_eq!(e["cniVersion"], "0.3.1");
    assert_eq!(ns.link_names(), ["lo"]);
    assert!(leases(&dir.data_dir, "itest-bridge").is_empty());
    dir.assert_no_cache_files();
}

/// An ADD of three fakes that succeeds; returns the invocation and the config.
fn added(dir: &TestDir, ns: &Netns, fake: [Value; 3], extra: Value) -> (Invocation, Value) {
    let conf = dir.multus_conf("1.0.0", three_fakes(dir, fake), extra);
    let add = Invocation::new("ADD", &cid(), &ns.path);
    let r = add.run_json(&conf).ok();
    assert_eq!(r["interfaces"][0]["name"], "eth0");
    assert_eq!(dir.cache_files().len(), 4, "{:?}", dir.cache_files());
    std::fs::remove_file(&dir.record).unwrap();
    (add, conf)
}

fn dels_in_reverse() -> Vec<(String, String, String)> {
    (0..3).rev().map(|i| call("DEL", NAMES[i], IFNAMES[i])).collect()
}

fn ok3() -> [Value; 3] {
    std::array::from_fn(|i| json!({"ip": format!("10.99.{i}.2/24")}))
}

/// A corrupt scratch cache must not make DEL silently do nothing (Go Multus #1087): the
/// results cache still knows every attachment, with its config and result.
#[test]
fn del_with_corrupt_scratch_cache_uses_the_results_cache() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let (add, conf) = added(&dir, &ns, ok3(), json!({}));
    std::fs::write(dir.scratch_cache(&add.env["CNI_CONTAINERID"]), b"\0\0{torn").unwrap();
    // other static delegates prove the cached configs were used
    let mut other = conf.clone();
    other["delegates"] = json!([dir.fake("fx", "1.0.0", json!({}))]);
    add.command("DEL").run_json(&other).ok();
    assert_eq!(dir.call_summary(), dels_in_reverse());
    for c in dir.calls() {
        assert!(c["stdin"]["prevResult"]["ips"].is_array(), "{c}");
    }
    dir.assert_no_cache_files();
}

/// Corrupt scratch cache and no results cache: the config's static delegates.
#[test]
fn del_with_corrupt_scratch_cache_and_no_results_uses_the_config() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let (add, conf) = added(&dir, &ns, ok3(), json!({}));
    std::fs::remove_dir_all(dir.cni_dir.join("results")).unwrap();
    std::fs::write(dir.scratch_cache(&add.env["CNI_CONTAINERID"]), b"[]").unwrap();
    add.command("DEL").run_json(&conf).ok();
    assert_eq!(dir.call_summary(), dels_in_reverse());
    dir.assert_no_cache_files();
}

/// `retryDeleteOnError`: a failed DEL keeps the scratch cache so the runtime's retry
/// deletes everything again; the successful retry removes it.
#[test]
fn retry_delete_on_error_keeps_the_scratch_cache_until_del_succeeds() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let mut fakes = ok3();
    fakes[1]["del"] = "fail7:once".into();
    let (add, conf) = added(&dir, &ns, fakes, json!({"retryDeleteOnError": true}));
    let cid = add.env["CNI_CONTAINERID"].clone();
    let del = add.command("DEL");

    let e = del.run_json(&conf).err(7);
    assert!(e["msg"].as_str().unwrap().contains("net1 (fb)"), "{e}");
    assert_eq!(dir.call_summary(), dels_in_reverse(), "every delegate attempted");
    assert!(dir.scratch_cache(&cid).exists(), "kept for the retry");
    assert!(dir.result_cache("fb", &cid, "net1").exists());
    assert!(!dir.result_cache("fa", &cid, "eth0").exists());

    std::fs::remove_file(&dir.record).unwrap();
    del.run_json(&conf).ok();
    assert_eq!(dir.call_summary(), dels_in_reverse(), "the retry DELs all again");
    dir.assert_no_cache_files();
}

/// Without `retryDeleteOnError` the scratch cache goes even when a DEL failed.
#[test]
fn without_retry_delete_on_error_the_scratch_cache_goes() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let mut fakes = ok3();
    fakes[1]["del"] = "fail7".into();
    let (add, conf) = added(&dir, &ns, fakes, json!({}));
    let cid = add.env["CNI_CONTAINERID"].clone();
    add.command("DEL").run_json(&conf).err(7);
    assert_eq!(dir.call_summary(), dels_in_reverse(), "every delegate attempted");
    assert!(!dir.scratch_cache(&cid).exists());
}

/// Every DEL failure is reported (joined), with the first one's code.
#[test]
fn del_reports_every_failing_delegate() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let mut fakes = ok3();
    fakes[0]["del"] = "signal".into();
    fakes[2]["del"] = "fail7".into();
    let (add, conf) = added(&dir, &ns, fakes, json!({}));
    let e = add.command("DEL").run_json(&conf).err(7);
    let msg = e["msg"].as_str().unwrap();
    assert!(msg.contains("net2 (fc)") && msg.contains("eth0 (fa)"), "{msg}");
    assert!(msg.contains("SIGSEGV"), "{msg}");
    assert_eq!(dir.call_summary(), dels_in_reverse());
}

/// CHECK stops at the first failing delegate and passes its code through.
#[test]
fn check_passes_the_delegate_error_through() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let mut fakes = ok3();
    fakes[1]["check"] = "fail7".into();
    let (add, conf) = added(&dir, &ns, fakes, json!({}));
    let e = add.command("CHECK").run_json(&conf).err(7);
    assert!(e["msg"].as_str().unwrap().contains("net1 (fb)"), "{e}");
    let checks = dir.call_summary();
    assert_eq!(checks, [call("CHECK", "fa", "eth0"), call("CHECK", "fb", "net1")]);
    for c in dir.calls() {
        assert!(c["stdin"]["prevResult"]["ips"].is_array(), "CHECK gets the cached result");
    }
}

/// An interface name already taken in the pod's netns fails the ADD before anything
/// runs: code 102, no delegate called, no cache written.
#[test]
fn taken_interface_name_is_102_and_nothing_runs() {
    require_root!();
    for taken in ["eth0", "net1", "net2"] {
        let ns = Netns::new();
        ns.add_link(taken);
        let dir = TestDir::new().with_fake();
        let conf = dir.multus_conf("1.0.0", three_fakes(&dir, ok3()), json!({}));
        let e = Invocation::new("ADD", &cid(), &ns.path).run_json(&conf).err(102);
        let msg = e["msg"].as_str().unwrap();
        assert!(msg.contains(&format!("{taken} already exists")), "{msg}");
        assert!(dir.calls().is_empty(), "{:?}", dir.call_summary());
        dir.assert_no_cache_files();
        assert!(!dir.cni_dir.exists());
    }
}

/// A delegate binary missing from binDir and CNI_PATH fails the ADD before anything
/// runs (the other delegates are not called).
#[test]
fn missing_delegate_binary_fails_before_anything_runs() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let mut delegates = three_fakes(&dir, ok3());
    delegates[2]["type"] = "mrs-not-installed".into();
    let conf = dir.multus_conf("1.0.0", delegates, json!({}));
    let e = Invocation::new("ADD", &cid(), &ns.path).run_json(&conf).err(7);
    assert!(e["msg"].as_str().unwrap().contains(r#"failed to find plugin "mrs-not-installed""#), "{e}");
    assert!(dir.calls().is_empty());
    assert!(!dir.cni_dir.exists());
}

/// A master whose result cannot be read (here an address `banana`) is this delegate's
/// failure: everything is rolled back, nothing stays attached, both caches are gone.
#[test]
fn unconvertible_master_result_is_rolled_back() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let mut fakes = ok3();
    fakes[0]["add"] = "badresult".into();
    let conf = dir.multus_conf("0.3.1", three_fakes(&dir, fakes), json!({}));
    let out = Invocation::new("ADD", &cid(), &ns.path).run_json(&conf);
    assert_eq!(out.exit_code, 1, "{}", out.stdout);
    let e = out.json();
    assert!(e["code"] == 6 || e["code"] == 100, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("fa"), "names the network: {e}");
    let calls = dir.call_summary();
    let adds: Vec<_> = calls.iter().filter(|c| c.0 == "ADD").cloned().collect();
    let mut dels: Vec<_> = calls.iter().filter(|c| c.0 == "DEL").cloned().collect();
    dels.reverse();
    assert_eq!(
        adds.iter().map(|c| (&c.1, &c.2)).collect::<Vec<_>>(),
        dels.iter().map(|c| (&c.1, &c.2)).collect::<Vec<_>>(),
        "every delegate added is deleted, in reverse: {calls:?}"
    );
    dir.assert_no_cache_files();
}

/// The pod's tag is attached once per verb (its log span), so every line the ADD logs for
/// the pod carries it exactly once: the delegates that were added, the failure, the
/// rollback, and the final error (whose message has it from the error itself).
#[test]
fn every_log_line_of_the_pod_carries_its_tag_once() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let log = dir.tmp.path().join("multus.log");
    let conf = dir.multus_conf(
        "1.0.0",
        three_fakes(&dir, failing_at(2, "fail7")),
        json!({"logLevel": "verbose", "logFile": log, "logToStderr": false}),
    );
    Invocation::new("ADD", &cid(), &ns.path).run_json(&conf).err(7);
    let logged = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = logged.lines().collect();
    for wanted in ["added eth0 (fa)", "added net1 (fb)", "error adding container to network \"fc\""] {
        assert!(lines.iter().any(|l| l.contains(wanted)), "no line with {wanted:?}:\n{logged}");
    }
    for line in &lines {
        assert_eq!(line.matches("[default/pod-1/uid-1").count(), 1, "the tag once per line: {line}\n{logged}");
    }
    assert!(
        lines.iter().any(|l| l.contains(" INFO [default/pod-1/uid-1] added eth0 (fa) in ")),
        "time, level, tag, message:\n{logged}"
    );
}
