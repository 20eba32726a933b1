//! A fake CNI plugin for the integration tests (std + serde_json only).
//!
//! Its behaviour comes from the `"fake"` key of its own stdin config:
//!
//! ```json
//! {"type": "fake_delegate", "name": "fa", "cniVersion": "1.0.0",
//!  "fake": {"add": "ok", "del": "fail7", "record": "/tmp/x/calls.log", "ip": "10.99.0.2/24"}}
//! ```
//!
//! Per command (`add`, `del`, `check`, `status`, `gc`; default `ok`):
//!
//! * `ok`: ADD prints a valid result in the config's cniVersion (an interface named
//!   CNI_IFNAME in CNI_NETNS and the address `ip`); other commands print nothing.
//! * `failN` (e.g. `fail7`): a CNI error with code N, exit 1.
//! * `failN:once`: fails only the first time this network and command are seen
//!   (a marker file next to `record`), then behaves as `ok`.
//! * `garbage`: non-JSON on stdout, exit 1. `garbage0`: the same with exit 0.
//! * `badresult`: a JSON result that is no valid CNI result (address `banana`), exit 0.
//! * `empty`: nothing on stdout, exit 0. `exit1`: nothing on stdout, exit 1.
//! * `hang`: sleeps forever. `stderr`: 64 KiB on stderr ending in `FAKE-STDERR-END`,
//!   then a CNI error with code 7.
//! * `signal`: dies of SIGSEGV. `sigkill`: dies of SIGKILL.
//!
//! Every invocation first appends one JSON line to `record` (when given):
//! `{"command","name","ifname","netns","containerId","args","path","pid","stdin"}`.

use serde_json::{Value, json};
use std::io::{Read, Write};

unsafe extern "C" {
    fn raise(sig: i32) -> i32;
    fn signal(sig: i32, handler: usize) -> usize;
}

const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
const SIG_DFL: usize = 0;

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
}

fn error(version: &str, code: u32, msg: &str) -> ! {
    println!("{}", json!({"cniVersion": version, "code": code, "msg": msg, "details": "fake details"}));
    std::process::exit(1);
}

fn add_result(version: &str, ifname: &str, netns: &str, ip: &str) -> Value {
    let gateway = ip.rsplit_once('.').map(|(net, _)| format!("{net}.1")).unwrap_or_default();
    match version {
        "0.1.0" | "0.2.0" => json!({
            "cniVersion": version,
            "ip4": {"ip": ip, "gateway": gateway},
            "dns": {}
        }),
        _ => {
            let mut ipc = json!({"interface": 0, "address": ip, "gateway": gateway});
            if version.starts_with("0.3.") {
                ipc["version"] = "4".into();
            }
            json!({
                "cniVersion": version,
                "interfaces": [{"name": ifname, "mac": "02:fa:4e:00:00:01", "sandbox": netns}],
                "ips": [ipc],
                "dns": {}
            })
        }
    }
}

fn main() {
    let command = env("CNI_COMMAND");
    let mut raw = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut raw);
    if command == "VERSION" {
        println!(
            "{}",
            json!({"cniVersion": "1.0.0", "supportedVersions": ["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})
        );
        return;
    }
    let conf: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let version = conf["cniVersion"].as_str().unwrap_or("0.1.0").to_string();
    let name = conf["name"].as_str().unwrap_or_default().to_string();
    let fake = &conf["fake"];
    let ifname = env("CNI_IFNAME");
    let netns = env("CNI_NETNS");

    let record = fake["record"].as_str().unwrap_or_default();
    if !record.is_empty() {
        let line = json!({
            "command": command,
            "name": name,
            "ifname": ifname,
            "netns": netns,
            "containerId": env("CNI_CONTAINERID"),
            "args": env("CNI_ARGS"),
            "path": env("CNI_PATH"),
            "pid": std::process::id(),
            "stdin": conf,
        });
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(record).expect("open record file");
        f.write_all(format!("{line}\n").as_bytes()).expect("write record file");
    }

    let key = command.to_ascii_lowercase();
    let mut behaviour = fake[key.as_str()].as_str().unwrap_or("ok").to_string();
    if let Some(b) = behaviour.strip_suffix(":once") {
        let marker = format!("{record}.once.{name}.{key}");
        if std::path::Path::new(&marker).exists() {
            behaviour = "ok".into();
        } else {
            let _ = std::fs::write(&marker, b"");
            behaviour = b.to_string();
        }
    }

    match behaviour.as_str() {
        "ok" => {
            if command == "ADD" {
                let ip = fake["ip"].as_str().unwrap_or("10.99.0.2/24");
                println!("{}", add_result(&version, &ifname, &netns, ip));
            }
        }
        "garbage" => {
            println!("this is not JSON {{{{");
            std::process::exit(1);
        }
        "garbage0" => println!("this is not JSON either"),
        "badresult" => println!("{}", json!({"cniVersion": version, "ips": [{"address": "banana"}], "dns": {}})),
        "empty" => {}
        "exit1" => std::process::exit(1),
        "hang" => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        "stderr" => {
            let mut err = std::io::stderr().lock();
            for i in 0..1024 {
                let _ = writeln!(err, "fake stderr line {i:04}: {}", "x".repeat(40));
            }
            let _ = writeln!(err, "FAKE-STDERR-END");
            drop(err);
            error(&version, 7, "fake failure with a lot of stderr");
        }
        // Rust installs its own SIGSEGV handler (stack overflow detection): restore the
        // default first so the signal kills us.
        "signal" => unsafe {
            signal(SIGSEGV, SIG_DFL);
            raise(SIGSEGV);
        },
        "sigkill" => unsafe {
            raise(SIGKILL);
        },
        b if b.starts_with("fail") => {
            let code = b["fail".len()..].parse().unwrap_or(7);
            error(&version, code, &format!("fake failure on {command}"));
        }
        other => error(&version, 7, &format!("fake: unknown behaviour {other:?}")),
    }
}
