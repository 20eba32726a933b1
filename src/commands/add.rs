//! ADD: resolve and validate every delegate, cache them, run them in order, roll back on
//! failure, and return the primary result in the caller's cniVersion.

use super::Invocation;
use super::plan::{self, Attachment, Plan, PlanError};
use crate::cache;
use crate::cni::{CniResult, K8sArgs};
use crate::config::MultusConf;
use crate::delegate::{self, DelegateResult, PluginExec};
use crate::error::{CniError, IoError, Result, WaitError};
use crate::k8s::client::Kube;
use crate::k8s::pod::{self, PodInfo, PodLookup};
use crate::k8s::status;
use crate::netns::{NetnsError, NetnsOps};
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

pub async fn add<E: PluginExec, N: NetnsOps>(inv: &Invocation<E, N>) -> Result<Value> {
    inv.conf.require_networks()?;
    let k8s = inv.k8s_args()?;
    super::for_pod(&k8s, add_pod(inv, &k8s)).await
}

async fn add_pod<E: PluginExec, N: NetnsOps>(inv: &Invocation<E, N>, k8s: &K8sArgs) -> Result<Value> {
    let conf = &inv.conf;
    wait_for_readiness(conf).await?;
    // A node whose own plugins are missing should say so before anything else.
    if conf.cluster_network.is_empty() {
        for d in inv.static_delegates()? {
            delegate::check_binaries(&inv.exec, &d.config)
                .map_err(|e| e.context(format!("network {:?}", d.name)).about_pod_phrase())?;
        }
    }
    // The client is built only here: no other verb needs the API.
    let kube = if k8s.has_pod() { Kube::connect(conf, conf.api_timeout()).await? } else { None };
    let pod = match &kube {
        Some(kube) => match pod::lookup(conf, kube, k8s).await? {
            PodLookup::Found(p) => Some(p),
            // As Go Multus: the pod is already gone (a racing deletion); succeed
            // without running anything so the runtime can tear the sandbox down.
            PodLookup::NotFound => {
                tracing::warn!("pod not found in the API; returning an empty result");
                return pod_not_found_result(inv);
            }
        },
        None => None,
    };
    let plan = plan_with_events(inv, kube.as_ref(), pod.as_ref()).await?;
    let attachments = &plan.attachments;
    validate_plan(inv, attachments).await?;
    let cid = &inv.env.container_id;
    crate::devices::write_device_info(conf, cid, attachments.iter().map(|a| (&a.delegate, &a.device)));
    // Every ADD with a pod ends in the status write. When nothing has asked the API yet
    // (annotations from the runtime, NADs from the mirror), its connection is opened now,
    // while the delegates run, not after them. Not earlier: on our one thread the TLS
    // handshake's CPU runs whenever the ADD awaits, so started before the planning it ran
    // ahead of the first delegate instead of beside it (0.74 ms on the ADD's path, measured).
    if let Some(kube) = &kube {
        kube.preconnect();
    }
    // A failed run rolls back what ran; the device-info files of the rest go too.
    let (results, writes) = run_delegates(inv, k8s, attachments)
        .await
        .inspect_err(|_| attachments.iter().for_each(|a| crate::devices::remove_device_info(conf, cid, &a.delegate)))?;
    finish(inv, k8s, (kube.as_ref(), pod.as_ref()), &plan, results, writes).await
}

/// After the delegates: default routes, then the status write overlapped with the last
/// cache writes; any failure rolls the whole ADD back.
async fn finish<E: PluginExec, N: NetnsOps>(
    inv: &Invocation<E, N>,
    k8s: &K8sArgs,
    (kube, pod): (Option<&Kube>, Option<&PodInfo>),
    plan: &Plan,
    mut results: Vec<DelegateResult>,
    mut writes: ResultWrites,
) -> Result<Value> {
    let attachments = &plan.attachments;
    if attachments.iter().any(|a| !a.default_route.is_empty()) {
        // The default-route step rewrites cached results: the first writes land first.
        let routed = match writes.finish().await {
            Ok(()) => apply_default_routes(inv, k8s, plan, &mut results).await,
            Err(e) => Err(e),
        };
        if let Err(e) = routed {
            rollback(inv, k8s, attachments, &results).await;
            return Err(e);
        }
    }
    if let Some(kube) = &kube {
        // The delegates' run time is not the API's: the status write gets its own budget.
        kube.start_phase();
    }
    // The last results still being written (fsync) and the status write overlap: both
    // must succeed before the ADD does, neither waits for the other. A cache write that
    // fails after the status went out rolls the ADD back all the same: the pod's status
    // then describes an undone ADD until the runtime's retry writes it again (the events
    // have the same caveat).
    let published = async {
        match (kube, pod) {
            (Some(kube), Some(pod)) => publish(inv, kube, pod, plan, &results).await.map_err(CniError::about_pod),
            _ => Ok(()),
        }
    };
    let (written, published) = futures::join!(writes.finish(), published);
    if let Err(e) = written.and(published) {
        rollback(inv, k8s, attachments, &results).await;
        return Err(e);
    }
    primary_result(&inv.conf, attachments, &results)
}

/// The plan; a network that cannot be had is recorded on the pod as a `NoNetworkFound`
/// warning (as Go Multus) before the ADD fails.
async fn plan_with_events<E: PluginExec, N>(
    inv: &Invocation<E, N>,
    kube: Option<&Kube>,
    pod: Option<&PodInfo>,
) -> Result<Plan> {
    match plan::plan(inv, kube, pod).await {
        Ok(plan) => Ok(plan),
        Err(PlanError::NetworkUnavailable { message, error }) => {
            if let (Some(kube), Some(pod)) = (kube, pod) {
                pod::send_events(kube, pod, vec![("Warning", "NoNetworkFound", message)]).await;
            }
            Err(error)
        }
        Err(PlanError::Invalid(error)) => Err(error),
    }
}

/// Go Multus' answer for a pod the API does not know: one interface, `0.0.0.0/0`.
fn pod_not_found_result<E, N>(inv: &Invocation<E, N>) -> Result<Value> {
    let result = CniResult {
        cni_version: inv.conf.cni_version.clone(),
        interfaces: vec![crate::cni::result::Interface {
            name: inv.env.ifname.clone(),
            sandbox: Some(inv.env.netns.clone()),
            ..Default::default()
        }],
        ips: vec![crate::cni::result::IpConfig {
            interface: None,
            address: "0.0.0.0/0".into(),
            gateway: Some("0.0.0.0".into()),
        }],
        ..Default::default()
    };
    result.to_value(&inv.conf.cni_version)
}

/// `default-route` requests: per family, the requested gateway becomes the only
/// default route in the pod (Go Multus deletes both families everywhere and, with
/// netlink >= 1.3, nothing at all: #1011, #1444, PR #1552). The cached results (and
/// so the status and the result we print) are kept consistent with the netns.
async fn apply_default_routes<E: PluginExec, N: NetnsOps>(
    inv: &Invocation<E, N>,
    k8s: &K8sArgs,
    plan: &Plan,
    results: &mut [DelegateResult],
) -> Result<()> {
    let netns = Path::new(&inv.env.netns);
    let mut taken: Vec<(usize, IpAddr)> = Vec::new();
    for (i, a) in plan.attachments.iter().enumerate() {
        for gw in &a.default_route {
            let d = &a.delegate;
            inv.netns.set_default_route(netns, &d.ifname, *gw).await.map_err(|e| {
                CniError::from(e)
                    .context(format!("error setting default gateway {gw} on {}", d.ifname))
                    .about_pod_phrase()
            })?;
            taken.push((i, *gw));
        }
    }
    if taken.is_empty() {
        return Ok(());
    }
    for (i, d) in plan.delegates().enumerate() {
        let Some(added) = results.get_mut(i) else { continue };
        let r = &mut added.parsed;
        for (owner, gw) in &taken {
            let v4 = gw.is_ipv4();
            r.routes.retain(|rt| {
                !(is_default(&rt.dst) && crate::cni::result::cidr_ip(&rt.dst).is_some_and(|ip| ip.is_ipv4() == v4))
            });
            if *owner == i {
                let dst = if v4 { "0.0.0.0/0" } else { "::/0" };
                r.routes.push(crate::cni::result::Route {
                    dst: dst.into(),
                    gw: Some(gw.to_string()),
                    ..Default::default()
                });
            }
        }
        added.raw = r.to_value(if r.cni_version.is_empty() { d.config.cni_version() } else { &r.cni_version })?;
        let rt = inv.runtime_conf(k8s, d);
        cache::save_result(&inv.cni_dir(), &inv.result_record(d, &rt, &added.raw))?;
    }
    Ok(())
}

fn is_default(dst: &str) -> bool {
    dst.ends_with("/0")
}

/// Write the network-status annotation, then send the AddedInterface events.
async fn publish<E: PluginExec, N: NetnsOps>(
    inv: &Invocation<E, N>,
    kube: &Kube,
    pod: &PodInfo,
    plan: &Plan,
    results: &[DelegateResult],
) -> Result<()> {
    let mut entries = Vec::new();
    let mut events = Vec::new();
    for (a, added) in plan.attachments.iter().zip(results) {
        let (d, r) = (&a.delegate, &added.parsed);
        if !r.is_empty() {
            events.push(("Normal", "AddedInterface", status::added_interface_message(&d.ifname, r, &d.name)));
        }
        let confirmed = r.sandbox_interfaces().next().is_some();
        let device_info = crate::devices::status_device_info(&inv.conf, &inv.env.container_id, d);
        entries.extend(status::entries(&d.name, &d.ifname, d.primary, r, &a.default_route).into_iter().map(|mut e| {
            e.device_info = device_info.clone();
            (e, confirmed)
        }));
    }
    // Fill what results lack (Calico reports no sandbox interface, some plugins no MAC)
    // from the netns: one netlink dump, only when something is missing.
    if entries.iter().any(|(e, _)| e.mac.is_empty() && !e.interface.is_empty()) {
        let links = inv.netns.links(Path::new(&inv.env.netns)).await.unwrap_or_default();
        for (e, confirmed) in entries.iter_mut().filter(|(e, _)| e.mac.is_empty() && !e.interface.is_empty()) {
            match links.iter().find(|l| l.name == e.interface) {
                Some(link) => e.mac = link.mac.clone().unwrap_or_default(),
                // An interface name we only requested and cannot see: say nothing rather than guess.
                None if !*confirmed => e.interface.clear(),
                None => {}
            }
        }
    }
    let entries: Vec<_> = entries.into_iter().map(|(e, _)| e).collect();
    let value = status::annotation_value(&entries);
    let mut annotations = serde_json::Map::new();
    annotations.insert(status::NETWORK_STATUS_ANNOTATION.into(), value.clone().into());
    if inv.conf.write_legacy_networks_status {
        annotations.insert(status::LEGACY_NETWORKS_STATUS_ANNOTATION.into(), value.into());
    }
    // Status and events at once: one round trip on the critical path, not two. The
    // price: when the status write fails (and the ADD is rolled back), the events may
    // already say the interfaces were added — the same as Go Multus, whose events are
    // sent as each delegate finishes.
    let (patched, ()) = futures::join!(
        kube.set_pod_annotations(&pod.namespace, &pod.name, pod.precondition_uid(), &annotations),
        pod::send_events(kube, pod, events)
    );
    patched
}

/// Everything that can be checked before anything runs: binaries, interface names
/// unique in the plan and not yet taken in the pod's netns.
pub async fn validate_plan<E: PluginExec, N: NetnsOps>(inv: &Invocation<E, N>, plan: &[Attachment]) -> Result<()> {
    let mut seen = HashSet::new();
    for d in plan.iter().map(|a| &a.delegate) {
        delegate::check_binaries(&inv.exec, &d.config)
            .map_err(|e| e.context(format!("network {:?}", d.name)).about_pod_phrase())?;
        if !seen.insert(d.ifname.as_str()) {
            return Err(CniError::invalid_config(format!(
                "interface name {} is requested by more than one network (second: {})",
                d.ifname, d.name
            ))
            .about_pod_phrase());
        }
        crate::cni::env::check_ifname(&d.ifname)
            .map_err(|e| CniError::invalid_config(format!("network {:?}: {e}", d.name)).about_pod_phrase())?;
    }
    // One netlink dump of the pod's links, not one lookup per attachment.
    let existing =
        inv.netns.links(Path::new(&inv.env.netns)).await.map_err(|e| CniError::from(e).about_pod_phrase())?;
    if let Some(d) = plan.iter().map(|a| &a.delegate).find(|d| existing.iter().any(|l| l.name == d.ifname)) {
        return Err(NetnsError::InterfaceExists { network: d.name.clone(), ifname: d.ifname.clone() }.into());
    }
    Ok(())
}

/// Cache the plan, then ADD each delegate in order. When delegate *i* fails, delegates
/// *i..0* are DELeted in reverse (the failed one too: it may have half-configured
/// things) and the original error is returned; nothing is left behind.
/// On success the results come with their cache writes, which may still be running:
/// the caller overlaps them with the status write and must [`ResultWrites::finish`] them.
pub async fn run_delegates<E: PluginExec, N>(
    inv: &Invocation<E, N>,
    k8s: &K8sArgs,
    plan: &[Attachment],
) -> Result<(Vec<DelegateResult>, ResultWrites)> {
    let cni_dir = inv.cni_dir();
    let scratch = cache::encode_delegates(&inv.env.container_id, plan.iter().map(|a| &a.delegate))
        .and_then(|encoded| cache::stage_delegates(&cni_dir, &inv.env.container_id, &encoded))
        .map_err(|e| e.context("error saving the delegates").about_pod_phrase())?;
    let mut results: Vec<DelegateResult> = Vec::with_capacity(plan.len());
    // The scratch record is in its temp file (a cniDir that cannot take it has failed the
    // ADD before anything ran); its fsyncs and rename, then each result's write (temp +
    // fsync + rename), run on a blocking thread while the next delegate runs: the fsyncs
    // cost journal commits on the node's disk and would otherwise add up on the ADD's
    // critical path. The price (docs/reliability.md): a plugin killed within the first
    // delegate's first millisecond may leave no scratch record, and its DEL then
    // resolves the networks again, as after a lost cache.
    let mut writes = ResultWrites(Vec::with_capacity(plan.len() + 1));
    writes.0.push(tokio::task::spawn_blocking(move || {
        scratch.commit().map_err(|e| e.context("error saving the delegates").about_pod_phrase())
    }));
    let mut failure = None;
    for (i, d) in plan.iter().map(|a| &a.delegate).enumerate() {
        let rt = inv.runtime_conf(k8s, d);
        let started = Instant::now();
        // A result we cannot read would break the status, the printed result and the
        // chained prevResult later: treat it as this delegate's failure now.
        let outcome = delegate::add_network(&inv.exec, &d.config, &rt).await.and_then(|raw| {
            DelegateResult::parse(raw, d.config.cni_version())
                .map_err(|e| e.context(format!("plugin returned an unusable result for {}", d.ifname)))
        });
        match outcome {
            Ok(added) => {
                tracing::info!("added {} ({}) in {:?}", d.ifname, d.name, started.elapsed());
                let (dir, record) = (cni_dir.clone(), inv.result_record(d, &rt, &added.raw));
                writes.0.push(tokio::task::spawn_blocking(move || {
                    cache::save_result(&dir, &record).map_err(CniError::about_pod)
                }));
                results.push(added);
            }
            Err(e) => {
                let tag = format!("[{}/{}/{}:{}]", k8s.namespace, k8s.name, k8s.uid, d.config.name());
                failure =
                    Some((i, e.context(format!("{tag}: error adding container to network {:?}", d.config.name()))));
                break;
            }
        }
    }
    if let Some((i, e)) = failure {
        // Every write finishes before the rollback removes what they wrote.
        let _ = writes.finish().await;
        rollback(inv, k8s, &plan[..=i.min(plan.len() - 1)], &results).await;
        return Err(e);
    }
    Ok((results, writes))
}

/// Result-cache writes (temp + fsync + rename) running on blocking threads.
pub struct ResultWrites(Vec<tokio::task::JoinHandle<Result<()>>>);

impl ResultWrites {
    /// Wait for every write; the first failure is the ADD's. Nothing else may touch the
    /// results cache of this container before this returns.
    pub async fn finish(&mut self) -> Result<()> {
        let mut first = Ok(());
        for w in self.0.drain(..) {
            let written = w.await.unwrap_or_else(|e| Err(IoError::from(e).into()));
            if let (Err(e), Ok(())) = (written, &first) {
                first = Err(e);
            }
        }
        first
    }
}

/// DEL `done` in reverse; errors are logged, not returned (the ADD error is what matters).
pub async fn rollback<E: PluginExec, N>(
    inv: &Invocation<E, N>,
    k8s: &K8sArgs,
    done: &[Attachment],
    results: &[DelegateResult],
) {
    let cni_dir = inv.cni_dir();
    for (j, d) in done.iter().map(|a| &a.delegate).enumerate().rev() {
        let rt = inv.runtime_conf(k8s, d);
        let prev = results.get(j).map(|r| &r.raw);
        if let Err(e) = delegate::del_network(&inv.exec, &d.config, &rt, prev).await {
            tracing::error!("rollback of {} ({}) failed: {}", d.ifname, d.name, e.msg);
        }
        cache::remove_result(&cni_dir, d.config.name(), &inv.env.container_id, &d.ifname);
        crate::devices::remove_device_info(&inv.conf, &inv.env.container_id, d);
    }
    if let Err(e) = cache::remove_delegates(&cni_dir, &inv.env.container_id) {
        tracing::error!("{}", e.msg);
    }
}

/// The primary result, converted to the caller's cniVersion (the spec wants the
/// output in the input's version; Go Multus prints the primary's own).
pub fn primary_result(conf: &MultusConf, plan: &[Attachment], results: &[DelegateResult]) -> Result<Value> {
    let i = plan.iter().position(|a| a.delegate.primary).unwrap_or(0);
    let added = results.get(i).ok_or_else(|| CniError::invalid_config("no delegate produced a result"))?;
    added.parsed.to_value(&conf.cni_version)
}

/// Wait for `readinessindicatorfile` (the default network's "I am ready" file): polled
/// every second up to the configured budget, then "try again later" (code 11).
pub async fn wait_for_readiness(conf: &MultusConf) -> Result<()> {
    if conf.readiness_indicator_file.is_empty() {
        return Ok(());
    }
    let path = Path::new(&conf.readiness_indicator_file);
    let deadline = Instant::now() + conf.readiness_timeout();
    loop {
        // Only a regular file counts (never opened: a FIFO there cannot block us).
        if crate::safefs::is_regular_file(path) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CniError::from(WaitError::Readiness { path: path.display().to_string() }).about_pod());
        }
        tokio::time::sleep(Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}
