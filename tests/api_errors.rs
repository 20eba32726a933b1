//! The plugin's error when the API server cannot be used, through the built binary: each
//! cause gets its own message, and only what waiting can heal is code 11.
//! TLS cases use `openssl` (certificates and `s_server`); they skip without it.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use kube_standin::StandIn;
use serde_json::json;
use support::Invocation;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("multus-api-errors-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kubeconfig(dir: &Path, server: &str, ca: Option<&Path>, token: &str) -> PathBuf {
    let cluster = match ca {
        Some(ca) => json!({"server": server, "certificate-authority": ca}),
        None => json!({"server": server}),
    };
    let config = json!({"apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"});
    let path = dir.join("kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// One ADD for pod default/p with `kubeconfig`; returns (exit code, CNI error code, msg).
fn add(dir: &Path, kubeconfig: &Path) -> (i32, u64, String) {
    let conf = json!({"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus",
        "kubeconfig": kubeconfig, "cniDir": dir.join("cache"), "apiTimeoutSeconds": 3,
        "delegates": [{"cniVersion": "1.0.0", "name": "primary", "type": "loopback"}]});
    // Any netns the runtime names will do: every case fails at the API, before a
    // delegate runs; the own-netns rule (code 8) is lifted as the skel allows.
    let out = Invocation::new("ADD", "api-errors-1", "/proc/self/ns/net")
        .set("CNI_NETNS_OVERRIDE", "1")
        .set("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=api-errors-1")
        .run_json(&conf);
    let doc = out.json();
    (out.exit_code, doc["code"].as_u64().unwrap_or(0), doc["msg"].as_str().unwrap_or("").to_owned())
}

#[test]
fn connection_refused_names_the_address_and_is_transient() {
    let dir = Dir::new("refused");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = format!("http://127.0.0.1:{port}");
    let (rc, code, msg) = add(&dir.0, &kubeconfig(&dir.0, &server, None, "t"));
    assert_eq!((rc, code), (1, 11), "{msg}");
    assert!(msg.contains(&format!("connection refused by {server}/")), "{msg}");
}

/// A server that takes the TCP connection and then never answers the TLS handshake (a
/// wedged apiserver or load balancer): the connection opened early, before the first
/// request, is bounded like any other, and the ADD ends within its API budget.
#[test]
fn a_tls_handshake_that_never_completes_ends_within_the_budget() {
    let standin = StandIn::start();
    let dir = Dir::new("stalled-tls");
    let ca = dir.0.join("standin-ca.crt");
    std::fs::write(&ca, standin.ca_pem().expect("the stand-in serves HTTPS")).unwrap();
    // Listening, so the kernel completes the TCP handshake; nobody ever reads or answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let started = std::time::Instant::now();
    let (rc, code, msg) = add(&dir.0, &kubeconfig(&dir.0, &server, Some(&ca), "t"));
    let took = started.elapsed();
    assert_eq!((rc, code), (1, 11), "{msg}");
    assert!(msg.contains("pod default/p"), "{msg}");
    // apiTimeoutSeconds is 3: a generous bound, this is a deadline check, not a timing.
    assert!(took < std::time::Duration::from_secs(20), "the ADD took {took:?}: {msg}");
    drop(listener);
}

#[test]
fn unresolvable_host_is_permanent() {
    let dir = Dir::new("dns");
    let (rc, code, msg) = add(&dir.0, &kubeconfig(&dir.0, "http://api.cluster.invalid:6443", None, "t"));
    assert_eq!((rc, code), (1, 101), "{msg}");
    assert!(msg.contains("cannot resolve the API server's host in http://api.cluster.invalid:6443/"), "{msg}");
}

#[test]
fn unauthorized_and_forbidden_name_the_call() {
    let standin = StandIn::start();
    let dir = Dir::new("auth");
    // The stand-in's own CA, so that only the credentials are wrong.
    let ca = dir.0.join("standin-ca.crt");
    std::fs::write(&ca, standin.ca_pem().expect("the stand-in serves HTTPS")).unwrap();
    standin.require_token(Some("right"));
    let (rc, code, msg) = add(&dir.0, &kubeconfig(&dir.0, &standin.url(), Some(&ca), "wrong"));
    assert_eq!((rc, code), (1, 101), "{msg}");
    assert!(msg.contains("pod default/p") && msg.contains("401 Unauthorized"), "{msg}");
    assert!(!msg.contains("attempts"), "401 is not retried: {msg}");

    standin.require_token(None);
    standin.deny("get", "pods");
    let (rc, code, msg) = add(&dir.0, &kubeconfig(&dir.0, &standin.url(), Some(&ca), "any"));
    assert_eq!((rc, code), (1, 101), "{msg}");
    assert!(msg.contains("pod default/p") && msg.contains("403 Forbidden") && msg.contains("get"), "{msg}");
}

/// `openssl s_server` with a certificate for `cert_name`, signed by a CA; kubeconfig CA
/// `trusted_ca` (the right one or another).
struct TlsServer {
    child: Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `openssl req` arguments for a new P-256 key without a passphrase.
const NEW_EC_KEY: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

fn ca(dir: &Path, name: &str) -> bool {
    openssl(
        dir,
        &[
            &["req", "-x509"],
            NEW_EC_KEY,
            &[
                "-subj",
                &format!("/CN={name}"),
                "-days",
                "2",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ],
        ]
        .concat(),
    )
}

fn server_cert(dir: &Path, ca_name: &str, san: &str, days: &str) -> bool {
    std::fs::write(dir.join("ext.cnf"), format!("subjectAltName={san}\n")).unwrap();
    openssl(
        dir,
        &[&["req"], NEW_EC_KEY, &["-subj", "/CN=apiserver", "-keyout", "server.key", "-out", "server.csr"]].concat(),
    ) && openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca_name}.crt"),
            "-CAkey",
            &format!("{ca_name}.key"),
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    )
}

fn s_server(dir: &Path) -> Option<TlsServer> {
    let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = Command::new("openssl")
        .current_dir(dir)
        .args([
            "s_server",
            "-quiet",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "server.crt",
            "-key",
            "server.key",
            "-www",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // Ready when it accepts a connection (bounded: 10 s).
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(TlsServer { child, port });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

#[test]
fn tls_failures_say_which_and_are_permanent() {
    let dir = Dir::new("tls");
    if !ca(&dir.0, "cluster-ca") || !ca(&dir.0, "other-ca") {
        eprintln!("SKIP: openssl cannot make certificates here");
        return;
    }
    let cases = [
        ("other-ca", "IP:127.0.0.1", "2", "is not signed by the kubeconfig's CA"),
        ("cluster-ca", "DNS:elsewhere.example", "2", "is not valid for that host name or address"),
        // -days 0: notAfter is now, past by the time the plugin connects (after the sleep below).
        ("cluster-ca", "IP:127.0.0.1", "0", "has expired or is not yet valid"),
    ];
    for (trusted, san, days, want) in cases {
        assert!(server_cert(&dir.0, "cluster-ca", san, days), "openssl x509 -req");
        let Some(server) = s_server(&dir.0) else {
            eprintln!("SKIP: openssl s_server did not start");
            return;
        };
        if days == "0" {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let url = format!("https://127.0.0.1:{}", server.port);
        let kc = kubeconfig(&dir.0, &url, Some(&dir.0.join(format!("{trusted}.crt"))), "t");
        let (rc, code, msg) = add(&dir.0, &kc);
        assert_eq!((rc, code), (1, 101), "{msg}");
        assert!(msg.contains(want), "want {want:?}: {msg}");
        assert!(!msg.contains("attempts"), "TLS failures are not retried: {msg}");
        drop(server);
    }
}
