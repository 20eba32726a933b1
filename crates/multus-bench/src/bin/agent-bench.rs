//! `make bench-agent`: the node agent's figures (issue 14), against the API stand-in.
//!
//! * ADD with the pod's annotations from the runtime and a fresh NAD mirror, 1 NAD:
//!   API requests by kind, blocking round trips (with 5 ms injected latency), and the
//!   time multus adds over running the two delegates directly (cni-noop): the median
//!   of `--iterations` (default 60) back-to-back pairs, in alternating order.
//! * The same ADD without the agent (no mirror): for the scale model.
//! * Where the time goes: the first ADD with its caches on a tmpfs (no fsyncs), and the
//!   same two delegates as static delegates (no API, no mirror).
//! * Agent: time to mirror 1,000 NADs, its RSS then, and NAD change → mirror latency.
//! * A burst of 100 concurrent ADDs under `maxNodeApiRequests`: all succeed, the most
//!   requests in flight at the stand-in.
//!
//! cniDir is on the disk, the mirror and the spool on a tmpfs, as on a node.
//! Needs root (a netns for the ADDs). Prints a table; `--out FILE` writes JSON.

use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const LATENCY: Duration = Duration::from_millis(5);

fn median(v: Vec<f64>) -> f64 {
    quantile(v, 0.5)
}

/// The value at fraction `q` of the sorted samples (nearest rank).
fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn run_cni(bin: &Path, netns: &str, cid: &str, conf: &Value) -> (Duration, bool) {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-1;K8S_POD_UID=uid-1;IgnoreUnknown=1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        eprintln!(
            "{} failed: {}\n{}",
            bin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (start.elapsed(), out.status.success())
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status.lines().find_map(|l| l.strip_prefix(k)?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Sequential waves of requests: with latency L, a request that waited for another
/// arrives at least L after it.
fn round_trips(reqs: &[kube_standin::RecordedRequest]) -> usize {
    let mut at: Vec<u64> = reqs.iter().map(|r| r.arrived_us).collect();
    at.sort_unstable();
    let gap = LATENCY.as_micros() as u64 / 2;
    let (mut waves, mut start) = (0, None::<u64>);
    for t in at {
        if start.is_none_or(|s| t >= s + gap) {
            waves += 1;
            start = Some(t);
        }
    }
    waves
}

/// What one cache write costs on the disk under `dir` right now: the median of 50
/// writes of 600 bytes, each as the plugin writes its results (exclusive temp file,
/// fsync, rename). The overhead rows move with it: this VM's disk is a file on a shared
/// host, and its fsync latency changes from minute to minute.
fn cache_write_ms(dir: &Path) -> f64 {
    use std::os::unix::fs::OpenOptionsExt;
    let times = (0..50)
        .map(|i| {
            let (tmp, name) = (dir.join(format!(".probe-{i}.tmp")), dir.join(format!("probe-{i}")));
            let started = Instant::now();
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).unwrap();
            f.write_all(&[b' '; 600]).unwrap();
            f.sync_all().unwrap();
            std::fs::rename(&tmp, &name).unwrap();
            let took = ms(started.elapsed());
            std::fs::remove_file(&name).unwrap();
            took
        })
        .collect();
    median(times)
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    None
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct NetnsGuard(String);
impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn main() {
    let multus = PathBuf::from(arg("--multus").unwrap_or_else(|| "target/release/multus".into()));
    let noop = std::env::current_exe().expect("exe").with_file_name("cni-noop");
    assert!(noop.exists(), "{} missing: cargo build --release -p multus-bench", noop.display());
    let iterations: usize = arg("--iterations").and_then(|s| s.parse().ok()).unwrap_or(60);
    let tmp = std::env::temp_dir().join(format!("multus-agent-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    // Where a node keeps them: cniDir on the node's disk (/var/lib/cni/multus), the mirror
    // and the spool under /var/run/multus, the DaemonSet's hostPath, which is a tmpfs on
    // every systemd host. This machine's /run is not one; /dev/shm is.
    let run = PathBuf::from(format!("/dev/shm/multus-agent-bench-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let (bin, mirror, cni, spool) = (tmp.join("bin"), run.join("nads"), tmp.join("cni"), run.join("spool"));
    for d in [&bin, &mirror, &cni] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(&noop, bin.join("cni-noop")).unwrap();
    let netns_name = format!("mab-{}", std::process::id());
    assert!(Command::new("ip").args(["netns", "add", &netns_name]).status().unwrap().success(), "ip netns add (root?)");
    let _netns = NetnsGuard(netns_name.clone());
    let netns = format!("/run/netns/{netns_name}");

    let api = kube_standin::StandIn::start();
    let kubeconfig = tmp.join("kubeconfig");
    // The kubeconfig as `multus install` writes it on the node the agent runs on (JSON).
    api.require_token(Some("bench-token"));
    let ca = api.ca_pem().expect("the stand-in serves HTTPS").as_bytes();
    write_private(&kubeconfig, &multus::tools::install::render_kubeconfig(&api.url(), "bench-token", Some(ca)));
    let noop_conf = |name: &str| json!({"cniVersion": "1.0.0", "name": name, "type": "cni-noop"});
    api.add_pod(json!({"metadata": {"name": "pod-1", "namespace": "default", "uid": "uid-1",
        "annotations": {NETWORKS: "net-a"}}, "spec": {"containers": [{"name": "c", "image": "pause"}]}}));
    let nad = |ns: &str, name: &str, tag: usize| {
        json!({"metadata": {"name": name, "namespace": ns, "labels": {"tag": tag.to_string()}},
               "spec": {"config": noop_conf(name).to_string()}})
    };
    api.add_nad(nad("default", "net-a", 0));
    for i in 0..999 {
        api.add_nad(nad(&format!("ns{}", i % 50), &format!("net-{i}"), 0));
    }

    // The agent: 1,000 NADs mirrored.
    let started = Instant::now();
    let agent = Killed(
        Command::new(&multus)
            .args(["agent", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--nad-mirror-dir")
            .arg(&mirror)
            .arg("--spool-dir")
            .arg(&spool)
            .stdout(Stdio::null())
            .spawn()
            .expect("multus agent"),
    );
    wait_for(Duration::from_secs(60), || mirror.join("heartbeat.json").exists()).expect("the agent synced");
    let sync_ms = ms(started.elapsed());
    let entries = std::fs::read_dir(&mirror).unwrap().count() - 1;
    let mut change_ms = Vec::new();
    for i in 1..=20 {
        api.add_nad(nad("default", "net-a", i));
        let file = mirror.join("default_net-a.json");
        let tag = format!("\"tag\":\"{i}\"");
        let took = wait_for(Duration::from_secs(10), || std::fs::read_to_string(&file).is_ok_and(|s| s.contains(&tag)));
        change_ms.push(ms(took.expect("the change reached the mirror")));
    }
    let (rss, hwm) = rss_kib(agent.0.id());

    // ADD, 1 NAD, runtime annotations: with a fresh mirror and without the agent.
    let conf = |extra: Value| {
        let mut c = json!({"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus",
            "kubeconfig": kubeconfig, "binDir": bin, "cniDir": cni, "logLevel": "error",
            "capabilities": {"io.kubernetes.cri.pod-annotations": true},
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {NETWORKS: "net-a"}},
            "delegates": [noop_conf("primary")]});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    // A cniDir on a tmpfs, for the row that shows the cost of the disk's fsyncs.
    let shm_cni = PathBuf::from(format!("/dev/shm/multus-agent-bench-{}", std::process::id()));
    let disk_before = cache_write_ms(&cni);
    let mut rows = Vec::new();
    for (label, c) in [
        ("runtime annotations + fresh mirror", conf(json!({"nadMirrorDir": mirror, "metricsSpoolDir": spool}))),
        ("runtime annotations, no agent", conf(json!({}))),
        ("API annotations, no agent", {
            let mut c = conf(json!({}));
            c.as_object_mut().unwrap().remove("runtimeConfig");
            c
        }),
        // Where the time of the first row goes: without the disk's fsyncs, and without
        // any API at all (the NAD's delegate listed as a second static delegate).
        (
            "runtime annotations + fresh mirror, caches on tmpfs *",
            conf(json!({"nadMirrorDir": mirror, "metricsSpoolDir": spool, "cniDir": shm_cni})),
        ),
        ("no API: the same two delegates, static", {
            let mut c = conf(json!({}));
            let o = c.as_object_mut().unwrap();
            for k in ["kubeconfig", "runtimeConfig", "capabilities"] {
                o.remove(k);
            }
            c["delegates"] = json!([noop_conf("primary"), noop_conf("net-a")]);
            c
        }),
    ] {
        // Requests and round trips, with latency.
        api.set_latency(LATENCY);
        api.clear_requests();
        assert!(run_cni(&multus, &netns, "bench-rt", &c).1);
        let reqs: Vec<_> = api.requests().into_iter().filter(|r| r.path.contains("/namespaces/")).collect();
        let count = |m: &str| reqs.iter().filter(|r| r.method == m).count();
        let (gets, patches, posts) = (count("GET"), count("PATCH"), count("POST"));
        let waves = round_trips(&reqs.iter().filter(|r| r.method != "POST").cloned().collect::<Vec<_>>());
        api.set_latency(Duration::ZERO);
        // Time, without latency: multus vs the two delegates run directly, as pairs run
        // back to back, in alternating order (what one leaves behind, such as the disk's
        // writeback or the stand-in closing a connection, falls on both sides alike). The
        // overhead is the median of the pairs' differences: this VM's speed drifts over
        // seconds, and a pair sees the same speed on both sides.
        let mut with = Vec::new();
        let mut direct = Vec::new();
        let run_direct = || {
            let d0 = run_cni(&bin.join("cni-noop"), &netns, "d", &noop_conf("primary")).0;
            let d1 = run_cni(&bin.join("cni-noop"), &netns, "d", &noop_conf("net-a")).0;
            ms(d0 + d1)
        };
        for i in 0..iterations {
            let add = || ms(run_cni(&multus, &netns, &format!("bench-{i}"), &c).0);
            let (a, d) = if i % 2 == 0 {
                let a = add();
                (a, run_direct())
            } else {
                let d = run_direct();
                (add(), d)
            };
            with.push(a);
            direct.push(d);
        }
        let overheads: Vec<f64> = with.iter().zip(&direct).map(|(a, d)| a - d).collect();
        let (p25, p75) = (quantile(overheads.clone(), 0.25), quantile(overheads.clone(), 0.75));
        rows.push(json!({"mode": label, "gets": gets, "status_patches": patches, "event_posts": posts,
            "blocking_round_trips": waves, "add_ms": median(with.clone()), "direct_ms": median(direct.clone()),
            "overhead_ms": median(overheads), "overhead_p25_ms": p25, "overhead_p75_ms": p75,
            "iterations": iterations}));
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&shm_cni);
    let disk_after = cache_write_ms(&cni);

    // A burst of 100 concurrent ADDs under the brake (API annotations: 3+ requests each).
    const CAP: u32 = 4;
    api.set_latency(Duration::from_millis(2));
    let mut c = conf(json!({"maxNodeApiRequests": CAP, "apiTimeoutSeconds": 60}));
    c.as_object_mut().unwrap().remove("runtimeConfig");
    let started = Instant::now();
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let (multus, netns, c) = (multus.clone(), netns.clone(), c.clone());
            std::thread::spawn(move || run_cni(&multus, &netns, &format!("burst-{i}"), &c).1)
        })
        .collect();
    let ok = handles.into_iter().filter_map(|h| h.join().ok()).filter(|ok| *ok).count();
    let burst_s = started.elapsed().as_secs_f64();
    let max_in_flight = api.max_in_flight();

    println!(
        "| ADD, 1 NAD | GETs | status writes | event POSTs | blocking round trips | ADD ms | direct ms | overhead ms (p25–p75) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} ({:.2}–{:.2}) |",
            r["mode"].as_str().unwrap(),
            r["gets"],
            r["status_patches"],
            r["event_posts"],
            r["blocking_round_trips"],
            r["add_ms"].as_f64().unwrap(),
            r["direct_ms"].as_f64().unwrap(),
            r["overhead_ms"].as_f64().unwrap(),
            r["overhead_p25_ms"].as_f64().unwrap(),
            r["overhead_p75_ms"].as_f64().unwrap()
        );
    }
    println!("(* = cniDir on a tmpfs: the same ADD without the disk's fsyncs)");
    println!(
        "(one cache write on this disk, temp + fsync + rename, median of 50: {disk_before:.2} ms before the rows, {disk_after:.2} ms after)"
    );
    println!();
    println!("| agent | value |");
    println!("|---|---|");
    println!("| NADs mirrored | {entries} |");
    println!("| initial sync of 1,000 NADs | {sync_ms:.0} ms |");
    println!("| RSS with 1,000 NADs (peak) | {:.1} MiB ({:.1} MiB) |", rss as f64 / 1024.0, hwm as f64 / 1024.0);
    println!(
        "| NAD change → mirror, median (max) of 20 | {:.1} ms ({:.1} ms) |",
        median(change_ms.clone()),
        change_ms.iter().cloned().fold(0.0, f64::max)
    );
    println!(
        "| burst of 100 ADDs, maxNodeApiRequests={CAP} | {ok}/100 succeeded in {burst_s:.1} s, max {max_in_flight} requests in flight |"
    );
    let report = json!({"add": rows, "cache_write_ms": [disk_before, disk_after], "agent": {"nads": entries, "sync_ms": sync_ms, "rss_kib": rss, "peak_rss_kib": hwm,
        "change_to_mirror_ms": change_ms}, "burst": {"adds": 100, "ok": ok, "cap": CAP, "max_in_flight": max_in_flight, "seconds": burst_s}});
    if let Some(out) = arg("--out") {
        std::fs::write(out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(&run);
}

/// Write `text` to `path` with mode 0600 (a kubeconfig holds a token).
fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}
