//! Logging with tracing: to stderr and/or `logFile`, never to stdout (stdout is the
//! protocol), no colours. `logOptions` rotation is applied (Go Multus parses it but
//! never uses it in the thin plugin).

use crate::config::{LogOptions, MultusConf};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};

/// Go Multus' level names (`panic` < `error` < `verbose` < `debug`), case-insensitive.
/// Unset means `error`: Go's default, `panic`, hides every failure.
pub fn level(name: &str) -> Option<LevelFilter> {
    Some(match name.to_ascii_lowercase().as_str() {
        "" | "error" => LevelFilter::ERROR,
        "panic" => LevelFilter::OFF,
        "verbose" | "info" => LevelFilter::INFO,
        "warning" | "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => return None,
    })
}

/// Install the subscriber for this invocation. Called once, right after the config parsed.
pub fn init(conf: &MultusConf) {
    let lvl = level(&conf.log_level).unwrap_or_else(|| {
        eprintln!("multus logging: cannot set logging level to {}", conf.log_level);
        LevelFilter::ERROR
    });
    let file = (!conf.log_file.is_empty()).then(|| PathBuf::from(&conf.log_file));
    if let Some(path) = &file {
        rotate_if_needed(path, &conf.log_options.clone().unwrap_or_default());
    }
    let opened = file.as_ref().and_then(|p| {
        if let Some(dir) = p.parent() {
            let _ = fs::create_dir_all(dir);
        }
        OpenOptions::new().create(true).append(true).mode(0o600).open(p).ok()
    });
    let writer: BoxMakeWriter = match (conf.log_to_stderr, opened) {
        (true, Some(f)) => BoxMakeWriter::new(io::stderr.and(std::sync::Mutex::new(f))),
        (false, Some(f)) => BoxMakeWriter::new(std::sync::Mutex::new(f)),
        (true, None) => BoxMakeWriter::new(io::stderr),
        (false, None) => BoxMakeWriter::new(io::sink),
    };
    let _ = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_max_level(lvl)
        .with_writer(writer)
        .try_init();
}

/// Before-config logging: errors to stderr only.
pub fn init_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_max_level(LevelFilter::ERROR)
        .with_writer(io::stderr)
        .try_init();
}

fn backup_path(path: &Path, n: u64, compress: bool) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    if compress {
        s.push(".gz");
    }
    PathBuf::from(s)
}

/// Size-based rotation: `log` → `log.1[.gz]` → … → `log.<maxBackups>`; backups older than
/// `maxAge` days are removed. Each plugin run is short, so checking once at start is enough.
pub fn rotate_if_needed(path: &Path, opts: &LogOptions) {
    let max = opts.max_size.saturating_mul(1024 * 1024);
    let Ok(meta) = fs::metadata(path) else { return };
    if max == 0 || meta.len() < max {
        prune_old(path, opts);
        return;
    }
    if opts.max_backups == 0 {
        let _ = fs::remove_file(path);
        return;
    }
    for n in (1..opts.max_backups).rev() {
        for c in [true, false] {
            let from = backup_path(path, n, c);
            if from.exists() {
                let _ = fs::rename(&from, backup_path(path, n + 1, c));
            }
        }
    }
    // Move the live file away first (atomic), then compress at leisure.
    let rotated = backup_path(path, 1, false);
    if fs::rename(path, &rotated).is_err() {
        return;
    }
    if opts.compress && gzip(&rotated, &backup_path(path, 1, true)).is_ok() {
        let _ = fs::remove_file(&rotated);
    }
    prune_old(path, opts);
}

fn gzip(from: &Path, to: &Path) -> io::Result<()> {
    let data = fs::read(from)?;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&data)?;
    crate::fsutil::write_atomic(to, &enc.finish()?, 0o600)
}

fn prune_old(path: &Path, opts: &LogOptions) {
    let max_age = Duration::from_secs(opts.max_age.saturating_mul(86_400));
    for n in 1..=opts.max_backups.saturating_add(1).min(1000) {
        for c in [true, false] {
            let p = backup_path(path, n, c);
            let too_many = n > opts.max_backups;
            let too_old = opts.max_age > 0
                && fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > max_age);
            if p.exists() && (too_many || too_old) {
                let _ = fs::remove_file(&p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level("DEBUG"), Some(LevelFilter::DEBUG));
        assert_eq!(level("verbose"), Some(LevelFilter::INFO));
        assert_eq!(level(""), Some(LevelFilter::ERROR));
        assert_eq!(level("panic"), Some(LevelFilter::OFF));
        assert_eq!(level("loud"), None);
    }

    #[test]
    fn rotation_keeps_max_backups_and_compresses() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("multus.log");
        let opts = LogOptions { max_age: 5, max_size: 1, max_backups: 2, compress: true };
        for round in 0..4 {
            fs::write(&log, vec![b'a' + round; 1024 * 1024 + 1]).unwrap();
            rotate_if_needed(&log, &opts);
            assert!(!log.exists(), "live file rotated away");
        }
        assert!(backup_path(&log, 1, true).exists());
        assert!(backup_path(&log, 2, true).exists());
        assert!(!backup_path(&log, 3, true).exists());
        let gz = fs::read(backup_path(&log, 1, true)).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out).unwrap();
        assert_eq!(out[0], b'd', "newest backup is .1");
        // under the size: untouched
        fs::write(&log, b"small").unwrap();
        rotate_if_needed(&log, &opts);
        assert_eq!(fs::read(&log).unwrap(), b"small");
    }
}
