//! `multus doctor`: nADs in the cluster.

use super::*;

/// Every NAD the API lists: each must parse and have its plugins installed here (⚠: only
/// the pods selecting it are affected). Returns the ones that parse, for the master checks.
pub(crate) async fn check_nads(
    report: &mut Report,
    client: &Client,
    conf: &MultusConf,
    exec: &BinaryExec,
    wait: Duration,
) -> Vec<Network> {
    let check = "network-attachment-definitions";
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &nad_resource());
    let list = match deadline(wait, api.list(&ListParams::default())).await {
        Ok(list) => list,
        Err(e) => {
            report.push(Check::warn(
                check,
                format!("cannot list them in all namespaces: {e}; their master links are not checked"),
                "the plugin itself only needs get; run the doctor with a kubeconfig that may list NADs, \
                 or check each NAD's master with `ip link`",
            ));
            return Vec::new();
        }
    };
    let mut networks = Vec::new();
    let mut problems = Vec::new();
    let mut namespaces = BTreeSet::new();
    for obj in &list.items {
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        namespaces.insert(ns.clone());
        let label = format!("NAD {ns}/{name}");
        match nad::config_from_nad(obj, &conf.conf_dir, &conf.cni_version) {
            Ok(config) => networks.push(Network { label, config }),
            Err(e) => problems.push(Check::warn(
                &label,
                format!("does not load: {}; pods selecting it fail", e.msg),
                "`kubectl get net-attach-def -o yaml` it, then check it with `multus validate FILE`",
            )),
        }
    }
    report.extend(crate::tools::devices::check_pod_resources(conf, &list.items).await);
    let missing = check_binaries(exec, &networks, Status::Warn);
    let plugins = if missing.is_empty() { "their plugins are installed here" } else { "some plugins are missing here" };
    report
        .push(Check::ok(check, format!("{} listed in {} namespace(s); {plugins}", list.items.len(), namespaces.len())));
    report.extend(problems);
    report.extend(missing.into_iter().map(|mut c| {
        c.message.push_str("; pods selecting those networks on this node fail");
        c
    }));
    networks
}
