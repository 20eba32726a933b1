//! The CNI wire layer: versions, the runtime's environment, results and their
//! conversion between spec versions.
//!
//! Written here rather than taken from the `cni-plugin` crate: that crate (0.2.1, last
//! published 2021) refuses cniVersion 0.3.x, cannot parse the bridge plugin's result,
//! drops CNI 1.1 fields, has no STATUS/GC, and cannot give each delegate its own
//! CNI_IFNAME/CNI_ARGS, all of which a meta-plugin needs.

pub mod env;
pub mod result;
pub mod version;

pub use env::{CniArgs, CniEnv, Command, K8sArgs};
pub use result::CniResult;
pub use version::Version;
