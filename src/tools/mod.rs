//! The node-side tools of the `multus` CLI, apart from the plugin core: `install` (the
//! DaemonSet's entrypoint), `doctor` (diagnose a node) and `validate` (check NADs and
//! annotations offline). The plugin path never imports from here.

pub mod agent;
pub mod devices;
pub mod doctor;
pub mod install;
pub mod report;
pub mod validate;
