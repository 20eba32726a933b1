//! `multus doctor`: the config file.

use super::*;

pub(crate) fn check_config(report: &mut Report, path: &Path) -> Option<MultusConf> {
    let check = "config";
    let conf = match load_config(path) {
        Ok(conf) => conf,
        Err(e) => {
            report.push(Check::fail(
                check,
                format!("{e} (the other checks need it)"),
                "the runtime gives this file to multus on every ADD; fix it, or pass --config with the right file",
            ));
            return None;
        }
    };
    let networks = if conf.cluster_network.is_empty() {
        format!("{} static delegate(s)", conf.delegates.len())
    } else {
        format!("clusterNetwork {:?}", conf.cluster_network)
    };
    report.push(Check::ok(
        check,
        format!("{} parses: network {:?}, cniVersion {}, {networks}", path.display(), conf.name, conf.cni_version),
    ));
    report.extend(check_config_order(path));
    Some(conf)
}

/// The config as the runtime hands it to us: a conflist contributes its first plugin of
/// type multus, with the list's `name` and `cniVersion` (libcni's rule).
pub(crate) fn load_config(path: &Path) -> Result<MultusConf, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let bytes = match value.get("plugins") {
        Some(plugins) => {
            let plugin = multus_plugin_of_list(&value, plugins).map_err(|e| format!("{}: {e}", path.display()))?;
            serde_json::to_vec(&plugin).map_err(|e| e.to_string())?
        }
        None => bytes,
    };
    MultusConf::parse(&bytes).map_err(|e| format!("{}: {}", path.display(), e.msg))
}

pub(crate) fn multus_plugin_of_list(list: &Value, plugins: &Value) -> Result<Value, String> {
    let plugins = plugins.as_array().ok_or("\"plugins\" is not a list")?;
    let plugin = plugins
        .iter()
        .find(|p| p.get("type").and_then(Value::as_str) == Some("multus"))
        .ok_or("the conflist has no plugin of type \"multus\"")?;
    let mut plugin = plugin.as_object().cloned().unwrap_or_default();
    for key in ["name", "cniVersion"] {
        if let Some(v) = list.get(key) {
            plugin.insert(key.into(), v.clone());
        }
    }
    Ok(Value::Object(plugin))
}

/// The runtime uses the lexically first config of its directory: a file sorting before
/// ours means multus is never called.
pub(crate) fn check_config_order(path: &Path) -> Option<Check> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|x| x.to_str()), Some("conf" | "conflist" | "json")))
        .collect();
    files.sort();
    let first = files.first()?;
    if first.file_name() == path.file_name() {
        return None;
    }
    Some(Check::warn(
        "config",
        format!(
            "{} sorts before {}: a runtime that reads {} uses that one, not multus",
            first.display(),
            path.display(),
            dir.display()
        ),
        "rename the files so multus' config comes first (the DaemonSet names it 00-multus.conf)",
    ))
}
