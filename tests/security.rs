//! The security review, enforced: what a config, an annotation or a cache file can make
//! us execute; the modes of the files we write; secrets in logs; namespace isolation;
//! the RBAC we ask for against the API calls we make; the environment delegates get.
//!
//! Decision on symlinks in binDir (tested below): a plugin is looked up by a *plain
//! name* in binDir, then in CNI_PATH, and a symlink found there is followed, wherever it
//! points — as libcni's `FindInPath` does. The confinement is of the name (no config,
//! annotation or cache file can name a path), not of the link target: binDir and
//! CNI_PATH belong to root, and whoever can put a symlink there can put a binary there.
//! A dangling link, a link to a directory or a file without an execute bit is "not
//! found" (code 7) and nothing runs.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::*;

/// A script outside binDir that leaves `<dir>/escaped` when it runs.
fn canary(dir: &Path) -> (PathBuf, PathBuf) {
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let marker = dir.join("escaped");
    let script = write_script(
        &outside,
        "escape",
        &format!("touch '{}'\necho '{{\"cniVersion\":\"1.0.0\",\"dns\":{{}}}}'", marker.display()),
    );
    (script, marker)
}

fn cid() -> String {
    format!("sec-{}", unique("s"))
}

// ---------------------------------------------------------------------------------------
// Plugin path confinement
// ---------------------------------------------------------------------------------------

#[test]
fn plugin_types_are_plain_names_in_bin_dir_or_cni_path() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let (script, marker) = canary(dir.tmp.path());
    let abs = script.display().to_string();
    let types = [
        "../outside/escape".to_string(),
        "../../outside/escape".to_string(),
        format!("..{}", abs), // "../tmp/…"
        abs.clone(),
        "outside/escape".to_string(),
        "./escape".to_string(),
        "escape".to_string(), // only outside binDir and CNI_PATH
        "escape\0".to_string(),
        "..".to_string(),
    ];
    for t in &types {
        for command in ["ADD", "DEL", "CHECK"] {
            let conf =
                dir.multus_conf("1.0.0", vec![json!({"cniVersion": "1.0.0", "name": "x", "type": t})], json!({}));
            let out = Invocation::new(command, &cid(), &ns.path).run_json(&conf);
            // refused as config (7); a CHECK of a plain name with nothing cached stops
            // earlier, at "unknown container" (3); a DEL with nothing cached works from a
            // guessed list, where a plugin that is not installed is logged, not an error
            match (command, t.as_str()) {
                ("CHECK", "escape") => drop(out.err(3)),
                ("DEL", "escape") => drop(out.ok()),
                _ => drop(out.err(7)),
            }
            assert!(!marker.exists(), "{command} with type {t:?} ran {abs}");
        }
        // inside a conflist, after a good plugin
        let conf = dir.multus_conf(
            "1.0.0",
            vec![json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "fake_delegate"}, {"type": t}]})],
            json!({}),
        );
        Invocation::new("ADD", &cid(), &ns.path).run_json(&conf).err(7);
        assert!(!marker.exists(), "conflist type {t:?}");
    }
    assert!(dir.calls().is_empty(), "nothing ran: {:?}", dir.call_summary());
    assert!(dir.cache_files().is_empty());
}

/// A NAD (anyone who may create NADs in a namespace) cannot name a path either.
#[test]
fn a_nad_cannot_name_a_path() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let (script, marker) = canary(dir.tmp.path());
    let api = Api::start(&dir);
    let abs = script.display().to_string();
    for (i, t) in ["../outside/escape", abs.as_str(), "../../../../../../bin/sh"].iter().enumerate() {
        let name = format!("evil{i}");
        api.add_nad("default", &name, &json!({"cniVersion": "1.0.0", "type": t}));
        api.add_pod("default", "pod-1", "uid-1", json!({"k8s.v1.cni.cncf.io/networks": name}));
        let conf = dir.multus_conf(
            "1.0.0",
            vec![dir.fake("fa", "1.0.0", json!({}))],
            json!({"kubeconfig": api.kubeconfig, "apiTimeoutSeconds": 2}),
        );
        let e = Invocation::new("ADD", &cid(), &ns.path).run_json(&conf).err(7);
        assert!(e["msg"].as_str().unwrap().contains("must be a plain file name"), "{e}");
        assert!(!marker.exists(), "NAD type {t:?} ran");
    }
    assert!(dir.calls().is_empty(), "nothing ran before the check: {:?}", dir.call_summary());
}

/// A tampered scratch cache (its records hold the configs DEL replays) cannot name a
/// path: the record is refused as corrupt, DEL falls back, the path never runs.
#[test]
fn a_tampered_cache_cannot_name_a_path() {
    require_root!();
    use base64::Engine;
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let (script, marker) = canary(dir.tmp.path());
    let conf = dir.multus_conf("1.0.0", vec![dir.fake("fa", "1.0.0", json!({}))], json!({}));
    let add = Invocation::new("ADD", &cid(), &ns.path);
    add.run_json(&conf).ok();
    let evil = json!({"cniVersion": "1.0.0", "name": "fa", "type": script.display().to_string()}).to_string();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&evil);
    let scratch = dir.scratch_cache(&add.env["CNI_CONTAINERID"]);
    let mut records: Value = serde_json::from_slice(&std::fs::read(&scratch).unwrap()).unwrap();
    records[0]["Bytes"] = b64.clone().into();
    std::fs::write(&scratch, records.to_string()).unwrap();
    let result = dir.result_cache("fa", &add.env["CNI_CONTAINERID"], "eth0");
    let mut rec: Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    rec["config"] = b64.into();
    std::fs::write(&result, rec.to_string()).unwrap();
    add.command("DEL").run_json(&conf).ok();
    assert!(!marker.exists(), "DEL ran the path from the cache");
    assert_eq!(dir.call_summary(), [call("ADD", "fa", "eth0"), call("DEL", "fa", "eth0")], "the config's delegate");
}

#[test]
fn symlinks_in_bin_dir_are_followed_and_nothing_else_is_found() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new();
    let (script, marker) = canary(dir.tmp.path());
    let link = |name: &str, target: &Path| std::os::unix::fs::symlink(target, dir.bin_dir.join(name)).unwrap();
    link("linked", &script);
    link("dangling", &dir.tmp.path().join("no-such-file"));
    link("to-a-dir", &dir.tmp.path().join("outside"));
    let plain = dir.bin_dir.join("not-executable");
    std::fs::copy(&script, &plain).unwrap();
    std::fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::create_dir(dir.bin_dir.join("a-dir")).unwrap();
    for t in ["dangling", "to-a-dir", "not-executable", "a-dir"] {
        let conf = dir.multus_conf("1.0.0", vec![json!({"cniVersion": "1.0.0", "name": "x", "type": t})], json!({}));
        let e = Invocation::new("ADD", &cid(), &ns.path).run_json(&conf).err(7);
        assert!(e["msg"].as_str().unwrap().contains("failed to find plugin"), "{t}: {e}");
        assert!(!marker.exists(), "{t} ran");
    }
    // the documented choice: a link root put into binDir is followed (as libcni does)
    let conf = dir.multus_conf("1.0.0", vec![json!({"cniVersion": "1.0.0", "name": "x", "type": "linked"})], json!({}));
    let add = Invocation::new("ADD", &cid(), &ns.path);
    add.run_json(&conf).ok();
    assert!(marker.exists(), "a symlink in binDir is followed");
    add.command("DEL").run_json(&conf).ok();
}

// ---------------------------------------------------------------------------------------
// File modes
// ---------------------------------------------------------------------------------------

/// Run the plugin under `umask 000`: our modes must not depend on the caller's umask.
fn run_with_umask0(inv: &Invocation, stdin: &Value) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("umask 000; exec '{}'", multus_bin().display()))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(&inv.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.to_string().as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn caches_and_logs_are_private_whatever_the_umask() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let log = dir.tmp.path().join("log/multus.log");
    let conf = dir.multus_conf(
        "1.0.0",
        vec![dir.fake("fa", "1.0.0", json!({})), dir.fake("fb", "1.0.0", json!({}))],
        json!({"logFile": log, "logLevel": "debug"}),
    );
    let add = Invocation::new("ADD", &cid(), &ns.path);
    let out = run_with_umask0(&add, &conf);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let cid = &add.env["CNI_CONTAINERID"];
    assert_eq!(mode(&dir.cni_dir), 0o700, "cniDir");
    assert_eq!(mode(&dir.cni_dir.join("results")), 0o700, "results dir");
    assert_eq!(mode(&dir.scratch_cache(cid)), 0o600, "scratch cache");
    for (net, ifname) in [("fa", "eth0"), ("fb", "net1")] {
        assert_eq!(mode(&dir.result_cache(net, cid, ifname)), 0o600, "results cache {net}");
    }
    assert_eq!(mode(&log), 0o600, "log file");
    let files = dir.cache_files();
    assert_eq!(files.len(), 3, "{files:?}");
    add.command("DEL").run_json(&conf).ok();
}

#[test]
fn multus_install_writes_a_private_kubeconfig() {
    let root = tempfile::tempdir().unwrap();
    let conf_dir = root.path().join("net.d");
    let sa = root.path().join("sa");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::create_dir_all(&sa).unwrap();
    std::fs::write(sa.join("token"), "sa-token-value").unwrap();
    std::fs::write(sa.join("ca.crt"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
    std::fs::write(
        conf_dir.join("10-primary.conflist"),
        r#"{"cniVersion":"1.0.0","name":"primary","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec '{}' install --once --skip-multus-binary-copy --wait-timeout 0 --cni-conf-dir '{}' \
             --cni-bin-dir '{}' --service-account-dir '{}'",
            multus_bin().display(),
            conf_dir.display(),
            root.path().display(),
            sa.display()
        ))
        .env_remove("CNI_COMMAND")
        .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        .env("KUBERNETES_SERVICE_PORT", "443")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kc = conf_dir.join("multus.d/multus.kubeconfig");
    assert!(std::fs::read_to_string(&kc).unwrap().contains("sa-token-value"));
    assert_eq!(mode(&kc), 0o600, "kubeconfig");
    assert_eq!(mode(kc.parent().unwrap()), 0o700, "multus.d");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("sa-token-value"), "the installer logged the token: {stderr}");
}

// ---------------------------------------------------------------------------------------
// Secrets in logs
// ---------------------------------------------------------------------------------------

#[test]
fn no_token_in_logs_at_any_level() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let api = Api::start(&dir);
    api.add_nad("default", "fnad", &dir.fake("fnad", "1.0.0", json!({})));
    api.add_pod("default", "pod-1", "uid-1", json!({"k8s.v1.cni.cncf.io/networks": "fnad"}));
    let log = dir.tmp.path().join("multus.log");
    let mut checked = 0;
    for level in ["debug", "verbose", "error", "trace"] {
        let conf = dir.multus_conf(
            "1.0.0",
            vec![dir.fake("fa", "1.0.0", json!({}))],
            json!({"kubeconfig": api.kubeconfig, "logFile": log, "logLevel": level, "apiTimeoutSeconds": 2}),
        );
        // a good ADD and DEL, one that the API refuses (401), one with a broken kubeconfig
        let add = Invocation::new("ADD", &cid(), &ns.path);
        let mut outs = vec![add.run_json(&conf)];
        outs.push(add.command("DEL").run_json(&conf));
        api.standin.require_token(Some("another-token"));
        outs.push(Invocation::new("ADD", &cid(), &ns.path).run_json(&conf));
        api.standin.require_token(None);
        let good = std::fs::read_to_string(&api.kubeconfig).unwrap();
        std::fs::write(&api.kubeconfig, good.replace("current-context: standin", "current-context: [broken")).unwrap();
        outs.push(Invocation::new("ADD", &cid(), &ns.path).run_json(&conf));
        std::fs::write(&api.kubeconfig, &good).unwrap();
        for o in &outs {
            assert!(!o.stderr.contains(&api.token), "{level}: token on stderr:\n{}", o.stderr);
            assert!(!o.stdout.contains(&api.token), "{level}: token on stdout: {}", o.stdout);
            checked += 1;
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!text.contains(&api.token), "{level}: token in the log file");
        if level == "debug" {
            assert!(text.contains("DEBUG"), "debug logging is on: {text}");
        }
    }
    assert!(
        api.standin.requests().iter().any(|r| r.authorization.as_deref() == Some(&format!("Bearer {}", api.token)))
    );
    eprintln!("{checked} invocations, no token in stdout, stderr or logFile");
}

// ---------------------------------------------------------------------------------------
// Namespace isolation
// ---------------------------------------------------------------------------------------

fn pod_in(ns_name: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns_name};K8S_POD_NAME=pod-1;K8S_POD_UID=uid-1;K8S_POD_INFRA_CONTAINER_ID=x"
    )
}

#[test]
fn namespace_isolation_covers_both_annotations() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let api = Api::start(&dir);
    for nad_ns in ["team-a", "team-b", "shared"] {
        api.add_nad(nad_ns, "net", &dir.fake("net", "1.0.0", json!({})));
    }
    let cases: [(&str, Value, Option<&str>); 7] = [
        ("networks, comma form", json!({"k8s.v1.cni.cncf.io/networks": "team-b/net"}), None),
        (
            "networks, JSON namespace key",
            json!({"k8s.v1.cni.cncf.io/networks": r#"[{"name":"net","namespace":"team-b"}]"#}),
            None,
        ),
        ("networks, JSON ns/name", json!({"k8s.v1.cni.cncf.io/networks": r#"[{"name":"team-b/net"}]"#}), None),
        ("default-network", json!({"v1.multus-cni.io/default-network": "team-b/net"}), None),
        ("default-network, unqualified (multusNamespace)", json!({"v1.multus-cni.io/default-network": "net"}), None),
        (
            "default-network in a global namespace",
            json!({"v1.multus-cni.io/default-network": "shared/net"}),
            Some("shared"),
        ),
        ("own namespace", json!({"v1.multus-cni.io/default-network": "team-a/net"}), Some("team-a")),
    ];
    for (what, annotations, allowed) in cases {
        api.add_pod("team-a", "pod-1", "uid-1", annotations);
        api.standin.clear_requests();
        let conf = dir.multus_conf(
            "1.0.0",
            vec![dir.fake("fa", "1.0.0", json!({}))],
            json!({"kubeconfig": api.kubeconfig, "namespaceIsolation": true, "globalNamespaces": "shared",
                   "multusNamespace": "team-b"}),
        );
        let add = Invocation::new("ADD", &cid(), &ns.path).set("CNI_ARGS", &pod_in("team-a"));
        let out = add.run_json(&conf);
        match allowed {
            None => {
                let e = out.err(7);
                assert!(e["msg"].as_str().unwrap().contains("namespace isolation"), "{what}: {e}");
                let fetched: Vec<String> =
                    api.request_lines().into_iter().filter(|l| l.contains("network-attachment-definitions")).collect();
                assert!(fetched.is_empty(), "{what}: a NAD of another namespace was fetched: {fetched:?}");
                assert!(dir.calls().is_empty(), "{what}: {:?}", dir.call_summary());
            }
            Some(_) => {
                out.ok();
                add.command("DEL").run_json(&conf).ok();
                let _ = std::fs::remove_file(&dir.record);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// RBAC: exactly what the code uses
// ---------------------------------------------------------------------------------------

/// `(apiGroup, resource, verb)` granted by the ClusterRole of the DaemonSet manifest.
fn granted() -> BTreeSet<(String, String, String)> {
    let path = repo_path("deployments/multus-daemonset.yml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    let role = docs.iter().find(|d| d["kind"] == "ClusterRole").expect("a ClusterRole");
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let list = |k: &str| -> Vec<String> {
            rule[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
        };
        for g in list("apiGroups") {
            for r in list("resources") {
                for v in list("verbs") {
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

/// The API group of a request path: `/api/v1/…` is the core group.
fn group(path: &str) -> String {
    match path.strip_prefix("/apis/") {
        Some(rest) => rest.split('/').next().unwrap_or_default().to_string(),
        None => String::new(),
    }
}

#[test]
fn rbac_grants_exactly_what_add_and_del_use() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let api = Api::start(&dir);
    api.add_nad("default", "fnad", &dir.fake("fnad", "1.0.0", json!({})));
    api.add_nad("default", "missing-later", &dir.fake("other", "1.0.0", json!({})));
    api.add_pod("default", "pod-1", "uid-1", json!({"k8s.v1.cni.cncf.io/networks": "fnad"}));
    let conf = dir.multus_conf(
        "1.0.0",
        vec![dir.fake("fa", "1.0.0", json!({}))],
        json!({"kubeconfig": api.kubeconfig, "apiTimeoutSeconds": 3}),
    );
    // 1. ADD and DEL as usual (merge-patch), 2. the 403 fallback (GET + PUT pods/status),
    // 3. a DEL without any cache (the pod and its NADs read again), 4. a missing NAD
    // (the NoNetworkFound event)
    let add = Invocation::new("ADD", &cid(), &ns.path);
    add.run_json(&conf).ok();
    add.command("DEL").run_json(&conf).ok();
    api.standin.deny("patch", "pods");
    let add = Invocation::new("ADD", &cid(), &ns.path);
    add.run_json(&conf).ok();
    std::fs::remove_dir_all(&dir.cni_dir).unwrap();
    add.command("DEL").run_json(&conf).ok();
    api.add_pod("default", "pod-1", "uid-1", json!({"k8s.v1.cni.cncf.io/networks": "nope"}));
    Invocation::new("ADD", &cid(), &ns.path).run_json(&conf).err(101);

    let used: BTreeSet<(String, String, String)> =
        api.standin.requests().iter().map(|r| (group(&r.path), r.resource.clone(), r.verb.clone())).collect();
    // The DaemonSet's node agent (`multus agent`, same service account) lists and
    // watches NADs for its mirror (tests/agent_mirror.rs); the plugin itself never does.
    let agent: BTreeSet<(String, String, String)> = ["list", "watch"]
        .into_iter()
        .map(|verb| ("k8s.cni.cncf.io".to_string(), "network-attachment-definitions".to_string(), verb.to_string()))
        .collect();
    let granted: BTreeSet<_> = granted().difference(&agent).cloned().collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(missing.is_empty(), "used but not granted: {missing:?}");
    assert!(unused.is_empty(), "granted but never used (least privilege): {unused:?}\nused: {used:?}");
}

// ---------------------------------------------------------------------------------------
// The environment delegates get
// ---------------------------------------------------------------------------------------

/// A delegate that writes its whole initial environment (as the kernel handed it over)
/// to `<dump>.<command>` and answers ADD with a minimal result.
fn env_dumper(dir: &TestDir) -> PathBuf {
    let dump = dir.tmp.path().join("env");
    write_script(
        &dir.bin_dir,
        "envdump",
        &format!(
            "cat >/dev/null\ntr '\\0' '\\n' < /proc/$$/environ > '{}'.$CNI_COMMAND\n\
             [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"dns\":{{}}}}'\nexit 0",
            dump.display()
        ),
    );
    dump
}

#[test]
fn delegates_get_only_cni_variables_and_path() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new();
    let dump = env_dumper(&dir);
    let conf =
        dir.multus_conf("1.0.0", vec![json!({"cniVersion": "1.0.0", "name": "envnet", "type": "envdump"})], json!({}));
    let canaries = [
        ("MRS_CANARY", "canary-value-1"),
        ("CNI_CANARY", "canary-value-2"),
        ("HOME", "/canary/home"),
        ("KUBECONFIG", "/canary/kubeconfig"),
        ("LD_LIBRARY_PATH", "/canary/lib"),
    ];
    let mut add = Invocation::new("ADD", &cid(), &ns.path);
    for (k, v) in canaries {
        add = add.set(k, v);
    }
    add.run_json(&conf).ok();
    add.command("CHECK").run_json(&conf).ok();
    add.command("DEL").run_json(&conf).ok();
    let allowed = ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH", "PATH"];
    for command in ["ADD", "CHECK", "DEL"] {
        let text = std::fs::read_to_string(format!("{}.{command}", dump.display()))
            .unwrap_or_else(|e| panic!("the delegate did not run for {command}: {e}"));
        let keys: BTreeSet<&str> = text.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
        let extra: Vec<&&str> = keys.iter().filter(|k| !allowed.contains(k)).collect();
        assert!(extra.is_empty(), "{command}: the delegate got {extra:?}:\n{text}");
        for (_, v) in canaries {
            assert!(!text.contains(v), "{command}: a canary reached the delegate:\n{text}");
        }
        assert!(text.contains(&format!("CNI_COMMAND={command}")), "{text}");
    }
}
