//! `multus doctor`: the node's own networks: delegates, clusterNetwork, defaultNetworks.

use super::*;

pub(crate) async fn check_networks(
    report: &mut Report,
    conf: &MultusConf,
    client: Option<&Client>,
    wait: Duration,
) -> Vec<Network> {
    let mut networks = Vec::new();
    if conf.cluster_network.is_empty() {
        if conf.delegates.is_empty() {
            report.push(Check::fail(
                "networks",
                "neither \"delegates\" nor \"clusterNetwork\" is set: every ADD fails",
                "set \"clusterNetwork\" (a file, a directory or a network name) \
                 or list the primary network in \"delegates\"",
            ));
        }
        for (i, value) in conf.delegates.iter().enumerate() {
            match static_delegate(value, &conf.cni_version) {
                Ok(config) => {
                    let role = if i == 0 { "the pod's eth0" } else { "an extra interface" };
                    let label = format!("delegate {}", config.name());
                    report.push(Check::ok(&label, format!("{}; {role}", describe_config(&config))));
                    networks.push(Network { label, config });
                }
                Err(e) => report.push(Check::fail(
                    format!("delegate {i}"),
                    e,
                    "every ADD fails while a delegate does not parse; fix it in the config",
                )),
            }
        }
        return networks;
    }
    let named = std::iter::once(("clusterNetwork", &conf.cluster_network))
        .chain(conf.default_networks.iter().map(|n| ("defaultNetworks", n)));
    for (role, value) in named {
        let label = format!("{role} {value}");
        match resolve_named(conf, client, value, wait).await {
            Ok((config, source)) => {
                report.push(Check::ok(&label, format!("{source}: {}", describe_config(&config))));
                networks.push(Network { label, config });
            }
            Err(e) => report.push(Check::fail(
                &label,
                e,
                format!(
                    "give a file or directory path, a config named {value:?} in confDir {}, or a NAD {}/{value}",
                    conf.conf_dir, conf.multus_namespace
                ),
            )),
        }
    }
    networks
}

/// A static delegate as ADD loads it (`Node::static_delegates`).
pub(crate) fn static_delegate(value: &Value, cni_version: &str) -> Result<NetworkConfig, String> {
    let config = NetworkConfig::from_value(value).map_err(|e| e.msg)?.with_default_version(cni_version);
    if config.name().is_empty() {
        return Err("missing network name".into());
    }
    Ok(config)
}

/// `clusterNetwork`/`defaultNetworks`: a path, else (as ADD) a NAD in multusNamespace
/// when the API is there, else a config of that name in confDir.
pub(crate) async fn resolve_named(
    conf: &MultusConf,
    client: Option<&Client>,
    value: &str,
    wait: Duration,
) -> Result<(NetworkConfig, String), String> {
    if value.contains('/') {
        return nad::load_path(Path::new(value)).map(|c| (c, format!("file {value}"))).map_err(|e| e.msg);
    }
    let from_conf_dir = || {
        nad::find_in_conf_dir(Path::new(&conf.conf_dir), value)
            .map(|c| (c, format!("config in {}", conf.conf_dir)))
            .map_err(|e| e.msg)
    };
    let Some(client) = client else {
        return from_conf_dir();
    };
    let ns = &conf.multus_namespace;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &nad_resource());
    match deadline(wait, api.get_opt(value)).await {
        Ok(Some(obj)) => nad::config_from_nad(&obj, &conf.conf_dir, &conf.cni_version)
            .map(|c| (c, format!("NAD {ns}/{value}")))
            .map_err(|e| e.msg),
        Ok(None) => from_conf_dir(),
        Err(e) => Err(format!("cannot get NAD {ns}/{value}: {e}")),
    }
}

pub(crate) fn describe_config(config: &NetworkConfig) -> String {
    let version = match config.cni_version() {
        "" => "no cniVersion".to_string(),
        v => format!("cniVersion {v}"),
    };
    let types = config.plugin_types();
    if config.is_list() {
        format!("conflist of {} plugin(s) ({}), {version}", types.len(), types.join(", "))
    } else {
        format!("plugin {}, {version}", types.join(", "))
    }
}
