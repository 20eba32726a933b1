//! What `multus doctor` and `multus validate` check about device-plugin networks.

use crate::config::MultusConf;
use crate::devices::RESOURCE_NAME_ANNOTATION;
use crate::tools::report::Check;
use kube::api::DynamicObject;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// How long the doctor waits for the kubelet.
const PROBE_WAIT: Duration = Duration::from_secs(3);

/// The hint for a node where the plugin cannot learn devices.
const MOUNT_HINT: &str = "the kubelet serves /var/lib/kubelet/pod-resources/kubelet.sock (podResourcesSocket); in a \
     containerised setup mount /var/lib/kubelet/pod-resources and /var/run/k8s.cni.cncf.io/devinfo from the host \
     (deployments/multus-daemonset.yml does)";

/// `multus doctor`: when some NAD names a `resourceName`, is the kubelet's pod-resources
/// API reachable (or at least its checkpoint there)? Nothing to say otherwise.
pub async fn check_pod_resources(conf: &MultusConf, nads: &[DynamicObject]) -> Vec<Check> {
    let resources: BTreeSet<String> = nads.iter().filter_map(crate::devices::resource_name).collect();
    if resources.is_empty() {
        return Vec::new();
    }
    let check = "kubelet pod-resources";
    let used = format!(
        "{} NAD(s) draw devices from {}",
        nads.iter().filter(|n| crate::devices::resource_name(n).is_some()).count(),
        resources.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    let socket = Path::new(&conf.pod_resources_socket);
    let checkpoint = Path::new(&conf.kubelet_checkpoint_file);
    if crate::devices::is_socket(socket) {
        return vec![match crate::devices::podresources::probe(socket, PROBE_WAIT).await {
            Ok(pods) => Check::ok(check, format!("{} answers ({pods} pods); {used}", socket.display())),
            Err(e) => Check::fail(
                check,
                format!("{}; {used}, and their pods cannot get their devices", e.msg),
                "is the kubelet running? `systemctl status kubelet`; the socket is recreated when it restarts",
            ),
        }];
    }
    if checkpoint.is_file() {
        return vec![Check::warn(
            check,
            format!(
                "{} is not a socket here: the kubelet checkpoint {} is used instead; {used}",
                socket.display(),
                checkpoint.display()
            ),
            MOUNT_HINT,
        )];
    }
    vec![Check::fail(
        check,
        format!(
            "neither {} nor the kubelet checkpoint {} is here; {used}, and their pods fail with code 11",
            socket.display(),
            checkpoint.display()
        ),
        MOUNT_HINT,
    )]
}

/// A device-plugin resource name: `<vendor domain>/<name>` (an extended resource).
fn valid_resource_name(r: &str) -> bool {
    let Some((domain, name)) = r.split_once('/') else { return false };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    domain.len() <= 253 && domain.split('.').all(label_ok) && name_ok
}

/// `multus validate`: the NAD's `k8s.v1.cni.cncf.io/resourceName` annotation, if any.
pub fn check_resource_name(label: &str, doc: &Value) -> Vec<Check> {
    let Some(v) = doc.pointer("/metadata/annotations").and_then(|a| a.get(RESOURCE_NAME_ANNOTATION)) else {
        return Vec::new();
    };
    let Some(r) = v.as_str() else {
        return vec![Check::fail(
            label,
            format!("{RESOURCE_NAME_ANNOTATION} is {v}, not a string"),
            "quote it: annotation values are strings",
        )];
    };
    let r = r.trim();
    if !valid_resource_name(r) {
        return vec![Check::fail(
            label,
            format!("{RESOURCE_NAME_ANNOTATION} {r:?} is no device-plugin resource name"),
            "use the name the device plugin registers, <vendor domain>/<name>, e.g. intel.com/sriov_netdevice",
        )];
    }
    vec![Check::ok(
        label,
        format!("draws a device from {r} per attachment: pods selecting it must request {r} once per attachment"),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::report::Status;
    use serde_json::json;

    #[test]
    fn resource_name_annotation() {
        let doc = |v: Value| json!({"metadata": {"annotations": {RESOURCE_NAME_ANNOTATION: v}}});
        let status = |v: Value| check_resource_name("NAD x", &doc(v))[0].status;
        assert_eq!(status(json!("intel.com/sriov_netdevice")), Status::Ok);
        assert_eq!(status(json!("mellanox.com/cx5_sriov_switchdev")), Status::Ok);
        for bad in [json!("sriov"), json!("intel.com/"), json!("/x"), json!("Intel.com/x"), json!("a/b/c"), json!(3)] {
            assert_eq!(status(bad.clone()), Status::Fail, "{bad}");
        }
        assert!(check_resource_name("NAD x", &json!({"metadata": {}})).is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn doctor_says_nothing_without_resource_names_and_fails_without_kubelet() {
        let dir = tempfile::tempdir().unwrap();
        let conf = MultusConf::parse(
            json!({"name": "m", "delegates": [], "podResourcesSocket": dir.path().join("s"),
                   "kubeletCheckpointFile": dir.path().join("c")})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let nad = |ann: Value| -> DynamicObject {
            serde_json::from_value(json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": "n", "namespace": "d", "annotations": ann}, "spec": {"config": "{}"}}))
            .unwrap()
        };
        assert!(check_pod_resources(&conf, &[nad(json!({}))]).await.is_empty());
        let sriov = [nad(json!({RESOURCE_NAME_ANNOTATION: "intel.com/sriov"}))];
        let c = check_pod_resources(&conf, &sriov).await;
        assert_eq!(c[0].status, Status::Fail, "{c:?}");
        std::fs::write(dir.path().join("c"), "{}").unwrap();
        assert_eq!(check_pod_resources(&conf, &sriov).await[0].status, Status::Warn);
    }
}
