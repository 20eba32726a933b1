//! The Kubernetes client: built lazily (only ADD needs it, DEL never does), every call
//! under a deadline, transient failures retried with backoff inside one overall budget,
//! then reported as CNI code 11 ("try again later").
//!
//! kube's own `default_retry` is off: it retries up to 15 times with backoff up to
//! 1000 s, far past any runtime's deadline. Credentials are read from the kubeconfig on
//! every invocation, so rotated service-account tokens keep working.

use super::status::{STATUS_WRITE_HINT, StatusWrite};
use crate::config::MultusConf;
use crate::error::{CniError, KubeError, Result};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Resource;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::config::KubeConfigOptions;
use kube::{Api, Client, Config};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The longest a single request may take, whatever the budget left.
const MAX_REQUEST: Duration = Duration::from_secs(5);

pub struct Kube {
    client: Client,
    /// Opens the connection ahead of the first request ([`Kube::preconnect`]).
    early: super::transport::Preconnect,
    /// The API server's URL, named in errors.
    server: String,
    /// The budget of one phase of API calls (`apiTimeoutSeconds`).
    budget: Duration,
    /// When the current phase's budget runs out; see [`Kube::start_phase`].
    deadline: Cell<Instant>,
    /// `<cniDir>/.status-write-method`: how this node's RBAC lets us write the status
    /// ([`StatusWrite`]); `None` for clients built by tools and tests.
    status_hint: Option<PathBuf>,
    /// The pod as [`Kube::get_pod`] last read it: the base of a `PUT pods/status`, so the
    /// status write costs one request, not a GET + PUT (its resourceVersion makes a
    /// stale base a 409, and the 409 a fresh GET).
    read_pod: RefCell<Option<Pod>>,
    /// The node-wide cap on requests in flight (`maxNodeApiRequests`).
    brake: Option<crate::brake::Brake>,
}

/// The pod we set up was deleted and recreated under the same name meanwhile.
fn replaced(namespace: &str, name: &str, uid: Option<&str>, why: &str) -> CniError {
    KubeError::PodReplaced {
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: uid.unwrap_or_default().to_string(),
        why: why.to_string(),
    }
    .into()
}

/// Refused connections, resets, timeouts and 429/5xx; not TLS, DNS, 401 or 403.
fn is_transient(e: &kube::Error) -> bool {
    super::errors::Cause::of(e).is_transient()
}

impl Kube {
    /// `None` when there is no kubeconfig and no in-cluster environment: pure static mode.
    pub async fn connect(conf: &MultusConf, budget: Duration) -> Result<Option<Kube>> {
        let deadline = Instant::now() + budget;
        let mut cfg = if !conf.kubeconfig.is_empty() {
            // Bounded: non-blocking regular-file read, exec plugin killed at the deadline.
            let kc = super::kubeconfig::read(&conf.kubeconfig, deadline).await?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| KubeError::KubeconfigContext { path: conf.kubeconfig.clone(), why: e.to_string() })?
        } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
            && std::env::var_os("KUBERNETES_SERVICE_PORT").is_some()
        {
            Config::incluster().map_err(|e| KubeError::InCluster(e.to_string()))?
        } else {
            return Ok(None);
        };
        let per_request = budget.min(MAX_REQUEST);
        cfg.connect_timeout = Some(per_request);
        cfg.read_timeout = Some(per_request);
        cfg.write_timeout = Some(per_request);
        cfg.default_retry = false;
        // A plain-http server (a local proxy, the test stand-in) needs no TLS at all, but
        // kube builds its TLS settings anyway and, without a CA, loads the whole system
        // trust store (~140 files, milliseconds and megabytes) that would never be used.
        if cfg.cluster_url.scheme_str() == Some("http") && cfg.root_cert.is_none() {
            cfg.root_cert = Some(Vec::new());
        }
        let server = cfg.cluster_url.to_string();
        let (client, early) = super::transport::client(&cfg, per_request, conf.limits().max_api_body_bytes)
            .map_err(|e| KubeError::ClientBuild(e.to_string()))?;
        let status_hint = Some(std::path::Path::new(&conf.cni_dir).join(STATUS_WRITE_HINT));
        let brake = crate::brake::Brake::new(std::path::Path::new(&conf.cni_dir), conf.max_node_api_requests);
        Ok(Some(Kube {
            client,
            early,
            server,
            budget,
            deadline: Cell::new(deadline),
            status_hint,
            read_pod: RefCell::new(None),
            brake,
        }))
    }

    /// Open the connection now, in the background, if no request has opened it yet:
    /// called before the delegates run, so that an ADD whose only request is the status
    /// write does not pay the TCP + TLS handshake after them.
    pub fn preconnect(&self) {
        self.early.start();
    }

    /// The kube client itself, for tools (`multus doctor`) that make calls of their own.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The API server's URL, as the kubeconfig names it.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.get().saturating_duration_since(Instant::now())
    }

    /// Give the next phase of API calls a whole budget of its own. The budget bounds
    /// time spent waiting for the API server, not the delegates run between two phases:
    /// an ADD whose plugins take longer than `apiTimeoutSeconds` must still be able to
    /// write the network status afterwards.
    pub fn start_phase(&self) {
        self.deadline.set(Instant::now() + self.budget);
    }

    /// Run `call` until it succeeds, fails for good, or the budget is spent.
    async fn retrying<T, F, Fut>(&self, what: &str, call: F) -> std::result::Result<T, (CniError, Option<u16>)>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, kube::Error>>,
    {
        let mut backoff = Duration::from_millis(50);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let remaining = self.remaining();
            if remaining.is_zero() {
                return Err((KubeError::BudgetSpent { what: what.to_string() }.into(), None));
            }
            let permit = match &self.brake {
                Some(brake) => Some(brake.acquire(self.deadline.get()).await.map_err(|e| (e, None))?),
                None => None,
            };
            crate::spool::API_REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let answer = tokio::time::timeout(remaining.min(MAX_REQUEST), call()).await;
            // Timed out: the request may still be at the server; its slot stays taken
            // (dropped unanswered). So does it when this whole call is given up.
            if let (Ok(_), Some(permit)) = (&answer, permit) {
                permit.answered();
            }
            if !matches!(answer, Ok(Ok(_))) {
                crate::spool::API_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            match answer {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    let status = if let kube::Error::Api(s) = &e { Some(s.code) } else { None };
                    if !is_transient(&e) || self.remaining() <= backoff {
                        let mut err = super::errors::api_error(what, &self.server, &e);
                        if attempts > 1 {
                            err.msg.push_str(&format!(" (after {attempts} attempts)"));
                        }
                        return Err((err, status));
                    }
                    tracing::warn!("{what}: transient API error, retrying in {backoff:?}: {e}");
                }
                Err(_) => {
                    if self.remaining() <= backoff {
                        return Err((KubeError::NoAnswer { what: what.to_string() }.into(), None));
                    }
                    tracing::warn!("{what}: API request timed out, retrying");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// The pod, or `None` when the API says it does not exist.
    pub async fn get_pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = self
            .retrying(&format!("error getting pod {namespace}/{name}"), || api.get_opt(name))
            .await
            .map_err(|(e, _)| e)?;
        self.read_pod.replace(pod.clone());
        Ok(pod)
    }

    /// A NetworkAttachmentDefinition, or `None` when it does not exist.
    pub async fn get_nad(&self, namespace: &str, name: &str) -> std::result::Result<Option<DynamicObject>, CniError> {
        let gvk = GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "network-attachment-definitions");
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
        self.retrying(&format!("cannot get network-attachment-definition {namespace}/{name}"), || api.get_opt(name))
            .await
            .map_err(|(e, _)| e)
    }

    /// Set pod annotations with one JSON merge-patch (no read-modify-write race,
    /// Multus #855). A pod that is gone is not an error. When the ClusterRole in place
    /// is Go Multus' stock one (no `patch` on pods: 403), fall back to what Go Multus
    /// does: an update of `pods/status`, retried on conflict — and remember that on
    /// this node ([`StatusWrite`]) so later ADDs skip the request known to fail.
    ///
    /// With `uid`, the write only applies to that incarnation of the pod: the patch
    /// carries `metadata.uid` as a precondition (the apiserver answers 409 when the pod
    /// was deleted and recreated under the same name), and the fallback compares the UID
    /// it reads. A replaced pod is an error, as in Go Multus' status write.
    pub async fn set_pod_annotations(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        annotations: &serde_json::Map<String, Value>,
    ) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let what = format!("error setting the network status of pod {namespace}/{name}");
        let learnt = self.status_hint.as_deref().map_or(StatusWrite::MergePatch, StatusWrite::learnt);
        if learnt == StatusWrite::UpdateStatus {
            match self.update_status_annotations(&api, &what, namespace, name, uid, annotations).await {
                // The ClusterRole changed: forget the hint, try the merge patch.
                Err((_, Some(403))) => self.remember(StatusWrite::MergePatch),
                done => return done.map_err(|(e, _)| e),
            }
        }
        let mut metadata = serde_json::json!({ "annotations": annotations });
        if let Some(uid) = uid {
            metadata["uid"] = uid.into();
        }
        let patch = serde_json::json!({ "metadata": metadata });
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        let pods = kube::core::Request::new(Pod::url_path(&(), Some(namespace)));
        match self.retrying(&what, || self.unread(pods.patch(name, &params, &patch))).await {
            Ok(_) => Ok(()),
            Err((_, Some(404))) => {
                tracing::info!("pod {namespace}/{name} is gone; network status not written");
                Ok(())
            }
            Err((e, Some(409))) if uid.is_some() => Err(replaced(namespace, name, uid, &e.msg)),
            Err((_, Some(403))) => {
                let updated = self.update_status_annotations(&api, &what, namespace, name, uid, annotations).await;
                if updated.is_ok() {
                    self.remember(StatusWrite::UpdateStatus);
                }
                updated.map_err(|(e, _)| e)
            }
            Err((e, _)) => Err(e),
        }
    }

    fn remember(&self, method: StatusWrite) {
        if let Some(path) = &self.status_hint {
            method.remember(path);
        }
    }

    async fn update_status_annotations(
        &self,
        api: &Api<Pod>,
        what: &str,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        annotations: &serde_json::Map<String, Value>,
    ) -> std::result::Result<(), (CniError, Option<u16>)> {
        // The pod read at the start of this ADD, if that is the one we write.
        let mut base = self
            .read_pod
            .take()
            .filter(|p| p.metadata.name.as_deref() == Some(name) && p.metadata.namespace.as_deref() == Some(namespace));
        for _ in 0..5 {
            let read = match base.take() {
                Some(pod) => Some(pod),
                None => self.retrying(what, || api.get_opt(name)).await?,
            };
            let Some(mut pod) = read else {
                return Ok(());
            };
            let found = pod.metadata.uid.as_deref().unwrap_or_default();
            if let Some(uid) = uid
                && uid != found
            {
                return Err((replaced(namespace, name, Some(uid), &format!("the API has UID {found:?}")), None));
            }
            let anns = pod.metadata.annotations.get_or_insert_with(Default::default);
            for (k, v) in annotations {
                anns.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
            let params = PostParams::default();
            match self.retrying(what, || api.replace_status(name, &params, &pod)).await {
                Ok(_) => return Ok(()),
                Err((_, Some(409))) => continue,
                Err((_, Some(404))) => return Ok(()),
                Err(failed) => return Err(failed),
            }
        }
        Err((KubeError::Conflict { what: what.to_string() }.into(), None))
    }

    /// Create a core/v1 Event (best effort: the caller bounds it and logs failures).
    pub async fn create_event(&self, namespace: &str, event: &Event) -> Result<()> {
        let body = serde_json::to_vec(event).map_err(crate::error::IoError::from)?;
        let events = kube::core::Request::new(Event::url_path(&(), Some(namespace)));
        let params = PostParams::default();
        self.retrying("error creating event", || self.unread(events.create(&params, body.clone())))
            .await
            .map_err(|(e, _)| e)
    }

    /// Send a write whose answer (the whole object written) nobody reads: its body is
    /// only checked to be JSON, not decoded into a typed object (a pod is kilobytes of
    /// fields, on the ADD's last round trip).
    async fn unread(
        &self,
        request: std::result::Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> std::result::Result<(), kube::Error> {
        let request = request.map_err(kube::Error::BuildRequest)?;
        self.client.request::<serde::de::IgnoredAny>(request).await.map(|_| ())
    }
}
