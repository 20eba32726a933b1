//! CHECK: every cached attachment (Go Multus checks only the static delegates, and none
//! at all in clusterNetwork mode), each with its cached result as prevResult.

use super::Invocation;
use crate::cache;
use crate::cni::{K8sArgs, Version};
use crate::delegate::{self, PluginExec};
use crate::error::{Result, VersionError};

pub async fn check<E: PluginExec, N>(inv: &Invocation<E, N>) -> Result<()> {
    if inv.conf.version() < Version::V0_4_0 {
        return Err(VersionError::VerbNotAllowed("CHECK").into());
    }
    inv.conf.require_networks()?;
    let k8s = inv.k8s_args()?;
    super::for_pod(&k8s, check_pod(inv, &k8s)).await
}

async fn check_pod<E: PluginExec, N>(inv: &Invocation<E, N>, k8s: &K8sArgs) -> Result<()> {
    let delegates = match cache::load_delegates(&inv.cni_dir(), &inv.env.container_id, &inv.env.ifname) {
        Ok(Some(d)) => d,
        Ok(None) => inv.static_delegates()?,
        Err(e) => return Err(e.about_pod()),
    };
    for d in &delegates {
        let rt = inv.runtime_conf(k8s, d);
        let cached = inv.prev_result_for(d);
        delegate::check_network(&inv.exec, &d.config, &rt, cached.as_ref())
            .await
            .map_err(|e| e.context(format!("CHECK of {} ({})", d.ifname, d.name)).about_pod_phrase())?;
    }
    Ok(())
}
