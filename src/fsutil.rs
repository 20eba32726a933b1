//! Files the plugin owns are written atomically (temp + fsync + rename) with private modes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Create `dir` (and parents) with mode 0700 where missing.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Write `data` to `path` atomically: a temp file in the same directory (mode `mode`),
/// fsync, rename over `path`, fsync the directory. Readers see the old or the new
/// content, never a torn file (the cause of Multus #1087).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_deferred(path, data, mode)?;
    sync_dir(parent(path))
}

/// [`write_atomic`] without the directory fsync, for a batch of files in one directory:
/// the caller makes the renames durable with one [`sync_dir`] at the end instead of
/// one per file (each fsync costs a journal commit on the node's disk).
pub fn write_atomic_deferred(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent(path);
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    // Exclusive, unpredictable and never through a link: a file or a symlink planted at
    // the temp name makes the write fail instead of writing through it as root.
    let tmp = dir.join(format!(
        "{}{}",
        crate::safefs::temp_prefix(&name.to_string_lossy()),
        crate::safefs::unpredictable_suffix()
    ));
    let result = (|| {
        let mut f =
            OpenOptions::new().write(true).create_new(true).custom_flags(libc_nofollow()).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn libc_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits()
}

/// Make the renames in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Remove what [`write_atomic`] to `path` left when its process was killed between
/// creating its temp file and renaming it (`.<name>.tmp.<pid>`). Best effort.
pub fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return };
    let prefix = format!(".{}.tmp.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().strip_prefix(&prefix).is_some_and(crate::safefs::is_temp_suffix) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Remove a file; a file that is already gone is not an error.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/f");
        create_private_dir(p.parent().unwrap()).unwrap();
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(p.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1, "no temp file left");
        remove_if_exists(&p).unwrap();
        remove_if_exists(&p).unwrap();
    }

    #[test]
    fn stale_temps_of_one_file_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cid");
        for name in [".cid.tmp.123", ".cid.tmp.x", ".cid2.tmp.5", "cid"] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        remove_stale_temps(&p);
        let mut left: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, [".cid.tmp.x", ".cid2.tmp.5", "cid"]);
    }
}
