//! SR-IOV / device-plugin networks through the built `multus` binary: NADs annotated
//! `k8s.v1.cni.cncf.io/resourceName`, a fake kubelet serving the real pod-resources v1
//! gRPC API on a unix socket in the test's temp dir (never the node's), the kubelet
//! checkpoint fallback, recording fake delegates that show the exact config they got, and
//! the real `host-device` plugin moving a dummy link into the pod.
//!
//! Run as root: `cargo build --examples && cargo test --test devices`.

mod support;

use multus::devices::podresources::v1;
use multus::devices::podresources::v1::pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use support::{PodRef, World};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const RESOURCE: &str = "intel.com/sriov_netdevice";

/// What the fake kubelet knows and was asked.
#[derive(Default)]
struct KubeletState {
    pods: Vec<v1::PodResources>,
    /// `Get` answers `Unimplemented` (a kubelet without KubeletPodResourcesGet).
    no_get: bool,
    gets: usize,
    lists: usize,
}

#[derive(Clone, Default)]
struct FakeKubelet(Arc<Mutex<KubeletState>>);

#[tonic::async_trait]
impl PodResourcesLister for FakeKubelet {
    async fn list(
        &self,
        _: tonic::Request<v1::ListPodResourcesRequest>,
    ) -> Result<tonic::Response<v1::ListPodResourcesResponse>, tonic::Status> {
        let mut s = self.0.lock().unwrap();
        s.lists += 1;
        Ok(tonic::Response::new(v1::ListPodResourcesResponse { pod_resources: s.pods.clone() }))
    }

    async fn get_allocatable_resources(
        &self,
        _: tonic::Request<v1::AllocatableResourcesRequest>,
    ) -> Result<tonic::Response<v1::AllocatableResourcesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not used"))
    }

    async fn get(
        &self,
        req: tonic::Request<v1::GetPodResourcesRequest>,
    ) -> Result<tonic::Response<v1::GetPodResourcesResponse>, tonic::Status> {
        let mut s = self.0.lock().unwrap();
        s.gets += 1;
        if s.no_get {
            return Err(tonic::Status::unimplemented("PodResources API Get method disabled"));
        }
        let r = req.into_inner();
        let pod = s.pods.iter().find(|p| p.name == r.pod_name && p.namespace == r.pod_namespace).cloned();
        match pod {
            Some(p) => Ok(tonic::Response::new(v1::GetPodResourcesResponse { pod_resources: Some(p) })),
            None => {
                Err(tonic::Status::unknown(format!("pod {} in namespace {} not found", r.pod_name, r.pod_namespace)))
            }
        }
    }
}

/// The fake kubelet, serving on `socket` from its own thread until dropped.
struct KubeletServer {
    state: FakeKubelet,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeletServer {
    fn start(socket: &Path, state: KubeletState) -> KubeletServer {
        let state = FakeKubelet(Arc::new(Mutex::new(state)));
        let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind the fake kubelet socket");
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = PodResourcesListerServer::new(state.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        KubeletServer { state, stop: Some(stop), thread: Some(thread) }
    }

    fn calls(&self) -> (usize, usize) {
        let s = self.state.0.lock().unwrap();
        (s.gets, s.lists)
    }
}

impl Drop for KubeletServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pod_resources(pod: &PodRef, devices: &[(&str, &[&str])]) -> v1::PodResources {
    v1::PodResources {
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        containers: vec![v1::ContainerResources {
            name: "c".into(),
            devices: devices
                .iter()
                .map(|(r, ids)| v1::ContainerDevices {
                    resource_name: r.to_string(),
                    device_ids: ids.iter().map(|s| s.to_string()).collect(),
                    topology: None,
                })
                .collect(),
            ..Default::default()
        }],
    }
}

/// One world plus the kubelet side: socket/checkpoint/devinfo paths and the fake delegate.
struct Setup {
    w: World,
    record: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let w = World::new();
        std::fs::create_dir_all(w.path("kubelet")).unwrap();
        let fake = PathBuf::from(env!("CARGO_BIN_EXE_multus")).parent().unwrap().join("examples/fake_delegate");
        assert!(fake.exists(), "{} is missing: run `cargo build --examples` first", fake.display());
        std::os::unix::fs::symlink(&fake, w.path("bin/fake_delegate")).unwrap();
        let record = w.path("calls.log");
        Setup { w, record }
    }

    fn socket(&self) -> PathBuf {
        self.w.path("kubelet/kubelet.sock")
    }

    fn conf(&self) -> Value {
        self.w.conf(json!({
            "podResourcesSocket": self.socket(),
            "kubeletCheckpointFile": self.w.path("kubelet/kubelet_internal_checkpoint"),
            "deviceInfoDir": self.w.path("devinfo"),
        }))
    }

    /// A NAD drawing devices from `resource` (when given).
    fn add_nad(&self, name: &str, config: &Value, resource: Option<&str>) {
        let mut annotations = serde_json::Map::new();
        if let Some(r) = resource {
            annotations.insert(multus::devices::RESOURCE_NAME_ANNOTATION.into(), r.into());
        }
        self.w.api.standin.add_nad(json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"config": config.to_string()}
        }));
    }

    /// A recording fake SR-IOV plugin that declares the device capabilities.
    fn fake_sriov(&self, ip: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "type": "fake_delegate",
            "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true},
            "vlan": 100,
            "fake": {"record": self.record, "ip": ip}
        })
    }

    /// The device plugin's device-info file for `id`.
    fn dp_device_info(&self, id: &str) {
        let p = multus::devices::deviceinfo::dp_path(&self.w.path("devinfo"), RESOURCE, id);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(
            &p,
            json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": id, "pf-pci-address": "0000:03:00.0"}})
                .to_string(),
        )
        .unwrap();
    }

    fn cni_device_info(&self, cid: &str, ifname: &str) -> PathBuf {
        multus::devices::deviceinfo::cni_path(&self.w.path("devinfo"), "default/sriov-net", cid, ifname)
    }

    /// `(command, ifname, stdin)` of every recorded call of the fake delegate.
    fn calls(&self) -> Vec<(String, String, Value)> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|v| {
                (
                    v["command"].as_str().unwrap().to_string(),
                    v["ifname"].as_str().unwrap().to_string(),
                    v["stdin"].clone(),
                )
            })
            .collect()
    }
}

#[test]
fn single_conf_gets_its_device_id_device_info_file_and_status() {
    let s = Setup::new();
    let pod = s.w.add_pod("sriovpod", &[(NETWORKS, "sriov-net")]);
    s.add_nad("sriov-net", &s.fake_sriov("10.56.217.2/24"), Some(RESOURCE));
    s.dp_device_info("0000:03:02.3");
    let kubelet = KubeletServer::start(
        &s.socket(),
        KubeletState {
            pods: vec![pod_resources(&pod, &[(RESOURCE, &["0000:03:02.3"]), ("other.com/x", &["x1"])])],
            ..Default::default()
        },
    );

    s.w.cni("ADD", &pod, &s.conf()).ok();
    assert_eq!(kubelet.calls(), (1, 0), "one Get, no List");
    let info_file = s.cni_device_info(&pod.container_id, "net1");
    let calls = s.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (command, ifname, stdin) = &calls[0];
    assert_eq!((command.as_str(), ifname.as_str()), ("ADD", "net1"));
    println!("recorded delegate config: {}", serde_json::to_string_pretty(stdin).unwrap());
    assert_eq!(
        *stdin,
        json!({
            "cniVersion": "1.0.0",
            "name": "sriov-net",
            "type": "fake_delegate",
            "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true},
            "vlan": 100,
            "fake": {"record": s.record, "ip": "10.56.217.2/24"},
            "deviceID": "0000:03:02.3",
            "pciBusID": "0000:03:02.3",
            "runtimeConfig": {"deviceID": "0000:03:02.3", "CNIDeviceInfoFile": info_file.display().to_string()}
        })
    );
    assert_eq!(
        std::fs::read_to_string(&info_file).unwrap(),
        r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.3","pf-pci-address":"0000:03:00.0"}}"#
    );

    let status = s.w.network_status(&pod);
    println!("network-status entry: {}", serde_json::to_string_pretty(&status[1]).unwrap());
    assert_eq!(
        status[1],
        json!({
            "name": "default/sriov-net",
            "interface": "net1",
            "ips": ["10.56.217.2"],
            "mac": "02:fa:4e:00:00:01",
            "dns": {},
            "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:02.3", "pf-pci-address": "0000:03:00.0"}}
        })
    );
    assert!(status[0].get("device-info").is_none());

    // DEL replays the injected config from the cache (no lookup) and removes the file.
    s.w.cni("DEL", &pod, &s.conf()).ok();
    assert_eq!(kubelet.calls(), (1, 0), "DEL needs no lookup");
    let del = &s.calls()[1];
    assert_eq!(del.0, "DEL");
    assert_eq!(del.2["deviceID"], "0000:03:02.3");
    assert_eq!(del.2["runtimeConfig"]["CNIDeviceInfoFile"], info_file.display().to_string());
    assert!(!info_file.exists(), "device-info file removed on DEL");
    s.w.assert_nothing_left();
}

#[test]
fn several_attachments_of_one_resource_get_their_own_devices_in_order_via_list() {
    let s = Setup::new();
    let pod = s.w.add_pod("sriovmulti", &[(NETWORKS, "sriov-net,plain-net,sriov-net")]);
    s.add_nad("sriov-net", &s.fake_sriov("10.56.217.2/24"), Some(RESOURCE));
    s.add_nad("plain-net", &s.fake_sriov("10.56.218.2/24"), None);
    // The kubelet's order is not sorted; Go Multus v4.3 sorts, and so do we.
    let other = s.w.pod_ref("default", "someone-else");
    let kubelet = KubeletServer::start(
        &s.socket(),
        KubeletState {
            pods: vec![
                pod_resources(&other, &[(RESOURCE, &["0000:03:02.0"])]),
                pod_resources(&pod, &[(RESOURCE, &["0000:03:02.5", "0000:03:02.1"])]),
            ],
            no_get: true,
            ..Default::default()
        },
    );
    s.w.cni("ADD", &pod, &s.conf()).ok();
    assert_eq!(kubelet.calls(), (1, 1), "Get refused, then one List");
    let adds: Vec<(String, Option<String>, Option<String>)> = s
        .calls()
        .into_iter()
        .map(|(_, ifname, stdin)| {
            (
                ifname,
                stdin["deviceID"].as_str().map(String::from),
                stdin["runtimeConfig"]["deviceID"].as_str().map(String::from),
            )
        })
        .collect();
    let some = |x: &str| Some(x.to_string());
    assert_eq!(
        adds,
        vec![
            ("net1".into(), some("0000:03:02.1"), some("0000:03:02.1")),
            ("net2".into(), None, None),
            ("net3".into(), some("0000:03:02.5"), some("0000:03:02.5")),
        ]
    );
    s.w.cni("DEL", &pod, &s.conf()).ok();
    s.w.assert_nothing_left();
}

#[test]
fn conflist_every_plugin_gets_the_device() {
    let s = Setup::new();
    let pod = s.w.add_pod("sriovlist", &[(NETWORKS, "sriov-net")]);
    let fake = |ip: &str| {
        let mut p = s.fake_sriov(ip);
        p.as_object_mut().unwrap().remove("cniVersion");
        p
    };
    let list = json!({"cniVersion": "1.0.0", "name": "sriov-net", "plugins": [fake("10.56.217.2/24"), {"type": "fake_delegate", "fake": {"record": s.record}}]});
    s.add_nad("sriov-net", &list, Some(RESOURCE));
    let _kubelet = KubeletServer::start(
        &s.socket(),
        KubeletState { pods: vec![pod_resources(&pod, &[(RESOURCE, &["0000:81:00.2"])])], ..Default::default() },
    );
    s.w.cni("ADD", &pod, &s.conf()).ok();
    let calls = s.calls();
    assert_eq!(calls.len(), 2);
    for (_, _, stdin) in &calls {
        assert_eq!(
            (stdin["deviceID"].as_str(), stdin["pciBusID"].as_str()),
            (Some("0000:81:00.2"), Some("0000:81:00.2"))
        );
    }
    assert_eq!(calls[0].2["runtimeConfig"]["deviceID"], "0000:81:00.2", "declared: in runtimeConfig");
    assert!(calls[1].2.get("runtimeConfig").is_none(), "undeclared: no runtimeConfig");
    s.w.cni("DEL", &pod, &s.conf()).ok();
    s.w.assert_nothing_left();
}

#[test]
fn missing_allocation_fails_before_anything_runs() {
    let s = Setup::new();
    let pod = s.w.add_pod("sriovnone", &[(NETWORKS, "sriov-net,sriov-net")]);
    s.add_nad("sriov-net", &s.fake_sriov("10.56.217.2/24"), Some(RESOURCE));
    let _kubelet = KubeletServer::start(
        &s.socket(),
        KubeletState { pods: vec![pod_resources(&pod, &[(RESOURCE, &["0000:03:02.3"])])], ..Default::default() },
    );
    let (code, msg) = s.w.cni("ADD", &pod, &s.conf()).err();
    assert_eq!(code, 7, "{msg}");
    assert!(msg.contains("no device of resource \"intel.com/sriov_netdevice\""), "{msg}");
    assert!(msg.contains("allocated 1 (0000:03:02.3)") && msg.contains("2 attachments"), "{msg}");
    assert!(msg.contains("net2"), "names the attachment: {msg}");
    assert_eq!(s.calls(), vec![], "no delegate ran");
    assert_eq!(s.w.netns.pod_links(), vec![], "not even the primary network");
    assert_eq!(s.w.cache_files(), Vec::<String>::new());
}

#[test]
fn socket_absent_falls_back_to_the_kubelet_checkpoint() {
    let s = Setup::new();
    let pod = s.w.add_pod("sriovckpt", &[(NETWORKS, "sriov-net")]);
    s.add_nad("sriov-net", &s.fake_sriov("10.56.217.2/24"), Some(RESOURCE));
    std::fs::write(
        s.w.path("kubelet/kubelet_internal_checkpoint"),
        json!({"Data": {"PodDeviceEntries": [
            {"PodUID": "another-uid", "ContainerName": "c", "ResourceName": RESOURCE, "DeviceIDs": {"0": ["0000:03:02.0"]}, "AllocResp": ""},
            {"PodUID": pod.uid, "ContainerName": "c", "ResourceName": RESOURCE, "DeviceIDs": {"0": ["0000:03:02.7"]}, "AllocResp": ""}
        ], "RegisteredDevices": {}}, "Checksum": 0})
        .to_string(),
    )
    .unwrap();
    s.w.cni("ADD", &pod, &s.conf()).ok();
    assert_eq!(s.calls()[0].2["deviceID"], "0000:03:02.7");
    s.w.cni("DEL", &pod, &s.conf()).ok();
    s.w.assert_nothing_left();
}

#[test]
fn socket_and_checkpoint_absent_is_try_again_later() {
    let s = Setup::new();
    let pod = s.w.add_pod("sriovnokubelet", &[(NETWORKS, "sriov-net")]);
    s.add_nad("sriov-net", &s.fake_sriov("10.56.217.2/24"), Some(RESOURCE));
    let (code, msg) = s.w.cni("ADD", &pod, &s.conf()).err();
    assert_eq!(code, 11, "{msg}");
    assert!(msg.contains("podResourcesSocket") && msg.contains(&s.socket().display().to_string()), "{msg}");
    assert_eq!(s.calls(), vec![]);
    // A pod without resourceName networks never looks: no socket, no checkpoint, fine.
    let plain = s.w.add_pod("sriovplain", &[(NETWORKS, "plain-net")]);
    s.add_nad("plain-net", &s.fake_sriov("10.56.218.2/24"), None);
    s.w.cni("ADD", &plain, &s.conf()).ok();
    s.w.cni("DEL", &plain, &s.conf()).ok();
}

/// The real host-device plugin (Debian's) gets the allocated device as `pciBusID` and acts
/// on it: it looks the VF up under /sys/bus/pci/devices. This machine has no SR-IOV VF, so
/// the lookup fails, naming the injected address; the ADD is rolled back and the host link
/// the NAD also names stays where it was.
#[test]
fn host_device_acts_on_the_injected_pci_address() {
    let s = Setup::new();
    let link = format!("sriov{}", &s.w.id);
    let _link = support::HostLink::veth(&link, &format!("{link}p"));
    let pod = s.w.add_pod("sriovhostdev", &[(NETWORKS, "sriov-net")]);
    s.add_nad("sriov-net", &json!({"cniVersion": "0.3.1", "type": "host-device", "device": link}), Some(RESOURCE));
    let _kubelet = KubeletServer::start(
        &s.socket(),
        KubeletState { pods: vec![pod_resources(&pod, &[(RESOURCE, &["0000:ff:1f.7"])])], ..Default::default() },
    );
    let (_, msg) = s.w.cni("ADD", &pod, &s.conf()).err();
    assert!(msg.contains("host-device") && msg.contains("/sys/bus/pci/devices/0000:ff:1f.7"), "{msg}");
    support::ip(&["link", "show", &link]); // still on the host
    s.w.cni("DEL", &pod, &s.conf()).ok();
    s.w.assert_nothing_left();
}

/// `multus doctor`'s check: the fake kubelet answers on the socket a NAD's resource needs.
#[test]
fn doctor_reaches_the_pod_resources_socket() {
    let s = Setup::new();
    let pod = s.w.pod_ref("default", "sriovdoctor");
    let _kubelet = KubeletServer::start(
        &s.socket(),
        KubeletState { pods: vec![pod_resources(&pod, &[(RESOURCE, &["0000:03:02.3"])])], ..Default::default() },
    );
    let conf = multus::config::MultusConf::parse(s.conf().to_string().as_bytes()).unwrap();
    let nad: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "sriov-net", "namespace": "default", "annotations": {multus::devices::RESOURCE_NAME_ANNOTATION: RESOURCE}},
        "spec": {"config": "{}"}
    }))
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let checks = rt.block_on(multus::tools::devices::check_pod_resources(&conf, &[nad]));
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].status, multus::tools::report::Status::Ok, "{checks:?}");
    assert!(checks[0].message.contains("(1 pods)") && checks[0].message.contains(RESOURCE), "{}", checks[0].message);
}

/// A DEL that lost every cache rebuilds the list from the API and asks the kubelet again
/// (as Go Multus): the delegate's DEL still names its device. When the kubelet has
/// released it meanwhile, the attachment is deleted without one rather than left behind.
#[test]
fn cacheless_del_looks_the_device_up_again_or_deletes_without_it() {
    let s = Setup::new();
    let pod = s.w.add_pod("sriovnocache", &[(NETWORKS, "sriov-net")]);
    s.add_nad("sriov-net", &s.fake_sriov("10.56.217.2/24"), Some(RESOURCE));
    let kubelet = KubeletServer::start(
        &s.socket(),
        KubeletState { pods: vec![pod_resources(&pod, &[(RESOURCE, &["0000:03:02.3"])])], ..Default::default() },
    );
    s.w.cni("ADD", &pod, &s.conf()).ok();
    let wipe = || {
        for f in s.w.cache_files() {
            std::fs::remove_file(f).unwrap();
        }
    };
    wipe();
    s.w.cni("DEL", &pod, &s.conf()).ok();
    assert_eq!(kubelet.calls(), (2, 0), "looked up again");
    let del = s.calls().into_iter().find(|c| c.0 == "DEL").expect("the SR-IOV delegate's DEL ran");
    assert_eq!(del.2["deviceID"], "0000:03:02.3");

    // Again, with the kubelet no longer reporting the pod's devices.
    s.w.cni("ADD", &pod, &s.conf()).ok();
    wipe();
    kubelet.state.0.lock().unwrap().pods.clear();
    std::fs::write(&s.record, "").unwrap();
    s.w.cni("DEL", &pod, &s.conf()).ok();
    let del = s.calls().into_iter().find(|c| c.0 == "DEL").expect("deleted without a device");
    assert!(del.2.get("deviceID").is_none(), "{}", del.2);
}

/// A failing attachment rolls the ADD back: no device-info file of any attachment is left.
#[test]
fn failed_add_leaves_no_device_info_files() {
    let s = Setup::new();
    let pod = s.w.add_pod("sriovfail", &[(NETWORKS, "sriov-net,sriov-bad,sriov-net")]);
    s.add_nad("sriov-net", &s.fake_sriov("10.56.217.2/24"), Some(RESOURCE));
    let mut bad = s.fake_sriov("10.56.217.3/24");
    bad["fake"]["add"] = "fail7".into();
    s.add_nad("sriov-bad", &bad, Some(RESOURCE));
    let ids = ["0000:03:02.1", "0000:03:02.2", "0000:03:02.3"];
    for id in ids {
        s.dp_device_info(id);
    }
    let _kubelet = KubeletServer::start(
        &s.socket(),
        KubeletState { pods: vec![pod_resources(&pod, &[(RESOURCE, &ids)])], ..Default::default() },
    );
    let (code, _) = s.w.cni("ADD", &pod, &s.conf()).err();
    assert_eq!(code, 7);
    let left: Vec<_> = std::fs::read_dir(s.w.path("devinfo/cni")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, Vec::<std::ffi::OsString>::new(), "device-info files left");
    s.w.cni("DEL", &pod, &s.conf()).ok();
    s.w.assert_nothing_left();
}
