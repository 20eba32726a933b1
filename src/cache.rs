//! The two caches the plugin owns, both under `cniDir` (default `/var/lib/cni/multus`):
//!
//! * the scratch cache `<cniDir>/<containerID>`: the delegates of an ADD, written before
//!   the first delegate runs so DEL can replay them byte for byte. Its records use Go
//!   Multus' field names, so a node switched between the two implementations still
//!   deletes pods the other one created.
//! * the libcni-compatible results cache `<cniDir>/results/<net>-<cid>-<if>` (`cniCacheV1`):
//!   each attachment's result, the `prevResult` of its CHECK and DEL.
//!
//! Both are written atomically with modes 0700/0600 (Go Multus writes them in place,
//! which left torn files after reboots: #1087).

use crate::delegate::{Delegate, NetworkConfig};
use crate::error::{CniError, DecodeError, EnvError, IoError, Result};
use crate::{limits, safefs};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The on-disk record: Go Multus' `DelegateNetConf` JSON names, plus our own keys
/// (which Go ignores).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    #[serde(rename = "Conf", default, skip_serializing_if = "Option::is_none")]
    conf: Option<Value>,
    #[serde(rename = "ConfList", default, skip_serializing_if = "Option::is_none")]
    conf_list: Option<Value>,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "ifnameRequest", default, skip_serializing_if = "String::is_empty")]
    ifname_request: String,
    #[serde(rename = "macRequest", default, skip_serializing_if = "String::is_empty")]
    mac_request: String,
    #[serde(rename = "infinibandGUIDRequest", default, skip_serializing_if = "String::is_empty")]
    infiniband_guid_request: String,
    #[serde(rename = "ipRequest", default, skip_serializing_if = "Vec::is_empty")]
    ip_request: Vec<String>,
    #[serde(rename = "deviceID", default, skip_serializing_if = "String::is_empty")]
    device_id: String,
    #[serde(rename = "Bytes")]
    bytes: String,
    #[serde(rename = "master", default, skip_serializing_if = "Option::is_none")]
    master: Option<bool>,
    #[serde(rename = "capabilityArgs", default, skip_serializing_if = "Option::is_none")]
    capability_args: Option<Map<String, Value>>,
}

pub fn scratch_path(cni_dir: &Path, container_id: &str) -> PathBuf {
    cni_dir.join(container_id)
}

/// The subdirectory of the results cache (see [`results_dir`]).
const RESULTS: &str = "results";

fn invalid_id(container_id: &str) -> CniError {
    EnvError::InvalidContainerId(container_id.to_string()).into()
}

/// A failed read of a file in `cniDir`: over the limit names the limit and its key.
fn read_error(path: &Path, e: std::io::Error) -> CniError {
    if safefs::is_too_large(&e) {
        return limits::too_large(
            &format!("cache file {}", path.display()),
            limits::get().max_cache_file_bytes,
            "maxCacheFileBytes",
        );
    }
    CniError::io(format!("cannot read {}", path.display()), e)
}

/// `cniDir`, opened without following a link; `None` when it does not exist.
fn open_cni_dir(cni_dir: &Path) -> Result<Option<safefs::Dir>> {
    match safefs::Dir::open(cni_dir) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::io(
            format!("cannot open the cache directory {} (a symlink or not a directory?)", cni_dir.display()),
            e,
        )),
    }
}

fn str_arg(args: &Map<String, Value>, k: &str) -> String {
    args.get(k).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// `Conf`/`ConfList` of a record: only the fields of Go's `types.NetConf` /
/// `types.NetConfList` (what Go Multus decodes them into), not the whole config: the
/// config itself is stored once, byte for byte, in `Bytes` (what both implementations
/// replay), so a large NAD does not cost its size twice over in the cache.
fn go_netconf_header(config: &Map<String, Value>, is_list: bool) -> Value {
    fn pick(config: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
        keys.iter().filter_map(|&k| config.get(k).map(|v| (k.to_string(), v.clone()))).collect()
    }
    fn plugin(config: &Map<String, Value>) -> Map<String, Value> {
        let mut m = pick(config, &["cniVersion", "name", "type", "capabilities", "dns"]);
        // Go's `IPAM` struct has only `type`.
        if let Some(t) = config.get("ipam").and_then(|i| i.get("type")) {
            m.insert("ipam".into(), serde_json::json!({ "type": t }));
        }
        m
    }
    if !is_list {
        return Value::Object(plugin(config));
    }
    let mut m = pick(config, &["cniVersion", "name", "disableCheck", "disableGC"]);
    let plugins: Vec<Value> = config
        .get("plugins")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(Value::as_object).map(|p| Value::Object(plugin(p))).collect())
        .unwrap_or_default();
    m.insert("plugins".into(), plugins.into());
    Value::Object(m)
}

/// Write the scratch cache for `container_id`.
pub fn save_delegates<'a>(
    cni_dir: &Path,
    container_id: &str,
    delegates: impl IntoIterator<Item = &'a Delegate>,
) -> Result<()> {
    stage_delegates(cni_dir, container_id, &encode_delegates(container_id, delegates)?)?.commit()
}

/// The scratch record of `delegates`, refused (before any delegate runs) when DEL could
/// not read it back: over `maxCacheFileBytes`, or for a container ID that is no file
/// name. Encoding stops as soon as the output passes the limit.
pub fn encode_delegates<'a>(container_id: &str, delegates: impl IntoIterator<Item = &'a Delegate>) -> Result<Vec<u8>> {
    if !crate::cni::env::valid_container_id(container_id) {
        return Err(invalid_id(container_id));
    }
    let limit = limits::get().max_cache_file_bytes;
    let mut bytes = Vec::new();
    let encoded = (|| {
        use std::io::Write as _;
        let mut out = Capped { inner: &mut bytes, written: 0, limit };
        out.write_all(b"[")?;
        for (i, d) in delegates.into_iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut out, &record_of(d))?;
        }
        out.write_all(b"]")
    })();
    match encoded {
        Ok(()) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => Err(limits::over_limit(
            "the delegate cache of this pod is too large (bytes, at least)",
            e.get_ref().and_then(|i| i.to_string().parse().ok()).unwrap_or(limit + 1),
            limit,
            "maxCacheFileBytes",
        )),
        Err(e) => Err(CniError::io("error encoding the delegates", e)),
    }
}

/// The scratch record made by [`encode_delegates`] written to its temp file: a cniDir that cannot take it (read-only,
/// full) fails here, before any delegate runs; [`StagedDelegates::commit`] (the fsyncs
/// and the rename) may then run on a blocking thread while the first delegate does.
pub fn stage_delegates(cni_dir: &Path, container_id: &str, encoded: &[u8]) -> Result<StagedDelegates> {
    if !crate::cni::env::valid_container_id(container_id) {
        return Err(invalid_id(container_id));
    }
    let path = scratch_path(cni_dir, container_id);
    let staged = safefs::Dir::create(cni_dir)
        .map_err(|e| CniError::io(format!("cannot create {}", cni_dir.display()), e))?
        .stage(container_id, encoded, 0o600)
        .map_err(|e| saving_failed(&path, e))?;
    Ok(StagedDelegates { staged, path })
}

/// See [`stage_delegates`].
#[derive(Debug)]
pub struct StagedDelegates {
    staged: safefs::Staged,
    path: PathBuf,
}

impl StagedDelegates {
    /// fsync, rename into place, fsync the directory.
    pub fn commit(self) -> Result<()> {
        self.staged.commit(true, true).map_err(|e| saving_failed(&self.path, e))
    }
}

fn saving_failed(path: &Path, e: std::io::Error) -> CniError {
    CniError::io(format!("error saving the delegates to {}", path.display()), e)
}

/// A writer that fails with `FileTooLarge` (its payload: the size reached) past `limit`.
struct Capped<'a> {
    inner: &'a mut dyn std::io::Write,
    written: u64,
    limit: u64,
}

impl std::io::Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let reached = self.written + buf.len() as u64;
        if reached > self.limit {
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, reached.to_string()));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// One scratch-cache record: Go Multus' `DelegateNetConf` fields, the config in `Bytes`.
fn record_of(d: &Delegate) -> Record {
    let value = go_netconf_header(d.config.value(), d.config.is_list());
    Record {
        conf: (!d.config.is_list()).then(|| value.clone()),
        conf_list: d.config.is_list().then_some(value),
        name: d.name.clone(),
        ifname_request: d.ifname.clone(),
        mac_request: str_arg(&d.capability_args, "mac"),
        infiniband_guid_request: str_arg(&d.capability_args, "infinibandGUID"),
        ip_request: d
            .capability_args
            .get("ips")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default(),
        device_id: str_arg(&d.capability_args, "deviceID"),
        bytes: B64.encode(&d.config.bytes),
        master: Some(d.primary),
        capability_args: Some(d.capability_args.clone()),
    }
}

/// Read the scratch cache. `Ok(None)` when there is none; an error when it exists but is
/// unreadable, not a regular file, over `maxCacheFileBytes` or corrupt (the caller falls
/// back; it never silently does nothing).
/// `runtime_ifname` names the master's interface for records that lack one.
pub fn load_delegates(cni_dir: &Path, container_id: &str, runtime_ifname: &str) -> Result<Option<Vec<Delegate>>> {
    if !crate::cni::env::valid_container_id(container_id) {
        return Err(invalid_id(container_id));
    }
    let path = scratch_path(cni_dir, container_id);
    let Some(dir) = open_cni_dir(cni_dir)? else { return Ok(None) };
    let data = match dir.read(container_id, limits::get().max_cache_file_bytes) {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(None),
        Err(e) => return Err(read_error(&path, e)),
    };
    let corrupt = |why: String| -> CniError {
        DecodeError::Invalid { what: format!("corrupt delegate cache {}", path.display()), why }.into()
    };
    let records: Vec<Record> = serde_json::from_slice(&data).map_err(|e| corrupt(e.to_string()))?;
    if records.is_empty() {
        return Err(corrupt("no delegates".into()));
    }
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let bytes = B64.decode(r.bytes.as_bytes()).map_err(|e| corrupt(format!("record {i}: {e}")))?;
            let config = NetworkConfig::parse(bytes).map_err(|e| corrupt(format!("record {i}: {}", e.msg)))?;
            let primary = r.master.unwrap_or(i == 0);
            // Go Multus' naming rule when the record has no interface (§1.6).
            let ifname = match (r.ifname_request.is_empty(), primary) {
                (false, _) => r.ifname_request,
                (true, true) => runtime_ifname.to_string(),
                (true, false) => format!("net{i}"),
            };
            // The interface name reaches delegates and file names: the kernel's rule.
            crate::cni::env::check_ifname(&ifname).map_err(|e| corrupt(format!("record {i}: {e}")))?;
            let capability_args = r.capability_args.unwrap_or_else(|| {
                let mut m = Map::new();
                if !r.mac_request.is_empty() {
                    m.insert("mac".into(), r.mac_request.into());
                }
                if !r.ip_request.is_empty() {
                    m.insert("ips".into(), r.ip_request.into());
                }
                if !r.infiniband_guid_request.is_empty() {
                    m.insert("infinibandGUID".into(), r.infiniband_guid_request.into());
                }
                if !r.device_id.is_empty() {
                    m.insert("deviceID".into(), r.device_id.into());
                }
                m
            });
            let name = if r.name.is_empty() { config.name().to_string() } else { r.name };
            Ok(Delegate { config, name, ifname, primary, capability_args })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

pub fn remove_delegates(cni_dir: &Path, container_id: &str) -> Result<()> {
    if !crate::cni::env::valid_container_id(container_id) {
        return Err(invalid_id(container_id));
    }
    let path = scratch_path(cni_dir, container_id);
    let Some(dir) = open_cni_dir(cni_dir)? else { return Ok(()) };
    dir.remove_stale_temps(container_id);
    match dir.remove(container_id) {
        // Not a cache of ours (we only write files): left for the operator, not an error.
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EISDIR as i32) => {
            tracing::warn!("{} is a directory, not a cache file; left alone", path.display());
            Ok(())
        }
        other => other.map_err(|e| CniError::io(format!("cannot remove {}", path.display()), e)),
    }
}

/// Container IDs that have a scratch cache entry (for GC): regular files whose name is a
/// valid container ID; links, FIFOs, directories and temp files are not entries.
pub fn cached_containers(cni_dir: &Path) -> Vec<String> {
    let Ok(Some(dir)) = open_cni_dir(cni_dir) else {
        return Vec::new();
    };
    dir.entries()
        .unwrap_or_default()
        .into_iter()
        .filter(|(n, regular)| *regular && n != RESULTS && crate::cni::env::valid_container_id(n))
        .map(|(n, _)| n)
        .collect()
}

/// libcni's `cniCacheV1` result record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedResult {
    pub kind: String,
    pub container_id: String,
    /// base64 of the network configuration bytes.
    pub config: String,
    pub if_name: String,
    pub network_name: String,
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub cni_args: Vec<(String, String)>,
    #[serde(default)]
    pub capability_args: Map<String, Value>,
    #[serde(default)]
    pub result: Option<Value>,
}

pub fn results_dir(cni_dir: &Path) -> PathBuf {
    cni_dir.join(RESULTS)
}

/// The file name of an attachment's result record: libcni's `<net>-<cid>-<if>`.
pub fn result_name(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network}-{container_id}-{ifname}")
}

/// Whether the three parts of a record's identity are each valid (network name and
/// container ID grammar, interface name rule): then the file name they make is one
/// plain name inside the results directory.
fn valid_identity(network: &str, container_id: &str, ifname: &str) -> bool {
    crate::config::valid_network_name(network)
        && crate::cni::env::valid_container_id(container_id)
        && crate::cni::env::check_ifname(ifname).is_ok()
}

impl CachedResult {
    /// What a record must satisfy before anything acts on it: our kind, a valid identity,
    /// the file name it was read from is the one that identity makes, and a netns, when
    /// there is one, is an absolute path without `..`.
    pub fn validate(&self, file_name: &str) -> std::result::Result<(), String> {
        if self.kind != "cniCacheV1" {
            return Err(format!("kind {:?} is not cniCacheV1", self.kind));
        }
        if !valid_identity(&self.network_name, &self.container_id, &self.if_name) {
            return Err("invalid network name, container ID or interface name".into());
        }
        if file_name != result_name(&self.network_name, &self.container_id, &self.if_name) {
            return Err("the file name does not match the record".into());
        }
        let netns = Path::new(&self.netns);
        if !self.netns.is_empty()
            && (!netns.is_absolute() || netns.components().any(|c| c == std::path::Component::ParentDir))
        {
            return Err(format!("netns {:?} is not an absolute path", self.netns));
        }
        Ok(())
    }
}

fn open_results(cni_dir: &Path, create: bool) -> Result<Option<safefs::Dir>> {
    let dir = if create {
        Some(
            safefs::Dir::create(cni_dir)
                .map_err(|e| CniError::io(format!("cannot create {}", cni_dir.display()), e))?,
        )
    } else {
        open_cni_dir(cni_dir)?
    };
    let Some(dir) = dir else { return Ok(None) };
    dir.subdir(RESULTS, create).map_err(|e| {
        CniError::io(format!("cannot open {} (a symlink or not a directory?)", results_dir(cni_dir).display()), e)
    })
}

pub fn save_result(cni_dir: &Path, record: &CachedResult) -> Result<()> {
    let name = result_name(&record.network_name, &record.container_id, &record.if_name);
    if !valid_identity(&record.network_name, &record.container_id, &record.if_name) {
        return Err(CniError::invalid_config(format!("cannot cache a result under the name {name:?}")));
    }
    // Created just now, unless something else removed it in between: an error, not a panic.
    let Some(dir) = open_results(cni_dir, true)? else {
        return Err(CniError::io(
            format!("cannot open {}", results_dir(cni_dir).display()),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    };
    let data = serde_json::to_vec(record).map_err(IoError::from)?;
    // Content fsynced and renamed atomically, but no directory fsync: after a crash a
    // result is either whole or absent, and an absent one only means DEL runs without
    // prevResult or falls back to the scratch cache, which *is* fully synced.
    dir.write_atomic(&name, &data, 0o600, false)
        .map_err(|e| CniError::io(format!("cannot write {}", results_dir(cni_dir).join(&name).display()), e))
}

/// Read and validate one record of the results directory.
fn read_record(dir: &safefs::Dir, name: &str) -> Option<CachedResult> {
    let data = match dir.read(name, limits::get().max_cache_file_bytes) {
        Ok(Some(d)) => d,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!("ignoring result cache {}/{name}: {e}", dir.path().display());
            return None;
        }
    };
    match serde_json::from_slice::<CachedResult>(&data) {
        Ok(r) => match r.validate(name) {
            Ok(()) => Some(r),
            Err(why) => {
                tracing::warn!("ignoring result cache {}/{name}: {why}", dir.path().display());
                None
            }
        },
        Err(e) => {
            tracing::warn!("ignoring unreadable result cache {}/{name}: {e}", dir.path().display());
            None
        }
    }
}

/// The cached result of an attachment; a missing, unreadable or invalid record is `None`
/// (DEL must go on without a prevResult, as libcni does).
pub fn load_result(cni_dir: &Path, network: &str, container_id: &str, ifname: &str) -> Option<CachedResult> {
    if !valid_identity(network, container_id, ifname) {
        return None;
    }
    let dir = open_results(cni_dir, false).ok()??;
    read_record(&dir, &result_name(network, container_id, ifname))
}

pub fn remove_result(cni_dir: &Path, network: &str, container_id: &str, ifname: &str) {
    if !valid_identity(network, container_id, ifname) {
        return;
    }
    remove_result_file(cni_dir, &result_name(network, container_id, ifname));
}

/// Remove one entry of the results directory by its name (never following a link).
pub fn remove_result_file(cni_dir: &Path, name: &str) {
    let Ok(Some(dir)) = open_results(cni_dir, false) else { return };
    dir.remove_stale_temps(name);
    if let Err(e) = dir.remove(name) {
        tracing::warn!("cannot remove {}/{name}: {e}", dir.path().display());
    }
}

/// Every entry of the results directory (for GC), by file name: the record when it is a
/// valid regular file, else `None`. Links, FIFOs and subdirectories are `None` too.
pub fn all_results(cni_dir: &Path) -> Vec<(String, Option<CachedResult>)> {
    let Ok(Some(dir)) = open_results(cni_dir, false) else {
        return Vec::new();
    };
    dir.entries()
        .unwrap_or_default()
        .into_iter()
        .filter(|(n, _)| !n.starts_with('.'))
        .map(|(n, regular)| {
            let r = if regular { read_record(&dir, &n) } else { None };
            (n, r)
        })
        .collect()
}

/// The attachments of `container_id` as the results cache records them (each record
/// holds its network config bytes): what DEL and GC fall back on when the scratch cache
/// is gone or torn. Master first; DEL walks the list backwards.
pub fn delegates_from_results(cni_dir: &Path, container_id: &str, master_ifname: &str) -> Vec<Delegate> {
    let mut found: Vec<Delegate> = all_results(cni_dir)
        .into_iter()
        .filter_map(|(_, r)| r)
        .filter(|r| r.container_id == container_id && r.kind == "cniCacheV1")
        .filter_map(|r| {
            let config = NetworkConfig::parse(B64.decode(r.config.as_bytes()).ok()?).ok()?;
            Some(Delegate {
                name: r.network_name.clone(),
                primary: r.if_name == master_ifname,
                ifname: r.if_name,
                capability_args: r.capability_args,
                config,
            })
        })
        .collect();
    found.sort_by(|a, b| b.primary.cmp(&a.primary).then_with(|| a.ifname.cmp(&b.ifname)));
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    fn delegate(v: Value, name: &str, ifname: &str, primary: bool) -> Delegate {
        Delegate {
            config: NetworkConfig::from_value(&v).unwrap(),
            name: name.into(),
            ifname: ifname.into(),
            primary,
            capability_args: json!({"mac":"02:00:00:00:00:09","ips":["10.1.1.101/24"]}).as_object().unwrap().clone(),
        }
    }

    #[test]
    fn round_trip_is_byte_exact_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let cni = dir.path().join("multus");
        let raw = br#"{"name":"k8s-pod-network","cniVersion":"0.3.1","plugins":[{"type":"calico","kubernetes":{"kubeconfig":"/k"}}]}"#;
        let d0 = Delegate {
            config: NetworkConfig::parse(raw.to_vec()).unwrap(),
            ..delegate(json!({"name":"x","type":"y"}), "k8s-pod-network", "eth0", true)
        };
        let d1 = delegate(
            json!({"name":"macvlan-conf","type":"macvlan","cniVersion":"0.3.1"}),
            "default/macvlan-conf",
            "net1",
            false,
        );
        save_delegates(&cni, "cid1", &[d0.clone(), d1.clone()]).unwrap();
        let back = load_delegates(&cni, "cid1", "eth0").unwrap().unwrap();
        assert_eq!(back, vec![d0, d1]);
        assert_eq!(back[0].config.bytes, raw.to_vec());
        let mode = std::fs::metadata(scratch_path(&cni, "cid1")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::metadata(&cni).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(cached_containers(&cni), vec!["cid1"]);
        remove_delegates(&cni, "cid1").unwrap();
        assert!(load_delegates(&cni, "cid1", "eth0").unwrap().is_none());
    }

    #[test]
    fn a_config_is_stored_once_with_a_go_header() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(100_000);
        let d = delegate(
            json!({"name":"n","type":"macvlan","cniVersion":"1.0.0","blob":big,"ipam":{"type":"static","addresses":[]}}),
            "n",
            "net1",
            false,
        );
        save_delegates(dir.path(), "cid", std::slice::from_ref(&d)).unwrap();
        let raw = std::fs::read(scratch_path(dir.path(), "cid")).unwrap();
        // base64 of the config (4/3 of it) plus a small header, not twice the config.
        assert!(raw.len() < d.config.bytes.len() * 4 / 3 + 1024, "{} bytes", raw.len());
        let rec: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(rec[0]["Conf"], json!({"name":"n","type":"macvlan","cniVersion":"1.0.0","ipam":{"type":"static"}}));
        assert_eq!(load_delegates(dir.path(), "cid", "eth0").unwrap().unwrap(), vec![d]);
    }

    #[test]
    fn a_cache_over_the_limit_is_refused_before_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat((limits::get().max_cache_file_bytes / 2) as usize);
        let d = delegate(json!({"name":"n","type":"macvlan","blob":big}), "n", "net1", false);
        let e = save_delegates(dir.path(), "cid", &[d.clone(), d]).unwrap_err();
        assert!(e.msg.contains("maxCacheFileBytes"), "{}", e.msg);
        assert!(!scratch_path(dir.path(), "cid").exists());
    }

    #[test]
    fn reads_a_go_multus_cache() {
        let dir = tempfile::tempdir().unwrap();
        let conf = br#"{"cniVersion":"0.3.1","name":"weave1","type":"weave-net"}"#;
        let net1 = br#"{"cniVersion":"0.3.1","name":"net1","type":"macvlan"}"#;
        let go = json!([
            {"Conf":{"cniVersion":"0.3.1","name":"weave1","type":"weave-net"},"ConfList":{"cniVersion":"","name":"","plugins":null},"Name":"","IsFilterV4Gateway":false,"IsFilterV6Gateway":false,"Bytes":B64.encode(conf)},
            {"Conf":{"cniVersion":"0.3.1","name":"net1","type":"macvlan"},"ConfList":{"cniVersion":"","name":"","plugins":null},"Name":"test/net1","macRequest":"c2:11:22:33:44:66","ipRequest":["10.0.0.1/24"],"IsFilterV4Gateway":false,"IsFilterV6Gateway":false,"Bytes":B64.encode(net1)}
        ]);
        std::fs::write(dir.path().join("cid"), serde_json::to_vec(&go).unwrap()).unwrap();
        let back = load_delegates(dir.path(), "cid", "eth0").unwrap().unwrap();
        assert_eq!((back[0].ifname.as_str(), back[0].primary, back[0].name.as_str()), ("eth0", true, "weave1"));
        assert_eq!((back[1].ifname.as_str(), back[1].primary), ("net1", false));
        assert_eq!(back[1].capability_args["mac"], "c2:11:22:33:44:66");
    }

    #[test]
    fn corrupt_cache_is_an_error_not_silence() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [&b"\0\0garbage"[..], b"[]", b"[{\"Bytes\":\"!!\"}]", b"[{\"Bytes\":\"e30=\"}]"] {
            std::fs::write(dir.path().join("cid"), bad).unwrap();
            assert!(load_delegates(dir.path(), "cid", "eth0").is_err());
        }
    }

    #[test]
    fn results_cache_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let rec = CachedResult {
            kind: "cniCacheV1".into(),
            container_id: "cid".into(),
            config: B64.encode(b"{}"),
            if_name: "net1".into(),
            network_name: "macvlan-conf".into(),
            netns: "/n".into(),
            cni_args: vec![("K8S_POD_NAME".into(), "p".into())],
            capability_args: Map::new(),
            result: Some(json!({"cniVersion":"0.3.1"})),
        };
        save_result(dir.path(), &rec).unwrap();
        assert!(results_dir(dir.path()).join(result_name("macvlan-conf", "cid", "net1")).exists());
        let back = load_result(dir.path(), "macvlan-conf", "cid", "net1").unwrap();
        assert_eq!(back.result, rec.result);
        let v: Value = serde_json::from_slice(
            &std::fs::read(results_dir(dir.path()).join(result_name("macvlan-conf", "cid", "net1"))).unwrap(),
        )
        .unwrap();
        assert_eq!(v["kind"], "cniCacheV1");
        assert_eq!(v["cniArgs"], json!([["K8S_POD_NAME", "p"]]));
        assert_eq!(all_results(dir.path()).len(), 1);
        remove_result(dir.path(), "macvlan-conf", "cid", "net1");
        assert!(load_result(dir.path(), "macvlan-conf", "cid", "net1").is_none());
    }
}
