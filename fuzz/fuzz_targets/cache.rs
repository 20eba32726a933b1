//! The cache loaders on whatever a torn, foreign or hostile cniDir holds: the scratch
//! cache (`load_delegates`) and the results cache (`load_result`, `delegates_from_results`,
//! `all_results`), read from a real tree as DEL and GC read them. The first input byte
//! also shapes the tree: the entries may be symlinks (to a canary outside cniDir, to a
//! directory, dangling), FIFOs or directories, and `results` itself a symlink. Whatever
//! the shape, the loaders return (a FIFO never blocks them), a symlink is never
//! followed (nothing is loaded through one), and the canary is never changed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multus::cache;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const CANARY: &[u8] = b"[{\"Bytes\":\"eyJjbmlWZXJzaW9uIjoiMS4wLjAiLCJuYW1lIjoiY2FuYXJ5IiwidHlwZSI6ImNhbmFyeSJ9\"}]";

fn base() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // under fuzz/target (git-ignored), one per process (libFuzzer -jobs)
        let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/cache-scratch-{}", std::process::id()));
        std::fs::create_dir_all(d.join("outside")).unwrap();
        std::fs::write(d.join("outside/canary"), CANARY).unwrap();
        d
    })
}

/// Put `data` at `path`, or something hostile there, as `shape` says.
fn plant(path: &Path, shape: u8, data: &[u8], outside: &Path) {
    match shape % 6 {
        0 | 1 => std::fs::write(path, data).unwrap(),
        2 => std::os::unix::fs::symlink(outside.join("canary"), path).unwrap(),
        3 => std::os::unix::fs::symlink(outside, path).unwrap(),
        4 => {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc_mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        }
        _ => std::fs::create_dir_all(path).unwrap(),
    }
}

unsafe extern "C" {
    #[link_name = "mkfifo"]
    fn libc_mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

fuzz_target!(|input: &[u8]| {
    let (shape, data) = input.split_first().map(|(s, d)| (*s, d)).unwrap_or((0, input));
    let base = base();
    let outside = base.join("outside");
    let dir = base.join("cni");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    plant(&dir.join("cid"), shape, data, &outside);
    if shape & 0x40 != 0 {
        std::os::unix::fs::symlink(&outside, dir.join("results")).unwrap();
    } else {
        std::fs::create_dir_all(dir.join("results")).unwrap();
        plant(&dir.join("results").join("net-cid-eth0"), shape >> 3, data, &outside);
    }
    match cache::load_delegates(&dir, "cid", "eth0") {
        Ok(Some(ds)) => {
            assert!(shape % 6 < 2, "loaded through a {} (shape {shape})", ["link", "dir link", "FIFO", "dir"][(shape % 6 - 2) as usize]);
            assert!(!ds.is_empty());
            for d in &ds {
                assert!(!d.ifname.is_empty() && !d.ifname.contains('/'));
                assert_ne!(d.name, "canary", "loaded the canary through a link");
                for t in d.config.plugin_types() {
                    assert!(!t.contains('/') && t != ".." && t != ".", "a path-like type {t:?} was loaded");
                }
            }
        }
        Ok(None) => assert!(shape % 6 >= 2, "the file is there"),
        Err(e) => assert!([5, 6].contains(&e.code), "code {}", e.code),
    }
    let _ = cache::load_result(&dir, "net", "cid", "eth0");
    for d in cache::delegates_from_results(&dir, "cid", "eth0") {
        assert!(shape & 0x40 == 0, "loaded through a symlinked results dir");
        for t in d.config.plugin_types() {
            assert!(!t.contains('/'), "a path-like type {t:?} was loaded");
        }
    }
    for (name, _) in cache::all_results(&dir) {
        assert!(!name.contains('/'));
    }
    let _ = cache::cached_containers(&dir);
    assert_eq!(std::fs::read(outside.join("canary")).unwrap(), CANARY, "the canary changed");
});
