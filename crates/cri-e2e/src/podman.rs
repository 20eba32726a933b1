//! podman 4.3 with its CNI backend: a network whose first (only) plugin is our binary.
//! podman passes `K8S_POD_NAME` but no namespace, so the plugin runs in static mode:
//! its `delegates` only, no API call.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::janitor::{self, Guard};
use crate::record::Call;
use crate::suite::{self, Suite};
use crate::sys;

const NETWORK: &str = "e2e-podnet";
const CONTAINER: &str = "ce2e-podman";

/// podman with its own storage, runtime dirs and network config dir under the work dir.
pub struct Podman {
    dir: PathBuf,
    _guard: Guard,
}

impl Podman {
    pub fn setup(suite: &Suite) -> Result<Podman> {
        let dir = suite.work.join("podman");
        let net_dir = dir.join("net.d");
        let rootfs = dir.join("rootfs");
        for d in [&net_dir, &rootfs.join("bin"), &dir.join("tmp")] {
            std::fs::create_dir_all(d)?;
        }
        let busybox = Path::new("/bin/busybox");
        ensure!(busybox.exists(), "missing /bin/busybox (Debian's busybox-static)");
        std::fs::copy(busybox, rootfs.join("bin/busybox"))?;
        for applet in ["sh", "sleep", "ip"] {
            symlink("busybox", rootfs.join("bin").join(applet))?;
        }
        let d = dir.display();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
tmp_dir = "{d}/tmp"

[network]
network_backend = "cni"
network_config_dir = "{net}"
cni_plugin_dirs = ["{bin}"]
"#,
                net = net_dir.display(),
                bin = suite.bin.display()
            ),
        )?;
        std::fs::write(
            dir.join("storage.conf"),
            format!("[storage]\ndriver = \"vfs\"\nrunroot = \"{d}/runroot\"\ngraphroot = \"{d}/graphroot\"\n"),
        )?;
        let network = network_config(suite, &dir);
        std::fs::write(net_dir.join(format!("{NETWORK}.conflist")), serde_json::to_string_pretty(&network)?)?;
        let guard = {
            let dir = dir.clone();
            janitor::defer("podman containers", move || {
                let _ = podman_in(&dir, &["rm", "--force", "--all", "--time", "0"]);
            })
        };
        Ok(Podman { dir, _guard: guard })
    }

    pub fn run(&self, args: &[&str]) -> Result<String> {
        podman_in(&self.dir, args)
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

fn podman_in(dir: &Path, args: &[&str]) -> Result<String> {
    sys::run_command(
        Command::new("podman")
            .env("CONTAINERS_CONF", dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
            .args(args),
    )
}

/// Our plugin with two static delegates: a bridge (eth0) and, when the kernel has
/// them, a macvlan (net1).
fn network_config(suite: &Suite, dir: &Path) -> Value {
    let mut delegates = vec![json!({
        "cniVersion": "0.4.0", "name": "e2e-podman-bridge",
        "plugins": [{"type": "bridge", "bridge": suite::PODMAN_BRIDGE, "isGateway": true,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": suite::PODMAN_SUBNET}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": suite.ipam}}]
    })];
    if suite.macvlan {
        delegates.push(json!({
            "cniVersion": "0.4.0", "name": "e2e-podman-macvlan", "type": "macvlan", "master": suite::PARENT,
            "mode": "bridge",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": suite::PODMAN_NET1_SUBNET}]], "dataDir": suite.ipam}
        }));
    }
    json!({
        "cniVersion": "0.4.0",
        "name": NETWORK,
        "plugins": [{
            "type": "multus",
            "kubeconfig": suite.kubeconfig,
            "cniDir": suite.multus_cache,
            "binDir": suite.bin_direct,
            "logLevel": "verbose",
            "logFile": dir.join("multus.log"),
            "logToStderr": false,
            "delegates": delegates
        }]
    })
}

/// What the scenario found out about static mode, for the report.
pub struct Findings {
    pub cni_args: String,
    pub api_requests: usize,
    pub interfaces: Vec<String>,
    /// `CNI_IFNAME` of the ADD of each `podman network connect`.
    pub reconnect_ifnames: Vec<String>,
}

/// A container on our network gets its interfaces; disconnect/connect cycles and the
/// removal leave nothing behind.
pub fn scenario(suite: &Suite) -> Result<Findings> {
    let podman = Podman::setup(suite)?;
    let networks = podman.run(&["network", "ls", "--format", "{{.Name}}"])?;
    ensure!(
        networks.lines().any(|n| n == NETWORK),
        "podman does not list {NETWORK} (it drops networks whose plugins it cannot find): {networks}"
    );
    suite.standin.clear_requests();
    let rootfs = podman.rootfs();
    let id = podman
        .run(&[
            "run",
            "--detach",
            "--name",
            CONTAINER,
            "--network",
            NETWORK,
            "--rootfs",
            &rootfs.to_string_lossy(),
            "/bin/sleep",
            "600",
        ])?
        .trim()
        .to_owned();
    ensure!(!id.is_empty(), "podman run printed no container id");
    let netns =
        PathBuf::from(podman.run(&["inspect", "--format", "{{.NetworkSettings.SandboxKey}}", CONTAINER])?.trim());
    ensure!(netns.exists(), "podman's SandboxKey {} does not exist", netns.display());

    let interfaces = check_attached(suite, &podman, &id, &netns)?;
    let add = last_call(suite, &id, "ADD")?;
    let cni_args = add.var("CNI_ARGS").to_owned();
    ensure!(add.cni_arg("K8S_POD_NAMESPACE").is_none(), "podman now passes a namespace: {cni_args}");
    // VERSION calls carry no container id: look at what came just before the ADD.
    let calls = crate::record::calls(&suite.calls)?;
    let add_at = calls.iter().position(|c| c.id == add.id).context("the ADD vanished")?;
    ensure!(
        add_at > 0 && calls[add_at - 1].command() == "VERSION" && calls[add_at - 1].rc == 0,
        "podman made no (successful) VERSION call before ADD"
    );

    let mut reconnect_ifnames = Vec::new();
    for cycle in 1..=2 {
        let during = |what: &str| format!("cycle {cycle}: {what}");
        let del = one_new_call(suite, &id, "DEL", || podman.run(&["network", "disconnect", NETWORK, CONTAINER]))
            .with_context(|| during("network disconnect"))?;
        ensure!(del.rc == 0, "{}: DEL failed: {}", during("network disconnect"), del.describe());
        let links: Vec<String> = sys::links_in(&netns)?.into_iter().map(|l| l.name).collect();
        ensure!(links == ["lo"], "{}: the container still has {links:?}", during("network disconnect"));
        suite.assert_nothing_left(&id, None).with_context(|| during("network disconnect"))?;
        let add = one_new_call(suite, &id, "ADD", || podman.run(&["network", "connect", NETWORK, CONTAINER]))
            .with_context(|| during("network connect"))?;
        reconnect_ifnames.push(add.var("CNI_IFNAME").to_owned());
        check_attached(suite, &podman, &id, &netns).with_context(|| during("network connect"))?;
    }

    let del = one_new_call(suite, &id, "DEL", || podman.run(&["rm", "--force", "--time", "0", CONTAINER]))
        .context("podman rm")?;
    ensure!(del.rc == 0, "DEL at podman rm failed: {}", del.describe());
    suite.assert_nothing_left(&id, Some(&netns))?;
    let api_requests = suite.standin.requests().len();
    ensure!(api_requests == 0, "static mode made {api_requests} API request(s)");
    let failed: Vec<String> = suite.calls_for(&id)?.iter().filter(|c| c.rc != 0).map(Call::describe).collect();
    if !failed.is_empty() {
        bail!("failed plugin calls:\n{}", failed.join("\n"));
    }
    Ok(Findings { cni_args, api_requests, interfaces, reconnect_ifnames })
}

/// The container's interfaces match the master's result podman reports.
fn check_attached(suite: &Suite, podman: &Podman, id: &str, netns: &Path) -> Result<Vec<String>> {
    let add = last_call(suite, id, "ADD")?;
    ensure!(add.rc == 0, "ADD failed: {}", add.describe());
    let ifname = add.var("CNI_IFNAME").to_owned();
    let links = sys::links_in(netns)?;
    let master = links.iter().find(|l| l.name == ifname).with_context(|| format!("no {ifname}: {links:?}"))?;
    let ip = master
        .addresses
        .iter()
        .find(|a| a.starts_with("10.203.0."))
        .with_context(|| format!("{ifname} has no address in {}: {master:?}", suite::PODMAN_SUBNET))?;
    let mut names = vec![format!("{ifname} {ip}")];
    if suite.macvlan {
        let net1 = links.iter().find(|l| l.name == "net1").with_context(|| format!("no net1: {links:?}"))?;
        let ip = net1.addresses.iter().find(|a| a.starts_with("10.204.0.")).context("net1 has no 10.204.0.x")?;
        names.push(format!("net1 {ip}"));
    }
    let podman_view = podman.run(&["inspect", "--format", "{{json .NetworkSettings.Networks}}", id])?;
    let networks: Value = serde_json::from_str(&podman_view).context("podman inspect")?;
    let podman_ip = networks[NETWORK]["IPAddress"].as_str().unwrap_or_default();
    ensure!(ip.split('/').next() == Some(podman_ip), "podman reports {podman_ip}, the netns has {ip}");
    Ok(names)
}

/// Runs `operation` and returns the one `command` call it caused for container `id`.
fn one_new_call(suite: &Suite, id: &str, command: &str, operation: impl FnOnce() -> Result<String>) -> Result<Call> {
    let before = suite.calls_for(id)?.len();
    operation()?;
    let new: Vec<Call> = suite.calls_for(id)?.into_iter().skip(before).filter(|c| c.command() == command).collect();
    ensure!(new.len() == 1, "expected one {command}, got {}", new.len());
    Ok(new.into_iter().next().expect("one"))
}

fn last_call(suite: &Suite, id: &str, command: &str) -> Result<Call> {
    suite
        .calls_for(id)?
        .into_iter()
        .rev()
        .find(|c| c.command() == command)
        .with_context(|| format!("no {command} recorded for {id}"))
}
