//! Device-info files (Network Plumbing WG "Device Information" specification, v1.1.0).
//!
//! * A device plugin writes `<dir>/dp/<resourceName>-<deviceID>-device.json` for each device
//!   it hands out; before the delegate runs, Multus copies it to the attachment's file
//!   `<dir>/cni/<network>-<containerID>_<ifname>` (every `/` of the names made `-`), whose
//!   path it gives the delegate as the `CNIDeviceInfoFile` capability. A CNI plugin (such
//!   as sriov-cni) may write that file itself instead.
//! * After the ADD, the file's content becomes `device-info` in the network-status entry.
//! * DEL (and a rolled-back ADD) removes it.
//!
//! The content is read into the spec's typed structure (as Go Multus does): unknown keys
//! are dropped, so a device plugin cannot put arbitrary JSON into the pod's annotation.

use crate::error::{CniError, DecodeError, IoError, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Go Multus' (and the spec's) base directory.
pub const DEFAULT_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo";
/// A device-info file is a few hundred bytes.
pub const MAX_DEVICE_INFO: u64 = 64 * 1024;

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

/// The spec's `DeviceInfo`: `type` (`pci`, `vhost-user`, `memif`, `vdpa`), `version` and
/// the one matching section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    #[serde(default, rename = "type", skip_serializing_if = "is_empty")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<PciDevice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vdpa: Option<VdpaDevice>,
    #[serde(default, rename = "vhost-user", skip_serializing_if = "Option::is_none")]
    pub vhost_user: Option<VhostDevice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memif: Option<MemifDevice>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PciDevice {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub pci_address: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub vhost_net: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub rdma_device: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub pf_pci_address: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub representor_device: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VdpaDevice {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub parent_device: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub driver: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub pci_address: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub pf_pci_address: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub representor_device: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VhostDevice {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemifDevice {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub role: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub mode: String,
}

fn flat(s: &str) -> String {
    s.replace('/', "-")
}

/// Where the device plugin describes `device_id` of `resource`.
pub fn dp_path(dir: &Path, resource: &str, device_id: &str) -> PathBuf {
    dir.join("dp").join(format!("{}-{}-device.json", flat(resource), flat(device_id)))
}

/// The attachment's device-info file (Go Multus: `<delegate name>-<containerID>_<ifname>`).
pub fn cni_path(dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    dir.join("cni").join(flat(&format!("{network}-{container_id}_{ifname}")))
}

/// Read a device-info file: a regular file (never a FIFO or device, never through a
/// symlink), at most [`MAX_DEVICE_INFO`] bytes. `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> Result<Option<DeviceInfo>> {
    let data = match super::read_bounded(path, MAX_DEVICE_INFO, "deviceInfoDir") {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CniError::io(format!("cannot read the device-info file {}", path.display()), e));
        }
    };
    serde_json::from_slice(&data).map(Some).map_err(|e| {
        DecodeError::Invalid { what: format!("invalid device-info file {}", path.display()), why: e.to_string() }.into()
    })
}

/// Write `info` to `path`, refusing to replace an existing file (as the spec's helpers
/// do): written to a temp file, fsynced, then hard-linked into place (which fails if the
/// name exists) — readers never see a partial file. Mode 0444; directories 0755 (Go
/// Multus creates `cni/` with mode 0000).
pub fn save_new(path: &Path, info: &DeviceInfo) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no directory"))?;
    fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let data = serde_json::to_vec(info).map_err(io::Error::other)?;
    let result = (|| {
        let mut f =
            OpenOptions::new().write(true).create_new(true).mode(0o444).custom_flags(libc_nofollow()).open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    result
}

fn libc_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Copy the device plugin's description of `device_id` to the attachment's file.
pub fn copy_from_dp(dir: &Path, cni_file: &Path, resource: &str, device_id: &str) -> Result<()> {
    let src = dp_path(dir, resource, device_id);
    let info = load(&src)?.ok_or_else(|| {
        CniError::from(IoError::Unusable(format!("no device-info file {} from the device plugin", src.display())))
    })?;
    save_new(cni_file, &info)
        .map_err(|e| CniError::io(format!("cannot write the device-info file {}", cni_file.display()), e))
}

/// Remove an attachment's device-info file; one that is gone is no error.
pub fn remove(path: &Path) -> Result<()> {
    crate::fsutil::remove_if_exists(path)
        .map_err(|e| CniError::io(format!("cannot remove the device-info file {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn paths_follow_the_spec() {
        let d = Path::new(DEFAULT_DIR);
        assert_eq!(
            dp_path(d, "intel.com/sriov_netdevice", "0000:03:02.3"),
            Path::new("/var/run/k8s.cni.cncf.io/devinfo/dp/intel.com-sriov_netdevice-0000:03:02.3-device.json")
        );
        assert_eq!(
            cni_path(d, "default/sriov-net", "cid1", "net1"),
            Path::new("/var/run/k8s.cni.cncf.io/devinfo/cni/default-sriov-net-cid1_net1")
        );
    }

    #[test]
    fn copy_keeps_the_spec_fields_refuses_overwrite_and_remove_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let dp = dp_path(dir.path(), "intel.com/sriov", "0000:03:02.3");
        fs::create_dir_all(dp.parent().unwrap()).unwrap();
        fs::write(
            &dp,
            r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.3","pf-pci-address":"0000:03:00.0"},"evil":{"x":1}}"#,
        )
        .unwrap();
        let cni = cni_path(dir.path(), "default/sriov-net", "cid", "net1");
        copy_from_dp(dir.path(), &cni, "intel.com/sriov", "0000:03:02.3").unwrap();
        assert_eq!(
            fs::read_to_string(&cni).unwrap(),
            r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.3","pf-pci-address":"0000:03:00.0"}}"#
        );
        assert_eq!(fs::metadata(&cni).unwrap().permissions().mode() & 0o777, 0o444);
        assert!(copy_from_dp(dir.path(), &cni, "intel.com/sriov", "0000:03:02.3").is_err(), "no overwrite");
        assert_eq!(fs::read_dir(cni.parent().unwrap()).unwrap().count(), 1, "no temp left");
        assert_eq!(load(&cni).unwrap().unwrap().pci.unwrap().pci_address, "0000:03:02.3");
        remove(&cni).unwrap();
        remove(&cni).unwrap();
        assert!(load(&cni).unwrap().is_none());
        assert!(copy_from_dp(dir.path(), &cni, "intel.com/sriov", "other").is_err());
    }
}
