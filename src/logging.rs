//! Logging with tracing: to stderr and/or `logFile`, never to stdout (stdout is the
//! protocol), no colours. `logOptions` rotation is applied (Go Multus parses it but
//! never uses it in the thin plugin).

use crate::config::{LogOptions, MultusConf};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

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
        let opts = conf.log_options.clone().unwrap_or_default();
        if let Some(rotated) = rotate_if_needed(path, &opts)
            && opts.compress
        {
            let _ = PENDING_COMPRESSION.set(rotated);
        }
    }
    let opened = file.as_ref().and_then(|p| match open_log_file(p) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("multus logging: not logging to {}: {e}", p.display());
            None
        }
    });
    let writer: BoxMakeWriter = match (conf.log_to_stderr, opened) {
        (true, Some(f)) => BoxMakeWriter::new(io::stderr.and(std::sync::Mutex::new(f))),
        (false, Some(f)) => BoxMakeWriter::new(std::sync::Mutex::new(f)),
        (true, None) => BoxMakeWriter::new(io::stderr),
        (false, None) => BoxMakeWriter::new(io::sink),
    };
    let _ = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(lvl)
        .with_writer(writer)
        .event_format(PodTagged)
        .try_init();
}

/// The span a verb runs its pod's work in (`commands::for_pod`); its one field, `tag`,
/// is the pod's `[ns/name/uid]`.
pub const POD_SPAN: &str = "pod";

/// tracing's usual line, `<RFC 3339 time> <LEVEL> <message> <fields>`, with the pod's tag
/// before the message when the event happens inside the verb's [`POD_SPAN`]: the tag is
/// attached once per verb, not written by hand into every line.
struct PodTagged;

impl<S, N> FormatEvent<S, N> for PodTagged
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut writer)?;
        write!(writer, " {:>5} ", event.metadata().level())?;
        let pod = ctx.event_scope().and_then(|scope| scope.from_root().find(|span| span.name() == POD_SPAN));
        if let Some(span) = pod {
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                // The span's fields as formatted: `tag=[ns/name/uid]`.
                let tag = fields.fields.strip_prefix("tag=").unwrap_or(&fields.fields);
                write!(writer, "{tag} ")?;
            }
        }
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Open `logFile` for appending: never through a symlink (`/dev/stdout`,
/// `/proc/self/fd/1` and planted links are refused), non-blocking (a FIFO there blocks
/// nothing), a regular file only, and never the file our stdout is: stdout is the
/// protocol, a log line before the result JSON breaks the runtime's parse.
pub fn open_log_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::MetadataExt;
    if let Some(dir) = path.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC;
    let f = OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(flags.bits()).open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let stdout = nix::sys::stat::fstat(std::io::stdout()).ok();
    if stdout.is_some_and(|st| st.st_dev == meta.dev() && st.st_ino == meta.ino()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is the same file as stdout, which is the protocol",
        ));
    }
    Ok(f)
}

/// A log rotated by this invocation, to be compressed once the result is out.
static PENDING_COMPRESSION: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Called after the result is printed: compress the log this invocation rotated, in a
/// detached `multus compress-log` process (stdio closed, not waited for), so neither
/// ADD nor DEL ever waits for it.
pub fn after_result() {
    let Some(rotated) = PENDING_COMPRESSION.get() else { return };
    let Ok(exe) = std::env::current_exe() else { return };
    let _ = std::process::Command::new(exe)
        .arg("compress-log")
        .arg(rotated)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// Gzip `rotated` to `rotated.gz` streaming (constant memory), then remove it.
pub fn compress_rotated(rotated: &Path) -> io::Result<()> {
    let mut gz = rotated.as_os_str().to_owned();
    gz.push(".gz");
    gzip(rotated, Path::new(&gz))?;
    fs::remove_file(rotated)
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
/// Only renames here (the live file is moved away atomically); returns the rotated file
/// when there is one, to be compressed after the result ([`after_result`]).
pub fn rotate_if_needed(path: &Path, opts: &LogOptions) -> Option<PathBuf> {
    let max = opts.max_size.saturating_mul(1024 * 1024);
    // Not following a link: a link at logFile is refused by the open anyway.
    let meta = fs::symlink_metadata(path).ok().filter(|m| m.file_type().is_file())?;
    if max == 0 || meta.len() < max {
        prune_old(path, opts);
        return None;
    }
    if opts.max_backups == 0 {
        let _ = fs::remove_file(path);
        return None;
    }
    for n in (1..opts.max_backups).rev() {
        for c in [true, false] {
            let from = backup_path(path, n, c);
            if from.exists() {
                let _ = fs::rename(&from, backup_path(path, n + 1, c));
            }
        }
    }
    let rotated = backup_path(path, 1, false);
    fs::rename(path, &rotated).ok()?;
    prune_old(path, opts);
    Some(rotated)
}

/// Stream `from` into a gzip `to` (exclusive temp, fsync, rename): memory stays constant
/// whatever the size of the log.
fn gzip(from: &Path, to: &Path) -> io::Result<()> {
    let src = crate::safefs::open_nonblocking(from, false)?;
    let mut src = fs::File::from(src);
    if !src.metadata()?.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp =
        to.with_file_name(format!("{}{}", crate::safefs::temp_prefix(&name), crate::safefs::unpredictable_suffix()));
    let result = (|| {
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&tmp)?;
        let mut enc = flate2::write::GzEncoder::new(io::BufWriter::new(out), flate2::Compression::default());
        io::copy(&mut src, &mut enc)?;
        let out = enc.finish()?.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()?;
        fs::rename(&tmp, to)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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
            let rotated = rotate_if_needed(&log, &opts).expect("rotated");
            compress_rotated(&rotated).unwrap();
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
        assert!(rotate_if_needed(&log, &opts).is_none());
        assert_eq!(fs::read(&log).unwrap(), b"small");
        // never logs into stdout's file, a FIFO or through a link
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(open_log_file(&fifo).is_err());
        std::os::unix::fs::symlink(&log, dir.path().join("link")).unwrap();
        assert!(open_log_file(&dir.path().join("link")).is_err());
        assert!(open_log_file(&log).is_ok());
    }
}
