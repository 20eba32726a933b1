//! From NetworkAttachmentDefinitions and config files to delegate configs.

use crate::delegate::NetworkConfig;
use crate::error::{CniError, Result};
use kube::api::DynamicObject;
use serde_json::{Map, Value};
use std::path::Path;

/// The CNI config of a NAD: `spec.config` (conf or conflist, `name` injected when
/// missing), or, when that is empty, the file in `confDir` whose network name is the
/// NAD's name. A conflist without `cniVersion` gets `default_version`.
pub fn config_from_nad(nad: &DynamicObject, conf_dir: &str, default_version: &str) -> Result<NetworkConfig> {
    let name = nad.metadata.name.clone().unwrap_or_default();
    let spec_config = nad.data.pointer("/spec/config").and_then(Value::as_str).unwrap_or_default();
    if spec_config.trim().is_empty() {
        return find_in_conf_dir(Path::new(conf_dir), &name);
    }
    let value: Value = serde_json::from_str(spec_config).map_err(|e| {
        CniError::invalid_config(format!("network-attachment-definition {name}: failed to unmarshal spec.config: {e}"))
    })?;
    let Value::Object(mut map) = value else {
        return Err(CniError::invalid_config(format!(
            "network-attachment-definition {name}: spec.config must be a JSON object"
        )));
    };
    let config = match map.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => NetworkConfig::parse(spec_config.as_bytes().to_vec()),
        _ => {
            map.insert("name".into(), name.clone().into());
            NetworkConfig::with_value(map)
        }
    };
    config
        .map(|c| if c.is_list() { c.with_default_version(default_version) } else { c })
        .map_err(|e| e.context(format!("network-attachment-definition {name}")))
}

/// A config whose plugin is Multus itself must never be a delegate (Go Multus picked its
/// own file and delegated to itself: #1130, #1162).
pub fn is_multus_config(v: &Value) -> bool {
    let is_multus = |p: &Value| p.get("type").and_then(Value::as_str) == Some("multus") || p.get("delegates").is_some();
    is_multus(v) || v.get("plugins").and_then(Value::as_array).is_some_and(|ps| ps.iter().any(is_multus))
}

fn conf_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CniError::invalid_config(format!("No networks found in {}: {e}", dir.display())))?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|x| x.to_str()), Some("conf" | "json" | "conflist")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CniError::invalid_config(format!("No networks found in {}", dir.display())));
    }
    Ok(files)
}

/// Read a configured CNI config file: opened non-blocking (a FIFO or a device there
/// never blocks the plugin), regular files only, at most `maxConfigFileBytes`. Links are
/// followed: confDir and clusterNetwork are the operator's, who links configs freely.
pub fn read_config_file(path: &Path) -> Result<Vec<u8>> {
    let limit = crate::limits::get().max_config_file_bytes;
    crate::safefs::read_regular(path, limit, true).map_err(|e| {
        if crate::safefs::is_too_large(&e) {
            crate::limits::too_large(&format!("CNI config file {}", path.display()), limit, "maxConfigFileBytes")
        } else {
            CniError::invalid_config(format!("error reading CNI config file {}: {e}", path.display()))
        }
    })
}

/// Load one config file: a `.conflist`, or a single config that must have `type`.
pub fn load_file(path: &Path) -> Result<NetworkConfig> {
    let bytes = read_config_file(path)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        CniError::invalid_config(format!(
            "Error loading CNI config file {}: error parsing configuration: {e}",
            path.display()
        ))
    })?;
    let is_list = path.extension().is_some_and(|x| x == "conflist");
    if !is_list && v.get("type").is_none() && v.get("plugins").is_none() {
        return Err(CniError::invalid_config(format!("{}: no 'type'; perhaps this is a .conflist?", path.display())));
    }
    NetworkConfig::parse(bytes).map_err(|e| e.context(path.display()))
}

/// The first config file in `dir` (lexical order) whose network name is `name`.
pub fn find_in_conf_dir(dir: &Path, name: &str) -> Result<NetworkConfig> {
    for path in conf_files(dir)? {
        let Ok(bytes) = read_config_file(&path) else { continue };
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            return Err(CniError::invalid_config(format!(
                "Error loading CNI config file {}: error parsing configuration",
                path.display()
            )));
        };
        if v.get("name").and_then(Value::as_str) == Some(name) && !is_multus_config(&v) {
            return load_file(&path);
        }
    }
    Err(CniError::invalid_config(format!("no network available in the name {name} in cni dir {}", dir.display())))
}

/// `clusterNetwork`/`defaultNetworks` given as a path: a file, or the first usable
/// config of a directory (never a Multus config, unlike Go Multus).
pub fn load_path(path: &Path) -> Result<NetworkConfig> {
    if path.is_dir() {
        for file in conf_files(path)? {
            let is_ours = read_config_file(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| is_multus_config(&v));
            if !is_ours {
                return load_file(&file);
            }
        }
        return Err(CniError::invalid_config(format!("no usable network configuration in {}", path.display())));
    }
    load_file(path)
}

/// Merge an attachment's `cni-args` into `args.cni` of every plugin (the annotation
/// wins per key).
pub fn inject_cni_args(config: NetworkConfig, cni_args: &Map<String, Value>) -> Result<NetworkConfig> {
    if cni_args.is_empty() {
        return Ok(config);
    }
    fn merge(plugin: &mut Map<String, Value>, cni_args: &Map<String, Value>) {
        let args = plugin.entry("args").or_insert_with(|| Value::Object(Map::new()));
        if !args.is_object() {
            *args = Value::Object(Map::new());
        }
        let cni = args.as_object_mut().map(|a| a.entry("cni").or_insert_with(|| Value::Object(Map::new())));
        if let Some(cni) = cni {
            if !cni.is_object() {
                *cni = Value::Object(Map::new());
            }
            if let Some(cni) = cni.as_object_mut() {
                cni.extend(cni_args.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
    }
    let mut value = config.value().clone();
    if config.is_list() {
        if let Some(plugins) = value.get_mut("plugins").and_then(Value::as_array_mut) {
            plugins.iter_mut().filter_map(Value::as_object_mut).for_each(|p| merge(p, cni_args));
        }
    } else {
        merge(&mut value, cni_args);
    }
    NetworkConfig::with_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nad(name: &str, config: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"config": config}
        }))
        .unwrap()
    }

    #[test]
    fn name_is_injected_and_bytes_kept_when_present() {
        let c = config_from_nad(&nad("mynet", r#"{"type":"macvlan"}"#), "/nonexistent", "0.3.1").unwrap();
        assert_eq!(c.name(), "mynet");
        let raw = r#"{"cniVersion":"0.3.0","name":"privatezone-macvlan-conf","type":"macvlan","master":"enp0s8"}"#;
        let c = config_from_nad(&nad("privatezone-macvlan-conf", raw), "/x", "0.3.1").unwrap();
        assert_eq!(c.bytes, raw.as_bytes());
        let c = config_from_nad(&nad("l", r#"{"plugins":[{"type":"macvlan"}]}"#), "/x", "0.3.1").unwrap();
        assert_eq!((c.name(), c.cni_version()), ("l", "0.3.1"));
        assert_eq!(config_from_nad(&nad("bad", "{not json"), "/x", "").unwrap_err().code, 7);
        assert_eq!(config_from_nad(&nad("bad", r#"{"type":"../sh"}"#), "/x", "").unwrap_err().code, 7);
    }

    #[test]
    fn empty_spec_uses_conf_dir_and_never_multus_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("00-multus.conf"), r#"{"name":"net1","type":"multus","delegates":[]}"#).unwrap();
        std::fs::write(dir.path().join("10-net1.conf"), r#"{"cniVersion":"0.3.1","name":"net1","type":"bridge"}"#)
            .unwrap();
        std::fs::write(
            dir.path().join("20-l.conflist"),
            r#"{"cniVersion":"1.0.0","name":"l","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        let c = config_from_nad(&nad("net1", ""), dir.path().to_str().unwrap(), "").unwrap();
        assert_eq!(c.plugin_types(), vec!["bridge"]);
        assert!(find_in_conf_dir(dir.path(), "l").unwrap().is_list());
        assert!(find_in_conf_dir(dir.path(), "nope").unwrap_err().msg.contains("no network available"));
        assert_eq!(load_path(dir.path()).unwrap().name(), "net1", "the directory form skips multus' own file");
        std::fs::write(dir.path().join("05-garbage.conf"), "garbage").unwrap();
        assert!(find_in_conf_dir(dir.path(), "net1").unwrap_err().msg.contains("error parsing configuration"));
    }

    #[test]
    fn cni_args_go_to_every_plugin() {
        let c = NetworkConfig::from_value(
            &json!({"name":"l","plugins":[{"type":"a","args":{"cni":{"x":1,"keep":2}}},{"type":"b"}]}),
        )
        .unwrap();
        let args = json!({"x": "annotation"});
        let c = inject_cni_args(c, args.as_object().unwrap()).unwrap();
        let v: Value = serde_json::from_slice(&c.bytes).unwrap();
        assert_eq!(v["plugins"][0]["args"]["cni"], json!({"x":"annotation","keep":2}));
        assert_eq!(v["plugins"][1]["args"]["cni"], json!({"x":"annotation"}));
    }
}
