//! VERSION: the versions we speak. Stdin is optional (`{"cniVersion": ...}`).

use crate::cni::version::{LATEST, SUPPORTED_VERSIONS};
use serde_json::{Value, json};

/// The caller's cniVersion when it is one we speak, else the newest.
pub fn caller_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(String::from))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST.to_string())
}

pub fn version(stdin: &[u8]) -> Value {
    json!({ "cniVersion": caller_version(stdin), "supportedVersions": SUPPORTED_VERSIONS })
}
