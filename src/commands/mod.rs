//! One module per CNI verb, and the dispatch that reads the environment and stdin.
//!
//! Nothing here writes to stdout: [`run`] returns the one JSON document and the exit
//! code, and `main` prints it.

pub mod add;
pub mod aux_chain;
pub mod check;
pub mod del;
pub mod gc;
pub mod gc_plan;
pub mod plan;
pub mod primary;
pub mod status;
#[cfg(test)]
mod verb_tests;
pub mod version;

use crate::cache;
use crate::cni::{CniEnv, CniResult, Command, K8sArgs, version::LATEST};
use crate::config::MultusConf;
use crate::delegate::{BinaryExec, Delegate, NetworkConfig, PluginExec, RuntimeConf};
use crate::error::{CniError, DecodeError, Result};
use base64::Engine;
use serde_json::{Map, Value};
use std::io::Read;
use std::path::PathBuf;

/// What the process prints and how it exits.
#[derive(Debug)]
pub struct Output {
    /// The one JSON document for stdout; `None` for a successful DEL/CHECK/GC/STATUS.
    pub stdout: Option<Value>,
    pub exit_code: i32,
}

impl Output {
    fn error(e: &CniError, version: &str) -> Output {
        tracing::error!(code = e.code, "{}", e.msg);
        Output { stdout: Some(e.to_json(version)), exit_code: 1 }
    }

    /// An error before the config (and so its logging settings) is known: to stderr.
    fn early_error(e: &CniError, version: &str) -> Output {
        crate::logging::init_stderr();
        Self::error(e, version)
    }
}

/// Stdin larger than this is refused (a config is kilobytes; this bounds memory).
const MAX_STDIN: u64 = 16 * 1024 * 1024;

/// The CNI entry point: environment and stdin of this process.
pub fn run_from_process() -> Output {
    let env = CniEnv::from_process();
    let mut stdin = Vec::new();
    let needs_stdin = !matches!(env.as_ref().map(|e| e.command), Ok(Command::Version));
    if needs_stdin {
        if let Err(e) = std::io::stdin().take(MAX_STDIN + 1).read_to_end(&mut stdin) {
            return Output::early_error(&CniError::io("cannot read stdin", e), LATEST);
        }
        if stdin.len() as u64 > MAX_STDIN {
            return Output::early_error(&DecodeError::StdinTooLarge.into(), LATEST);
        }
    } else {
        let _ = std::io::stdin().take(MAX_STDIN).read_to_end(&mut stdin);
    }
    run(env, &stdin)
}

/// Dispatch one CNI invocation.
pub fn run(env: Result<CniEnv>, stdin: &[u8]) -> Output {
    let env = match env {
        Ok(env) => env,
        Err(e) => return Output::early_error(&e, &version::error_version(stdin)),
    };
    if env.command == Command::Version {
        return Output { stdout: Some(version::version(stdin)), exit_code: 0 };
    }
    let conf = match MultusConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => return Output::early_error(&e, &version::error_version(stdin)),
    };
    // Only now: the config says where logs go (file, level, stderr or not).
    crate::logging::init(&conf);
    let reply_version = if conf.cni_version.is_empty() { "0.1.0".to_string() } else { conf.cni_version.clone() };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            return Output::error(&CniError::io("cannot start the async runtime", e), &reply_version);
        }
    };
    crate::limits::set(conf.limits());
    if let Err(e) = refuse_own_netns(&env) {
        return Output::error(&e, &reply_version);
    }
    let exec = BinaryExec::new(&conf.bin_dir, &env.path, conf.delegate_timeout());
    let inv = Invocation { conf, env, exec, netns: crate::netns::Netlink };
    let started = std::time::Instant::now();
    let result = runtime.block_on(run_verb(&inv));
    // Everything the verb started has been awaited; what is left (idle blocking-pool
    // threads, an unused early connection) need not be joined before we exit.
    runtime.shutdown_background();
    record_metrics(&inv, &result, started.elapsed());
    match result {
        Ok(stdout) => Output { stdout, exit_code: 0 },
        Err(e) => Output::error(&e, &reply_version),
    }
}

/// The verb, under the per-container lock where it needs one.
async fn run_verb(inv: &Invocation<BinaryExec, crate::netns::Netlink>) -> Result<Option<Value>> {
    // One invocation per container ID at a time on this node (see `lock`).
    let lock = match inv.env.command {
        Command::Add | Command::Del | Command::Check => {
            crate::lock::acquire(&inv.cni_dir(), &inv.env.container_id, inv.conf.lock_timeout()).await?
        }
        _ => None,
    };
    let result = match inv.env.command {
        Command::Add => add::add(inv).await.map(Some),
        Command::Del => del::del(inv).await.map(|_| None),
        Command::Check => check::check(inv).await.map(|_| None),
        Command::Status => status::status(inv).await.map(|_| None),
        Command::Gc => gc::gc(inv).await.map(|_| None),
        Command::Version => unreachable!("answered above"),
    };
    // Released now, not at exit: the metrics record below need not hold up the next
    // invocation of this container.
    if let Some(lock) = lock {
        lock.finish();
    }
    result
}

/// This invocation's record for the node agent's metrics (`metricsSpoolDir`).
fn record_metrics<E, N>(inv: &Invocation<E, N>, result: &Result<Option<Value>>, elapsed: std::time::Duration) {
    if inv.conf.metrics_spool_dir.is_empty() {
        return;
    }
    let code = result.as_ref().err().map_or(0, |e| e.code);
    let record = crate::spool::Record::of_process(inv.env.command.as_str(), code, elapsed);
    crate::spool::write(std::path::Path::new(&inv.conf.metrics_spool_dir), inv.conf.metrics_spool_max_records, &record);
}

/// The skel's rule (code 8): ADD, DEL and CHECK never operate on the plugin's own
/// network namespace, unless the runtime says so with CNI_NETNS_OVERRIDE.
fn refuse_own_netns(env: &CniEnv) -> Result<()> {
    let overridden = std::env::var_os("CNI_NETNS_OVERRIDE").is_some_and(|v| !v.is_empty());
    if matches!(env.command, Command::Add | Command::Del | Command::Check)
        && !env.netns.is_empty()
        && !overridden
        && crate::netns::is_own_netns(std::path::Path::new(&env.netns))
    {
        return Err(crate::netns::NetnsError::OwnNetns { path: env.netns.clone() }.into());
    }
    Ok(())
}

/// A verb's work on the pod `k8s` names, which gets the pod's tag `[ns/name/uid]` here
/// and nowhere else: every log line inside it (the `pod` span, printed by
/// [`crate::logging`]) and the errors marked as about the pod ([`CniError::about_pod`]).
pub(crate) async fn for_pod<T>(k8s: &K8sArgs, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    use tracing::Instrument;
    let tag = k8s.tag();
    // At ERROR level, so that the span exists whenever any line is logged at all.
    let span = tracing::error_span!(crate::logging::POD_SPAN, tag = %tag);
    work.instrument(span).await.map_err(|e| e.with_pod_tag(&tag))
}

/// One invocation's world: the config, the runtime's environment, and the effects
/// (plugin execution, netns operations) behind traits so tests can substitute fakes.
pub struct Invocation<E, N> {
    pub conf: MultusConf,
    pub env: CniEnv,
    pub exec: E,
    pub netns: N,
}

impl<E: PluginExec, N> Invocation<E, N> {
    pub fn cni_dir(&self) -> PathBuf {
        PathBuf::from(&self.conf.cni_dir)
    }

    pub fn k8s_args(&self) -> Result<K8sArgs> {
        K8sArgs::from_args(&self.env.args)
    }

    /// The runtime's own capability values (runtimeConfig), which go to the primary
    /// network only (multi-net spec §7.5; Go Multus copies them to every attachment).
    pub fn runtime_capabilities(&self) -> Map<String, Value> {
        normalize_runtime_config(self.conf.runtime_config.clone().unwrap_or_default())
    }

    /// The static `delegates` of the config; `[0]` is the primary. The fallback of DEL and
    /// CHECK when no cache says better.
    pub fn static_delegates(&self) -> Result<Vec<Delegate>> {
        let runtime = self.runtime_capabilities();
        self.conf
            .delegates
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let config = NetworkConfig::from_value(v)
                    .map_err(|e| e.context(format!("failed to load delegate {i} config")))?
                    .with_default_version(&self.conf.cni_version);
                if config.name().is_empty() {
                    return Err(CniError::invalid_config(format!(
                        "failed to load delegate {i} config: missing network name"
                    )));
                }
                Ok(Delegate {
                    name: config.name().to_string(),
                    ifname: if i == 0 { self.env.ifname.clone() } else { format!("net{i}") },
                    primary: i == 0,
                    capability_args: if i == 0 { runtime.clone() } else { Map::new() },
                    config,
                })
            })
            .collect()
    }

    /// CNI_ARGS for a delegate (Go Multus §1.5): the pod identity first, then the
    /// runtime's pairs merged in order, then the deprecated `MAC=`/`IP=` of a request.
    pub fn delegate_cni_args(&self, k8s: &K8sArgs, d: &Delegate) -> Vec<(String, String)> {
        let mut args = crate::cni::CniArgs(vec![
            ("IgnoreUnknown".into(), "true".into()),
            ("K8S_POD_NAMESPACE".into(), k8s.namespace.clone()),
            ("K8S_POD_NAME".into(), k8s.name.clone()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), k8s.infra_container_id.clone()),
            ("K8S_POD_UID".into(), k8s.uid.clone()),
        ]);
        for (k, v) in &self.env.args.0 {
            args.merge(k, v);
        }
        if !d.primary {
            if let Some(mac) = d.capability_args.get("mac").and_then(Value::as_str) {
                args.0.push(("MAC".into(), mac.into()));
            }
            if let Some(ips) = d.capability_args.get("ips").and_then(Value::as_array) {
                let ips: Vec<&str> = ips.iter().filter_map(Value::as_str).collect();
                if !ips.is_empty() {
                    args.0.push(("IP".into(), ips.join(",")));
                }
            }
        }
        args.0
    }

    pub fn runtime_conf(&self, k8s: &K8sArgs, d: &Delegate) -> RuntimeConf {
        RuntimeConf {
            container_id: self.env.container_id.clone(),
            netns: self.env.netns.clone(),
            ifname: d.ifname.clone(),
            cni_args: self.delegate_cni_args(k8s, d),
            capability_args: d.capability_args.clone(),
        }
    }

    /// An attachment's record for the libcni-compatible results cache.
    pub fn result_record(&self, d: &Delegate, rt: &RuntimeConf, result: &Value) -> cache::CachedResult {
        cache::CachedResult {
            kind: "cniCacheV1".into(),
            container_id: rt.container_id.clone(),
            config: base64::engine::general_purpose::STANDARD.encode(&d.config.bytes),
            if_name: d.ifname.clone(),
            network_name: d.config.name().to_string(),
            netns: rt.netns.clone(),
            cni_args: rt.cni_args.clone(),
            capability_args: rt.capability_args.clone(),
            result: Some(result.clone()),
        }
    }

    pub fn cached_result(&self, d: &Delegate) -> Option<Value> {
        cache::load_result(&self.cni_dir(), d.config.name(), &self.env.container_id, &d.ifname).and_then(|r| r.result)
    }

    /// The prevResult for a DEL/CHECK of `d`: its cached result, else (for the primary)
    /// the runtime's prevResult — which is our own printed result, in our config's
    /// version, so it is converted to the delegate's version first (a delegate refuses
    /// a prevResult of another version).
    pub fn prev_result_for(&self, d: &Delegate) -> Option<Value> {
        self.cached_result(d).or_else(|| {
            let prev = self.conf.prev_result.as_ref().filter(|_| d.primary)?;
            let target = d.config.cni_version();
            CniResult::convert(
                prev,
                &self.conf.cni_version,
                if target.is_empty() { &self.conf.cni_version } else { target },
            )
            .map_err(|e| tracing::warn!("ignoring the runtime's prevResult: {}", e.msg))
            .ok()
        })
    }
}

/// containerd passes capability values with Go's capitalised field names
/// (`HostPort`, `Servers`, `IngressRate`); plugins and the spec use lower camel case.
pub fn normalize_runtime_config(mut rc: Map<String, Value>) -> Map<String, Value> {
    fn lower_keys(v: &mut Value) {
        match v {
            Value::Object(m) => {
                let old = std::mem::take(m);
                for (k, mut val) in old {
                    lower_keys(&mut val);
                    let mut chars = k.chars();
                    let k = match chars.next() {
                        Some(c) if c.is_ascii_uppercase() => c.to_ascii_lowercase().to_string() + chars.as_str(),
                        _ => k,
                    };
                    m.insert(k, val);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(lower_keys),
            _ => {}
        }
    }
    for key in ["portMappings", "dns", "bandwidth", "ipRanges"] {
        if let Some(v) = rc.get_mut(key) {
            lower_keys(v);
        }
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containerd_capitalised_keys_are_normalised() {
        let rc = json!({
            "portMappings": [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
            "dns": {"Servers": ["10.96.0.10"], "Searches": ["svc"], "Options": ["ndots:5"]},
            "io.kubernetes.cri.pod-annotations": {"Keep": "As-Is"}
        });
        let out = normalize_runtime_config(rc.as_object().unwrap().clone());
        assert_eq!(
            out["portMappings"][0],
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""})
        );
        assert_eq!(out["dns"]["servers"][0], "10.96.0.10");
        assert_eq!(out["io.kubernetes.cri.pod-annotations"]["Keep"], "As-Is");
    }
}
