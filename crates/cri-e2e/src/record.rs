//! What the runtime passed to our plugin: a recorder installed as `multus` in the
//! runtime's CNI bin dir keeps each call's `CNI_*` environment, stdin, stdout, stderr
//! and exit code, and runs the real binary with exactly the same input.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// Writes the recorder script at `at`, recording into `calls` and running `real`.
pub fn install(at: &Path, real: &Path, calls: &Path) -> Result<()> {
    std::fs::create_dir_all(calls)?;
    let (calls, real) = (shell_quote(calls), shell_quote(real));
    let script = format!(
        r#"#!/bin/sh
# cri-e2e: records one CNI call, then runs the real plugin with the same input.
call={calls}/$(date +%s%N)-$$
env | grep '^CNI_' > "$call.env"
cat > "$call.stdin"
{real} < "$call.stdin" > "$call.stdout" 2> "$call.stderr"
rc=$?
cat "$call.stdout"
cat "$call.stderr" >&2
echo "$rc" > "$call.rc"
exit "$rc"
"#
    );
    std::fs::write(at, script)?;
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// One finished call of the plugin.
#[derive(Debug, Clone)]
pub struct Call {
    /// The record's base name (`<unix ns>-<pid>`): records sort by start time.
    pub id: String,
    pub env: BTreeMap<String, String>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub rc: i32,
}

impl Call {
    pub fn var(&self, name: &str) -> &str {
        self.env.get(name).map_or("", String::as_str)
    }

    /// One `KEY=value` of `CNI_ARGS`.
    pub fn cni_arg(&self, key: &str) -> Option<&str> {
        self.var("CNI_ARGS").split(';').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn command(&self) -> &str {
        self.var("CNI_COMMAND")
    }

    pub fn container_id(&self) -> &str {
        self.var("CNI_CONTAINERID")
    }

    /// The config on stdin, parsed (`Null` if it is not JSON).
    pub fn config(&self) -> Value {
        serde_json::from_str(&self.stdin).unwrap_or(Value::Null)
    }

    /// The result on stdout, parsed (`Null` if none).
    pub fn output(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or(Value::Null)
    }

    /// The command, env, stdin and output, as a bug report shows them.
    pub fn describe(&self) -> String {
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "{} (exit {}, record {})\n    env: {}\n    stdin: {}\n    stdout: {}\n    stderr: {}",
            self.command(),
            self.rc,
            self.id,
            env.join(" "),
            self.stdin.trim(),
            self.stdout.trim(),
            self.stderr.trim()
        )
    }
}

/// The finished calls recorded in `dir`, oldest first.
pub fn calls(dir: &Path) -> Result<Vec<Call>> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".rc").map(str::to_owned))
        .collect();
    ids.sort();
    ids.into_iter()
        .map(|id| {
            let read = |ext: &str| -> Result<String> {
                let path: PathBuf = dir.join(format!("{id}.{ext}"));
                std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
            };
            let env = read("env")?
                .lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            Ok(Call {
                env,
                stdin: read("stdin")?,
                stdout: read("stdout")?,
                stderr: read("stderr")?,
                rc: read("rc")?.trim().parse().unwrap_or(-1),
                id,
            })
        })
        .collect()
}

/// The calls for one container, oldest first.
pub fn calls_for(dir: &Path, container_id: &str) -> Result<Vec<Call>> {
    Ok(calls(dir)?.into_iter().filter(|c| c.container_id() == container_id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn recorder_passes_everything_through_and_keeps_it() {
        let dir = std::env::temp_dir().join(format!("cri-e2e-record-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let real = dir.join("real plugin");
        std::fs::write(&real, "#!/bin/sh\ncat\necho \"$CNI_COMMAND oops\" >&2\nexit 7\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        let recorder = dir.join("multus");
        install(&recorder, &real, &dir.join("calls")).unwrap();
        // Another test thread may fork while our freshly written script is still open for
        // writing in that child (until it execs): exec then fails with ETXTBSY. Retry.
        let mut tries = 0;
        let mut child = loop {
            let spawned = Command::new(&recorder)
                .env("CNI_COMMAND", "ADD")
                .env("CNI_CONTAINERID", "abc")
                .env("CNI_NETNS", "")
                .env("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=p")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            match spawned {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.unwrap(),
            }
        };
        use std::io::Write;
        child.stdin.take().unwrap().write_all(br#"{"cniVersion":"1.0.0"}"#).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(String::from_utf8_lossy(&out.stdout), r#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(String::from_utf8_lossy(&out.stderr), "ADD oops\n");
        let calls = calls_for(&dir.join("calls"), "abc").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!((call.command(), call.rc, call.var("CNI_NETNS")), ("ADD", 7, ""));
        assert_eq!(
            (call.cni_arg("K8S_POD_NAME"), call.cni_arg("IgnoreUnknown"), call.cni_arg("X")),
            (Some("p"), Some("1"), None)
        );
        assert_eq!(call.config()["cniVersion"], "1.0.0");
        assert_eq!(call.output()["cniVersion"], "1.0.0");
    }
}
