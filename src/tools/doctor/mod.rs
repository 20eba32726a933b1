//! `multus doctor`: what on this node would make an ADD fail, found without running one.
//!
//! Each check reads something real (the config file, binDir, the kubeconfig and the API
//! server, the cache directory, the host's links) and comes out ✓ / ⚠ / ✗ with one line of
//! explanation and, when something is off, a hint. Nothing on the node is changed. Every
//! API call has a deadline: a dead API server is a ✗, never a hang.
//!
//! [`Report`] and [`Check`] are shared with `multus validate`.

use crate::cache;
use crate::config::MultusConf;
use crate::delegate::{BinaryExec, NetworkConfig, PluginExec};
use crate::k8s::client::Kube;
use crate::k8s::nad;
use crate::netns::{IpFamily, LinkInfo, Netlink};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

mod api;
mod cache_dir;
mod config_file;
mod links;
mod nads;
mod networks;
mod plugins;

use self::{api::*, cache_dir::*, config_file::*, links::*, nads::*, networks::*, plugins::*};
pub use crate::tools::report::{Check, Report, Status};

/// Where the Multus DaemonSet writes its config; `.conflist` when it writes a list.
const DEFAULT_CONFIG: &str = "/etc/cni/net.d/00-multus.conf";
const DEFAULT_CONFLIST: &str = "/etc/cni/net.d/00-multus.conflist";
/// No single API call of the doctor waits longer than this.
const MAX_API_WAIT: Duration = Duration::from_secs(5);
/// Stale cache entries named in one line before "and N more".
const MAX_LISTED: usize = 5;

// ---------------------------------------------------------------------------------------
// Options and entry point
// ---------------------------------------------------------------------------------------

/// `multus doctor` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The Multus config file: 00-multus.conf, or a .conflist whose first plugin of type
    /// multus is used [default: /etc/cni/net.d/00-multus.conf, else 00-multus.conflist]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The runtime's plugin directories (its CNI_PATH, ':'-separated), searched after binDir
    #[arg(long = "cni-path", value_name = "DIRS", default_value = crate::config::DEFAULT_BIN_DIR)]
    pub cni_path: String,
    /// Cache entries older than this many days are flagged as possibly stale
    #[arg(long = "stale-days", value_name = "DAYS", default_value_t = 30)]
    pub stale_days: u64,
    /// Print the report as JSON: a list of {check, status (ok|warn|fail), message, hint}
    #[arg(long)]
    pub json: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { config: None, cni_path: crate::config::DEFAULT_BIN_DIR.into(), stale_days: 30, json: false }
    }
}

/// Diagnose this node. Never panics on bad input; the caller prints the report and exits
/// with [`Report::exit_code`].
pub fn run(opts: &Options) -> Report {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(diagnose(opts)),
        Err(e) => Report {
            checks: vec![Check::fail("doctor", format!("cannot start the async runtime: {e}"), "report this as a bug")],
        },
    }
}

/// The checks, in the order a person would go through them.
pub async fn diagnose(opts: &Options) -> Report {
    let mut report = Report::default();
    let path = config_path(opts);
    let Some(conf) = check_config(&mut report, &path) else {
        return report;
    };
    let wait = api_wait(&conf);
    let client = check_api(&mut report, &conf, wait).await;
    if let Some(client) = &client {
        report.extend(check_rbac(client, wait).await);
    }
    let networks = check_networks(&mut report, &conf, client.as_ref(), wait).await;
    let cni_path: Vec<PathBuf> = std::env::split_paths(&opts.cni_path).filter(|p| !p.as_os_str().is_empty()).collect();
    let exec = BinaryExec::new(&conf.bin_dir, &cni_path, conf.delegate_timeout());
    report.extend(check_binaries(&exec, &networks, Status::Fail));
    report.extend(check_readiness(&conf));
    report.extend(crate::tools::agent::doctor::check_mirror(&conf));
    let stale_after = Duration::from_secs(opts.stale_days.saturating_mul(24 * 3600));
    report.extend(check_cache(Path::new(&conf.cni_dir), stale_after, SystemTime::now()));
    let nads = match &client {
        Some(client) => check_nads(&mut report, client, &conf, &exec, wait).await,
        None => Vec::new(),
    };
    let all: Vec<Network> = networks.into_iter().chain(nads).collect();
    report.extend(check_masters(&all).await);
    report
}

fn config_path(opts: &Options) -> PathBuf {
    if let Some(p) = &opts.config {
        return p.clone();
    }
    // The DaemonSet writes one or the other; prefer the one that exists.
    if !Path::new(DEFAULT_CONFIG).exists() && Path::new(DEFAULT_CONFLIST).exists() {
        return DEFAULT_CONFLIST.into();
    }
    DEFAULT_CONFIG.into()
}

/// Per-call deadline: the config's API budget, capped so the doctor stays quick.
fn api_wait(conf: &MultusConf) -> Duration {
    conf.api_timeout().min(MAX_API_WAIT)
}

/// A network the node would attach: where it comes from and its config.
#[derive(Debug, Clone)]
struct Network {
    /// `delegate k8s-pod-network`, `clusterNetwork calico`, `NAD default/macvlan-conf`.
    label: String,
    config: NetworkConfig,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn network(label: &str, v: Value) -> Network {
        Network { label: label.into(), config: NetworkConfig::from_value(&v).unwrap() }
    }

    fn link(name: &str, up: bool, promiscuous: bool, addresses: &[(&str, u8)]) -> LinkInfo {
        LinkInfo {
            name: name.into(),
            index: 7,
            mac: Some("02:00:00:00:00:07".into()),
            mtu: Some(1500),
            addresses: addresses.iter().map(|(a, p)| (a.parse().unwrap(), *p)).collect(),
            up,
            promiscuous,
        }
    }

    #[test]
    fn report_text_json_and_exit_code() {
        let mut r = Report::default();
        r.push(Check::ok("config", "parses"));
        assert_eq!(r.exit_code(), 0);
        r.push(Check::warn("master eth1", "not promiscuous", "ip link set dev eth1 promisc on"));
        assert_eq!(r.exit_code(), 0, "warnings do not fail");
        r.push(Check::fail("plugin macvlan", "not found", "install it"));
        assert_eq!(r.exit_code(), 1);
        let text = r.to_text();
        assert!(text.starts_with(
            "✓ config: parses\n⚠ master eth1: not promiscuous\n    hint: ip link set dev eth1 promisc on\n"
        ));
        assert!(text.ends_with("1 failure, 1 warning, 1 ok"), "{text}");
        let json: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json[0], json!({"check":"config","status":"ok","message":"parses","hint":null}));
        assert_eq!(json[2]["status"], "fail");
    }

    #[test]
    fn conflist_contributes_its_multus_plugin_with_the_list_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("00-multus.conflist");
        std::fs::write(
            &p,
            r#"{"cniVersion":"1.0.0","name":"multus-list","plugins":[{"type":"portmap"},{"type":"multus","delegates":[{"name":"d","type":"bridge"}],"kubeconfig":"/k"}]}"#,
        )
        .unwrap();
        let c = load_config(&p).unwrap();
        assert_eq!((c.name.as_str(), c.cni_version.as_str(), c.kubeconfig.as_str()), ("multus-list", "1.0.0", "/k"));
        std::fs::write(&p, r#"{"cniVersion":"1.0.0","name":"l","plugins":[{"type":"bridge"}]}"#).unwrap();
        assert!(load_config(&p).unwrap_err().contains("no plugin of type \"multus\""));
        std::fs::write(&p, "{").unwrap();
        assert!(load_config(&p).unwrap_err().contains("not valid JSON"));
        assert!(load_config(&dir.path().join("nope")).unwrap_err().contains("cannot read"));
    }

    #[test]
    fn config_order_warns_when_another_file_sorts_first() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("00-multus.conf");
        std::fs::write(&ours, "{}").unwrap();
        std::fs::write(dir.path().join("10-calico.conflist"), "{}").unwrap();
        assert!(check_config_order(&ours).is_none());
        std::fs::write(dir.path().join("00-aaa.conf"), "{}").unwrap();
        assert_eq!(check_config_order(&ours).unwrap().status, Status::Warn);
    }

    #[test]
    fn rbac_patch_denied_is_a_warning_only_while_the_fallback_works() {
        let all = || vec![Ok(true); PERMISSIONS.len()];
        assert!(rbac_checks(&all()).iter().all(|c| c.status == Status::Ok));
        let mut patch_denied = all();
        patch_denied[1] = Ok(false);
        let checks = rbac_checks(&patch_denied);
        assert_eq!(checks[1].status, Status::Warn);
        assert_eq!(checks[1].check, "rbac: patch pods");
        let mut both = patch_denied.clone();
        both[2] = Ok(false);
        let checks = rbac_checks(&both);
        assert_eq!((checks[1].status, checks[2].status), (Status::Fail, Status::Fail));
        let mut only_status = all();
        only_status[2] = Ok(false);
        assert_eq!(rbac_checks(&only_status)[2].status, Status::Ok);
        for i in [0, 3, 4] {
            let mut denied = all();
            denied[i] = Ok(false);
            let checks = rbac_checks(&denied);
            assert_eq!(checks[i].status, Status::Fail, "{}", checks[i].check);
            assert!(checks[i].hint.as_deref().unwrap().contains("ClusterRole"));
        }
        let mut unanswered = all();
        unanswered[0] = Err("no answer within 5 s".into());
        assert_eq!(rbac_checks(&unanswered)[0].status, Status::Warn);
        assert_eq!(rbac_checks(&all())[3].check, "rbac: get network-attachment-definitions.k8s.cni.cncf.io");
    }

    #[test]
    fn master_link_states() {
        let uses = [MasterUse {
            network: "NAD default/m".into(),
            plugin: "macvlan".into(),
            master: Some("eth1".into()),
            subnets: vec![],
        }];
        let refs: Vec<&MasterUse> = uses.iter().collect();
        let status = |l: Result<Option<LinkInfo>, String>| {
            master_checks("eth1", &l, &refs).iter().map(|c| c.status).collect::<Vec<_>>()
        };
        assert_eq!(status(Ok(None)), vec![Status::Fail]);
        assert_eq!(status(Ok(Some(link("eth1", false, true, &[])))), vec![Status::Fail]);
        assert_eq!(status(Ok(Some(link("eth1", true, false, &[])))), vec![Status::Warn]);
        assert_eq!(status(Ok(Some(link("eth1", true, true, &[])))), vec![Status::Ok]);
        assert_eq!(status(Err("EPERM".into())), vec![Status::Fail]);
        let warn = &master_checks("eth1", &Ok(Some(link("eth1", true, false, &[]))), &refs)[0];
        assert!(warn.hint.as_deref().unwrap().starts_with("ip link set dev eth1 promisc on"));

        // ipvlan children share the parent's MAC: no promiscuity needed.
        let ipvlan = [MasterUse { plugin: "ipvlan".into(), ..uses[0].clone() }];
        let refs: Vec<&MasterUse> = ipvlan.iter().collect();
        assert_eq!(master_checks("eth1", &Ok(Some(link("eth1", true, false, &[]))), &refs)[0].status, Status::Ok);
    }

    #[test]
    fn own_node_address_in_the_subnet_gets_a_note() {
        let nets = [network(
            "NAD default/privatezone-macvlan-conf",
            json!({"cniVersion":"0.3.0","name":"privatezone-macvlan-conf","type":"macvlan","master":"enp0s8","mode":"bridge",
                   "ipam":{"type":"host-local","subnet":"10.12.34.0/24","rangeStart":"10.12.34.200","rangeEnd":"10.12.34.220",
                           "routes":[{"dst":"0.0.0.0/0"}],"gateway":"10.12.34.254"}}),
        )];
        let uses = master_uses(&nets);
        assert_eq!(uses.len(), 1);
        assert_eq!(uses[0].master.as_deref(), Some("enp0s8"));
        let refs: Vec<&MasterUse> = uses.iter().collect();
        let checks = master_checks("enp0s8", &Ok(Some(link("enp0s8", true, true, &[("10.12.34.101", 24)]))), &refs);
        assert_eq!(checks.iter().map(|c| c.status).collect::<Vec<_>>(), vec![Status::Ok, Status::Warn]);
        assert!(
            checks[1].message.contains("cannot reach this node's 10.12.34.101 over enp0s8"),
            "{}",
            checks[1].message
        );
        let elsewhere = master_checks("enp0s8", &Ok(Some(link("enp0s8", true, true, &[("192.168.1.5", 24)]))), &refs);
        assert_eq!(elsewhere.len(), 1);
    }

    #[test]
    fn ipam_subnets_of_every_ipam_flavour() {
        let p = json!({"type":"macvlan","ipam":{"type":"host-local","ranges":[[{"subnet":"10.0.4.0/24"}],[{"subnet":"fd00::/64"}]]}});
        assert_eq!(ipam_subnets(p.as_object().unwrap()).len(), 2);
        let p = json!({"type":"macvlan","ipam":{"type":"static","addresses":[{"address":"10.1.1.101/24"}]}});
        assert_eq!(ipam_subnets(p.as_object().unwrap()), vec![Cidr::parse("10.1.1.101/24").unwrap()]);
        let p = json!({"type":"ipvlan","ipam":{"type":"whereabouts","range":"192.168.2.225/28"}});
        assert_eq!(ipam_subnets(p.as_object().unwrap()).len(), 1);
        assert!(ipam_subnets(json!({"type":"macvlan"}).as_object().unwrap()).is_empty());
    }

    #[test]
    fn cidr_containment() {
        let c = Cidr::parse("10.12.34.0/24").unwrap();
        assert!(c.contains("10.12.34.101".parse().unwrap()));
        assert!(!c.contains("10.12.35.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.1.1.1/32").unwrap().contains("10.1.1.1".parse().unwrap()));
        assert!(Cidr::parse("fd00::/64").unwrap().contains("fd00::5".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0.0").is_none());
        assert!(Cidr::parse("x/8").is_none());
    }

    #[test]
    fn binaries_missing_or_not_executable() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        std::os::unix::fs::symlink("/bin/true", bin.join("bridge")).unwrap();
        std::fs::write(bin.join("host-local"), "#!/bin/sh\n").unwrap();
        let exec = BinaryExec::new(bin.to_str().unwrap(), &[], Duration::from_secs(1));
        let nets = [network(
            "delegate br",
            json!({"name":"br","cniVersion":"1.0.0","plugins":[{"type":"bridge","ipam":{"type":"host-local"}},{"type":"portmap"}]}),
        )];
        let checks = check_binaries(&exec, &nets, Status::Fail);
        let by_name: BTreeMap<&str, &Check> = checks.iter().map(|c| (c.check.as_str(), c)).collect();
        assert!(!by_name.contains_key("plugin binaries"), "no ✓ line while some are missing");
        assert!(by_name["plugin host-local"].message.contains("not an executable file"));
        assert!(by_name["plugin portmap"].message.contains("not found"));
        assert!(by_name["plugin portmap"].message.contains("used by delegate br"));
        let nad_checks = check_binaries(&exec, &nets, Status::Warn);
        assert!(nad_checks.iter().all(|c| c.status == Status::Warn));

        let bridge_only = [network("delegate b", json!({"name":"b","type":"bridge"}))];
        let exec = BinaryExec::new(bin.to_str().unwrap(), &[bin.to_path_buf()], Duration::from_secs(1));
        let checks = check_binaries(&exec, &bridge_only, Status::Fail);
        assert_eq!(checks, vec![Check::ok("plugin binaries", format!("all 1 found in {}: bridge", bin.display()))]);
    }

    #[test]
    fn cache_mode_corruption_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let cni = dir.path().join("multus");
        let now = SystemTime::now();
        let week = Duration::from_secs(7 * 86400);
        assert_eq!(check_cache(&cni, week, now)[0].status, Status::Ok, "missing is fine before the first ADD");
        crate::fsutil::create_private_dir(&cni).unwrap();
        let d = crate::delegate::Delegate {
            config: NetworkConfig::from_value(&json!({"name":"n","type":"bridge","cniVersion":"1.0.0"})).unwrap(),
            name: "n".into(),
            ifname: "eth0".into(),
            primary: true,
            capability_args: Map::new(),
        };
        cache::save_delegates(&cni, "good", std::slice::from_ref(&d)).unwrap();
        let checks = check_cache(&cni, week, now);
        assert_eq!(checks.len(), 1);
        assert!(
            checks[0].message.ends_with("mode 0700, 1 cached container(s), 0 cached result(s)"),
            "{}",
            checks[0].message
        );

        std::fs::write(cni.join("corrupt"), "garbage").unwrap();
        std::fs::create_dir_all(cache::results_dir(&cni)).unwrap();
        std::fs::write(cache::results_dir(&cni).join("n-x-eth0"), "{}").unwrap();
        let checks = check_cache(&cni, week, now);
        let failed: Vec<&str> =
            checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.message.as_str()).collect();
        assert_eq!(failed.len(), 2, "{checks:#?}");
        assert!(failed.iter().any(|m| m.contains("corrupt")), "{failed:?}");
        assert!(failed.iter().any(|m| m.contains("n-x-eth0")), "{failed:?}");

        let later = now + Duration::from_secs(8 * 86400);
        let stale = check_cache(&cni, week, later);
        let stale = stale.iter().find(|c| c.status == Status::Warn).unwrap();
        assert!(stale.message.starts_with("3 entries older than 7 days"), "{}", stale.message);

        std::fs::set_permissions(&cni, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_cache(&cni, week, now).iter().any(|c| c.status == Status::Warn && c.message.contains("0755")));
    }

    #[test]
    fn static_delegates_get_the_config_version_and_need_a_name() {
        let c = static_delegate(&json!({"name":"k8s-pod-network","plugins":[{"type":"calico"}]}), "0.3.1").unwrap();
        assert_eq!(c.cni_version(), "0.3.1");
        assert_eq!(describe_config(&c), "conflist of 1 plugin(s) (calico), cniVersion 0.3.1");
        assert!(static_delegate(&json!({"type":"bridge"}), "").unwrap_err().contains("name"));
        assert!(static_delegate(&json!({"name":"x","type":"../sh"}), "").is_err());
    }
}
