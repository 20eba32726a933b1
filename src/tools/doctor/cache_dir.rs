//! `multus doctor`: readiness indicator and cache.

use super::*;

pub(crate) fn check_readiness(conf: &MultusConf) -> Option<Check> {
    if conf.readiness_indicator_file.is_empty() {
        return None;
    }
    let path = Path::new(&conf.readiness_indicator_file);
    let check = "readiness indicator";
    Some(if path.exists() {
        Check::ok(check, format!("{} exists", path.display()))
    } else {
        Check::fail(
            check,
            format!(
                "{} does not exist: every ADD waits {} s for it, then fails with code 11 (try again later)",
                path.display(),
                conf.readiness_timeout().as_secs()
            ),
            "the default network (e.g. Calico) writes it once it is ready on this node: is its pod running here?",
        )
    })
}

/// `cniDir`: mode 0700, how many entries, which are corrupt (✗) or old (⚠).
pub(crate) fn check_cache(dir: &Path, stale_after: Duration, now: SystemTime) -> Vec<Check> {
    let check = "cache";
    let meta = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => {
            return vec![Check::fail(
                check,
                format!("{} is not a directory", dir.display()),
                "it is cniDir in the config: point it at a directory",
            )];
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![Check::ok(check, format!("{} does not exist yet: the first ADD creates it", dir.display()))];
        }
        Err(e) => {
            return vec![Check::fail(check, format!("cannot read {}: {e}", dir.display()), "run the doctor as root")];
        }
    };
    let containers = cache::cached_containers(dir);
    let results: Vec<_> =
        cache::all_results(dir).into_iter().map(|(name, r)| (cache::results_dir(dir).join(name), r)).collect();
    let mode = meta.permissions().mode() & 0o777;
    let mut checks = vec![Check::ok(
        check,
        format!(
            "{}: mode {mode:04o}, {} cached container(s), {} cached result(s)",
            dir.display(),
            containers.len(),
            results.len()
        ),
    )];
    if mode != 0o700 {
        checks.push(Check::warn(
            check,
            format!(
                "{} has mode {mode:04o}, not 0700: the cache holds network configs, which may carry credentials",
                dir.display()
            ),
            format!("chmod 700 {}", dir.display()),
        ));
    }
    checks.extend(containers.iter().filter_map(|id| corrupt_scratch_entry(dir, id)));
    checks.extend(results.iter().filter_map(|(path, record)| corrupt_result_entry(path, record.as_ref())));
    let paths = containers.iter().map(|id| cache::scratch_path(dir, id)).chain(results.into_iter().map(|(p, _)| p));
    checks.extend(stale_entries(paths, stale_after, now));
    checks
}

pub(crate) fn corrupt_scratch_entry(dir: &Path, id: &str) -> Option<Check> {
    let e = cache::load_delegates(dir, id, "eth0").err()?;
    Some(Check::fail(
        "cache entry",
        e.msg,
        format!(
            "DEL of container {id} cannot replay its delegates and falls back to the config's; \
             if `crictl pods -q` has no sandbox {id}, remove the file"
        ),
    ))
}

pub(crate) fn corrupt_result_entry(path: &Path, record: Option<&cache::CachedResult>) -> Option<Check> {
    let why = match record {
        None => "unreadable or not a cached result",
        Some(r) if r.kind != "cniCacheV1" => "not a cniCacheV1 record",
        Some(_) => return None,
    };
    Some(Check::fail(
        "cache entry",
        format!("{}: {why}", path.display()),
        "CHECK and DEL of that attachment run without its prevResult; remove the file once its container is gone",
    ))
}

pub(crate) fn stale_entries(
    paths: impl Iterator<Item = PathBuf>,
    stale_after: Duration,
    now: SystemTime,
) -> Option<Check> {
    let mut old: Vec<String> = paths
        .filter(|p| {
            let modified = std::fs::metadata(p).and_then(|m| m.modified());
            modified.is_ok_and(|m| now.duration_since(m).is_ok_and(|age| age > stale_after))
        })
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if old.is_empty() {
        return None;
    }
    old.sort();
    let count = old.len();
    let mut listed = old.into_iter().take(MAX_LISTED).collect::<Vec<_>>().join(", ");
    if count > MAX_LISTED {
        let _ = write!(listed, " and {} more", count - MAX_LISTED);
    }
    Some(Check::warn(
        "cache entry",
        format!(
            "{count} entr{} older than {} days, possibly stale (a DEL that never came): {listed}",
            if count == 1 { "y" } else { "ies" },
            stale_after.as_secs() / 86400
        ),
        "compare with `crictl pods -q`; entries of sandboxes that no longer exist can be removed",
    ))
}
