//! containerd 1.6 run as the node runs it, but with its own root, state, sockets and
//! CNI directories under the suite's work dir.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cri::Cri;
use crate::janitor::{self, Guard};
use crate::sys;

/// containerd serves in < 1 s idle; much longer on two loaded cores.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Where one containerd keeps everything (shared by its successive instances, so an
/// image imported once stays imported).
#[derive(Debug, Clone)]
pub struct Dirs {
    pub base: PathBuf,
}

impl Dirs {
    pub fn socket(&self) -> PathBuf {
        self.base.join("containerd.sock")
    }

    fn runc_root(&self) -> PathBuf {
        self.base.join("runc")
    }

    /// The config of one instance: CRI with our sandbox image and CNI directories.
    pub fn config(&self, sandbox_image: &str, cni_bin: &Path, cni_conf: &Path) -> String {
        let base = self.base.display();
        let socket = self.socket();
        let (socket, runc_root) = (socket.display(), self.runc_root());
        let (runc_root, cni_bin, cni_conf) = (runc_root.display(), cni_bin.display(), cni_conf.display());
        format!(
            r#"version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  Root = "{runc_root}"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni_conf}"
  max_conf_num = 1
"#
        )
    }
}

/// A running containerd. Dropping it removes every sandbox and stops it.
pub struct Containerd {
    pub cri: Cri,
    pub log: PathBuf,
    dirs: Dirs,
    _guard: Guard,
}

impl Containerd {
    /// Starts containerd with `config` (written to `<base>/<name>.toml`) and waits until
    /// CRI answers with both the runtime and the network ready.
    pub fn start(dirs: &Dirs, name: &str, config: &str) -> Result<Containerd> {
        std::fs::create_dir_all(&dirs.base)?;
        let config_path = dirs.base.join(format!("{name}.toml"));
        std::fs::write(&config_path, config)?;
        let log = dirs.base.join(format!("{name}.log"));
        let socket = dirs.socket();
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .arg("--log-level")
            .arg("info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::options().append(true).open(&log)?)
            // Its own process group: a ^C reaches us, and we stop it in order.
            .process_group(0)
            .spawn()
            .context("cannot start containerd (Debian's containerd package)")?;
        let child = Arc::new(Mutex::new(child));
        let guard = {
            let (dirs, child) = (dirs.clone(), Arc::clone(&child));
            janitor::defer(format!("containerd {name}"), move || shut_down(&dirs, &child))
        };
        let cri = Cri::connect(&socket)?;
        let started = Instant::now();
        let tail = || log_tail(&log);
        sys::wait_for("containerd's CRI to serve with the network ready", START_TIMEOUT, || {
            if let Some(status) = lock(&child).try_wait()? {
                bail!("containerd exited ({status})");
            }
            if !socket.exists() {
                return Ok(None);
            }
            let (runtime, network, why) = cri.readiness()?;
            if runtime && network { Ok(Some(())) } else { bail!("RuntimeReady={runtime} NetworkReady={network} {why}") }
        })
        .with_context(|| format!("containerd log:\n{}", tail()))?;
        let version = cri.version()?;
        println!("  {version} ready in {:.2} s ({name})", started.elapsed().as_secs_f64());
        Ok(Containerd { cri, log, dirs: dirs.clone(), _guard: guard })
    }

    /// `ctr -n k8s.io images import ARCHIVE`, then checks that CRI sees `image`.
    pub fn import(&self, archive: &Path, image: &str) -> Result<()> {
        let address = self.dirs.socket();
        sys::run_command(
            Command::new("ctr").arg("--address").arg(&address).args(["-n", "k8s.io", "images", "import"]).arg(archive),
        )?;
        if !self.cri.has_image(image)? {
            bail!("after ctr images import, CRI does not know {image}");
        }
        Ok(())
    }

    /// Stops and removes every sandbox (what a failed scenario left), so that the next
    /// scenario's leak checks see only its own.
    pub fn remove_all_sandboxes(&self) {
        remove_sandboxes(&self.cri);
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

fn remove_sandboxes(cri: &Cri) {
    for id in cri.list_pod_sandboxes().unwrap_or_default() {
        if let Err(e) = cri.stop_pod_sandbox(&id).and_then(|()| cri.remove_pod_sandbox(&id)) {
            eprintln!("cri-e2e: cleanup: sandbox {id}: {e:#}");
        }
    }
}

fn lock(child: &Mutex<Child>) -> std::sync::MutexGuard<'_, Child> {
    child.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes every sandbox through CRI, stops containerd, and kills what a crash left.
fn shut_down(dirs: &Dirs, child: &Mutex<Child>) {
    let mut child = lock(child);
    if matches!(child.try_wait(), Ok(None))
        && let Ok(cri) = Cri::connect(&dirs.socket())
    {
        remove_sandboxes(&cri);
    }
    if matches!(child.try_wait(), Ok(None)) {
        // Not reaped yet, so the pid is still ours.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    // Containers whose sandbox could not be removed: runc knows them, in our root.
    let runc_root = dirs.runc_root().join("k8s.io");
    if let Ok(list) = sys::run("runc", &["--root", &runc_root.to_string_lossy(), "list", "-q"]) {
        for id in list.lines().filter(|l| !l.is_empty()) {
            eprintln!("cri-e2e: cleanup: runc delete -f {id}");
            sys::run_quietly("runc", &["--root", &runc_root.to_string_lossy(), "delete", "-f", id]);
        }
    }
    // Shims of our containerd carry its socket path on their command line.
    for pid in sys::pids_with_cmdline(&dirs.socket().to_string_lossy()) {
        sys::kill(pid);
    }
}
