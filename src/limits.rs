//! The file-size limits of this invocation, each with its config key (README's
//! configuration table, docs/security.md). Set once from the config, read wherever a
//! file from `cniDir` or a configured path is read, so the cache and NAD loaders keep
//! their signatures.

use crate::error::{CniError, IoError, OverLimit};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `maxCacheFileBytes`: the largest record read from `cniDir`.
    pub max_cache_file_bytes: u64,
    /// `maxConfigFileBytes`: the largest kubeconfig, clusterNetwork or confDir file read.
    pub max_config_file_bytes: u64,
    /// `maxAttachments`: the most attachments one pod may ask for (config + annotations).
    pub max_attachments: u64,
    /// `maxNadConfigBytes`: the largest `spec.config` of one NAD.
    pub max_nad_config_bytes: u64,
    /// `maxApiBodyBytes`: the largest API response body read.
    pub max_api_body_bytes: u64,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_cache_file_bytes: 16 << 20,
        max_config_file_bytes: 4 << 20,
        max_attachments: 64,
        max_nad_config_bytes: 256 << 10,
        max_api_body_bytes: 4 << 20,
    };

    /// API requests one invocation keeps in flight, whatever the pod asks for.
    pub const API_REQUESTS_IN_FLIGHT: usize = 8;
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Set this process's limits (the first call wins: one config per invocation).
pub fn set(limits: Limits) {
    let _ = LIMITS.set(limits);
}

pub fn get() -> Limits {
    LIMITS.get().copied().unwrap_or(Limits::DEFAULT)
}

/// The error for a file of `what` over `limit`, naming the key that raises it.
pub fn too_large(what: &str, limit: u64, key: &str) -> CniError {
    IoError::TooLarge { what: what.to_string(), limit, key: key.to_string() }.into()
}

/// The error for a pod asking for more than `limit` of `what` (code 7: the pod's
/// input is invalid for this node), naming the key that raises it.
pub fn over_limit(what: &str, have: u64, limit: u64, key: &str) -> CniError {
    OverLimit { what: what.to_string(), have, limit, key: key.to_string() }.into()
}
