//! The one support module of the integration tests (`mod support;`): run the `multus`
//! binary as a runtime does, real network namespaces and host links behind drop guards,
//! the fake delegate, the Kubernetes API stand-in, and views of what ended up in a netns,
//! in host-local's lease dir and in our caches.
//!
//! - [`netns`]: the netns guard, the host-link guard, the one `ip -j addr` parser,
//!   link-type probes;
//! - [`files`]: host-local's leases, files under a dir, scripted delegates, a tiny tmpfs;
//! - [`plugin`]: one way to run the plugin ([`plugin::run_plugin`]), the fake delegate's
//!   world ([`plugin::TestDir`]) and invocation builder;
//! - [`kube`]: the API stand-in with its kubeconfig, and the Kubernetes end-to-end
//!   [`kube::World`] built from the pieces above;
//! - [`leaks`]: what a scenario must not leave behind.
//!
//! Tests that need root and Debian's plugins start with `require_root!()`, which skips
//! them (with `skipped: ...` on stderr) on machines without either; tests that need a
//! link type the kernel may lack start with `require_link_type!("macvlan")`.

#![allow(dead_code)] // each test binary uses a different subset

pub mod files;
pub mod kube;
pub mod leaks;
pub mod netns;
pub mod plugin;

// Each test binary uses a different subset, through `use support::*`.
#[allow(unused_imports)]
pub use {files::*, kube::*, leaks::*, netns::*, plugin::*};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Debian's reference plugins.
pub const PLUGIN_DIR: &str = "/usr/lib/cni";
/// How long one invocation of the plugin may take before the test gives up on it.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Why this machine cannot run the real-netns tests, if it cannot.
pub fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("not root".into());
    }
    if !Path::new(PLUGIN_DIR).join("bridge").exists() {
        return Some(format!("{PLUGIN_DIR}/bridge is missing (apt-get install containernetworking-plugins)"));
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is missing".into());
    }
    None
}

/// Whether the tests run as (effective) root.
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// `rel` in this repository (examples, deployments, test data).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Skip the calling test (return early) when not root or the plugins are missing.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(why) = $crate::support::skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, at most 15 bytes (an interface name):
/// `prefix` (≤ 3 bytes) + pid + counter, both in hex.
pub fn unique(prefix: &str) -> String {
    assert!(prefix.len() <= 3);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("{prefix}{:x}x{n:x}", std::process::id());
    assert!(name.len() <= 15, "{name}");
    name
}

/// A /24 no other test of this process uses: `10.<pid byte>.<counter>.0/24`.
pub fn unique_subnet() -> (String, String) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst) % 250 + 1;
    let prefix = format!("10.{}.{n}", 100 + std::process::id() % 150);
    (format!("{prefix}.0/24"), prefix)
}

/// Run a command that must succeed; panics with its stderr otherwise.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `ip` with `args`; panics with its stderr on failure.
pub fn ip(args: &[&str]) -> String {
    sh(&[&["ip"], args].concat())
}

/// Run a command whose failure does not matter (cleanup).
pub fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Skip a test (return early with a message) when the kernel lacks a link type.
#[macro_export]
macro_rules! require_link_type {
    ($kind:expr) => {
        if !$crate::support::kernel_has_link_type($kind) {
            eprintln!("SKIPPED: the kernel cannot create {} links", $kind);
            return;
        }
    };
}
