//! `multus validate` as a user runs it: the built binary on the seeds' NADs and
//! annotations (shared/SEEDS.md §C, §D), broken ones, stdin, `--json`, exit codes.

mod support;

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use support::{multus_cli, repo_path};

/// C1 (seed 002), verbatim: one plugin, macvlan on enp0s8, host-local, no `name`.
const C1: &str = r#"apiVersion: "k8s.cni.cncf.io/v1"
kind: NetworkAttachmentDefinition
metadata:
  name: privatezone-macvlan-conf
spec:
  config: '{
      "cniVersion": "0.3.0",
      "type": "macvlan",
      "master": "enp0s8",
      "mode": "bridge",
      "ipam": {
        "type": "host-local",
        "subnet": "10.12.34.0/24",
        "rangeStart": "10.12.34.200",
        "rangeEnd": "10.12.34.220",
        "routes": [
          { "dst": "0.0.0.0/0" }
        ],
        "gateway": "10.12.34.254"
      }
    }'
"#;

/// C2 (seed 001), verbatim: a conflist, macvlan with the `ips` capability, then tuning with `mac`.
const C2: &str = r#"apiVersion: "k8s.cni.cncf.io/v1"
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan-conf
spec: 
  config: '{
      "cniVersion": "0.3.1",
      "plugins": [
        {
          "type": "macvlan",
          "capabilities": { "ips": true },
          "master": "eth1",
          "mode": "bridge",
          "ipam": {
            "type": "static",
            "routes": [
              {
                "dst": "0.0.0.0/0",
                "gw": "10.1.1.1"
              }
            ] 
          }
        }, {
          "capabilities": { "mac": true },
          "type": "tuning"
        }
      ]
    }'
"#;

/// C3 (seed 004), verbatim: two ipvlan NADs, one file each in the seed, `---` each (also
/// the NAD of `k8s_e2e`'s `seed_ipvlan_failure_is_reported_and_rolled_back`).
const C3: &str = include_str!("data/seed-004-ipvlan-nads.yaml");

/// D3 (seed 001): JSON form with a static address per pod.
const D3: &str = r#"[{ "name": "macvlan-conf", "ips": [ "10.1.1.101/24" ], "gateway": [ "10.1.1.1" ] }]"#;

fn nad_yaml(name: &str, config: &str) -> String {
    format!(
        "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: {name}\nspec:\n  config: '{config}'\n"
    )
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn json(&self) -> Vec<Value> {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `multus validate ARGS`, feeding `stdin`.
fn validate(args: &[&str], stdin: &str) -> Outcome {
    let mut child = multus_cli(&["validate"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run multus validate");
    if let Some(mut input) = child.stdin.take() {
        // The command may exit before reading stdin (no `-`): a broken pipe is fine.
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("wait for multus validate");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A file holding `text` in a directory that goes away with it.
struct File {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl File {
    fn new(name: &str, text: &str) -> File {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        File { _dir: dir, path }
    }

    fn arg(&self) -> &str {
        self.path.to_str().expect("UTF-8 temp path")
    }
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn seed_nads_are_valid() {
    for (name, text, nads) in [("c1.yaml", C1, 1), ("c2.yaml", C2, 1), ("c3.yaml", C3, 2)] {
        let f = File::new(name, text);
        let out = validate(&[f.arg()], "");
        assert_eq!(out.code, Some(0), "{name}: {}{}", out.stdout, out.stderr);
        let summary = format!("0 failures, 0 warnings, {nads} ok");
        assert!(out.stdout.trim_end().ends_with(&summary), "{name}: {}", out.stdout);
    }
    let f = File::new("c3.yaml", C3);
    let out = validate(&[f.arg(), "--json"], "");
    let checks = out.json();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["check"], "NAD default/ipvlan-conf-1");
    assert_eq!(checks[1]["check"], "NAD default/ipvlan-conf-2");
    assert_eq!(
        checks[0]["message"], "plugin ipvlan, network \"ipvlan-conf-1\" (the NAD's name), cniVersion 0.3.0",
        "name injected from the NAD"
    );
}

#[test]
fn the_repository_example_is_valid() {
    let example = repo_path("examples/k8s/macvlan-conf.yaml");
    assert_eq!(validate(&[path_arg(&example)], "").code, Some(0));
}

#[test]
fn plugin_type_that_is_a_path_is_refused() {
    let f = File::new("evil.yaml", &nad_yaml("evil", r#"{"cniVersion":"0.3.1","type":"../../bin/sh"}"#));
    let out = validate(&[f.arg(), "--json"], "");
    assert_eq!(out.code, Some(1));
    let checks = out.json();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["check"], "NAD default/evil");
    assert_eq!(checks[0]["status"], "fail");
    assert!(
        checks[0]["message"].as_str().unwrap_or_default().starts_with("type \"../../bin/sh\" is not a plain file name")
    );
}

#[test]
fn bad_json_config_is_refused() {
    let f = File::new("bad.yaml", &nad_yaml("bad", r#"{"cniVersion":"0.3.1","type":"macvlan","#));
    let out = validate(&[f.arg()], "");
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.starts_with("✗ NAD default/bad: spec.config is not valid JSON: "), "{}", out.stdout);
    assert!(out.stdout.contains("    hint: "), "{}", out.stdout);
}

#[test]
fn conflist_without_plugins_is_refused() {
    let f = File::new("empty.yaml", &nad_yaml("empty", r#"{"cniVersion":"1.0.0","name":"empty","plugins":[]}"#));
    let out = validate(&[f.arg(), "--json"], "");
    assert_eq!(out.code, Some(1));
    assert_eq!(out.json()[0]["message"], "conflist without plugins: \"plugins\" is empty");
}

#[test]
fn several_problems_are_all_listed() {
    let config = r#"{"cniVersion":"7.0.0","name":"x y","plugins":[{"type":"/bin/sh"},{"ipam":{}}]}"#;
    let f = File::new("many.yaml", &nad_yaml("many", config));
    let checks = validate(&[f.arg(), "--json"], "").json();
    let messages: Vec<&str> = checks.iter().filter_map(|c| c["message"].as_str()).collect();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    assert!(checks.iter().all(|c| c["status"] == "fail"));
}

#[test]
fn stdin_input() {
    let out = validate(&["-"], C2);
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    assert!(out.stdout.starts_with("✓ NAD default/macvlan-conf: conflist (macvlan, tuning)"), "{}", out.stdout);
    let out = validate(&["-", "--namespace", "blue", "--json"], C1);
    assert_eq!(out.json()[0]["check"], "NAD blue/privatezone-macvlan-conf");
    let out = validate(&["-"], "not: [valid");
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.starts_with("✗ input stdin: not valid YAML: "), "{}", out.stdout);
}

#[test]
fn seed_annotations_are_valid() {
    for annotation in ["privatezone-macvlan-conf", "ipvlan-conf-1, ipvlan-conf-2", D3] {
        let out = validate(&["--annotation", annotation], "");
        assert_eq!(out.code, Some(0), "{annotation}: {}", out.stdout);
    }
    let out = validate(&["--annotation", "ipvlan-conf-1, ipvlan-conf-2", "--json"], "");
    assert_eq!(out.json()[0]["message"], "selects 2 network(s): default/ipvlan-conf-1, default/ipvlan-conf-2");
    let out = validate(&["--default-network", "calico", "--json"], "");
    assert_eq!(out.json()[0]["message"], "selects kube-system/calico");
}

#[test]
fn bad_annotations_are_refused() {
    for (annotation, expected) in [
        ("a,,b", "network selection #2 (\"\"): empty entry (stray comma?)"),
        ("ns/a/b", "more than one '/'"),
        (r#"{"name":"a"}"#, "must be a JSON list of objects, not an object"),
    ] {
        let out = validate(&["--annotation", annotation, "--json"], "");
        assert_eq!(out.code, Some(1), "{annotation}");
        let checks = out.json();
        assert_eq!(checks[0]["check"], "annotation k8s.v1.cni.cncf.io/networks");
        assert_eq!(checks[0]["status"], "fail");
        let message = checks[0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{annotation}: {message}");
    }
    let ecmp = r#"[{"name":"a","default-route":["10.1.1.1"]},{"name":"b","default-route":["10.1.2.1"]}]"#;
    let out = validate(&["--annotation", ecmp, "--json"], "");
    assert_eq!(out.code, Some(1));
    assert_eq!(out.json()[1]["check"], "default-route");
    let out = validate(&["--default-network", "a,b"], "");
    assert_eq!(out.code, Some(1), "the default network is exactly one");
}

#[test]
fn requested_capabilities_must_be_declared_by_the_nad() {
    let c2 = File::new("c2.yaml", C2);
    let out = validate(&[c2.arg(), "--annotation", D3], "");
    assert_eq!(out.code, Some(0), "{}", out.stdout);

    // C1 declares no capability: the seed's `ips` request would reach no plugin.
    let ips_on_c1 = r#"[{"name": "privatezone-macvlan-conf", "ips": ["10.12.34.201/24"]}]"#;
    let c1 = File::new("c1.yaml", C1);
    let out = validate(&[c1.arg(), "--annotation", ips_on_c1, "--json"], "");
    assert_eq!(out.code, Some(1));
    let checks = out.json();
    let last = checks.last().expect("checks");
    assert_eq!(last["check"], "capabilities default/privatezone-macvlan-conf");
    assert_eq!(last["status"], "fail");
    assert!(last["message"].as_str().unwrap_or_default().contains("declares the \"ips\" capability"), "{last}");

    // infiniband-guid is requested under another name than the capability's.
    let guid = r#"[{"name": "macvlan-conf", "infiniband-guid": "c2:11:22:33:44:55:66:77"}]"#;
    let out = validate(&[c2.arg(), "--annotation", guid, "--json"], "");
    assert_eq!(out.code, Some(1));
    let hint = out.json().last().and_then(|c| c["hint"].as_str().map(String::from)).unwrap_or_default();
    assert!(hint.contains("{\"infinibandGUID\": true}"), "{hint}");
}

#[test]
fn json_output_shape() {
    let c2 = File::new("c2.yaml", C2);
    let out = validate(&[c2.arg(), "--annotation", "macvlan-conf,,x", "--json"], "");
    assert_eq!(out.code, Some(1));
    for check in out.json() {
        let object = check.as_object().expect("each check is an object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["check", "hint", "message", "status"]);
        assert!(["ok", "warn", "fail"].contains(&check["status"].as_str().unwrap_or_default()));
        assert!(check["check"].is_string() && check["message"].is_string());
        assert!(check["hint"].is_string() || (check["hint"].is_null() && check["status"] == "ok"));
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = validate(&[], "");
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("nothing to validate"), "{}", out.stderr);
    assert!(out.stdout.is_empty());

    let out = validate(&["/nonexistent/nad.yaml"], "");
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("cannot read /nonexistent/nad.yaml"), "{}", out.stderr);

    let out = validate(&["--no-such-flag"], "");
    assert_eq!(out.code, Some(2), "clap's usage error");

    let binary = File::new("nad.bin", "");
    std::fs::write(&binary.path, [0xff, 0xfe, 0x00]).expect("write");
    assert_eq!(validate(&[binary.arg()], "").code, Some(2));
}

#[test]
fn a_reader_that_hangs_up_early_is_no_crash() {
    let c2 = File::new("c2.yaml", C2);
    // A pipe whose reader is gone before the first write, as with `multus validate ... | head -0`.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = multus_cli(&["validate", c2.arg()])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run multus validate");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Several inputs, a directory among them: the quickstart pods' annotations are checked
/// against the quickstart NADs (ips and mac requested, both declared).
#[test]
fn pods_are_checked_against_the_nads_given() {
    let dir = repo_path("examples/quickstart");
    let out = validate(&["--json", path_arg(&dir)], "");
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let checks = out.json();
    let named = |prefix: &str| checks.iter().filter(|c| c["check"].as_str().unwrap_or("").starts_with(prefix)).count();
    assert!(named("pod default/quickstart-json: capabilities default/quickstart-static") == 1, "{checks:?}");
    assert!(named("pod default/quickstart-comma: annotation") == 1, "{checks:?}");

    // The JSON pod alone, with only the bridge NAD: quickstart-static is not given.
    let pod = dir.join("pod-json.yaml");
    let bridge = dir.join("nad-bridge.yaml");
    let out = validate(&["--json", path_arg(&bridge), path_arg(&pod)], "");
    let checks = out.json();
    let missing = checks
        .iter()
        .find(|c| c["check"] == "pod default/quickstart-json: capabilities default/quickstart-static")
        .unwrap_or_else(|| panic!("{checks:?}"));
    assert_eq!(missing["status"], "warn", "{missing}");

    // A NAD that does not declare the mac capability the pod asks for.
    let no_mac = File::new(
        "quickstart-static.yaml",
        &nad_yaml(
            "quickstart-static",
            r#"{"cniVersion":"0.4.0","type":"bridge","capabilities":{"ips":true},"ipam":{"type":"static"}}"#,
        ),
    );
    let out = validate(&["--json", path_arg(&no_mac.path), path_arg(&pod)], "");
    assert_eq!(out.code, Some(1), "{}", out.stdout);
}
