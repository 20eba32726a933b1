//! The one error type of the plugin: a CNI error with its spec code.
//!
//! Every failure that can reach the runtime is a [`CniError`]; `main` prints it as the
//! CNI error JSON `{cniVersion, code, msg, details}` on stdout and exits 1.

use serde::{Deserialize, Serialize};

/// CNI spec error codes (SPEC.md "Error"), plus the plugin-specific ones (100+).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Invalid network namespace: the plugin was asked to work on its own (skel's rule).
    pub const INVALID_NETNS: u32 = 8;
    /// Try again later (transient: API server unreachable, readiness not reached).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, existing containers may be degraded.
    pub const NOT_AVAILABLE_DEGRADED: u32 = 51;
    /// A delegate failed without a CNI error of its own (crash, signal, garbage, deadline).
    pub const DELEGATE_FAILED: u32 = 100;
    /// A non-transient Kubernetes API failure (forbidden, NAD missing, pod UID mismatch).
    pub const KUBERNETES: u32 = 101;
    /// A failure inside the pod's network namespace (netlink, interface name taken).
    pub const NETNS: u32 = 102;
}

/// A CNI error: code, message and details, exactly the spec's error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

pub type Result<T, E = CniError> = std::result::Result<T, E>;

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Prefix our context to the message, keeping the code (a delegate's own code survives).
    pub fn context(mut self, ctx: impl std::fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }

    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg)
    }

    pub fn io(what: impl std::fmt::Display, err: std::io::Error) -> Self {
        Self::new(code::IO, format!("{what}: {err}"))
    }

    /// The JSON document printed on stdout, in the caller's cniVersion.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v
    }
}

/// Collects errors while cleanup goes on (DEL, rollback), then reports them all.
#[derive(Debug, Default)]
pub struct ErrorList(Vec<CniError>);

impl ErrorList {
    pub fn push(&mut self, e: CniError) {
        self.0.push(e);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One error: the single one as is, several joined as Go Multus does (`errors: a / b`),
    /// with the code of the first.
    pub fn into_result(self) -> Result<()> {
        let mut errors = self.0;
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => {
                let msg = errors.iter().map(|e| e.msg.as_str()).collect::<Vec<_>>().join(" / ");
                let details = errors
                    .iter()
                    .filter(|e| !e.details.is_empty())
                    .map(|e| e.details.as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                Err(CniError::new(errors[0].code, format!("errors: {msg}")).with_details(details))
            }
        }
    }
}
