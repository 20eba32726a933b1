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

/// The version an error is reported in before the config parsed: the caller's when it
/// names one we speak; `0.1.0` for a config that names none (as its results would be);
/// the newest when stdin is not a config at all.
pub fn error_version(stdin: &[u8]) -> String {
    match serde_json::from_slice::<Value>(stdin) {
        Ok(Value::Object(m)) if m.get("cniVersion").and_then(Value::as_str).is_none_or(str::is_empty) => "0.1.0".into(),
        _ => caller_version(stdin),
    }
}

pub fn version(stdin: &[u8]) -> Value {
    json!({ "cniVersion": caller_version(stdin), "supportedVersions": SUPPORTED_VERSIONS })
}
