//! Delegate networks and their execution with libcni semantics.
//!
//! A delegate is a single CNI config or a conflist, kept as the exact bytes it came
//! from (so plugin-specific keys such as Calico's `kubernetes.kubeconfig` survive every
//! ADD/CHECK/DEL: Multus #1449/#1454). Per plugin we inject only `name`, `cniVersion`,
//! `prevResult` and the `runtimeConfig` keys the plugin declares in `capabilities`.

use crate::cni::{CniResult, Command, Version};
use crate::error::{CniError, DelegateError, ErrorList, Result};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A delegate's network configuration: one plugin or a conflist, byte-exact.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// The exact bytes we were given; what the scratch cache stores and DEL replays.
    pub bytes: Vec<u8>,
    value: Map<String, Value>,
    is_list: bool,
}

/// A delegate `type` must be a plain file name: never a path, never `..`.
pub fn validate_plugin_type(t: &str) -> Result<()> {
    if t.is_empty() || t == "." || t == ".." || t.contains('/') || t.contains('\0') {
        return Err(CniError::invalid_config(format!("invalid plugin type {t:?}: must be a plain file name")));
    }
    Ok(())
}

impl NetworkConfig {
    pub fn parse(bytes: Vec<u8>) -> Result<NetworkConfig> {
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| CniError::invalid_config(format!("error parsing delegate configuration: {e}")))?;
        let Value::Object(value) = value else {
            return Err(CniError::invalid_config("a delegate configuration must be a JSON object"));
        };
        let is_list = match (value.get("type"), value.get("plugins")) {
            (Some(Value::String(t)), _) => {
                validate_plugin_type(t)?;
                false
            }
            (None, Some(Value::Array(plugins))) if !plugins.is_empty() => {
                for p in plugins {
                    match p.get("type") {
                        Some(Value::String(t)) => validate_plugin_type(t)?,
                        _ => {
                            return Err(CniError::invalid_config("a plugin delegate must have the 'type' field"));
                        }
                    }
                }
                true
            }
            (None, Some(_)) => {
                return Err(CniError::invalid_config("a conflist delegate must have a non-empty 'plugins' list"));
            }
            _ => {
                return Err(CniError::invalid_config("delegate must have the 'type' or 'plugins' field"));
            }
        };
        // The name makes file names (the results cache `<net>-<cid>-<if>`): libcni's rule,
        // so that `../../x` can never write outside cniDir. Empty is reported by callers.
        match value.get("name") {
            None | Some(Value::Null) => {}
            Some(Value::String(n)) if n.is_empty() || crate::config::valid_network_name(n) => {}
            Some(Value::String(n)) => {
                return Err(CniError::invalid_config(format!("invalid characters found in network name {n:?}")));
            }
            Some(_) => {
                return Err(CniError::invalid_config("network name must be a string"));
            }
        }
        if let Some(v) = value.get("cniVersion") {
            let Value::String(v) = v else {
                return Err(CniError::invalid_config("delegate cniVersion must be a string"));
            };
            Version::of_config(v)?;
        }
        Ok(NetworkConfig { bytes, value, is_list })
    }

    pub fn from_value(value: &Value) -> Result<NetworkConfig> {
        Self::parse(serde_json::to_vec(value).map_err(|e| CniError::invalid_config(e.to_string()))?)
    }

    pub fn is_list(&self) -> bool {
        self.is_list
    }

    pub fn value(&self) -> &Map<String, Value> {
        &self.value
    }

    pub fn name(&self) -> &str {
        self.value.get("name").and_then(Value::as_str).unwrap_or_default()
    }

    /// The version the delegate speaks; `""` when it names none.
    pub fn cni_version(&self) -> &str {
        self.value.get("cniVersion").and_then(Value::as_str).unwrap_or_default()
    }

    pub fn version(&self) -> Version {
        Version::of_config(self.cni_version()).unwrap_or(Version::V0_1_0)
    }

    /// The plugins in execution order (a single config is a list of one).
    pub fn plugins(&self) -> Vec<&Map<String, Value>> {
        if self.is_list {
            self.value
                .get("plugins")
                .and_then(Value::as_array)
                .map(|ps| ps.iter().filter_map(Value::as_object).collect())
                .unwrap_or_default()
        } else {
            vec![&self.value]
        }
    }

    pub fn plugin_types(&self) -> Vec<&str> {
        self.plugins().into_iter().filter_map(|p| p.get("type").and_then(Value::as_str)).collect()
    }

    fn flag(&self, key: &str) -> bool {
        self.value.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    /// Capabilities declared `true` by any plugin.
    pub fn capabilities(&self) -> BTreeSet<String> {
        self.plugins()
            .into_iter()
            .filter_map(|p| p.get("capabilities").and_then(Value::as_object))
            .flat_map(|caps| caps.iter().filter(|(_, v)| v.as_bool() == Some(true)).map(|(k, _)| k.clone()))
            .collect()
    }

    /// Rewrite with a new value (name injection, cni-args): the bytes are re-serialised.
    pub fn with_value(value: Map<String, Value>) -> Result<NetworkConfig> {
        Self::from_value(&Value::Object(value))
    }

    /// Give a delegate without `cniVersion` one (Multus' `InjectCNIVersionInConfList`),
    /// touching nothing else.
    pub fn with_default_version(self, version: &str) -> NetworkConfig {
        if !self.cni_version().is_empty() || version.is_empty() {
            return self;
        }
        let mut value = self.value.clone();
        value.insert("cniVersion".into(), version.into());
        Self::with_value(value).unwrap_or(self)
    }
}

/// One attachment of a pod: a network config and where and how it is attached.
#[derive(Debug, Clone, PartialEq)]
pub struct Delegate {
    pub config: NetworkConfig,
    /// Status/event name: `<ns>/<nad>` or the CNI name.
    pub name: String,
    pub ifname: String,
    /// The primary attachment (the pod's `eth0`): it gets the runtime's capabilities
    /// and its result is the one printed.
    pub primary: bool,
    /// The capability args this attachment got (replayed on DEL).
    pub capability_args: Map<String, Value>,
}

/// A delegate's ADD result, parsed once: `raw` is what the cache records and what is
/// chained or converted for the caller, `parsed` what the status and routes read.
#[derive(Debug, Clone)]
pub struct DelegateResult {
    pub raw: Value,
    pub parsed: CniResult,
}

impl DelegateResult {
    /// `fallback_version` is the delegate config's cniVersion, for results that omit theirs.
    pub fn parse(raw: Value, fallback_version: &str) -> Result<DelegateResult> {
        let parsed = CniResult::from_value(&raw, fallback_version)?;
        Ok(DelegateResult { raw, parsed })
    }
}

/// What the runtime gives one attachment: identity, netns, interface, args, capabilities.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub cni_args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    fn cni_args_string(&self) -> String {
        crate::cni::env::format_cni_args(&self.cni_args)
    }
}

/// The per-plugin stdin: the plugin's own config plus `name`, `cniVersion`, `prevResult`
/// and the declared `runtimeConfig` keys (libcni `buildOneConfig`).
pub fn plugin_stdin(
    plugin: &Map<String, Value>,
    name: &str,
    version: &str,
    prev_result: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Vec<u8> {
    let mut conf = plugin.clone();
    conf.insert("name".into(), name.into());
    conf.insert("cniVersion".into(), version.into());
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let runtime_config: Map<String, Value> = plugin
        .get("capabilities")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, on)| on.as_bool() == Some(true))
        .filter_map(|(cap, _)| capability_args.get(cap).map(|v| (cap.clone(), v.clone())))
        .collect();
    if !runtime_config.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    serde_json::to_vec(&conf).unwrap_or_default()
}

/// How plugins are run: the real one execs binaries, tests substitute a fake.
pub trait PluginExec {
    /// Run plugin `plugin_type` for `command`; `Ok(None)` when it printed nothing.
    async fn exec(&self, plugin_type: &str, command: Command, rt: &RuntimeConf, stdin: &[u8]) -> Result<Option<Value>>;
    /// Fail early (before anything runs) when a plugin cannot be found.
    fn find(&self, plugin_type: &str) -> Result<PathBuf>;
}

/// Execs plugin binaries found in `binDir` then `CNI_PATH`, each under a deadline.
#[derive(Debug, Clone)]
pub struct BinaryExec {
    pub search_path: Vec<PathBuf>,
    /// Passed to delegates as CNI_PATH.
    pub cni_path: Vec<PathBuf>,
    pub timeout: Duration,
}

/// The most of a delegate's stderr we keep in an error's details.
const STDERR_TAIL: usize = 4096;

fn tail(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

impl BinaryExec {
    pub fn new(bin_dir: &str, cni_path: &[PathBuf], timeout: Duration) -> BinaryExec {
        let mut search_path = Vec::new();
        if !bin_dir.is_empty() {
            search_path.push(PathBuf::from(bin_dir));
        }
        search_path.extend(cni_path.iter().cloned());
        // Delegates look up their own IPAM plugins in CNI_PATH: give them binDir too.
        BinaryExec { cni_path: search_path.clone(), search_path, timeout }
    }
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl PluginExec for BinaryExec {
    fn find(&self, plugin_type: &str) -> Result<PathBuf> {
        validate_plugin_type(plugin_type)?;
        self.search_path.iter().map(|d| d.join(plugin_type)).find(|p| is_executable_file(p)).ok_or_else(|| {
            CniError::invalid_config(format!("failed to find plugin {plugin_type:?} in path {:?}", self.search_path))
        })
    }

    async fn exec(&self, plugin_type: &str, command: Command, rt: &RuntimeConf, stdin: &[u8]) -> Result<Option<Value>> {
        let path = self.find(plugin_type)?;
        let _timer = crate::spool::DelegateTimer::start(plugin_type);
        let what = format!("plugin type={plugin_type:?} ({})", command.as_str());
        let output = self.run(&path, command, rt, stdin, &what).await?;
        let stderr = tail(&output.stderr, STDERR_TAIL);
        if !stderr.is_empty() {
            tracing::debug!(plugin = plugin_type, command = command.as_str(), "delegate stderr: {stderr}");
        }
        Ok(read_output(&output, stderr, what)?)
    }
}

/// How long a delegate killed at its deadline may take to die before we answer: a SIGKILLed
/// process is gone in microseconds unless it is stuck in the kernel (uninterruptible sleep),
/// and then it is not worth more of the runtime's time.
const KILLED_DELEGATE_EXIT: Duration = Duration::from_secs(1);

impl BinaryExec {
    /// The plugin's environment: only what CNI defines, plus PATH (plugins such as portmap
    /// exec iptables).
    fn environment(&self, command: Command, rt: &RuntimeConf) -> [(&'static str, OsString); 7] {
        [
            ("CNI_COMMAND", command.as_str().into()),
            ("CNI_CONTAINERID", rt.container_id.as_str().into()),
            ("CNI_NETNS", rt.netns.as_str().into()),
            ("CNI_IFNAME", rt.ifname.as_str().into()),
            ("CNI_ARGS", rt.cni_args_string().into()),
            ("CNI_PATH", std::env::join_paths(&self.cni_path).unwrap_or_default()),
            ("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into())),
        ]
    }

    /// Run the plugin to its end within the delegate timeout, feeding `stdin`. The plugin
    /// is killed when we die (`spawn` gives it `PR_SET_PDEATHSIG`), at its deadline, and
    /// when this future is dropped.
    async fn run(
        &self,
        path: &Path,
        command: Command,
        rt: &RuntimeConf,
        stdin: &[u8],
        what: &str,
    ) -> std::result::Result<std::process::Output, DelegateError> {
        let mut child = crate::spawn::spawn(path, self.environment(command, rt)).map_err(|source| {
            DelegateError::CannotExecute { what: what.to_string(), path: path.display().to_string(), source }
        })?;
        match tokio::time::timeout(self.timeout, child.output(stdin)).await {
            Err(_) => {
                // Reaped before we answer when it dies in time; otherwise dropping the child
                // leaves a zombie that outlives us only until we exit.
                let _ = tokio::time::timeout(KILLED_DELEGATE_EXIT, child.kill()).await;
                Err(DelegateError::Deadline { what: what.to_string(), after: self.timeout })
            }
            Ok(Err(source)) => Err(DelegateError::Wait { what: what.to_string(), source }),
            Ok(Ok(output)) => Ok(output),
        }
    }
}

/// What a finished plugin said: its result (`None`: printed nothing), or why it failed.
/// A CNI error object keeps its own code; anything else is ours (100).
fn read_output(
    output: &std::process::Output,
    stderr: String,
    what: String,
) -> std::result::Result<Option<Value>, DelegateError> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stdout = stdout.trim();
    if output.status.success() {
        if stdout.is_empty() {
            return Ok(None);
        }
        return serde_json::from_str(stdout).map(Some).map_err(|source| DelegateError::InvalidJson {
            what,
            source,
            stdout: tail(stdout.as_bytes(), STDERR_TAIL),
        });
    }
    if let Some(signal) = output.status.signal() {
        let name = nix::sys::signal::Signal::try_from(signal).map(|s| s.as_str()).unwrap_or("unknown");
        return Err(DelegateError::Signal { what, signal, name, stderr });
    }
    Err(match serde_json::from_str::<Value>(stdout) {
        Ok(v) if v.get("code").and_then(Value::as_u64).is_some() => plugin_error(&v, stderr, what),
        _ => DelegateError::NoCniError {
            what,
            status: output.status,
            details: join_nonempty([tail(stdout.as_bytes(), 1024), stderr]),
        },
    })
}

/// The plugin's own CNI error object `v` (it has a numeric `code`).
fn plugin_error(v: &Value, stderr: String, what: String) -> DelegateError {
    let code = v["code"].as_u64().unwrap_or_default();
    let msg = v.get("msg").and_then(Value::as_str).unwrap_or("").to_string();
    let details = v.get("details").and_then(Value::as_str).unwrap_or("").to_string();
    DelegateError::Failed { what, code, msg, details: join_nonempty([details, stderr]) }
}

fn join_nonempty<const N: usize>(parts: [String; N]) -> String {
    parts.into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join("\n")
}

/// Resolve every plugin binary of `config` without running anything.
pub fn check_binaries(exec: &impl PluginExec, config: &NetworkConfig) -> Result<()> {
    for t in config.plugin_types() {
        exec.find(t)?;
    }
    Ok(())
}

/// ADD a network: plugins in order, each getting the previous one's result.
/// Returns the last plugin's raw result. A plugin that prints nothing on ADD is an error
/// (the spec requires a result).
pub async fn add_network(exec: &impl PluginExec, config: &NetworkConfig, rt: &RuntimeConf) -> Result<Value> {
    let mut prev: Option<Value> = None;
    for plugin in config.plugins() {
        let t = plugin.get("type").and_then(Value::as_str).unwrap_or_default();
        let stdin = plugin_stdin(plugin, config.name(), config.cni_version(), prev.as_ref(), &rt.capability_args);
        let result = exec.exec(t, Command::Add, rt, &stdin).await?;
        let result = result.ok_or_else(|| DelegateError::NoResult { plugin: t.to_string() })?;
        if !result.is_object() {
            return Err(DelegateError::NotAnObject { plugin: t.to_string() }.into());
        }
        prev = Some(result);
    }
    prev.ok_or_else(|| CniError::invalid_config("delegate has no plugins"))
}

/// DEL a network: plugins in reverse, each with the cached result as `prevResult`
/// (spec ≥ 0.4.0). Unlike libcni, which stops at the first failing plugin, every plugin
/// is attempted: a failing portmap must not keep the IPAM plugin from releasing the IP.
pub async fn del_network(
    exec: &impl PluginExec,
    config: &NetworkConfig,
    rt: &RuntimeConf,
    cached: Option<&Value>,
) -> Result<()> {
    let prev = if config.version() >= Version::V0_4_0 { cached } else { None };
    let mut errors = ErrorList::default();
    for plugin in config.plugins().into_iter().rev() {
        let t = plugin.get("type").and_then(Value::as_str).unwrap_or_default();
        // A plugin uninstalled since the ADD cannot have anything left to remove that we
        // could reach: DEL converges (the spec: DEL tolerates missing resources) instead
        // of failing every retry and keeping the pod from terminating.
        if validate_plugin_type(t).is_ok()
            && let Err(e) = exec.find(t)
        {
            tracing::warn!(
                "DEL of network {:?} ({}): plugin type={t:?} is not installed; skipped: {}",
                config.name(),
                rt.ifname,
                e.msg
            );
            continue;
        }
        let stdin = plugin_stdin(plugin, config.name(), config.cni_version(), prev, &rt.capability_args);
        if let Err(e) = exec.exec(t, Command::Del, rt, &stdin).await {
            errors.push(e);
        }
    }
    errors.into_result()
}

/// CHECK a network with its cached result; configs older than 0.4.0 and `disableCheck`
/// are skipped (they cannot be checked).
pub async fn check_network(
    exec: &impl PluginExec,
    config: &NetworkConfig,
    rt: &RuntimeConf,
    cached: Option<&Value>,
) -> Result<()> {
    if config.version() < Version::V0_4_0 || config.flag("disableCheck") {
        return Ok(());
    }
    let cached = cached.ok_or_else(|| DelegateError::NoCachedResult {
        network: config.name().to_string(),
        ifname: rt.ifname.clone(),
    })?;
    for plugin in config.plugins() {
        let t = plugin.get("type").and_then(Value::as_str).unwrap_or_default();
        let stdin = plugin_stdin(plugin, config.name(), config.cni_version(), Some(cached), &rt.capability_args);
        exec.exec(t, Command::Check, rt, &stdin).await?;
    }
    Ok(())
}

/// STATUS of a network (CNI 1.1): plugins in order, first error returned as is.
pub async fn status_network(exec: &impl PluginExec, config: &NetworkConfig, rt: &RuntimeConf) -> Result<()> {
    if config.version() < Version::V1_1_0 {
        return Ok(());
    }
    for plugin in config.plugins() {
        let t = plugin.get("type").and_then(Value::as_str).unwrap_or_default();
        exec.exec(
            t,
            Command::Status,
            rt,
            &plugin_stdin(plugin, config.name(), config.cni_version(), None, &Map::new()),
        )
        .await?;
    }
    Ok(())
}

/// GC of a network (CNI 1.1) with the attachments that must be kept.
pub async fn gc_network(exec: &impl PluginExec, config: &NetworkConfig, rt: &RuntimeConf, valid: &Value) -> Result<()> {
    if config.version() < Version::V1_1_0 || config.flag("disableGC") {
        return Ok(());
    }
    let mut errors = ErrorList::default();
    for plugin in config.plugins() {
        let t = plugin.get("type").and_then(Value::as_str).unwrap_or_default();
        let mut p = plugin.clone();
        p.insert("cni.dev/valid-attachments".into(), valid.clone());
        let stdin = plugin_stdin(&p, config.name(), config.cni_version(), None, &Map::new());
        if let Err(e) = exec.exec(t, Command::Gc, rt, &stdin).await {
            errors.push(e);
        }
    }
    errors.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeExec;
    use serde_json::json;

    fn conf(v: Value) -> NetworkConfig {
        NetworkConfig::from_value(&v).unwrap()
    }

    #[test]
    fn parses_conf_and_conflist_and_rejects_paths() {
        let c = conf(json!({"cniVersion":"0.3.1","name":"n","type":"macvlan"}));
        assert!(!c.is_list());
        assert_eq!(c.plugin_types(), vec!["macvlan"]);
        let l = conf(
            json!({"cniVersion":"0.3.1","name":"l","plugins":[{"type":"macvlan","capabilities":{"ips":true}},{"type":"tuning","capabilities":{"mac":true,"x":false}}]}),
        );
        assert!(l.is_list());
        assert_eq!(l.capabilities().into_iter().collect::<Vec<_>>(), vec!["ips", "mac"]);
        for bad in ["../../bin/sh", "/bin/sh", "", "..", "a/b"] {
            let e = NetworkConfig::from_value(&json!({"name":"n","type": bad})).unwrap_err();
            assert_eq!(e.code, 7, "{bad}");
            let e = NetworkConfig::from_value(&json!({"name":"n","plugins":[{"type": bad}]})).unwrap_err();
            assert_eq!(e.code, 7, "{bad}");
        }
        assert_eq!(NetworkConfig::from_value(&json!({"name":"n"})).unwrap_err().code, 7);
        assert_eq!(NetworkConfig::from_value(&json!({"name":"n","plugins":[]})).unwrap_err().code, 7);
        assert_eq!(NetworkConfig::parse(b"{".to_vec()).unwrap_err().code, 7);
        for bad in [json!("../../x"), json!("a/b"), json!("a b"), json!(".."), json!(7)] {
            let e = NetworkConfig::from_value(&json!({"name": bad, "type": "macvlan"})).unwrap_err();
            assert_eq!(e.code, 7, "{bad}");
        }
        for ok in ["k8s-pod-network", "macvlan_conf.1", ""] {
            NetworkConfig::from_value(&json!({"name": ok, "type": "macvlan"})).unwrap();
        }
        assert_eq!(
            NetworkConfig::from_value(&json!({"name":"n","type":"x","cniVersion":"5.0.0"})).unwrap_err().code,
            1
        );
    }

    #[test]
    fn plugin_stdin_injects_only_declared_capabilities() {
        let plugin = json!({"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false},"snat":true});
        let caps = json!({"portMappings":[{"hostPort":80}],"bandwidth":{"ingressRate":1},"mac":"x"});
        let out: Value = serde_json::from_slice(&plugin_stdin(
            plugin.as_object().unwrap(),
            "net",
            "0.4.0",
            Some(&json!({"cniVersion":"0.4.0"})),
            caps.as_object().unwrap(),
        ))
        .unwrap();
        assert_eq!(out["name"], "net");
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(out["snat"], true);
        assert_eq!(out["runtimeConfig"], json!({"portMappings":[{"hostPort":80}]}));
        assert_eq!(out["prevResult"]["cniVersion"], "0.4.0");
        let none: Value = serde_json::from_slice(&plugin_stdin(
            json!({"type":"x"}).as_object().unwrap(),
            "n",
            "1.0.0",
            None,
            caps.as_object().unwrap(),
        ))
        .unwrap();
        assert!(none.get("runtimeConfig").is_none());
        assert!(none.get("prevResult").is_none());
    }

    #[test]
    fn version_injection_keeps_unknown_fields() {
        let c = conf(
            json!({"name":"k8s-pod-network","plugins":[{"type":"calico","kubernetes":{"kubeconfig":"/etc/cni/net.d/calico-kubeconfig"}}]}),
        );
        let c = c.with_default_version("0.3.1");
        assert_eq!(c.cni_version(), "0.3.1");
        let v: Value = serde_json::from_slice(&c.bytes).unwrap();
        assert_eq!(v["plugins"][0]["kubernetes"]["kubeconfig"], "/etc/cni/net.d/calico-kubeconfig");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn chain_passes_prev_result_and_del_runs_in_reverse_attempting_all() {
        let exec = FakeExec::default();
        let c = conf(json!({"cniVersion":"0.4.0","name":"l","plugins":[{"type":"a"},{"type":"b"},{"type":"c"}]}));
        let rt = RuntimeConf { ifname: "eth0".into(), netns: "/n".into(), ..Default::default() };
        add_network(&exec, &c, &rt).await.unwrap();
        let calls = exec.calls();
        assert!(calls[0].stdin.get("prevResult").is_none());
        assert_eq!(calls[1].stdin["prevResult"]["ips"][0]["address"], "10.0.0.2/24");
        exec.answer("b", Command::Del, Err(CniError::new(7, "b broke")));
        let err = del_network(&exec, &c, &rt, Some(&json!({"cniVersion":"0.4.0"}))).await.unwrap_err();
        assert_eq!(err.msg, "b broke");
        let dels: Vec<_> = exec.calls().into_iter().filter(|c| c.command == Command::Del).map(|c| c.plugin).collect();
        assert_eq!(dels, vec!["c", "b", "a"]);
    }

    #[tokio::test]
    async fn a_delegate_past_its_deadline_is_killed_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let exec = BinaryExec::new("", &[], Duration::from_millis(500));
        let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
        let rt = RuntimeConf::default();
        let error = exec.run(Path::new("/bin/sh"), Command::Add, &rt, script.as_bytes(), "sleeper").await.unwrap_err();
        assert!(matches!(error, DelegateError::Deadline { .. }), "{error}");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        assert!(!Path::new("/proc").join(pid.trim()).exists(), "{} is still there", pid.trim());
    }

    #[tokio::test]
    async fn a_delegate_that_cannot_be_executed_says_why() {
        let exec = BinaryExec::new("", &[], Duration::from_secs(5));
        let rt = RuntimeConf::default();
        let error = exec.run(Path::new("/nonexistent/bridge"), Command::Add, &rt, b"{}", "bridge").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "bridge: cannot execute /nonexistent/bridge: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn stderr_tail_respects_char_boundaries() {
        let s = "é".repeat(5000);
        let t = tail(s.as_bytes(), 4095);
        assert!(t.len() <= 4095 + "…".len() + 1);
    }
}
