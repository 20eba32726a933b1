//! What ended up on disk: host-local's leases, our caches, file modes; and files a test
//! puts there (scripted delegates, a tiny tmpfs).

use super::{sh, sh_quiet};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The addresses host-local holds for network `net` in `data_dir` (its lease files;
/// `lock` and `last_reserved_ip.*` are not leases).
pub fn leases(data_dir: &Path, net: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(data_dir.join(net)) else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.parse::<IpAddr>().is_ok())
        .collect();
    v.sort();
    v
}

/// `(network, leases)` of every network with a dir in host-local's `data_dir`, sorted by
/// network (the leases as [`leases`] gives them).
pub fn leases_by_network(data_dir: &Path) -> Vec<(String, Vec<String>)> {
    let Ok(rd) = std::fs::read_dir(data_dir) else {
        return Vec::new();
    };
    let mut nets: Vec<String> =
        rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    nets.sort();
    nets.into_iter()
        .map(|net| {
            let held = leases(data_dir, &net);
            (net, held)
        })
        .collect()
}

/// Multus' own files left in `cni_dir` (scratch caches and results-cache entries),
/// relative; the node's learnt status write method and the node's one lock file are node
/// state, not a container's.
pub fn container_cache_files(cni_dir: &Path) -> Vec<String> {
    let node_state = [".status-write-method", multus::lock::LOCK_FILE];
    files_under(cni_dir).into_iter().filter(|f| !node_state.contains(&f.as_str())).collect()
}

/// Every file under `dir` (recursively), relative, sorted; empty when `dir` is missing.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// An executable shell script `name` in `dir` (a scripted delegate).
///
/// The executable is written by a `cp` child, not by this (multi-threaded) test process:
/// a file we held open for writing could be inherited by a child another test thread
/// forks at that moment, and exec'ing the script would then fail with ETXTBSY.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    let src = dir.join(format!(".{name}.src"));
    std::fs::write(&src, format!("#!/bin/sh\n{body}\n")).unwrap();
    let copied = std::process::Command::new("cp").arg(&src).arg(&p).status().unwrap();
    assert!(copied.success(), "cp {} {}", src.display(), p.display());
    std::fs::remove_file(&src).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A tmpfs of `size` bytes mounted on `dir` (created), unmounted (lazily) on Drop, also
/// when the test panicked.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: usize, read_only: bool) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let mut opts = format!("size={size},mode=0700");
        if read_only {
            opts.push_str(",ro");
        }
        sh(&["mount", "-t", "tmpfs", "-o", &opts, "tmpfs", dir.to_str().unwrap()]);
        Tmpfs { dir: dir.to_path_buf() }
    }

    pub fn remount(&self, read_only: bool) {
        let opts = if read_only { "remount,ro" } else { "remount,rw" };
        sh(&["mount", "-o", opts, self.dir.to_str().unwrap()]);
    }

    /// Fill the filesystem until only `free` bytes are left.
    pub fn fill_leaving(&self, free: u64) {
        let avail = sh(&["df", "-B1", "--output=avail", self.dir.to_str().unwrap()]);
        let avail: u64 = avail.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df avail");
        let fill = avail.saturating_sub(free);
        std::fs::write(self.dir.join(".filler"), vec![0u8; fill as usize]).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        sh_quiet(&["umount", "-l", self.dir.to_str().unwrap()]);
    }
}
