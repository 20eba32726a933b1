//! Malformed input of every kind, table-driven: each case must give exactly one JSON
//! document on stdout that is a CNI error with the right code, exit 1, no panic, no
//! delegate run and nothing written in cniDir (ours, or the default one).

mod support;

use serde_json::{Value, json};
use std::path::Path;
use support::*;

/// One bad invocation: starts from a valid ADD of one fake delegate and breaks one thing.
struct Case {
    name: &'static str,
    code: u64,
    command: &'static str,
    set: Vec<(&'static str, String)>,
    unset: Vec<&'static str>,
    stdin: Stdin,
}

enum Stdin {
    /// The valid config, changed by a function.
    Conf(fn(&mut Value)),
    /// These exact bytes (built from the valid config's text).
    Raw(fn(&str) -> Vec<u8>),
}

fn case(name: &'static str, code: u64) -> Case {
    Case { name, code, command: "ADD", set: Vec::new(), unset: Vec::new(), stdin: Stdin::Conf(|_| {}) }
}

impl Case {
    fn cmd(mut self, c: &'static str) -> Case {
        self.command = c;
        self
    }
    fn env(mut self, k: &'static str, v: &str) -> Case {
        self.set.push((k, v.to_string()));
        self
    }
    fn unset(mut self, k: &'static str) -> Case {
        self.unset.push(k);
        self
    }
    fn conf(mut self, f: fn(&mut Value)) -> Case {
        self.stdin = Stdin::Conf(f);
        self
    }
    fn raw(mut self, f: fn(&str) -> Vec<u8>) -> Case {
        self.stdin = Stdin::Raw(f);
        self
    }
}

fn nested(depth: usize, open: &str, close: &str) -> Vec<u8> {
    format!(r#"{{"cniVersion":"1.0.0","name":"deep","x":{}{}}}"#, open.repeat(depth), close.repeat(depth)).into_bytes()
}

fn cases() -> Vec<Case> {
    vec![
        // stdin that is no config at all: 6
        case("stdin not JSON", 6).raw(|_| b"hello, multus".to_vec()),
        case("stdin empty", 6).raw(|_| Vec::new()),
        case("stdin a JSON array", 6).raw(|_| b"[1, 2, 3]".to_vec()),
        case("stdin a JSON string", 6).raw(|_| br#""multus""#.to_vec()),
        case("stdin JSON null", 6).raw(|_| b"null".to_vec()),
        case("stdin invalid UTF-8", 6).raw(|_| b"{\"name\":\"\xff\xfe\"}".to_vec()),
        case("stdin truncated", 6).raw(|c| c.as_bytes()[..c.len() / 2].to_vec()),
        case("stdin with trailing garbage", 6).raw(|c| format!("{c} trailing").into_bytes()),
        case("10000-deep arrays", 6).raw(|_| nested(10_000, "[", "]")),
        case("10000-deep objects", 6).raw(|_| nested(10_000, r#"{"a":"#, "}")),
        case("17 MiB of whitespace", 6).raw(|c| {
            let mut v = c.as_bytes().to_vec();
            v.resize(17 << 20, b' ');
            v
        }),
        // a valid but huge config is read in full; it fails later, on its delegate
        case("10 MB whitespace-padded config", 7).raw(|c| {
            let c = c.replace(r#""type":"fake_delegate""#, r#""type":"mrs-not-installed""#);
            let pad = " ".repeat(5 << 20);
            format!("{pad}{c}{pad}").into_bytes()
        }),
        // the config's own keys
        case("missing name", 7).conf(|c| {
            c.as_object_mut().unwrap().remove("name");
        }),
        case("empty name", 7).conf(|c| c["name"] = "".into()),
        case("name with a space", 7).conf(|c| c["name"] = "multus net".into()),
        case("name with a slash", 7).conf(|c| c["name"] = "../etc".into()),
        case("name not a string", 6).conf(|c| c["name"] = 42.into()),
        case("cniVersion 9.9.9", 1).conf(|c| c["cniVersion"] = "9.9.9".into()),
        case("cniVersion 1.0", 1).conf(|c| c["cniVersion"] = "1.0".into()),
        case("cniVersion not a string", 6).conf(|c| c["cniVersion"] = 1.into()),
        case("delegates not a list", 6).conf(|c| c["delegates"] = "fa".into()),
        case("no delegates", 7).conf(|c| c["delegates"] = json!([])),
        case("runtimeConfig not an object", 6).conf(|c| c["runtimeConfig"] = "mac".into()),
        // delegates
        case("delegate not an object", 7).conf(|c| c["delegates"][0] = 42.into()),
        case("delegate missing type", 7).conf(|c| {
            c["delegates"][0].as_object_mut().unwrap().remove("type");
        }),
        case("delegate type ../../bin/sh", 7).conf(|c| c["delegates"][0]["type"] = "../../bin/sh".into()),
        case("delegate type /bin/sh", 7).conf(|c| c["delegates"][0]["type"] = "/bin/sh".into()),
        case("delegate type ..", 7).conf(|c| c["delegates"][0]["type"] = "..".into()),
        case("delegate type with NUL", 7).conf(|c| c["delegates"][0]["type"] = "fake\0x".into()),
        case("delegate type empty", 7).conf(|c| c["delegates"][0]["type"] = "".into()),
        case("second delegate type /bin/sh", 7).conf(|c| {
            let mut d = c["delegates"][0].clone();
            d["name"] = "fb".into();
            d["type"] = "/bin/sh".into();
            c["delegates"].as_array_mut().unwrap().push(d);
        }),
        case("conflist plugin type /bin/sh", 7).conf(|c| {
            c["delegates"][0] = json!({"cniVersion": "1.0.0", "name": "l", "plugins": [{"type": "/bin/sh"}]});
        }),
        case("conflist plugin missing type", 7).conf(|c| {
            c["delegates"][0] = json!({"cniVersion": "1.0.0", "name": "l", "plugins": [{"mtu": 1400}]});
        }),
        case("conflist without plugins", 7).conf(|c| {
            c["delegates"][0] = json!({"cniVersion": "1.0.0", "name": "l", "plugins": []});
        }),
        case("delegate missing name", 7).conf(|c| {
            c["delegates"][0].as_object_mut().unwrap().remove("name");
        }),
        // the name makes the results-cache file name: never a path (libcni's rule)
        case("delegate name ../../escaped", 7).conf(|c| c["delegates"][0]["name"] = "../../escaped".into()),
        case("delegate name with a slash", 7).conf(|c| c["delegates"][0]["name"] = "a/b".into()),
        case("delegate name with a space", 7).conf(|c| c["delegates"][0]["name"] = "a b".into()),
        case("delegate name not a string", 7).conf(|c| c["delegates"][0]["name"] = json!(["fa"])),
        case("DEL, delegate name ../../escaped", 7)
            .cmd("DEL")
            .conf(|c| c["delegates"][0]["name"] = "../../escaped".into()),
        case("delegate cniVersion 9.9.9", 1).conf(|c| c["delegates"][0]["cniVersion"] = "9.9.9".into()),
        case("delegate binary not installed", 7).conf(|c| c["delegates"][0]["type"] = "mrs-not-installed".into()),
        // the environment: 4
        case("unknown CNI_COMMAND", 4).cmd("FROB"),
        case("ADD without CNI_CONTAINERID", 4).unset("CNI_CONTAINERID"),
        case("ADD without CNI_NETNS", 4).unset("CNI_NETNS"),
        case("ADD without CNI_IFNAME", 4).unset("CNI_IFNAME"),
        case("ADD without CNI_PATH", 4).unset("CNI_PATH"),
        case("DEL without CNI_CONTAINERID", 4).cmd("DEL").unset("CNI_CONTAINERID"),
        case("DEL without CNI_IFNAME", 4).cmd("DEL").unset("CNI_IFNAME"),
        case("CHECK without CNI_NETNS", 4).cmd("CHECK").unset("CNI_NETNS"),
        case("STATUS without CNI_PATH", 4).cmd("STATUS").unset("CNI_PATH"),
        case("GC without CNI_PATH", 4).cmd("GC").unset("CNI_PATH"),
        case("CNI_IFNAME too long", 4).env("CNI_IFNAME", "eth0123456789abc"),
        case("CNI_IFNAME with /", 4).env("CNI_IFNAME", "eth/0"),
        case("CNI_IFNAME with :", 4).env("CNI_IFNAME", "eth0:1"),
        case("CNI_IFNAME ..", 4).env("CNI_IFNAME", ".."),
        case("DEL with CNI_IFNAME with /", 4).cmd("DEL").env("CNI_IFNAME", "../x"),
        case("container id starting with -", 4).env("CNI_CONTAINERID", "-rf"),
        case("container id with a path", 4).env("CNI_CONTAINERID", "../../etc/passwd"),
        case("DEL container id with a path", 4).cmd("DEL").env("CNI_CONTAINERID", "a/../../b"),
        case("container id with a space", 4).env("CNI_CONTAINERID", "a b"),
        case("CNI_ARGS pair without =", 4).env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME"),
        case("CNI_ARGS unknown key, strict", 4).env("CNI_ARGS", "K8S_POD_NAME=p;FOO=bar"),
        // the netns and the verbs' version requirements
        case("CNI_NETNS does not exist", 102).env("CNI_NETNS", "/var/run/netns/mrs-no-such-netns"),
        case("CNI_NETNS not a netns", 102).env("CNI_NETNS", "/etc/hostname"),
        case("CHECK on a 0.3.1 config", 1).cmd("CHECK").conf(|c| c["cniVersion"] = "0.3.1".into()),
        case("STATUS on a 1.0.0 config", 1).cmd("STATUS"),
        case("GC on a 1.0.0 config", 1).cmd("GC"),
        case("DEL with empty stdin", 6).cmd("DEL").raw(|_| Vec::new()),
        case("DEL with a path-like type", 7).cmd("DEL").conf(|c| c["delegates"][0]["type"] = "../../bin/sh".into()),
        case("CHECK with a path-like type", 7).cmd("CHECK").conf(|c| c["delegates"][0]["type"] = "/bin/sh".into()),
    ]
}

/// What must hold for one case; `Err` describes the first violation.
fn run_case(c: &Case, dir: &TestDir, netns: &str, n: usize) -> Result<(), String> {
    let cid = format!("itest-bad-{}-{n}", std::process::id());
    let mut conf = dir.multus_conf("1.0.0", vec![dir.fake("fa", "1.0.0", json!({}))], json!({}));
    let stdin = match &c.stdin {
        Stdin::Conf(f) => {
            f(&mut conf);
            conf.to_string().into_bytes()
        }
        Stdin::Raw(f) => f(&conf.to_string()),
    };
    let mut inv = Invocation::new(c.command, &cid, netns);
    for (k, v) in &c.set {
        inv = inv.set(k, v);
    }
    for k in &c.unset {
        inv = inv.unset(k);
    }
    let out = inv.run(&stdin);
    let mut problems = Vec::new();
    if out.exit_code != 1 {
        problems.push(format!("exit code {}", out.exit_code));
    }
    if out.docs.len() != 1 {
        problems.push(format!("{} JSON documents on stdout", out.docs.len()));
    }
    if let Some(e) = out.docs.first() {
        if e["code"].as_u64() != Some(c.code) {
            problems.push(format!("code {} instead of {}", e["code"], c.code));
        }
        if e["msg"].as_str().is_none_or(str::is_empty) {
            problems.push("no msg".into());
        }
        if !e["cniVersion"].as_str().is_some_and(|v| v.starts_with("0.") || v.starts_with("1.")) {
            problems.push("no cniVersion".into());
        }
    }
    if out.stderr.contains("panicked") || out.stderr.contains("overflow") {
        problems.push("panicked".into());
    }
    if dir.cni_dir.exists() {
        problems.push(format!("cniDir written: {:?}", dir.cache_files()));
        let _ = std::fs::remove_dir_all(&dir.cni_dir);
    }
    if let Some(parent) = dir.cni_dir.parent()
        && std::fs::read_dir(parent).is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().contains(&cid)))
    {
        problems.push("a file named after the container was written next to cniDir".into());
    }
    if Path::new("/var/lib/cni/multus").join(&cid).exists() {
        problems.push("the default cniDir was written".into());
    }
    if !dir.calls().is_empty() {
        problems.push(format!("delegates ran: {:?}", dir.call_summary()));
        let _ = std::fs::remove_file(&dir.record);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}\n    stdout: {}\n    stderr: {}",
            c.name,
            problems.join(", "),
            out.stdout.trim(),
            out.stderr.lines().last().unwrap_or_default()
        ))
    }
}

#[test]
fn every_bad_input_is_one_clean_cni_error() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let cases = cases();
    assert!(cases.len() >= 25);
    let failures: Vec<String> =
        cases.iter().enumerate().filter_map(|(n, c)| run_case(c, &dir, &ns.path, n).err()).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// The control: the unbroken invocation of the table succeeds (so each case fails for
/// the one thing it breaks).
#[test]
fn the_unbroken_case_succeeds() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let conf = dir.multus_conf("1.0.0", vec![dir.fake("fa", "1.0.0", json!({}))], json!({}));
    let add = Invocation::new("ADD", &format!("itest-good-{}", std::process::id()), &ns.path);
    let r = add.run_json(&conf).ok();
    assert_eq!(r["cniVersion"], "1.0.0");
    add.command("DEL").run_json(&conf).ok();
    assert_eq!(dir.call_summary(), [call("ADD", "fa", "eth0"), call("DEL", "fa", "eth0")]);
    assert!(dir.cache_files().is_empty());
}
