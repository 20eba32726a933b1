//! Kubernetes: pod, NADs, network selection, network-status, events.

pub mod client;
pub mod errors;
pub mod kubeconfig;
pub mod nad;
pub mod pod;
pub mod selection;
pub mod status;
pub mod transport;
