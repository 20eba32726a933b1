//! `multus doctor`: what on this node would make an ADD fail, found without running one.
//!
//! Each check reads something real (the config file, binDir, the kubeconfig and the API
//! server, the cache directory, the host's links) and comes out ✓ / ⚠ / ✗ with one line of
//! explanation and, when something is off, a hint. Nothing on the node is changed. Every
//! API call has a deadline: a dead API server is a ✗, never a hang.
//!
//! [`Report`] and [`Check`] are shared with `multus validate`.

use crate::cache;
use crate::config::MultusConf;
use crate::delegate::{BinaryExec, NetworkConfig, PluginExec};
use crate::k8s::nad;
use crate::netns::{IpFamily, LinkInfo, Netlink};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Where the Multus DaemonSet writes its config; `.conflist` when it writes a list.
const DEFAULT_CONFIG: &str = "/etc/cni/net.d/00-multus.conf";
const DEFAULT_CONFLIST: &str = "/etc/cni/net.d/00-multus.conflist";
/// No single API call of the doctor waits longer than this.
const MAX_API_WAIT: Duration = Duration::from_secs(5);
/// Stale cache entries named in one line before "and N more".
const MAX_LISTED: usize = 5;

// ---------------------------------------------------------------------------------------
// The report (also `multus validate`'s)
// ---------------------------------------------------------------------------------------

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn symbol(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Warn => "⚠",
            Status::Fail => "✗",
        }
    }
}

/// One line of a report: `{check, status, message, hint}` in `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub message: String,
    /// What to do about it; `None` when there is nothing to do.
    pub hint: Option<String>,
}

impl Check {
    pub fn new(status: Status, check: impl Into<String>, message: impl Into<String>, hint: Option<String>) -> Check {
        Check { check: check.into(), status, message: message.into(), hint }
    }

    pub fn ok(check: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(Status::Ok, check, message, None)
    }

    pub fn warn(check: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Check {
        Check::new(Status::Warn, check, message, Some(hint.into()))
    }

    pub fn fail(check: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Check {
        Check::new(Status::Fail, check, message, Some(hint.into()))
    }
}

/// The checks in the order they were made. Serialises as a bare JSON list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
    }

    pub fn extend(&mut self, checks: impl IntoIterator<Item = Check>) {
        self.checks.extend(checks);
    }

    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// 0 when nothing failed, 1 otherwise (warnings do not fail).
    pub fn exit_code(&self) -> u8 {
        u8::from(self.count(Status::Fail) > 0)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
    }

    /// One line per check, hints indented under warnings and failures, a summary last:
    /// meant to be pasted into an issue as is.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let _ = writeln!(out, "{} {}: {}", c.status.symbol(), c.check, c.message);
            if let (Status::Warn | Status::Fail, Some(hint)) = (c.status, &c.hint) {
                let _ = writeln!(out, "    hint: {hint}");
            }
        }
        out.push_str(&self.summary());
        out
    }

    pub fn summary(&self) -> String {
        let plural = |n: usize, word: &str| if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") };
        format!(
            "{}, {}, {} ok",
            plural(self.count(Status::Fail), "failure"),
            plural(self.count(Status::Warn), "warning"),
            self.count(Status::Ok)
        )
    }
}

// ---------------------------------------------------------------------------------------
// Options and entry point
// ---------------------------------------------------------------------------------------

/// `multus doctor` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The Multus config file: 00-multus.conf, or a .conflist whose first plugin of type
    /// multus is used [default: /etc/cni/net.d/00-multus.conf, else 00-multus.conflist]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The runtime's plugin directories (its CNI_PATH, ':'-separated), searched after binDir
    #[arg(long = "cni-path", value_name = "DIRS", default_value = crate::config::DEFAULT_BIN_DIR)]
    pub cni_path: String,
    /// Cache entries older than this many days are flagged as possibly stale
    #[arg(long = "stale-days", value_name = "DAYS", default_value_t = 30)]
    pub stale_days: u64,
    /// Print the report as JSON: a list of {check, status (ok|warn|fail), message, hint}
    #[arg(long)]
    pub json: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { config: None, cni_path: crate::config::DEFAULT_BIN_DIR.into(), stale_days: 30, json: false }
    }
}

/// Diagnose this node. Never panics on bad input; the caller prints the report and exits
/// with [`Report::exit_code`].
pub fn run(opts: &Options) -> Report {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(diagnose(opts)),
        Err(e) => Report {
            checks: vec![Check::fail("doctor", format!("cannot start the async runtime: {e}"), "report this as a bug")],
        },
    }
}

/// The checks, in the order a person would go through them.
pub async fn diagnose(opts: &Options) -> Report {
    let mut report = Report::default();
    let path = config_path(opts);
    let Some(conf) = check_config(&mut report, &path) else {
        return report;
    };
    let wait = api_wait(&conf);
    let client = check_api(&mut report, &conf, wait).await;
    if let Some(client) = &client {
        report.extend(check_rbac(client, wait).await);
    }
    let networks = check_networks(&mut report, &conf, client.as_ref(), wait).await;
    let cni_path: Vec<PathBuf> = std::env::split_paths(&opts.cni_path).filter(|p| !p.as_os_str().is_empty()).collect();
    let exec = BinaryExec::new(&conf.bin_dir, &cni_path, conf.delegate_timeout());
    report.extend(check_binaries(&exec, &networks, Status::Fail));
    report.extend(check_readiness(&conf));
    report.extend(crate::agent::doctor::check_mirror(&conf));
    let stale_after = Duration::from_secs(opts.stale_days.saturating_mul(24 * 3600));
    report.extend(check_cache(Path::new(&conf.cni_dir), stale_after, SystemTime::now()));
    let nads = match &client {
        Some(client) => check_nads(&mut report, client, &conf, &exec, wait).await,
        None => Vec::new(),
    };
    let all: Vec<Network> = networks.into_iter().chain(nads).collect();
    report.extend(check_masters(&all).await);
    report
}

fn config_path(opts: &Options) -> PathBuf {
    if let Some(p) = &opts.config {
        return p.clone();
    }
    // The DaemonSet writes one or the other; prefer the one that exists.
    if !Path::new(DEFAULT_CONFIG).exists() && Path::new(DEFAULT_CONFLIST).exists() {
        return DEFAULT_CONFLIST.into();
    }
    DEFAULT_CONFIG.into()
}

/// Per-call deadline: the config's API budget, capped so the doctor stays quick.
fn api_wait(conf: &MultusConf) -> Duration {
    conf.api_timeout().min(MAX_API_WAIT)
}

/// A network the node would attach: where it comes from and its config.
#[derive(Debug, Clone)]
struct Network {
    /// `delegate k8s-pod-network`, `clusterNetwork calico`, `NAD default/macvlan-conf`.
    label: String,
    config: NetworkConfig,
}

// ---------------------------------------------------------------------------------------
// The config file
// ---------------------------------------------------------------------------------------

fn check_config(report: &mut Report, path: &Path) -> Option<MultusConf> {
    let check = "config";
    let conf = match load_config(path) {
        Ok(conf) => conf,
        Err(e) => {
            report.push(Check::fail(
                check,
                format!("{e} (the other checks need it)"),
                "the runtime gives this file to multus on every ADD; fix it, or pass --config with the right file",
            ));
            return None;
        }
    };
    let networks = if conf.cluster_network.is_empty() {
        format!("{} static delegate(s)", conf.delegates.len())
    } else {
        format!("clusterNetwork {:?}", conf.cluster_network)
    };
    report.push(Check::ok(
        check,
        format!("{} parses: network {:?}, cniVersion {}, {networks}", path.display(), conf.name, conf.cni_version),
    ));
    report.extend(check_config_order(path));
    Some(conf)
}

/// The config as the runtime hands it to us: a conflist contributes its first plugin of
/// type multus, with the list's `name` and `cniVersion` (libcni's rule).
fn load_config(path: &Path) -> Result<MultusConf, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let bytes = match value.get("plugins") {
        Some(plugins) => {
            let plugin = multus_plugin_of_list(&value, plugins).map_err(|e| format!("{}: {e}", path.display()))?;
            serde_json::to_vec(&plugin).map_err(|e| e.to_string())?
        }
        None => bytes,
    };
    MultusConf::parse(&bytes).map_err(|e| format!("{}: {}", path.display(), e.msg))
}

fn multus_plugin_of_list(list: &Value, plugins: &Value) -> Result<Value, String> {
    let plugins = plugins.as_array().ok_or("\"plugins\" is not a list")?;
    let plugin = plugins
        .iter()
        .find(|p| p.get("type").and_then(Value::as_str) == Some("multus"))
        .ok_or("the conflist has no plugin of type \"multus\"")?;
    let mut plugin = plugin.as_object().cloned().unwrap_or_default();
    for key in ["name", "cniVersion"] {
        if let Some(v) = list.get(key) {
            plugin.insert(key.into(), v.clone());
        }
    }
    Ok(Value::Object(plugin))
}

/// The runtime uses the lexically first config of its directory: a file sorting before
/// ours means multus is never called.
fn check_config_order(path: &Path) -> Option<Check> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|x| x.to_str()), Some("conf" | "conflist" | "json")))
        .collect();
    files.sort();
    let first = files.first()?;
    if first.file_name() == path.file_name() {
        return None;
    }
    Some(Check::warn(
        "config",
        format!(
            "{} sorts before {}: a runtime that reads {} uses that one, not multus",
            first.display(),
            path.display(),
            dir.display()
        ),
        "rename the files so multus' config comes first (the DaemonSet names it 00-multus.conf)",
    ))
}

// ---------------------------------------------------------------------------------------
// The API server: kubeconfig, reachability, RBAC
// ---------------------------------------------------------------------------------------

/// Kubeconfig, then GET /version. `Some(client)` only when the API answered.
async fn check_api(report: &mut Report, conf: &MultusConf, wait: Duration) -> Option<Client> {
    let mut cfg = match kube_config(conf).await {
        Ok(Some((cfg, source))) => {
            let server = cfg.cluster_url.to_string();
            report.push(Check::ok("kubeconfig", format!("{source}: server {}", server.trim_end_matches('/'))));
            cfg
        }
        Ok(None) => {
            report.push(Check::warn(
                "kubeconfig",
                "not set: only the static delegates are used; pod annotations and NADs are ignored",
                "set \"kubeconfig\" in the config (the DaemonSet writes /etc/cni/net.d/multus.d/multus.kubeconfig)",
            ));
            return None;
        }
        Err(check) => {
            report.push(check);
            return None;
        }
    };
    // As Kube::connect: our own deadlines, no kube-side retries that outlive them.
    cfg.connect_timeout = Some(wait);
    cfg.read_timeout = Some(wait);
    cfg.write_timeout = Some(wait);
    cfg.default_retry = false;
    let url = cfg.cluster_url.to_string().trim_end_matches('/').to_string();
    let client = match Client::try_from(cfg) {
        Ok(client) => client,
        Err(e) => {
            report.push(Check::fail(
                "api server",
                format!("cannot build a client: {}", chain(&e)),
                "check the kubeconfig's cluster and user entries",
            ));
            return None;
        }
    };
    let started = Instant::now();
    match deadline(wait, client.apiserver_version()).await {
        Ok(info) => {
            report.push(Check::ok(
                "api server",
                format!(
                    "{url} answered GET /version in {} ms: Kubernetes {}",
                    started.elapsed().as_millis(),
                    info.git_version
                ),
            ));
            Some(client)
        }
        Err(e) => {
            report.push(Check::fail("api server", format!("GET {url}/version: {e}"), api_hint(&e, &url)));
            None
        }
    }
}

fn api_hint(error: &str, url: &str) -> String {
    if error.contains("401") {
        return "the API server rejected the credentials: the token may have expired; \
                restarting the multus pod rewrites the kubeconfig"
            .into();
    }
    format!(
        "check that this node reaches {url} (curl -k {url}/version) and that the kubeconfig names the right server; \
         meanwhile every ADD fails with code 11 (try again later)"
    )
}

/// The client config the plugin would build: from `kubeconfig`, else in-cluster, else none.
async fn kube_config(conf: &MultusConf) -> Result<Option<(Config, String)>, Check> {
    let check = "kubeconfig";
    if conf.kubeconfig.is_empty() {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
            && std::env::var_os("KUBERNETES_SERVICE_PORT").is_some()
        {
            return Config::incluster().map(|c| Some((c, "in-cluster service account".to_string()))).map_err(|e| {
                Check::fail(
                    check,
                    format!("in-cluster configuration: {}", chain(&e)),
                    "set \"kubeconfig\" in the config",
                )
            });
        }
        return Ok(None);
    }
    let path = Path::new(&conf.kubeconfig);
    if !path.exists() {
        return Err(Check::fail(
            check,
            format!("{} does not exist", path.display()),
            "the Multus DaemonSet writes it when its pod starts on this node: is the kube-multus-ds pod running here?",
        ));
    }
    // Unreadable (not root?) is not the same problem as unparsable.
    if let Err(e) = std::fs::File::open(path) {
        return Err(Check::fail(check, format!("cannot read {}: {e}", path.display()), "run the doctor as root"));
    }
    let kc = Kubeconfig::read_from(path).map_err(|e| {
        Check::fail(
            check,
            format!("{} does not parse: {}", path.display(), chain(&e)),
            "it must be a kubeconfig (YAML)",
        )
    })?;
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.map_err(|e| {
        Check::fail(
            check,
            format!("{}: {}", path.display(), chain(&e)),
            "the current context must name a cluster with a server and a user with credentials",
        )
    })?;
    Ok(Some((cfg, path.display().to_string())))
}

/// One permission the plugin needs (reference §1.15).
struct Permission {
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    /// What the plugin cannot do without it.
    purpose: &'static str,
}

impl Permission {
    fn label(&self) -> String {
        let resource = if self.subresource.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        let group = if self.group.is_empty() { String::new() } else { format!(".{}", self.group) };
        format!("{} {resource}{group}", self.verb)
    }

    fn rule(&self) -> String {
        let resource = if self.subresource.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        format!(
            "add to the ClusterRole bound to multus' ServiceAccount: \
             {{apiGroups: [\"{}\"], resources: [\"{resource}\"], verbs: [\"{}\"]}}",
            self.group, self.verb
        )
    }

    fn is(&self, verb: &str, resource: &str, subresource: &str) -> bool {
        self.verb == verb && self.resource == resource && self.subresource == subresource
    }
}

const PERMISSIONS: [Permission; 5] = [
    Permission {
        verb: "get",
        group: "",
        resource: "pods",
        subresource: "",
        purpose: "read the pod's network annotations",
    },
    Permission {
        verb: "patch",
        group: "",
        resource: "pods",
        subresource: "",
        purpose: "write the network-status annotation",
    },
    Permission {
        verb: "update",
        group: "",
        resource: "pods",
        subresource: "status",
        purpose: "write the network-status annotation when patch is denied",
    },
    Permission {
        verb: "get",
        group: "k8s.cni.cncf.io",
        resource: "network-attachment-definitions",
        subresource: "",
        purpose: "read the networks pods select",
    },
    Permission {
        verb: "create",
        group: "",
        resource: "events",
        subresource: "",
        purpose: "report AddedInterface events",
    },
];

/// One SelfSubjectAccessReview per permission, all at once.
async fn check_rbac(client: &Client, wait: Duration) -> Vec<Check> {
    let answers = futures::future::join_all(PERMISSIONS.iter().map(|p| review(client, p, wait))).await;
    rbac_checks(&answers)
}

async fn review(client: &Client, p: &Permission, wait: Duration) -> Result<bool, String> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(p.verb.into()),
                group: Some(p.group.into()),
                resource: Some(p.resource.into()),
                subresource: (!p.subresource.is_empty()).then(|| p.subresource.into()),
                // No namespace: in every namespace, as the plugin works for pods of all of them.
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = deadline(wait, api.create(&PostParams::default(), &review)).await?;
    answer.status.map(|s| s.allowed).ok_or_else(|| "the review came back without a status".into())
}

/// ✗ for what the plugin cannot work without; ⚠ when only patch is denied, since the
/// plugin then falls back to update on pods/status (Go Multus' way).
fn rbac_checks(answers: &[Result<bool, String>]) -> Vec<Check> {
    let allowed = |verb, resource, sub| {
        PERMISSIONS.iter().zip(answers).find(|(p, _)| p.is(verb, resource, sub)).and_then(|(_, a)| a.clone().ok())
    };
    let patch = allowed("patch", "pods", "");
    let update_status = allowed("update", "pods", "status");
    PERMISSIONS
        .iter()
        .zip(answers)
        .map(|(p, answer)| {
            let check = format!("rbac: {}", p.label());
            match answer {
                Err(e) => Check::warn(
                    check,
                    format!("could not ask the API server: {e}"),
                    "ask by hand: kubectl auth can-i --as=system:serviceaccount:kube-system:multus VERB RESOURCE",
                ),
                Ok(true) => Check::ok(check, format!("allowed ({})", p.purpose)),
                Ok(false) if p.is("patch", "pods", "") && update_status == Some(true) => Check::warn(
                    check,
                    "denied: network-status is written with GET + update on pods/status instead \
                     (two requests, retried on conflict)",
                    p.rule(),
                ),
                Ok(false) if p.is("update", "pods", "status") && patch == Some(true) => {
                    Check::ok(check, "denied, and not needed: patch on pods is allowed")
                }
                Ok(false) if p.is("patch", "pods", "") || p.is("update", "pods", "status") => Check::fail(
                    check,
                    "denied, and so is the other way to write it: pods never get their network-status annotation",
                    p.rule(),
                ),
                Ok(false) => Check::fail(check, format!("denied: the plugin cannot {}", p.purpose), p.rule()),
            }
        })
        .collect()
}

/// Run one API call under `wait`; every error as one line.
async fn deadline<T>(wait: Duration, call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, String> {
    match tokio::time::timeout(wait, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer within {} s", wait.as_secs_f64())),
    }
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => chain(other),
    }
}

/// An error and its sources, each once: kube's top-level messages alone rarely say why.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

fn nad_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition");
    ApiResource::from_gvk_with_plural(&gvk, "network-attachment-definitions")
}

// ---------------------------------------------------------------------------------------
// The node's own networks: delegates, clusterNetwork, defaultNetworks
// ---------------------------------------------------------------------------------------

async fn check_networks(
    report: &mut Report,
    conf: &MultusConf,
    client: Option<&Client>,
    wait: Duration,
) -> Vec<Network> {
    let mut networks = Vec::new();
    if conf.cluster_network.is_empty() {
        if conf.delegates.is_empty() {
            report.push(Check::fail(
                "networks",
                "neither \"delegates\" nor \"clusterNetwork\" is set: every ADD fails",
                "set \"clusterNetwork\" (a file, a directory or a network name) \
                 or list the primary network in \"delegates\"",
            ));
        }
        for (i, value) in conf.delegates.iter().enumerate() {
            match static_delegate(value, &conf.cni_version) {
                Ok(config) => {
                    let role = if i == 0 { "the pod's eth0" } else { "an extra interface" };
                    let label = format!("delegate {}", config.name());
                    report.push(Check::ok(&label, format!("{}; {role}", describe_config(&config))));
                    networks.push(Network { label, config });
                }
                Err(e) => report.push(Check::fail(
                    format!("delegate {i}"),
                    e,
                    "every ADD fails while a delegate does not parse; fix it in the config",
                )),
            }
        }
        return networks;
    }
    let named = std::iter::once(("clusterNetwork", &conf.cluster_network))
        .chain(conf.default_networks.iter().map(|n| ("defaultNetworks", n)));
    for (role, value) in named {
        let label = format!("{role} {value}");
        match resolve_named(conf, client, value, wait).await {
            Ok((config, source)) => {
                report.push(Check::ok(&label, format!("{source}: {}", describe_config(&config))));
                networks.push(Network { label, config });
            }
            Err(e) => report.push(Check::fail(
                &label,
                e,
                format!(
                    "give a file or directory path, a config named {value:?} in confDir {}, or a NAD {}/{value}",
                    conf.conf_dir, conf.multus_namespace
                ),
            )),
        }
    }
    networks
}

/// A static delegate as ADD loads it (`Node::static_delegates`).
fn static_delegate(value: &Value, cni_version: &str) -> Result<NetworkConfig, String> {
    let config = NetworkConfig::from_value(value).map_err(|e| e.msg)?.with_default_version(cni_version);
    if config.name().is_empty() {
        return Err("missing network name".into());
    }
    Ok(config)
}

/// `clusterNetwork`/`defaultNetworks`: a path, else (as ADD) a NAD in multusNamespace
/// when the API is there, else a config of that name in confDir.
async fn resolve_named(
    conf: &MultusConf,
    client: Option<&Client>,
    value: &str,
    wait: Duration,
) -> Result<(NetworkConfig, String), String> {
    if value.contains('/') {
        return nad::load_path(Path::new(value)).map(|c| (c, format!("file {value}"))).map_err(|e| e.msg);
    }
    let from_conf_dir = || {
        nad::find_in_conf_dir(Path::new(&conf.conf_dir), value)
            .map(|c| (c, format!("config in {}", conf.conf_dir)))
            .map_err(|e| e.msg)
    };
    let Some(client) = client else {
        return from_conf_dir();
    };
    let ns = &conf.multus_namespace;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &nad_resource());
    match deadline(wait, api.get_opt(value)).await {
        Ok(Some(obj)) => nad::config_from_nad(&obj, &conf.conf_dir, &conf.cni_version)
            .map(|c| (c, format!("NAD {ns}/{value}")))
            .map_err(|e| e.msg),
        Ok(None) => from_conf_dir(),
        Err(e) => Err(format!("cannot get NAD {ns}/{value}: {e}")),
    }
}

fn describe_config(config: &NetworkConfig) -> String {
    let version = match config.cni_version() {
        "" => "no cniVersion".to_string(),
        v => format!("cniVersion {v}"),
    };
    let types = config.plugin_types();
    if config.is_list() {
        format!("conflist of {} plugin(s) ({}), {version}", types.len(), types.join(", "))
    } else {
        format!("plugin {}, {version}", types.join(", "))
    }
}

// ---------------------------------------------------------------------------------------
// Plugin binaries
// ---------------------------------------------------------------------------------------

/// Every plugin and IPAM binary of `networks` resolvable in binDir/CNI path. Missing ones
/// are `severity` (✗ for the node's own networks, ⚠ for NADs only some pods select).
fn check_binaries(exec: &BinaryExec, networks: &[Network], severity: Status) -> Vec<Check> {
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for network in networks {
        for t in plugin_and_ipam_types(&network.config) {
            users.entry(t).or_default().insert(network.label.clone());
        }
    }
    if users.is_empty() {
        return Vec::new();
    }
    // binDir is often also on the CNI path: name each directory once.
    let mut dirs: Vec<String> = Vec::new();
    for d in &exec.search_path {
        let d = d.display().to_string();
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    let dirs = dirs.join(", ");
    let mut found = Vec::new();
    let mut checks = Vec::new();
    for (t, used_by) in &users {
        if exec.find(t).is_ok() {
            found.push(t.as_str());
            continue;
        }
        let used_by = used_by.iter().cloned().collect::<Vec<_>>().join(", ");
        let present = exec.search_path.iter().map(|d| d.join(t)).find(|p| p.exists());
        let (message, hint) = match present {
            Some(p) => (
                format!("{} exists but is not an executable file (used by {used_by})", p.display()),
                format!("chmod 755 {}", p.display()),
            ),
            None => (
                format!("not found in {dirs} (used by {used_by})"),
                "install it into binDir; the reference plugins come from containernetworking/plugins \
                 (often installed by a DaemonSet)"
                    .to_string(),
            ),
        };
        checks.push(Check::new(severity, format!("plugin {t}"), message, Some(hint)));
    }
    if severity == Status::Fail && checks.is_empty() {
        checks.insert(
            0,
            Check::ok("plugin binaries", format!("all {} found in {dirs}: {}", found.len(), found.join(", "))),
        );
    }
    checks
}

/// Plugin types and the IPAM types they exec, in order, each once.
fn plugin_and_ipam_types(config: &NetworkConfig) -> Vec<String> {
    let mut types = Vec::new();
    for plugin in config.plugins() {
        let t = plugin.get("type").and_then(Value::as_str);
        let ipam = plugin.get("ipam").and_then(|i| i.get("type")).and_then(Value::as_str);
        for t in t.into_iter().chain(ipam).filter(|t| !t.is_empty()) {
            if !types.iter().any(|known| known == t) {
                types.push(t.to_string());
            }
        }
    }
    types
}

// ---------------------------------------------------------------------------------------
// Readiness indicator and cache
// ---------------------------------------------------------------------------------------

fn check_readiness(conf: &MultusConf) -> Option<Check> {
    if conf.readiness_indicator_file.is_empty() {
        return None;
    }
    let path = Path::new(&conf.readiness_indicator_file);
    let check = "readiness indicator";
    Some(if path.exists() {
        Check::ok(check, format!("{} exists", path.display()))
    } else {
        Check::fail(
            check,
            format!(
                "{} does not exist: every ADD waits {} s for it, then fails with code 11 (try again later)",
                path.display(),
                conf.readiness_timeout().as_secs()
            ),
            "the default network (e.g. Calico) writes it once it is ready on this node: is its pod running here?",
        )
    })
}

/// `cniDir`: mode 0700, how many entries, which are corrupt (✗) or old (⚠).
fn check_cache(dir: &Path, stale_after: Duration, now: SystemTime) -> Vec<Check> {
    let check = "cache";
    let meta = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => {
            return vec![Check::fail(
                check,
                format!("{} is not a directory", dir.display()),
                "it is cniDir in the config: point it at a directory",
            )];
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![Check::ok(check, format!("{} does not exist yet: the first ADD creates it", dir.display()))];
        }
        Err(e) => {
            return vec![Check::fail(check, format!("cannot read {}: {e}", dir.display()), "run the doctor as root")];
        }
    };
    let containers = cache::cached_containers(dir);
    let results = cache::all_results(dir);
    let mode = meta.permissions().mode() & 0o777;
    let mut checks = vec![Check::ok(
        check,
        format!(
            "{}: mode {mode:04o}, {} cached container(s), {} cached result(s)",
            dir.display(),
            containers.len(),
            results.len()
        ),
    )];
    if mode != 0o700 {
        checks.push(Check::warn(
            check,
            format!(
                "{} has mode {mode:04o}, not 0700: the cache holds network configs, which may carry credentials",
                dir.display()
            ),
            format!("chmod 700 {}", dir.display()),
        ));
    }
    checks.extend(containers.iter().filter_map(|id| corrupt_scratch_entry(dir, id)));
    checks.extend(results.iter().filter_map(|(path, record)| corrupt_result_entry(path, record.as_ref())));
    let paths = containers.iter().map(|id| cache::scratch_path(dir, id)).chain(results.into_iter().map(|(p, _)| p));
    checks.extend(stale_entries(paths, stale_after, now));
    checks
}

fn corrupt_scratch_entry(dir: &Path, id: &str) -> Option<Check> {
    let e = cache::load_delegates(dir, id, "eth0").err()?;
    Some(Check::fail(
        "cache entry",
        e.msg,
        format!(
            "DEL of container {id} cannot replay its delegates and falls back to the config's; \
             if `crictl pods -q` has no sandbox {id}, remove the file"
        ),
    ))
}

fn corrupt_result_entry(path: &Path, record: Option<&cache::CachedResult>) -> Option<Check> {
    let why = match record {
        None => "unreadable or not a cached result",
        Some(r) if r.kind != "cniCacheV1" => "not a cniCacheV1 record",
        Some(_) => return None,
    };
    Some(Check::fail(
        "cache entry",
        format!("{}: {why}", path.display()),
        "CHECK and DEL of that attachment run without its prevResult; remove the file once its container is gone",
    ))
}

fn stale_entries(paths: impl Iterator<Item = PathBuf>, stale_after: Duration, now: SystemTime) -> Option<Check> {
    let mut old: Vec<String> = paths
        .filter(|p| {
            let modified = std::fs::metadata(p).and_then(|m| m.modified());
            modified.is_ok_and(|m| now.duration_since(m).is_ok_and(|age| age > stale_after))
        })
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if old.is_empty() {
        return None;
    }
    old.sort();
    let count = old.len();
    let mut listed = old.into_iter().take(MAX_LISTED).collect::<Vec<_>>().join(", ");
    if count > MAX_LISTED {
        let _ = write!(listed, " and {} more", count - MAX_LISTED);
    }
    Some(Check::warn(
        "cache entry",
        format!(
            "{count} entr{} older than {} days, possibly stale (a DEL that never came): {listed}",
            if count == 1 { "y" } else { "ies" },
            stale_after.as_secs() / 86400
        ),
        "compare with `crictl pods -q`; entries of sandboxes that no longer exist can be removed",
    ))
}

// ---------------------------------------------------------------------------------------
// NADs in the cluster
// ---------------------------------------------------------------------------------------

/// Every NAD the API lists: each must parse and have its plugins installed here (⚠: only
/// the pods selecting it are affected). Returns the ones that parse, for the master checks.
async fn check_nads(
    report: &mut Report,
    client: &Client,
    conf: &MultusConf,
    exec: &BinaryExec,
    wait: Duration,
) -> Vec<Network> {
    let check = "network-attachment-definitions";
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &nad_resource());
    let list = match deadline(wait, api.list(&ListParams::default())).await {
        Ok(list) => list,
        Err(e) => {
            report.push(Check::warn(
                check,
                format!("cannot list them in all namespaces: {e}; their master links are not checked"),
                "the plugin itself only needs get; run the doctor with a kubeconfig that may list NADs, \
                 or check each NAD's master with `ip link`",
            ));
            return Vec::new();
        }
    };
    let mut networks = Vec::new();
    let mut problems = Vec::new();
    let mut namespaces = BTreeSet::new();
    for obj in &list.items {
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        namespaces.insert(ns.clone());
        let label = format!("NAD {ns}/{name}");
        match nad::config_from_nad(obj, &conf.conf_dir, &conf.cni_version) {
            Ok(config) => networks.push(Network { label, config }),
            Err(e) => problems.push(Check::warn(
                &label,
                format!("does not load: {}; pods selecting it fail", e.msg),
                "`kubectl get net-attach-def -o yaml` it, then check it with `multus validate FILE`",
            )),
        }
    }
    let missing = check_binaries(exec, &networks, Status::Warn);
    let plugins = if missing.is_empty() { "their plugins are installed here" } else { "some plugins are missing here" };
    report
        .push(Check::ok(check, format!("{} listed in {} namespace(s); {plugins}", list.items.len(), namespaces.len())));
    report.extend(problems);
    report.extend(missing.into_iter().map(|mut c| {
        c.message.push_str("; pods selecting those networks on this node fail");
        c
    }));
    networks
}

// ---------------------------------------------------------------------------------------
// Master links of macvlan/ipvlan networks
// ---------------------------------------------------------------------------------------

/// A macvlan/ipvlan plugin of a network, and what it needs from the host.
#[derive(Debug, Clone, PartialEq)]
struct MasterUse {
    network: String,
    plugin: String,
    /// `None`: the plugin takes the interface of the host's IPv4 default route.
    master: Option<String>,
    /// The IPAM subnets, to spot the "pod cannot reach its own node" case.
    subnets: Vec<Cidr>,
}

fn master_uses(networks: &[Network]) -> Vec<MasterUse> {
    let mut uses = Vec::new();
    for network in networks {
        for plugin in network.config.plugins() {
            let Some(t @ ("macvlan" | "ipvlan")) = plugin.get("type").and_then(Value::as_str) else {
                continue;
            };
            uses.push(MasterUse {
                network: network.label.clone(),
                plugin: t.to_string(),
                master: plugin.get("master").and_then(Value::as_str).filter(|m| !m.is_empty()).map(String::from),
                subnets: ipam_subnets(plugin),
            });
        }
    }
    uses
}

async fn check_masters(networks: &[Network]) -> Vec<Check> {
    let uses = master_uses(networks);
    if uses.is_empty() {
        return Vec::new();
    }
    let mut checks = Vec::new();
    let default_link = if uses.iter().any(|u| u.master.is_none()) { default_route_link().await } else { None };
    let mut by_link: BTreeMap<String, Vec<&MasterUse>> = BTreeMap::new();
    for u in &uses {
        match (&u.master, &default_link) {
            (Some(m), _) | (None, Some(m)) => by_link.entry(m.clone()).or_default().push(u),
            (None, None) => checks.push(Check::fail(
                format!("master of {}", u.network),
                format!("{} names no master and the host has no IPv4 default route to take one from", u.plugin),
                "set \"master\" to this node's NIC (see `ip link`)",
            )),
        }
    }
    for (name, uses) in by_link {
        let link = Netlink.host_link(&name).await.map_err(|e| e.to_string());
        checks.extend(master_checks(&name, &link, &uses));
    }
    checks
}

async fn default_route_link() -> Option<String> {
    let routes = Netlink.host_default_routes().await.ok()?;
    routes.into_iter().find(|r| r.family == IpFamily::V4).map(|r| r.ifname)
}

/// The link must exist (✗), be up (✗) and, under macvlan, be promiscuous (⚠; ipvlan
/// children share the parent's MAC and need no promiscuity); a subnet of the network
/// holding one of the link's addresses gets a ⚠ note.
fn master_checks(name: &str, link: &Result<Option<LinkInfo>, String>, uses: &[&MasterUse]) -> Vec<Check> {
    let check = format!("master {name}");
    let used_by = uses.iter().map(|u| format!("{} ({})", u.network, u.plugin)).collect::<Vec<_>>().join(", ");
    let link = match link {
        Err(e) => return vec![Check::fail(check, format!("cannot read the link: {e}"), "run the doctor as root")],
        Ok(None) => {
            return vec![Check::fail(
                check,
                format!("no link named {name} on this host; used by {used_by}"),
                "\"master\" must name this node's real NIC (see `ip link`): \
                 every pod selecting these networks here fails",
            )];
        }
        Ok(Some(link)) => link,
    };
    if !link.up {
        return vec![Check::fail(
            check,
            format!("{name} is down; used by {used_by}"),
            format!("ip link set dev {name} up"),
        )];
    }
    let mut checks = Vec::new();
    let macvlan = uses.iter().any(|u| u.plugin == "macvlan");
    if macvlan && !link.promiscuous {
        checks.push(Check::warn(
            &check,
            format!("{name} is up but not promiscuous: macvlan children may get no traffic; used by {used_by}"),
            format!(
                "ip link set dev {name} promisc on (on a VM, also allow promiscuous mode on its vNIC); \
                 make it persistent (e.g. a systemd unit)"
            ),
        ));
    } else {
        let promisc = if link.promiscuous { ", promiscuous" } else { "" };
        checks.push(Check::ok(&check, format!("{name} is up{promisc}; used by {used_by}")));
    }
    checks.extend(uses.iter().filter_map(|u| own_address_note(name, link, u)));
    checks
}

/// A macvlan (or ipvlan) child never talks to its parent: pods of a network whose subnet
/// holds the node's address on the master cannot reach the node at that address.
fn own_address_note(name: &str, link: &LinkInfo, u: &MasterUse) -> Option<Check> {
    let (addr, _) = link.addresses.iter().find(|(a, _)| u.subnets.iter().any(|s| s.contains(*a)))?;
    Some(Check::warn(
        format!("master {name}"),
        format!(
            "{} pods of {} cannot reach this node's {addr} over {name}: a {} child never talks to its parent",
            u.plugin, u.network, u.plugin
        ),
        format!(
            "expected, not a fault: reach this node through another of its addresses, or give the node \
             its own {} interface on {name} with an address in that subnet",
            u.plugin
        ),
    ))
}

/// The subnets an IPAM section names: host-local `subnet` and `ranges`, static
/// `addresses`, whereabouts `range`.
fn ipam_subnets(plugin: &Map<String, Value>) -> Vec<Cidr> {
    let Some(ipam) = plugin.get("ipam").and_then(Value::as_object) else {
        return Vec::new();
    };
    let field = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(String::from);
    let mut texts: Vec<String> = Vec::new();
    texts.extend(["subnet", "range"].iter().filter_map(|k| ipam.get(*k).and_then(Value::as_str).map(String::from)));
    let ranges = ipam.get("ranges").and_then(Value::as_array).into_iter().flatten();
    texts.extend(ranges.filter_map(Value::as_array).flatten().filter_map(|r| field(r, "subnet")));
    let addresses = ipam.get("addresses").and_then(Value::as_array).into_iter().flatten();
    texts.extend(addresses.filter_map(|a| field(a, "address")));
    texts.iter().filter_map(|t| Cidr::parse(t)).collect()
}

/// An IP prefix, `10.12.34.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = text.trim().split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
            match u32::from(prefix) {
                0 => 0,
                p => bits >> (width - p.min(width)),
            }
        }
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), 32, self.prefix) == masked(u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix) == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn network(label: &str, v: Value) -> Network {
        Network { label: label.into(), config: NetworkConfig::from_value(&v).unwrap() }
    }

    fn link(name: &str, up: bool, promiscuous: bool, addresses: &[(&str, u8)]) -> LinkInfo {
        LinkInfo {
            name: name.into(),
            index: 7,
            mac: Some("02:00:00:00:00:07".into()),
            mtu: Some(1500),
            addresses: addresses.iter().map(|(a, p)| (a.parse().unwrap(), *p)).collect(),
            up,
            promiscuous,
        }
    }

    #[test]
    fn report_text_json_and_exit_code() {
        let mut r = Report::default();
        r.push(Check::ok("config", "parses"));
        assert_eq!(r.exit_code(), 0);
        r.push(Check::warn("master eth1", "not promiscuous", "ip link set dev eth1 promisc on"));
        assert_eq!(r.exit_code(), 0, "warnings do not fail");
        r.push(Check::fail("plugin macvlan", "not found", "install it"));
        assert_eq!(r.exit_code(), 1);
        let text = r.to_text();
        assert!(text.starts_with(
            "✓ config: parses\n⚠ master eth1: not promiscuous\n    hint: ip link set dev eth1 promisc on\n"
        ));
        assert!(text.ends_with("1 failure, 1 warning, 1 ok"), "{text}");
        let json: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json[0], json!({"check":"config","status":"ok","message":"parses","hint":null}));
        assert_eq!(json[2]["status"], "fail");
    }

    #[test]
    fn conflist_contributes_its_multus_plugin_with_the_list_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("00-multus.conflist");
        std::fs::write(
            &p,
            r#"{"cniVersion":"1.0.0","name":"multus-list","plugins":[{"type":"portmap"},{"type":"multus","delegates":[{"name":"d","type":"bridge"}],"kubeconfig":"/k"}]}"#,
        )
        .unwrap();
        let c = load_config(&p).unwrap();
        assert_eq!((c.name.as_str(), c.cni_version.as_str(), c.kubeconfig.as_str()), ("multus-list", "1.0.0", "/k"));
        std::fs::write(&p, r#"{"cniVersion":"1.0.0","name":"l","plugins":[{"type":"bridge"}]}"#).unwrap();
        assert!(load_config(&p).unwrap_err().contains("no plugin of type \"multus\""));
        std::fs::write(&p, "{").unwrap();
        assert!(load_config(&p).unwrap_err().contains("not valid JSON"));
        assert!(load_config(&dir.path().join("nope")).unwrap_err().contains("cannot read"));
    }

    #[test]
    fn config_order_warns_when_another_file_sorts_first() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("00-multus.conf");
        std::fs::write(&ours, "{}").unwrap();
        std::fs::write(dir.path().join("10-calico.conflist"), "{}").unwrap();
        assert!(check_config_order(&ours).is_none());
        std::fs::write(dir.path().join("00-aaa.conf"), "{}").unwrap();
        assert_eq!(check_config_order(&ours).unwrap().status, Status::Warn);
    }

    #[test]
    fn rbac_patch_denied_is_a_warning_only_while_the_fallback_works() {
        let all = || vec![Ok(true); PERMISSIONS.len()];
        assert!(rbac_checks(&all()).iter().all(|c| c.status == Status::Ok));
        let mut patch_denied = all();
        patch_denied[1] = Ok(false);
        let checks = rbac_checks(&patch_denied);
        assert_eq!(checks[1].status, Status::Warn);
        assert_eq!(checks[1].check, "rbac: patch pods");
        let mut both = patch_denied.clone();
        both[2] = Ok(false);
        let checks = rbac_checks(&both);
        assert_eq!((checks[1].status, checks[2].status), (Status::Fail, Status::Fail));
        let mut only_status = all();
        only_status[2] = Ok(false);
        assert_eq!(rbac_checks(&only_status)[2].status, Status::Ok);
        for i in [0, 3, 4] {
            let mut denied = all();
            denied[i] = Ok(false);
            let checks = rbac_checks(&denied);
            assert_eq!(checks[i].status, Status::Fail, "{}", checks[i].check);
            assert!(checks[i].hint.as_deref().unwrap().contains("ClusterRole"));
        }
        let mut unanswered = all();
        unanswered[0] = Err("no answer within 5 s".into());
        assert_eq!(rbac_checks(&unanswered)[0].status, Status::Warn);
        assert_eq!(rbac_checks(&all())[3].check, "rbac: get network-attachment-definitions.k8s.cni.cncf.io");
    }

    #[test]
    fn master_link_states() {
        let uses = [MasterUse {
            network: "NAD default/m".into(),
            plugin: "macvlan".into(),
            master: Some("eth1".into()),
            subnets: vec![],
        }];
        let refs: Vec<&MasterUse> = uses.iter().collect();
        let status = |l: Result<Option<LinkInfo>, String>| {
            master_checks("eth1", &l, &refs).iter().map(|c| c.status).collect::<Vec<_>>()
        };
        assert_eq!(status(Ok(None)), vec![Status::Fail]);
        assert_eq!(status(Ok(Some(link("eth1", false, true, &[])))), vec![Status::Fail]);
        assert_eq!(status(Ok(Some(link("eth1", true, false, &[])))), vec![Status::Warn]);
        assert_eq!(status(Ok(Some(link("eth1", true, true, &[])))), vec![Status::Ok]);
        assert_eq!(status(Err("EPERM".into())), vec![Status::Fail]);
        let warn = &master_checks("eth1", &Ok(Some(link("eth1", true, false, &[]))), &refs)[0];
        assert!(warn.hint.as_deref().unwrap().starts_with("ip link set dev eth1 promisc on"));

        // ipvlan children share the parent's MAC: no promiscuity needed.
        let ipvlan = [MasterUse { plugin: "ipvlan".into(), ..uses[0].clone() }];
        let refs: Vec<&MasterUse> = ipvlan.iter().collect();
        assert_eq!(master_checks("eth1", &Ok(Some(link("eth1", true, false, &[]))), &refs)[0].status, Status::Ok);
    }

    #[test]
    fn own_node_address_in_the_subnet_gets_a_note() {
        let nets = [network(
            "NAD default/privatezone-macvlan-conf",
            json!({"cniVersion":"0.3.0","name":"privatezone-macvlan-conf","type":"macvlan","master":"enp0s8","mode":"bridge",
                   "ipam":{"type":"host-local","subnet":"10.12.34.0/24","rangeStart":"10.12.34.200","rangeEnd":"10.12.34.220",
                           "routes":[{"dst":"0.0.0.0/0"}],"gateway":"10.12.34.254"}}),
        )];
        let uses = master_uses(&nets);
        assert_eq!(uses.len(), 1);
        assert_eq!(uses[0].master.as_deref(), Some("enp0s8"));
        let refs: Vec<&MasterUse> = uses.iter().collect();
        let checks = master_checks("enp0s8", &Ok(Some(link("enp0s8", true, true, &[("10.12.34.101", 24)]))), &refs);
        assert_eq!(checks.iter().map(|c| c.status).collect::<Vec<_>>(), vec![Status::Ok, Status::Warn]);
        assert!(
            checks[1].message.contains("cannot reach this node's 10.12.34.101 over enp0s8"),
            "{}",
            checks[1].message
        );
        let elsewhere = master_checks("enp0s8", &Ok(Some(link("enp0s8", true, true, &[("192.168.1.5", 24)]))), &refs);
        assert_eq!(elsewhere.len(), 1);
    }

    #[test]
    fn ipam_subnets_of_every_ipam_flavour() {
        let p = json!({"type":"macvlan","ipam":{"type":"host-local","ranges":[[{"subnet":"10.0.4.0/24"}],[{"subnet":"fd00::/64"}]]}});
        assert_eq!(ipam_subnets(p.as_object().unwrap()).len(), 2);
        let p = json!({"type":"macvlan","ipam":{"type":"static","addresses":[{"address":"10.1.1.101/24"}]}});
        assert_eq!(ipam_subnets(p.as_object().unwrap()), vec![Cidr::parse("10.1.1.101/24").unwrap()]);
        let p = json!({"type":"ipvlan","ipam":{"type":"whereabouts","range":"192.168.2.225/28"}});
        assert_eq!(ipam_subnets(p.as_object().unwrap()).len(), 1);
        assert!(ipam_subnets(json!({"type":"macvlan"}).as_object().unwrap()).is_empty());
    }

    #[test]
    fn cidr_containment() {
        let c = Cidr::parse("10.12.34.0/24").unwrap();
        assert!(c.contains("10.12.34.101".parse().unwrap()));
        assert!(!c.contains("10.12.35.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.1.1.1/32").unwrap().contains("10.1.1.1".parse().unwrap()));
        assert!(Cidr::parse("fd00::/64").unwrap().contains("fd00::5".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0.0").is_none());
        assert!(Cidr::parse("x/8").is_none());
    }

    #[test]
    fn binaries_missing_or_not_executable() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        std::os::unix::fs::symlink("/bin/true", bin.join("bridge")).unwrap();
        std::fs::write(bin.join("host-local"), "#!/bin/sh\n").unwrap();
        let exec = BinaryExec::new(bin.to_str().unwrap(), &[], Duration::from_secs(1));
        let nets = [network(
            "delegate br",
            json!({"name":"br","cniVersion":"1.0.0","plugins":[{"type":"bridge","ipam":{"type":"host-local"}},{"type":"portmap"}]}),
        )];
        let checks = check_binaries(&exec, &nets, Status::Fail);
        let by_name: BTreeMap<&str, &Check> = checks.iter().map(|c| (c.check.as_str(), c)).collect();
        assert!(!by_name.contains_key("plugin binaries"), "no ✓ line while some are missing");
        assert!(by_name["plugin host-local"].message.contains("not an executable file"));
        assert!(by_name["plugin portmap"].message.contains("not found"));
        assert!(by_name["plugin portmap"].message.contains("used by delegate br"));
        let nad_checks = check_binaries(&exec, &nets, Status::Warn);
        assert!(nad_checks.iter().all(|c| c.status == Status::Warn));

        let bridge_only = [network("delegate b", json!({"name":"b","type":"bridge"}))];
        let exec = BinaryExec::new(bin.to_str().unwrap(), &[bin.to_path_buf()], Duration::from_secs(1));
        let checks = check_binaries(&exec, &bridge_only, Status::Fail);
        assert_eq!(checks, vec![Check::ok("plugin binaries", format!("all 1 found in {}: bridge", bin.display()))]);
    }

    #[test]
    fn cache_mode_corruption_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let cni = dir.path().join("multus");
        let now = SystemTime::now();
        let week = Duration::from_secs(7 * 86400);
        assert_eq!(check_cache(&cni, week, now)[0].status, Status::Ok, "missing is fine before the first ADD");
        crate::fsutil::create_private_dir(&cni).unwrap();
        let d = crate::delegate::Delegate {
            config: NetworkConfig::from_value(&json!({"name":"n","type":"bridge","cniVersion":"1.0.0"})).unwrap(),
            name: "n".into(),
            ifname: "eth0".into(),
            master: true,
            capability_args: Map::new(),
        };
        cache::save_delegates(&cni, "good", std::slice::from_ref(&d)).unwrap();
        let checks = check_cache(&cni, week, now);
        assert_eq!(checks.len(), 1);
        assert!(
            checks[0].message.ends_with("mode 0700, 1 cached container(s), 0 cached result(s)"),
            "{}",
            checks[0].message
        );

        std::fs::write(cni.join("corrupt"), "garbage").unwrap();
        std::fs::create_dir_all(cache::results_dir(&cni)).unwrap();
        std::fs::write(cache::results_dir(&cni).join("n-x-eth0"), "{}").unwrap();
        let checks = check_cache(&cni, week, now);
        let failed: Vec<&str> =
            checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.message.as_str()).collect();
        assert_eq!(failed.len(), 2, "{checks:#?}");
        assert!(failed.iter().any(|m| m.contains("corrupt")), "{failed:?}");
        assert!(failed.iter().any(|m| m.contains("n-x-eth0")), "{failed:?}");

        let later = now + Duration::from_secs(8 * 86400);
        let stale = check_cache(&cni, week, later);
        let stale = stale.iter().find(|c| c.status == Status::Warn).unwrap();
        assert!(stale.message.starts_with("3 entries older than 7 days"), "{}", stale.message);

        std::fs::set_permissions(&cni, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_cache(&cni, week, now).iter().any(|c| c.status == Status::Warn && c.message.contains("0755")));
    }

    #[test]
    fn static_delegates_get_the_config_version_and_need_a_name() {
        let c = static_delegate(&json!({"name":"k8s-pod-network","plugins":[{"type":"calico"}]}), "0.3.1").unwrap();
        assert_eq!(c.cni_version(), "0.3.1");
        assert_eq!(describe_config(&c), "conflist of 1 plugin(s) (calico), cniVersion 0.3.1");
        assert!(static_delegate(&json!({"type":"bridge"}), "").unwrap_err().contains("name"));
        assert!(static_delegate(&json!({"name":"x","type":"../sh"}), "").is_err());
    }
}
