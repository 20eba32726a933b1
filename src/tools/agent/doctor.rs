//! `multus doctor`'s view of the node agent: is the NAD mirror fresh?

use crate::config::MultusConf;
use crate::mirror::{now_ms, read_heartbeat};
use crate::tools::report::Check;
use std::path::Path;

/// `None` when no mirror is configured (`nadMirrorDir` empty): nothing to report.
pub fn check_mirror(conf: &MultusConf) -> Option<Check> {
    if conf.nad_mirror_dir.is_empty() {
        return None;
    }
    let dir = Path::new(&conf.nad_mirror_dir);
    let max_age = conf.nad_mirror_max_age();
    let hint = "the node agent (`multus install --nad-mirror-dir` or `multus agent`) is not running or cannot \
                watch NADs: check its log and that its ClusterRole allows list/watch on network-attachment-definitions. \
                ADD still works (it GETs each NAD), only slower";
    Some(match read_heartbeat(dir) {
        None => Check::warn("nad mirror", format!("{}: no heartbeat: the plugin uses the API", dir.display()), hint),
        Some(beat) => {
            let age_ms = now_ms().abs_diff(beat.written_at_ms);
            let age = format!("{:.1} s", age_ms as f64 / 1000.0);
            if age_ms <= max_age.as_millis() as u64 {
                Check::ok(
                    "nad mirror",
                    format!(
                        "{}: {} NADs, heartbeat {age} old (resourceVersion {})",
                        dir.display(),
                        beat.nads,
                        beat.resource_version
                    ),
                )
            } else {
                Check::warn(
                    "nad mirror",
                    format!(
                        "{}: heartbeat {age} old, over nadMirrorMaxAgeSeconds ({} s): the plugin uses the API",
                        dir.display(),
                        max_age.as_secs_f64()
                    ),
                    hint,
                )
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_stale_missing() {
        let dir = tempfile::tempdir().unwrap();
        let mut conf = MultusConf::parse(br#"{"name":"n","cniVersion":"1.0.0"}"#).unwrap();
        assert!(check_mirror(&conf).is_none());
        conf.nad_mirror_dir = dir.path().display().to_string();
        let render = |c: Check| format!("{c:?}");
        assert!(render(check_mirror(&conf).unwrap()).contains("no heartbeat"));
        let beat = |ms: u64| {
            std::fs::write(dir.path().join("heartbeat.json"), format!(r#"{{"writtenAtMs":{ms},"nads":3}}"#)).unwrap()
        };
        beat(now_ms());
        assert!(render(check_mirror(&conf).unwrap()).contains("3 NADs"));
        beat(now_ms() - 120_000);
        assert!(render(check_mirror(&conf).unwrap()).contains("over nadMirrorMaxAgeSeconds"));
    }
}
