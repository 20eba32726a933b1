//! The DaemonSet of deployments/multus-daemonset.yml, run from the image `make image`
//! builds, through containerd's CRI as kubelet runs it: its command, args, env and
//! hostPath mounts (mapped under a scratch node root), a service-account token and CA
//! mounted where kubelet projects them, `hostNetwork` and `privileged`. Then a pod on that
//! node gets the quickstart examples' networks through the config it installed, and the
//! container is stopped (SIGTERM, grace period) with and without --cleanup-config-on-exit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::containerd::Containerd;
use crate::cri::{ContainerSpec, PodSpec};
use crate::janitor;
use crate::suite::{self, Suite};
use crate::sys;

/// Where kubelet mounts the projected service-account volume.
const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The bridges the quickstart NADs create on the node.
const QUICKSTART_BRIDGES: [&str; 2] = ["mqs-br0", "mqs-br1"];
/// The token the stand-in requires while the scenario runs (the suite's kubeconfig has it too).
const TOKEN: &str = "cri-e2e";
/// `multus install` writes its files within a second; minutes on two loaded cores.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(90);

/// What the scenario takes from the manifest.
#[derive(Debug)]
pub struct DaemonSet {
    pub name: String,
    pub namespace: String,
    pub host_network: bool,
    pub grace_seconds: i64,
    pub container: ContainerSpec,
    /// (host path, mount path, read-only) of the container's hostPath volumes.
    pub host_mounts: Vec<(String, String, bool)>,
}

/// Reads the DaemonSet (the first one) of a multi-document manifest.
pub fn read_manifest(path: &Path) -> Result<DaemonSet> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).with_context(|| format!("parsing {}", path.display()))?;
    let ds = docs.into_iter().find(|d| d["kind"] == "DaemonSet").context("no DaemonSet in the manifest")?;
    let spec = &ds["spec"]["template"]["spec"];
    let containers = spec["containers"].as_array().context("the DaemonSet has no containers")?;
    ensure!(containers.len() == 1, "expected one container, the manifest has {}", containers.len());
    let c = &containers[0];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
    };
    let mut env = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let value = e["value"].as_str().with_context(|| format!("env {e}: only plain values are supported here"))?;
        env.push((e["name"].as_str().unwrap_or_default().to_owned(), value.to_owned()));
    }
    let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    let mut host_mounts = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or_default();
        let volume = volumes.iter().find(|v| v["name"] == name).with_context(|| format!("no volume {name}"))?;
        let host = volume["hostPath"]["path"].as_str().with_context(|| format!("volume {name} is not a hostPath"))?;
        let mount_path = m["mountPath"].as_str().context("volumeMount without mountPath")?;
        host_mounts.push((host.to_owned(), mount_path.to_owned(), m["readOnly"] == true));
    }
    Ok(DaemonSet {
        name: ds["metadata"]["name"].as_str().unwrap_or("daemonset").to_owned(),
        namespace: ds["metadata"]["namespace"].as_str().unwrap_or("default").to_owned(),
        host_network: spec["hostNetwork"] == true,
        grace_seconds: spec["terminationGracePeriodSeconds"].as_i64().unwrap_or(30),
        container: ContainerSpec {
            name: c["name"].as_str().context("container without a name")?.to_owned(),
            image: c["image"].as_str().context("container without an image")?.to_owned(),
            command: strings(&c["command"]),
            args: strings(&c["args"]),
            env,
            mounts: Vec::new(),
            privileged: c["securityContext"]["privileged"] == true,
            log_path: format!("{}.log", c["name"].as_str().unwrap_or("c")),
            attempt: 0,
        },
        host_mounts,
    })
}

/// A scratch node: `root` stands for the node's `/`.
pub struct Node {
    pub root: PathBuf,
    service_account: PathBuf,
}

impl Node {
    /// The node's /etc/cni/net.d holds the primary network (as its own DaemonSet would
    /// have written it), /opt/cni/bin Debian's plugins.
    pub fn prepare(suite: &Suite) -> Result<Node> {
        let root = suite.work.join("node");
        let (conf, bin) = (root.join("etc/cni/net.d"), root.join("opt/cni/bin"));
        for dir in [&conf, &bin] {
            std::fs::create_dir_all(dir)?;
        }
        let primary = serde_json::to_string_pretty(&suite.primary_network())?;
        std::fs::write(conf.join("10-e2e-pod-network.conflist"), primary)?;
        for entry in std::fs::read_dir(&suite.bin_direct)? {
            let entry = entry?;
            if entry.file_name() != "multus" {
                std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, bin.join(entry.file_name()))?;
            }
        }
        // The projected volume: token, the cluster CA, the namespace.
        let service_account = suite.work.join("serviceaccount");
        std::fs::create_dir_all(&service_account)?;
        std::fs::write(service_account.join("token"), TOKEN)?;
        std::fs::write(service_account.join("namespace"), "kube-system")?;
        // The cluster CA a kubelet projects: the stand-in's own, as its HTTPS certificate
        // is signed by it (the installed kubeconfig must carry it for the plugin to trust
        // the API).
        let ca = suite.standin.ca_pem().context("the stand-in serves HTTPS with its own CA")?;
        std::fs::write(service_account.join("ca.crt"), ca)?;
        Ok(Node { root, service_account })
    }

    pub fn path(&self, host_path: &str) -> PathBuf {
        self.root.join(host_path.trim_start_matches('/'))
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.path("/etc/cni/net.d")
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.path("/opt/cni/bin")
    }

    /// The container as kubelet creates it on this node: hostPath volumes under the node
    /// root, the service account, the API service's env. One arg names a host path, the
    /// kubeconfig as the plugin on the host reads it: it moves under the node root too.
    pub fn container(&self, ds: &DaemonSet, suite: &Suite, extra_args: &[&str], attempt: u32) -> ContainerSpec {
        let mut c = ds.container.clone();
        c.attempt = attempt;
        for (host, mount_path, readonly) in &ds.host_mounts {
            c.mounts.push((self.path(host), mount_path.clone(), *readonly));
        }
        c.mounts.push((self.service_account.clone(), SERVICE_ACCOUNT_MOUNT.to_owned(), true));
        let api = suite.standin.addr();
        c.env.push(("KUBERNETES_SERVICE_HOST".into(), api.ip().to_string()));
        c.env.push(("KUBERNETES_SERVICE_PORT".into(), api.port().to_string()));
        const HOST_PATH_ARG: &str = "--multus-kubeconfig-file-host=";
        for arg in &mut c.args {
            if let Some(path) = arg.strip_prefix(HOST_PATH_ARG) {
                *arg = format!("{HOST_PATH_ARG}{}", self.path(path).display());
            }
        }
        c.args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        c
    }

    /// The Multus config the installer wrote (`.conf` or `.conflist`, after the primary's version).
    pub fn multus_config(&self) -> Option<PathBuf> {
        ["00-multus.conf", "00-multus.conflist"].into_iter().map(|f| self.conf_dir().join(f)).find(|p| p.is_file())
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.conf_dir().join("multus.d/multus.kubeconfig")
    }
}

/// What one run of the DaemonSet's container showed.
pub struct Findings {
    pub installed: Vec<String>,
    pub left_after_stop: Vec<String>,
    pub pod_interfaces: Vec<String>,
}

/// Runs the DaemonSet's container on `node`; with `networked_pod`, a quickstart pod too;
/// then stops the container and reports what stayed on the node.
pub fn run(
    suite: &Suite,
    containerd: &Containerd,
    node: &Node,
    ds: &DaemonSet,
    extra_args: &[&str],
    attempt: u32,
    networked_pod: bool,
) -> Result<Findings> {
    let pod = PodSpec {
        namespace: ds.namespace.clone(),
        name: format!("{}-e2e", ds.name),
        uid: suite::new_uid(),
        host_network: ds.host_network,
        ..Default::default()
    };
    let logs = suite.work.join("logs").join(format!("{}-{attempt}", pod.name));
    std::fs::create_dir_all(&logs)?;
    // The plugin must use the token the installer wrote: the stand-in checks it meanwhile.
    let _token_checked = TokenChecked::new(suite);
    let sandbox = containerd.cri.run_pod_sandbox(&pod, &logs)?;
    let spec = node.container(ds, suite, extra_args, attempt);
    println!("    {} {}: {} {}", spec.name, spec.image, spec.command.join(" "), spec.args.join(" "));
    let container = containerd.cri.start_container(&sandbox, &pod, &logs, &spec)?;
    let log = logs.join(&spec.log_path);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    sys::wait_for("multus install to write the node's files", INSTALL_TIMEOUT, || {
        let state = containerd.cri.container_state(&container)?;
        if state.state != "CONTAINER_RUNNING" {
            bail!("the container is {} (exit {}); its log:\n{}", state.state, state.exit_code, log_text());
        }
        let files = [node.bin_dir().join("multus"), node.kubeconfig()];
        Ok((files.iter().all(|f| f.is_file()) && node.multus_config().is_some()).then_some(()))
    })?;
    let config_path = node.multus_config().context("no Multus config")?;
    let config: Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
    let multus = if config["type"] == "multus" { config.clone() } else { config["plugins"][0].clone() };
    ensure!(multus["type"] == "multus", "{}: not a Multus config: {config}", config_path.display());
    ensure!(
        multus["kubeconfig"] == json!(node.kubeconfig()),
        "{}: kubeconfig {} (want {})",
        config_path.display(),
        multus["kubeconfig"],
        node.kubeconfig().display()
    );
    let kubeconfig = std::fs::read_to_string(node.kubeconfig())?;
    let server = format!("https://{}", suite.standin.addr());
    ensure!(kubeconfig.contains(&server) && kubeconfig.contains(TOKEN), "the kubeconfig lacks {server} or the token");
    ensure!(kubeconfig.contains("certificate-authority-data"), "the kubeconfig has no CA");
    let version = sys::run(&node.bin_dir().join("multus").to_string_lossy(), &["-version"])?;
    ensure!(version.starts_with("multus-rs"), "the installed binary says {version:?}");
    let installed = vec![
        format!("opt/cni/bin/multus ({})", version.trim()),
        config_path.strip_prefix(&node.root).unwrap_or(&config_path).display().to_string(),
        "etc/cni/net.d/multus.d/multus.kubeconfig".to_owned(),
    ];

    let pod_interfaces = if networked_pod { quickstart_pod(suite, containerd)? } else { Vec::new() };

    containerd.cri.stop_container(&container, ds.grace_seconds)?;
    let state = containerd.cri.container_state(&container)?;
    ensure!(
        state.state == "CONTAINER_EXITED" && state.exit_code == 0,
        "after StopContainer: {} exit {}; log:\n{}",
        state.state,
        state.exit_code,
        log_text()
    );
    let mut left_after_stop = Vec::new();
    for path in
        [Some(node.bin_dir().join("multus")), Some(node.kubeconfig()), node.multus_config()].into_iter().flatten()
    {
        if path.exists() {
            left_after_stop.push(path.strip_prefix(&node.root).unwrap_or(&path).display().to_string());
        }
    }
    containerd.cri.stop_pod_sandbox(&sandbox)?;
    containerd.cri.remove_pod_sandbox(&sandbox)?;
    Ok(Findings { installed, left_after_stop, pod_interfaces })
}

/// examples/quickstart's pod-json.yaml on the node: eth0 from the primary, net1 and net2
/// from the quickstart NADs, as `network-status` says; then its teardown leaves nothing.
fn quickstart_pod(suite: &Suite, containerd: &Containerd) -> Result<Vec<String>> {
    let _bridges = janitor::defer("quickstart bridges", || {
        for bridge in QUICKSTART_BRIDGES {
            sys::delete_link(bridge);
        }
    });
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
    suite.standin.load_manifests(&examples).with_context(|| format!("loading {}", examples.display()))?;
    let manifest = suite.standin.pod("default", "quickstart-json").context("pod-json.yaml has no quickstart-json")?;
    let annotations = manifest["metadata"]["annotations"]
        .as_object()
        .map(|a| a.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default();
    let pod = PodSpec {
        namespace: "default".into(),
        name: "quickstart-json".into(),
        uid: manifest["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
        annotations,
        ..Default::default()
    };
    let logs = suite.work.join("logs").join(&pod.name);
    std::fs::create_dir_all(&logs)?;
    // containerd reloads its CNI config on the conf dir's change; until then a pod gets
    // only the primary network. Kubelet would retry; so do we, a few times.
    let (id, netns) = sys::wait_for("a pod sandbox networked through the installed config", INSTALL_TIMEOUT, || {
        let id = containerd.cri.run_pod_sandbox(&pod, &logs)?;
        let netns = containerd.cri.sandbox_netns(&id)?;
        if sys::links_in(&netns)?.iter().any(|l| l.name == "net1") {
            return Ok(Some((id, netns)));
        }
        containerd.cri.stop_pod_sandbox(&id)?;
        containerd.cri.remove_pod_sandbox(&id)?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(None)
    })?;
    let links = sys::links_in(&netns)?;
    let find = |name: &str| links.iter().find(|l| l.name == name).with_context(|| format!("no {name}: {links:?}"));
    let (eth0, net1, net2) = (find("eth0")?, find("net1")?, find("net2")?);
    ensure!(net1.addresses == ["10.78.0.10/24"], "net1: {:?}", net1.addresses);
    ensure!(net1.mac == "0a:58:0a:4e:00:0a", "net1 MAC {}", net1.mac);
    ensure!(net2.addresses.iter().any(|a| a.starts_with("10.77.0.")), "net2: {:?}", net2.addresses);
    ensure!(eth0.addresses.iter().any(|a| a.starts_with("10.200.0.")), "eth0: {:?}", eth0.addresses);
    let status = suite::network_status(&suite.standin.pod("default", &pod.name).context("the pod vanished")?)?;
    let names: Vec<String> = ["eth0", "net1", "net2"]
        .iter()
        .map(|i| format!("{i}={}", status.get(*i).map_or(&Value::Null, |e| &e["name"])))
        .collect();
    ensure!(status.len() == 3, "network-status: {status:?}");
    ensure!(status["net1"]["name"] == "default/quickstart-static", "network-status net1: {}", status["net1"]);
    ensure!(status["net2"]["name"] == "default/quickstart-bridge", "network-status net2: {}", status["net2"]);
    let shown = links
        .iter()
        .filter(|l| l.name != "lo")
        .map(|l| format!("{} {} {}", l.name, l.addresses.join(","), l.mac))
        .collect::<Vec<_>>();
    println!("    network-status: {}", names.join(" "));
    containerd.cri.stop_pod_sandbox(&id)?;
    containerd.cri.remove_pod_sandbox(&id)?;
    ensure!(!netns.exists(), "the pod's netns {} stayed", netns.display());
    for dir in ["/var/lib/cni/networks/quickstart-bridge", "/var/lib/cni/multus"] {
        let mut left = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.to_string_lossy().contains(&id) || std::fs::read_to_string(&path).is_ok_and(|t| t.contains(&id)) {
                left.push(path.display().to_string());
            }
        }
        ensure!(left.is_empty(), "left behind by {id}: {left:?}");
    }
    Ok(shown)
}

/// Makes the stand-in require [`TOKEN`] until dropped.
struct TokenChecked<'a>(&'a Suite);

impl<'a> TokenChecked<'a> {
    fn new(suite: &'a Suite) -> TokenChecked<'a> {
        suite.standin.require_token(Some(TOKEN));
        TokenChecked(suite)
    }
}

impl Drop for TokenChecked<'_> {
    fn drop(&mut self) {
        self.0.standin.require_token(None);
    }
}
