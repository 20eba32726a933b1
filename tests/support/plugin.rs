//! Running the plugin: the one way a test invokes the `multus` binary
//! ([`run_plugin`], or [`spawn_plugin`] to kill it mid-flight), the invocation builder,
//! what a run produced, and the fake delegate's per-test world.

use super::{PLUGIN_DIR, RUN_TIMEOUT, container_cache_files};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The plugin under test.
pub fn multus_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_multus"))
}

/// The binary as an operator runs it (`multus install|doctor|validate|agent ...`): with
/// CNI_COMMAND removed, so that it is never taken for a plugin call.
pub fn multus_cli(args: &[&str]) -> Command {
    let mut cmd = Command::new(multus_bin());
    cmd.args(args).env_remove("CNI_COMMAND");
    cmd
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
    let src = super::repo_path("examples/fake_delegate.rs");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(s)) = (modified(&bin), modified(&src))
        && s > b
    {
        eprintln!("warning: {} is older than its source; run `cargo build --examples`", bin.display());
    }
    bin
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
        self.call_summary_by("ifname")
    }

    /// `(command, network name, <key>)` of every fake call, in order (`key` one the fake
    /// records: `ifname`, `containerId`, ...).
    pub fn call_summary_by(&self, key: &str) -> Vec<(String, String, String)> {
        self.calls()
            .iter()
            .map(|c| {
                (
                    c["command"].as_str().unwrap_or_default().to_string(),
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c[key].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Files in cniDir (scratch and results caches), relative.
    pub fn cache_files(&self) -> Vec<String> {
        container_cache_files(&self.cni_dir)
    }

    /// Nothing left in cniDir.
    #[track_caller]
    pub fn assert_no_cache_files(&self) {
        let files = self.cache_files();
        assert!(files.is_empty(), "{files:?}");
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

    /// A node-wide `command` (STATUS, GC): no container, netns, ifname or CNI_ARGS.
    pub fn node_wide(command: &str) -> Invocation {
        Invocation::new(command, "", "")
            .unset("CNI_CONTAINERID")
            .unset("CNI_NETNS")
            .unset("CNI_IFNAME")
            .unset("CNI_ARGS")
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

/// The plugin as a runtime starts it: a clean environment (a fixed PATH only) plus `env`,
/// stdin piped; stdout and stderr are the caller's to set. Counted in [`PLUGIN_RUNS`].
pub fn plugin_command(env: &BTreeMap<String, String>) -> Command {
    PLUGIN_RUNS.fetch_add(1, Ordering::SeqCst);
    let mut cmd = Command::new(multus_bin());
    cmd.env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env)
        .stdin(Stdio::piped());
    cmd
}

/// A started plugin's stdin written, and its stdout and stderr (where piped) drained, on
/// threads of their own: neither side can block the other.
pub struct Pipes {
    writer: JoinHandle<()>,
    out: JoinHandle<Vec<u8>>,
    err: JoinHandle<Vec<u8>>,
}

impl Pipes {
    pub fn attach(child: &mut Child, stdin: &[u8]) -> Pipes {
        let mut w = child.stdin.take().expect("stdin piped");
        let input = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&input); // the plugin may stop reading early: not our concern
        });
        Pipes { writer, out: drain(child.stdout.take()), err: drain(child.stderr.take()) }
    }

    /// Wait for the threads (after the plugin exited): `(stdout, stderr)`.
    pub fn finish(self) -> (String, String) {
        let _ = self.writer.join();
        let text = |h: JoinHandle<Vec<u8>>| String::from_utf8_lossy(&h.join().unwrap()).into_owned();
        (text(self.out), text(self.err))
    }
}

/// Everything `r` yields until EOF (nothing when there is no pipe).
fn drain(r: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut b);
        }
        b
    })
}

/// Every JSON document on `stdout`; panics (showing `stderr`) when stdout is not JSON.
pub fn stdout_documents(stdout: &str, stderr: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(stdout)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}\nstderr: {stderr}"))
}

/// Run the plugin with exactly `env` (plus PATH) and `stdin`; kill it after
/// [`RUN_TIMEOUT`].
pub fn run_plugin(env: &BTreeMap<String, String>, stdin: &[u8]) -> Outcome {
    let started = Instant::now();
    let mut child = plugin_command(env).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn multus");
    let pipes = Pipes::attach(&mut child, stdin);
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
    let (stdout, stderr) = pipes.finish();
    let docs = stdout_documents(&stdout, &stderr);
    Outcome { exit_code: status.code().unwrap_or(-1), stdout, stderr, docs, elapsed: started.elapsed() }
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
    let mut child = plugin_command(env).stdout(stdout).stderr(stderr).spawn().expect("spawn multus");
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
