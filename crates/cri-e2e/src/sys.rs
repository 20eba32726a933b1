//! Processes, links and network namespaces, through the same tools an operator uses.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// How long any helper command may take (iptables and podman are slow under load).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `program args…`; stdout on success, an error with stderr otherwise.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    run_command(Command::new(program).args(args))
}

/// Runs `command` with [`COMMAND_TIMEOUT`] (then it is killed): stdout on success.
pub fn run_command(command: &mut Command) -> Result<String> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    // Drain both pipes on threads so a chatty command never blocks on a full pipe.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = sender.send(String::from_utf8_lossy(&buf).into_owned());
        });
        receiver
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A daemon the command left behind (podman's conmon) may keep a pipe open: do not
    // wait for its end forever.
    let collect = |r: std::sync::mpsc::Receiver<String>| r.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    if !status.success() {
        bail!("{shown} failed ({status}): {}", stderr.trim());
    }
    Ok(stdout)
}

/// Runs a command whose failure does not matter (cleanup of what may not exist).
pub fn run_quietly(program: &str, args: &[&str]) -> bool {
    run(program, args).is_ok()
}

/// Polls `probe` every 50 ms until it yields a value or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match probe() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            let why = last_error.map(|e| format!(": last error: {e:#}")).unwrap_or_default();
            bail!("timed out after {timeout:?} waiting for {what}{why}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One network interface as `ip -j addr` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub mac: String,
    /// `address/prefix`, IPv4 and IPv6 (link-local excluded).
    pub addresses: Vec<String>,
    pub master: Option<String>,
    pub up: bool,
}

/// Parses `ip -j addr show` output.
pub fn parse_links(json: &str) -> Result<Vec<Link>> {
    let links: Vec<Value> = serde_json::from_str(json).context("ip -j addr: not JSON")?;
    Ok(links
        .iter()
        .map(|l| Link {
            name: l["ifname"].as_str().unwrap_or_default().to_owned(),
            mac: l["address"].as_str().unwrap_or_default().to_owned(),
            addresses: l["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["scope"] != "link")
                .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"].as_u64()?)))
                .collect(),
            master: l["master"].as_str().map(str::to_owned),
            up: l["flags"].as_array().is_some_and(|f| f.iter().any(|f| f == "UP")),
        })
        .collect())
}

/// The links inside the network namespace mounted at `netns`.
pub fn links_in(netns: &Path) -> Result<Vec<Link>> {
    let net = format!("--net={}", netns.display());
    parse_links(&run("nsenter", &[&net, "ip", "-j", "addr", "show"])?)
}

/// The links of the host (this process' namespace).
pub fn host_links() -> Result<Vec<Link>> {
    parse_links(&run("ip", &["-j", "addr", "show"])?)
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Deletes a host link if it exists.
pub fn delete_link(name: &str) {
    if link_exists(name) {
        run_quietly("ip", &["link", "del", name]);
    }
}

/// The names of `/var/run/netns`.
pub fn netns_names() -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

/// A TCP listener on `0.0.0.0:port` inside the network namespace at `netns`.
/// A socket stays in the namespace it was created in, so a short-lived thread
/// enters the namespace, binds, and exits; the listener works from any thread.
pub fn listen_in_netns(netns: &Path, port: u16) -> Result<TcpListener> {
    let netns: PathBuf = netns.to_owned();
    std::thread::spawn(move || -> Result<TcpListener> {
        let target = std::fs::File::open(&netns).with_context(|| format!("open {}", netns.display()))?;
        nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(TcpListener::bind(("0.0.0.0", port))?)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the netns thread panicked"))?
}

/// The primary IPv4 address of the host (the source of its default route), if any.
pub fn host_ipv4() -> Option<String> {
    let out = run("ip", &["-j", "route", "get", "1.1.1.1"]).ok()?;
    let routes: Vec<Value> = serde_json::from_str(&out).ok()?;
    routes.first()?["prefsrc"].as_str().map(str::to_owned)
}

/// Unmounts (lazily) every mount point under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Directories containerd, podman, runc, libcni and the tuning plugin create on first
/// use (cgroup parents, socket and cache dirs), children before parents.
fn runtime_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let cgroup = Path::new("/sys/fs/cgroup");
    let mut roots = vec![cgroup.to_owned()];
    if let Ok(entries) = std::fs::read_dir(cgroup) {
        roots.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for root in roots {
        for sub in ["libpod_parent/conmon", "libpod_parent", "k8s.io"] {
            dirs.push(root.join(sub));
        }
    }
    for dir in ["/run/containerd/s", "/run/containerd", "/run/runc", "/var/lib/cni/results", "/var/lib/cni"] {
        dirs.push(PathBuf::from(dir));
    }
    dirs.extend(["/run/cni/tuning", "/run/cni"].map(PathBuf::from));
    dirs
}

/// The [`runtime_dirs`] that do not exist yet: the suite removes them at the end
/// (if empty: `rmdir` never removes anything anyone still uses).
pub fn absent_runtime_dirs() -> Vec<PathBuf> {
    runtime_dirs().into_iter().filter(|d| !d.exists()).collect()
}

pub fn remove_empty_dirs(dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Pids of processes whose command line contains `needle`, except this one.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(proc) = std::fs::read_dir("/proc") else { return Vec::new() };
    proc.filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
        })
        .collect()
}

/// SIGKILLs a process by pid (one this suite started, directly or through containerd).
pub fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json() {
        let json = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"address":"00:00:00:00:00:00",
          "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
          {"ifindex":3,"ifname":"eth0","flags":["BROADCAST","UP","LOWER_UP"],"master":"cni0","address":"0a:58:0a:c8:00:02",
          "addr_info":[{"family":"inet","local":"10.200.0.2","prefixlen":24,"scope":"global"},
                       {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]},
          {"ifindex":4,"ifname":"net1","flags":["BROADCAST"],"address":"aa:bb:cc:dd:ee:ff","addr_info":[]}]"#;
        let links = parse_links(json).unwrap();
        assert_eq!(links.len(), 3);
        assert_eq!(links[1].addresses, ["10.200.0.2/24"]);
        assert_eq!(links[1].master.as_deref(), Some("cni0"));
        assert!(links[1].up && !links[2].up);
        assert_eq!(links[2].mac, "aa:bb:cc:dd:ee:ff");
    }

    #[test]
    fn wait_for_reports_the_last_error() {
        let err = wait_for::<()>("nothing", Duration::from_millis(120), || bail!("still broken")).unwrap_err();
        assert!(format!("{err:#}").contains("still broken"), "{err:#}");
        let mut n = 0;
        assert_eq!(
            wait_for("a count", Duration::from_secs(5), || {
                n += 1;
                Ok((n == 3).then_some(n))
            })
            .unwrap(),
            3
        );
    }
}
