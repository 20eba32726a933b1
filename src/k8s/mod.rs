//! Kubernetes: pod, NADs, network selection, network-status, events.

pub mod selection;
