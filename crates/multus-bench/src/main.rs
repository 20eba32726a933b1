//! `make bench`: what one ADD and one DEL of the `multus` binary cost, apart from the
//! delegates it runs.
//!
//! Every invocation is a real process run as containerd runs it (env + stdin), in a real
//! network namespace, against the Kubernetes API stand-in (with injected latency). For
//! each scenario the same delegates are also run directly, without multus, so that
//! **overhead = multus wall time − delegates-alone wall time**.
//!
//! The stand-in speaks what a real kube-apiserver speaks: HTTPS (its own CA, in the
//! kubeconfig), HTTP/2 by ALPN, a required bearer token, and RBAC answers: each
//! scenario runs with `patch pods` granted or with Go Multus' stock ClusterRole (no
//! `patch` on pods: 403). The plugin's peak memory is its own `VmHWM`, sampled from
//! `/proc/PID/status` during untimed warm-up runs (`wait4`'s `ru_maxrss` is seeded with
//! the spawning process's peak, so it measures the bench, not the plugin).

use clap::Parser;
use kube_standin::StandIn;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "multus-bench")]
struct Opts {
    /// The multus binary under test (a release build).
    #[arg(long, default_value = "target/release/multus")]
    multus: PathBuf,
    /// Debian's CNI plugins.
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_bin: PathBuf,
    /// Measured iterations per scenario.
    #[arg(long, default_value_t = 25)]
    iterations: usize,
    /// Added API latencies, milliseconds.
    #[arg(long, value_delimiter = ',', default_value = "0,1,10")]
    latencies: Vec<u64>,
    /// NADs per pod.
    #[arg(long, value_delimiter = ',', default_value = "0,1,3,8")]
    nads: Vec<usize>,
    /// Pods ADDed (then DELed) at once for the throughput figure.
    #[arg(long, default_value_t = 50)]
    concurrent: usize,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/bench.json")]
    out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Delegates {
    Noop,
    Real,
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    /// The caches on a tmpfs instead of the disk: our cost without the fsyncs.
    tmpfs_cache: bool,
    delegates: Delegates,
    nads: usize,
    runtime_annotations: bool,
    latency_ms: u64,
    /// Go Multus' stock ClusterRole: no `patch` on pods (the status goes by `pods/status`).
    stock_rbac: bool,
}

struct Env {
    multus: PathBuf,
    cni_bin: PathBuf,
    work: PathBuf,
    bin_dir: PathBuf,
    standin: StandIn,
    kubeconfig: PathBuf,
    netns: Vec<String>,
    parent: String,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (percentile(&v, 0.5), percentile(&v, 0.95))
}

fn sh(args: &[&str]) {
    let ok = Command::new(args[0]).args(&args[1..]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("warning: {} failed", args.join(" "));
    }
}

impl Env {
    fn setup(opts: &Opts) -> Env {
        let pid = std::process::id();
        let work = PathBuf::from(format!("/run/multus-bench-{pid}"));
        let bin_dir = work.join("bin");
        std::fs::create_dir_all(&bin_dir).expect("work dir");
        let noop = std::env::current_exe().expect("exe").with_file_name("cni-noop");
        std::os::unix::fs::symlink(&noop, bin_dir.join("cni-noop")).expect("noop plugin");
        for p in ["bridge", "host-local", "macvlan", "loopback"] {
            std::os::unix::fs::symlink(opts.cni_bin.join(p), bin_dir.join(p)).expect("plugin link");
        }
        std::fs::create_dir_all(work.join("tmpfs")).expect("tmpfs dir");
        sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=16m,mode=0700",
            "multus-bench",
            &work.join("tmpfs").to_string_lossy(),
        ]);
        let standin = StandIn::start();
        let kubeconfig = work.join("kubeconfig");
        standin.write_kubeconfig(&kubeconfig, "bench").expect("kubeconfig");
        let parent = format!("mbp{pid}");
        sh(&["ip", "link", "add", &parent, "type", "veth", "peer", "name", &format!("mbq{pid}")]);
        sh(&["ip", "link", "set", &parent, "up"]);
        sh(&["ip", "link", "set", &format!("mbq{pid}"), "up"]);
        let netns: Vec<String> = (0..opts.concurrent.max(1))
            .map(|i| {
                let n = format!("mbench-{pid}-{i}");
                sh(&["ip", "netns", "add", &n]);
                sh(&["ip", "-n", &n, "link", "set", "lo", "up"]);
                n
            })
            .collect();
        Env {
            multus: opts.multus.clone(),
            cni_bin: opts.cni_bin.clone(),
            work,
            bin_dir,
            standin,
            kubeconfig,
            netns,
            parent,
        }
    }

    fn master(&self, d: Delegates) -> Value {
        match d {
            Delegates::Noop => json!({"cniVersion": "1.0.0", "name": "primary", "type": "cni-noop"}),
            Delegates::Real => json!({"cniVersion": "1.0.0", "name": "primary", "plugins": [{
                "type": "bridge", "bridge": format!("mbb{}", std::process::id()), "isGateway": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.76.0.0/16"}]],
                         "dataDir": self.work.join("ipam").to_string_lossy()}}]}),
        }
    }

    fn nad_config(&self, d: Delegates, k: usize) -> Value {
        match d {
            Delegates::Noop => json!({"cniVersion": "1.0.0", "name": format!("nad-{k}"), "type": "cni-noop"}),
            Delegates::Real => json!({"cniVersion": "1.0.0", "name": format!("nad-{k}"), "type": "macvlan",
                "master": self.parent, "mode": "bridge",
                "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("10.77.{k}.0/24")}]],
                         "dataDir": self.work.join("ipam").to_string_lossy()}}),
        }
    }

    fn prepare(&self, s: &Scenario) -> Value {
        let names: Vec<String> = (1..=s.nads).map(|k| format!("nad-{k}")).collect();
        for k in 1..=s.nads {
            self.standin.add_nad(json!({
                "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": format!("nad-{k}"), "namespace": "default"},
                "spec": {"config": self.nad_config(s.delegates, k).to_string()}
            }));
        }
        let mut annotations = serde_json::Map::new();
        if !names.is_empty() {
            annotations.insert("k8s.v1.cni.cncf.io/networks".into(), names.join(",").into());
        }
        for i in 0..self.netns.len() {
            self.standin.add_pod(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("bench-{i}"), "namespace": "default", "annotations": annotations}}));
        }
        self.standin.set_latency(Duration::from_millis(s.latency_ms));
        if s.stock_rbac {
            self.standin.deny("patch", "pods");
        } else {
            self.standin.allow("patch", "pods");
        }
        // What the plugin learnt about the previous scenario's RBAC is not this one's.
        for cache in ["cni", "tmpfs/cni"] {
            let _ = std::fs::remove_file(self.work.join(cache).join(".status-write-method"));
        }
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus",
            "kubeconfig": self.kubeconfig.to_string_lossy(),
            "cniDir": self.work.join(if s.tmpfs_cache { "tmpfs/cni" } else { "cni" }).to_string_lossy(),
            "binDir": self.bin_dir.to_string_lossy(),
            "delegates": [self.master(s.delegates)],
        });
        if s.runtime_annotations {
            conf["capabilities"] = json!({"io.kubernetes.cri.pod-annotations": true});
            conf["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": annotations});
        }
        conf
    }

    /// Run the multus binary once as containerd would; returns its wall time.
    fn multus(&self, command: &str, conf: &Value, pod: usize) -> Duration {
        let ns = &self.netns[pod];
        let args = format!(
            "K8S_POD_INFRA_CONTAINER_ID=c{pod};IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench-{pod}"
        );
        run(&self.multus, command, &format!("c{pod}"), &format!("/var/run/netns/{ns}"), "eth0", &args, conf)
    }

    /// The same delegates run directly, in order (ADD) or reverse (DEL).
    fn direct(&self, command: &str, s: &Scenario, pod: usize) -> Duration {
        let ns = format!("/var/run/netns/{}", self.netns[pod]);
        let mut nets: Vec<(String, Value)> = vec![("eth0".into(), self.master(s.delegates))];
        nets.extend((1..=s.nads).map(|k| (format!("net{k}"), self.nad_config(s.delegates, k))));
        if command == "DEL" {
            nets.reverse();
        }
        let mut total = Duration::ZERO;
        for (ifname, conf) in nets {
            let plugins = match conf.get("plugins") {
                Some(ps) => ps.as_array().cloned().unwrap_or_default(),
                None => vec![conf.clone()],
            };
            for mut p in plugins {
                p["name"] = conf["name"].clone();
                p["cniVersion"] = conf["cniVersion"].clone();
                let t = p["type"].as_str().unwrap_or_default().to_string();
                total += run(&self.bin_dir.join(t), command, &format!("c{pod}"), &ns, &ifname, "IgnoreUnknown=1", &p);
            }
        }
        total
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for n in &self.netns {
            sh(&["ip", "netns", "del", n]);
        }
        sh(&["ip", "link", "del", &self.parent]);
        let _ = Command::new("ip")
            .args(["link", "del", &format!("mbb{}", std::process::id())])
            .stderr(Stdio::null())
            .status();
        sh(&["umount", &self.work.join("tmpfs").to_string_lossy()]);
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// The largest resident set of any multus process (KiB): its own `VmHWM` (its delegates'
/// are not included), sampled while it runs (see [`own_peak_rss`]).
static PEAK_MULTUS_RSS_KIB: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// When set, `run` samples the plugin's `VmHWM` (untimed runs only: polling costs time).
static SAMPLE_RSS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `VmHWM` of a live process, KiB (`None` once it is a zombie: its memory is gone).
fn vm_hwm_kib(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The child's own peak RSS: `VmHWM` polled until it exits (left unreaped, WNOWAIT). The
/// last sample can miss a peak in the final microseconds; the process then only tears
/// down, so the figure is a tight lower bound, where `ru_maxrss` is no bound at all.
fn own_peak_rss(pid: u32) -> i64 {
    let mut peak = 0;
    loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak = peak.max(kib);
        }
        let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
        // SAFETY: our own child's pid and a pointer to a live local.
        let r =
            unsafe { libc::waitid(libc::P_PID, pid, info.as_mut_ptr(), libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
        // SAFETY: zeroed, then filled by waitid when a child changed state.
        let exited = r != 0 || unsafe { info.assume_init().si_pid() } != 0;
        if exited {
            return peak;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

// The child is reaped with wait4 (to read its own rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run(bin: &Path, command: &str, cid: &str, netns: &str, ifname: &str, args: &str, conf: &Value) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(conf.to_string().as_bytes());
    }
    // Its output is small enough to stay in the pipes until we read them after it exited.
    let is_multus = bin.file_name().is_some_and(|n| n == "multus");
    if is_multus && SAMPLE_RSS.load(std::sync::atomic::Ordering::Relaxed) {
        PEAK_MULTUS_RSS_KIB.fetch_max(own_peak_rss(child.id()), std::sync::atomic::Ordering::Relaxed);
    }
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: a valid pid of our own child and pointers to live locals.
    let waited = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, usage.as_mut_ptr()) };
    let took = start.elapsed();
    assert_eq!(waited, child.id() as libc::pid_t, "wait4 failed: {}", std::io::Error::last_os_error());
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut o, &mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        panic!("{} {command} failed: {stdout}\n{stderr}", bin.display());
    }
    took
}

struct Measured {
    scenario: Scenario,
    add: (f64, f64),
    del: (f64, f64),
    direct_add: (f64, f64),
    direct_del: (f64, f64),
    add_requests: f64,
    del_requests: f64,
    add_request_kinds: Vec<String>,
    /// Sequential waves of API requests in one ADD (requests of a wave are in flight
    /// together); meaningful when latency is injected.
    add_round_trips: f64,
    /// TCP connections and TLS handshakes the stand-in saw per ADD.
    add_connections: f64,
    add_handshakes: f64,
    /// The largest resident set of a multus process in this scenario (KiB).
    peak_rss_kib: i64,
}

/// Count the sequential waves: with latency L per request, a request that had to wait
/// for another arrives at least L after it; concurrent ones arrive together.
fn round_trips(reqs: &[kube_standin::RecordedRequest], latency: Duration) -> usize {
    let mut at: Vec<u64> = reqs.iter().map(|r| r.arrived_us).collect();
    at.sort_unstable();
    let gap = (latency.as_micros() as u64 / 2).max(1);
    let mut waves = 0;
    let mut wave_start: Option<u64> = None;
    for t in at {
        if wave_start.is_none_or(|s| t >= s + gap) {
            waves += 1;
            wave_start = Some(t);
        }
    }
    waves
}

impl Measured {
    fn add_overhead(&self) -> f64 {
        self.add.0 - self.direct_add.0
    }
    fn del_overhead(&self) -> f64 {
        self.del.0 - self.direct_del.0
    }
}

fn measure(env: &Env, s: Scenario, iterations: usize) -> Measured {
    let conf = env.prepare(&s);
    let before = PEAK_MULTUS_RSS_KIB.swap(0, std::sync::atomic::Ordering::Relaxed);
    // Warm-up, untimed: the plugin's own peak RSS is sampled here, and with the stock
    // RBAC the first ADD learns the status write method, as on a node.
    SAMPLE_RSS.store(true, std::sync::atomic::Ordering::Relaxed);
    for _ in 0..2 {
        env.multus("ADD", &conf, 0);
        env.multus("DEL", &conf, 0);
    }
    SAMPLE_RSS.store(false, std::sync::atomic::Ordering::Relaxed);
    let (mut conns, mut handshakes) = (0usize, 0usize);
    let (mut add, mut del, mut dadd, mut ddel) = (vec![], vec![], vec![], vec![]);
    let (mut add_req, mut del_req, mut waves) = (0usize, 0usize, 0usize);
    let mut kinds = Vec::new();
    for i in 0..iterations {
        env.standin.clear_requests();
        env.standin.clear_connections();
        add.push(ms(env.multus("ADD", &conf, 0)));
        let reqs = env.standin.requests();
        let opened = env.standin.connections();
        conns += opened.len();
        handshakes += opened.iter().filter(|c| c.tls_handshake).count();
        add_req += reqs.len();
        waves += round_trips(&reqs, Duration::from_millis(s.latency_ms));
        if i == 0 {
            kinds = reqs.iter().map(|r| format!("{} {}", r.verb, r.resource)).collect();
        }
        env.standin.clear_requests();
        del.push(ms(env.multus("DEL", &conf, 0)));
        del_req += env.standin.requests().len();
        dadd.push(ms(env.direct("ADD", &s, 0)));
        ddel.push(ms(env.direct("DEL", &s, 0)));
    }
    kinds.sort();
    Measured {
        scenario: s,
        add: stats(add),
        del: stats(del),
        direct_add: stats(dadd),
        direct_del: stats(ddel),
        add_requests: add_req as f64 / iterations as f64,
        del_requests: del_req as f64 / iterations as f64,
        add_request_kinds: kinds,
        add_round_trips: waves as f64 / iterations as f64,
        add_connections: conns as f64 / iterations as f64,
        add_handshakes: handshakes as f64 / iterations as f64,
        peak_rss_kib: PEAK_MULTUS_RSS_KIB.fetch_max(before, std::sync::atomic::Ordering::Relaxed),
    }
}

/// `concurrent` pods ADDed at once, then DELed at once: pods per second.
fn throughput(env: &Env, concurrent: usize) -> (f64, f64, f64) {
    let s = Scenario {
        tmpfs_cache: false,
        delegates: Delegates::Real,
        nads: 1,
        runtime_annotations: false,
        latency_ms: 0,
        stock_rbac: false,
    };
    let conf = env.prepare(&s);
    let phase = |command: &'static str| {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for pod in 0..concurrent {
                let conf = &conf;
                scope.spawn(move || env.multus(command, conf, pod));
            }
        });
        start.elapsed()
    };
    let add = phase("ADD");
    let del = phase("DEL");
    (concurrent as f64 / add.as_secs_f64(), ms(add), ms(del))
}

fn peak_rss_kib() -> i64 {
    PEAK_MULTUS_RSS_KIB.load(std::sync::atomic::Ordering::Relaxed)
}

fn main() {
    let opts = Opts::parse();
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("make bench needs root (network namespaces)");
        std::process::exit(1);
    }
    let binary_size = std::fs::metadata(&opts.multus).map(|m| m.len()).unwrap_or_else(|e| {
        eprintln!("{}: {e} (make bench builds it with `cargo build --release`)", opts.multus.display());
        std::process::exit(1);
    });
    let env = Env::setup(&opts);
    let _ = &env.cni_bin;
    let mut all = Vec::new();

    // Phase 1: no-op delegates.
    for &annotations in &[false, true] {
        for &latency in &opts.latencies {
            for &nads in &opts.nads {
                let s = Scenario {
                    tmpfs_cache: false,
                    delegates: Delegates::Noop,
                    nads,
                    runtime_annotations: annotations,
                    latency_ms: latency,
                    stock_rbac: false,
                };
                all.push(measure(&env, s, opts.iterations));
            }
        }
    }
    // Go Multus' stock ClusterRole (no `patch` on pods).
    for &latency in &opts.latencies {
        let s = Scenario {
            tmpfs_cache: false,
            delegates: Delegates::Noop,
            nads: 1,
            runtime_annotations: false,
            latency_ms: latency,
            stock_rbac: true,
        };
        all.push(measure(&env, s, opts.iterations));
    }
    // The same without the disk: the caches on a tmpfs (what is ours besides fsync).
    for &annotations in &[false, true] {
        let s = Scenario {
            tmpfs_cache: true,
            delegates: Delegates::Noop,
            nads: 1,
            runtime_annotations: annotations,
            latency_ms: 0,
            stock_rbac: false,
        };
        all.push(measure(&env, s, opts.iterations));
    }
    let rss_kib = peak_rss_kib();
    // Phase 2: Debian's real bridge + host-local and macvlan.
    for &nads in &opts.nads {
        let s = Scenario {
            tmpfs_cache: false,
            delegates: Delegates::Real,
            nads,
            runtime_annotations: false,
            latency_ms: 0,
            stock_rbac: false,
        };
        all.push(measure(&env, s, opts.iterations));
    }
    let (pods_per_s, conc_add_ms, conc_del_ms) = throughput(&env, opts.concurrent);

    println!(
        "\n{:<5} {:>4} {:>5} {:>5} {:>4} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>6} {:>5} {:>4} {:>4} {:>4} {:>7}",
        "deleg",
        "nads",
        "annot",
        "rbac",
        "lat",
        "ADD p50",
        "ADD p95",
        "overhd",
        "DEL p50",
        "DEL p95",
        "overhd",
        "reqADD",
        "reqDEL",
        "RTs",
        "conn",
        "TLS",
        "RSS MiB"
    );
    for m in &all {
        let s = m.scenario;
        println!(
            "{:<5} {:>4} {:>5} {:>5} {:>4} | {:>8.2} {:>8.2} {:>8.2} | {:>8.2} {:>8.2} {:>8.2} | {:>6.1} {:>5.1} {:>4.1} {:>4.1} {:>4.1} {:>7.1}",
            format!("{:?}{}", s.delegates, if s.tmpfs_cache { "*" } else { "" }).to_lowercase(),
            s.nads,
            if s.runtime_annotations { "cri" } else { "get" },
            if s.stock_rbac { "stock" } else { "patch" },
            s.latency_ms,
            m.add.0,
            m.add.1,
            m.add_overhead(),
            m.del.0,
            m.del.1,
            m.del_overhead(),
            m.add_requests,
            m.del_requests,
            if s.latency_ms > 0 { m.add_round_trips } else { f64::NAN },
            m.add_connections,
            m.add_handshakes,
            m.peak_rss_kib as f64 / 1024.0
        );
    }

    // The targets of issue 7.
    let find_rbac = |d: Delegates, nads: usize, cri: bool, lat: u64, stock: bool| {
        all.iter().find(|m| {
            m.scenario.stock_rbac == stock
                && m.scenario.delegates == d
                && m.scenario.nads == nads
                && m.scenario.runtime_annotations == cri
                && m.scenario.latency_ms == lat
        })
    };
    let find = |d: Delegates, nads: usize, cri: bool, lat: u64| find_rbac(d, nads, cri, lat, false);
    let mut targets = Vec::new();
    let mut check = |name: String, value: f64, limit: f64| {
        targets.push(json!({"target": name, "value": value, "limit": limit, "met": value <= limit}));
    };
    if let Some(m) = all.iter().find(|m| m.scenario.tmpfs_cache && !m.scenario.runtime_annotations) {
        check("ADD overhead median, 1 NAD, 0 ms latency, cache on tmpfs (ms)".into(), m.add_overhead(), 3.0);
        check("DEL overhead median, cached, cache on tmpfs (ms)".into(), m.del_overhead(), 2.0);
    }
    if let Some(m) = find(Delegates::Noop, 1, false, 0) {
        check("ADD overhead median, 1 NAD, 0 ms latency (ms)".into(), m.add_overhead(), 3.0);
        check("DEL overhead median, cached (ms)".into(), m.del_overhead(), 2.0);
        check("DEL API requests when cached".into(), m.del_requests, 0.0);
    }
    for cri in [false, true] {
        if let (Some(m0), Some(m10)) = (find(Delegates::Noop, 1, cri, 0), find(Delegates::Noop, 1, cri, 10)) {
            let label = if cri { "runtime-passed annotations" } else { "pod GET" };
            check(
                format!("blocking API round trips per ADD, {label} (from request arrival times)"),
                m10.add_round_trips,
                if cri { 2.0 } else { 3.0 },
            );
            let _ = m0;
            check(format!("ADD overhead with 10 ms latency, {label} (ms)"), m10.add_overhead(), 35.0);
        }
    }
    if let (Some(m1), Some(m8)) = (find(Delegates::Noop, 1, false, 0), find(Delegates::Noop, 8, false, 0)) {
        check("overhead growth per extra NAD (ms)".into(), (m8.add_overhead() - m1.add_overhead()) / 7.0, 0.5);
    }
    // The targets of issue 10: over HTTPS with token auth, both RBAC variants.
    if let Some(m) = find(Delegates::Noop, 1, false, 0) {
        check("ADD overhead over HTTPS, 1 NAD, 0 ms, `patch pods` granted (ms)".into(), m.add_overhead(), 6.0);
        check("TLS handshakes per ADD, `patch pods` granted".into(), m.add_handshakes, 1.0);
        check("connections per ADD, `patch pods` granted".into(), m.add_connections, 1.0);
    }
    if let Some(m) = find_rbac(Delegates::Noop, 1, false, 0, true) {
        check("ADD overhead over HTTPS, 1 NAD, 0 ms, stock RBAC (ms)".into(), m.add_overhead(), 8.0);
        check("TLS handshakes per ADD, stock RBAC".into(), m.add_handshakes, 1.0);
        check("API requests per ADD, stock RBAC, after the node's first ADD".into(), m.add_requests, 5.0);
        check("DEL API requests, stock RBAC".into(), m.del_requests, 0.0);
    }
    check("peak RSS of multus, its own VmHWM (MiB)".into(), rss_kib as f64 / 1024.0, 8.0);
    check("stripped release binary (MiB)".into(), binary_size as f64 / 1_048_576.0, 10.0);

    println!("\n{:<60} {:>9} {:>7}  met", "target", "value", "limit");
    for t in &targets {
        println!(
            "{:<60} {:>9.2} {:>7.1}  {}",
            t["target"].as_str().unwrap_or_default(),
            t["value"].as_f64().unwrap_or_default(),
            t["limit"].as_f64().unwrap_or_default(),
            if t["met"] == true { "yes" } else { "NO" }
        );
    }
    println!("(* = caches on a tmpfs: the same run without the disk's fsyncs)");
    println!(
        "\n{} pods ADDed concurrently (real bridge + macvlan, 1 NAD): {:.0} ms ({pods_per_s:.1} pods/s); DEL: {:.0} ms",
        opts.concurrent, conc_add_ms, conc_del_ms
    );

    let report = json!({
        "binary_bytes": binary_size,
        "peak_rss_kib": rss_kib,
        "iterations": opts.iterations,
        "scenarios": all.iter().map(|m| json!({
            "delegates": format!("{:?}", m.scenario.delegates).to_lowercase(),
            "cache_on_tmpfs": m.scenario.tmpfs_cache,
            "nads": m.scenario.nads,
            "runtime_annotations": m.scenario.runtime_annotations,
            "latency_ms": m.scenario.latency_ms,
            "stock_rbac": m.scenario.stock_rbac,
            "add_connections": m.add_connections, "add_tls_handshakes": m.add_handshakes,
            "add_ms": {"p50": m.add.0, "p95": m.add.1}, "del_ms": {"p50": m.del.0, "p95": m.del.1},
            "direct_add_ms": {"p50": m.direct_add.0, "p95": m.direct_add.1},
            "direct_del_ms": {"p50": m.direct_del.0, "p95": m.direct_del.1},
            "add_overhead_ms": m.add_overhead(), "del_overhead_ms": m.del_overhead(),
            "add_requests": m.add_requests, "del_requests": m.del_requests, "add_round_trips": m.add_round_trips, "peak_rss_kib": m.peak_rss_kib,
            "add_request_kinds": m.add_request_kinds,
        })).collect::<Vec<_>>(),
        "concurrent": {"pods": opts.concurrent, "add_ms": conc_add_ms, "del_ms": conc_del_ms, "pods_per_s": pods_per_s},
        "targets": targets,
    });
    if let Some(dir) = opts.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&opts.out, serde_json::to_vec_pretty(&report).unwrap_or_default()) {
        Ok(()) => println!("report: {}", opts.out.display()),
        Err(e) => eprintln!("cannot write {}: {e}", opts.out.display()),
    }
}
