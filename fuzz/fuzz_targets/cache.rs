//! The cache loaders on whatever a torn or foreign file holds: the scratch cache
//! (`load_delegates`) and the results cache (`load_result`, `delegates_from_results`),
//! read from a real file as DEL and GC read them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multus::cache;
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // under fuzz/target (git-ignored), one per process (libFuzzer -jobs)
        let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/cache-scratch-{}", std::process::id()));
        std::fs::create_dir_all(d.join("results")).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    std::fs::write(dir.join("cid"), data).unwrap();
    match cache::load_delegates(dir, "cid", "eth0") {
        Ok(Some(ds)) => {
            assert!(!ds.is_empty());
            for d in &ds {
                assert!(!d.ifname.is_empty());
                for t in d.config.plugin_types() {
                    assert!(!t.contains('/') && t != ".." && t != ".", "a path-like type {t:?} was loaded");
                }
            }
        }
        Ok(None) => panic!("the file is there"),
        Err(e) => assert!([5, 6].contains(&e.code), "code {}", e.code),
    }
    std::fs::write(dir.join("results").join("net-cid-eth0"), data).unwrap();
    let _ = cache::load_result(dir, "net", "cid", "eth0");
    for d in cache::delegates_from_results(dir, "cid", "eth0") {
        for t in d.config.plugin_types() {
            assert!(!t.contains('/'), "a path-like type {t:?} was loaded");
        }
    }
});
