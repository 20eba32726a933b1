//! A small blocking CRI v1 client over containerd's unix socket (what kubelet speaks).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::Value;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Every CRI call gets this long (a RunPodSandbox on two loaded cores takes ~1 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Cri {
    runtime: tokio::runtime::Runtime,
    service: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// What a test asks for when it creates a pod sandbox.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub annotations: HashMap<String, String>,
    /// (container port, host port), TCP.
    pub ports: Vec<(i32, i32)>,
    /// `hostNetwork: true` (and privileged, as a DaemonSet with privileged containers).
    pub host_network: bool,
}

/// A container as kubelet creates it from a pod spec's container.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// (host path, container path, read-only).
    pub mounts: Vec<(PathBuf, String, bool)>,
    pub privileged: bool,
    /// Relative to the sandbox's log directory.
    pub log_path: String,
    /// Kubelet's restart count: a new container of the same name in the same sandbox.
    pub attempt: u32,
}

/// What ContainerStatus says: state name and, once exited, the exit code.
#[derive(Debug, Clone)]
pub struct ContainerState {
    pub state: String,
    pub exit_code: i32,
}

impl Cri {
    /// Connects lazily: the first call dials the socket.
    pub fn connect(socket: &Path) -> Result<Cri> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let socket: PathBuf = socket.to_owned();
        // The URI is a placeholder: the connector always dials the unix socket.
        let endpoint = Endpoint::try_from("http://[::1]:50051")?.timeout(CALL_TIMEOUT);
        let channel = {
            // The channel's worker task lives on our runtime and runs during each call.
            let _entered = runtime.enter();
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
            }))
        };
        Ok(Cri {
            runtime,
            service: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    fn call<T>(&self, what: &str, fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T> {
        self.runtime
            .block_on(fut)
            .map(tonic::Response::into_inner)
            .map_err(|status| anyhow!("CRI {what}: {} (gRPC {:?})", status.message(), status.code()))
    }

    /// The runtime's name and version.
    pub fn version(&self) -> Result<String> {
        let mut client = self.service.clone();
        let r = self.call("Version", client.version(cri::VersionRequest { version: "v1".into() }))?;
        Ok(format!("{} {} (CRI {})", r.runtime_name, r.runtime_version, r.runtime_api_version))
    }

    /// `(RuntimeReady, NetworkReady, message of the network condition)`.
    pub fn readiness(&self) -> Result<(bool, bool, String)> {
        let mut client = self.service.clone();
        let r = self.call("Status", client.status(cri::StatusRequest { verbose: false }))?;
        let conditions = r.status.map(|s| s.conditions).unwrap_or_default();
        let find = |t: &str| conditions.iter().find(|c| c.r#type == t);
        let network = find("NetworkReady");
        Ok((
            find("RuntimeReady").is_some_and(|c| c.status),
            network.is_some_and(|c| c.status),
            network.map(|c| format!("{}: {}", c.reason, c.message)).unwrap_or_default(),
        ))
    }

    /// Whether the image store knows `image`.
    pub fn has_image(&self, image: &str) -> Result<bool> {
        let mut client = self.images.clone();
        let spec = cri::ImageSpec { image: image.into(), ..Default::default() };
        let r = self
            .call("ImageStatus", client.image_status(cri::ImageStatusRequest { image: Some(spec), verbose: false }))?;
        Ok(r.image.is_some())
    }

    pub fn run_pod_sandbox(&self, pod: &PodSpec, log_dir: &Path) -> Result<String> {
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                attempt: 0,
            }),
            // Kubelet leaves it empty on the host's network: no UTS namespace of its own.
            hostname: if pod.host_network { String::new() } else { pod.name.clone() },
            log_directory: log_dir.to_string_lossy().into_owned(),
            port_mappings: pod
                .ports
                .iter()
                .map(|&(container_port, host_port)| cri::PortMapping {
                    protocol: cri::Protocol::Tcp.into(),
                    container_port,
                    host_port,
                    host_ip: String::new(),
                })
                .collect(),
            labels: HashMap::from([("app.kubernetes.io/name".into(), "cri-e2e".into())]),
            annotations: pod.annotations.clone(),
            linux: Some(sandbox_linux_config(pod.host_network)),
            ..Default::default()
        };
        let mut client = self.service.clone();
        let request = cri::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
        Ok(self.call("RunPodSandbox", client.run_pod_sandbox(request))?.pod_sandbox_id)
    }

    /// CreateContainer + StartContainer in the sandbox `pod_id` created from `pod`.
    pub fn start_container(&self, pod_id: &str, pod: &PodSpec, log_dir: &Path, c: &ContainerSpec) -> Result<String> {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt: c.attempt }),
            image: Some(cri::ImageSpec { image: c.image.clone(), ..Default::default() }),
            command: c.command.clone(),
            args: c.args.clone(),
            envs: c.env.iter().map(|(key, value)| cri::KeyValue { key: key.clone(), value: value.clone() }).collect(),
            mounts: c
                .mounts
                .iter()
                .map(|(host, container, readonly)| cri::Mount {
                    host_path: host.to_string_lossy().into_owned(),
                    container_path: container.clone(),
                    readonly: *readonly,
                    ..Default::default()
                })
                .collect(),
            log_path: c.log_path.clone(),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    privileged: c.privileged,
                    namespace_options: Some(namespace_options(pod.host_network)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sandbox_config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                attempt: 0,
            }),
            log_directory: log_dir.to_string_lossy().into_owned(),
            linux: Some(sandbox_linux_config(pod.host_network)),
            ..Default::default()
        };
        let mut client = self.service.clone();
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let id = self.call("CreateContainer", client.create_container(request))?.container_id;
        self.call("StartContainer", client.start_container(cri::StartContainerRequest { container_id: id.clone() }))?;
        Ok(id)
    }

    /// StopContainer with kubelet's grace period (SIGTERM, SIGKILL after `timeout` s).
    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let mut client = self.service.clone();
        let request = cri::StopContainerRequest { container_id: id.into(), timeout };
        self.call("StopContainer", client.stop_container(request))?;
        Ok(())
    }

    pub fn container_state(&self, id: &str) -> Result<ContainerState> {
        let mut client = self.service.clone();
        let request = cri::ContainerStatusRequest { container_id: id.into(), verbose: false };
        let status = self.call("ContainerStatus", client.container_status(request))?.status;
        let status = status.context("ContainerStatus without a status")?;
        let state = cri::ContainerState::try_from(status.state).map_or("unknown", |s| s.as_str_name());
        Ok(ContainerState { state: state.to_owned(), exit_code: status.exit_code })
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut client = self.service.clone();
        self.call("StopPodSandbox", client.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.into() }))?;
        Ok(())
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut client = self.service.clone();
        let request = cri::RemovePodSandboxRequest { pod_sandbox_id: id.into() };
        self.call("RemovePodSandbox", client.remove_pod_sandbox(request))?;
        Ok(())
    }

    /// Every sandbox the runtime knows, ready or not.
    pub fn list_pod_sandboxes(&self) -> Result<Vec<String>> {
        let mut client = self.service.clone();
        let r = self.call("ListPodSandbox", client.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }))?;
        Ok(r.items.into_iter().map(|s| s.id).collect())
    }

    /// The sandbox's network namespace path, from the verbose status: `info["info"]`
    /// (JSON) → `runtimeSpec.linux.namespaces[type=network].path`.
    pub fn sandbox_netns(&self, id: &str) -> Result<PathBuf> {
        let mut client = self.service.clone();
        let request = cri::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true };
        let r = self.call("PodSandboxStatus", client.pod_sandbox_status(request))?;
        let info = r.info.get("info").context("PodSandboxStatus(verbose) has no info[\"info\"]")?;
        netns_from_info(info)
    }
}

fn namespace_options(host_network: bool) -> cri::NamespaceOption {
    let network = if host_network { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod };
    cri::NamespaceOption { network: network.into(), ..Default::default() }
}

fn sandbox_linux_config(host_network: bool) -> cri::LinuxPodSandboxConfig {
    if !host_network {
        return cri::LinuxPodSandboxConfig::default();
    }
    cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(namespace_options(true)),
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// See [`Cri::sandbox_netns`].
pub fn netns_from_info(info: &str) -> Result<PathBuf> {
    let info: Value = serde_json::from_str(info).context("verbose sandbox info is not JSON")?;
    let namespaces = info
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(Value::as_array)
        .context("verbose sandbox info has no runtimeSpec.linux.namespaces")?;
    namespaces
        .iter()
        .find(|ns| ns["type"] == "network")
        .and_then(|ns| ns["path"].as_str())
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .context("the sandbox's runtime spec has no network namespace path")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_path_from_containerd_info() {
        let info = r#"{"pid": 42, "runtimeSpec": {"linux": {"namespaces": [
            {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
            {"type": "network", "path": "/var/run/netns/cni-1b9d2c4e-4e1b-0c5d-2d2b-4b0b0f1b2f3a"}]}}}"#;
        assert_eq!(
            netns_from_info(info).unwrap(),
            PathBuf::from("/var/run/netns/cni-1b9d2c4e-4e1b-0c5d-2d2b-4b0b0f1b2f3a")
        );
    }

    #[test]
    fn host_network_sandbox_has_no_netns() {
        let info = r#"{"runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]}}}"#;
        assert!(netns_from_info(info).is_err());
        assert!(netns_from_info("not json").is_err());
    }
}
