//! `00-multus.conf`: every key and default of Go Multus' `NetConf`, plus ours.
//! Keys we do not know are kept (`extra`), never dropped.

use crate::cni::Version;
use crate::error::{CniError, DecodeError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/multus/net.d";
pub const DEFAULT_CNI_DIR: &str = "/var/lib/cni/multus";
pub const DEFAULT_MULTUS_NAMESPACE: &str = "kube-system";

fn default_bin_dir() -> String {
    DEFAULT_BIN_DIR.into()
}
fn default_conf_dir() -> String {
    DEFAULT_CONF_DIR.into()
}
fn default_cni_dir() -> String {
    DEFAULT_CNI_DIR.into()
}
fn default_true() -> bool {
    true
}
fn default_system_namespaces() -> Vec<String> {
    vec!["kube-system".into()]
}
fn default_multus_namespace() -> String {
    DEFAULT_MULTUS_NAMESPACE.into()
}
fn default_delegate_timeout() -> f64 {
    60.0
}
fn default_api_timeout() -> f64 {
    10.0
}
fn default_readiness_timeout() -> f64 {
    45.0
}
fn default_lock_timeout() -> f64 {
    30.0
}
fn default_max_cache_file_bytes() -> u64 {
    crate::limits::Limits::DEFAULT.max_cache_file_bytes
}
fn default_max_config_file_bytes() -> u64 {
    crate::limits::Limits::DEFAULT.max_config_file_bytes
}
fn default_max_attachments() -> u64 {
    crate::limits::Limits::DEFAULT.max_attachments
}
fn default_max_nad_config_bytes() -> u64 {
    crate::limits::Limits::DEFAULT.max_nad_config_bytes
}
fn default_max_api_body_bytes() -> u64 {
    crate::limits::Limits::DEFAULT.max_api_body_bytes
}
fn default_pod_resources_socket() -> String {
    "/var/lib/kubelet/pod-resources/kubelet.sock".into()
}
fn default_kubelet_checkpoint_file() -> String {
    "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint".into()
}
fn default_device_info_dir() -> String {
    crate::devices::deviceinfo::DEFAULT_DIR.into()
}

fn default_nad_mirror_max_age() -> f64 {
    30.0
}
fn default_metrics_spool_max_records() -> u64 {
    1000
}

/// Log rotation for `logFile` (Go Multus parses it but never applies it; we do).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    /// Days to keep rotated files.
    #[serde(default = "LogOptions::default_max_age")]
    pub max_age: u64,
    /// Rotate when the file reaches this many megabytes.
    #[serde(default = "LogOptions::default_max_size")]
    pub max_size: u64,
    /// Rotated files to keep.
    #[serde(default = "LogOptions::default_max_backups")]
    pub max_backups: u64,
    /// Gzip rotated files.
    #[serde(default = "default_true")]
    pub compress: bool,
}

impl LogOptions {
    fn default_max_age() -> u64 {
        5
    }
    fn default_max_size() -> u64 {
        100
    }
    fn default_max_backups() -> u64 {
        5
    }
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { max_age: 5, max_size: 100, max_backups: 5, compress: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultusConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub type_: String,
    /// Read by the runtime, not by us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Value>,
    /// Filled by the runtime for the capabilities above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Value>,

    /// Static delegates; `[0]` is the master (the pod's eth0).
    #[serde(default)]
    pub delegates: Vec<Value>,
    #[serde(default)]
    pub cluster_network: String,
    #[serde(default)]
    pub default_networks: Vec<String>,
    #[serde(default)]
    pub kubeconfig: String,
    #[serde(default = "default_conf_dir")]
    pub conf_dir: String,
    #[serde(default = "default_cni_dir")]
    pub cni_dir: String,
    #[serde(default = "default_bin_dir")]
    pub bin_dir: String,
    #[serde(default)]
    pub log_file: String,
    #[serde(default)]
    pub log_level: String,
    #[serde(default = "default_true")]
    pub log_to_stderr: bool,
    #[serde(default)]
    pub log_options: Option<LogOptions>,
    #[serde(default, rename = "readinessindicatorfile")]
    pub readiness_indicator_file: String,
    #[serde(default)]
    pub namespace_isolation: bool,
    /// Comma-separated, as in Go Multus; replaces the default `["default"]`.
    #[serde(default)]
    pub global_namespaces: String,
    #[serde(default = "default_system_namespaces")]
    pub system_namespaces: Vec<String>,
    #[serde(default = "default_multus_namespace")]
    pub multus_namespace: String,
    #[serde(default)]
    pub retry_delete_on_error: bool,
    #[serde(default, rename = "auxiliaryCNIChainName")]
    pub auxiliary_cni_chain_name: String,

    // Keys of ours (Go Multus has no equivalent).
    /// Deadline for each delegate invocation, seconds.
    #[serde(default = "default_delegate_timeout")]
    pub delegate_timeout_seconds: f64,
    /// Overall budget for the API calls of one ADD, seconds (Go Multus: 250 ms per pod GET).
    #[serde(default = "default_api_timeout")]
    pub api_timeout_seconds: f64,
    /// How long ADD waits for `readinessindicatorfile`, seconds.
    #[serde(default = "default_readiness_timeout")]
    pub readiness_timeout_seconds: f64,
    /// Also write the deprecated `k8s.v1.cni.cncf.io/networks-status` key.
    #[serde(default)]
    pub write_legacy_networks_status: bool,
    /// How long an invocation waits for another one of the same container ID, seconds.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout_seconds: f64,
    /// The largest cache record (scratch or results cache) read from `cniDir`.
    #[serde(default = "default_max_cache_file_bytes")]
    pub max_cache_file_bytes: u64,
    /// The largest configured file read: kubeconfig, clusterNetwork and confDir files.
    #[serde(default = "default_max_config_file_bytes")]
    pub max_config_file_bytes: u64,
    /// The most attachments one pod may have (clusterNetwork, defaultNetworks and
    /// the networks annotation together).
    #[serde(default = "default_max_attachments")]
    pub max_attachments: u64,
    /// The largest `spec.config` of one NetworkAttachmentDefinition, bytes.
    #[serde(default = "default_max_nad_config_bytes")]
    pub max_nad_config_bytes: u64,
    /// The largest Kubernetes API response body read, bytes.
    #[serde(default = "default_max_api_body_bytes")]
    pub max_api_body_bytes: u64,
    /// The kubelet pod-resources socket, asked for the devices of NADs with a
    /// `resourceName` (Go Multus: fixed path).
    #[serde(default = "default_pod_resources_socket")]
    pub pod_resources_socket: String,
    /// The kubelet device-manager checkpoint, used when the socket is absent.
    #[serde(default = "default_kubelet_checkpoint_file")]
    pub kubelet_checkpoint_file: String,
    /// Base of the device-info files (`dp/` from device plugins, `cni/` per attachment).
    #[serde(default = "default_device_info_dir")]
    pub device_info_dir: String,

    /// The node agent's NAD mirror (`multus agent --nad-mirror-dir`); empty: no mirror.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nad_mirror_dir: String,
    /// The mirror is used only while its heartbeat is younger than this, seconds.
    #[serde(default = "default_nad_mirror_max_age")]
    pub nad_mirror_max_age_seconds: f64,
    /// Where each invocation leaves its metrics record for the agent; empty: none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metrics_spool_dir: String,
    /// At most this many records wait in the spool; the oldest are dropped.
    #[serde(default = "default_metrics_spool_max_records")]
    pub metrics_spool_max_records: u64,
    /// Node-wide cap on API requests in flight across all plugin processes; 0: no cap.
    #[serde(default)]
    pub max_node_api_requests: u32,

    /// GC input: the attachments the runtime still knows.
    #[serde(default, rename = "cni.dev/valid-attachments", skip_serializing_if = "Option::is_none")]
    pub valid_attachments: Option<Vec<Attachment>>,

    /// Every other key, kept as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One `{containerID, ifname}` of GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, libcni's network-name rule.
pub fn valid_network_name(name: &str) -> bool {
    crate::cni::env::valid_container_id(name)
}

/// The longest wait we honour (a year: as good as forever). Larger values, up to
/// `f64::MAX`, are clamped: `Duration::from_secs_f64` panics past `u64::MAX` seconds and
/// `Instant + Duration` overflows long before that.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

fn seconds(v: f64, default: f64) -> Duration {
    Duration::from_secs_f64(if v.is_finite() && v > 0.0 { v.min(MAX_SECONDS) } else { default })
}

fn undecodable(e: serde_json::Error) -> DecodeError {
    DecodeError::Invalid { what: "error decoding the network configuration".into(), why: e.to_string() }
}

impl MultusConf {
    /// Parse the runtime's stdin: JSON errors are code 6, a missing or invalid name 7,
    /// an unsupported cniVersion 1 (skel's order of checks).
    pub fn parse(stdin: &[u8]) -> Result<MultusConf> {
        let value: Value = serde_json::from_slice(stdin).map_err(undecodable)?;
        if !value.is_object() {
            return Err(DecodeError::NotAnObject("the network configuration").into());
        }
        match value.get("name") {
            Some(Value::String(n)) if n.is_empty() => {
                return Err(CniError::invalid_config("missing network name"));
            }
            Some(Value::String(n)) if !valid_network_name(n) => {
                return Err(CniError::invalid_config(format!("invalid characters found in network name {n:?}")));
            }
            None | Some(Value::Null) => {
                return Err(CniError::invalid_config("missing network name"));
            }
            _ => {}
        }
        let conf: MultusConf = serde_json::from_value(value).map_err(undecodable)?;
        Version::of_config(&conf.cni_version)?;
        Ok(conf)
    }

    /// The checks Go Multus' LoadNetConf makes for every verb that runs delegates.
    pub fn require_networks(&self) -> Result<()> {
        if self.delegates.is_empty() && self.cluster_network.is_empty() {
            return Err(CniError::invalid_config("at least one delegate/clusterNetwork must be specified"));
        }
        Ok(())
    }

    pub fn version(&self) -> Version {
        Version::of_config(&self.cni_version).unwrap_or(Version::V0_1_0)
    }

    /// Namespaces usable across namespaces under isolation.
    pub fn global_namespaces(&self) -> Vec<String> {
        let list: Vec<String> =
            self.global_namespaces.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        if list.is_empty() { vec!["default".into()] } else { list }
    }

    pub fn delegate_timeout(&self) -> Duration {
        seconds(self.delegate_timeout_seconds, default_delegate_timeout())
    }

    pub fn api_timeout(&self) -> Duration {
        seconds(self.api_timeout_seconds, default_api_timeout())
    }

    pub fn nad_mirror_max_age(&self) -> Duration {
        seconds(self.nad_mirror_max_age_seconds, default_nad_mirror_max_age())
    }

    pub fn readiness_timeout(&self) -> Duration {
        seconds(self.readiness_timeout_seconds, default_readiness_timeout())
    }

    pub fn lock_timeout(&self) -> Duration {
        seconds(self.lock_timeout_seconds, default_lock_timeout())
    }

    /// The file-size limits of this config (zero means the default).
    pub fn limits(&self) -> crate::limits::Limits {
        let or = |v: u64, d: u64| if v == 0 { d } else { v };
        crate::limits::Limits {
            max_cache_file_bytes: or(self.max_cache_file_bytes, default_max_cache_file_bytes()),
            max_config_file_bytes: or(self.max_config_file_bytes, default_max_config_file_bytes()),
            max_attachments: or(self.max_attachments, default_max_attachments()),
            max_nad_config_bytes: or(self.max_nad_config_bytes, default_max_nad_config_bytes()),
            max_api_body_bytes: or(self.max_api_body_bytes, default_max_api_body_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// shared/SEEDS.md §A, byte for byte.
    pub const SEED_CONF: &str = include_str!("../tests/data/seed-00-multus.conf");

    #[test]
    fn seed_config_parses_with_defaults() {
        let c = MultusConf::parse(SEED_CONF.as_bytes()).unwrap();
        assert_eq!(c.delegates.len(), 1);
        assert_eq!(c.bin_dir, "/opt/cni/bin");
        assert_eq!(c.conf_dir, "/etc/cni/multus/net.d");
        assert_eq!(c.cni_dir, "/var/lib/cni/multus");
        assert_eq!(c.multus_namespace, "kube-system");
        assert_eq!(c.system_namespaces, vec!["kube-system"]);
        assert!(c.log_to_stderr);
        assert_eq!(c.log_level, "verbose");
        assert_eq!(c.global_namespaces(), vec!["default"]);
        c.require_networks().unwrap();
    }

    #[test]
    fn unknown_keys_are_kept() {
        let c =
            MultusConf::parse(br#"{"name":"n","cniVersion":"1.0.0","delegates":[],"fancy":{"a":1},"cniConf":"/x"}"#)
                .unwrap();
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["fancy"]["a"], 1);
        assert_eq!(back["cniConf"], "/x");
    }

    #[test]
    fn error_codes() {
        assert_eq!(MultusConf::parse(b"not json").unwrap_err().code, 6);
        assert_eq!(MultusConf::parse(b"[1]").unwrap_err().code, 6);
        assert_eq!(MultusConf::parse(br#"{"cniVersion":"1.0.0"}"#).unwrap_err().code, 7);
        assert_eq!(MultusConf::parse(br#"{"name":"","cniVersion":"1.0.0"}"#).unwrap_err().code, 7);
        assert_eq!(MultusConf::parse(br#"{"name":"a b"}"#).unwrap_err().code, 7);
        assert_eq!(MultusConf::parse(br#"{"name":"n","cniVersion":"9.9.9"}"#).unwrap_err().code, 1);
        assert_eq!(MultusConf::parse(br#"{"name":"n","delegates":"x"}"#).unwrap_err().code, 6);
        let c = MultusConf::parse(br#"{"name":"n","cniVersion":"1.0.0"}"#).unwrap();
        assert_eq!(c.require_networks().unwrap_err().code, 7);
        let c =
            MultusConf::parse(br#"{"name":"n","globalNamespaces":"  foo ,bar","delegateTimeoutSeconds":-1}"#).unwrap();
        assert_eq!(c.global_namespaces(), vec!["foo", "bar"]);
        assert_eq!(c.delegate_timeout(), Duration::from_secs(60));
        // found by fuzzing: a huge timeout made `multus` panic (exit 101, no CNI error)
        let c = MultusConf::parse(
            br#"{"name":"n","delegateTimeoutSeconds":1e80,"apiTimeoutSeconds":1e300,"readinessTimeoutSeconds":1.8e19}"#,
        )
        .unwrap();
        for d in [c.delegate_timeout(), c.api_timeout(), c.readiness_timeout()] {
            assert_eq!(d, Duration::from_secs(365 * 24 * 3600));
            let _ = std::time::Instant::now() + d;
        }
    }
}
