//! `auxiliaryCNIChainName`: a chain of plugins run after every other delegate of a pod,
//! as Go Multus builds it.
//!
//! `clusterNetwork` must be a path; the chain's plugins are the `.conf`/`.json` files
//! of the subdirectory `<dirname(clusterNetwork)>/<auxiliaryCNIChainName>/`, in lexical
//! order (libcni's subdirectory loading), behind a first `passthru` plugin that gives
//! them an empty prevResult. The chain is the last delegate, on interface `net<index>`,
//! and only when the subdirectory holds at least one plugin. It is recorded in the
//! scratch cache like any delegate, so DEL and CHECK replay it.
//!
//! Unlike Go Multus, which logs a broken chain file and silently runs the pod without
//! the chain, an unreadable or invalid plugin file fails the ADD (code 7, naming the
//! file): a chain an operator configured is never skipped unnoticed.

use super::Invocation;
use crate::config::valid_network_name;
use crate::delegate::{Delegate, NetworkConfig};
use crate::error::{CniError, Result};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

/// The no-op plugin that starts the chain (`multus` answers as it when run under this
/// name; Go Multus ships it as a separate binary).
pub const PASSTHRU: &str = "passthru";

/// A chain plugin file larger than this is refused (a plugin config is bytes to kB).
const MAX_PLUGIN_FILE: u64 = 1024 * 1024;

/// Append the auxiliary chain to `delegates` when `auxiliaryCNIChainName` is set.
pub fn append<E, N>(inv: &Invocation<E, N>, delegates: &mut Vec<Delegate>) -> Result<()> {
    append_to(inv, delegates.len(), delegates)
}

/// Append the auxiliary chain to `delegates` as the attachment at index `position`
/// (its interface is `net<position>`).
pub fn append_to<E, N>(inv: &Invocation<E, N>, position: usize, delegates: &mut Vec<Delegate>) -> Result<()> {
    let Some(chain) = load(&inv.conf.auxiliary_cni_chain_name, &inv.conf.cluster_network, &inv.conf.cni_version)?
    else {
        return Ok(());
    };
    let ifname = format!("net{position}");
    delegates.push(Delegate {
        name: chain.name().to_string(),
        config: chain,
        ifname,
        primary: false,
        capability_args: Map::new(),
    });
    Ok(())
}

/// The chain as a conflist; `Ok(None)` when not configured or its directory holds no
/// plugin file.
pub fn load(name: &str, cluster_network: &str, cni_version: &str) -> Result<Option<NetworkConfig>> {
    if name.is_empty() {
        return Ok(None);
    }
    if !cluster_network.contains('/') {
        return Err(CniError::invalid_config(format!(
            "auxiliary chain used but ClusterNetwork must be a path, and it is not a path: {cluster_network:?}"
        )));
    }
    if !valid_network_name(name) {
        return Err(CniError::invalid_config(format!(
            "auxiliaryCNIChainName {name:?} is not a valid network name (^[a-zA-Z0-9][a-zA-Z0-9_.-]*$)"
        )));
    }
    let dir = Path::new(cluster_network).parent().unwrap_or(Path::new("/")).join(name);
    let files = plugin_files(&dir)?;
    if files.is_empty() {
        tracing::debug!("auxiliary chain {name}: no plugin in {}", dir.display());
        return Ok(None);
    }
    let mut plugins = vec![json!({"type": PASSTHRU, "name": "passthru-cni"})];
    for file in files {
        plugins.push(read_plugin(&file)?);
    }
    let list = json!({"cniVersion": cni_version, "name": name, "plugins": plugins});
    let Value::Object(map) = list else { unreachable!("a JSON object literal") };
    NetworkConfig::with_value(map).map(Some).map_err(|e| e.context(format!("auxiliary chain {name}")))
}

/// The `.conf`/`.json` files of `dir`, sorted; none when `dir` does not exist.
fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(CniError::invalid_config(format!("cannot read the auxiliary chain {}: {e}", dir.display())));
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("conf" | "json")))
        .collect();
    files.sort();
    Ok(files)
}

/// One plugin config: a regular file (never a FIFO or device), bounded, a JSON object
/// with a `type`.
fn read_plugin(path: &Path) -> Result<Value> {
    let bad = |why: String| CniError::invalid_config(format!("auxiliary chain plugin {}: {why}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() > MAX_PLUGIN_FILE {
        return Err(bad(format!("larger than {MAX_PLUGIN_FILE} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a JSON config: {e}")))?;
    match v.get("type").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => Ok(v),
        _ => Err(bad("no 'type'".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_is_passthru_then_the_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let primary = dir.path().join("10-primary.conflist");
        std::fs::create_dir(dir.path().join("aux")).unwrap();
        std::fs::write(dir.path().join("aux/20-b.conf"), br#"{"type":"b"}"#).unwrap();
        std::fs::write(dir.path().join("aux/10-a.json"), br#"{"type":"a","x":1}"#).unwrap();
        std::fs::write(dir.path().join("aux/README"), b"not a plugin").unwrap();
        let chain = load("aux", primary.to_str().unwrap(), "1.0.0").unwrap().unwrap();
        assert_eq!(chain.name(), "aux");
        assert_eq!(chain.cni_version(), "1.0.0");
        assert_eq!(chain.plugin_types(), ["passthru", "a", "b"]);
    }

    #[test]
    fn no_directory_or_no_file_means_no_chain() {
        let dir = tempfile::tempdir().unwrap();
        let primary = dir.path().join("10-primary.conf");
        assert!(load("aux", primary.to_str().unwrap(), "1.0.0").unwrap().is_none());
        std::fs::create_dir(dir.path().join("aux")).unwrap();
        assert!(load("aux", primary.to_str().unwrap(), "1.0.0").unwrap().is_none());
        assert!(load("", "", "1.0.0").unwrap().is_none());
    }

    #[test]
    fn error_cases() {
        let e = load("aux", "primary-nad", "1.0.0").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("ClusterNetwork must be a path"), "{}", e.msg);
        let e = load("../etc", "/etc/cni/net.d/x.conf", "1.0.0").unwrap_err();
        assert!(e.msg.contains("not a valid network name"), "{}", e.msg);
        let dir = tempfile::tempdir().unwrap();
        let primary = dir.path().join("p.conf");
        std::fs::create_dir(dir.path().join("aux")).unwrap();
        std::fs::write(dir.path().join("aux/a.conf"), b"{not json").unwrap();
        let e = load("aux", primary.to_str().unwrap(), "1.0.0").unwrap_err();
        assert!(e.msg.contains("a.conf") && e.msg.contains("not a JSON config"), "{}", e.msg);
        std::fs::write(dir.path().join("aux/a.conf"), br#"{"name":"no-type"}"#).unwrap();
        let e = load("aux", primary.to_str().unwrap(), "1.0.0").unwrap_err();
        assert!(e.msg.contains("no 'type'"), "{}", e.msg);
        std::fs::remove_file(dir.path().join("aux/a.conf")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("aux/a.conf"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = load("aux", primary.to_str().unwrap(), "1.0.0").unwrap_err();
        assert!(e.msg.contains("not a regular file"), "{}", e.msg);
    }
}
