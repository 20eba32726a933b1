//! `kube-standin`: the Kubernetes API stand-in as a process, for `make demo`
//! and shell-level tests.
//!
//! Once it listens it loads the manifests, writes the kubeconfig and the
//! address file (both atomically, so scripts can wait for them), logs
//! `listening on URL` to stderr, and serves until SIGTERM or SIGINT.
//!
//! It serves HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with a CA it makes at start
//! (`--ca-out`, and inline in the kubeconfig), or plain HTTP with `--plain-http`.
//!
//! Admin API (never recorded; no token needed):
//! `GET|DELETE /_standin/connections` (connections and TLS handshakes),
//! `GET|DELETE /_standin/requests`, `GET /_standin/events`,
//! `POST|DELETE /_standin/faults` (body: a JSON `Fault`),
//! `POST /_standin/pods`, `POST /_standin/nads` (body: the object),
//! `GET|DELETE /_standin/pods/{ns}/{name}`, `POST /_standin/latency` `{"ms":N}`,
//! `POST /_standin/deny` `{"verb":"patch","resource":"pods"}`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kube_standin::{StandIn, Transport};

/// The kubeconfig's token when `--token` is not given (checked once a kubeconfig is written).
const DEFAULT_TOKEN: &str = "standin";

/// A Kubernetes API stand-in for multus-rs tests and the demo.
#[derive(Debug, Parser)]
#[command(name = "kube-standin")]
struct Options {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Pods and NetworkAttachmentDefinitions to serve (YAML/JSON file or directory).
    #[arg(long, value_name = "DIR_OR_FILE")]
    load: Vec<PathBuf>,
    /// Where to write a kubeconfig pointing at the server (mode 0600).
    #[arg(long, value_name = "PATH")]
    kubeconfig_out: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` on API requests (with `--kubeconfig-out`
    /// and no `--token`, the kubeconfig's token `standin` is required).
    #[arg(long)]
    token: Option<String>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// Where to write the CA certificate (PEM) that signed the serving certificate
    /// (for curl's `--cacert`); nothing is written with `--plain-http`.
    #[arg(long, value_name = "PATH")]
    ca_out: Option<PathBuf>,
    /// Where to write the server URL once ready.
    #[arg(long, value_name = "PATH")]
    addr_file: Option<PathBuf>,
    /// Also listen on 127.0.0.1:<same port> inside this network namespace
    /// (e.g. /var/run/netns/NODE), so processes there reach the same server.
    #[arg(long, value_name = "NETNS_PATH")]
    also_listen_in_netns: Vec<PathBuf>,
    /// Latency added to every API request.
    #[arg(long, value_name = "N")]
    latency_ms: Option<u64>,
}

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kube-standin: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> std::io::Result<()> {
    let primary = std::net::TcpListener::bind(options.listen)?;
    let port = primary.local_addr()?.port();
    let extra =
        options.also_listen_in_netns.iter().map(|ns| bind_in_netns(ns, port)).collect::<std::io::Result<Vec<_>>>()?;
    let transport = if options.plain_http { Transport::Http } else { Transport::Https };
    let standin = StandIn::start_with_listeners(primary, extra, transport)?;
    for path in &options.load {
        standin.load_manifests(path)?;
    }
    standin.require_token(options.token.as_deref());
    if let Some(ms) = options.latency_ms {
        standin.set_latency(Duration::from_millis(ms));
    }
    if let Some(path) = &options.kubeconfig_out {
        standin.write_kubeconfig(path, options.token.as_deref().unwrap_or(DEFAULT_TOKEN))?;
    }
    if let (Some(path), Some(ca)) = (&options.ca_out, standin.ca_pem()) {
        write_atomically(path, ca)?;
    }
    if let Some(path) = &options.addr_file {
        write_atomically(path, &format!("{}\n", standin.url()))?;
    }
    eprintln!("listening on {}", standin.url());
    wait_for_termination()
}

/// Bind 127.0.0.1:`port` inside the network namespace at `netns`: a socket belongs to
/// the namespace of the thread that created it, so enter it, bind, and come back.
fn bind_in_netns(netns: &Path, port: u16) -> std::io::Result<std::net::TcpListener> {
    use nix::sched::{CloneFlags, setns};
    let home = std::fs::File::open("/proc/thread-self/ns/net")?;
    let target = std::fs::File::open(netns)?;
    setns(&target, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    let bound = std::net::TcpListener::bind(("127.0.0.1", port));
    if let Err(e) = setns(&home, CloneFlags::CLONE_NEWNET) {
        // Serving from the wrong namespace would be worse than stopping.
        eprintln!("kube-standin: cannot return to the original network namespace: {e}");
        std::process::abort();
    }
    bound
}

fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, path)
}

/// Blocks until SIGTERM or SIGINT.
fn wait_for_termination() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        Ok(())
    })
}
