//! STATUS (CNI 1.1): are we ready for ADD? The readiness file must exist and the
//! primary network — `delegates[0]` or `clusterNetwork` in any of its forms, resolved
//! by [`super::primary`] — must report ready; its own code 50/51 passes through. A
//! primary that cannot be resolved (file gone, NAD missing, API down with no local
//! copy) is code 50: ADD could not attach it either.

use super::Invocation;
use super::primary;
use crate::cni::Version;
use crate::delegate::{self, PluginExec, RuntimeConf};
use crate::error::{NotAvailable, Result, VersionError};
use std::path::Path;

pub async fn status<E: PluginExec, N>(inv: &Invocation<E, N>) -> Result<()> {
    if inv.conf.version() < Version::V1_1_0 {
        return Err(VersionError::VerbNotAllowed("STATUS").into());
    }
    inv.conf.require_networks()?;
    let file = &inv.conf.readiness_indicator_file;
    if !file.is_empty() && !crate::safefs::is_regular_file(Path::new(file)) {
        return Err(NotAvailable::NotReady { file: file.clone() }.into());
    }
    let kube = primary::connect_if_needed(inv, false).await;
    let primary_net = primary::primary(inv, kube.as_ref(), "").await.map_err(|e| NotAvailable::Primary(e.msg))?;
    let Some(primary_net) = primary_net else {
        return Ok(());
    };
    let rt = RuntimeConf::default();
    delegate::status_network(&inv.exec, &primary_net.config, &rt).await
}
