//! The manifests: `deployments/multus-daemonset.yml` and `examples/k8s/*.yaml` parse, and
//! hold what the installer and the plugin expect of them.

mod support;

use clap::Parser;
use multus::k8s::selection::parse_networks;
use multus::tools::install::{self, Options};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const DAEMONSET: &str = "deployments/multus-daemonset.yml";
const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";

fn repo(path: &str) -> PathBuf {
    support::repo_path(path)
}

/// Every non-empty YAML document of a file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn daemonset_documents() -> Vec<Value> {
    documents(&repo(DAEMONSET))
}

fn one_of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in {DAEMONSET}");
    found[0]
}

#[test]
fn every_document_is_a_kubernetes_object() {
    let docs = daemonset_documents();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "DaemonSet"],
        "the CRD first, the DaemonSet last: kubectl applies in order"
    );
    for doc in &docs {
        assert!(doc["apiVersion"].is_string() && doc["metadata"]["name"].is_string(), "{doc}");
    }
}

/// SEEDS.md §B: `kubectl get net-attach-def` must work.
#[test]
fn crd_is_the_seeds() {
    let docs = daemonset_documents();
    let crd = one_of_kind(&docs, "CustomResourceDefinition");
    assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(crd["metadata"]["name"], "network-attachment-definitions.k8s.cni.cncf.io");
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "k8s.cni.cncf.io");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(
        spec["names"],
        json!({
            "plural": "network-attachment-definitions",
            "singular": "network-attachment-definition",
            "kind": "NetworkAttachmentDefinition",
            "listKind": "NetworkAttachmentDefinitionList",
            "shortNames": ["net-attach-def", "nad"],
        })
    );
    let versions = spec["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    let v1 = &versions[0];
    assert_eq!((&v1["name"], &v1["served"], &v1["storage"]), (&json!("v1"), &json!(true), &json!(true)));
    let schema = &v1["schema"]["openAPIV3Schema"];
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["properties"]["spec"]["properties"]["config"]["type"], "string");
}

/// Least privilege: exactly the API calls the plugin makes.
#[test]
fn cluster_role_grants_exactly_what_the_plugin_uses() {
    let docs = daemonset_documents();
    let role = one_of_kind(&docs, "ClusterRole");
    assert_eq!(role["metadata"]["name"], "multus");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(), "{rule}");
        let list = |key: &str| -> Vec<String> {
            rule[key].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
        };
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    assert!(![&group, &resource, &verb].iter().any(|s| s.contains('*')), "no wildcards: {rule}");
                    granted.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    let expected: BTreeSet<(String, String, String)> = [
        ("", "pods", "get"),
        ("", "pods", "patch"),
        ("", "pods/status", "update"),
        ("k8s.cni.cncf.io", "network-attachment-definitions", "get"),
        // the node agent's NAD mirror: one list + watch per node
        ("k8s.cni.cncf.io", "network-attachment-definitions", "list"),
        ("k8s.cni.cncf.io", "network-attachment-definitions", "watch"),
        ("", "events", "create"),
    ]
    .iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .collect();
    assert_eq!(granted, expected);

    let binding = one_of_kind(&docs, "ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "multus"})
    );
    assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": "multus", "namespace": "kube-system"}]));
    let sa = one_of_kind(&docs, "ServiceAccount");
    assert_eq!(sa["metadata"], json!({"name": "multus", "namespace": "kube-system"}));
}

/// SEEDS.md §G: `kube-multus-ds` in kube-system, `app=multus`, one pod per node.
#[test]
fn daemonset_runs_install_on_every_node() {
    let docs = daemonset_documents();
    let ds = one_of_kind(&docs, "DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(ds["metadata"]["name"], "kube-multus-ds");
    assert_eq!(ds["metadata"]["namespace"], "kube-system");
    let labels = json!({"tier": "node", "app": "multus", "name": "multus"});
    assert_eq!(ds["metadata"]["labels"], labels);
    assert_eq!(ds["spec"]["template"]["metadata"]["labels"], labels);
    for (key, value) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[key], value, "the selector matches the template");
    }
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["serviceAccountName"], "multus");
    let tolerations = pod["tolerations"].as_array().unwrap();
    assert!(tolerations.iter().all(|t| t["operator"] == "Exists" && t.get("key").is_none()), "{tolerations:?}");
    let effects: BTreeSet<&str> = tolerations.iter().map(|t| t["effect"].as_str().unwrap()).collect();
    assert_eq!(effects, BTreeSet::from(["NoSchedule", "NoExecute"]));

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    // What `make image` names its archive (scripts/image.sh: localhost/multus-rs:<version>),
    // by tag so that an imported image is used without a pull.
    assert_eq!(c["image"], format!("localhost/multus-rs:{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    let kustomization = std::fs::read_to_string(repo("deployments/kustomization.yaml")).unwrap();
    assert!(kustomization.contains("- multus-daemonset.yml"), "{kustomization}");
    assert!(kustomization.contains("name: localhost/multus-rs"), "{kustomization}");
    assert_eq!(c["command"], json!(["/usr/bin/multus", "install"]));
    assert_eq!(c["securityContext"]["privileged"], true);
    assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
    for kind in ["requests", "limits"] {
        let r = &c["resources"][kind];
        assert!(r["cpu"].is_string() && r["memory"].is_string(), "{kind}: {r}");
    }
}

#[derive(Parser)]
struct InstallCli {
    #[command(flatten)]
    opts: Options,
}

/// The container's flags parse as `multus install` flags, and its mounts put the host's
/// directories where those flags (and their defaults) point.
#[test]
fn daemonset_mounts_match_the_install_flags() {
    let docs = daemonset_documents();
    let pod = &one_of_kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap());
    let opts = InstallCli::try_parse_from(std::iter::once("install").chain(args)).unwrap().opts;
    assert_eq!(opts.multus_conf_file, "auto");

    // mountPath → hostPath of every hostPath volume mounted into the container.
    let host_path = |mount_path: &Path| -> String {
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {}", mount_path.display()));
        let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
        volume["hostPath"]["path"].as_str().unwrap().to_string()
    };
    assert_eq!(opts.cni_conf_dir, Path::new(install::DEFAULT_CNI_CONF_DIR));
    assert_eq!(opts.cni_bin_dir, Path::new(install::DEFAULT_CNI_BIN_DIR));
    assert_eq!(host_path(&opts.cni_conf_dir), "/etc/cni/net.d");
    assert_eq!(host_path(&opts.cni_bin_dir), "/opt/cni/bin");
    // The kubeconfig written under --cni-conf-dir is where the config tells the plugin to look.
    assert_eq!(
        opts.multus_kubeconfig_file_host,
        format!("{}/multus.d/multus.kubeconfig", host_path(&opts.cni_conf_dir))
    );
    assert_eq!(opts.multus_kubeconfig_file_host, install::DEFAULT_KUBECONFIG_HOST);
    // The agent writes the mirror and drains the spool where the plugin, on the host,
    // looks: the hostPath is mounted at the same path.
    for dir in [opts.nad_mirror_dir.as_deref().unwrap(), opts.metrics_spool_dir.as_deref().unwrap()] {
        let host = host_path(Path::new("/var/run/multus"));
        assert!(dir.starts_with(&host), "{} is under the hostPath {host} at the same path", dir.display());
    }
}

/// Every example file, by name.
fn examples() -> Vec<(String, Vec<Value>)> {
    let dir = repo("examples/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), documents(&p))).collect()
}

fn example(name: &str) -> Value {
    let (_, docs) = examples().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(docs.len(), 1, "{name}: one object a file");
    docs.into_iter().next().unwrap()
}

#[test]
fn every_seed_nad_and_pod_has_an_example() {
    let names: BTreeSet<String> = examples().into_iter().map(|(n, _)| n).collect();
    let expected = [
        "privatezone-macvlan-conf.yaml",
        "net-pod.yaml",
        "macvlan-conf.yaml",
        "pod1.yaml",
        "pod2.yaml",
        "ipvlan-conf-1.yaml",
        "ipvlan-conf-2.yaml",
        "sampleapp-1.yaml",
        "sampleapp-2.yaml",
        "sampleapp-dual-1.yaml",
        "sampleapp-dual-2.yaml",
        "sriov-net.yaml",
        "sriov-pod.yaml",
    ];
    assert_eq!(names, expected.iter().map(|s| s.to_string()).collect());
    for (name, docs) in examples() {
        let stem = name.trim_end_matches(".yaml");
        assert_eq!(docs.len(), 1, "{name}");
        assert_eq!(docs[0]["metadata"]["name"], stem, "{name} is named after its object");
    }
}

/// A plain `type` per plugin: what the runtime will exec.
fn plugin_types(config: &Value) -> Vec<String> {
    let plugins = match config.get("plugins") {
        Some(list) => list.as_array().unwrap().clone(),
        None => vec![config.clone()],
    };
    plugins.iter().map(|p| p["type"].as_str().unwrap().to_string()).collect()
}

#[test]
fn nads_hold_valid_cni_configs() {
    let mut seen = 0;
    for (name, docs) in examples() {
        for doc in docs.iter().filter(|d| d["kind"] == "NetworkAttachmentDefinition") {
            seen += 1;
            assert_eq!(doc["apiVersion"], "k8s.cni.cncf.io/v1", "{name}");
            let text = doc["spec"]["config"].as_str().unwrap_or_else(|| panic!("{name}: spec.config is a string"));
            let config: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"));
            assert!(config["cniVersion"].is_string(), "{name}");
            let types = plugin_types(&config);
            assert!(types.iter().all(|t| !t.is_empty() && !t.contains('/')), "{name}: {types:?}");
        }
    }
    assert_eq!(seen, 5);
}

/// The SR-IOV example: the NAD names a valid resource, and the pod requests it once per
/// attachment of that NAD (else the plugin fails the ADD).
#[test]
fn sriov_example_requests_one_device_per_attachment() {
    let nad = example("sriov-net.yaml");
    let checks = multus::tools::devices::check_resource_name("sriov-net", &nad);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].status, multus::tools::report::Status::Ok, "{checks:?}");
    let resource = nad["metadata"]["annotations"][multus::devices::RESOURCE_NAME_ANNOTATION].as_str().unwrap();
    let pod = example("sriov-pod.yaml");
    let value = pod["metadata"]["annotations"][NETWORKS_ANNOTATION].as_str().unwrap();
    let attachments = parse_networks(value, "default").unwrap().iter().filter(|s| s.name == "sriov-net").count();
    assert_eq!(attachments, 2);
    let resources = &pod["spec"]["containers"][0]["resources"];
    for kind in ["requests", "limits"] {
        assert_eq!(resources[kind][resource], attachments.to_string(), "{kind}");
    }
}

/// SEEDS.md §C, the values that matter.
#[test]
fn nads_are_the_seeds() {
    let config =
        |name: &str| -> Value { serde_json::from_str(example(name)["spec"]["config"].as_str().unwrap()).unwrap() };

    let c1 = config("privatezone-macvlan-conf.yaml");
    assert_eq!(
        (&c1["cniVersion"], &c1["type"], &c1["master"], &c1["mode"]),
        (&json!("0.3.0"), &json!("macvlan"), &json!("enp0s8"), &json!("bridge"))
    );
    assert_eq!(
        c1["ipam"],
        json!({"type": "host-local", "subnet": "10.12.34.0/24", "rangeStart": "10.12.34.200",
               "rangeEnd": "10.12.34.220", "routes": [{"dst": "0.0.0.0/0"}], "gateway": "10.12.34.254"})
    );

    let c2 = config("macvlan-conf.yaml");
    assert_eq!(c2["cniVersion"], "0.3.1");
    assert_eq!(plugin_types(&c2), ["macvlan", "tuning"]);
    assert_eq!(c2["plugins"][0]["capabilities"], json!({"ips": true}));
    assert_eq!(c2["plugins"][0]["master"], "eth1");
    assert_eq!(c2["plugins"][0]["ipam"], json!({"type": "static", "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.1.1"}]}));
    assert_eq!(c2["plugins"][1]["capabilities"], json!({"mac": true}));

    for (file, master, net) in [("ipvlan-conf-1.yaml", "eth1", "4"), ("ipvlan-conf-2.yaml", "eth2", "6")] {
        let c3 = config(file);
        assert_eq!(
            (&c3["cniVersion"], &c3["type"], &c3["master"], &c3["mode"]),
            (&json!("0.3.0"), &json!("ipvlan"), &json!(master), &json!("l3"))
        );
        assert_eq!(
            c3["ipam"],
            json!({"type": "host-local", "subnet": format!("10.0.{net}.0/24"), "rangeStart": format!("10.0.{net}.70"),
                   "rangeEnd": format!("10.0.{net}.80"), "gateway": format!("10.0.{net}.1")})
        );
    }
}

/// SEEDS.md §D: each pod's annotation, through the plugin's own parser.
#[test]
fn pod_annotations_select_the_seed_networks() {
    let selected = |file: &str| -> Vec<(String, String, Vec<String>)> {
        let pod = example(file);
        assert_eq!(pod["kind"], "Pod", "{file}");
        assert!(pod["spec"]["containers"][0]["image"].is_string(), "{file}");
        let value = pod["metadata"]["annotations"][NETWORKS_ANNOTATION].as_str().unwrap();
        let selections = parse_networks(value, "default").unwrap_or_else(|e| panic!("{file}: {e}"));
        selections.into_iter().map(|s| (s.namespace, s.name, s.ips)).collect()
    };
    let plain = |names: &[&str]| -> Vec<(String, String, Vec<String>)> {
        names.iter().map(|n| ("default".to_string(), n.to_string(), vec![])).collect()
    };
    assert_eq!(selected("net-pod.yaml"), plain(&["privatezone-macvlan-conf"]));
    assert_eq!(selected("sampleapp-1.yaml"), plain(&["ipvlan-conf-1"]));
    assert_eq!(selected("sampleapp-2.yaml"), plain(&["ipvlan-conf-2"]));
    assert_eq!(selected("sampleapp-dual-1.yaml"), plain(&["ipvlan-conf-1", "ipvlan-conf-2"]));
    assert_eq!(selected("sampleapp-dual-2.yaml"), plain(&["ipvlan-conf-1", "ipvlan-conf-2"]));
    for (file, ip, node) in [
        ("pod1.yaml", "10.1.1.101/24", "multus-cluster-worker"),
        ("pod2.yaml", "10.1.1.102/24", "multus-cluster-worker2"),
    ] {
        assert_eq!(selected(file), [("default".to_string(), "macvlan-conf".to_string(), vec![ip.to_string()])]);
        assert_eq!(example(file)["spec"]["nodeSelector"]["kubernetes.io/hostname"], node);
    }
}
