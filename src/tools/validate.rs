//! `multus validate`: the checks an admission webhook would make, offline.
//!
//! Input is NetworkAttachmentDefinitions (YAML or JSON, several documents allowed) and/or
//! network selection annotation values. Every problem is listed, not just the first: the
//! fine-grained checks give each its own line, and the plugin's own loader
//! ([`config_from_nad`]) runs last so nothing it would refuse is ever called valid.

use crate::cni::Version;
use crate::cni::version::SUPPORTED_VERSIONS;
use crate::config::{DEFAULT_MULTUS_NAMESPACE, valid_network_name};
use crate::delegate::{NetworkConfig, validate_plugin_type};
use crate::k8s::nad::config_from_nad;
use crate::k8s::selection::{self, DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, NetworkSelection};
use crate::tools::report::{Check, Report, Status};
use kube::api::DynamicObject;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::io::{self, Read};

/// Input larger than this is refused: a NAD is kilobytes.
const MAX_INPUT: u64 = 16 * 1024 * 1024;
const NAD_API_VERSION: &str = "k8s.cni.cncf.io/v1";
const NAD_KIND: &str = "NetworkAttachmentDefinition";

/// `multus validate` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Files or directories (their *.yaml, *.yml, *.json) of NetworkAttachmentDefinitions and
    /// Pods, YAML or JSON, several documents each; - reads stdin. A Pod's networks annotation is
    /// checked against the NADs given.
    #[arg(value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
    /// A k8s.v1.cni.cncf.io/networks annotation value
    #[arg(long, value_name = "VALUE")]
    pub annotation: Option<String>,
    /// A v1.multus-cni.io/default-network annotation value
    #[arg(long = "default-network", value_name = "VALUE")]
    pub default_network: Option<String>,
    /// The pod's namespace, and that of NADs whose metadata names none
    #[arg(long, value_name = "NS", default_value = "default")]
    pub namespace: String,
    /// Print the report as JSON: a list of {check, status (ok|warn|fail), message, hint}
    #[arg(long)]
    pub json: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { files: Vec::new(), annotation: None, default_network: None, namespace: "default".into(), json: false }
    }
}

/// Why nothing could be validated (exit code 2): the input, not its content, is the problem.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("nothing to validate: give a FILE (- for stdin), --annotation or --default-network")]
    NothingToValidate,
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} is larger than 16 MiB")]
    TooLarge { what: String },
    #[error("{what} is not UTF-8 text")]
    NotText { what: String },
}

/// Validate what `opts` names; `stdin` is read only for `-`. The report's exit code is 0
/// (valid) or 1 (invalid); unreadable input is an [`InputError`] (exit code 2).
pub fn run(opts: &Options, mut stdin: impl Read) -> Result<Report, InputError> {
    if opts.files.is_empty() && opts.annotation.is_none() && opts.default_network.is_none() {
        return Err(InputError::NothingToValidate);
    }
    let mut report = Report::default();
    let mut pods = Vec::new();
    let nads = if opts.files.is_empty() {
        None
    } else {
        let mut nads = Vec::new();
        for file in expand_dirs(&opts.files)? {
            let (what, text) = read_input(&file, &mut stdin)?;
            nads.extend(check_manifests(&mut report, &what, &text, &opts.namespace, &mut pods));
        }
        Some(nads)
    };
    check_annotations(&mut report, opts, nads.as_deref());
    for pod in pods {
        check_pod(&mut report, opts, pod, nads.as_deref().unwrap_or_default());
    }
    Ok(report)
}

/// A directory stands for its `*.yaml`, `*.yml` and `*.json` files, in name order.
fn expand_dirs(inputs: &[String]) -> Result<Vec<String>, InputError> {
    let mut files = Vec::new();
    for input in inputs {
        let path = std::path::Path::new(input);
        if input == "-" || !path.is_dir() {
            files.push(input.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|source| InputError::Read { what: input.clone(), source })?;
        let mut found: Vec<String> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
            .map(|p| p.display().to_string())
            .collect();
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// A Pod of the input: its selection annotations, checked like --annotation.
struct PodAnnotations {
    label: String,
    namespace: String,
    networks: Option<String>,
    default_network: Option<String>,
}

fn pod_annotations(doc: &Value, default_namespace: &str) -> PodAnnotations {
    let namespace = doc.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(default_namespace);
    let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("(unnamed)");
    let annotation = |key: &str| doc.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str);
    PodAnnotations {
        label: format!("pod {namespace}/{name}"),
        namespace: namespace.to_owned(),
        networks: annotation(NETWORKS_ANNOTATION).map(str::to_owned),
        default_network: annotation(DEFAULT_NETWORK_ANNOTATION).map(str::to_owned),
    }
}

fn check_pod(report: &mut Report, opts: &Options, pod: PodAnnotations, nads: &[NadInfo]) {
    if pod.networks.is_none() && pod.default_network.is_none() {
        report.push(Check::ok(pod.label, "no networks annotation: the default network only"));
        return;
    }
    let pod_opts = Options {
        annotation: pod.networks,
        default_network: pod.default_network,
        namespace: pod.namespace,
        files: Vec::new(),
        json: opts.json,
    };
    let mut checks = Report::default();
    check_annotations(&mut checks, &pod_opts, Some(nads));
    for mut check in checks.checks {
        check.check = format!("{}: {}", pod.label, check.check);
        report.push(check);
    }
}

fn read_input(file: &str, stdin: impl Read) -> Result<(String, String), InputError> {
    let (what, reader): (String, Box<dyn Read>) = if file == "-" {
        ("stdin".into(), Box::new(stdin))
    } else {
        let f = std::fs::File::open(file).map_err(|source| InputError::Read { what: file.into(), source })?;
        (file.into(), Box::new(f))
    };
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| InputError::Read { what: what.clone(), source })?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(InputError::TooLarge { what });
    }
    let text = String::from_utf8(bytes).map_err(|_| InputError::NotText { what: what.clone() })?;
    Ok((what, text))
}

// ---------------------------------------------------------------------------------------
// NetworkAttachmentDefinitions
// ---------------------------------------------------------------------------------------

/// What the annotation checks need to know of a NAD.
#[derive(Debug, Clone)]
struct NadInfo {
    namespace: String,
    name: String,
    /// Capabilities its plugins declare; `None` when its config did not load.
    capabilities: Option<BTreeSet<String>>,
}

fn check_manifests(
    report: &mut Report,
    what: &str,
    text: &str,
    default_namespace: &str,
    pods: &mut Vec<PodAnnotations>,
) -> Vec<NadInfo> {
    let docs = match parse_documents(text) {
        Ok(docs) => docs,
        Err(e) => {
            report.push(Check::fail(format!("input {what}"), e, "give a NetworkAttachmentDefinition in YAML or JSON"));
            return Vec::new();
        }
    };
    let mut nads = Vec::new();
    let pods_before = pods.len();
    for (i, doc) in docs.iter().enumerate() {
        if doc.get("kind").and_then(Value::as_str) == Some("Pod") {
            pods.push(pod_annotations(doc, default_namespace));
            continue;
        }
        let (checks, nad) = check_document(i + 1, doc, default_namespace);
        report.extend(checks);
        nads.extend(nad);
    }
    if nads.is_empty() && pods.len() == pods_before && report.count(Status::Fail) == 0 {
        report.push(Check::fail(
            format!("input {what}"),
            "holds no NetworkAttachmentDefinition",
            format!("a NAD has apiVersion: {NAD_API_VERSION} and kind: {NAD_KIND}"),
        ));
    }
    nads
}

/// JSON when it looks like JSON (for JSON's own error messages), YAML otherwise; every
/// document, `kind: List` unpacked, empty documents dropped.
fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = if text.trim_start().starts_with('{') {
        vec![serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?]
    } else {
        serde_saphyr::from_multiple(text).map_err(|e| format!("not valid YAML: {}", first_line(&e.to_string())))?
    };
    let mut out = Vec::new();
    for doc in docs {
        match doc.get("items").and_then(Value::as_array) {
            Some(items) if doc.get("kind").and_then(Value::as_str) == Some("List") => out.extend(items.iter().cloned()),
            _ if doc.is_null() => {}
            _ => out.push(doc),
        }
    }
    Ok(out)
}

/// The YAML error renderer draws a source snippet under its first line; a check is one
/// line, and the first one already has the position.
fn first_line(text: &str) -> &str {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line)
}

/// The checks of one document under one label. A failed NAD gets one ✗ per problem; a
/// valid one a ✓ summary, plus any ⚠.
struct Findings {
    label: String,
    checks: Vec<Check>,
}

impl Findings {
    fn fail(&mut self, message: impl Into<String>, hint: impl Into<String>) {
        self.checks.push(Check::fail(&self.label, message, hint));
    }

    fn warn(&mut self, message: impl Into<String>, hint: impl Into<String>) {
        self.checks.push(Check::warn(&self.label, message, hint));
    }

    fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }
}

fn str_at<'a>(doc: &'a Value, pointer: &str) -> Option<&'a str> {
    doc.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn check_document(index: usize, doc: &Value, default_namespace: &str) -> (Vec<Check>, Option<NadInfo>) {
    let name = str_at(doc, "/metadata/name");
    let namespace = str_at(doc, "/metadata/namespace").unwrap_or(default_namespace);
    let label = match name {
        Some(n) => format!("NAD {namespace}/{n}"),
        None => format!("document {index}"),
    };
    let mut f = Findings { label, checks: Vec::new() };
    if !doc.is_object() {
        f.fail(
            format!("is {}, not a mapping", selection::json_kind(doc)),
            "a NetworkAttachmentDefinition is a YAML mapping",
        );
        return (f.checks, None);
    }
    match doc.get("kind").and_then(Value::as_str) {
        Some(NAD_KIND) => {}
        Some(other) => {
            let skipped = Check::warn(
                format!("document {index}"),
                format!("kind {other}, not {NAD_KIND}: skipped"),
                "only NetworkAttachmentDefinitions are validated here; pass annotations with --annotation",
            );
            return (vec![skipped], None);
        }
        None => f.fail(
            format!("has no kind (want {NAD_KIND})"),
            format!("add apiVersion: {NAD_API_VERSION} and kind: {NAD_KIND}"),
        ),
    }
    match doc.get("apiVersion").and_then(Value::as_str) {
        Some(NAD_API_VERSION) => {}
        other => f.fail(
            format!(
                "apiVersion is {}, not {NAD_API_VERSION}",
                other.map_or("missing".to_string(), |v| format!("{v:?}"))
            ),
            format!("set apiVersion: {NAD_API_VERSION}"),
        ),
    }
    match (name, doc.pointer("/metadata/name")) {
        (None, Some(v @ (Value::Bool(_) | Value::Number(_)))) => f.fail(
            format!("metadata.name is {} ({v}), not a string", selection::json_kind(v)),
            "quote it: YAML reads unquoted y, n, yes, no, on, off and numbers as other types",
        ),
        (None, _) => f.fail("metadata.name is missing", "name the NAD: pods select it by that name"),
        (Some(n), _) if !selection::is_dns_label(n) => f.warn(
            format!("name {n:?} is not a DNS-1123 label: the networks annotation cannot select it"),
            "use lower-case letters, digits and '-', at most 63 characters",
        ),
        (Some(_), _) => {}
    }
    f.checks.extend(crate::tools::devices::check_resource_name(&f.label, doc));
    let loaded = check_spec_config(&mut f, doc, name).filter(|_| !f.failed());
    let summary = loaded.as_ref().map(|(config, injected)| Check::ok(&f.label, describe(config, *injected)));
    let capabilities = loaded.as_ref().map(|(config, _)| config.capabilities());
    let info = name.map(|n| NadInfo { namespace: namespace.to_string(), name: n.to_string(), capabilities });
    let checks = summary.into_iter().chain(f.checks).collect();
    (checks, info)
}

/// `spec.config`: a string holding a CNI conf or conflist the plugin would load. Returns
/// the loaded config and whether its name is the NAD's (injected).
fn check_spec_config(f: &mut Findings, doc: &Value, name: Option<&str>) -> Option<(NetworkConfig, bool)> {
    let text = match doc.pointer("/spec/config") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        None | Some(Value::Null) | Some(Value::String(_)) => {
            f.warn(
                format!(
                    "spec.config is empty: every node then needs a CNI config named {:?} in its confDir",
                    name.unwrap_or_default()
                ),
                "put the CNI config in spec.config unless the file really is on every node",
            );
            return None;
        }
        Some(other) => {
            f.fail(
                format!("spec.config must be a string holding JSON, not {}", selection::json_kind(other)),
                "quote the JSON: config: '{ \"cniVersion\": \"1.0.0\", ... }'",
            );
            return None;
        }
    };
    let map = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            f.fail(
                format!("spec.config must be a JSON object, not {}", selection::json_kind(&other)),
                "give one CNI conf or conflist",
            );
            return None;
        }
        Err(e) => {
            f.fail(format!("spec.config is not valid JSON: {e}"), "run the config through `jq .` to find the error");
            return None;
        }
    };
    check_plugins(f, &map);
    check_cni_version(f, &map);
    check_network_name(f, &map, name);
    if f.failed() {
        return None;
    }
    // The plugin's own loader has the last word.
    let loaded = serde_json::from_value::<DynamicObject>(doc.clone())
        .map_err(|e| e.to_string())
        .and_then(|obj| config_from_nad(&obj, "/nonexistent", "").map_err(|e| e.msg));
    let injected = !matches!(map.get("name"), Some(Value::String(n)) if !n.is_empty());
    match loaded {
        Ok(config) => Some((config, injected)),
        Err(e) => {
            f.fail(e, "fix spec.config");
            None
        }
    }
}

/// A single plugin (`type`) or a conflist (`plugins`), every type a plain file name.
fn check_plugins(f: &mut Findings, map: &Map<String, Value>) {
    match (map.get("type"), map.get("plugins")) {
        (Some(t), plugins) => {
            check_type(f, "type", t);
            check_ipam_type(f, "", map);
            if plugins.is_some() {
                f.warn(
                    "has both \"type\" and \"plugins\": it is loaded as a single plugin and \"plugins\" is ignored",
                    "keep one of them",
                );
            }
        }
        (None, Some(Value::Array(plugins))) if plugins.is_empty() => {
            f.fail(
                "conflist without plugins: \"plugins\" is empty",
                "list at least one plugin, e.g. [{\"type\": \"macvlan\"}]",
            );
        }
        (None, Some(Value::Array(plugins))) => {
            for (i, plugin) in plugins.iter().enumerate() {
                let at = format!("plugins[{i}]");
                match plugin.as_object() {
                    None => f.fail(
                        format!("{at} is {}, not an object", selection::json_kind(plugin)),
                        "each plugin is a JSON object with a \"type\"",
                    ),
                    Some(p) => match p.get("type") {
                        None => f.fail(
                            format!("{at} has no \"type\""),
                            "name the plugin binary, e.g. \"type\": \"macvlan\"",
                        ),
                        Some(t) => {
                            check_type(f, &format!("{at}.type"), t);
                            check_ipam_type(f, &format!("{at}."), p);
                        }
                    },
                }
            }
        }
        (None, Some(other)) => {
            f.fail(
                format!("\"plugins\" must be a list, not {}", selection::json_kind(other)),
                "a conflist has \"plugins\": [ {...}, ... ]",
            );
        }
        (None, None) => f.fail(
            "spec.config has neither \"type\" (one plugin) nor \"plugins\" (a conflist)",
            "add \"type\": \"<plugin>\" or a \"plugins\" list",
        ),
    }
}

fn check_type(f: &mut Findings, at: &str, value: &Value) {
    match value.as_str() {
        None => f.fail(format!("{at} must be a string, not {}", selection::json_kind(value)), "name the plugin binary"),
        Some(t) if validate_plugin_type(t).is_err() => f.fail(
            format!("{at} {t:?} is not a plain file name: plugins are looked up by name in binDir, never by path"),
            "name the plugin binary, e.g. \"macvlan\"",
        ),
        Some(_) => {}
    }
}

/// The delegated plugin execs its IPAM by name too: a path there escapes binDir as well.
fn check_ipam_type(f: &mut Findings, at: &str, plugin: &Map<String, Value>) {
    if let Some(t) = plugin.get("ipam").and_then(|ipam| ipam.get("type")) {
        check_type(f, &format!("{at}ipam.type"), t);
    }
}

fn check_cni_version(f: &mut Findings, map: &Map<String, Value>) {
    let is_list = !map.contains_key("type");
    match map.get("cniVersion") {
        None | Some(Value::Null) => f.warn(
            if is_list {
                "no cniVersion: the conflist gets the cniVersion of multus' own config"
            } else {
                "no cniVersion: the plugin reads it as 0.1.0"
            },
            "set \"cniVersion\", e.g. \"1.0.0\"",
        ),
        Some(Value::String(v)) if v.is_empty() => {
            f.warn("cniVersion is empty: read as 0.1.0", "set \"cniVersion\", e.g. \"1.0.0\"")
        }
        Some(Value::String(v)) if Version::of_config(v).is_err() => f.fail(
            format!("cniVersion {v:?} is not supported (supported: {})", SUPPORTED_VERSIONS.join(", ")),
            "use one of the supported versions",
        ),
        Some(Value::String(_)) => {}
        Some(other) => f.fail(
            format!("cniVersion must be a string, not {}", selection::json_kind(other)),
            "e.g. \"cniVersion\": \"1.0.0\"",
        ),
    }
}

/// The network name must be valid for libcni, or absent so the NAD's name is injected.
fn check_network_name(f: &mut Findings, map: &Map<String, Value>, nad_name: Option<&str>) {
    let rule = "letters, digits, '_', '.' and '-', starting with a letter or digit";
    match map.get("name") {
        None | Some(Value::Null) => match nad_name {
            Some(n) if !valid_network_name(n) => f.fail(
                format!("spec.config has no name and the NAD's name {n:?} cannot stand in for it ({rule})"),
                "set \"name\" in spec.config",
            ),
            _ => {}
        },
        Some(Value::String(n)) if n.is_empty() => {
            f.fail("spec.config name is empty", "remove it (the NAD's name is then used) or set it")
        }
        Some(Value::String(n)) if !valid_network_name(n) => {
            f.fail(format!("network name {n:?} is invalid: {rule}"), "fix \"name\" in spec.config")
        }
        Some(Value::String(_)) => {}
        Some(other) => {
            f.fail(format!("name must be a string, not {}", selection::json_kind(other)), "fix \"name\" in spec.config")
        }
    }
}

/// The ✓ line of a valid NAD.
fn describe(config: &NetworkConfig, injected: bool) -> String {
    let types = config.plugin_types().join(", ");
    let shape = if config.is_list() { format!("conflist ({types})") } else { format!("plugin {types}") };
    let version = match config.cni_version() {
        "" => String::new(),
        v => format!(", cniVersion {v}"),
    };
    let name = if injected {
        format!("network {:?} (the NAD's name)", config.name())
    } else {
        format!("network {:?}", config.name())
    };
    let capabilities = config.capabilities();
    let capabilities = if capabilities.is_empty() {
        String::new()
    } else {
        format!("; capabilities: {}", capabilities.into_iter().collect::<Vec<_>>().join(", "))
    };
    format!("{shape}, {name}{version}{capabilities}")
}

// ---------------------------------------------------------------------------------------
// Annotations
// ---------------------------------------------------------------------------------------

fn check_annotations(report: &mut Report, opts: &Options, nads: Option<&[NadInfo]>) {
    let grammar_hint = "see the annotation grammar in the README: `[ns/]name[@ifname]` items separated by ',', \
                        or a JSON list of objects with at least \"name\"";
    let mut selections: Vec<NetworkSelection> = Vec::new();
    if let Some(value) = &opts.default_network {
        let check = format!("annotation {DEFAULT_NETWORK_ANNOTATION}");
        match selection::parse_default_network(value, DEFAULT_MULTUS_NAMESPACE) {
            Ok(sel) => {
                report.push(Check::ok(check, format!("selects {}", describe_selection(&sel))));
                selections.push(sel);
            }
            Err(e) => report.push(Check::fail(check, e.to_string(), grammar_hint)),
        }
    }
    if let Some(value) = &opts.annotation {
        let check = format!("annotation {NETWORKS_ANNOTATION}");
        match selection::parse_networks(value, &opts.namespace) {
            Ok(sels) if sels.is_empty() => {
                report.push(Check::warn(check, "selects no network", "give at least one network name"))
            }
            Ok(sels) => {
                let list = sels.iter().map(describe_selection).collect::<Vec<_>>().join(", ");
                report.push(Check::ok(check, format!("selects {} network(s): {list}", sels.len())));
                selections.extend(sels);
            }
            Err(e) => report.push(Check::fail(check, e.to_string(), grammar_hint)),
        }
    }
    report.extend(check_default_routes(&selections));
    if let Some(nads) = nads {
        report.extend(selections.iter().filter_map(|sel| check_capabilities(sel, nads)));
    }
}

fn describe_selection(sel: &NetworkSelection) -> String {
    let mut text = format!("{}/{}", sel.namespace, sel.name);
    if let Some(ifname) = &sel.interface {
        text.push('@');
        text.push_str(ifname);
    }
    let requested: Vec<&str> = requested_capabilities(sel).iter().map(|(key, _)| *key).collect();
    if !requested.is_empty() {
        text.push_str(&format!(" (requests {})", requested.join(", ")));
    }
    text
}

/// At most one default-route gateway per IP family over all selections (no ECMP).
fn check_default_routes(selections: &[NetworkSelection]) -> Option<Check> {
    let check = "default-route";
    if let Err(e) = selection::check_default_routes(selections) {
        return Some(Check::fail(check, e.to_string(), "request \"default-route\" on one network per IP family"));
    }
    let gateways: Vec<String> = selections
        .iter()
        .flat_map(|s| s.default_route.iter().flatten().map(move |gw| format!("{gw} via {}/{}", s.namespace, s.name)))
        .collect();
    (!gateways.is_empty()).then(|| Check::ok(check, gateways.join(", ")))
}

/// Annotation keys that reach plugins as capabilities, and the capability names.
fn requested_capabilities(sel: &NetworkSelection) -> Vec<(&'static str, &'static str)> {
    let mut caps = Vec::new();
    if !sel.ips.is_empty() {
        caps.push(("ips", "ips"));
    }
    if sel.mac.is_some() {
        caps.push(("mac", "mac"));
    }
    if sel.port_mappings.is_some() {
        caps.push(("portMappings", "portMappings"));
    }
    if sel.bandwidth.is_some() {
        caps.push(("bandwidth", "bandwidth"));
    }
    if sel.infiniband_guid.is_some() {
        caps.push(("infiniband-guid", "infinibandGUID"));
    }
    if sel.device_id.is_some() {
        caps.push(("deviceID", "deviceID"));
    }
    caps
}

/// Every capability the selection requests must be declared by a plugin of its NAD:
/// runtimeConfig only reaches plugins that declare it.
fn check_capabilities(sel: &NetworkSelection, nads: &[NadInfo]) -> Option<Check> {
    let requested = requested_capabilities(sel);
    if requested.is_empty() {
        return None;
    }
    let target = format!("{}/{}", sel.namespace, sel.name);
    let check = format!("capabilities {target}");
    let Some(nad) = nads.iter().find(|n| n.namespace == sel.namespace && n.name == sel.name) else {
        return Some(Check::warn(
            check,
            format!("{target} is not among the given NADs: the requested capabilities are not checked"),
            "pass its NetworkAttachmentDefinition as FILE too (or set --namespace)",
        ));
    };
    let Some(declared) = &nad.capabilities else {
        return Some(Check::warn(
            check,
            format!("the config of {target} did not load: capabilities not checked"),
            "fix the NAD first",
        ));
    };
    let missing: Vec<&(&str, &str)> = requested.iter().filter(|(_, cap)| !declared.contains(*cap)).collect();
    if missing.is_empty() {
        let keys = requested.iter().map(|(key, _)| *key).collect::<Vec<_>>().join(", ");
        return Some(Check::ok(check, format!("requests {keys}; a plugin of the NAD declares each")));
    }
    let message = missing.iter().map(|(key, cap)| undeclared(key, cap, &target)).collect::<Vec<_>>().join("; ");
    let hint = missing
        .iter()
        .map(|(_, cap)| format!("\"capabilities\": {{\"{cap}\": true}} on {}", who_applies(cap)))
        .collect::<Vec<_>>()
        .join("; ");
    Some(Check::fail(check, message, format!("declare {hint}")))
}

fn undeclared(key: &str, cap: &str, nad: &str) -> String {
    let problem = format!("the annotation requests {key:?} but no plugin of NAD {nad} declares the {cap:?} capability");
    match cap {
        // Multus also passes these as CNI_ARGS, which only some plugins still read.
        "ips" | "mac" => {
            format!(
                "{problem}: no plugin gets it as runtimeConfig, only as the deprecated CNI_ARGS {}=",
                cap.to_uppercase()
            )
        }
        _ => format!("{problem}: it is ignored"),
    }
}

fn who_applies(cap: &str) -> &'static str {
    match cap {
        "ips" => "the main plugin (its IPAM must read them, e.g. static)",
        "mac" => "the plugin that sets it (e.g. tuning)",
        "portMappings" => "portmap",
        "bandwidth" => "bandwidth",
        "infinibandGUID" => "ib-sriov",
        "deviceID" => "the device plugin's CNI (e.g. sriov, host-device)",
        _ => "the plugin that applies it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(file_text: Option<&str>, annotation: Option<&str>) -> Report {
        let opts = Options {
            files: file_text.map(|_| "-".to_string()).into_iter().collect(),
            annotation: annotation.map(String::from),
            namespace: "default".into(),
            ..Default::default()
        };
        run(&opts, file_text.unwrap_or_default().as_bytes()).unwrap()
    }

    /// A NAD as JSON text, its `spec.config` given as a value or as raw text.
    fn nad(name: &str, config: impl Into<Value>) -> String {
        let config = match config.into() {
            Value::String(raw) => raw,
            other => other.to_string(),
        };
        json!({"apiVersion": NAD_API_VERSION, "kind": NAD_KIND, "metadata": {"name": name}, "spec": {"config": config}})
            .to_string()
    }

    fn failures(r: &Report) -> Vec<String> {
        r.checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.message.clone()).collect()
    }

    const C1: &str = r#"apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: privatezone-macvlan-conf
spec:
  config: '{ "cniVersion": "0.3.0", "name": "privatezone-macvlan-conf", "type": "macvlan", "master": "enp0s8",
    "mode": "bridge", "ipam": { "type": "host-local", "subnet": "10.12.34.0/24", "rangeStart": "10.12.34.200",
    "rangeEnd": "10.12.34.220", "routes": [ { "dst": "0.0.0.0/0" } ], "gateway": "10.12.34.254" } }'
"#;

    fn c2() -> String {
        nad(
            "macvlan-conf",
            json!({"cniVersion": "0.3.1", "name": "macvlan-conf", "plugins": [
                {"type": "macvlan", "capabilities": {"ips": true}, "master": "eth1", "mode": "bridge",
                 "ipam": {"type": "static"}},
                {"type": "tuning", "capabilities": {"mac": true}}]}),
        )
    }

    #[test]
    fn seed_nad_is_valid() {
        let r = validate(Some(C1), None);
        assert_eq!(r.exit_code(), 0, "{}", r.to_text());
        assert_eq!(r.checks.len(), 1);
        assert_eq!(r.checks[0].check, "NAD default/privatezone-macvlan-conf");
        assert_eq!(r.checks[0].message, "plugin macvlan, network \"privatezone-macvlan-conf\", cniVersion 0.3.0");
    }

    #[test]
    fn every_problem_is_listed() {
        let config = json!({"cniVersion": "9.9.9", "name": "a b",
            "plugins": [{"type": "../../bin/sh"}, {"type": "tuning", "ipam": {"type": "/x"}}, 3]});
        let text = nad("x", config).replace(NAD_API_VERSION, "v1");
        let fails = failures(&validate(Some(&text), None));
        assert_eq!(fails.len(), 6, "{fails:#?}");
        assert!(fails[0].starts_with("apiVersion is \"v1\""));
        assert!(fails.iter().any(|m| m.starts_with("plugins[0].type \"../../bin/sh\" is not a plain file name")));
        assert!(fails.iter().any(|m| m.starts_with("plugins[1].ipam.type \"/x\"")));
        assert!(fails.iter().any(|m| m == "plugins[2] is a number, not an object"));
        assert!(fails.iter().any(|m| m.starts_with("cniVersion \"9.9.9\" is not supported")));
        assert!(fails.iter().any(|m| m.starts_with("network name \"a b\" is invalid")));
    }

    #[test]
    fn config_shapes() {
        let fails = |config: Value| failures(&validate(Some(&nad("net", config)), None));
        assert_eq!(
            fails(json!({"cniVersion": "1.0.0", "plugins": []})),
            vec!["conflist without plugins: \"plugins\" is empty"]
        );
        assert!(fails(json!(r#"{"cniVersion":"1.0.0","name":"n""#))[0].starts_with("spec.config is not valid JSON"));
        assert!(fails(json!([1]))[0].starts_with("spec.config must be a JSON object"));
        assert!(fails(json!({"cniVersion": "1.0.0"}))[0].starts_with("spec.config has neither"));
        assert!(fails(json!({"cniVersion": "1.0.0", "plugins": {}}))[0].starts_with("\"plugins\" must be a list"));
        assert!(fails(json!({"cniVersion": "1.0.0", "type": "bridge"})).is_empty(), "the NAD's name is injected");

        let r = validate(Some(&nad("net", json!({"plugins": [{"type": "bridge"}]}))), None);
        assert_eq!(r.checks[1].status, Status::Warn, "no cniVersion: {r:?}");
        let object = "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: net}\n\
                      spec:\n  config:\n    type: bridge\n";
        assert!(failures(&validate(Some(object), None))[0].starts_with("spec.config must be a string holding JSON"));
        let empty = "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: net}\n";
        let r = validate(Some(empty), None);
        assert_eq!(r.exit_code(), 0);
        assert!(r.checks[0].message.starts_with("spec.config is empty"));
    }

    #[test]
    fn unquoted_yaml_booleans_are_not_names() {
        let text = "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata: {name: no}\n";
        let fails = failures(&validate(Some(text), None));
        assert_eq!(fails, vec!["metadata.name is a boolean (false), not a string"]);
    }

    #[test]
    fn documents_lists_and_other_kinds() {
        let text = format!("{C1}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\n---\n");
        let r = validate(Some(&text), None);
        // A Pod is not skipped: its (absent) networks annotation is checked.
        assert_eq!(r.checks.iter().map(|c| c.status).collect::<Vec<_>>(), vec![Status::Ok, Status::Ok]);
        assert_eq!(r.checks[1].check, "pod default/web");
        let r = validate(Some("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"), None);
        assert_eq!(failures(&r), vec!["holds no NetworkAttachmentDefinition"]);
        let r = validate(Some("a: [b"), None);
        assert_eq!(failures(&r), vec!["not valid YAML: line 1 column 4: unclosed bracket '['"]);
        let mut item: Value =
            serde_json::from_str(&nad("a", json!({"cniVersion": "1.0.0", "type": "bridge"}))).unwrap();
        item["metadata"]["namespace"] = "x".into();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [item]}).to_string();
        assert_eq!(validate(Some(&list), None).checks[0].check, "NAD x/a");
    }

    #[test]
    fn annotations_grammar_and_ecmp() {
        let r = validate(None, Some("ipvlan-conf-1, ipvlan-conf-2"));
        assert_eq!(r.checks.len(), 1);
        assert_eq!(r.checks[0].message, "selects 2 network(s): default/ipvlan-conf-1, default/ipvlan-conf-2");
        for bad in ["a,,b", "ns/a/b", r#"{"name":"a"}"#] {
            assert_eq!(validate(None, Some(bad)).exit_code(), 1, "{bad}");
        }
        let ecmp = r#"[{"name":"a","default-route":["10.0.0.1"]},{"name":"b","default-route":["10.0.1.1"]}]"#;
        let r = validate(None, Some(ecmp));
        assert_eq!((r.checks[1].check.as_str(), r.checks[1].status), ("default-route", Status::Fail));
        let one = r#"[{"name":"a","default-route":["10.0.0.1"]},{"name":"b","default-route":["fd00::1"]}]"#;
        assert_eq!(validate(None, Some(one)).checks[1].message, "10.0.0.1 via default/a, fd00::1 via default/b");
    }

    #[test]
    fn requested_capabilities_must_be_declared() {
        let d3 = r#"[{ "name": "macvlan-conf", "ips": [ "10.1.1.101/24" ], "gateway": [ "10.1.1.1" ] }]"#;
        let r = validate(Some(&c2()), Some(d3));
        assert_eq!(r.exit_code(), 0, "{}", r.to_text());
        assert_eq!(r.checks.last().unwrap().message, "requests ips; a plugin of the NAD declares each");

        let ports = r#"[{"name":"macvlan-conf","portMappings":[{"hostPort":80,"containerPort":80}]}]"#;
        let r = validate(Some(&c2()), Some(ports));
        assert_eq!(r.exit_code(), 1);
        let last = r.checks.last().unwrap();
        assert!(last.message.contains("no plugin of NAD default/macvlan-conf declares the \"portMappings\""));
        assert_eq!(last.hint.as_deref(), Some("declare \"capabilities\": {\"portMappings\": true} on portmap"));

        let r = validate(Some(&c2()), Some(r#"[{"name":"other","mac":"02:00:00:00:00:01"}]"#));
        assert_eq!(r.checks.last().unwrap().status, Status::Warn, "not among the given NADs");
    }

    #[test]
    fn usage_errors() {
        assert!(matches!(run(&Options::default(), io::empty()), Err(InputError::NothingToValidate)));
        let opts = Options { files: vec!["/nonexistent/nad.yaml".into()], ..Default::default() };
        assert!(matches!(run(&opts, io::empty()), Err(InputError::Read { .. })));
        let opts = Options { files: vec!["-".into()], ..Default::default() };
        assert!(matches!(run(&opts, &[0xff, 0xfe][..]), Err(InputError::NotText { .. })));
    }
}
