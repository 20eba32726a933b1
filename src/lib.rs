//! multus-rs: a drop-in replacement for the Multus CNI thin plugin.
//!
//! The binary (`src/main.rs`) is a thin edge: it decides between the CNI protocol
//! (when `CNI_COMMAND` is set) and the human CLI, and is the only place that writes
//! to stdout. Everything else lives here.

// Our traits are used with generics on a current-thread runtime: no Send bounds needed.
#![allow(async_fn_in_trait)]

pub mod brake;
pub mod cache;
pub mod cni;
pub mod commands;
pub mod config;
pub mod delegate;
pub mod devices;
pub mod error;
pub mod fsutil;
pub mod k8s;
pub mod limits;
pub mod lock;
pub mod logging;
pub mod mirror;
pub mod netns;
pub mod passthru;
pub mod safefs;
pub mod spawn;
pub mod spool;
#[cfg(test)]
pub mod testing;
pub mod tools;
