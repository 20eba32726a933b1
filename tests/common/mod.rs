//! Shared helpers of the integration tests: run the `multus` binary as a runtime does,
//! real network namespaces and host links behind drop guards, the fake delegate, and
//! views of what ended up in a netns, in host-local's lease dir and in our caches.
//!
//! Tests that need root and Debian's plugins start with `require_root!()`, which skips
//! them (with `skipped: ...` on stderr) on machines without either.

#![allow(dead_code)] // each test binary uses a different subset

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Debian's reference plugins.
pub const PLUGIN_DIR: &str = "/usr/lib/cni";
/// How long one invocation of the plugin may take before the test gives up on it.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Why this machine cannot run the real-netns tests, if it cannot.
pub fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("not root".into());
    }
    if !Path::new(PLUGIN_DIR).join("bridge").exists() {
        return Some(format!("{PLUGIN_DIR}/bridge is missing (apt-get install containernetworking-plugins)"));
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is missing".into());
    }
    None
}

fn is_root() -> bool {
    // std has no geteuid; /proc/self/status says it without libc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Skip the calling test (return early) when not root or the plugins are missing.
/// (Test files declare `#[macro_use] mod common;`.)
macro_rules! require_root {
    () => {
        if let Some(why) = common::skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// The plugin under test.
pub fn multus_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_multus"))
}

/// The fake delegate (`examples/fake_delegate.rs`). `cargo test` builds examples, but
/// `cargo test --test NAME` does not: then build them first (`cargo build --examples`).
/// (Building from here is no option: a nested cargo invalidates the outer build.)
pub fn fake_delegate_bin() -> PathBuf {
    let bin = multus_bin().parent().expect("target dir").join("examples/fake_delegate");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --examples` first (`cargo test` builds it, but \
         neither `cargo test --test NAME` nor `cargo test --all-targets` does)",
        bin.display()
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fake_delegate.rs");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(s)) = (modified(&bin), modified(&src))
        && s > b
    {
        eprintln!("warning: {} is older than its source; run `cargo build --examples`", bin.display());
    }
    bin
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, at most 15 bytes (an interface name):
/// `prefix` (≤ 3 bytes) + pid + counter, both in hex.
pub fn unique(prefix: &str) -> String {
    assert!(prefix.len() <= 3);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("{prefix}{:x}x{n:x}", std::process::id());
    assert!(name.len() <= 15, "{name}");
    name
}

/// A /24 no other test of this process uses: `10.<pid byte>.<counter>.0/24`.
pub fn unique_subnet() -> (String, String) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst) % 250 + 1;
    let prefix = format!("10.{}.{n}", 100 + std::process::id() % 150);
    (format!("{prefix}.0/24"), prefix)
}

/// Run a command that must succeed; panics with its stderr otherwise.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command whose failure does not matter (cleanup).
pub fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// A network namespace `mrs-<pid>-<n>` (`make clean-netns` knows the prefix) and the
/// host links a test created for it; Drop deletes both, also when the test panicked.
pub struct Netns {
    pub name: String,
    pub path: String,
    host_links: std::cell::RefCell<Vec<String>>,
}

impl Netns {
    pub fn new() -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("mrs-{}-{n}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns { path: format!("/var/run/netns/{name}"), name, host_links: Default::default() }
    }

    /// Delete host link `name` on Drop (a bridge a plugin created, a veth we made).
    pub fn own_host_link(&self, name: &str) {
        self.host_links.borrow_mut().push(name.to_string());
    }

    /// A host veth pair, both ends UP (a working macvlan parent); returns the end to use.
    pub fn host_veth(&self) -> String {
        let a = unique("mva");
        let b = unique("mvb");
        self.own_host_link(&a);
        sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        sh(&["ip", "link", "set", &a, "up"]);
        sh(&["ip", "link", "set", &b, "up"]);
        a
    }

    /// A link named `ifname` inside the netns (a veth pair with both ends inside).
    pub fn add_link(&self, ifname: &str) {
        let peer = unique("prr");
        sh(&["ip", "-n", &self.name, "link", "add", ifname, "type", "veth", "peer", "name", &peer]);
    }

    /// Every link inside the netns.
    pub fn links(&self) -> Vec<LinkView> {
        links_in(Some(&self.name))
    }

    pub fn link(&self, ifname: &str) -> Option<LinkView> {
        self.links().into_iter().find(|l| l.name == ifname)
    }

    /// Names of the links inside the netns, sorted.
    pub fn link_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.links().into_iter().map(|l| l.name).collect();
        v.sort();
        v
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        sh_quiet(&["ip", "netns", "del", &self.name]);
        for l in self.host_links.borrow().iter() {
            sh_quiet(&["ip", "link", "del", l]);
        }
    }
}

/// One link as `ip -j addr` shows it.
#[derive(Debug, Clone)]
pub struct LinkView {
    pub name: String,
    pub mac: String,
    /// `addr/prefix` of every IPv4 and global IPv6 address.
    pub addrs: Vec<String>,
    pub up: bool,
}

/// Links of netns `ns` (or of the host with `None`).
pub fn links_in(ns: Option<&str>) -> Vec<LinkView> {
    let mut args = vec!["ip"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-j", "addr", "show"]);
    let out = sh(&args);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j: {e}: {out}"));
    v.as_array()
        .expect("ip -j addr prints an array")
        .iter()
        .map(|l| LinkView {
            name: l["ifname"].as_str().unwrap_or_default().to_string(),
            mac: l["address"].as_str().unwrap_or_default().to_string(),
            addrs: l["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["family"] == "inet" || a["scope"] == "global")
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
                .collect(),
            up: l["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP")),
        })
        .collect()
}

pub fn host_link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The addresses host-local holds for network `net` in `data_dir` (its lease files;
/// `lock` and `last_reserved_ip.*` are not leases).
pub fn leases(data_dir: &Path, net: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(data_dir.join(net)) else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.parse::<IpAddr>().is_ok())
        .collect();
    v.sort();
    v
}

/// Every file under `dir` (recursively), relative, sorted; empty when `dir` is missing.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// A per-test world: a temp dir holding `cniDir`, a `binDir` with the fake delegate,
/// host-local's `dataDir` and the fake's call log.
pub struct TestDir {
    pub tmp: tempfile::TempDir,
    pub cni_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub record: PathBuf,
}

impl TestDir {
    pub fn new() -> TestDir {
        let tmp = tempfile::Builder::new().prefix("mrs-itest-").tempdir().expect("tempdir");
        let bin_dir = tmp.path().join("bin");
        std::fs::create_dir(&bin_dir).unwrap();
        TestDir {
            cni_dir: tmp.path().join("cni"),
            data_dir: tmp.path().join("ipam"),
            record: tmp.path().join("calls.log"),
            bin_dir,
            tmp,
        }
    }

    /// Put the fake delegate into binDir as `fake_delegate`.
    pub fn with_fake(self) -> TestDir {
        std::os::unix::fs::symlink(fake_delegate_bin(), self.bin_dir.join("fake_delegate")).unwrap();
        self
    }

    /// A fake delegate config named `name` with behaviours `fake` (merged with the call
    /// log path), in `version`.
    pub fn fake(&self, name: &str, version: &str, fake: Value) -> Value {
        let mut f = fake;
        f["record"] = self.record.display().to_string().into();
        json!({"cniVersion": version, "name": name, "type": "fake_delegate", "fake": f})
    }

    /// Our config: `delegates` plus per-test dirs; `extra` keys merged on top.
    pub fn multus_conf(&self, version: &str, delegates: Vec<Value>, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "multus-cni-network",
            "type": "multus",
            "binDir": self.bin_dir,
            "cniDir": self.cni_dir,
            "logLevel": "debug",
            "logToStderr": true,
            "delegates": delegates,
        });
        if let Value::Object(m) = extra {
            for (k, v) in m {
                c[k] = v;
            }
        }
        c
    }

    /// The fake's call log: one entry per invocation, in order.
    pub fn calls(&self) -> Vec<Value> {
        read_calls(&self.record)
    }

    /// `(command, network name, ifname)` of every fake call, in order.
    pub fn call_summary(&self) -> Vec<(String, String, String)> {
        self.calls()
            .iter()
            .map(|c| {
                (
                    c["command"].as_str().unwrap_or_default().to_string(),
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["ifname"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Files in cniDir (scratch and results caches), relative.
    pub fn cache_files(&self) -> Vec<String> {
        files_under(&self.cni_dir)
    }

    pub fn scratch_cache(&self, cid: &str) -> PathBuf {
        self.cni_dir.join(cid)
    }

    pub fn result_cache(&self, net: &str, cid: &str, ifname: &str) -> PathBuf {
        self.cni_dir.join("results").join(format!("{net}-{cid}-{ifname}"))
    }
}

impl Default for TestDir {
    fn default() -> Self {
        TestDir::new()
    }
}

pub fn read_calls(record: &Path) -> Vec<Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record line {l}: {e}")))
        .collect()
}

/// Helper for building call-order expectations.
pub fn call(cmd: &str, name: &str, ifname: &str) -> (String, String, String) {
    (cmd.into(), name.into(), ifname.into())
}

/// What one run of the plugin produced.
#[derive(Debug)]
pub struct Outcome {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Every JSON document on stdout (the protocol allows exactly one, or none).
    pub docs: Vec<Value>,
    pub elapsed: Duration,
}

impl Outcome {
    /// The one JSON document; panics when there is not exactly one.
    pub fn json(&self) -> &Value {
        assert_eq!(
            self.docs.len(),
            1,
            "expected one JSON document on stdout, got {:?}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        &self.docs[0]
    }

    /// Assert success (exit 0) and return the document, `Null` when stdout is empty.
    pub fn ok(&self) -> Value {
        assert_eq!(self.exit_code, 0, "expected success, got {}\nstderr: {}", self.stdout, self.stderr);
        assert!(self.docs.len() <= 1, "several documents: {}", self.stdout);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self.docs.first().cloned().unwrap_or(Value::Null)
    }

    /// Assert a CNI error with `code` (exit 1, one error document) and return it.
    pub fn err(&self, code: u64) -> Value {
        assert_eq!(
            self.exit_code, 1,
            "expected exit 1, got {}: {}\nstderr: {}",
            self.exit_code, self.stdout, self.stderr
        );
        let e = self.json().clone();
        assert_eq!(e["code"].as_u64(), Some(code), "wrong code: {e}\nstderr: {}", self.stderr);
        assert!(e["msg"].is_string(), "{e}");
        assert!(e["cniVersion"].is_string(), "{e}");
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        e
    }
}

/// One invocation of the plugin as a runtime makes it: a clean environment (PATH only)
/// plus the CNI variables, stdin written while stdout/stderr are drained.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub env: BTreeMap<String, String>,
}

impl Invocation {
    /// `command` for container `cid` in `netns` (a path; may be empty), CNI_IFNAME eth0,
    /// CNI_PATH Debian's plugins, CNI_ARGS as containerd sends them.
    pub fn new(command: &str, cid: &str, netns: &str) -> Invocation {
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", PLUGIN_DIR),
            (
                "CNI_ARGS",
                "K8S_POD_UID=uid-1;IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-1;K8S_POD_INFRA_CONTAINER_ID=cid",
            ),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        Invocation { env }
    }

    /// The same invocation with another command.
    pub fn command(&self, command: &str) -> Invocation {
        self.clone().set("CNI_COMMAND", command)
    }

    pub fn set(mut self, k: &str, v: &str) -> Invocation {
        self.env.insert(k.into(), v.into());
        self
    }

    pub fn unset(mut self, k: &str) -> Invocation {
        self.env.remove(k);
        self
    }

    pub fn run_json(&self, stdin: &Value) -> Outcome {
        self.run(stdin.to_string().as_bytes())
    }

    pub fn run(&self, stdin: &[u8]) -> Outcome {
        run_plugin(&self.env, stdin)
    }
}

/// Run the plugin with exactly `env` (plus PATH) and `stdin`; kill it after
/// [`RUN_TIMEOUT`].
pub fn run_plugin(env: &BTreeMap<String, String>, stdin: &[u8]) -> Outcome {
    PLUGIN_RUNS.fetch_add(1, Ordering::SeqCst);
    let started = Instant::now();
    let mut child = Command::new(multus_bin())
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn multus");
    let mut w = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&input); // the plugin may stop reading early: not our concern
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let reader_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("multus did not finish within {RUN_TIMEOUT:?} (env {env:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&reader_out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&reader_err.join().unwrap()).into_owned();
    let docs = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}\nstderr: {stderr}"));
    Outcome { exit_code: status.code().unwrap_or(-1), stdout, stderr, docs, elapsed: started.elapsed() }
}

// ---------------------------------------------------------------------------------------
// Helpers of the reliability suites (faults, corpus, security): the Kubernetes API
// stand-in, processes we start and kill ourselves, a tiny tmpfs, and leak accounting.
// ---------------------------------------------------------------------------------------

/// The API stand-in (`crates/kube-standin`) with a kubeconfig for it in the test's temp
/// dir. Dropping it stops the server (the "API server down" fault).
pub struct Api {
    pub standin: kube_standin::StandIn,
    pub kubeconfig: PathBuf,
    pub token: String,
}

impl Api {
    pub fn start(dir: &TestDir) -> Api {
        let standin = kube_standin::StandIn::start();
        let token = format!("mrs-secret-token-{}", unique("tok"));
        let kubeconfig = dir.tmp.path().join("multus.kubeconfig");
        standin.write_kubeconfig(&kubeconfig, &token).expect("write kubeconfig");
        Api { standin, kubeconfig, token }
    }

    /// A pod whose uid matches [`Invocation::new`]'s `K8S_POD_UID` when `uid` is `uid-1`.
    pub fn add_pod(&self, ns: &str, name: &str, uid: &str, annotations: Value) {
        self.standin.add_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "pause"}]},
        }));
    }

    /// A NetworkAttachmentDefinition whose `spec.config` is `config` (a JSON value is
    /// serialised, a string is taken as is).
    pub fn add_nad(&self, ns: &str, name: &str, config: &Value) {
        let config = match config {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        self.standin.add_nad(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"config": config},
        }));
    }

    /// `(method, path)` of every request so far.
    pub fn request_lines(&self) -> Vec<String> {
        self.standin.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect()
    }
}

/// Invocations of the plugin by this test binary so far (`run_plugin`, `spawn_plugin`).
pub static PLUGIN_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Prints how many invocations a test made, when it ends (exact with `--test-threads=1`).
pub struct Tally(&'static str, usize, Instant);

impl Tally {
    pub fn start(name: &'static str) -> Tally {
        Tally(name, PLUGIN_RUNS.load(Ordering::SeqCst), Instant::now())
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let n = PLUGIN_RUNS.load(Ordering::SeqCst) - self.1;
        eprintln!("tally: {} made {n} invocations in {:.1?}", self.0, self.2.elapsed());
    }
}

/// Start the plugin without waiting for it (to kill it mid-flight); stdin is written and
/// closed, stdout/stderr go to files in `dir`.
pub fn spawn_plugin(env: &BTreeMap<String, String>, stdin: &[u8], out_dir: &Path) -> std::process::Child {
    let stdout = std::fs::File::create(out_dir.join("spawned.stdout")).unwrap();
    let stderr = std::fs::File::create(out_dir.join("spawned.stderr")).unwrap();
    PLUGIN_RUNS.fetch_add(1, Ordering::SeqCst);
    let mut child = Command::new(multus_bin())
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn multus");
    let mut w = child.stdin.take().unwrap();
    w.write_all(stdin).expect("write stdin");
    drop(w);
    child
}

/// Poll `cond` every 20 ms for up to `limit`; whether it became true.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Whether process `pid` still runs (a zombie does not count).
pub fn process_alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => !s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')),
    }
}

/// An executable shell script `name` in `dir` (a scripted delegate).
///
/// The executable is written by a `cp` child, not by this (multi-threaded) test process:
/// a file we held open for writing could be inherited by a child another test thread
/// forks at that moment, and exec'ing the script would then fail with ETXTBSY.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    let src = dir.join(format!(".{name}.src"));
    std::fs::write(&src, format!("#!/bin/sh\n{body}\n")).unwrap();
    let copied = std::process::Command::new("cp").arg(&src).arg(&p).status().unwrap();
    assert!(copied.success(), "cp {} {}", src.display(), p.display());
    std::fs::remove_file(&src).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A tmpfs of `size` bytes mounted on `dir` (created), unmounted (lazily) on Drop, also
/// when the test panicked.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: usize, read_only: bool) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let mut opts = format!("size={size},mode=0700");
        if read_only {
            opts.push_str(",ro");
        }
        sh(&["mount", "-t", "tmpfs", "-o", &opts, "tmpfs", dir.to_str().unwrap()]);
        Tmpfs { dir: dir.to_path_buf() }
    }

    pub fn remount(&self, read_only: bool) {
        let opts = if read_only { "remount,ro" } else { "remount,rw" };
        sh(&["mount", "-o", opts, self.dir.to_str().unwrap()]);
    }

    /// Fill the filesystem until only `free` bytes are left.
    pub fn fill_leaving(&self, free: u64) {
        let avail = sh(&["df", "-B1", "--output=avail", self.dir.to_str().unwrap()]);
        let avail: u64 = avail.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df avail");
        let fill = avail.saturating_sub(free);
        std::fs::write(self.dir.join(".filler"), vec![0u8; fill as usize]).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        sh_quiet(&["umount", "-l", self.dir.to_str().unwrap()]);
    }
}

/// Every line of `iptables-save` (all tables) that mentions `needle`.
pub fn iptables_lines(needle: &str) -> Vec<String> {
    let out = Command::new("iptables-save").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    out.unwrap_or_default().lines().filter(|l| l.contains(needle)).map(String::from).collect()
}

/// The portmap chains (`CNI-DN-*`) the rules of container `cid` jump to.
pub fn portmap_chains(cid: &str) -> Vec<String> {
    let mut v: Vec<String> = iptables_lines(cid)
        .iter()
        .flat_map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .filter(|w| w.starts_with("CNI-DN-"))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Ports of bridge `bridge` (veths the bridge plugin attached).
pub fn bridge_ports(bridge: &str) -> Vec<String> {
    let out = Command::new("ip").args(["-j", "link", "show", "master", bridge]).output();
    let Ok(out) = out else { return Vec::new() };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array().into_iter().flatten().filter_map(|l| l["ifname"].as_str().map(String::from)).collect()
}

/// What a scenario must not leave behind, and where to look for it.
#[derive(Default)]
pub struct LeakCheck<'a> {
    pub netns: Vec<&'a Netns>,
    pub cache_dirs: Vec<PathBuf>,
    pub lease_dirs: Vec<PathBuf>,
    pub bridges: Vec<String>,
    /// Container IDs: no iptables rule may mention them.
    pub cids: Vec<String>,
    /// Portmap chains seen after ADD: they must be gone.
    pub chains: Vec<String>,
    /// Call logs of fake delegates: every process they record must be gone.
    pub records: Vec<PathBuf>,
}

impl LeakCheck<'_> {
    /// Everything found, one line per leak; empty when nothing was left.
    pub fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        for ns in &self.netns {
            let names = ns.link_names();
            if names != ["lo"] {
                leaks.push(format!("netns {}: links {names:?}", ns.name));
            }
        }
        for d in &self.cache_dirs {
            // The node's learnt status write method is node state, not a container's.
            let files: Vec<_> = files_under(d).into_iter().filter(|f| f != ".status-write-method").collect();
            if !files.is_empty() {
                leaks.push(format!("cache {}: {files:?}", d.display()));
            }
        }
        for d in &self.lease_dirs {
            let Ok(rd) = std::fs::read_dir(d) else { continue };
            for net in rd.flatten().filter(|e| e.path().is_dir()) {
                let held = leases(d, &net.file_name().to_string_lossy());
                if !held.is_empty() {
                    leaks.push(format!("host-local {}: leases {held:?}", net.path().display()));
                }
            }
        }
        for b in &self.bridges {
            let ports = bridge_ports(b);
            if !ports.is_empty() {
                leaks.push(format!("bridge {b}: ports {ports:?}"));
            }
        }
        for cid in &self.cids {
            let lines = iptables_lines(cid);
            if !lines.is_empty() {
                leaks.push(format!("iptables rules of {cid}: {lines:?}"));
            }
        }
        for chain in &self.chains {
            let lines = iptables_lines(chain);
            if !lines.is_empty() {
                leaks.push(format!("iptables chain {chain}: {lines:?}"));
            }
        }
        for r in &self.records {
            for c in read_calls(r) {
                if let Some(pid) = c["pid"].as_u64()
                    && process_alive(pid)
                    && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|s| s.contains("fake_delegate"))
                {
                    leaks.push(format!("delegate process {pid} ({} {}) still runs", c["command"], c["name"]));
                }
            }
        }
        leaks
    }

    pub fn assert_clean(&self, what: &str) {
        let leaks = self.leaks();
        assert!(leaks.is_empty(), "{what}: left behind:\n  {}", leaks.join("\n  "));
    }
}
