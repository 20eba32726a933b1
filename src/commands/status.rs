//! STATUS (CNI 1.1): are we ready for ADD? The readiness file must exist and the
//! primary network must report ready; its own code 50/51 passes through.

use super::Node;
use crate::cni::Version;
use crate::delegate::{self, PluginExec, RuntimeConf};
use crate::error::{CniError, Result, code};
use std::path::Path;

pub async fn status<E: PluginExec, N>(node: &Node<E, N>) -> Result<()> {
    if node.conf.version() < Version::V1_1_0 {
        return Err(CniError::new(code::INCOMPATIBLE_VERSION, "config version does not allow STATUS"));
    }
    node.conf.require_networks()?;
    let file = &node.conf.readiness_indicator_file;
    if !file.is_empty() && !crate::safefs::is_regular_file(Path::new(file)) {
        return Err(CniError::new(
            code::NOT_AVAILABLE,
            format!("the default network is not ready: {file} does not exist or is not a regular file"),
        ));
    }
    let Some(master) = node.static_delegates()?.into_iter().next() else {
        return Ok(());
    };
    let rt = RuntimeConf::default();
    delegate::status_network(&node.exec, &master.config, &rt).await
}
