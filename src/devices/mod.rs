//! SR-IOV and other device-plugin networks: a NAD annotated
//! `k8s.v1.cni.cncf.io/resourceName: <resource>` attaches a device the kubelet allocated to
//! the pod for that resource, and the delegate (sriov-cni, host-device, ib-sriov, …) must
//! be told which one (Go Multus §3.6).
//!
//! 1. Only when some attachment's NAD names a resource: one lookup of the pod's devices,
//!    from the kubelet pod-resources API ([`podresources`]) when its socket exists, else
//!    from the kubelet checkpoint ([`checkpoint`]), under the API budget.
//! 2. The k-th attachment of resource R gets the k-th of R's device IDs (sorted, as Go
//!    Multus v4.3); a pod with fewer devices than attachments fails before anything runs
//!    (Go Multus silently passes no device, and the delegate fails or grabs a wrong VF).
//! 3. The ID goes into the delegate's config ([`inject`]), into `runtimeConfig.deviceID`
//!    and, with the attachment's `CNIDeviceInfoFile`, to plugins that declare those
//!    capabilities; the device plugin's device-info file is copied for the attachment and
//!    shown in network-status; DEL removes it ([`deviceinfo`]).

pub mod checkpoint;
pub mod deviceinfo;
pub mod inject;
pub mod podresources;

use crate::config::MultusConf;
use crate::delegate::Delegate;
use crate::error::{CniError, Result, WaitError};
use crate::k8s::client::Kube;
use crate::k8s::pod::PodInfo;
use kube::api::DynamicObject;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

/// The NAD annotation naming the device-plugin resource of a network.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";
/// The capability through which a delegate learns its device-info file.
pub const DEVICE_INFO_CAPABILITY: &str = "CNIDeviceInfoFile";

/// The resource a NAD's attachments draw devices from, if any.
pub fn resource_name(nad: &DynamicObject) -> Option<String> {
    let r = nad.metadata.annotations.as_ref()?.get(RESOURCE_NAME_ANNOTATION)?.trim();
    (!r.is_empty()).then(|| r.to_string())
}

/// Device IDs per resource name, each list sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceMap(BTreeMap<String, Vec<String>>);

impl ResourceMap {
    pub fn add(&mut self, resource: &str, ids: impl IntoIterator<Item = String>) {
        if resource.is_empty() {
            return;
        }
        self.0.entry(resource.to_string()).or_default().extend(ids);
    }

    /// Sort every list (Go Multus v4.3: the kubelet's order is not stable across calls).
    pub fn finish(&mut self) {
        self.0.values_mut().for_each(|ids| ids.sort());
    }

    pub fn ids(&self, resource: &str) -> &[String] {
        self.0.get(resource).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(Vec::is_empty)
    }
}

/// Read a file we do not own, bounded: no symlink followed, a FIFO never blocks us (and is
/// refused, as a device is), at most `max` bytes (`key` is the config key to blame).
pub(crate) fn read_bounded(path: &Path, max: u64, key: &str) -> io::Result<Vec<u8>> {
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(flags.bits()).open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut data = Vec::new();
    f.take(max + 1).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes (the limit for files under {key})"),
        ));
    }
    Ok(data)
}

pub fn is_socket(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// The pod's devices: the pod-resources API when its socket exists (falling back to the
/// checkpoint when the kubelet does not answer and the checkpoint exists), else the
/// checkpoint; neither → "try again later" (a kubelet that is starting has neither yet).
pub async fn lookup(conf: &MultusConf, pod: &PodInfo, budget: Duration) -> Result<ResourceMap> {
    let socket = Path::new(&conf.pod_resources_socket);
    let checkpoint = Path::new(&conf.kubelet_checkpoint_file);
    if is_socket(socket) {
        match podresources::pod_resources(socket, &pod.namespace, &pod.name, budget).await {
            Ok(map) => return Ok(map),
            Err(e) if checkpoint.is_file() => {
                tracing::warn!("{}; using the kubelet checkpoint {}", e.msg, checkpoint.display());
            }
            Err(e) => return Err(e),
        }
    } else if !checkpoint.exists() {
        return Err(WaitError::NoDeviceSource {
            socket: socket.display().to_string(),
            checkpoint: checkpoint.display().to_string(),
        }
        .into());
    }
    checkpoint::pod_resources(checkpoint, &pod.uid)
}

/// The device each attachment got: `(resource, device ID)`, by delegate index.
pub type Assigned = Vec<Option<(String, String)>>;

/// Give each attachment whose NAD names a resource (`resources[i]` for `delegates[i]`) its
/// device. No lookup when none does. The primary gets the ID in its config only (Go Multus
/// passes the runtime's own values to the primary).
///
/// `strict` (ADD): a failed lookup or a missing device fails. Otherwise (a DEL rebuilding
/// the list without a cache, when the kubelet may have released the devices already) the
/// attachments go without a device, as in Go Multus, and are still deleted.
pub async fn attach(
    conf: &MultusConf,
    kube: Option<&Kube>,
    pod: Option<&PodInfo>,
    container_id: &str,
    delegates: &mut [Delegate],
    resources: &[Option<String>],
    strict: bool,
) -> Result<Assigned> {
    let mut assigned: Assigned = vec![None; delegates.len()];
    if let (Some(pod), true) = (pod, resources.iter().any(Option::is_some)) {
        // A budget already spent still gets a moment: "0 s" would be no answer at all.
        let budget = kube.map(Kube::remaining).unwrap_or_else(|| conf.api_timeout()).max(Duration::from_millis(200));
        let map = match lookup(conf, pod, budget).await {
            Ok(map) => map,
            Err(e) if !strict => {
                tracing::warn!("devices unknown, attachments go without: {}", e.msg);
                ResourceMap::default()
            }
            Err(e) => return Err(e.about_pod()),
        };
        let mut used: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, (d, r)) in delegates.iter_mut().zip(resources).enumerate() {
            let Some(r) = r else { continue };
            let k = used.entry(r.as_str()).or_default();
            let ids = map.ids(r);
            let Some(id) = ids.get(*k) else {
                if !strict {
                    continue;
                }
                return Err(CniError::invalid_config(format!(
                    "network {:?} ({}): the pod has no device of resource {r:?} for it: the kubelet allocated {} ({}) to the pod and {} attachments need one; add {r:?} to the pod's resource requests and limits, once per attachment",
                    d.name,
                    d.ifname,
                    ids.len(),
                    if ids.is_empty() { "none".to_string() } else { ids.join(", ") },
                    resources.iter().filter(|x| x.as_ref() == Some(r)).count(),
                )));
            };
            *k += 1;
            d.config = inject::device_id(d.config.clone(), id)?;
            if !d.primary {
                d.capability_args.insert("deviceID".into(), id.clone().into());
            }
            assigned[i] = Some((r.clone(), id.clone()));
        }
    }
    // Go Multus: any attachment with a device ID (from a resource or the annotation's
    // `deviceID`) gets its device-info file path.
    for d in delegates.iter_mut().filter(|d| !d.primary && d.capability_args.contains_key("deviceID")) {
        let path = device_info_path(conf, container_id, d);
        d.capability_args.insert(DEVICE_INFO_CAPABILITY.into(), path.display().to_string().into());
    }
    Ok(assigned)
}

fn device_info_path(conf: &MultusConf, container_id: &str, d: &Delegate) -> std::path::PathBuf {
    deviceinfo::cni_path(Path::new(&conf.device_info_dir), &d.name, container_id, &d.ifname)
}

/// Before the delegates run: copy the device plugin's device-info of each assigned device
/// to the attachment's file. Failures are logged only (Go Multus: the device plugin may
/// write none, and the delegate may write the file itself).
pub fn write_device_info<'a>(
    conf: &MultusConf,
    container_id: &str,
    attachments: impl IntoIterator<Item = (&'a Delegate, &'a Option<(String, String)>)>,
) {
    let dir = Path::new(&conf.device_info_dir);
    for (d, a) in attachments {
        let Some((resource, id)) = a else { continue };
        if d.primary {
            continue;
        }
        let path = device_info_path(conf, container_id, d);
        // A file left by an earlier ADD of this container (a retried ADD) is replaced.
        let _ = deviceinfo::remove(&path);
        if let Err(e) = deviceinfo::copy_from_dp(dir, &path, resource, id) {
            tracing::debug!("device-info for {} ({}): {}", d.ifname, d.name, e.msg);
        }
    }
}

/// The attachment's device-info for its network-status entry, when it has a device.
pub fn status_device_info(conf: &MultusConf, container_id: &str, d: &Delegate) -> Option<Value> {
    if d.primary || !d.capability_args.contains_key(DEVICE_INFO_CAPABILITY) {
        return None;
    }
    match deviceinfo::load(&device_info_path(conf, container_id, d)) {
        Ok(info) => info.and_then(|i| serde_json::to_value(i).ok()),
        Err(e) => {
            tracing::warn!("device-info of {} ({}) not shown: {}", d.ifname, d.name, e.msg);
            None
        }
    }
}

/// DEL and rollback: remove the attachment's device-info file. The path is computed
/// from the network, container and interface, never taken from the cache (a tampered
/// cache must not choose what we delete).
pub fn remove_device_info(conf: &MultusConf, container_id: &str, d: &Delegate) {
    if d.primary || !d.capability_args.contains_key("deviceID") {
        return;
    }
    if let Err(e) = deviceinfo::remove(&device_info_path(conf, container_id, d)) {
        tracing::warn!("{}", e.msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delegate::NetworkConfig;
    use crate::error::code;
    use serde_json::json;

    fn conf(dir: &Path) -> MultusConf {
        MultusConf::parse(
            json!({
                "name": "m", "cniVersion": "1.0.0", "delegates": [],
                "podResourcesSocket": dir.join("kubelet.sock"),
                "kubeletCheckpointFile": dir.join("checkpoint"),
                "deviceInfoDir": dir.join("devinfo"),
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn delegate(name: &str, ifname: &str, primary: bool) -> Delegate {
        Delegate {
            config: NetworkConfig::from_value(&json!({"cniVersion":"1.0.0","name":"n","type":"host-device"})).unwrap(),
            name: name.into(),
            ifname: ifname.into(),
            primary,
            capability_args: Default::default(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn kth_attachment_gets_kth_device_and_too_few_fail() {
        let dir = tempfile::tempdir().unwrap();
        let c = conf(dir.path());
        std::fs::write(
            dir.path().join("checkpoint"),
            r#"{"Data":{"PodDeviceEntries":[{"PodUID":"u","ResourceName":"r/a","DeviceIDs":{"0":["d2","d1"]}}]}}"#,
        )
        .unwrap();
        let pod = PodInfo { namespace: "ns".into(), name: "p".into(), uid: "u".into(), ..Default::default() };
        let mut ds = vec![
            delegate("prim", "eth0", true),
            delegate("ns/a", "net1", false),
            delegate("ns/b", "net2", false),
            delegate("ns/a", "net3", false),
        ];
        let res = [None, Some("r/a".to_string()), None, Some("r/a".to_string())];
        let got = attach(&c, None, Some(&pod), "cid", &mut ds, &res, true).await.unwrap();
        assert_eq!(got[1], Some(("r/a".into(), "d1".into())));
        assert_eq!(got[3], Some(("r/a".into(), "d2".into())));
        assert_eq!(ds[1].capability_args["deviceID"], "d1");
        assert_eq!(ds[3].capability_args["deviceID"], "d2");
        assert_eq!(
            ds[1].capability_args[DEVICE_INFO_CAPABILITY],
            dir.path().join("devinfo/cni/ns-a-cid_net1").display().to_string()
        );
        assert_eq!(ds[1].config.value()["deviceID"], "d1");
        assert!(ds[2].capability_args.is_empty());

        let mut three =
            vec![delegate("ns/a", "net1", false), delegate("ns/a", "net2", false), delegate("ns/a", "net3", false)];
        let res = [Some("r/a".to_string()), Some("r/a".to_string()), Some("r/a".to_string())];
        let e = attach(&c, None, Some(&pod), "cid", &mut three, &res, true).await.unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("allocated 2 (d1, d2)") && e.msg.contains("3 attachments"), "{}", e.msg);

        // Nothing named: no lookup at all (no socket, no checkpoint needed).
        std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
        let mut plain = vec![delegate("ns/b", "net1", false)];
        attach(&c, None, Some(&pod), "cid", &mut plain, &[None], true).await.unwrap();
        let e = attach(&c, None, Some(&pod), "cid", &mut plain, &[Some("r/a".into())], true).await.unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert!(e.msg.contains("podResourcesSocket") && e.msg.contains("kubeletCheckpointFile"), "{}", e.msg);
        // A cache-less DEL still deletes, without a device.
        let got = attach(&c, None, Some(&pod), "cid", &mut plain, &[Some("r/a".into())], false).await.unwrap();
        assert_eq!(got, vec![None]);
    }

    #[test]
    fn bounded_reads_refuse_fifos_symlinks_and_huge_files() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read_bounded(&fifo, 10, "k").is_err());
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 11]).unwrap();
        assert!(read_bounded(&big, 10, "someKey").unwrap_err().to_string().contains("someKey"));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&big, &link).unwrap();
        assert!(read_bounded(&link, 100, "k").is_err());
        assert_eq!(read_bounded(&big, 11, "k").unwrap().len(), 11);
    }
}
