//! The real kube-rs client talks to the stand-in over HTTPS with the kubeconfig it
//! writes (CA inline, bearer token).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use kube_standin::{Fault, FaultAction, StandIn};
use serde_json::json;

/// A client built from the stand-in's kubeconfig. kube-rs 5 retries 429, 503
/// and 504 by default (`Config::default_retry`); `retry: false` turns that off
/// so injected 503s reach the caller.
async fn client_for(api: &StandIn, token: &str, retry: bool) -> (Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    api.write_kubeconfig(&path, token).expect("kubeconfig");
    let kubeconfig = Kubeconfig::read_from(&path).expect("read kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), api.url());
    config.default_retry = retry;
    (Client::try_from(config).expect("client"), dir)
}

fn api_code(err: kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_rs_round_trip() {
    let api = StandIn::start();
    api.require_token(Some("t0ken"));
    api.add_pod(json!({"metadata": {"name": "web", "namespace": "blue", "annotations": {"a": "1"}}}));
    let (client, _dir) = client_for(&api, "t0ken", false).await;
    let pods: Api<Pod> = Api::namespaced(client, "blue");

    let pod = pods.get("web").await.expect("get");
    assert_eq!(pod.metadata.uid, api.pod("blue", "web").and_then(|p| p["metadata"]["uid"].as_str().map(String::from)));

    let patch = json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": "[]", "a": null}}});
    let meta =
        pods.patch_metadata("web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch_metadata");
    let annotations = meta.metadata.annotations.expect("annotations");
    assert_eq!(annotations.get("k8s.v1.cni.cncf.io/network-status").map(String::as_str), Some("[]"));
    assert!(!annotations.contains_key("a"));

    let labels = json!({"metadata": {"labels": {"net": "ok"}}});
    let patched = pods.patch("web", &PatchParams::default(), &Patch::Merge(&labels)).await.expect("patch");
    assert_eq!(patched.metadata.labels.and_then(|l| l.get("net").cloned()).as_deref(), Some("ok"));

    // UpdateStatus with the current object succeeds, with a stale one conflicts.
    let current = pods.get_status("web").await.expect("get_status");
    let updated = pods.replace_status("web", &PostParams::default(), &current).await.expect("replace_status");
    assert_ne!(updated.metadata.resource_version, current.metadata.resource_version);
    let stale = pods.replace_status("web", &PostParams::default(), &current).await;
    assert_eq!(api_code(stale.expect_err("stale")), 409);

    assert_eq!(api_code(pods.get("nope").await.expect_err("missing")), 404);

    api.add_fault(Fault::new(FaultAction::Status(503)).times(1));
    assert_eq!(api_code(pods.get("web").await.expect_err("fault")), 503);
    assert!(pods.get("web").await.is_ok());

    let requests = api.requests();
    assert!(requests.iter().all(|r| r.authorization.as_deref() == Some("Bearer t0ken")));
    let patch_request = requests.iter().find(|r| r.verb == "patch").expect("a patch");
    assert_eq!(patch_request.content_type.as_deref(), Some("application/merge-patch+json"));
}

#[tokio::test]
async fn kube_rs_sees_auth_and_rbac_failures() {
    let api = StandIn::start();
    api.require_token(Some("right"));
    api.add_pod(json!({"metadata": {"name": "web"}}));
    let (client, _dir) = client_for(&api, "wrong", false).await;
    let pods: Api<Pod> = Api::default_namespaced(client);
    assert_eq!(api_code(pods.get("web").await.expect_err("unauthorized")), 401);

    api.require_token(None);
    api.deny("get", "pods");
    match pods.get("web").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
        }
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_rs_retries_503_by_default() {
    let api = StandIn::start();
    api.add_pod(json!({"metadata": {"name": "web"}}));
    let (client, _dir) = client_for(&api, "any", true).await;
    let pods: Api<Pod> = Api::default_namespaced(client);
    api.add_fault(Fault::new(FaultAction::Status(503)).times(2));
    assert!(pods.get("web").await.is_ok());
    assert_eq!(api.requests().len(), 3, "two 503s, then the answer");
}

#[tokio::test]
async fn https_trusts_only_the_kubeconfig_ca_and_records_handshakes() {
    let api = StandIn::start();
    assert!(api.url().starts_with("https://127.0.0.1:"), "{}", api.url());
    let ca = api.ca_pem().expect("an HTTPS stand-in has a CA");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    api.add_pod(json!({"metadata": {"name": "web", "namespace": "blue"}}));
    // Writing the kubeconfig makes its token the required one.
    let (client, _dir) = client_for(&api, "kc-token", false).await;
    let pods: Api<Pod> = Api::namespaced(client, "blue");
    pods.get("web").await.expect("get over HTTPS");
    pods.get("web").await.expect("second get");
    let connections: Vec<_> = api.connections().into_iter().filter(|c| c.api_requests > 0).collect();
    assert_eq!(connections.len(), 1, "kube's pooled client reuses its connection: {connections:?}");
    assert!(connections[0].tls_handshake);
    assert_eq!(connections[0].alpn, None, "kube's own stack offers no ALPN (HTTP/1.1 only)");
    let requests = api.requests();
    assert!(requests.iter().all(|r| r.connection == connections[0].id), "{requests:?}");

    // Another token: 401 over the same TLS transport.
    let (other, _dir2) = {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            std::fs::read_to_string(_dir.path().join("kubeconfig")).unwrap().replace("kc-token", "nope"),
        )
        .unwrap();
        let kc = Kubeconfig::read_from(&path).expect("read");
        let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config");
        cfg.default_retry = false;
        (Client::try_from(cfg).expect("client"), dir)
    };
    let denied = Api::<Pod>::namespaced(other, "blue").get("web").await;
    assert_eq!(api_code(denied.expect_err("wrong token")), 401);

    // A client that does not trust the stand-in's CA fails the handshake.
    let stranger = StandIn::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    stranger.write_kubeconfig(&path, "kc-token").expect("kubeconfig");
    let wrong_ca = std::fs::read_to_string(&path).unwrap().replace(&stranger.url(), &api.url());
    std::fs::write(&path, wrong_ca).unwrap();
    let kc = Kubeconfig::read_from(&path).expect("read");
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config");
    cfg.default_retry = false;
    let untrusted = Api::<Pod>::namespaced(Client::try_from(cfg).expect("client"), "blue").get("web").await;
    assert!(untrusted.is_err(), "a certificate from another CA must be rejected");
    let last = api.connections().pop().expect("the untrusting client connected");
    assert!(!last.tls_handshake && last.api_requests == 0, "{last:?}");
}
