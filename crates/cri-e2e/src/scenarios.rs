//! The scenarios driven through containerd's CRI plugin, as kubelet drives it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;

use crate::containerd::Containerd;
use crate::cri::PodSpec;
use crate::record::Call;
use crate::report::Skip;
use crate::suite::{self, Suite};
use crate::sys::{self, Link};

/// The macvlan attachment's address and MAC (from the annotation: static IPAM + tuning).
const NET1_IP: &str = "10.201.0.10";
const NET1_MAC: &str = "0a:58:0a:c9:00:0a";

/// Two extra networks in the annotation's JSON form: net1 (macvlan with a static IP and
/// a MAC) and net2 (a second bridge with host-local).
pub fn two_networks() -> String {
    json!([
        {"name": suite::NAD_MACVLAN, "ips": [format!("{NET1_IP}/24")], "mac": NET1_MAC},
        {"name": suite::NAD_BRIDGE_NAME}
    ])
    .to_string()
}

/// A running pod sandbox.
pub struct Sandbox {
    pub id: String,
    pub netns: PathBuf,
    pub pod: PodSpec,
}

/// Builds the pod and registers it with the stand-in.
pub fn pod(suite: &Suite, name: &str, networks: Option<&str>, ports: Vec<(i32, i32)>) -> PodSpec {
    let annotations: HashMap<String, String> =
        networks.map(|n| HashMap::from([(suite::NETWORKS_ANNOTATION.to_owned(), n.to_owned())])).unwrap_or_default();
    let pod = PodSpec {
        namespace: "default".into(),
        name: name.into(),
        uid: suite::new_uid(),
        annotations,
        ports,
        host_network: false,
    };
    suite.add_pod(&pod.name, &pod.uid, &pod.annotations);
    pod
}

pub fn run_sandbox(suite: &Suite, containerd: &Containerd, pod: PodSpec) -> Result<Sandbox> {
    let logs = suite.work.join("logs").join(&pod.name);
    std::fs::create_dir_all(&logs)?;
    let id = containerd.cri.run_pod_sandbox(&pod, &logs)?;
    let netns = containerd.cri.sandbox_netns(&id)?;
    Ok(Sandbox { id, netns, pod })
}

/// The one ADD of a sandbox, which must have succeeded.
fn the_add(suite: &Suite, id: &str) -> Result<Call> {
    let adds: Vec<Call> = suite.calls_for(id)?.into_iter().filter(|c| c.command() == "ADD").collect();
    ensure!(adds.len() == 1, "expected one ADD for {id}, got {}", adds.len());
    let add = adds.into_iter().next().expect("one");
    ensure!(add.rc == 0, "ADD failed: {}", add.describe());
    let (asked, printed) = (&add.config()["cniVersion"], &add.output()["cniVersion"]);
    ensure!(asked == printed, "the caller speaks cniVersion {asked}, the plugin printed a {printed} result");
    Ok(add)
}

fn link<'a>(links: &'a [Link], name: &str) -> Result<&'a Link> {
    links.iter().find(|l| l.name == name).with_context(|| {
        let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        format!("no {name} in the sandbox (links: {names:?})")
    })
}

fn ipv4_in(link: &Link, prefix: &str) -> Result<String> {
    link.addresses
        .iter()
        .find(|a| a.starts_with(prefix))
        .cloned()
        .with_context(|| format!("{} has no address in {prefix}*: {:?}", link.name, link.addresses))
}

/// eth0, net1 and net2 inside the sandbox, the same in `network-status`, and one
/// AddedInterface event each.
fn check_three_interfaces(suite: &Suite, sandbox: &Sandbox) -> Result<()> {
    let links = sys::links_in(&sandbox.netns)?;
    let (eth0, net1, net2) = (link(&links, "eth0")?, link(&links, "net1")?, link(&links, "net2")?);
    ensure!(links.len() == 4, "expected lo, eth0, net1, net2; got {links:?}");
    ensure!(eth0.up && net1.up && net2.up, "an interface is down: {links:?}");
    let eth0_ip = ipv4_in(eth0, "10.200.0.")?;
    ensure!(net1.addresses == [format!("{NET1_IP}/24")], "net1 addresses: {:?}", net1.addresses);
    ensure!(net1.mac == NET1_MAC, "net1 MAC {} (asked for {NET1_MAC})", net1.mac);
    let net2_ip = ipv4_in(net2, "10.202.0.")?;

    let pod = suite.standin.pod("default", &sandbox.pod.name).context("the pod vanished from the stand-in")?;
    let status = suite::network_status(&pod)?;
    ensure!(status.len() == 3, "network-status should have 3 entries: {status:?}");
    let expect = |ifname: &str, name: &str, cidr: &str, default: bool| -> Result<()> {
        let entry = status.get(ifname).with_context(|| format!("network-status has no {ifname}: {status:?}"))?;
        let ip = cidr.split('/').next().unwrap_or_default();
        ensure!(entry["name"] == name, "network-status {ifname}: name {} (want {name})", entry["name"]);
        ensure!(entry["ips"] == json!([ip]), "network-status {ifname}: ips {} (want [{ip}])", entry["ips"]);
        ensure!(entry["default"] == json!(default) || (!default && entry.get("default").is_none()), "{entry}");
        let mac = links.iter().find(|l| l.name == ifname).map(|l| l.mac.clone()).unwrap_or_default();
        ensure!(entry["mac"] == json!(mac), "network-status {ifname}: mac {} (netns: {mac})", entry["mac"]);
        Ok(())
    };
    expect("eth0", suite::PRIMARY_NETWORK, &eth0_ip, true)?;
    expect("net1", &format!("default/{}", suite::NAD_MACVLAN), &format!("{NET1_IP}/24"), false)?;
    expect("net2", &format!("default/{}", suite::NAD_BRIDGE_NAME), &net2_ip, false)?;

    let events: Vec<String> = suite
        .standin
        .events()
        .iter()
        .filter(|e| {
            // core/v1 Events name the pod in involvedObject, events.k8s.io/v1 in regarding.
            let about = e.pointer("/involvedObject/name").or_else(|| e.pointer("/regarding/name"));
            about == Some(&json!(sandbox.pod.name))
        })
        .filter(|e| e["reason"] == "AddedInterface")
        .map(|e| e["message"].as_str().or(e["note"].as_str()).unwrap_or_default().to_owned())
        .collect();
    for (ifname, cidr) in [("eth0", &eth0_ip), ("net1", &format!("{NET1_IP}/24")), ("net2", &net2_ip)] {
        let want = format!("Add {ifname} [{cidr}]");
        ensure!(events.iter().any(|m| m.starts_with(&want)), "no AddedInterface event {want:?}: {events:?}");
    }
    ensure!(events.len() == 3, "expected 3 AddedInterface events, got {events:?}");
    Ok(())
}

/// GETs of the pod itself (not of its status subresource, not of NADs).
fn pod_gets(suite: &Suite, name: &str) -> usize {
    let path = format!("/api/v1/namespaces/default/pods/{name}");
    suite.standin.requests().iter().filter(|r| r.method == "GET" && r.path == path).count()
}

/// Annotations through CRI with the `io.kubernetes.cri.pod-annotations` capability:
/// eth0 + net1 + net2, status and events, and no pod GET.
pub fn annotations_from_runtime(suite: &Suite, containerd: &Containerd) -> Result<Sandbox> {
    if !suite.macvlan {
        bail!(Skip("the kernel has no macvlan links (net1 is a macvlan)".into()));
    }
    let pod = pod(suite, "annotated", Some(&two_networks()), Vec::new());
    suite.standin.clear_requests();
    let sandbox = run_sandbox(suite, containerd, pod)?;
    let add = the_add(suite, &sandbox.id)?;
    let runtime_config = &add.config()["runtimeConfig"];
    let passed = &runtime_config["io.kubernetes.cri.pod-annotations"][suite::NETWORKS_ANNOTATION];
    ensure!(
        passed == &json!(two_networks()),
        "containerd did not pass the annotation through runtimeConfig: {runtime_config}"
    );
    check_three_interfaces(suite, &sandbox)?;
    let gets = pod_gets(suite, &sandbox.pod.name);
    ensure!(gets == 0, "the plugin made {gets} pod GET(s) although containerd passed the annotations");
    Ok(sandbox)
}

/// The same without the capability: one pod GET.
pub fn annotations_from_api(suite: &Suite, containerd: &Containerd) -> Result<()> {
    if !suite.macvlan {
        bail!(Skip("the kernel has no macvlan links (net1 is a macvlan)".into()));
    }
    let pod = pod(suite, "api-lookup", Some(&two_networks()), Vec::new());
    suite.standin.clear_requests();
    let sandbox = run_sandbox(suite, containerd, pod)?;
    let add = the_add(suite, &sandbox.id)?;
    let runtime_config = &add.config()["runtimeConfig"];
    ensure!(
        runtime_config.get("io.kubernetes.cri.pod-annotations").is_none(),
        "containerd passed pod annotations although the capability is off: {runtime_config}"
    );
    check_three_interfaces(suite, &sandbox)?;
    let gets = pod_gets(suite, &sandbox.pod.name);
    ensure!(gets == 1, "expected exactly one pod GET, got {gets}");
    tear_down(suite, containerd, &sandbox)
}

/// StopPodSandbox (DEL with the netns and prevResult), then RemovePodSandbox (DEL with
/// an empty netns); both succeed and nothing is left.
pub fn stop_and_remove(suite: &Suite, containerd: &Containerd, sandbox: Option<Sandbox>) -> Result<()> {
    let sandbox = match sandbox {
        Some(s) => s,
        None => run_sandbox(suite, containerd, pod(suite, "teardown", None, Vec::new()))?,
    };
    tear_down(suite, containerd, &sandbox)
}

fn tear_down(suite: &Suite, containerd: &Containerd, sandbox: &Sandbox) -> Result<()> {
    let id = &sandbox.id;
    let before = suite.calls_for(id)?.len();
    suite.standin.clear_requests();
    containerd.cri.stop_pod_sandbox(id)?;
    let stop_requests = api_requests(suite);
    let after_stop = suite.calls_for(id)?;
    let stop_dels: Vec<&Call> = after_stop[before..].iter().filter(|c| c.command() == "DEL").collect();
    ensure!(stop_dels.len() == 1, "StopPodSandbox: expected one DEL, got {}", stop_dels.len());
    let del = stop_dels[0];
    ensure!(del.rc == 0, "DEL at StopPodSandbox failed: {}", del.describe());
    ensure!(del.var("CNI_NETNS") == sandbox.netns.to_string_lossy(), "first DEL: CNI_NETNS={}", del.var("CNI_NETNS"));
    // libcni sends the cached result from cniVersion 0.4.0 on.
    let config = del.config();
    let version = config["cniVersion"].as_str().unwrap_or_default();
    let modern = !version.starts_with("0.") || version == "0.4.0";
    ensure!(
        config.get("prevResult").is_some() == modern,
        "first DEL (cniVersion {version}): prevResult {}",
        if modern { "missing" } else { "unexpected" }
    );
    ensure!(!sandbox.netns.exists(), "StopPodSandbox left the netns {}", sandbox.netns.display());

    suite.standin.clear_requests();
    containerd.cri.remove_pod_sandbox(id)?;
    println!(
        "    API requests: DEL at StopPodSandbox: {stop_requests}; DEL at RemovePodSandbox: {}",
        api_requests(suite)
    );
    let after_remove = suite.calls_for(id)?;
    let remove_dels: Vec<&Call> = after_remove[after_stop.len()..].iter().filter(|c| c.command() == "DEL").collect();
    ensure!(remove_dels.len() == 1, "RemovePodSandbox: expected one DEL, got {}", remove_dels.len());
    let del = remove_dels[0];
    ensure!(del.rc == 0, "DEL at RemovePodSandbox failed: {}", del.describe());
    ensure!(del.var("CNI_NETNS").is_empty(), "second DEL: CNI_NETNS={:?}", del.var("CNI_NETNS"));
    ensure!(del.config().get("prevResult").is_none(), "second DEL carries a prevResult");
    let others: Vec<&str> = after_remove.iter().map(Call::command).filter(|c| !["ADD", "DEL"].contains(c)).collect();
    ensure!(others.is_empty(), "unexpected calls: {others:?}");
    suite.assert_nothing_left(id, Some(&sandbox.netns))
}

/// The API requests recorded since the last clear, as `N [GET pods/x, ...]`.
fn api_requests(suite: &Suite) -> String {
    let requests = suite.standin.requests();
    let shown: Vec<String> = requests
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.method,
                r.path.rsplit('/').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("/")
            )
        })
        .collect();
    format!("{} {shown:?}", requests.len())
}

/// A free TCP port on the host (bound, then released).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Port mappings from CRI reach the primary chain's `portmap` (containerd's capitalised
/// keys), and connections to the host port reach a listener inside the sandbox.
pub fn port_mapping(suite: &Suite, containerd: &Containerd) -> Result<()> {
    if sys::run("iptables", &["-t", "nat", "-S", "POSTROUTING"]).is_err() {
        bail!(Skip("iptables' nat table is not usable here".into()));
    }
    const CONTAINER_PORT: u16 = 8080;
    let host_port = free_port()?;
    let pod = pod(suite, "ports", None, vec![(i32::from(CONTAINER_PORT), i32::from(host_port))]);
    let sandbox = run_sandbox(suite, containerd, pod)?;
    let add = the_add(suite, &sandbox.id)?;
    let mappings = &add.config()["runtimeConfig"]["portMappings"];
    let want = json!([{"HostPort": host_port, "ContainerPort": CONTAINER_PORT, "Protocol": "tcp", "HostIP": ""}]);
    ensure!(mappings == &want, "containerd passed portMappings {mappings} (expected {want})");
    let nat = sys::run("iptables-save", &["-t", "nat"])?;
    let dnat: Vec<&str> =
        nat.lines().filter(|l| l.contains(&format!("--dport {host_port}")) && l.contains("DNAT")).collect();
    ensure!(!dnat.is_empty(), "portmap installed no DNAT rule for port {host_port}");

    let greeter = Greeter::start(sys::listen_in_netns(&sandbox.netns, CONTAINER_PORT)?, &sandbox.id)?;
    let mut targets = vec!["127.0.0.1".to_owned()];
    targets.extend(sys::host_ipv4());
    for host in &targets {
        let reply = fetch_greeting(host, host_port).with_context(|| format!("connecting to {host}:{host_port}"))?;
        ensure!(reply == format!("hello from {}", sandbox.id), "{host}:{host_port} answered {reply:?}");
    }
    // The listener holds the namespace: close it before the teardown.
    drop(greeter);
    println!(
        "    reached the sandbox through {}",
        targets.iter().map(|t| format!("{t}:{host_port}")).collect::<Vec<_>>().join(" and ")
    );
    tear_down(suite, containerd, &sandbox)?;
    let nat = sys::run("iptables-save", &["-t", "nat"])?;
    ensure!(!nat.contains(&format!("--dport {host_port} ")), "portmap rules for {host_port} survived the DEL");
    Ok(())
}

/// Answers every connection with a greeting, on a thread, until dropped.
struct Greeter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Greeter {
    fn start(listener: TcpListener, id: &str) -> Result<Greeter> {
        listener.set_nonblocking(true)?;
        let greeting = format!("hello from {id}");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.write_all(greeting.as_bytes());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Greeter { stop, thread: Some(thread) })
    }
}

impl Drop for Greeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn fetch_greeting(host: &str, port: u16) -> Result<String> {
    let addr = format!("{host}:{port}").parse()?;
    // DNAT rules apply at once; a retry covers a slow first conntrack entry on a busy box.
    sys::wait_for(&format!("{host}:{port} to answer"), Duration::from_secs(20), || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok((!reply.is_empty()).then_some(reply))
    })
}

/// A NAD whose delegate fails (macvlan on a missing master): RunPodSandbox fails with
/// our message and the sandbox leaves nothing behind.
pub fn failing_network(suite: &Suite, containerd: &Containerd) -> Result<()> {
    let networks = format!("{},{}", suite::NAD_BRIDGE_NAME, suite::NAD_BROKEN);
    let pod = pod(suite, "broken", Some(&networks), Vec::new());
    let netns_before = sys::netns_names();
    let sandboxes_before = containerd.cri.list_pod_sandboxes()?;
    let Err(err) = run_sandbox(suite, containerd, pod) else {
        bail!("RunPodSandbox succeeded although {} cannot be attached", suite::NAD_BROKEN);
    };
    let message = format!("{err:#}");
    // containerd's (libcni's) frame, our context naming the network, macvlan's own message.
    let ours = format!("error adding container to network \"{}\"", suite::NAD_BROKEN);
    for want in [r#"plugin type="multus""#, "failed (add)", &ours, r#"plugin type="macvlan""#, "Link not found"] {
        ensure!(message.contains(want), "RunPodSandbox's error lacks {want:?}: {message}");
    }
    println!("    RunPodSandbox: {message}");
    // The failed sandbox's id is only in the recorder's output.
    let calls = crate::record::calls(&suite.calls)?;
    let failed_add = calls
        .iter()
        .rev()
        .find(|c| c.command() == "ADD" && c.cni_arg("K8S_POD_NAME") == Some("broken"))
        .context("no ADD was recorded for the pod")?;
    ensure!(failed_add.rc != 0, "the plugin's ADD succeeded: {}", failed_add.describe());
    let id = failed_add.container_id().to_owned();
    // containerd tears the network down after a failed setup. The ADD rolled back and
    // removed its cache, so that DEL works from a guessed list: deleting what never
    // existed (the broken network) must succeed, as the spec wants of DEL.
    let cleanup: Vec<&Call> = calls.iter().filter(|c| c.container_id() == id && c.command() == "DEL").collect();
    ensure!(!cleanup.is_empty(), "containerd sent no DEL after the failed ADD");
    for del in &cleanup {
        ensure!(del.rc == 0, "containerd's cleanup DEL after the failed ADD exited {}: {}", del.rc, del.stdout.trim());
    }
    let sandboxes_after = containerd.cri.list_pod_sandboxes()?;
    ensure!(sandboxes_after == sandboxes_before, "sandboxes before {sandboxes_before:?}, after {sandboxes_after:?}");
    let netns_after = sys::netns_names();
    let new: Vec<&String> = netns_after.iter().filter(|n| !netns_before.contains(n)).collect();
    ensure!(new.is_empty(), "network namespaces left: {new:?}");
    suite.assert_nothing_left(&id, None)
}

/// RunPodSandbox and StopPodSandbox+RemovePodSandbox wall times, `runs` times.
pub struct Timing {
    pub label: String,
    pub run: Vec<Duration>,
    pub teardown: Vec<Duration>,
}

pub fn time_sandboxes(
    suite: &Suite,
    containerd: &Containerd,
    label: &str,
    networks: Option<&str>,
    runs: usize,
) -> Result<Timing> {
    let mut timing = Timing { label: label.into(), run: Vec::new(), teardown: Vec::new() };
    // One warm-up run: the first sandbox of a containerd pays for cold caches.
    for i in 0..=runs {
        let slug: String = label.chars().filter(|c| c.is_ascii_alphanumeric() || *c == ' ').collect();
        let pod = pod(suite, &format!("timing-{}-{i}", slug.replace(' ', "-")), networks, Vec::new());
        let logs = suite.work.join("logs").join(&pod.name);
        std::fs::create_dir_all(&logs)?;
        let started = Instant::now();
        let id = containerd.cri.run_pod_sandbox(&pod, &logs)?;
        let ran = started.elapsed();
        let started = Instant::now();
        containerd.cri.stop_pod_sandbox(&id)?;
        containerd.cri.remove_pod_sandbox(&id)?;
        let removed = started.elapsed();
        if i > 0 {
            timing.run.push(ran);
            timing.teardown.push(removed);
        }
    }
    Ok(timing)
}
