//! The `kube-standin` binary, driven the way `make demo` and shell tests do.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TIMEOUT, get, post, send};
use serde_json::json;

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_serves_until_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("pod.json");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "blue"}});
    std::fs::write(&manifest, pod.to_string()).expect("write");
    let (addr_file, kubeconfig) = (dir.path().join("addr"), dir.path().join("kubeconfig"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-standin"))
        .args(["--listen", "127.0.0.1:0", "--plain-http", "--token", "s3cret", "--latency-ms=1", "--load"])
        .arg(&manifest)
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kube-standin");

    let url = wait_for_file(&addr_file).trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(wait_for_file(&kubeconfig).contains("token: \"s3cret\""));

    let path = "/api/v1/namespaces/blue/pods/web";
    assert_eq!(get(&url, path).code, 401);
    let auth = [("Authorization", "Bearer s3cret")];
    let reply = send(&url, "GET", path, &auth, "", TIMEOUT).expect("get");
    assert_eq!((reply.code, reply.body["metadata"]["name"].as_str()), (200, Some("web")));

    // The admin API needs no token and is not recorded.
    let fault = json!({"path_contains": "/pods/", "times": 1, "action": {"status": 503}});
    assert_eq!(post(&url, "/_standin/faults", &fault).code, 200);
    assert_eq!(send(&url, "GET", path, &auth, "", TIMEOUT).expect("get").code, 503);
    let requests = get(&url, "/_standin/requests").body;
    assert_eq!(requests.as_array().map(Vec::len), Some(3));

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "kube-standin ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("read");
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read");
    assert_eq!(stdout, "");
    assert_eq!(stderr, format!("listening on {url}\n"));
}

#[test]
fn binary_rejects_bad_flags() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_kube-standin")).arg("--frobnicate").output().expect("run kube-standin");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--frobnicate"));
}
