//! The bad-input corpus: every `tests/corpus/*.json` is one hostile invocation, as data.
//!
//! A case is `{"description", "command", "env", "stdin", "annotations"?, "nads"?,
//! "liar"?, "expect_code"}`:
//!
//! * `env` is laid over a valid environment (`Invocation::new`); `null` unsets a variable.
//! * `stdin` is a string (the exact bytes) or JSON (serialised). The JSON object
//!   `{"@base": {...}, "@remove": [...]}` stands for the valid config below with those
//!   keys replaced or removed.
//! * `annotations` are the pod's (`default/pod-1`, uid `uid-1`); `nads` are
//!   `{"name", "namespace"?, "config"}` (a string, JSON, or `null` for a NAD without
//!   `spec`). With either, the API
//!   stand-in runs and the base config points at it.
//! * `liar` is a scripted delegate (`"type": "liar"`): on ADD it prints `stdout` and
//!   exits with `exit`.
//! * In every string, `@BIN_DIR@ @CNI_DIR@ @DATA_DIR@ @KUBECONFIG@ @RECORD@ @NETNS@
//!   @TMP@` are replaced, and `{{repeat:N:TEXT}}` becomes TEXT N times (huge inputs
//!   stay small on disk).
//!
//! `MRS_CORPUS_VERBOSE=1` prints each case's answer.
//!
//! Each must give exactly one CNI error document on stdout with `expect_code`, exit 1,
//! no panic, and leave nothing behind: cniDir empty, the netns holding only `lo`, every
//! ADD a fake delegate made rolled back.

mod support;

use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use support::*;

fn corpus_dir() -> PathBuf {
    repo_path("tests/corpus")
}

/// The valid configuration `@base` starts from: one fake delegate.
fn base_config(with_api: bool) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "multus-cni-network",
        "type": "multus",
        "binDir": "@BIN_DIR@",
        "cniDir": "@CNI_DIR@",
        "confDir": "@TMP@/net.d",
        "logLevel": "debug",
        "logToStderr": true,
        "apiTimeoutSeconds": 2,
        "delegateTimeoutSeconds": 5,
        "delegates": [{"cniVersion": "1.0.0", "name": "fa", "type": "fake_delegate", "fake": {"record": "@RECORD@"}}],
    });
    if with_api {
        c["kubeconfig"] = "@KUBECONFIG@".into();
    }
    c
}

/// `{{repeat:N:TEXT}}` → TEXT × N.
fn expand_repeats(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{repeat:") {
        out.push_str(&rest[..start]);
        let body = &rest[start + "{{repeat:".len()..];
        let end = body.find("}}").expect("unterminated {{repeat:");
        let (n, text) = body[..end].split_once(':').expect("{{repeat:N:TEXT}}");
        out.push_str(&text.repeat(n.parse().expect("repeat count")));
        rest = &body[end + 2..];
    }
    out.push_str(rest);
    out
}

struct Vars(Vec<(&'static str, String)>);

impl Vars {
    fn apply(&self, s: &str) -> String {
        let mut s = expand_repeats(s);
        for (k, v) in &self.0 {
            s = s.replace(k, v);
        }
        s
    }

    /// Every string of `v`, keys included, with the variables applied.
    fn apply_json(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.apply(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.apply_json(x)).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (self.apply(k), self.apply_json(x))).collect()),
            other => other.clone(),
        }
    }
}

fn stdin_bytes(stdin: &Value, vars: &Vars, with_api: bool) -> Vec<u8> {
    match stdin {
        Value::String(s) => vars.apply(s).into_bytes(),
        Value::Object(m) if m.contains_key("@base") || m.contains_key("@remove") => {
            let mut c = base_config(with_api);
            if let Some(Value::Object(over)) = m.get("@base") {
                for (k, v) in over {
                    c[k] = v.clone();
                }
            }
            for k in m.get("@remove").and_then(Value::as_array).into_iter().flatten() {
                c.as_object_mut().unwrap().remove(k.as_str().unwrap());
            }
            vars.apply_json(&c).to_string().into_bytes()
        }
        other => vars.apply_json(other).to_string().into_bytes(),
    }
}

/// The delegate scripted by a case's `liar`: prints `stdout` and exits `exit` on ADD.
fn write_liar(dir: &TestDir, liar: &Value, vars: &Vars) {
    let out = dir.tmp.path().join("liar.stdout");
    std::fs::write(&out, vars.apply(liar["stdout"].as_str().unwrap_or_default())).unwrap();
    let code = liar["exit"].as_i64().unwrap_or(0);
    let body = format!("cat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then cat '{}'; exit {code}; fi", out.display());
    write_script(&dir.bin_dir, "liar", &body);
}

/// One case: `Err` lists what went wrong.
fn run_case(file: &Path, case: &Value, dir: &TestDir, ns: &Netns, n: usize) -> Result<(), String> {
    let annotations = case.get("annotations").cloned();
    let nads = case.get("nads").and_then(Value::as_array).cloned().unwrap_or_default();
    let text = case.to_string();
    let with_api = annotations.is_some() || !nads.is_empty() || text.contains("@KUBECONFIG@");
    let api = with_api.then(|| Api::start(dir));
    let vars = Vars(vec![
        ("@BIN_DIR@", dir.bin_dir.display().to_string()),
        ("@CNI_DIR@", dir.cni_dir.display().to_string()),
        ("@DATA_DIR@", dir.data_dir.display().to_string()),
        ("@RECORD@", dir.record.display().to_string()),
        ("@NETNS@", ns.path.clone()),
        ("@TMP@", dir.tmp.path().display().to_string()),
        (
            "@KUBECONFIG@",
            api.as_ref().map_or_else(|| "/nonexistent/kubeconfig".to_string(), |a| a.kubeconfig.display().to_string()),
        ),
    ]);
    if let Some(api) = &api {
        let anns = vars.apply_json(&annotations.unwrap_or(json!({})));
        api.add_pod("default", "pod-1", "uid-1", anns);
        for nad in &nads {
            let nad = vars.apply_json(nad);
            let (ns, name) = (nad["namespace"].as_str().unwrap_or("default"), nad["name"].as_str().expect("nad name"));
            match &nad["config"] {
                // a NAD without any spec
                Value::Null => api.standin.add_nad(json!({"metadata": {"name": name, "namespace": ns}})),
                config => api.add_nad(ns, name, config),
            }
        }
    }
    if let Some(liar) = case.get("liar") {
        write_liar(dir, liar, &vars);
    }

    let command = case["command"].as_str().unwrap_or("ADD");
    let mut inv = Invocation::new(command, &format!("corpus-{}-{n}", std::process::id()), &ns.path);
    for (k, v) in case.get("env").and_then(Value::as_object).cloned().unwrap_or_default() {
        inv = match v {
            Value::Null => inv.unset(&k),
            Value::String(s) => inv.set(&k, &vars.apply(&s)),
            other => panic!("{}: env {k} must be a string or null, not {other}", file.display()),
        };
    }
    let stdin = stdin_bytes(&case["stdin"], &vars, with_api);
    let out = run_plugin_lenient(&inv, &stdin);

    let want = case["expect_code"].as_u64().expect("expect_code");
    let mut problems = Vec::new();
    match &out {
        Err(e) => problems.push(e.clone()),
        Ok(out) => {
            if out.exit_code != 1 {
                problems.push(format!("exit code {}", out.exit_code));
            }
            if out.docs.len() != 1 {
                problems.push(format!("{} JSON documents on stdout", out.docs.len()));
            }
            if let Some(e) = out.docs.first() {
                if e["code"].as_u64() != Some(want) {
                    problems.push(format!("code {} instead of {want}", e["code"]));
                }
                if e["msg"].as_str().is_none_or(str::is_empty) {
                    problems.push("no msg".into());
                }
                if e["cniVersion"].as_str().is_none_or(str::is_empty) {
                    problems.push("no cniVersion".into());
                }
                if e.as_object()
                    .is_some_and(|o| o.keys().any(|k| !["cniVersion", "code", "msg", "details"].contains(&k.as_str())))
                {
                    problems.push(format!("unexpected keys in the error: {e}"));
                }
            }
            if out.stderr.contains("panicked") {
                problems.push("panicked".into());
            }
        }
    }
    if std::env::var_os("MRS_CORPUS_VERBOSE").is_some()
        && let Ok(o) = &out
    {
        eprintln!(
            "{}: {}",
            file.file_name().unwrap().to_string_lossy(),
            o.stdout.trim().chars().take(300).collect::<String>()
        );
    }
    // nothing left behind
    let cache = container_cache_files(&dir.cni_dir);
    if !cache.is_empty() {
        problems.push(format!("cniDir holds {cache:?}"));
    }
    let links = ns.link_names();
    if links != ["lo"] {
        problems.push(format!("netns holds {links:?}"));
    }
    let calls = dir.call_summary();
    for (i, c) in calls.iter().enumerate().filter(|(_, c)| c.0 == "ADD") {
        if !calls[i + 1..].iter().any(|d| d.0 == "DEL" && d.1 == c.1 && d.2 == c.2) {
            problems.push(format!("ADD of {} on {} not rolled back", c.1, c.2));
        }
    }
    // clean up for the next case whatever happened
    let _ = std::fs::remove_dir_all(&dir.cni_dir);
    let _ = std::fs::remove_file(&dir.record);
    let _ = std::fs::remove_file(dir.bin_dir.join("liar"));
    for l in links.iter().filter(|l| *l != "lo") {
        sh_quiet(&["ip", "-n", &ns.name, "link", "del", l]);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let (stdout, stderr) = match &out {
            Ok(o) => (
                o.stdout.trim().chars().take(400).collect::<String>(),
                o.stderr.lines().last().unwrap_or("").to_string(),
            ),
            Err(_) => (String::new(), String::new()),
        };
        Err(format!(
            "{} ({}): {}\n    stdout: {stdout}\n    stderr: {}",
            file.file_name().unwrap().to_string_lossy(),
            case["description"].as_str().unwrap_or(""),
            problems.join(", "),
            stderr.chars().take(300).collect::<String>()
        ))
    }
}

/// `run_plugin`, but stdout that is not JSON is a finding, not a panic.
fn run_plugin_lenient(inv: &Invocation, stdin: &[u8]) -> Result<Outcome, String> {
    let env = inv.env.clone();
    let stdin = stdin.to_vec();
    std::thread::spawn(move || run_plugin(&env, &stdin)).join().map_err(|e| {
        let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
        format!("the run itself failed: {}", msg.chars().take(400).collect::<String>())
    })
}

fn load_cases() -> Vec<(PathBuf, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, v)
        })
        .collect()
}

/// Every case file is well-formed (this runs without root).
#[test]
fn corpus_files_are_well_formed() {
    let cases = load_cases();
    assert!(cases.len() >= 100, "the corpus has {} cases", cases.len());
    let known = ["description", "command", "env", "stdin", "annotations", "nads", "liar", "expect_code"];
    let mut descriptions = std::collections::BTreeSet::new();
    for (p, c) in &cases {
        let o: &Map<String, Value> = c.as_object().unwrap_or_else(|| panic!("{}: not an object", p.display()));
        for k in o.keys() {
            assert!(known.contains(&k.as_str()), "{}: unknown key {k}", p.display());
        }
        for k in ["description", "command", "stdin", "expect_code"] {
            assert!(o.contains_key(k), "{}: no {k}", p.display());
        }
        assert!(c["expect_code"].as_u64().is_some_and(|c| c > 0), "{}", p.display());
        assert!(
            descriptions.insert(c["description"].as_str().unwrap().to_string()),
            "{}: duplicate description",
            p.display()
        );
    }
}

#[test]
fn every_corpus_case_is_one_clean_cni_error() {
    require_root!();
    let cases = load_cases();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    std::fs::create_dir_all(dir.tmp.path().join("net.d")).unwrap();
    std::fs::write(dir.tmp.path().join("corpus-not-json.conf"), "this is { not JSON").unwrap();
    let started = std::time::Instant::now();
    let mut by_code: std::collections::BTreeMap<u64, usize> = Default::default();
    let failures: Vec<String> = cases
        .iter()
        .enumerate()
        .filter_map(|(n, (p, c))| {
            *by_code.entry(c["expect_code"].as_u64().unwrap()).or_default() += 1;
            run_case(p, c, &dir, &ns, n).err()
        })
        .collect();
    eprintln!(
        "corpus: {} cases, {} passed, {} failed in {:.1?}; expected codes {by_code:?}",
        cases.len(),
        cases.len() - failures.len(),
        failures.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
