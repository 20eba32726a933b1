//! The API path's transport, counted against the stand-in (HTTPS + bearer token, as a
//! real kube-apiserver): one TCP connection and one TLS handshake per ADD, HTTP/2
//! multiplexing the concurrent NAD GETs, and with Go Multus' stock ClusterRole (no
//! `patch` on pods) the 403 paid once per node, not on every ADD. Counts, never times.

mod support;

use serde_json::json;
use support::*;

/// The API connections of the last ADD: `(connections, requests)`, after checking that
/// every connection did its TLS handshake and settled on `h2`.
fn per_add(api: &Api) -> (Vec<kube_standin::ConnectionRecord>, Vec<kube_standin::RecordedRequest>) {
    let connections: Vec<_> = api.standin.connections();
    let requests = api.standin.requests();
    api.standin.clear_connections();
    api.standin.clear_requests();
    for c in &connections {
        assert!(c.tls_handshake, "every connection is TLS: {c:?}");
        assert_eq!(c.alpn.as_deref(), Some("h2"), "the plugin offers HTTP/2 and the server picks it: {c:?}");
    }
    let bearer = format!("Bearer {}", api.token);
    for r in &requests {
        assert_eq!(r.authorization.as_deref(), Some(bearer.as_str()), "{} {}", r.method, r.path);
    }
    (connections, requests)
}

#[test]
fn one_connection_and_one_tls_handshake_per_add_both_rbac_variants() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let api = Api::start(&dir);
    assert!(api.standin.url().starts_with("https://"), "the suite's stand-in speaks HTTPS");
    // Two NADs: their GETs run concurrently, yet share the one connection.
    api.add_nad("default", "tlsnet-a", &dir.fake("tlsnet-a", "1.0.0", json!({})));
    api.add_nad("default", "tlsnet-b", &dir.fake("tlsnet-b", "1.0.0", json!({})));
    api.add_pod("default", "pod-1", "uid-1", json!({"k8s.v1.cni.cncf.io/networks": "tlsnet-a,tlsnet-b"}));
    let conf = dir.multus_conf(
        "1.0.0",
        vec![dir.fake("tlsnet-cluster", "1.0.0", json!({}))],
        json!({"kubeconfig": api.kubeconfig, "apiTimeoutSeconds": 20}),
    );
    let add = || {
        Invocation::new("ADD", &format!("tls-{}", unique("c")), &ns.path).run_json(&conf).ok();
        per_add(&api)
    };

    // `patch pods` granted: GET pod, 2 NAD GETs, one PATCH (+ events).
    let (connections, requests) = add();
    assert_eq!(connections.len(), 1, "one connection, one TLS handshake per ADD: {connections:?}");
    assert!(requests.iter().all(|r| r.connection == connections[0].id));
    let verbs: Vec<_> = requests.iter().map(|r| format!("{} {}", r.verb, r.resource)).collect();
    assert_eq!(verbs.iter().filter(|v| *v == "get network-attachment-definitions").count(), 2, "{verbs:?}");
    assert_eq!(verbs.iter().filter(|v| *v == "patch pods").count(), 1, "{verbs:?}");
    let granted_patch = requests.len();

    // Go Multus' stock ClusterRole: the first ADD on the node learns the 403 ...
    api.standin.deny("patch", "pods");
    let (connections, requests) = add();
    assert_eq!(connections.len(), 1, "{connections:?}");
    let verbs: Vec<_> = requests.iter().map(|r| format!("{} {}", r.verb, r.resource)).collect();
    assert!(verbs.contains(&"patch pods".to_string()), "{verbs:?}");
    assert_eq!(verbs.iter().filter(|v| *v == "update pods/status").count(), 1, "{verbs:?}");
    assert_eq!(verbs.iter().filter(|v| *v == "get pods").count(), 1, "the PUT reuses the pod read first: {verbs:?}");

    // ... and later ones never send the request known to fail.
    for _ in 0..2 {
        let (connections, requests) = add();
        assert_eq!(connections.len(), 1, "{connections:?}");
        let verbs: Vec<_> = requests.iter().map(|r| format!("{} {}", r.verb, r.resource)).collect();
        assert!(!verbs.contains(&"patch pods".to_string()), "the 403 is paid once per node: {verbs:?}");
        assert_eq!(requests.len(), granted_patch, "as many requests as with `patch pods`: {verbs:?}");
    }
    let status =
        api.standin.pod("default", "pod-1").unwrap()["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default();
    assert!(status.contains("tlsnet-b"), "the status was written: {status}");
}

/// With the pod's annotations passed by the runtime there is no pod GET to open the
/// connection first: the NAD GETs start together, yet share one connection.
#[test]
fn concurrent_first_requests_share_one_connection() {
    require_root!();
    let ns = Netns::new();
    let dir = TestDir::new().with_fake();
    let api = Api::start(&dir);
    for n in ["tlsnet-c", "tlsnet-d", "tlsnet-e"] {
        api.add_nad("default", n, &dir.fake(n, "1.0.0", json!({})));
    }
    let annotations = json!({"k8s.v1.cni.cncf.io/networks": "tlsnet-c,tlsnet-d,tlsnet-e"});
    api.add_pod("default", "pod-1", "uid-1", annotations.clone());
    let conf = dir.multus_conf(
        "1.0.0",
        vec![dir.fake("tlsnet-cluster", "1.0.0", json!({}))],
        json!({"kubeconfig": api.kubeconfig, "apiTimeoutSeconds": 20,
               "capabilities": {"io.kubernetes.cri.pod-annotations": true},
               "runtimeConfig": {"io.kubernetes.cri.pod-annotations": annotations}}),
    );
    Invocation::new("ADD", &format!("tls-{}", unique("c")), &ns.path).run_json(&conf).ok();
    let (connections, requests) = per_add(&api);
    let verbs: Vec<_> = requests.iter().map(|r| format!("{} {}", r.verb, r.resource)).collect();
    assert!(!verbs.contains(&"get pods".to_string()), "annotations came from the runtime: {verbs:?}");
    assert_eq!(verbs.iter().filter(|v| *v == "get network-attachment-definitions").count(), 3, "{verbs:?}");
    assert_eq!(connections.len(), 1, "one connection, one TLS handshake: {connections:?}");
}
