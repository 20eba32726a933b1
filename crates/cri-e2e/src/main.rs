//! `make e2e`: multus-rs driven by its real callers.
//!
//! containerd 1.6's CRI plugin (driven over its socket as kubelet drives it) and podman
//! 4.3 (CNI backend) run our `multus` binary with Debian's plugins; the Kubernetes API
//! stand-in serves the NADs and pods. Everything — containerd's root, state and
//! sockets, the CNI dirs, a pause image built from a static C program, the host links —
//! lives under a temporary work dir and is removed at the end, also after a failure,
//! a panic or ^C. The closing line is `N passed, M failed`; the exit code is non-zero
//! when a scenario failed.

mod containerd;
mod cri;
mod daemonset;
mod janitor;
mod oci;
mod podman;
mod record;
mod report;
mod scenarios;
mod suite;
mod sys;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use nix::fcntl::{Flock, FlockArg};

use containerd::Containerd;
use report::Report;
use scenarios::Timing;
use suite::Suite;

/// The sandbox image, as `sandbox_image` names it; it is imported, never pulled.
const PAUSE_IMAGE: &str = "registry.invalid/cri-e2e/pause:1";

#[derive(Debug, Parser)]
#[command(name = "cri-e2e", about = "End-to-end tests of multus-rs through containerd's CRI plugin and podman")]
struct Options {
    /// The multus binary under test.
    #[arg(long, default_value = "target/debug/multus")]
    multus: PathBuf,
    /// Debian's CNI plugins.
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_plugins: PathBuf,
    /// Measured RunPodSandbox calls per configuration (after one warm-up); 0 = none.
    #[arg(long, default_value_t = 5)]
    timing_runs: usize,
    /// Leave podman out.
    #[arg(long)]
    no_podman: bool,
    /// Keep the work dir (configs, recorded plugin calls, logs); everything else goes.
    #[arg(long)]
    keep_work: bool,
    /// The DaemonSet manifest whose container the daemonset scenarios run.
    #[arg(long, default_value = "deployments/multus-daemonset.yml")]
    manifest: PathBuf,
    /// The image archive of `make image` (named as the manifest's image).
    #[arg(long, default_value = "target/multus-image.tar")]
    image: PathBuf,
    /// Leave the DaemonSet scenarios out.
    #[arg(long)]
    no_daemonset: bool,
}

fn main() -> ExitCode {
    let options = Options::parse();
    let mut report = Report::default();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&options, &mut report)));
    janitor::run_all();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => report.fail_all(&["setup"], &format!("{e:#}")),
        Err(_) => report.fail_all(&["setup"], "panicked"),
    }
    report.print_summary();
    if report.count(|o| matches!(o, report::Outcome::Failed(_))) == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn run(options: &Options, report: &mut Report) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("cri-e2e needs root (containerd, podman, network namespaces)");
    }
    let missing: Vec<&str> = ["containerd", "ctr", "runc", "podman", "gcc", "iptables-save", "nsenter"]
        .into_iter()
        .filter(|t| !on_path(t))
        .collect();
    if !missing.is_empty() {
        bail!("missing tools: {} (make e2e installs them from Debian's packages)", missing.join(" "));
    }
    let multus = std::fs::canonicalize(&options.multus)
        .with_context(|| format!("the plugin under test, {} (build it first)", options.multus.display()))?;
    let _lock = lock("/run/cri-e2e.lock")?;
    janitor::clean_up_on_signals()?;
    let work = std::env::temp_dir().join(format!("cri-e2e.{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    println!("== setup: work dir {}, plugin {}", work.display(), multus.display());
    let suite = Suite::setup(work, &multus, &options.cni_plugins, options.keep_work)?;
    if !suite.macvlan {
        println!("  note: the kernel cannot create macvlan links; scenarios with a macvlan attachment skip");
    }
    let archive = suite.work.join("pause.tar");
    let pause = suite.work.join("pause");
    oci::build_pause(&suite.work, &pause)?;
    std::fs::write(&archive, oci::pause_image_archive(&std::fs::read(&pause)?, PAUSE_IMAGE)?)?;
    println!("  pause image: {} bytes, from a static C program", std::fs::metadata(&archive)?.len());

    println!("\n== containerd + multus (cniVersion 1.0.0), with the io.kubernetes.cri.pod-annotations capability");
    let names = ["annotations from the runtime", "stop and remove", "port mapping", "failing network"];
    match start_containerd(&suite, "multus", "00-multus.conf", &suite.multus_conf("1.0.0", true), &suite.bin, &archive)
    {
        Ok(containerd) => {
            // A failed scenario may leave its sandbox: remove it before the next one.
            let annotated = report.scenario(names[0], || scenarios::annotations_from_runtime(&suite, &containerd));
            if annotated.is_none() {
                containerd.remove_all_sandboxes();
            }
            report.scenario(names[1], || scenarios::stop_and_remove(&suite, &containerd, annotated));
            containerd.remove_all_sandboxes();
            report.scenario(names[2], || scenarios::port_mapping(&suite, &containerd));
            containerd.remove_all_sandboxes();
            report.scenario(names[3], || scenarios::failing_network(&suite, &containerd));
        }
        Err(e) => report.fail_all(&names, &format!("containerd: {e:#}")),
    }

    println!("\n== containerd + multus (cniVersion 0.3.1, as stock Multus), without the capability");
    let name = "annotations from the API";
    match start_containerd(
        &suite,
        "multus-api",
        "00-multus.conf",
        &suite.multus_conf("0.3.1", false),
        &suite.bin,
        &archive,
    ) {
        Ok(containerd) => {
            report.scenario(name, || scenarios::annotations_from_api(&suite, &containerd));
        }
        Err(e) => report.fail_all(&[name], &format!("containerd: {e:#}")),
    }

    if !options.no_daemonset {
        daemonset_scenarios(options, &suite, &archive, report);
    }

    let mut timings = Vec::new();
    if options.timing_runs > 0 {
        println!("\n== timings");
        let two = scenarios::two_networks();
        let plain = TimedConfig {
            phase: "bridge",
            file: "10-e2e-pod-network.conflist",
            config: suite.primary_network(),
            pods: vec![("bridge conflist", None)],
        };
        let multus = TimedConfig {
            phase: "multus-timing",
            file: "00-multus.conf",
            config: suite.multus_conf("1.0.0", true),
            pods: vec![("multus, no extra network", None), ("multus, 2 extra networks", Some(&two))],
        };
        for timed in [plain, multus] {
            let started = start_containerd(&suite, timed.phase, timed.file, &timed.config, &suite.bin_direct, &archive);
            report.scenario(&format!("timings: {}", timed.phase), || {
                let containerd = started?;
                for (label, networks) in timed.pods {
                    timings.push(scenarios::time_sandboxes(&suite, &containerd, label, networks, options.timing_runs)?);
                }
                Ok(())
            });
        }
    }

    if !options.no_podman {
        println!("\n== podman (CNI backend), our plugin as the network's plugin");
        if let Some(findings) = report.scenario("podman connect/disconnect", || podman::scenario(&suite)) {
            println!("    podman CNI_ARGS: {}", findings.cni_args);
            println!("    CNI_IFNAME of the ADDs after network connect: {:?}", findings.reconnect_ifnames);
            println!(
                "    static mode: interfaces {:?}, {} API request(s); the networks annotation cannot apply (no namespace)",
                findings.interfaces, findings.api_requests
            );
        }
    }

    print_timings(&timings, options.timing_runs);
    Ok(())
}

/// The manifest's DaemonSet on a scratch node, from the image `make image` built: once
/// as written (then a networked pod, then stop), once with --cleanup-config-on-exit.
fn daemonset_scenarios(options: &Options, suite: &Suite, pause_archive: &Path, report: &mut Report) {
    println!("\n== the DaemonSet of {}, from {}", options.manifest.display(), options.image.display());
    let names = ["daemonset: install, networked pod, stop", "daemonset: --cleanup-config-on-exit"];
    let setup = || -> Result<_> {
        let ds = daemonset::read_manifest(&options.manifest)?;
        let image = std::fs::canonicalize(&options.image)
            .with_context(|| format!("the DaemonSet's image archive {} (make image)", options.image.display()))?;
        let node = daemonset::Node::prepare(suite)?;
        let toml = suite.containerd.config(PAUSE_IMAGE, &node.bin_dir(), &node.conf_dir());
        let containerd = Containerd::start(&suite.containerd, "daemonset", &toml)?;
        if !containerd.cri.has_image(PAUSE_IMAGE)? {
            containerd.import(pause_archive, PAUSE_IMAGE)?;
        }
        containerd
            .import(&image, &ds.container.image)
            .with_context(|| format!("importing {} as the manifest's image {}", image.display(), ds.container.image))?;
        println!("  node root {}; image {} imported", node.root.display(), ds.container.image);
        Ok((ds, node, containerd))
    };
    let (ds, node, containerd) = match setup() {
        Ok(parts) => parts,
        Err(e) => return report.fail_all(&names, &format!("{e:#}")),
    };
    report.scenario(names[0], || {
        let found = daemonset::run(suite, &containerd, &node, &ds, &[], 0, true)?;
        println!("    installed: {}", found.installed.join(", "));
        println!("    quickstart-json: {}", found.pod_interfaces.join(" | "));
        println!("    after StopContainer: {}", found.left_after_stop.join(", "));
        ensure!(found.left_after_stop.len() == 3, "without --cleanup-config-on-exit everything stays");
        Ok(())
    });
    containerd.remove_all_sandboxes();
    report.scenario(names[1], || {
        // A fresh node again, so that the run really writes its config before the stop.
        for path in [node.bin_dir().join("multus"), node.kubeconfig()].into_iter().chain(node.multus_config()) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        let found = daemonset::run(suite, &containerd, &node, &ds, &["--cleanup-config-on-exit"], 1, false)?;
        println!("    installed: {}", found.installed.join(", "));
        println!("    after StopContainer: {}", found.left_after_stop.join(", "));
        ensure!(node.multus_config().is_none(), "the Multus config survived the stop");
        ensure!(found.left_after_stop.len() == 2, "the binary and the kubeconfig stay: {:?}", found.left_after_stop);
        Ok(())
    });
}

/// A CNI config whose RunPodSandbox is timed, and the pods (label, networks annotation).
struct TimedConfig<'a> {
    phase: &'a str,
    file: &'a str,
    config: serde_json::Value,
    pods: Vec<(&'a str, Option<&'a str>)>,
}

/// Writes the phase's CNI conf dir, starts containerd on it and makes sure the pause
/// image is there (imported once; later instances share the root).
fn start_containerd(
    suite: &Suite,
    phase: &str,
    file: &str,
    config: &serde_json::Value,
    bin_dir: &Path,
    archive: &Path,
) -> Result<Containerd> {
    let conf_dir = suite.conf_dir(phase, file, config)?;
    let toml = suite.containerd.config(PAUSE_IMAGE, bin_dir, &conf_dir);
    let containerd = Containerd::start(&suite.containerd, phase, &toml)?;
    if !containerd.cri.has_image(PAUSE_IMAGE)? {
        containerd
            .import(archive, PAUSE_IMAGE)
            .with_context(|| format!("containerd log:\n{}", containerd.log_tail()))?;
    }
    Ok(containerd)
}

fn print_timings(timings: &[Timing], runs: usize) {
    if timings.is_empty() {
        return;
    }
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("\n== RunPodSandbox wall time ({runs} runs each after a warm-up; figures, not asserts)");
    println!("  {:28} {:>10} {:>8} {:>8}   {:>22}", "CNI config", "run median", "min", "max", "stop+remove median");
    for t in timings {
        let (min, max) =
            (t.run.iter().min().copied().unwrap_or_default(), t.run.iter().max().copied().unwrap_or_default());
        println!(
            "  {:28} {:>7.0} ms {:>5.0} ms {:>5.0} ms   {:>19.0} ms",
            t.label,
            ms(median(&t.run)),
            ms(min),
            ms(max),
            ms(median(&t.teardown))
        );
    }
    if let (Some(plain), Some(multus)) = (timings.first(), timings.get(1)) {
        println!(
            "  multus in the chain adds {:+.0} ms to RunPodSandbox (median, same primary network)",
            ms(median(&multus.run)) - ms(median(&plain.run))
        );
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// One suite at a time per machine: the host links and subnets are fixed.
fn lock(path: &str) -> Result<Flock<std::fs::File>> {
    let file = std::fs::File::options().create(true).truncate(false).write(true).open(path)?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| anyhow::anyhow!("another cri-e2e run holds {path}"))
}
