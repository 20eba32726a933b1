//! The kubelet device-manager checkpoint
//! (`/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint`), Go Multus' fallback
//! when the pod-resources socket is absent: JSON
//! `{"Data": {"PodDeviceEntries": [{"PodUID", "ContainerName", "ResourceName",
//! "DeviceIDs": {"<numa node>": ["id", ...]}, "AllocResp"}], ...}, "Checksum": n}`,
//! keyed by pod UID. Kubelets before 1.20 wrote `DeviceIDs` as a plain list; both are read.

use super::ResourceMap;
use crate::error::{CniError, DecodeError, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// A checkpoint is a few KiB per pod; a larger file is no checkpoint we should parse.
pub const MAX_CHECKPOINT: u64 = 16 * 1024 * 1024;

#[derive(Deserialize)]
struct Checkpoint {
    #[serde(rename = "Data")]
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "PodDeviceEntries", default)]
    entries: Option<Vec<Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "PodUID", default)]
    pod_uid: String,
    #[serde(rename = "ResourceName", default)]
    resource_name: String,
    #[serde(rename = "DeviceIDs", default)]
    device_ids: Value,
}

/// The IDs of one entry: per NUMA node in node order, or the pre-1.20 flat list.
fn ids(v: &Value) -> Vec<String> {
    let strings = |a: &Vec<Value>| a.iter().filter_map(Value::as_str).map(String::from).collect::<Vec<_>>();
    match v {
        Value::Array(a) => strings(a),
        Value::Object(m) => {
            let mut nodes: Vec<(i64, &Value)> = m.iter().map(|(k, v)| (k.parse().unwrap_or(i64::MAX), v)).collect();
            nodes.sort_by_key(|(n, _)| *n);
            nodes.into_iter().filter_map(|(_, v)| v.as_array()).flat_map(strings).collect()
        }
        _ => Vec::new(),
    }
}

/// The devices of the pod with UID `pod_uid` according to the checkpoint at `path`.
pub fn pod_resources(path: &Path, pod_uid: &str) -> Result<ResourceMap> {
    if pod_uid.is_empty() {
        return Err(CniError::invalid_config(format!(
            "the kubelet checkpoint {} is keyed by pod UID, and the pod's UID is unknown",
            path.display()
        )));
    }
    let data = super::read_bounded(path, MAX_CHECKPOINT, "kubeletCheckpointFile")
        .map_err(|e| CniError::io(format!("failed to read the kubelet checkpoint {}", path.display()), e))?;
    let cp: Checkpoint = serde_json::from_slice(&data).map_err(|e| {
        CniError::from(DecodeError::Invalid {
            what: format!("failed to parse the kubelet checkpoint {}", path.display()),
            why: e.to_string(),
        })
    })?;
    let mut map = ResourceMap::default();
    for e in cp.data.entries.iter().flatten().filter(|e| e.pod_uid == pod_uid) {
        map.add(&e.resource_name, ids(&e.device_ids));
    }
    map.finish();
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;

    #[test]
    fn entries_of_the_pod_sorted_and_both_id_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kubelet_internal_checkpoint");
        std::fs::write(
            &p,
            r#"{"Data":{"PodDeviceEntries":[
              {"PodUID":"u1","ContainerName":"c","ResourceName":"intel.com/sriov_net_A","DeviceIDs":{"1":["0000:03:02.3"],"0":["0000:03:02.0"]},"AllocResp":"Cg=="},
              {"PodUID":"u2","ContainerName":"c","ResourceName":"intel.com/sriov_net_A","DeviceIDs":{"0":["0000:03:02.5"]}},
              {"PodUID":"u1","ContainerName":"d","ResourceName":"old.com/x","DeviceIDs":["b","a"]}
            ],"RegisteredDevices":{}},"Checksum":1}"#,
        )
        .unwrap();
        let m = pod_resources(&p, "u1").unwrap();
        assert_eq!(m.ids("intel.com/sriov_net_A"), ["0000:03:02.0", "0000:03:02.3"]);
        assert_eq!(m.ids("old.com/x"), ["a", "b"]);
        assert!(pod_resources(&p, "nobody").unwrap().is_empty());
        std::fs::write(&p, "{bad").unwrap();
        assert_eq!(pod_resources(&p, "u1").unwrap_err().code, code::DECODE);
        assert_eq!(pod_resources(&dir.path().join("missing"), "u1").unwrap_err().code, code::IO);
        assert_eq!(pod_resources(&p, "").unwrap_err().code, code::INVALID_CONFIG);
    }
}
