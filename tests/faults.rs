//! Fault injection with real network namespaces, Debian's real plugins (bridge,
//! host-local, portmap, macvlan), the fake delegate and the Kubernetes API stand-in.
//!
//! Every scenario ends with a leak check (`LeakCheck`): links in the pod's netns, ports
//! of the test bridge, host-local leases, files in cniDir, iptables rules and portmap
//! chains of our containers, and delegate processes still running. **Any leak fails the
//! test.** Most scenarios also run the runtime's two DELs (the second with an empty
//! `CNI_NETNS`, as containerd does) and check again.

mod support;

use kube_standin::{Fault, FaultAction};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};
use support::*;

/// `apiTimeoutSeconds` of every scenario with the API: faults cost at most this.
const API_BUDGET: u64 = 1;
/// `delegateTimeoutSeconds` where a delegate hangs.
const DEADLINE: u64 = 1;

static PORT: AtomicU16 = AtomicU16::new(0);

/// One node: a bridge, a macvlan parent, two subnets, a pod netns, our dirs; every
/// container ID it hands out and every portmap chain it saw, for the leak check.
struct World {
    dir: TestDir,
    ns: Netns,
    bridge: String,
    parent: String,
    subnet: String,
    subnet2: String,
    port: u16,
    cids: RefCell<Vec<String>>,
    chains: RefCell<Vec<String>>,
    /// Extra call logs (per-pod fakes) whose processes must be gone too.
    records: RefCell<Vec<PathBuf>>,
}

impl World {
    fn new() -> World {
        let dir = TestDir::new().with_fake();
        let ns = Netns::new();
        let bridge = unique("fbr");
        ns.own_host_link(&bridge);
        let parent = ns.host_veth();
        let (subnet, _) = unique_subnet();
        let (subnet2, _) = unique_subnet();
        let port = 20000 + (std::process::id() % 2000) as u16 * 10 + PORT.fetch_add(1, Ordering::SeqCst) % 10;
        World {
            dir,
            ns,
            bridge,
            parent,
            subnet,
            subnet2,
            port,
            cids: Default::default(),
            chains: Default::default(),
            records: Default::default(),
        }
    }

    /// The real master: bridge + host-local, chained with portmap (iptables).
    fn master(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "fault-master", "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "dataDir": self.dir.data_dir, "ranges": [[{"subnet": self.subnet}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]})
    }

    /// A real macvlan + host-local attachment.
    fn macvlan(&self, name: &str) -> Value {
        json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": self.parent, "mode": "bridge",
               "ipam": {"type": "host-local", "dataDir": self.dir.data_dir, "ranges": [[{"subnet": self.subnet2}]]}})
    }

    /// Our config: the runtime passes a port mapping to the master (portmap's rules).
    fn conf(&self, delegates: Vec<Value>, extra: Value) -> Value {
        let mut all = json!({
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": [{"hostPort": self.port, "containerPort": 80, "protocol": "tcp"}]},
        });
        if let Value::Object(m) = extra {
            for (k, v) in m {
                all[k] = v;
            }
        }
        self.dir.multus_conf("1.0.0", delegates, all)
    }

    /// An invocation of `command` for a new container ID.
    fn invocation(&self, command: &str) -> Invocation {
        let cid = format!("flt-{}", unique("c"));
        self.cids.borrow_mut().push(cid.clone());
        Invocation::new(command, &cid, &self.ns.path)
    }

    /// ADD must succeed; the portmap chains it made are remembered for the leak check.
    fn add_ok(&self, add: &Invocation, conf: &Value) -> Value {
        let r = add.run_json(conf).ok();
        let chains = portmap_chains(&add.env["CNI_CONTAINERID"]);
        if conf["delegates"][0]["name"] == "fault-master" {
            assert!(!chains.is_empty(), "portmap made no rules: the iptables leak check would be blind");
        }
        self.chains.borrow_mut().extend(chains);
        r
    }

    /// The runtime's teardown: DEL with the netns (and our result as prevResult when the
    /// ADD gave one), then DEL with an empty CNI_NETNS and no prevResult. Both succeed.
    fn del_twice(&self, add: &Invocation, conf: &Value, result: Option<&Value>) {
        let mut first = conf.clone();
        if let Some(r) = result.filter(|r| !r.is_null()) {
            first["prevResult"] = r.clone();
        }
        add.command("DEL").run_json(&first).ok();
        add.command("DEL").set("CNI_NETNS", "").run_json(conf).ok();
    }

    fn leak_check(&self) -> LeakCheck<'_> {
        let mut records = vec![self.dir.record.clone()];
        records.extend(self.records.borrow().iter().cloned());
        LeakCheck {
            netns: vec![&self.ns],
            cache_dirs: vec![self.dir.cni_dir.clone()],
            lease_dirs: vec![self.dir.data_dir.clone()],
            bridges: vec![self.bridge.clone()],
            cids: self.cids.borrow().clone(),
            chains: self.chains.borrow().clone(),
            records,
        }
    }

    fn assert_clean(&self, what: &str) {
        self.leak_check().assert_clean(what);
    }

    /// `(command, name, ifname)` of the fake's calls for container `cid`.
    fn fake_calls(&self, cid: &str) -> Vec<(String, String, String)> {
        self.dir
            .calls()
            .iter()
            .filter(|c| c["containerId"] == cid)
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (s("command"), s("name"), s("ifname"))
            })
            .collect()
    }
}

/// Every ADD a fake made for `cid` was DELeted afterwards (the rollback).
fn assert_rolled_back(w: &World, cid: &str, what: &str) {
    let calls = w.fake_calls(cid);
    for (i, c) in calls.iter().enumerate().filter(|(_, c)| c.0 == "ADD") {
        assert!(
            calls[i + 1..].iter().any(|d| d.0 == "DEL" && d.1 == c.1 && d.2 == c.2),
            "{what}: ADD of {} on {} was not rolled back: {calls:?}",
            c.1,
            c.2
        );
    }
}

// ---------------------------------------------------------------------------------------
// The Kubernetes API misbehaves during ADD
// ---------------------------------------------------------------------------------------

/// A stand-in with pod `default/pod-1` (uid `uid-1`, as `Invocation::new` says) asking
/// for a real macvlan NAD (net1) and a fake NAD (net2).
fn api_for(w: &World) -> Api {
    let api = Api::start(&w.dir);
    api.add_nad("default", "mvnad", &w.macvlan("mvnad"));
    api.add_nad("default", "fknad", &w.dir.fake("fknad", "1.0.0", json!({"ip": "10.99.1.2/24"})));
    api.add_pod("default", "pod-1", "uid-1", json!({"k8s.v1.cni.cncf.io/networks": "mvnad,fknad"}));
    api
}

fn api_conf(w: &World, api: &Api) -> Value {
    w.conf(vec![w.master()], json!({"kubeconfig": api.kubeconfig, "apiTimeoutSeconds": API_BUDGET}))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// ADD succeeds and the network-status annotation is written.
    Ok,
    /// ADD succeeds, but the pod went away before its status could be written.
    OkPodGoneLater,
    /// ADD succeeds (the pod is gone: Go Multus' placeholder result), nothing runs.
    PodGone,
    /// ADD fails with this code; with `ran`, delegates ran and were rolled back.
    Err { code: u64, ran: bool },
}

struct ApiCase {
    name: &'static str,
    fault: fn(&Api),
    expect: Expect,
}

fn fault(api: &Api, action: FaultAction, method: &str, path: &str) {
    api.standin.add_fault(Fault::new(action).method(method).path_contains(path));
}

fn fault_n(api: &Api, action: FaultAction, method: &str, path: &str, n: usize) {
    api.standin.add_fault(Fault::new(action).method(method).path_contains(path).times(n));
}

const POD: &str = "/pods/pod-1";
const NAD: &str = "/network-attachment-definitions/";

fn api_cases_lookup() -> Vec<ApiCase> {
    use FaultAction::*;
    let transient = Expect::Err { code: 11, ran: false };
    let permanent = Expect::Err { code: 101, ran: false };
    vec![
        ApiCase { name: "pod GET 503 forever", fault: |a| fault(a, Status(503), "GET", POD), expect: transient },
        ApiCase { name: "pod GET 500 forever", fault: |a| fault(a, Status(500), "GET", POD), expect: transient },
        ApiCase { name: "pod GET 429 forever", fault: |a| fault(a, Status(429), "GET", POD), expect: transient },
        ApiCase { name: "pod GET hangs", fault: |a| fault(a, Hang, "GET", POD), expect: transient },
        ApiCase { name: "pod GET reset", fault: |a| fault(a, Reset, "GET", POD), expect: transient },
        ApiCase {
            name: "API slower than the budget",
            fault: |a| a.standin.set_latency(Duration::from_secs(3 * API_BUDGET)),
            expect: transient,
        },
        ApiCase { name: "pod GET 403", fault: |a| fault(a, Status(403), "GET", POD), expect: permanent },
        ApiCase { name: "pod GET 409", fault: |a| fault(a, Status(409), "GET", POD), expect: permanent },
        ApiCase { name: "token rejected (401)", fault: |a| a.standin.require_token(Some("other")), expect: permanent },
        ApiCase { name: "pod GET 404", fault: |a| fault(a, Status(404), "GET", POD), expect: Expect::PodGone },
        ApiCase {
            name: "pod GET 503 twice, then ok",
            fault: |a| fault_n(a, Status(503), "GET", POD, 2),
            expect: Expect::Ok,
        },
        ApiCase {
            name: "pod GET reset once, then ok",
            fault: |a| fault_n(a, Reset, "GET", POD, 1),
            expect: Expect::Ok,
        },
        ApiCase { name: "NAD GET 503 forever", fault: |a| fault(a, Status(503), "GET", NAD), expect: transient },
        ApiCase { name: "NAD GET hangs", fault: |a| fault(a, Hang, "GET", NAD), expect: transient },
        ApiCase { name: "NAD GET reset", fault: |a| fault(a, Reset, "GET", NAD), expect: transient },
        ApiCase { name: "NAD GET 403", fault: |a| fault(a, Status(403), "GET", NAD), expect: permanent },
        ApiCase { name: "NAD GET 404", fault: |a| fault(a, Status(404), "GET", NAD), expect: permanent },
        ApiCase {
            name: "NAD GET 502 once, then ok",
            fault: |a| fault_n(a, Status(502), "GET", NAD, 1),
            expect: Expect::Ok,
        },
    ]
}

fn api_cases_publish() -> Vec<ApiCase> {
    use FaultAction::*;
    let rolled_back = |code| Expect::Err { code, ran: true };
    vec![
        ApiCase { name: "PATCH 500 forever", fault: |a| fault(a, Status(500), "PATCH", POD), expect: rolled_back(11) },
        ApiCase { name: "PATCH hangs", fault: |a| fault(a, Hang, "PATCH", POD), expect: rolled_back(11) },
        ApiCase { name: "PATCH reset", fault: |a| fault(a, Reset, "PATCH", POD), expect: rolled_back(11) },
        ApiCase { name: "PATCH 409", fault: |a| fault(a, Status(409), "PATCH", POD), expect: rolled_back(101) },
        ApiCase {
            name: "PATCH 503 once, then ok",
            fault: |a| fault_n(a, Status(503), "PATCH", POD, 1),
            expect: Expect::Ok,
        },
        ApiCase {
            name: "PATCH 403: GET + PUT pods/status fallback",
            fault: |a| a.standin.deny("patch", "pods"),
            expect: Expect::Ok,
        },
        ApiCase {
            name: "PATCH 403, PUT status 409 twice",
            fault: |a| {
                a.standin.deny("patch", "pods");
                fault_n(a, Status(409), "PUT", "/status", 2);
            },
            expect: Expect::Ok,
        },
        ApiCase {
            name: "PATCH 403, PUT status 403",
            fault: |a| {
                a.standin.deny("patch", "pods");
                a.standin.deny("update", "pods/status");
            },
            expect: rolled_back(101),
        },
        ApiCase {
            name: "PATCH 403, PUT status hangs",
            fault: |a| {
                a.standin.deny("patch", "pods");
                fault(a, Hang, "PUT", "/status");
            },
            expect: rolled_back(11),
        },
        ApiCase { name: "events POST 500", fault: |a| fault(a, Status(500), "POST", "/events"), expect: Expect::Ok },
        ApiCase { name: "events POST hang", fault: |a| fault(a, Hang, "POST", "/events"), expect: Expect::Ok },
        ApiCase {
            name: "pod deleted before PATCH (404)",
            fault: |a| fault(a, Status(404), "PATCH", POD),
            expect: Expect::OkPodGoneLater,
        },
    ]
}

fn run_api_cases(cases: Vec<ApiCase>) {
    let w = World::new();
    let mut failures = Vec::new();
    for case in &cases {
        let api = api_for(&w);
        (case.fault)(&api);
        let conf = api_conf(&w, &api);
        let add = w.invocation("ADD");
        let cid = add.env["CNI_CONTAINERID"].clone();
        let started = Instant::now();
        let out = add.run_json(&conf);
        let elapsed = started.elapsed();
        let got = match out.exit_code {
            0 => out.docs.first().cloned(),
            _ => None,
        };
        let problem = match (case.expect, out.exit_code) {
            (Expect::Ok, 0) => {
                w.chains.borrow_mut().extend(portmap_chains(&cid));
                let pod = api.standin.pod("default", "pod-1").unwrap();
                let status = &pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"];
                (!status.as_str().is_some_and(|s| s.contains("default/fknad"))).then(|| format!("no status: {pod}"))
            }
            (Expect::OkPodGoneLater, 0) => {
                w.chains.borrow_mut().extend(portmap_chains(&cid));
                (w.ns.link_names() != ["eth0", "lo", "net1"]).then(|| format!("links {:?}", w.ns.link_names()))
            }
            (Expect::PodGone, 0) => {
                let ran = !w.fake_calls(&cid).is_empty() || !w.ns.link_names().eq(&["lo"]);
                let r = got.clone().unwrap_or_default();
                (ran || r["ips"][0]["address"] != "0.0.0.0/0").then(|| format!("pod gone: ran anyway or {r}"))
            }
            (Expect::Err { code, ran }, 1) => {
                let e = out.json();
                let mut p = None;
                if e["code"] != code {
                    p = Some(format!("code {} instead of {code}: {e}", e["code"]));
                } else if out.stderr.contains("panicked") {
                    p = Some("panicked".into());
                } else if !ran && !w.fake_calls(&cid).is_empty() {
                    p = Some(format!("delegates ran: {:?}", w.fake_calls(&cid)));
                } else if ran && w.fake_calls(&cid).is_empty() {
                    p = Some("delegates did not run: the fault was not where it should be".into());
                }
                assert_rolled_back(&w, &cid, case.name);
                // the failed ADD itself must have left nothing, before any DEL
                let leaks = w.leak_check().leaks();
                p.or_else(|| (!leaks.is_empty()).then(|| format!("after the failed ADD: {leaks:?}")))
            }
            (_, code) => Some(format!("exit {code}: {}\n{}", out.stdout, out.stderr.lines().last().unwrap_or(""))),
        };
        // generous: the budget is 1 s, a hang is cut at the budget, retries back off
        if elapsed > Duration::from_secs(20 * API_BUDGET) {
            failures.push(format!("{}: took {elapsed:?}", case.name));
        }
        if let Some(p) = problem {
            failures.push(format!("{}: {p}", case.name));
        }
        // the runtime's teardown, with the fault still in place: DEL needs no API
        api.standin.clear_requests();
        w.del_twice(&add, &conf, got.as_ref());
        let leaks = w.leak_check().leaks();
        if !leaks.is_empty() {
            failures.push(format!("{}: after DEL: {leaks:?}", case.name));
        }
        eprintln!("api fault {:<45} {:?} in {elapsed:.1?}", case.name, case.expect);
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    w.assert_clean("after every API fault");
}

#[test]
fn api_faults_while_looking_up_the_pod_and_nads() {
    require_root!();
    let _tally = Tally::start("api_faults_while_looking_up_the_pod_and_nads");
    run_api_cases(api_cases_lookup());
}

#[test]
fn api_faults_while_writing_the_status() {
    require_root!();
    let _tally = Tally::start("api_faults_while_writing_the_status");
    run_api_cases(api_cases_publish());
}

/// The API server is gone (connection refused) or the kubeconfig is missing: ADD is 11
/// resp. 101 and runs nothing.
#[test]
fn api_server_down_or_no_kubeconfig_during_add() {
    require_root!();
    let _tally = Tally::start("api_server_down_or_no_kubeconfig_during_add");
    let w = World::new();
    let api = api_for(&w);
    let conf = api_conf(&w, &api);
    drop(api); // the server stops; the port refuses connections
    let add = w.invocation("ADD");
    let e = add.run_json(&conf).err(11);
    assert!(e["msg"].as_str().unwrap().contains("pod"), "{e}");
    assert!(w.fake_calls(&add.env["CNI_CONTAINERID"]).is_empty());
    w.assert_clean("ADD with the API down");
    w.del_twice(&add, &conf, None);

    let mut conf = conf;
    conf["kubeconfig"] = w.dir.tmp.path().join("no-such-kubeconfig").display().to_string().into();
    let add = w.invocation("ADD");
    add.run_json(&conf).err(101);
    w.del_twice(&add, &conf, None);
    w.assert_clean("ADD without a kubeconfig");
}

/// The budget is for API calls: delegates slower than the whole budget do not make a
/// healthy API look down (the status PATCH after them still has its budget).
#[test]
fn slow_delegates_do_not_eat_the_api_budget() {
    require_root!();
    let _tally = Tally::start("slow_delegates_do_not_eat_the_api_budget");
    let w = World::new();
    write_script(&w.dir.bin_dir, "slowpoke", SLOWPOKE);
    let api = Api::start(&w.dir);
    api.add_nad("default", "slow", &json!({"cniVersion": "1.0.0", "name": "slow", "type": "slowpoke"}));
    api.add_pod("default", "pod-1", "uid-1", json!({"k8s.v1.cni.cncf.io/networks": "slow"}));
    let conf = api_conf(&w, &api);
    let add = w.invocation("ADD");
    let r = w.add_ok(&add, &conf);
    let pod = api.standin.pod("default", "pod-1").unwrap();
    assert!(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].is_string(), "{pod}");
    w.del_twice(&add, &conf, Some(&r));
    w.assert_clean("slow delegate");
}

/// A delegate that takes 1.5 × the API budget on ADD, then answers a fixed result.
const SLOWPOKE: &str = r#"cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  sleep 1.5
  echo '{"cniVersion":"1.0.0","interfaces":[{"name":"'"$CNI_IFNAME"'","sandbox":"'"$CNI_NETNS"'"}],"ips":[{"address":"10.98.0.2/24","interface":0}],"dns":{}}'
fi"#;

// ---------------------------------------------------------------------------------------
// DEL needs no API: every fault, the cache is enough
// ---------------------------------------------------------------------------------------

#[test]
fn del_succeeds_from_the_cache_whatever_the_api_does() {
    require_root!();
    let _tally = Tally::start("del_succeeds_from_the_cache_whatever_the_api_does");
    let w = World::new();
    type Break = fn(&World, &mut Option<Api>, &mut Value);
    let faults: Vec<(&str, Break)> = vec![
        ("API server down", |_, api, _| drop(api.take())),
        ("every request 503", |_, api, _| fault(api.as_ref().unwrap(), FaultAction::Status(503), "GET", "/")),
        ("every request 403", |_, api, _| fault(api.as_ref().unwrap(), FaultAction::Status(403), "GET", "/")),
        ("every request hangs", |_, api, _| fault(api.as_ref().unwrap(), FaultAction::Hang, "GET", "/")),
        ("every request reset", |_, api, _| fault(api.as_ref().unwrap(), FaultAction::Reset, "GET", "/")),
        ("API 3 s slow", |_, api, _| api.as_ref().unwrap().standin.set_latency(Duration::from_secs(3))),
        ("token rejected", |_, api, _| api.as_ref().unwrap().standin.require_token(Some("rotated"))),
        ("kubeconfig deleted", |_, api, _| std::fs::remove_file(&api.as_ref().unwrap().kubeconfig).unwrap()),
        ("kubeconfig garbage", |_, api, _| std::fs::write(&api.as_ref().unwrap().kubeconfig, "{{{not yaml").unwrap()),
        ("pod deleted from the API", |_, api, _| api.as_ref().unwrap().standin.remove_pod("default", "pod-1")),
    ];
    for (name, break_it) in faults {
        let mut api = Some(api_for(&w));
        let mut conf = api_conf(&w, api.as_ref().unwrap());
        let add = w.invocation("ADD");
        let r = w.add_ok(&add, &conf);
        assert_eq!(w.ns.link_names(), ["eth0", "lo", "net1"], "{name}");
        break_it(&w, &mut api, &mut conf);
        if let Some(api) = &api {
            api.standin.clear_requests();
        }
        let started = Instant::now();
        let mut first = conf.clone();
        first["prevResult"] = r.clone();
        add.command("DEL").run_json(&first).ok();
        assert_eq!(w.ns.link_names(), ["lo"], "{name}");
        if let Some(api) = &api {
            assert!(api.standin.requests().is_empty(), "{name}: DEL asked the API: {:?}", api.request_lines());
        }
        // the second finds nothing cached and, in Kubernetes mode, may ask the API
        // (budget ≤ 3 s) before it falls back to the static delegates
        add.command("DEL").set("CNI_NETNS", "").run_json(&conf).ok();
        assert!(started.elapsed() < Duration::from_secs(30), "{name}: DELs took {:?}", started.elapsed());
        w.assert_clean(name);
        eprintln!("DEL with {name}: ok in {:.1?}", started.elapsed());
    }
}

/// The scratch cache is gone (a node whose /var/lib was wiped, a Go Multus upgrade):
/// the results cache still knows every attachment, so DEL needs no API either.
#[test]
fn del_without_scratch_cache_and_without_api_uses_the_results_cache() {
    require_root!();
    let _tally = Tally::start("del_without_scratch_cache_and_without_api_uses_the_results_cache");
    let w = World::new();
    let api = api_for(&w);
    let conf = api_conf(&w, &api);
    let add = w.invocation("ADD");
    let r = w.add_ok(&add, &conf);
    std::fs::remove_file(w.dir.scratch_cache(&add.env["CNI_CONTAINERID"])).unwrap();
    drop(api);
    w.del_twice(&add, &conf, Some(&r));
    w.assert_clean("DEL from the results cache");
}

/// Both caches torn (#1087): the API still knows the pod, so DEL rebuilds the list
/// (NADs included) and everything goes.
#[test]
fn del_with_both_caches_torn_rebuilds_from_the_api() {
    require_root!();
    let _tally = Tally::start("del_with_both_caches_torn_rebuilds_from_the_api");
    let w = World::new();
    let api = api_for(&w);
    let conf = api_conf(&w, &api);
    let add = w.invocation("ADD");
    let r = w.add_ok(&add, &conf);
    for f in container_cache_files(&w.dir.cni_dir) {
        let p = w.dir.cni_dir.join(f);
        let data = std::fs::read(&p).unwrap();
        std::fs::write(&p, &data[..data.len() / 3]).unwrap();
    }
    w.del_twice(&add, &conf, Some(&r));
    w.assert_clean("DEL after torn caches");
}

// ---------------------------------------------------------------------------------------
// Delegates misbehave: at the first, middle and last position
// ---------------------------------------------------------------------------------------

/// 2 MiB on stderr, then a CNI error 7.
const NOISY: &str = r#"cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  head -c 2097152 /dev/zero | tr '\0' e >&2
  echo NOISY-STDERR-END >&2
  echo '{"cniVersion":"1.0.0","code":7,"msg":"noisy failure"}'
  exit 1
fi"#;

/// 8 MiB of garbage on stdout, exit 0.
const CHATTY: &str = r#"cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  head -c 8388608 /dev/zero | tr '\0' g
  echo CHATTY-STDOUT-END
fi"#;

#[test]
fn delegate_failures_at_every_position_leave_nothing() {
    require_root!();
    let _tally = Tally::start("delegate_failures_at_every_position_leave_nothing");
    let w = World::new();
    write_script(&w.dir.bin_dir, "noisy", NOISY);
    write_script(&w.dir.bin_dir, "chatty", CHATTY);
    let behaviours: [(&str, u64, &str); 7] = [
        ("fail7", 7, "fake failure on ADD"),
        ("hang", 100, "did not finish within"),
        ("signal", 100, "SIGSEGV"),
        ("garbage", 100, "no CNI error on stdout"),
        ("empty", 100, "printed no result"),
        ("noisy", 7, "noisy failure"),
        ("chatty", 100, "printed invalid JSON"),
    ];
    let mut failures = Vec::new();
    let mut runs = 0;
    for (behaviour, code, text) in behaviours {
        for pos in 0..3 {
            let bad = match behaviour {
                "noisy" | "chatty" => json!({"cniVersion": "1.0.0", "name": "bad", "type": behaviour}),
                b => w.dir.fake("bad", "1.0.0", json!({"add": b})),
            };
            let mut delegates = vec![w.master(), w.macvlan("fault-macvlan")];
            delegates.insert(pos, bad);
            let conf = w.conf(delegates, json!({"delegateTimeoutSeconds": DEADLINE}));
            let add = w.invocation("ADD");
            let started = Instant::now();
            let out = add.run_json(&conf);
            runs += 1;
            let what = format!("{behaviour} at {pos}");
            if out.exit_code != 1 || out.docs.len() != 1 || out.stderr.contains("panicked") {
                failures.push(format!("{what}: exit {} stdout {:?}", out.exit_code, out.stdout));
                continue;
            }
            let e = out.json();
            let msg = e["msg"].as_str().unwrap_or_default();
            let details = e["details"].as_str().unwrap_or_default();
            if e["code"] != code || !msg.contains(text) || !msg.contains("network \"bad\"") {
                failures.push(format!("{what}: {e}"));
            }
            if details.len() > 8 * 1024 {
                failures.push(format!("{what}: details of {} bytes", details.len()));
            }
            if behaviour == "noisy" && !details.ends_with("NOISY-STDERR-END") {
                failures.push(format!("{what}: the tail of stderr is not in details: …{}", tail(details)));
            }
            if behaviour == "chatty" && !details.ends_with("CHATTY-STDOUT-END") {
                failures.push(format!("{what}: the tail of stdout is not in details: …{}", tail(details)));
            }
            if started.elapsed() > Duration::from_secs(30) {
                failures.push(format!("{what}: took {:?}", started.elapsed()));
            }
            let leaks = w.leak_check().leaks();
            if !leaks.is_empty() {
                failures.push(format!("{what}: after the failed ADD: {leaks:?}"));
            }
            w.del_twice(&add, &conf, None);
        }
    }
    eprintln!("{runs} failing ADDs with real plugins rolled back");
    assert!(failures.is_empty(), "{} of {runs} failed:\n{}", failures.len(), failures.join("\n"));
    w.assert_clean("after every delegate failure");
}

fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(60);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

// ---------------------------------------------------------------------------------------
// kill -9 of our process in the middle of an ADD, then the runtime's two DELs
// ---------------------------------------------------------------------------------------

/// Start the ADD and kill `multus` with SIGKILL as soon as `ready` holds.
fn kill_mid_add(w: &World, add: &Invocation, conf: &Value, ready: impl Fn() -> bool) {
    let mut child = spawn_plugin(&add.env, conf.to_string().as_bytes(), w.dir.tmp.path());
    let reached = wait_for(Duration::from_secs(60), || ready() || child.try_wait().ok().flatten().is_some());
    assert!(reached, "the ADD never reached the point to kill it at");
    assert!(child.try_wait().unwrap().is_none(), "multus ended before we could kill it");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn kill_9_while_a_delegate_hangs_then_del_twice() {
    require_root!();
    let _tally = Tally::start("kill_9_while_a_delegate_hangs_then_del_twice");
    let w = World::new();
    let conf = w.conf(
        vec![w.master(), w.macvlan("fault-macvlan"), w.dir.fake("stuck", "1.0.0", json!({"add": "hang"}))],
        json!({"delegateTimeoutSeconds": 120}),
    );
    let add = w.invocation("ADD");
    let cid = add.env["CNI_CONTAINERID"].clone();
    kill_mid_add(&w, &add, &conf, || w.fake_calls(&cid).iter().any(|c| c.0 == "ADD"));
    w.chains.borrow_mut().extend(portmap_chains(&cid));
    assert!(!w.ns.link_names().eq(&["lo"]), "eth0 and net1 were up when we killed it");
    // The orphaned delegate must not outlive us: were it to finish its ADD after the
    // runtime's DEL, what it made would leak.
    let pid = w.dir.calls().iter().find(|c| c["containerId"] == cid.as_str()).unwrap()["pid"].as_u64().unwrap();
    assert!(wait_for(Duration::from_secs(10), || !process_alive(pid)), "delegate {pid} outlived the killed multus");
    w.del_twice(&add, &conf, None);
    w.assert_clean("kill -9 during a delegate");
}

#[test]
fn kill_9_while_the_api_hangs_then_del_twice() {
    require_root!();
    let _tally = Tally::start("kill_9_while_the_api_hangs_then_del_twice");
    let w = World::new();
    for (what, method, path) in [("pod GET", "GET", POD), ("status PATCH", "PATCH", POD)] {
        let api = api_for(&w);
        fault(&api, FaultAction::Hang, method, path);
        let mut conf = api_conf(&w, &api);
        conf["apiTimeoutSeconds"] = 120.into();
        let add = w.invocation("ADD");
        let hung = || api.standin.requests().iter().any(|r| r.method == method && r.path.contains(path));
        kill_mid_add(&w, &add, &conf, hung);
        w.chains.borrow_mut().extend(portmap_chains(&add.env["CNI_CONTAINERID"]));
        conf["apiTimeoutSeconds"] = API_BUDGET.into();
        w.del_twice(&add, &conf, None);
        w.assert_clean(&format!("kill -9 while the {what} hangs"));
    }
}

// ---------------------------------------------------------------------------------------
// The cache: corrupt, truncated, foreign, read-only, full
// ---------------------------------------------------------------------------------------

#[test]
fn corrupt_truncated_or_foreign_cache_files_do_not_block_del() {
    require_root!();
    let _tally = Tally::start("corrupt_truncated_or_foreign_cache_files_do_not_block_del");
    let w = World::new();
    type Corrupt = fn(&std::path::Path, &std::path::Path);
    let cases: Vec<(&str, Corrupt)> = vec![
        ("scratch: garbage bytes", |s, _| std::fs::write(s, b"\x00\xff garbage \x1b[2J").unwrap()),
        ("scratch: truncated", |s, _| truncate(s, 2)),
        ("scratch: empty", |s, _| std::fs::write(s, b"").unwrap()),
        ("scratch: foreign version", |s, _| std::fs::write(s, br#"{"version":2,"delegates":[]}"#).unwrap()),
        ("scratch: records of the wrong shape", |s, _| std::fs::write(s, br#"[{"Bytes":42}]"#).unwrap()),
        ("scratch: a path-like type inside", |s, _| {
            let text = std::fs::read_to_string(s).unwrap();
            let mut v: Value = serde_json::from_str(&text).unwrap();
            use base64::Engine;
            let evil = json!({"cniVersion": "1.0.0", "name": "evil", "type": "../../../bin/false"});
            v[0]["Bytes"] = base64::engine::general_purpose::STANDARD.encode(evil.to_string()).into();
            std::fs::write(s, v.to_string()).unwrap();
        }),
        ("results: truncated", |_, r| for_each_file(r, |p| truncate(p, 2))),
        ("results: foreign kind", |_, r| {
            for_each_file(r, |p| {
                let text = std::fs::read_to_string(p).unwrap().replace("cniCacheV1", "cniCacheV9");
                std::fs::write(p, text).unwrap();
            })
        }),
        ("both: garbage", |s, r| {
            std::fs::write(s, b"{{{").unwrap();
            for_each_file(r, |p| std::fs::write(p, b"}}}").unwrap());
        }),
        ("both: gone", |s, r| {
            std::fs::remove_file(s).unwrap();
            std::fs::remove_dir_all(r).unwrap();
        }),
        ("a temp file of a write that was cut short", |s, _| {
            let tmp = s.with_file_name(format!(".{}.tmp.999999", s.file_name().unwrap().to_string_lossy()));
            std::fs::write(tmp, b"[{\"Na").unwrap();
        }),
    ];
    let mut failures = Vec::new();
    for (name, corrupt) in &cases {
        let conf = w.conf(vec![w.master(), w.macvlan("fault-macvlan")], json!({}));
        let add = w.invocation("ADD");
        let r = w.add_ok(&add, &conf);
        let scratch = w.dir.scratch_cache(&add.env["CNI_CONTAINERID"]);
        corrupt(&scratch, &w.dir.cni_dir.join("results"));
        let mut with_prev = conf.clone();
        with_prev["prevResult"] = r;
        let first = add.command("DEL").run_json(&with_prev);
        let second = add.command("DEL").set("CNI_NETNS", "").run_json(&conf);
        for (n, out) in [(1, &first), (2, &second)] {
            if out.exit_code != 0 || out.stderr.contains("panicked") {
                failures.push(format!("{name}: DEL #{n}: exit {} {}", out.exit_code, out.stdout));
            }
        }
        let leaks = w.leak_check().leaks();
        if !leaks.is_empty() {
            failures.push(format!("{name}: {leaks:?}"));
            let _ = std::fs::remove_dir_all(&w.dir.cni_dir);
        }
        eprintln!("cache {name}: DELs exit {} / {}", first.exit_code, second.exit_code);
    }
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

fn truncate(p: &std::path::Path, div: usize) {
    let data = std::fs::read(p).unwrap();
    std::fs::write(p, &data[..data.len() / div]).unwrap();
}

fn for_each_file(dir: &std::path::Path, f: impl Fn(&std::path::Path)) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        f(&e.path());
    }
}

/// A World whose cniDir lives on a 64 KiB tmpfs (`<tmp>/fs/cni`; the filler, if any,
/// sits next to it).
fn world_on_tmpfs(read_only: bool) -> (World, Tmpfs) {
    let mut w = World::new();
    let fs = Tmpfs::mount(&w.dir.tmp.path().join("fs"), 64 * 1024, read_only);
    w.dir.cni_dir = fs.dir.join("cni");
    (w, fs)
}

#[test]
fn read_only_cache_dir() {
    require_root!();
    let _tally = Tally::start("read_only_cache_dir");
    let (w, fs) = world_on_tmpfs(true);
    let conf = w.conf(vec![w.master(), w.dir.fake("fk", "1.0.0", json!({}))], json!({}));
    // ADD cannot record what it would do: it does nothing
    let add = w.invocation("ADD");
    let e = add.run_json(&conf).err(5);
    assert!(e["msg"].as_str().unwrap().contains("cannot create"), "{e}");
    assert!(w.dir.calls().is_empty());
    w.assert_clean("ADD on a read-only cniDir");
    w.del_twice(&add, &conf, None);

    // the cache becomes read-only after the ADD: DEL still deletes every attachment,
    // and reports that it could not forget them (code 5) so the runtime retries
    fs.remount(false);
    let add = w.invocation("ADD");
    let r = w.add_ok(&add, &conf);
    fs.remount(true);
    let mut first = conf.clone();
    first["prevResult"] = r;
    let e = add.command("DEL").run_json(&first).err(5);
    assert!(e["msg"].as_str().unwrap().contains("cannot remove"), "{e}");
    assert_eq!(w.ns.link_names(), ["lo"], "the attachments are gone all the same");
    assert!(w.leak_check().leaks().iter().all(|l| l.starts_with("cache")), "{:?}", w.leak_check().leaks());
    fs.remount(false);
    w.del_twice(&add, &conf, None);
    w.assert_clean("DEL on a cniDir that was read-only for a while");
}

#[test]
fn full_cache_dir() {
    require_root!();
    let _tally = Tally::start("full_cache_dir");
    let (w, fs) = world_on_tmpfs(false);
    let conf = w.conf(vec![w.master(), w.dir.fake("fk", "1.0.0", json!({}))], json!({}));
    // no space at all: the scratch cache cannot be written, nothing runs
    fs.fill_leaving(0);
    let add = w.invocation("ADD");
    let e = add.run_json(&conf).err(5);
    assert!(e["msg"].as_str().unwrap().contains("No space left"), "{e}");
    assert!(w.dir.calls().is_empty());
    w.assert_clean("ADD on a full cniDir");
    w.del_twice(&add, &conf, None);

    // one page left: the scratch cache fits, the master's result does not: rollback
    std::fs::remove_file(fs.dir.join(".filler")).unwrap();
    fs.fill_leaving(4096);
    let add = w.invocation("ADD");
    let e = add.run_json(&conf).err(5);
    assert!(e["msg"].as_str().unwrap().contains("fault-master"), "{e}");
    w.assert_clean("ADD whose results cache did not fit");
    w.del_twice(&add, &conf, None);
    w.assert_clean("full cniDir");
}

// ---------------------------------------------------------------------------------------
// Load: 50 pods in parallel, random failures from a fixed seed
// ---------------------------------------------------------------------------------------

/// xorshift64*: a fixed seed gives the same pods every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

const SEED: u64 = 0x6d75_6c74_7573_2d72; // "multus-r"
const PODS: usize = 50;
const WORKERS: usize = 5;

/// What goes wrong for one pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Trouble {
    None,
    AddFails,
    AddCrashes,
    AddHangs,
    PodGet503Twice,
    PodGet403,
    NadGet503,
    FirstDelFails,
}

const TROUBLES: [Trouble; 8] = [
    Trouble::None,
    Trouble::AddFails,
    Trouble::AddCrashes,
    Trouble::AddHangs,
    Trouble::PodGet503Twice,
    Trouble::PodGet403,
    Trouble::NadGet503,
    Trouble::FirstDelFails,
];

#[test]
fn fifty_pods_in_parallel_with_random_failures() {
    require_root!();
    let _tally = Tally::start("fifty_pods_in_parallel_with_random_failures");
    let w = World::new();
    let api = Api::start(&w.dir);
    let mut rng = Rng(SEED);
    let master = json!({"cniVersion": "1.0.0", "name": "load-master", "type": "bridge", "bridge": w.bridge,
        "ipam": {"type": "host-local", "dataDir": w.dir.data_dir, "ranges": [[{"subnet": w.subnet}]]}});
    let conf = w.dir.multus_conf(
        "1.0.0",
        vec![master],
        // twice the usual budget: five workers share one stand-in on two loaded cores
        json!({"kubeconfig": api.kubeconfig, "apiTimeoutSeconds": 2 * API_BUDGET, "delegateTimeoutSeconds": 2,
               "logLevel": "error"}),
    );
    struct Pod {
        name: String,
        cid: String,
        ns: String,
        trouble: Trouble,
    }
    let mut netns = Vec::new();
    let pods: Vec<Pod> = (0..PODS)
        .map(|i| {
            let trouble = TROUBLES[(rng.next() % TROUBLES.len() as u64) as usize];
            let name = format!("lp{i:02}x");
            let record = w.dir.tmp.path().join(format!("calls-{name}.log"));
            w.records.borrow_mut().push(record.clone());
            let fake = |net: &str, behaviour: Value| {
                let mut f = behaviour;
                f["record"] = record.display().to_string().into();
                json!({"cniVersion": "1.0.0", "name": net, "type": "fake_delegate", "fake": f})
            };
            let (b1, b2) = match trouble {
                Trouble::AddFails => (json!({"add": "fail7"}), json!({})),
                Trouble::AddCrashes => (json!({}), json!({"add": "signal"})),
                Trouble::AddHangs => (json!({"add": "hang"}), json!({})),
                Trouble::FirstDelFails => (json!({}), json!({"del": "fail7:once"})),
                _ => (json!({}), json!({})),
            };
            api.add_nad("default", &format!("{name}-a"), &fake(&format!("{name}-a"), b1));
            api.add_nad("default", &format!("{name}-b"), &fake(&format!("{name}-b"), b2));
            api.add_pod(
                "default",
                &name,
                &format!("uid-{name}"),
                json!({"k8s.v1.cni.cncf.io/networks": format!("{name}-a,{name}-b")}),
            );
            let pod_path = format!("/pods/{name}");
            match trouble {
                Trouble::PodGet503Twice => fault_n(&api, FaultAction::Status(503), "GET", &pod_path, 2),
                Trouble::PodGet403 => fault(&api, FaultAction::Status(403), "GET", &pod_path),
                Trouble::NadGet503 => fault(&api, FaultAction::Status(503), "GET", &format!("/{name}-b")),
                _ => {}
            }
            let cid = format!("flt-{}", unique("p"));
            w.cids.borrow_mut().push(cid.clone());
            let ns = Netns::new();
            let pod = Pod { name, cid, ns: ns.name.clone(), trouble };
            netns.push(ns);
            pod
        })
        .collect();
    let mut kinds: Vec<Trouble> = pods.iter().map(|p| p.trouble).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds.len(), TROUBLES.len(), "the seed gives every kind of trouble");

    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(pod) = pods.get(i) else { break };
                    if let Err(e) = run_pod(pod.trouble, &pod.name, &pod.cid, &pod.ns, &conf) {
                        failures.lock().unwrap().push(format!("{} ({:?}): {e}", pod.name, pod.trouble));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} of {PODS} pods failed:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{PODS} pods ADDed and DELeted twice by {WORKERS} workers in {:.1?}", started.elapsed());
    let mut check = w.leak_check();
    check.netns.extend(netns.iter());
    check.assert_clean("50 pods");

    fn run_pod(trouble: Trouble, name: &str, cid: &str, ns: &str, conf: &Value) -> Result<(), String> {
        let links = || {
            let mut v: Vec<String> = links_in(Some(ns)).into_iter().map(|l| l.name).collect();
            v.sort();
            v
        };
        let args = format!(
            "K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID=uid-{name};IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"
        );
        let add = Invocation::new("ADD", cid, &format!("/var/run/netns/{ns}")).set("CNI_ARGS", &args);
        let out = add.run_json(conf);
        let expected = match trouble {
            Trouble::None | Trouble::PodGet503Twice | Trouble::FirstDelFails => 0,
            Trouble::AddFails => 7,
            Trouble::AddCrashes | Trouble::AddHangs => 100,
            Trouble::PodGet403 => 101,
            Trouble::NadGet503 => 11,
        };
        let code =
            if out.exit_code == 0 { 0 } else { out.docs.first().and_then(|e| e["code"].as_u64()).unwrap_or(999) };
        if code != expected || out.stderr.contains("panicked") {
            return Err(format!("ADD gave {code}, expected {expected}: {}", out.stdout));
        }
        if expected == 0 {
            let names = links();
            if names != ["eth0", "lo"] {
                return Err(format!("after ADD: links {names:?}"));
            }
        } else if links() != ["lo"] {
            return Err(format!("after the failed ADD: links {:?}", links()));
        }
        let mut first = conf.clone();
        if let Some(r) = out.docs.first().filter(|_| expected == 0) {
            first["prevResult"] = r.clone();
        }
        let del1 = add.command("DEL").run_json(&first);
        let del1_code =
            if del1.exit_code == 0 { 0 } else { del1.docs.first().map_or(999, |e| e["code"].as_u64().unwrap_or(999)) };
        let want_del1 = if trouble == Trouble::FirstDelFails { 7 } else { 0 };
        if del1_code != want_del1 {
            return Err(format!("DEL #1 gave {del1_code}, expected {want_del1}: {}", del1.stdout));
        }
        let del2 = add.command("DEL").set("CNI_NETNS", "").run_json(conf);
        if del2.exit_code != 0 {
            return Err(format!("DEL #2 failed: {}", del2.stdout));
        }
        if links() != ["lo"] {
            return Err(format!("after DEL: links {:?}", links()));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Files we read are rewritten while invocations run
// ---------------------------------------------------------------------------------------

/// `clusterNetwork` names a conflist file that an installer rewrites in place (torn
/// reads on purpose: truncate, half, pause, rest), and the kubeconfig is replaced
/// (token rotation) all the while. Every ADD either works or fails cleanly; the DELs
/// clean up after both.
#[test]
fn config_files_rewritten_while_invocations_run() {
    require_root!();
    let _tally = Tally::start("config_files_rewritten_while_invocations_run");
    let w = World::new();
    let api = api_for(&w);
    let conf_dir = w.dir.tmp.path().join("net.d");
    std::fs::create_dir(&conf_dir).unwrap();
    let master_file = conf_dir.join("10-master.conflist");
    let versions: Vec<String> = (0..2)
        .map(|i| {
            let mut m = w.master();
            m["plugins"][0]["mtu"] = (1400 + i * 50).into();
            serde_json::to_string_pretty(&m).unwrap()
        })
        .collect();
    std::fs::write(&master_file, &versions[0]).unwrap();
    let mut conf = w.conf(
        vec![],
        json!({"kubeconfig": api.kubeconfig, "apiTimeoutSeconds": API_BUDGET,
                                         "clusterNetwork": master_file, "logLevel": "error"}),
    );
    conf.as_object_mut().unwrap().remove("delegates");

    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let text = versions[n % 2].as_bytes();
                use std::io::Write;
                let mut f = std::fs::File::create(&master_file).unwrap(); // truncates: a reader may see nothing
                f.write_all(&text[..text.len() / 2]).unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(2));
                f.write_all(&text[text.len() / 2..]).unwrap();
                drop(f);
                if n.is_multiple_of(5) {
                    api.standin.write_kubeconfig(&api.kubeconfig, &api.token).unwrap();
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        for _ in 0..16 {
            let add = w.invocation("ADD");
            let out = add.run_json(&conf);
            assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
            let key = match out.exit_code {
                0 => "ok".to_string(),
                _ => format!("code {}", out.json()["code"]),
            };
            if out.exit_code == 0 {
                w.chains.borrow_mut().extend(portmap_chains(&add.env["CNI_CONTAINERID"]));
            } else {
                // a torn read is a decode/config error (7), never anything half-done
                assert_eq!(out.json()["code"], 7, "{}", out.stdout);
                assert_eq!(w.ns.link_names(), ["lo"], "{}", out.stdout);
            }
            *outcomes.entry(key).or_default() += 1;
            let prev = out.docs.first().filter(|_| out.exit_code == 0).cloned();
            w.del_twice(&add, &conf, prev.as_ref());
            assert_eq!(w.ns.link_names(), ["lo"]);
        }
        stop.store(true, Ordering::SeqCst);
    });
    eprintln!("ADDs while the config was rewritten: {outcomes:?}");
    assert!(outcomes.get("ok").copied().unwrap_or(0) > 0, "{outcomes:?}");
    w.assert_clean("config rewritten");
}

/// The runtime lost track of a sandbox whose ADD was killed (no DEL ever comes): its
/// next GC, without that container in `cni.dev/valid-attachments`, removes everything.
#[test]
fn gc_cleans_up_after_a_killed_add_the_runtime_forgot() {
    require_root!();
    let _tally = Tally::start("gc_cleans_up_after_a_killed_add_the_runtime_forgot");
    let w = World::new();
    let mut conf = w.conf(
        vec![w.master(), w.macvlan("fault-macvlan"), w.dir.fake("stuck", "1.0.0", json!({"add": "hang"}))],
        json!({"delegateTimeoutSeconds": 120}),
    );
    conf["cniVersion"] = "1.1.0".into();
    let add = w.invocation("ADD");
    let cid = add.env["CNI_CONTAINERID"].clone();
    kill_mid_add(&w, &add, &conf, || w.fake_calls(&cid).iter().any(|c| c.0 == "ADD"));
    w.chains.borrow_mut().extend(portmap_chains(&cid));
    assert!(!w.leak_check().leaks().is_empty(), "the killed ADD left something for GC to find");
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    Invocation::new("GC", "", "")
        .unset("CNI_CONTAINERID")
        .unset("CNI_NETNS")
        .unset("CNI_IFNAME")
        .unset("CNI_ARGS")
        .run_json(&gc)
        .ok();
    w.assert_clean("GC after a killed ADD");
}
