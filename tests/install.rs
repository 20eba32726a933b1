//! `multus install` on a fake host root: the built binary, real files, real signals.

mod support;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{mode, multus_cli, wait_for};

/// shared/SEEDS.md §A: the `00-multus.conf` the Go DaemonSet wrote next to Calico.
const SEED_MULTUS_CONF: &str = include_str!("data/seed-00-multus.conf");

/// Calico's own conflist on that node: the seed's delegate, as Calico writes it.
fn calico_conflist() -> String {
    let seed: Value = serde_json::from_str(SEED_MULTUS_CONF).unwrap();
    serde_json::to_string_pretty(&seed["delegates"][0]).unwrap()
}

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.first.signature";
const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/// A node's `/etc/cni/net.d` and `/opt/cni/bin` plus a service-account mount, in a temp dir.
struct Host {
    root: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let root = tempfile::tempdir().unwrap();
        for dir in ["host/etc/cni/net.d", "host/opt/cni/bin", "serviceaccount"] {
            fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let host = Host { root };
        host.set_token(TOKEN);
        fs::write(host.sa_dir().join("ca.crt"), CA).unwrap();
        host
    }

    fn conf_dir(&self) -> PathBuf {
        self.root.path().join("host/etc/cni/net.d")
    }

    fn bin_dir(&self) -> PathBuf {
        self.root.path().join("host/opt/cni/bin")
    }

    fn sa_dir(&self) -> PathBuf {
        self.root.path().join("serviceaccount")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.conf_dir().join("multus.d/multus.kubeconfig")
    }

    /// Written like the kubelet does: a new file renamed into place.
    fn set_token(&self, token: &str) {
        let tmp = self.sa_dir().join("..token.tmp");
        fs::write(&tmp, token).unwrap();
        fs::rename(tmp, self.sa_dir().join("token")).unwrap();
    }

    fn write_conf(&self, name: &str, content: &str) {
        let tmp = self.conf_dir().join(format!(".{name}.tmp"));
        fs::write(&tmp, content).unwrap();
        fs::rename(tmp, self.conf_dir().join(name)).unwrap();
    }

    fn read_json(&self, name: &str) -> Value {
        serde_json::from_slice(&fs::read(self.conf_dir().join(name)).unwrap()).unwrap()
    }

    /// `multus install` with this host's paths; `args` come last.
    fn install(&self, args: &[&str]) -> Command {
        let mut cmd = multus_cli(&["install"]);
        cmd.arg("--cni-conf-dir")
            .arg(self.conf_dir())
            .arg("--cni-bin-dir")
            .arg(self.bin_dir())
            .arg("--service-account-dir")
            .arg(self.sa_dir())
            .args(args)
            .env_remove("KUBERNETES_SERVICE_PROTOCOL")
            .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn install_once(&self, args: &[&str]) -> Output {
        let mut all = vec!["--once", "--skip-multus-binary-copy", "--wait-timeout", "0"];
        all.extend_from_slice(args);
        self.install(&all).output().unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_success(out: &Output) {
    assert!(out.status.success(), "exit {:?}\n{}", out.status, stderr(out));
}

/// A clear failure: exit code 1, the message on stderr, no panic.
fn assert_fails_with(out: &Output, message: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(message), "expected {message:?} in:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn wait_until(what: &str, done: impl FnMut() -> bool) {
    assert!(wait_for(Duration::from_secs(15), done), "timed out waiting for {what}");
}

fn terminate(mut child: Child) -> Output {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("multus install did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn calico_primary_gives_the_seed_config() {
    let host = Host::new();
    host.write_conf("10-calico.conflist", &calico_conflist());
    // Go's exact file: without the pod-annotations capability we declare by default.
    let out = host.install_once(&["--multus-log-level", "verbose", "--pod-annotations-capability=false"]);
    assert_success(&out);

    let seed: Value = serde_json::from_str(SEED_MULTUS_CONF).unwrap();
    assert_eq!(host.read_json("00-multus.conf"), seed);
    assert_eq!(mode(&host.conf_dir().join("00-multus.conf")), 0o600);
    assert!(!host.conf_dir().join("00-multus.conflist").exists());
    // The plugin reads it back as intended.
    let conf = multus::config::MultusConf::parse(&fs::read(host.conf_dir().join("00-multus.conf")).unwrap()).unwrap();
    assert_eq!(conf.delegates[0]["name"], "k8s-pod-network");
    assert_eq!(conf.log_level, "verbose");

    // The log flags are ours to choose.
    let out = host.install_once(&["--multus-log-level", "DEBUG", "--multus-log-to-stderr=false"]);
    assert_success(&out);
    let mut expected = seed;
    expected["logLevel"] = "debug".into();
    expected["logToStderr"] = false.into();
    // by default, the capability through which containerd passes the pod's annotations
    expected["capabilities"]["io.kubernetes.cri.pod-annotations"] = true.into();
    assert_eq!(host.read_json("00-multus.conf"), expected);
}

#[test]
fn kubeconfig_from_the_service_account() {
    let host = Host::new();
    host.write_conf("10-calico.conflist", &calico_conflist());
    assert_success(&host.install_once(&[]));

    let text = fs::read_to_string(host.kubeconfig()).unwrap();
    assert_eq!(mode(&host.kubeconfig()), 0o600);
    assert_eq!(mode(host.kubeconfig().parent().unwrap()), 0o700);
    let kc: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(kc["clusters"][0]["cluster"]["server"], "https://10.96.0.1:443");
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(CA);
    assert_eq!(kc["clusters"][0]["cluster"]["certificate-authority-data"], ca.as_str());
    assert_eq!(kc["users"][0]["user"]["token"], TOKEN);
    assert_eq!(kc["current-context"], "multus-context");
}

#[test]
fn ipv6_api_server_is_bracketed() {
    let host = Host::new();
    host.write_conf("10-calico.conflist", &calico_conflist());
    let out = host
        .install(&["--once", "--skip-multus-binary-copy", "--wait-timeout", "0"])
        .env("KUBERNETES_SERVICE_HOST", "fd00:10:96::1")
        .output()
        .unwrap();
    assert_success(&out);
    let kc: Value = serde_saphyr::from_str(&fs::read_to_string(host.kubeconfig()).unwrap()).unwrap();
    assert_eq!(kc["clusters"][0]["cluster"]["server"], "https://[fd00:10:96::1]:443");
}

#[test]
fn primary_1_0_gives_a_conflist() {
    let host = Host::new();
    let primary = json!({"cniVersion":"1.0.0","name":"kindnet","plugins":[
        {"type":"ptp","ipam":{"type":"host-local"}},{"type":"portmap","capabilities":{"portMappings":true}}]});
    host.write_conf("10-kindnet.conflist", &primary.to_string());
    assert_success(&host.install_once(&[]));

    assert!(!host.conf_dir().join("00-multus.conf").exists());
    let conf = host.read_json("00-multus.conflist");
    assert_eq!(conf["cniVersion"], "1.0.0");
    assert_eq!(conf["name"], "multus-cni-network");
    let plugins = conf["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1);
    assert_eq!(plugins[0]["type"], "multus");
    assert_eq!(
        plugins[0]["capabilities"],
        json!({"portMappings": true, "io.kubernetes.cri.pod-annotations": true}),
        "the primary's capabilities, and the pod annotations from containerd (no pod GET)"
    );
    assert_eq!(plugins[0]["delegates"], json!([primary]));
}

#[test]
fn our_own_config_is_never_the_primary() {
    let host = Host::new();
    // Lexically first: our file from an earlier run, and Go's under another name (#1162).
    host.write_conf(
        "00-multus.conf",
        r#"{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus","delegates":[{"type":"old"}]}"#,
    );
    host.write_conf("05-multus.conf", r#"{"cniVersion":"0.3.1","name":"m","type":"multus","kubeconfig":"/k"}"#);
    host.write_conf("07-half-written.conflist", r#"{"cniVersion":"0.3.1","#);
    host.write_conf("10-calico.conflist", &calico_conflist());
    assert_success(&host.install_once(&[]));
    let conf = host.read_json("00-multus.conf");
    assert_eq!(conf["delegates"].as_array().unwrap().len(), 1);
    assert_eq!(conf["delegates"][0]["name"], "k8s-pod-network");

    // Run again on the result: still Calico, never ourselves.
    assert_success(&host.install_once(&[]));
    assert_eq!(host.read_json("00-multus.conf"), conf);
}

#[test]
fn explicit_primary_file_name() {
    let host = Host::new();
    host.write_conf("10-calico.conflist", &calico_conflist());
    host.write_conf("20-flannel.conf", r#"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel"}"#);
    assert_success(&host.install_once(&["--multus-master-cni-file-name", "20-flannel.conf"]));
    assert_eq!(host.read_json("00-multus.conf")["delegates"][0]["type"], "flannel");
}

#[test]
fn binary_is_copied_executable() {
    let host = Host::new();
    host.write_conf("10-calico.conflist", &calico_conflist());
    let out = host.install(&["--once", "--wait-timeout", "0"]).output().unwrap();
    assert_success(&out);
    let copy = host.bin_dir().join("multus");
    assert_eq!(mode(&copy), 0o755);
    assert_eq!(fs::metadata(&copy).unwrap().len(), fs::metadata(env!("CARGO_BIN_EXE_multus")).unwrap().len());
    assert_eq!(fs::read_dir(host.bin_dir()).unwrap().count(), 2, "multus and passthru, no temp file left");
    let version = Command::new(&copy).arg("version").env_remove("CNI_COMMAND").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("multus-rs: version:"));
    // the auxiliary chain's passthru: the same binary under that name
    let passthru = host.bin_dir().join("passthru");
    assert_eq!(mode(&passthru), 0o755);
    let add = Command::new(&passthru)
        .env("CNI_COMMAND", "ADD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(br#"{"cniVersion":"1.0.0","name":"x","type":"passthru"}"#)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(add.status.success());
    assert_eq!(String::from_utf8_lossy(&add.stdout).trim(), r#"{"cniVersion":"1.0.0"}"#);
}

#[test]
fn bad_primary_is_a_clear_error() {
    let host = Host::new();
    host.write_conf("10-bad.conf", r#"{"cniVersion":1,"name":"bad","type":"bridge"}"#);
    let out = host.install_once(&[]);
    assert_fails_with(&out, "cniVersion must be a string");
    assert!(stderr(&out).contains("10-bad.conf"), "{}", stderr(&out));
    assert!(!host.conf_dir().join("00-multus.conf").exists());

    host.write_conf("10-bad.conf", r#"{"cniVersion":"0.3.1","name":"bad","type":"bridge","capabilities":{"ips":1}}"#);
    assert_fails_with(&host.install_once(&[]), "capabilities.ips must be true or false");
}

/// Reference §6 item 60, and flags checked before anything is written.
#[test]
fn bad_setup_is_a_clear_error() {
    let host = Host::new();
    host.write_conf("10-calico.conflist", &calico_conflist());
    let out = host.install_once(&["--multus-log-level", "chatty"]);
    assert_fails_with(&out, "--multus-log-level");
    assert!(!host.kubeconfig().exists());

    fs::remove_dir(host.bin_dir()).unwrap();
    assert_fails_with(&host.install_once(&[]), "--cni-bin-dir");

    let host = Host::new();
    host.write_conf("10-calico.conflist", &calico_conflist());
    fs::remove_file(host.sa_dir().join("token")).unwrap();
    assert_fails_with(&host.install_once(&[]), "service account token");

    let host = Host::new();
    let out = host.install_once(&["--multus-conf-file", "/nonexistent/70-multus.conf"]);
    assert_fails_with(&out, "--multus-conf-file");

    let out =
        host.install(&["--once", "--skip-multus-binary-copy"]).env_remove("KUBERNETES_SERVICE_HOST").output().unwrap();
    assert_fails_with(&out, "KUBERNETES_SERVICE_HOST");
}

#[test]
fn waits_for_the_primary_then_gives_up() {
    let host = Host::new();
    let out = host.install(&["--once", "--skip-multus-binary-copy", "--wait-timeout", "0.3"]).output().unwrap();
    assert_fails_with(&out, "no primary CNI config");

    let child = host
        .install(&["--once", "--skip-multus-binary-copy", "--wait-timeout", "20", "--watch-interval", "0.05"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    host.write_conf("10-calico.conflist", &calico_conflist());
    let out = child.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(host.read_json("00-multus.conf")["delegates"][0]["name"], "k8s-pod-network");
}

/// `--readiness-indicator-file`: no config (so no pod ADD) before the primary network
/// is ready, as Go's thin entrypoint; a file that never comes is an error.
#[test]
fn waits_for_the_readiness_indicator_file_before_the_config() {
    let host = Host::new();
    host.write_conf("10-calico.conflist", &calico_conflist());
    let ready = host.root.path().join("modes-ready");
    let flag = format!("--readiness-indicator-file={}", ready.display());
    let out = host.install(&["--once", "--skip-multus-binary-copy", "--wait-timeout", "0.3", &flag]).output().unwrap();
    assert_fails_with(&out, "readiness indicator file");
    assert!(!host.conf_dir().join("00-multus.conf").exists());

    let child = host
        .install(&["--once", "--skip-multus-binary-copy", "--wait-timeout", "20", "--watch-interval", "0.05", &flag])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!host.conf_dir().join("00-multus.conf").exists(), "written before the primary was ready");
    fs::write(&ready, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(host.read_json("00-multus.conf")["readinessindicatorfile"], ready.display().to_string());
}

#[test]
fn given_config_file_is_copied() {
    let host = Host::new();
    let src = host.root.path().join("70-multus.conf");
    let conf = r#"{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus","delegates":[{"type":"flannel"}]}"#;
    fs::write(&src, conf).unwrap();
    assert_success(&host.install_once(&["--multus-conf-file", src.to_str().unwrap()]));
    assert_eq!(fs::read_to_string(host.conf_dir().join("70-multus.conf")).unwrap(), conf);
    assert!(host.kubeconfig().exists(), "the copied config may point at it");
}

/// The watch loop: a rotated token and a changed primary are followed, nothing else is
/// rewritten, and SIGTERM with --cleanup-config-on-exit removes what was generated.
#[test]
fn watch_follows_token_and_primary_then_cleans_up() {
    let host = Host::new();
    host.write_conf("10-calico.conflist", &calico_conflist());
    let child = host
        .install(&["--skip-multus-binary-copy", "--watch-interval", "0.05", "--cleanup-config-on-exit"])
        .spawn()
        .unwrap();
    let conf = host.conf_dir().join("00-multus.conf");
    wait_until("the first config", || conf.exists() && host.kubeconfig().exists());

    // Unchanged sources: nothing is rewritten (write_atomic would give new inodes).
    let inodes = || (fs::metadata(&conf).unwrap().ino(), fs::metadata(host.kubeconfig()).unwrap().ino());
    let before = inodes();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(inodes(), before);

    // Token rotation (#852): the kubeconfig follows.
    host.set_token("eyJhbGciOiJSUzI1NiJ9.rotated.signature");
    wait_until("the rotated token", || fs::read_to_string(host.kubeconfig()).unwrap().contains(".rotated."));

    // The primary changes: the delegate follows.
    let mut calico: Value = serde_json::from_str(&calico_conflist()).unwrap();
    calico["plugins"][0]["mtu"] = 1440.into();
    host.write_conf("10-calico.conflist", &calico.to_string());
    wait_until("the new delegate", || fs::read(&conf).is_ok_and(|c| String::from_utf8_lossy(&c).contains("1440")));

    // The primary moves to 1.0.0: the conflist replaces the conf, which would sort first.
    calico["cniVersion"] = "1.0.0".into();
    host.write_conf("10-calico.conflist", &calico.to_string());
    let conflist = host.conf_dir().join("00-multus.conflist");
    wait_until("the conflist", || conflist.exists() && !conf.exists());

    let out = terminate(child);
    assert_success(&out);
    assert!(!conflist.exists(), "cleaned up on exit");
    assert!(host.kubeconfig().exists(), "the kubeconfig stays, as in Go");
    assert!(host.conf_dir().join("10-calico.conflist").exists());
}

#[test]
fn without_cleanup_the_config_stays() {
    let host = Host::new();
    host.write_conf("10-calico.conflist", &calico_conflist());
    let child = host.install(&["--skip-multus-binary-copy", "--watch-interval", "0.05"]).spawn().unwrap();
    let conf = host.conf_dir().join("00-multus.conf");
    wait_until("the config", || conf.exists());
    assert_success(&terminate(child));
    assert!(conf.exists());
}
