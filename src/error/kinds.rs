//! The leaf error kinds, and the one place each is given its CNI code: the
//! `From<kind> for CniError` impls below (with [`CniError::invalid_config`],
//! [`CniError::invalid_env`] and [`CniError::io`] in `error.rs`, the only code that names
//! a code). Code elsewhere builds a kind and uses `?`; no message changes in the mapping.

use super::{CniError, code};
use crate::netns::NetnsError;
use std::time::Duration;

/// The Kubernetes side: the kubeconfig, its exec credential plugin, the client, the API's answers.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("failed to read the kubeconfig {path}: {why}")]
    KubeconfigRead { path: String, why: String },
    #[error("the kubeconfig {path} is not UTF-8")]
    KubeconfigNotUtf8 { path: String },
    #[error("failed to get context for the kubeconfig {path}: {why}")]
    KubeconfigContext { path: String, why: String },
    #[error("exec credential plugin: {0}")]
    ExecPlugin(String),
    #[error("exec credential plugin printed neither a token nor a certificate")]
    ExecPluginNoCredential,
    #[error(
        "exec credential plugin {command} did not finish within the API budget ({budget:?}, apiTimeoutSeconds) and was killed"
    )]
    ExecPluginDeadline { command: String, budget: Duration },
    #[error("in-cluster configuration: {0}")]
    InCluster(String),
    #[error("cannot build the Kubernetes client: {0}")]
    ClientBuild(String),
    #[error("{what}: no answer from the API server within the budget")]
    BudgetSpent { what: String },
    #[error("{what}: the API server did not answer in time")]
    NoAnswer { what: String },
    #[error("{what}: conflict after 5 attempts")]
    Conflict { what: String },
    #[error("pod {namespace}/{name} with UID {uid:?} no longer exists (replaced by a pod of the same name): {why}")]
    PodReplaced { namespace: String, name: String, uid: String, why: String },
    #[error("expected pod UID {expected:?} but got {got:?} from Kube API")]
    PodUidMismatch { expected: String, got: String },
    #[error(
        "cannot find a network-attachment-definition ({name}) in namespace ({namespace}): network-attachment-definitions.k8s.cni.cncf.io {name:?} not found"
    )]
    NadNotFound { namespace: String, name: String },
    #[error("network {namespace}/{name} needs the Kubernetes API, which is not configured")]
    NeedsApi { namespace: String, name: String },
    /// The kubelet's pod-resources API answered `status` (transient: resource exhausted,
    /// unavailable, deadline exceeded).
    #[error("kubelet pod-resources {method} on {socket}: {status}: {message}")]
    Kubelet { method: String, socket: String, status: String, message: String, transient: bool },
    /// A NAD the API could not be asked about (`why`), known neither from `confDir` nor
    /// from this node's caches.
    #[error(
        "NAD {attachment} needs the API, which did not answer ({why}), and neither {conf_dir} nor this node's results cache knows it"
    )]
    NadUnknownOffline { attachment: String, why: String, conf_dir: String, transient: bool },
    /// A failed API call, in the words of [`crate::k8s::errors::api_error`].
    #[error("{message}")]
    Api { message: String, transient: bool },
}

impl From<KubeError> for CniError {
    fn from(e: KubeError) -> Self {
        let code = match &e {
            KubeError::ExecPluginDeadline { .. }
            | KubeError::BudgetSpent { .. }
            | KubeError::NoAnswer { .. }
            | KubeError::Conflict { .. }
            | KubeError::Api { transient: true, .. }
            | KubeError::Kubelet { transient: true, .. }
            | KubeError::NadUnknownOffline { transient: true, .. } => code::TRY_AGAIN_LATER,
            _ => code::KUBERNETES,
        };
        CniError::new(code, e.to_string())
    }
}

/// A delegate plugin's run. `what` is `plugin type="x" (ADD)`.
#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("{what}: cannot execute {path}: {source}")]
    CannotExecute { what: String, path: String, source: std::io::Error },
    #[error("{what} did not finish within {after:?} and was killed")]
    Deadline { what: String, after: Duration },
    #[error("{what}: {source}")]
    Wait { what: String, source: std::io::Error },
    #[error("{what} printed invalid JSON: {source}")]
    InvalidJson { what: String, source: serde_json::Error, stdout: String },
    #[error("{what} was killed by signal {signal} ({name})")]
    Signal { what: String, signal: i32, name: &'static str, stderr: String },
    /// The plugin's own CNI error, with the code it printed.
    #[error("{what} failed: {msg}{}", invalid_code_note(*code))]
    Failed { what: String, code: u64, msg: String, details: String },
    #[error("{what} failed with {status} and no CNI error on stdout")]
    NoCniError { what: String, status: std::process::ExitStatus, details: String },
    #[error("plugin type={plugin:?} (ADD) printed no result")]
    NoResult { plugin: String },
    #[error("plugin type={plugin:?} (ADD) printed a result that is not a JSON object")]
    NotAnObject { plugin: String },
    /// CHECK needs the result of the ADD (code 3: the container is unknown to us).
    #[error("no cached result for network {network:?} on {ifname}")]
    NoCachedResult { network: String, ifname: String },
}

impl From<DelegateError> for CniError {
    fn from(e: DelegateError) -> Self {
        let msg = e.to_string();
        match e {
            DelegateError::Failed { code, details, .. } => {
                CniError::new(valid_code(code).unwrap_or(code::DELEGATE_FAILED), msg).with_details(details)
            }
            DelegateError::InvalidJson { stdout: details, .. }
            | DelegateError::Signal { stderr: details, .. }
            | DelegateError::NoCniError { details, .. } => {
                CniError::new(code::DELEGATE_FAILED, msg).with_details(details)
            }
            DelegateError::NoCachedResult { .. } => CniError::new(code::UNKNOWN_CONTAINER, msg),
            _ => CniError::new(code::DELEGATE_FAILED, msg),
        }
    }
}

/// A plugin's error code that can reach the runtime as a failure: code 0 would read as
/// no error, and a code beyond 32 bits would wrap (2^32 + 7 into 7).
fn valid_code(raw: u64) -> Option<u32> {
    u32::try_from(raw).ok().filter(|&c| c != 0)
}

fn invalid_code_note(raw: u64) -> String {
    match valid_code(raw) {
        Some(_) => String::new(),
        None => format!(" (invalid error code {raw})"),
    }
}

impl From<NetnsError> for CniError {
    fn from(e: NetnsError) -> Self {
        let code = if matches!(e, NetnsError::OwnNetns { .. }) { code::INVALID_NETNS } else { code::NETNS };
        CniError::new(code, e.to_string())
    }
}

/// A wait that ran out of time: waiting longer may help (code 11, "try again later").
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(
        "another invocation for container {container_id} still holds its lock after {timeout:?} (raise it with the config key \"lockTimeoutSeconds\")"
    )]
    ContainerLock { container_id: String, timeout: Duration },
    #[error(
        "the node already has {cap} API requests in flight (maxNodeApiRequests) and none finished within the API budget (apiTimeoutSeconds)"
    )]
    NodeApiRequests { cap: u32 },
    #[error("have you checked that your default network is ready? still waiting for readinessindicatorfile @ {path}")]
    Readiness { path: String },
    #[error("kubelet pod-resources on {socket} did not answer within {budget:?} (the API budget, apiTimeoutSeconds)")]
    PodResources { socket: String, budget: Duration },
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    #[error(
        "cannot learn the pod's devices: neither the kubelet pod-resources socket {socket} (podResourcesSocket) nor the kubelet checkpoint {checkpoint} (kubeletCheckpointFile) exists"
    )]
    NoDeviceSource { socket: String, checkpoint: String },
}

impl From<WaitError> for CniError {
    fn from(e: WaitError) -> Self {
        CniError::new(code::TRY_AGAIN_LATER, e.to_string())
    }
}

/// What the runtime passed in the environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("invalid characters in container ID {0:?}")]
    InvalidContainerId(String),
}

impl From<EnvError> for CniError {
    fn from(e: EnvError) -> Self {
        CniError::new(code::INVALID_ENV, e.to_string())
    }
}

impl From<std::env::VarError> for CniError {
    fn from(e: std::env::VarError) -> Self {
        CniError::new(code::INVALID_ENV, e.to_string())
    }
}

/// One of our own file or process operations failed (code 5).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// `what` names the operation and its object: `cannot read /var/lib/cni/multus/…`.
    #[error("{what}: {source}")]
    Op { what: String, source: std::io::Error },
    /// A file over its size limit, naming the config key that raises it.
    #[error("{what} is larger than the limit of {limit} bytes (raise it with the config key {key:?})")]
    TooLarge { what: String, limit: u64, key: String },
    /// A file of ours that is not what it must be (a lock that is not a regular file).
    #[error("{0}")]
    Unusable(String),
    #[error("results cache writer: {0}")]
    CacheWriter(#[from] tokio::task::JoinError),
    /// What we write could not be encoded.
    #[error("{0}")]
    Encode(#[from] serde_json::Error),
}

impl From<IoError> for CniError {
    fn from(e: IoError) -> Self {
        CniError::new(code::IO, e.to_string())
    }
}

/// Content we read does not decode (code 6).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// `what` names the content: `invalid device-info file /run/…`.
    #[error("{what}: {why}")]
    Invalid { what: String, why: String },
    #[error("{0} must be a JSON object")]
    NotAnObject(&'static str),
    #[error("the network configuration on stdin is larger than 16 MiB")]
    StdinTooLarge,
}

impl From<DecodeError> for CniError {
    fn from(e: DecodeError) -> Self {
        CniError::new(code::DECODE, e.to_string())
    }
}

/// A pod asks for more than this node accepts (code 7: the pod's input is invalid here).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {have} is over the limit of {limit} (raise it with the config key {key:?})")]
pub struct OverLimit {
    pub what: String,
    pub have: u64,
    pub limit: u64,
    pub key: String,
}

impl From<OverLimit> for CniError {
    fn from(e: OverLimit) -> Self {
        CniError::new(code::INVALID_CONFIG, e.to_string())
    }
}

/// The CNI versions spoken: a config in another version, or a verb its version lacks (code 1).
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("incompatible CNI versions: config is \"{config}\", plugin supports {supported:?}")]
    Incompatible { config: String, supported: &'static [&'static str] },
    /// CHECK and GC came with 0.4.0 and 1.1.0, STATUS with 1.1.0.
    #[error("config version does not allow {0}")]
    VerbNotAllowed(&'static str),
}

impl From<VersionError> for CniError {
    fn from(e: VersionError) -> Self {
        CniError::new(code::INCOMPATIBLE_VERSION, e.to_string())
    }
}

/// STATUS: the plugin cannot serve ADDs now (code 50).
#[derive(Debug, thiserror::Error)]
pub enum NotAvailable {
    #[error("the default network is not ready: {file} does not exist or is not a regular file")]
    NotReady { file: String },
    #[error("the primary network is not available: {0}")]
    Primary(String),
}

impl From<NotAvailable> for CniError {
    fn from(e: NotAvailable) -> Self {
        CniError::new(code::NOT_AVAILABLE, e.to_string())
    }
}
