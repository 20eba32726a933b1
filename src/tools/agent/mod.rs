//! `multus agent`: the node agent. It prepares what the plugin can use and is never in
//! the ADD path: the plugin reads its NAD mirror when the heartbeat is fresh and asks
//! the API otherwise, and leaves its metrics records in a bounded spool whether or not
//! the agent runs.
//!
//! Three tasks on one current-thread tokio runtime of its own (separate from the
//! plugin's): the NAD mirror (`mirror.rs`), the spool drain, and the metrics server
//! (`metrics.rs`). Also run in-process by `multus install --nad-mirror-dir`.

pub mod doctor;
pub mod metrics;
pub mod mirror;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the spool is drained between scrapes (each scrape also drains it). Often:
/// every plugin invocation lists the spool to hold `metricsSpoolMaxRecords`, so the
/// records left waiting are paid for by every ADD (500 of them: +0.26 ms per ADD,
/// measured), while a drain that finds nothing is one empty directory read.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// A spool temp file older than this belongs to a killed plugin.
const STALE_TEMP: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Options {
    /// Kubeconfig the agent uses (needs list/watch on network-attachment-definitions);
    /// without it, the in-cluster service account.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Directory of the NAD mirror (the plugin's `nadMirrorDir`).
    #[arg(long, value_name = "DIR")]
    pub nad_mirror_dir: PathBuf,
    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9091); none when absent.
    #[arg(long, value_name = "ADDR")]
    pub metrics_bind_address: Option<String>,
    /// The plugin's `metricsSpoolDir`, drained into the metrics.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
}

/// What the agent's tasks share.
pub struct Agent {
    pub metrics: metrics::Metrics,
    spool_dir: Option<PathBuf>,
    /// One drain at a time (a scrape and the timer may coincide).
    draining: std::sync::Mutex<()>,
}

impl Agent {
    pub fn new(spool_dir: Option<PathBuf>) -> Agent {
        Agent { metrics: metrics::Metrics::new(), spool_dir, draining: std::sync::Mutex::new(()) }
    }

    /// Count and remove every record waiting in the spool.
    pub fn drain_spool(&self) {
        let Some(dir) = &self.spool_dir else { return };
        let _one = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        drain(dir, &self.metrics);
    }
}

fn drain(dir: &Path, metrics: &metrics::Metrics) {
    let Ok(names) = crate::spool::records(dir) else { return };
    for name in names {
        let path = dir.join(&name);
        match crate::spool::read(&path) {
            Some(record) => metrics.observe(&record),
            None => {
                metrics.spool_unreadable.inc();
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    // Temp files of plugins killed between create and rename.
    for entry in std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok) {
        let name = entry.file_name();
        let old = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
        if name.to_string_lossy().starts_with('.') && old.is_some_and(|age| age > STALE_TEMP) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A Kubernetes client from a kubeconfig file.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let Some(kubeconfig) = kubeconfig else {
        let cfg = kube::Config::incluster().context("no --kubeconfig and no in-cluster environment")?;
        return kube::Client::try_from(cfg).context("building the Kubernetes client");
    };
    let kc = Kubeconfig::read_from(kubeconfig).with_context(|| format!("reading {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("the kubeconfig {}", kubeconfig.display()))?;
    kube::Client::try_from(cfg).context("building the Kubernetes client")
}

/// Run the agent until one of its tasks fails for good (the mirror task never does).
pub async fn run(opts: Options) -> anyhow::Result<()> {
    crate::fsutil::create_private_dir(&opts.nad_mirror_dir)
        .with_context(|| format!("creating {}", opts.nad_mirror_dir.display()))?;
    if let Some(spool) = &opts.spool_dir {
        crate::fsutil::create_private_dir(spool).with_context(|| format!("creating {}", spool.display()))?;
    }
    let agent = Arc::new(Agent::new(opts.spool_dir.clone()));
    if let Some(addr) = &opts.metrics_bind_address {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--metrics-bind-address {addr}"))?;
        tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(metrics::serve(listener, Arc::clone(&agent)));
    }
    if opts.spool_dir.is_some() {
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DRAIN_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                agent.drain_spool();
            }
        });
    }
    let client = client(opts.kubeconfig.as_deref()).await?;
    mirror::run(client, &opts.nad_mirror_dir, agent).await;
    Ok(())
}

/// `multus agent`: its own current-thread runtime.
pub fn run_blocking(opts: Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(opts))
}

/// For `multus install --nad-mirror-dir`: the agent on a thread of its own, so the
/// installer's loop and the agent never wait for each other.
pub fn spawn(opts: Options) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("multus-agent".into()).spawn(move || {
        if let Err(e) = run_blocking(opts) {
            tracing::error!("multus agent: {e:#}");
            eprintln!("multus agent: {e:#}");
        }
    })
}
