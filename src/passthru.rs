//! `passthru`: the no-op plugin that starts the auxiliary chain ([`crate::commands::aux_chain`]).
//! The `multus` binary answers as it when run under the name `passthru` (a link or copy
//! in binDir), as Go Multus' separate `passthru` binary does: ADD prints an empty result
//! in the config's cniVersion, every other verb prints nothing and succeeds.

use crate::cni::version::SUPPORTED_VERSIONS;
use serde_json::{Value, json};
use std::io::Read;

/// Whether the process runs as `passthru` (by its argv\[0\] file name).
pub fn invoked_as_passthru() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .is_some_and(|p| p.file_name().is_some_and(|n| n == crate::commands::aux_chain::PASSTHRU))
}

/// One invocation: the JSON document for stdout (if any) and the exit code.
pub fn run(command: &str, stdin: &[u8]) -> (Option<Value>, i32) {
    let version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| "1.0.0".into());
    match command {
        "VERSION" => (Some(json!({"cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS})), 0),
        "ADD" => (Some(json!({"cniVersion": version})), 0),
        "DEL" | "CHECK" | "STATUS" | "GC" => (None, 0),
        other => (Some(json!({"cniVersion": version, "code": 4, "msg": format!("unknown CNI_COMMAND {other:?}")})), 1),
    }
}

/// The process entry point: command from the environment, config from stdin (bounded).
pub fn run_from_process() -> (Option<Value>, i32) {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().take(1024 * 1024).read_to_end(&mut stdin);
    run(&std::env::var("CNI_COMMAND").unwrap_or_default(), &stdin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_is_an_empty_result_of_the_config_version_and_the_rest_nothing() {
        assert_eq!(run("ADD", br#"{"cniVersion":"0.4.0"}"#), (Some(json!({"cniVersion": "0.4.0"})), 0));
        assert_eq!(run("DEL", b"{}"), (None, 0));
        assert_eq!(run("GC", b"{}"), (None, 0));
        assert_eq!(run("BOGUS", b"{}").1, 1);
    }
}
