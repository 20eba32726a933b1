//! `multus doctor`: plugin binaries.

use super::*;

/// Every plugin and IPAM binary of `networks` resolvable in binDir/CNI path. Missing ones
/// are `severity` (✗ for the node's own networks, ⚠ for NADs only some pods select).
pub(crate) fn check_binaries(exec: &BinaryExec, networks: &[Network], severity: Status) -> Vec<Check> {
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for network in networks {
        for t in plugin_and_ipam_types(&network.config) {
            users.entry(t).or_default().insert(network.label.clone());
        }
    }
    if users.is_empty() {
        return Vec::new();
    }
    // binDir is often also on the CNI path: name each directory once.
    let mut dirs: Vec<String> = Vec::new();
    for d in &exec.search_path {
        let d = d.display().to_string();
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    let dirs = dirs.join(", ");
    let mut found = Vec::new();
    let mut checks = Vec::new();
    for (t, used_by) in &users {
        if exec.find(t).is_ok() {
            found.push(t.as_str());
            continue;
        }
        let used_by = used_by.iter().cloned().collect::<Vec<_>>().join(", ");
        let present = exec.search_path.iter().map(|d| d.join(t)).find(|p| p.exists());
        let (message, hint) = match present {
            Some(p) => (
                format!("{} exists but is not an executable file (used by {used_by})", p.display()),
                format!("chmod 755 {}", p.display()),
            ),
            None => (
                format!("not found in {dirs} (used by {used_by})"),
                "install it into binDir; the reference plugins come from containernetworking/plugins \
                 (often installed by a DaemonSet). If the runtime keeps plugins elsewhere (its CNI bin_dir, \
                 e.g. /usr/lib/cni or /opt/cni/bin), point doctor at it: --cni-path DIR[:DIR...]"
                    .to_string(),
            ),
        };
        checks.push(Check::new(severity, format!("plugin {t}"), message, Some(hint)));
    }
    if severity == Status::Fail && checks.is_empty() {
        checks.insert(
            0,
            Check::ok("plugin binaries", format!("all {} found in {dirs}: {}", found.len(), found.join(", "))),
        );
    }
    checks
}

/// Plugin types and the IPAM types they exec, in order, each once.
pub(crate) fn plugin_and_ipam_types(config: &NetworkConfig) -> Vec<String> {
    let mut types = Vec::new();
    for plugin in config.plugins() {
        let t = plugin.get("type").and_then(Value::as_str);
        let ipam = plugin.get("ipam").and_then(|i| i.get("type")).and_then(Value::as_str);
        for t in t.into_iter().chain(ipam).filter(|t| !t.is_empty()) {
            if !types.iter().any(|known| known == t) {
                types.push(t.to_string());
            }
        }
    }
    types
}
