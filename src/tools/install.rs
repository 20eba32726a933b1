//! `multus install`: the DaemonSet's entrypoint (Go Multus' `thin_entrypoint`).
//!
//! On the node, through hostPath mounts, it
//! 1. copies this very executable to `<cni-bin-dir>/multus`;
//! 2. writes `<cni-conf-dir>/multus.d/multus.kubeconfig` from the pod's service account;
//! 3. writes `<cni-conf-dir>/00-multus.conf` (or `.conflist`) wrapping the node's primary
//!    CNI config, or copies a given config file;
//!
//! then keeps 2 and 3 in sync with their sources until SIGTERM/SIGINT. Both are
//! reconciled by content on every tick: a file is rewritten only when what it should
//! hold differs from what it holds. Unlike Go Multus this loop always runs, so rotated
//! service-account tokens reach the plugin (Go's stock DaemonSet never refreshes them:
//! `Unauthorized` after an hour, #852), and fatal errors exit non-zero (Go exits 0).

use crate::cni::Version;
use crate::fsutil;
use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use clap::ArgAction;
use serde_json::{Map, Value};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the host's `/opt/cni/bin` is mounted in the DaemonSet's container.
pub const DEFAULT_CNI_BIN_DIR: &str = "/host/opt/cni/bin";
/// Where the host's `/etc/cni/net.d` is mounted in the DaemonSet's container.
pub const DEFAULT_CNI_CONF_DIR: &str = "/host/etc/cni/net.d";
/// The kubeconfig as the plugin, running on the host, sees it.
pub const DEFAULT_KUBECONFIG_HOST: &str = "/etc/cni/net.d/multus.d/multus.kubeconfig";
pub const DEFAULT_SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The network name of the generated config unless `--override-network-name`.
pub const DEFAULT_NETWORK_NAME: &str = "multus-cni-network";
/// Generated for a primary whose cniVersion is below 1.0.0.
pub const MULTUS_CONF: &str = "00-multus.conf";
/// Generated for a primary whose cniVersion is 1.0.0 or later (Multus as the only plugin).
pub const MULTUS_CONFLIST: &str = "00-multus.conflist";
/// The binary's name in `--cni-bin-dir`: the `type` of the generated config.
pub const BINARY_NAME: &str = "multus";
const KUBECONFIG_DIR: &str = "multus.d";
const KUBECONFIG_FILE: &str = "multus.kubeconfig";

/// The flags of `multus install`. Names follow Go Multus' `thin_entrypoint` (§5.2 of the
/// reference); boolean flags also accept Go's `--flag=true|false` form.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Directory the `multus` binary is copied into (the host's /opt/cni/bin, mounted). Must exist.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CNI_BIN_DIR)]
    pub cni_bin_dir: PathBuf,

    /// Directory the Multus config and multus.d/multus.kubeconfig are written into (the host's
    /// /etc/cni/net.d, mounted). Must exist.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CNI_CONF_DIR)]
    pub cni_conf_dir: PathBuf,

    /// `auto` to generate the config from the node's primary CNI config, or a config file to
    /// copy into --cni-conf-dir under its own name.
    #[arg(long, value_name = "auto|PATH", default_value = "auto")]
    pub multus_conf_file: String,

    /// Directory searched for the primary CNI config (default: --cni-conf-dir).
    #[arg(long, value_name = "DIR")]
    pub multus_autoconfig_dir: Option<PathBuf>,

    /// File name of the primary CNI config in the autoconfig directory, instead of picking the
    /// lexically first non-Multus `.conf`/`.conflist`.
    #[arg(long, value_name = "NAME")]
    pub multus_master_cni_file_name: Option<String>,

    /// The kubeconfig path written into the config: where the plugin, on the host, finds it.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_KUBECONFIG_HOST)]
    pub multus_kubeconfig_file_host: String,

    /// Host directory written as `confDir` (files for NADs with an empty spec.config). Go Multus
    /// wrote this under the misspelt key `cniConf`, which the plugin never read.
    #[arg(long, value_name = "DIR")]
    pub multus_cni_conf_dir: Option<String>,

    /// Expected cniVersion; a primary config with another version is an error.
    #[arg(long, value_name = "VERSION")]
    pub cni_version: Option<String>,

    /// Use --cni-version even when the primary says otherwise (the delegate is rewritten too).
    #[arg(long, hide = true, requires = "cni_version", value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub force_cni_version: bool,

    /// Write `"namespaceIsolation": true`.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = false, action = ArgAction::Set)]
    pub namespace_isolation: bool,

    /// Comma-separated namespaces usable from any namespace under isolation (`globalNamespaces`).
    #[arg(long, value_name = "LIST")]
    pub global_namespaces: Option<String>,

    /// `logLevel` of the plugin: debug, verbose, error or panic (also info, warning, trace).
    #[arg(long, value_name = "LEVEL")]
    pub multus_log_level: Option<String>,

    /// `logFile` of the plugin (a host path).
    #[arg(long, value_name = "PATH")]
    pub multus_log_file: Option<String>,

    /// `logToStderr` of the plugin.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = true, action = ArgAction::Set)]
    pub multus_log_to_stderr: bool,

    /// `readinessindicatorfile`: ADD waits for this host file before running delegates.
    #[arg(long, value_name = "PATH")]
    pub readiness_indicator_file: Option<String>,

    /// `binDir`: a host directory searched for delegate plugins before CNI_PATH.
    #[arg(long, value_name = "DIR")]
    pub additional_bin_dir: Option<String>,

    /// Name the generated network after the primary instead of `multus-cni-network`.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = false, action = ArgAction::Set)]
    pub override_network_name: bool,

    /// On SIGTERM/SIGINT, remove the config file this process wrote.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = false, action = ArgAction::Set)]
    pub cleanup_config_on_exit: bool,

    /// Do not copy the binary into --cni-bin-dir.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = false, action = ArgAction::Set)]
    pub skip_multus_binary_copy: bool,

    /// Stop following the primary (or given) config after the first write. The kubeconfig is
    /// still refreshed when the token or CA rotates.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = false, action = ArgAction::Set)]
    pub skip_config_watch: bool,

    /// Write a kubeconfig with `insecure-skip-tls-verify: true` instead of the CA.
    #[arg(long, hide = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = false, action = ArgAction::Set)]
    pub skip_tls_verify: bool,

    /// `delegateTimeoutSeconds`: deadline for each delegate plugin.
    #[arg(long, value_name = "SECONDS")]
    pub delegate_timeout_seconds: Option<f64>,

    /// `apiTimeoutSeconds`: budget for the Kubernetes API calls of one ADD.
    #[arg(long, value_name = "SECONDS")]
    pub api_timeout_seconds: Option<f64>,

    /// `readinessTimeoutSeconds`: how long ADD waits for the readiness indicator file.
    #[arg(long, value_name = "SECONDS")]
    pub readiness_timeout_seconds: Option<f64>,

    /// `writeLegacyNetworksStatus`: also write the deprecated networks-status annotation.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = false, action = ArgAction::Set)]
    pub write_legacy_networks_status: bool,

    /// Install once and exit instead of watching.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = false, action = ArgAction::Set)]
    pub once: bool,

    /// Where the service account's `token` and `ca.crt` are mounted.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_SERVICE_ACCOUNT_DIR)]
    pub service_account_dir: PathBuf,

    /// Go's path of the binary to copy. Accepted for Go's DaemonSet args and ignored with a
    /// warning: the image's own running executable is what gets copied.
    #[arg(long, value_name = "PATH")]
    pub multus_bin_file: Option<String>,

    /// Go renames the primary config to `<name>.old` after writing the Multus config. Accepted
    /// and ignored with a warning: the primary stays where its own DaemonSet and the watcher
    /// here expect it, and `00-multus.conf` sorts first, so runtimes use Multus anyway.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true",
          default_value_t = false, action = ArgAction::Set)]
    pub rename_conf_file: bool,

    /// How long to wait at start for the primary CNI config to appear (seconds).
    #[arg(long, value_name = "SECONDS", default_value = "300", value_parser = parse_seconds)]
    pub wait_timeout: Duration,

    /// How often sources are compared with what was written (seconds).
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = parse_seconds)]
    pub watch_interval: Duration,

    /// Declare the `io.kubernetes.cri.pod-annotations` capability, so containerd passes the
    /// pod's annotations and ADD needs no pod GET (`=false`: only the primary's capabilities).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_value = "true",
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub pod_annotations_capability: bool,
    /// Run the node agent in-process, mirroring NADs into this directory (a hostPath mounted
    /// at the same path as on the host), and write it into the config as `nadMirrorDir`.
    #[arg(long, value_name = "DIR")]
    pub nad_mirror_dir: Option<PathBuf>,
    /// With --nad-mirror-dir: the plugin's metrics spool (`metricsSpoolDir`), drained by the agent.
    #[arg(long, value_name = "DIR", requires = "nad_mirror_dir")]
    pub metrics_spool_dir: Option<PathBuf>,
    /// With --nad-mirror-dir: serve the agent's Prometheus metrics on this address.
    #[arg(long, value_name = "ADDR", requires = "nad_mirror_dir")]
    pub metrics_bind_address: Option<String>,
    /// `maxNodeApiRequests`: the node-wide cap on the plugin's API requests in flight.
    #[arg(long, value_name = "N")]
    pub max_node_api_requests: Option<u32>,
}

/// `30`, `0.5` or `30s`.
fn parse_seconds(s: &str) -> std::result::Result<Duration, String> {
    let n = s.strip_suffix('s').unwrap_or(s);
    n.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

/// Run the installer until a signal (or once, with `--once`).
pub fn run(opts: Options) -> Result<()> {
    init_logging();
    for warning in ignored_go_flags(&opts) {
        tracing::warn!("{warning}");
    }
    let mut installer = Installer::new(opts)?;
    signals::install()?;
    installer.install()?;
    if !installer.opts.once
        && let Some(dir) = &installer.opts.nad_mirror_dir
    {
        let opts = &installer.opts;
        crate::tools::agent::spawn(crate::tools::agent::Options {
            kubeconfig: None,
            nad_mirror_dir: dir.clone(),
            metrics_bind_address: opts.metrics_bind_address.clone(),
            spool_dir: opts.metrics_spool_dir.clone(),
        })?;
    }
    if !installer.opts.once {
        // Returns at once if a signal came during the installation.
        installer.watch();
        installer.cleanup();
    }
    Ok(())
}

/// Go thin-entrypoint flags that are accepted (an existing DaemonSet's args keep working)
/// but change nothing here, each with the reason.
fn ignored_go_flags(opts: &Options) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(path) = non_empty(&opts.multus_bin_file) {
        warnings.push(format!(
            "--multus-bin-file={path} is ignored: the running executable is what gets copied to --cni-bin-dir"
        ));
    }
    if opts.rename_conf_file {
        warnings.push(
            "--rename-conf-file is ignored: the primary CNI config stays in place (00-multus.conf sorts first)"
                .to_string(),
        );
    }
    warnings
}

/// The installer's own messages go to stderr: the container log.
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(io::stderr)
        .try_init();
}

/// Where the config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// Generated from the node's primary CNI config found in this directory.
    Auto { dir: PathBuf, file_name: Option<String> },
    /// A ready config file, copied as is.
    File(PathBuf),
}

/// What one pass over the config found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synced {
    /// The config file holds what it should.
    InPlace,
    /// Auto mode and no primary config (yet): nothing was written.
    NoPrimary,
}

struct Installer {
    opts: Options,
    source: Source,
    /// `https://host:port` of the API server, as the host reaches it.
    server: String,
    /// The config file this process last wrote or found up to date: what cleanup removes.
    config_path: Option<PathBuf>,
    /// The primary config last used, to log only when it changes.
    primary_path: Option<PathBuf>,
    /// The last error of the watch loop, to log a persisting failure once.
    last_error: Option<String>,
}

impl Installer {
    /// Check every flag and the environment before anything is written.
    fn new(opts: Options) -> Result<Installer> {
        require_dir(&opts.cni_conf_dir, "--cni-conf-dir")?;
        require_dir(&opts.cni_bin_dir, "--cni-bin-dir")?;
        if let Some(level) = non_empty(&opts.multus_log_level) {
            ensure!(
                crate::logging::level(level).is_some(),
                "--multus-log-level: unknown level {level:?} (debug, verbose, error or panic)"
            );
        }
        if let Some(v) = non_empty(&opts.cni_version) {
            Version::of_config(v).map_err(|e| anyhow!("--cni-version: {}", e.msg))?;
        }
        let source = if opts.multus_conf_file == "auto" {
            let dir = opts.multus_autoconfig_dir.clone().unwrap_or_else(|| opts.cni_conf_dir.clone());
            require_dir(&dir, "--multus-autoconfig-dir")?;
            let file_name = non_empty(&opts.multus_master_cni_file_name).map(String::from);
            if let Some(name) = &file_name {
                ensure!(
                    !name.contains('/') && name != "." && name != "..",
                    "--multus-master-cni-file-name must be a file name in {}, not {name:?}",
                    dir.display()
                );
            }
            Source::Auto { dir, file_name }
        } else {
            let path = PathBuf::from(&opts.multus_conf_file);
            ensure!(path.is_file(), "--multus-conf-file {} is not a file", path.display());
            Source::File(path)
        };
        let server = api_server_url(
            std::env::var("KUBERNETES_SERVICE_PROTOCOL").ok().as_deref(),
            std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
            std::env::var("KUBERNETES_SERVICE_PORT").ok().as_deref(),
        )?;
        Ok(Installer { opts, source, server, config_path: None, primary_path: None, last_error: None })
    }

    /// The start-up work: any failure here is fatal.
    fn install(&mut self) -> Result<()> {
        if !self.opts.skip_multus_binary_copy {
            let dest = install_binary(&self.opts.cni_bin_dir)?;
            tracing::info!("installed {}", dest.display());
        }
        self.sync_kubeconfig()?;
        let deadline = Instant::now() + self.opts.wait_timeout;
        // As Go's thin entrypoint: no config (so no pod ADD) before the primary network
        // says it is ready.
        if let Some(file) = self.opts.readiness_indicator_file.clone().filter(|f| !f.is_empty()) {
            tracing::info!("waiting for the readiness indicator file {file}");
            while !Path::new(&file).exists() {
                ensure!(
                    Instant::now() < deadline,
                    "readiness indicator file {file} did not appear within --wait-timeout {:?}",
                    self.opts.wait_timeout
                );
                if !signals::sleep(self.opts.watch_interval.min(deadline.saturating_duration_since(Instant::now()))) {
                    return Ok(());
                }
            }
        }
        loop {
            if self.sync_config()? != Synced::NoPrimary {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.no_primary());
            }
            if !signals::sleep(self.opts.watch_interval.min(deadline.saturating_duration_since(Instant::now()))) {
                return Ok(());
            }
        }
    }

    /// Until a signal: follow the token, the CA and (unless skipped) the config's source.
    fn watch(&mut self) {
        tracing::info!("watching for changes every {:?}", self.opts.watch_interval);
        while signals::sleep(self.opts.watch_interval) {
            let kubeconfig = self.sync_kubeconfig();
            self.report(kubeconfig);
            if !self.opts.skip_config_watch {
                let config = self.sync_config();
                self.report(config.map(|_| ()));
            }
        }
    }

    /// Log a watch-loop failure once while it persists, and when it clears. A transient
    /// failure (a primary config caught half-written) must not take the node down: the
    /// files last written stay in place.
    fn report(&mut self, result: Result<()>) {
        match result {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    tracing::info!("recovered");
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if self.last_error.as_deref() != Some(&msg) {
                    tracing::error!("{msg}");
                    self.last_error = Some(msg);
                }
            }
        }
    }

    fn cleanup(&self) {
        if !self.opts.cleanup_config_on_exit {
            return;
        }
        if let Some(path) = &self.config_path {
            match fsutil::remove_if_exists(path) {
                Ok(()) => tracing::info!("removed {}", path.display()),
                Err(e) => tracing::error!("cannot remove {}: {e}", path.display()),
            }
        }
    }

    fn no_primary(&self) -> anyhow::Error {
        let (dir, wanted) = match &self.source {
            Source::Auto { dir, file_name: Some(name) } => (dir, name.as_str()),
            Source::Auto { dir, file_name: None } => (dir, "a .conf or .conflist that is not Multus'"),
            Source::File(path) => return anyhow!("{} is gone", path.display()),
        };
        anyhow!("no primary CNI config ({wanted}) in {} after {:?}", dir.display(), self.opts.wait_timeout)
    }

    /// Rewrite the kubeconfig when the token, the CA or the server changed.
    fn sync_kubeconfig(&self) -> Result<()> {
        let sa = &self.opts.service_account_dir;
        let token = read_token(&sa.join("token"))?;
        let ca = if self.opts.skip_tls_verify {
            None
        } else {
            let path = sa.join("ca.crt");
            Some(fs::read(&path).with_context(|| format!("cannot read the service account CA {}", path.display()))?)
        };
        let content = render_kubeconfig(&self.server, &token, ca.as_deref());
        // multus.d holds only this token-bearing file, read by the plugin as root: 0700
        // rather than Go's 0755. An existing directory keeps its mode.
        let dir = self.opts.cni_conf_dir.join(KUBECONFIG_DIR);
        fsutil::create_private_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(KUBECONFIG_FILE);
        if write_if_changed(&path, content.as_bytes(), 0o600)? {
            tracing::info!("wrote {}", path.display());
        }
        Ok(())
    }

    fn sync_config(&mut self) -> Result<Synced> {
        match self.source.clone() {
            Source::File(src) => self.copy_config(&src),
            Source::Auto { dir, file_name } => self.generate_config(&dir, file_name.as_deref()),
        }
    }

    fn copy_config(&mut self, src: &Path) -> Result<Synced> {
        let data = fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
        serde_json::from_slice::<Map<String, Value>>(&data)
            .with_context(|| format!("{} is not a JSON object", src.display()))?;
        let name = src.file_name().ok_or_else(|| anyhow!("{} has no file name", src.display()))?;
        self.write_config(&self.opts.cni_conf_dir.join(name), &data)?;
        Ok(Synced::InPlace)
    }

    fn generate_config(&mut self, dir: &Path, file_name: Option<&str>) -> Result<Synced> {
        let Some(primary) = find_primary(dir, file_name)? else {
            if self.primary_path.take().is_some() {
                tracing::warn!("the primary CNI config is gone from {}; keeping the Multus config", dir.display());
            }
            return Ok(Synced::NoPrimary);
        };
        let generated = multus_config(&primary.config, &self.opts)
            .with_context(|| format!("primary CNI config {}", primary.path.display()))?;
        if self.primary_path.as_ref() != Some(&primary.path) {
            tracing::info!("primary CNI config: {}", primary.path.display());
            self.primary_path = Some(primary.path);
        }
        self.write_config(&self.opts.cni_conf_dir.join(generated.file_name), generated.content.as_bytes())?;
        // A primary moving across 1.0.0 switches .conf and .conflist: the stale one would
        // still sort first ("00-multus.conf" < "00-multus.conflist") and win.
        let other = if generated.file_name == MULTUS_CONF { MULTUS_CONFLIST } else { MULTUS_CONF };
        let stale = self.opts.cni_conf_dir.join(other);
        if stale.exists() {
            fsutil::remove_if_exists(&stale).with_context(|| format!("cannot remove {}", stale.display()))?;
            tracing::info!("removed {}", stale.display());
        }
        Ok(Synced::InPlace)
    }

    /// CNI configs may embed credentials of the primary plugin: owner-only, as Go writes them.
    fn write_config(&mut self, dest: &Path, data: &[u8]) -> Result<()> {
        if write_if_changed(dest, data, 0o600)? {
            tracing::info!("wrote {}", dest.display());
        }
        self.config_path = Some(dest.to_path_buf());
        Ok(())
    }
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn require_dir(dir: &Path, flag: &str) -> Result<()> {
    ensure!(dir.is_dir(), "{flag} {} is not a directory", dir.display());
    Ok(())
}

/// Write `data` unless `path` already holds exactly it: no rename churn in a directory
/// runtimes watch, and the mtime says when something really changed.
fn write_if_changed(path: &Path, data: &[u8], mode: u32) -> Result<bool> {
    if fs::read(path).is_ok_and(|current| current == data) {
        return Ok(false);
    }
    fsutil::write_atomic(path, data, mode).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

/// Copy the running executable to `<bin_dir>/multus`, atomically: a runtime executing the
/// old binary meanwhile keeps it, the next exec gets the new one, never a torn file.
fn install_binary(bin_dir: &Path) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let data = fs::read(&exe).with_context(|| format!("cannot read {}", exe.display()))?;
    // `passthru` too (the auxiliary chain's first plugin): the same binary answers as it
    // under that name, as Go's installer copies its own.
    for name in [crate::commands::aux_chain::PASSTHRU, BINARY_NAME] {
        let dest = bin_dir.join(name);
        fsutil::write_atomic(&dest, &data, 0o755).with_context(|| format!("cannot write {}", dest.display()))?;
        // The temp file's mode went through the umask; runtimes only need root to execute
        // it, but 0755 is what every CNI binary has.
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot chmod {}", dest.display()))?;
    }
    Ok(bin_dir.join(BINARY_NAME))
}

// ---------------------------------------------------------------------------------------
// Kubeconfig
// ---------------------------------------------------------------------------------------

/// The API server's URL from the in-cluster environment; an IPv6 address gets brackets.
pub fn api_server_url(protocol: Option<&str>, host: Option<&str>, port: Option<&str>) -> Result<String> {
    let host = host.filter(|h| !h.is_empty()).ok_or_else(|| anyhow!("KUBERNETES_SERVICE_HOST is not set"))?;
    let port = port.filter(|p| !p.is_empty()).ok_or_else(|| anyhow!("KUBERNETES_SERVICE_PORT is not set"))?;
    ensure!(port.parse::<u16>().is_ok(), "KUBERNETES_SERVICE_PORT {port:?} is not a port number");
    let protocol = protocol.filter(|p| !p.is_empty()).unwrap_or("https");
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    Ok(format!("{protocol}://{host}:{port}"))
}

fn read_token(path: &Path) -> Result<String> {
    let raw = fs::read_to_string(path)
        .with_context(|| format!("cannot read the service account token {}", path.display()))?;
    let token = raw.trim();
    ensure!(!token.is_empty(), "the service account token {} is empty", path.display());
    Ok(token.to_string())
}

/// The plugin's kubeconfig, as JSON: a YAML document like any kubeconfig (kubectl and
/// client-go read it), which the plugin parses in a sixth of the time YAML takes, on every
/// invocation (`crate::k8s::kubeconfig`). serde_json quotes every string, so no token or
/// URL content can break the document. `ca` `None` means no TLS verification.
pub fn render_kubeconfig(server: &str, token: &str, ca: Option<&[u8]>) -> String {
    let mut cluster = serde_json::json!({ "server": server });
    match ca {
        Some(ca) => cluster["certificate-authority-data"] = base64::engine::general_purpose::STANDARD.encode(ca).into(),
        None => cluster["insecure-skip-tls-verify"] = true.into(),
    }
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "local", "cluster": cluster }],
        "users": [{ "name": "multus", "user": { "token": token } }],
        "contexts": [{ "name": "multus-context", "context": { "cluster": "local", "user": "multus" } }],
        "current-context": "multus-context",
    });
    format!("{kubeconfig:#}\n")
}

fn quoted(s: &str) -> String {
    Value::from(s).to_string()
}

// ---------------------------------------------------------------------------------------
// The primary CNI config
// ---------------------------------------------------------------------------------------

/// The node's primary CNI config: the pod's eth0, Multus' first delegate.
#[derive(Debug, Clone, PartialEq)]
pub struct Primary {
    pub path: PathBuf,
    pub config: Map<String, Value>,
}

/// Find the primary config in `dir`: `file_name` when given (`None` while it is absent),
/// else the lexically first `*.conf`/`*.conflist` (libcni's and the runtimes' order) that
/// parses as a JSON object and is not a Multus config. The choice is by content, never by
/// file name: Go Multus excluded only names starting with `00-multus.conf` and delegated to
/// itself when its own file was named otherwise (#1130, #1162).
pub fn find_primary(dir: &Path, file_name: Option<&str>) -> Result<Option<Primary>> {
    if let Some(name) = file_name {
        let path = dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        let config = read_config(&path)?;
        ensure!(!is_multus(&config), "{} is a Multus config, not a primary network", path.display());
        return Ok(Some(Primary { path, config }));
    }
    for path in config_files(dir)? {
        match read_config(&path) {
            Ok(config) if !is_multus(&config) => return Ok(Some(Primary { path, config })),
            Ok(_) => tracing::debug!("{}: a Multus config, skipped", path.display()),
            Err(e) => tracing::debug!("{e:#}, skipped"),
        }
    }
    Ok(None)
}

fn config_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("conf" | "conflist")) && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn read_config(path: &Path) -> Result<Map<String, Value>> {
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&data).with_context(|| format!("{} is not a JSON object", path.display()))
}

/// Multus' own config (ours, or Go's), or the thick plugin's shim left over from a migration:
/// delegating to either would loop or fail every pod.
fn is_multus(config: &Map<String, Value>) -> bool {
    let v = Value::Object(config.clone());
    let is_shim = |p: &Value| p.get("type").and_then(Value::as_str) == Some("multus-shim");
    crate::k8s::nad::is_multus_config(&v)
        || is_shim(&v)
        || v.get("plugins").and_then(Value::as_array).is_some_and(|ps| ps.iter().any(is_shim))
}

// ---------------------------------------------------------------------------------------
// The generated Multus config
// ---------------------------------------------------------------------------------------

/// A config file to write into the CNI config directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub file_name: &'static str,
    pub content: String,
}

/// The Multus config wrapping `primary` as its single delegate, with the options as keys.
pub fn multus_config(primary: &Map<String, Value>, opts: &Options) -> Result<Generated> {
    let mut delegate = primary.clone();
    let version = cni_version(&mut delegate, opts)?;
    let name = network_name(primary, opts)?;
    let mut capabilities = capabilities(primary)?;
    if opts.pod_annotations_capability {
        capabilities.insert(crate::k8s::pod::POD_ANNOTATIONS_CAPABILITY.into(), true.into());
    }
    check_plugin_types(primary)?;

    let mut fields: Vec<(&str, Value)> = vec![("type", "multus".into())];
    if !capabilities.is_empty() {
        fields.push(("capabilities", Value::Object(capabilities)));
    }
    fields.extend(option_fields(opts));
    fields.push(("kubeconfig", opts.multus_kubeconfig_file_host.clone().into()));
    // serde_json's map is sorted: the delegate is written with sorted keys, as Go does,
    // so the same primary always gives the same bytes (and no spurious rewrite).
    fields.push(("delegates", Value::Array(vec![Value::Object(delegate)])));

    let mut rendered: Vec<(&str, String)> = fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let head = [("cniVersion", quoted(&version.to_string())), ("name", quoted(&name))];
    let (file_name, top) = if version >= Version::V1_0_0 {
        let plugins = format!("[\n    {}\n  ]", render_object(&rendered, "    "));
        (MULTUS_CONFLIST, head.into_iter().chain([("plugins", plugins)]).collect())
    } else {
        rendered.splice(0..0, head);
        (MULTUS_CONF, rendered)
    };
    Ok(Generated { file_name, content: format!("{}\n", render_object(&top, "")) })
}

/// The keys the flags set, in Go's order. `logToStderr` is always written: explicit is
/// clearer than a default, and the seed's file has it.
fn option_fields(opts: &Options) -> Vec<(&'static str, Value)> {
    let mut fields: Vec<(&str, Value)> = Vec::new();
    if opts.namespace_isolation {
        fields.push(("namespaceIsolation", true.into()));
    }
    let optional = |key, value: &Option<String>| non_empty(value).map(|s| (key, Value::from(s)));
    fields.extend(optional("globalNamespaces", &opts.global_namespaces));
    fields.push(("logToStderr", opts.multus_log_to_stderr.into()));
    let level = opts.multus_log_level.as_ref().map(|l| l.to_ascii_lowercase());
    let paths = [
        optional("logLevel", &level),
        optional("logFile", &opts.multus_log_file),
        optional("binDir", &opts.additional_bin_dir),
        optional("confDir", &opts.multus_cni_conf_dir),
        optional("readinessindicatorfile", &opts.readiness_indicator_file),
    ];
    fields.extend(paths.into_iter().flatten());
    let seconds = [
        ("delegateTimeoutSeconds", opts.delegate_timeout_seconds),
        ("apiTimeoutSeconds", opts.api_timeout_seconds),
        ("readinessTimeoutSeconds", opts.readiness_timeout_seconds),
    ];
    for (key, value) in seconds {
        if let Some(v) = value {
            fields.push((key, v.into()));
        }
    }
    if opts.write_legacy_networks_status {
        fields.push(("writeLegacyNetworksStatus", true.into()));
    }
    let dirs = [("nadMirrorDir", &opts.nad_mirror_dir), ("metricsSpoolDir", &opts.metrics_spool_dir)];
    for (key, dir) in dirs {
        if let Some(dir) = dir {
            fields.push((key, dir.display().to_string().into()));
        }
    }
    if let Some(n) = opts.max_node_api_requests {
        fields.push(("maxNodeApiRequests", n.into()));
    }
    fields
}

/// The primary's cniVersion (a supported version string), checked against `--cni-version`
/// or, with `--force-cni-version`, replaced by it in the delegate too.
fn cni_version(delegate: &mut Map<String, Value>, opts: &Options) -> Result<Version> {
    let wanted = non_empty(&opts.cni_version);
    if let (true, Some(wanted)) = (opts.force_cni_version, wanted) {
        delegate.insert("cniVersion".into(), wanted.into());
    }
    let version = match delegate.get("cniVersion") {
        Some(Value::String(v)) if !v.is_empty() => v.as_str(),
        Some(Value::String(_)) | None => bail!("no cniVersion"),
        Some(other) => bail!("cniVersion must be a string, not {other}"),
    };
    if let Some(wanted) = wanted {
        ensure!(version == wanted, "cniVersion is {version:?} but --cni-version is {wanted:?}");
    }
    Version::of_config(version).map_err(|e| anyhow!("{}", e.msg))
}

fn network_name(primary: &Map<String, Value>, opts: &Options) -> Result<String> {
    if !opts.override_network_name {
        return Ok(DEFAULT_NETWORK_NAME.into());
    }
    match primary.get("name") {
        Some(Value::String(n)) if crate::config::valid_network_name(n) => Ok(n.clone()),
        Some(Value::String(n)) => bail!("name {n:?} is not a valid network name"),
        Some(other) => bail!("name must be a string, not {other}"),
        None => bail!("no name (needed by --override-network-name)"),
    }
}

/// The capabilities Multus must declare so that the runtime sends their runtimeConfig: a
/// single config's own, or those of every plugin of a conflist. A capability any plugin
/// wants is declared (Go let a later plugin's `false` hide an earlier plugin's `true`).
fn capabilities(primary: &Map<String, Value>) -> Result<Map<String, Value>> {
    let mut union = Map::new();
    let mut add = |holder: &Map<String, Value>, at: &str| -> Result<()> {
        let Some(caps) = holder.get("capabilities") else {
            return Ok(());
        };
        let caps = caps.as_object().ok_or_else(|| anyhow!("{at}capabilities must be an object, not {caps}"))?;
        for (key, value) in caps {
            let wanted =
                value.as_bool().ok_or_else(|| anyhow!("{at}capabilities.{key} must be true or false, not {value}"))?;
            let known = union.get(key).and_then(Value::as_bool).unwrap_or(false);
            union.insert(key.clone(), (known || wanted).into());
        }
        Ok(())
    };
    match primary.get("plugins") {
        Some(_) => {
            for (i, plugin) in plugins(primary)?.iter().enumerate() {
                add(plugin, &format!("plugins[{i}]."))?;
            }
        }
        None => add(primary, "")?,
    }
    Ok(union)
}

fn plugins(conflist: &Map<String, Value>) -> Result<Vec<&Map<String, Value>>> {
    let list = conflist.get("plugins").and_then(Value::as_array).ok_or_else(|| anyhow!("plugins must be a list"))?;
    ensure!(!list.is_empty(), "plugins is empty");
    list.iter()
        .enumerate()
        .map(|(i, p)| p.as_object().ok_or_else(|| anyhow!("plugins[{i}] must be an object, not {p}")))
        .collect()
}

/// Every plugin must name its binary, or every pod's ADD would fail later.
fn check_plugin_types(primary: &Map<String, Value>) -> Result<()> {
    let has_type = |p: &Map<String, Value>| p.get("type").and_then(Value::as_str).is_some_and(|t| !t.is_empty());
    if primary.contains_key("plugins") {
        for (i, plugin) in plugins(primary)?.iter().enumerate() {
            ensure!(has_type(plugin), "plugins[{i}] has no type");
        }
    } else {
        ensure!(has_type(primary), "no type (a .conflist without plugins?)");
    }
    Ok(())
}

/// `{ "key": value, ... }`, one key a line in the given order, values already rendered
/// (compact JSON): readable like Go's template, the delegate on one line.
fn render_object(fields: &[(&str, String)], indent: &str) -> String {
    let lines: Vec<String> = fields.iter().map(|(k, v)| format!("{indent}  {}: {v}", quoted(k))).collect();
    format!("{{\n{}\n{indent}}}", lines.join(",\n"))
}

// ---------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------

mod signals {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    static STOP: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: std::ffi::c_int) {
        STOP.store(true, Ordering::SeqCst);
    }

    /// SIGTERM and SIGINT ask for a clean stop. SA_RESETHAND restores the default action
    /// after the first one, so a second signal ends the process at once.
    pub fn install() -> anyhow::Result<()> {
        let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESETHAND, SigSet::empty());
        for signal in [Signal::SIGTERM, Signal::SIGINT] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe { sigaction(signal, &action) }?;
        }
        Ok(())
    }

    pub fn stop_requested() -> bool {
        STOP.load(Ordering::SeqCst)
    }

    /// Sleep `d`, waking early on a stop request; `false` when stopping.
    pub fn sleep(d: Duration) -> bool {
        const SLICE: Duration = Duration::from_millis(50);
        let end = Instant::now() + d;
        while !stop_requested() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(SLICE));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: Options,
    }

    fn opts(args: &[&str]) -> Options {
        Cli::parse_from(std::iter::once("install").chain(args.iter().copied())).opts
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    /// Go's output: these tests compare with Go Multus' files, which lack the
    /// pod-annotations capability we declare by default (`agent_install.rs` tests that).
    fn generate(primary: Value, args: &[&str]) -> Result<(String, Value)> {
        let args: Vec<&str> = ["--pod-annotations-capability=false"].iter().chain(args).copied().collect();
        let g = multus_config(&obj(primary), &opts(&args))?;
        let v = serde_json::from_str(&g.content).unwrap();
        Ok((g.file_name.to_string(), v))
    }

    #[test]
    fn defaults_match_go() {
        let o = opts(&[]);
        assert_eq!(o.cni_bin_dir, Path::new("/host/opt/cni/bin"));
        assert_eq!(o.cni_conf_dir, Path::new("/host/etc/cni/net.d"));
        assert_eq!(o.multus_conf_file, "auto");
        assert_eq!(o.multus_kubeconfig_file_host, "/etc/cni/net.d/multus.d/multus.kubeconfig");
        assert!(o.multus_log_to_stderr);
        assert!(!o.namespace_isolation && !o.cleanup_config_on_exit && !o.once);
        assert!(o.pod_annotations_capability && o.nad_mirror_dir.is_none());
        let g =
            multus_config(&obj(json!({"cniVersion":"0.3.1","name":"k8s-pod-network","type":"calico"})), &o).unwrap();
        let v: Value = serde_json::from_str(&g.content).unwrap();
        assert_eq!(v["capabilities"], json!({"io.kubernetes.cri.pod-annotations": true}), "declared by default");
        let o = opts(&[
            "--nad-mirror-dir=/var/run/multus/nads",
            "--metrics-spool-dir=/var/run/multus/spool",
            "--max-node-api-requests=8",
        ]);
        let g =
            multus_config(&obj(json!({"cniVersion":"0.3.1","name":"k8s-pod-network","type":"calico"})), &o).unwrap();
        let v: Value = serde_json::from_str(&g.content).unwrap();
        assert_eq!(
            (v["nadMirrorDir"].as_str(), v["metricsSpoolDir"].as_str()),
            (Some("/var/run/multus/nads"), Some("/var/run/multus/spool"))
        );
        assert_eq!(v["maxNodeApiRequests"], 8);
    }

    /// Every flag Go's thin entrypoint defines (cmd/thin_entrypoint, `addFlags`), in the forms
    /// pflag takes, and the args of Go's deployments/multus-daemonset-thin.yml: an operator's
    /// existing DaemonSet keeps working with our image.
    #[test]
    fn accepts_every_go_thin_entrypoint_flag() {
        let go_daemonset_args = [
            "--multus-conf-file=auto",
            "--multus-autoconfig-dir=/host/etc/cni/net.d",
            "--cni-conf-dir=/host/etc/cni/net.d",
        ];
        assert!(Cli::try_parse_from(std::iter::once("install").chain(go_daemonset_args)).is_ok());
        let every_go_flag = [
            "--cni-bin-dir=/host/opt/cni/bin",
            "--cni-conf-dir",
            "/host/etc/cni/net.d",
            "--cni-version=0.3.1",
            "--multus-conf-file=auto",
            "--multus-bin-file=/usr/src/multus-cni/bin/multus",
            "--multus-cni-conf-dir=/host/etc/cni/multus/net.d",
            "--skip-multus-binary-copy=false",
            "--multus-kubeconfig-file-host=/etc/cni/net.d/multus.d/multus.kubeconfig",
            "--multus-master-cni-file-name=10-flannel.conflist",
            "--namespace-isolation=true",
            "--global-namespaces=default,kube-system",
            "--multus-autoconfig-dir=/host/etc/cni/net.d",
            "--multus-log-to-stderr=true",
            "--multus-log-level=verbose",
            "--multus-log-file=/var/log/multus.log",
            "--override-network-name=false",
            "--cleanup-config-on-exit=true",
            "--rename-conf-file=true",
            "--readiness-indicator-file=/run/flannel/subnet.env",
            "--additional-bin-dir=/opt/multus/bin",
            "--skip-tls-verify=false",
            "--force-cni-version=false",
        ];
        let o = Cli::try_parse_from(std::iter::once("install").chain(every_go_flag)).unwrap().opts;
        assert!(o.cleanup_config_on_exit && o.rename_conf_file && o.namespace_isolation);
        let warnings = ignored_go_flags(&o);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("--multus-bin-file=/usr/src/multus-cni/bin/multus"), "{warnings:?}");
        assert!(warnings[1].contains("--rename-conf-file"), "{warnings:?}");
        assert!(ignored_go_flags(&opts(&[])).is_empty());
        // `-h` as in pflag.
        assert!(Cli::try_parse_from(["install", "-h"]).is_err_and(|e| e.kind() == clap::error::ErrorKind::DisplayHelp));
    }

    #[test]
    fn bool_flags_take_go_form() {
        let o = opts(&["--namespace-isolation=true", "--multus-log-to-stderr=false", "--once"]);
        assert!(o.namespace_isolation && !o.multus_log_to_stderr && o.once);
        assert!(Cli::try_parse_from(["install", "--force-cni-version"]).is_err(), "needs --cni-version");
        assert_eq!(opts(&["--wait-timeout", "1.5s"]).wait_timeout, Duration::from_millis(1500));
        assert!(Cli::try_parse_from(["install", "--wait-timeout", "soon"]).is_err());
    }

    /// Reference §6 item 55: a single conf, exactly Go's keys.
    #[test]
    fn single_conf() {
        let (file, v) = generate(json!({"cniVersion":"0.3.1","name":"test1","type":"cnitesttype"}), &[]).unwrap();
        assert_eq!(file, MULTUS_CONF);
        assert_eq!(
            v,
            json!({"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus","logToStderr":true,
                   "kubeconfig":"/etc/cni/net.d/multus.d/multus.kubeconfig",
                   "delegates":[{"cniVersion":"0.3.1","name":"test1","type":"cnitesttype"}]})
        );
    }

    #[test]
    fn delegate_is_compact_and_sorted() {
        let g = multus_config(&obj(json!({"type":"x","name":"n","cniVersion":"0.4.0"})), &opts(&[])).unwrap();
        assert!(g.content.contains(r#""delegates": [{"cniVersion":"0.4.0","name":"n","type":"x"}]"#), "{}", g.content);
        assert!(g.content.starts_with("{\n  \"cniVersion\": \"0.4.0\",\n  \"name\": \"multus-cni-network\",\n"));
    }

    /// §6 items 56, 57.
    #[test]
    fn conflist_for_1_0_and_capabilities() {
        for version in ["1.0.0", "1.1.0"] {
            let primary = json!({"cniVersion":version,"name":"p","plugins":[
                {"type":"a","capabilities":{"bandwidth":true}},{"type":"b","capabilities":{"portMappings":true}}]});
            let (file, v) = generate(primary.clone(), &["--multus-log-to-stderr=false"]).unwrap();
            assert_eq!(file, MULTUS_CONFLIST);
            assert_eq!(
                v,
                json!({"cniVersion":version,"name":"multus-cni-network","plugins":[{
                    "type":"multus","capabilities":{"bandwidth":true,"portMappings":true},"logToStderr":false,
                    "kubeconfig":"/etc/cni/net.d/multus.d/multus.kubeconfig","delegates":[primary]}]})
            );
        }
    }

    #[test]
    fn capability_wanted_by_any_plugin_is_declared() {
        let primary = json!({"cniVersion":"0.3.1","plugins":[
            {"type":"a","capabilities":{"ips":true}},{"type":"b","capabilities":{"ips":false,"mac":false}}]});
        let (_, v) = generate(primary, &[]).unwrap();
        assert_eq!(v["capabilities"], json!({"ips":true,"mac":false}));
    }

    /// §6 item 58, with `confDir` instead of Go's `cniConf`.
    #[test]
    fn options_become_keys() {
        let (_, v) = generate(
            json!({"cniVersion":"0.3.1","type":"t"}),
            &[
                "--namespace-isolation",
                "--global-namespaces=a,b",
                "--multus-log-level=DEBUG",
                "--multus-log-file=/var/log/multus.log",
                "--additional-bin-dir=/opt/multus/bin",
                "--multus-cni-conf-dir=/etc/cni/multus/net.d",
                "--readiness-indicator-file=/run/ready",
                "--multus-kubeconfig-file-host=/k",
                "--delegate-timeout-seconds=30",
                "--write-legacy-networks-status",
            ],
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus","namespaceIsolation":true,
                   "globalNamespaces":"a,b","logToStderr":true,"logLevel":"debug","logFile":"/var/log/multus.log",
                   "binDir":"/opt/multus/bin","confDir":"/etc/cni/multus/net.d","readinessindicatorfile":"/run/ready",
                   "delegateTimeoutSeconds":30.0,"writeLegacyNetworksStatus":true,"kubeconfig":"/k",
                   "delegates":[{"cniVersion":"0.3.1","type":"t"}]})
        );
        // The result is a config our plugin reads with those values.
        let conf = crate::config::MultusConf::parse(
            multus_config(&obj(json!({"cniVersion":"0.3.1","type":"t"})), &opts(&["--namespace-isolation"]))
                .unwrap()
                .content
                .as_bytes(),
        )
        .unwrap();
        assert!(conf.namespace_isolation);
    }

    #[test]
    fn override_network_name() {
        let (_, v) =
            generate(json!({"cniVersion":"0.3.1","name":"k8s-pod-network","type":"t"}), &["--override-network-name"])
                .unwrap();
        assert_eq!(v["name"], "k8s-pod-network");
        let e = generate(json!({"cniVersion":"0.3.1","name":7,"type":"t"}), &["--override-network-name"]).unwrap_err();
        assert!(e.to_string().contains("name must be a string"), "{e}");
    }

    #[test]
    fn version_policy() {
        let p = json!({"cniVersion":"0.3.1","type":"t"});
        let e = generate(p.clone(), &["--cni-version=0.4.0"]).unwrap_err();
        assert!(e.to_string().contains("--cni-version"), "{e}");
        let (_, v) = generate(p, &["--cni-version=1.0.0", "--force-cni-version"]).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["plugins"][0]["delegates"][0]["cniVersion"], "1.0.0");
        let e = generate(json!({"cniVersion":"9.0.0","type":"t"}), &[]).unwrap_err();
        assert!(e.to_string().contains("incompatible"), "{e}");
    }

    /// Go panicked on each of these.
    #[test]
    fn bad_primaries_are_errors() {
        let cases = [
            (json!({"cniVersion":1,"type":"t"}), "cniVersion must be a string"),
            (json!({"type":"t"}), "no cniVersion"),
            (
                json!({"cniVersion":"0.3.1","type":"t","capabilities":{"a":"yes"}}),
                "capabilities.a must be true or false",
            ),
            (json!({"cniVersion":"0.3.1","type":"t","capabilities":[1]}), "capabilities must be an object"),
            (json!({"cniVersion":"0.3.1","plugins":{"type":"t"}}), "plugins must be a list"),
            (json!({"cniVersion":"0.3.1","plugins":["x"]}), "plugins[0] must be an object"),
            (
                json!({"cniVersion":"0.3.1","plugins":[{"capabilities":{"a":1},"type":"t"}]}),
                "plugins[0].capabilities.a",
            ),
            (json!({"cniVersion":"0.3.1","plugins":[{"type":"t"},{}]}), "plugins[1] has no type"),
            (json!({"cniVersion":"0.3.1","name":"n"}), "no type"),
        ];
        for (primary, want) in cases {
            let e = generate(primary.clone(), &[]).unwrap_err();
            assert!(e.to_string().contains(want), "{primary}: {e}");
        }
    }

    #[test]
    fn primary_is_chosen_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, s: &str| fs::write(dir.path().join(name), s).unwrap();
        write("00-multus.conf", r#"{"cniVersion":"0.3.1","name":"m","type":"multus","delegates":[]}"#);
        write("01-renamed-multus.conflist", r#"{"cniVersion":"1.0.0","name":"m","plugins":[{"type":"multus"}]}"#);
        write("02-thick.conf", r#"{"cniVersion":"0.3.1","name":"m","type":"multus-shim"}"#);
        write("03-broken.conf", "{ half");
        write("04-notes.json", r#"{"cniVersion":"0.3.1","name":"j","type":"j"}"#);
        write("10-calico.conflist", r#"{"cniVersion":"0.3.1","name":"k8s-pod-network","plugins":[{"type":"calico"}]}"#);
        write("20-other.conf", r#"{"cniVersion":"0.3.1","name":"o","type":"o"}"#);
        let p = find_primary(dir.path(), None).unwrap().unwrap();
        assert_eq!(p.path, dir.path().join("10-calico.conflist"));
        assert_eq!(find_primary(dir.path(), Some("20-other.conf")).unwrap().unwrap().config["name"], "o");
        assert!(find_primary(dir.path(), Some("99-absent.conf")).unwrap().is_none());
        assert!(find_primary(dir.path(), Some("00-multus.conf")).is_err());
    }

    #[test]
    fn server_url() {
        assert_eq!(api_server_url(None, Some("10.96.0.1"), Some("443")).unwrap(), "https://10.96.0.1:443");
        assert_eq!(api_server_url(Some(""), Some("fd00::1"), Some("6443")).unwrap(), "https://[fd00::1]:6443");
        assert_eq!(api_server_url(Some("http"), Some("[fd00::1]"), Some("80")).unwrap(), "http://[fd00::1]:80");
        assert!(api_server_url(None, None, Some("443")).is_err());
        assert!(api_server_url(None, Some("h"), Some("x")).is_err());
    }

    /// §6 item 59: what kube reads back.
    #[test]
    fn kubeconfig_reads_back() {
        let text = render_kubeconfig("https://[fd00::1]:443", "tok\"en", Some(b"CA"));
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://[fd00::1]:443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        // kube keeps the token secret; read it as plain YAML.
        let plain: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(plain["users"][0]["user"]["token"], "tok\"en");
        assert_eq!(kc.current_context.as_deref(), Some("multus-context"));
        // JSON, so that the plugin takes its fast path (serde_json, not the YAML parser).
        let json: kube::config::Kubeconfig = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_value(&json).unwrap(), serde_json::to_value(&kc).unwrap());
        let insecure = kube::config::Kubeconfig::from_yaml(&render_kubeconfig("https://h:1", "t", None)).unwrap();
        assert_eq!(insecure.clusters[0].cluster.as_ref().unwrap().insecure_skip_tls_verify, Some(true));
    }

    #[test]
    fn unchanged_content_is_not_rewritten() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert!(write_if_changed(&path, b"a", 0o600).unwrap());
        let inode = fs::metadata(&path).unwrap().ino();
        assert!(!write_if_changed(&path, b"a", 0o600).unwrap());
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        assert!(write_if_changed(&path, b"b", 0o600).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"b");
    }
}
