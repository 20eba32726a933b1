//! ADD: resolve and validate every delegate, cache them, run them in order, roll back on
//! failure, and return the master's result in the caller's cniVersion.

use super::Node;
use crate::cache;
use crate::cni::{CniResult, K8sArgs};
use crate::config::MultusConf;
use crate::delegate::{self, Delegate, PluginExec};
use crate::error::{CniError, Result, code};
use crate::netns::NetnsOps;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

pub async fn add<E: PluginExec, N: NetnsOps>(node: &Node<E, N>) -> Result<Value> {
    let conf = &node.conf;
    conf.require_networks()?;
    let k8s = node.k8s_args()?;
    wait_for_readiness(conf, &k8s).await?;
    let plan = node.static_delegates()?;
    validate_plan(node, &k8s, &plan).await?;
    let results = run_delegates(node, &k8s, &plan).await?;
    master_result(conf, &plan, &results)
}

/// Everything that can be checked before anything runs: binaries, interface names
/// unique in the plan and not yet taken in the pod's netns.
pub async fn validate_plan<E: PluginExec, N: NetnsOps>(
    node: &Node<E, N>,
    k8s: &K8sArgs,
    plan: &[Delegate],
) -> Result<()> {
    let mut seen = HashSet::new();
    for d in plan {
        delegate::check_binaries(&node.exec, &d.config)
            .map_err(|e| e.context(format!("{} network {:?}", k8s.tag(), d.name)))?;
        if !seen.insert(d.ifname.as_str()) {
            return Err(CniError::invalid_config(format!(
                "{} interface name {} is requested by more than one network (second: {})",
                k8s.tag(),
                d.ifname,
                d.name
            )));
        }
        crate::cni::env::validate_ifname(&d.ifname).map_err(|e| {
            CniError::invalid_config(format!("{} network {:?}: {e}", k8s.tag(), d.name))
        })?;
        if node
            .netns
            .link(Path::new(&node.env.netns), &d.ifname)
            .await
            .map_err(|e| CniError::new(code::NETNS, e.to_string()))?
            .is_some()
        {
            return Err(CniError::new(
                code::NETNS,
                format!(
                    "cannot set {:?} interface name to {:?}: interface name {} already exists",
                    d.name, d.ifname, d.ifname
                ),
            ));
        }
    }
    Ok(())
}

/// Cache the plan, then ADD each delegate in order. When delegate *i* fails, delegates
/// *i..0* are DELeted in reverse (the failed one too: it may have half-configured
/// things) and the original error is returned; nothing is left behind.
pub async fn run_delegates<E: PluginExec, N>(
    node: &Node<E, N>,
    k8s: &K8sArgs,
    plan: &[Delegate],
) -> Result<Vec<Value>> {
    let cni_dir = node.cni_dir();
    cache::save_delegates(&cni_dir, &node.env.container_id, plan)
        .map_err(|e| e.context(format!("{} error saving the delegates", k8s.tag())))?;
    let mut results: Vec<Value> = Vec::with_capacity(plan.len());
    for (i, d) in plan.iter().enumerate() {
        let rt = node.runtime_conf(k8s, d);
        let started = Instant::now();
        let outcome = match delegate::add_network(&node.exec, &d.config, &rt).await {
            Ok(result) => node.save_result(d, &rt, &result).map(|_| result),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(result) => {
                tracing::info!(
                    "{} added {} ({}) in {:?}",
                    k8s.tag(),
                    d.ifname,
                    d.name,
                    started.elapsed()
                );
                results.push(result);
            }
            Err(e) => {
                rollback(node, k8s, &plan[..=i], &results).await;
                let tag = format!(
                    "[{}/{}/{}:{}]",
                    k8s.namespace,
                    k8s.name,
                    k8s.uid,
                    d.config.name()
                );
                return Err(e.context(format!(
                    "{tag}: error adding container to network {:?}",
                    d.config.name()
                )));
            }
        }
    }
    Ok(results)
}

/// DEL `done` in reverse; errors are logged, not returned (the ADD error is what matters).
pub async fn rollback<E: PluginExec, N>(
    node: &Node<E, N>,
    k8s: &K8sArgs,
    done: &[Delegate],
    results: &[Value],
) {
    let cni_dir = node.cni_dir();
    for (j, d) in done.iter().enumerate().rev() {
        let rt = node.runtime_conf(k8s, d);
        if let Err(e) = delegate::del_network(&node.exec, &d.config, &rt, results.get(j)).await {
            tracing::error!(
                "{} rollback of {} ({}) failed: {}",
                k8s.tag(),
                d.ifname,
                d.name,
                e.msg
            );
        }
        cache::remove_result(&cni_dir, d.config.name(), &node.env.container_id, &d.ifname);
    }
    if let Err(e) = cache::remove_delegates(&cni_dir, &node.env.container_id) {
        tracing::error!("{} {}", k8s.tag(), e.msg);
    }
}

/// The master's result, converted to the caller's cniVersion (the spec wants the
/// output in the input's version; Go Multus prints the master's own).
pub fn master_result(conf: &MultusConf, plan: &[Delegate], results: &[Value]) -> Result<Value> {
    let i = plan.iter().position(|d| d.master).unwrap_or(0);
    let raw = results
        .get(i)
        .ok_or_else(|| CniError::invalid_config("no delegate produced a result"))?;
    CniResult::convert(raw, plan[i].config.cni_version(), &conf.cni_version)
}

/// Wait for `readinessindicatorfile` (the default network's "I am ready" file): polled
/// every second up to the configured budget, then "try again later" (code 11).
pub async fn wait_for_readiness(conf: &MultusConf, k8s: &K8sArgs) -> Result<()> {
    if conf.readiness_indicator_file.is_empty() {
        return Ok(());
    }
    let path = Path::new(&conf.readiness_indicator_file);
    let deadline = Instant::now() + conf.readiness_timeout();
    loop {
        if path.exists() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "{}: have you checked that your default network is ready? still waiting for readinessindicatorfile @ {}",
                    k8s.tag(),
                    path.display()
                ),
            ));
        }
        tokio::time::sleep(
            Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}
