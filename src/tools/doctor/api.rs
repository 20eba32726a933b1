//! `multus doctor`: the API server: kubeconfig, reachability, RBAC.

use super::*;

/// Kubeconfig, then GET /version, with the client the plugin builds ([`Kube::connect`]).
/// `Some(client)` only when the API answered.
pub(crate) async fn check_api(report: &mut Report, conf: &MultusConf, wait: Duration) -> Option<Client> {
    if let Err(check) = check_kubeconfig_file(conf) {
        report.push(check);
        return None;
    }
    let kube = match Kube::connect(conf, wait).await {
        Ok(Some(kube)) => {
            let source =
                if conf.kubeconfig.is_empty() { "in-cluster service account" } else { conf.kubeconfig.as_str() };
            report.push(Check::ok("kubeconfig", format!("{source}: server {}", kube.server().trim_end_matches('/'))));
            kube
        }
        Ok(None) => {
            report.push(Check::warn(
                "kubeconfig",
                "not set: only the static delegates are used; pod annotations and NADs are ignored",
                "set \"kubeconfig\" in the config (the DaemonSet writes /etc/cni/net.d/multus.d/multus.kubeconfig)",
            ));
            return None;
        }
        Err(e) => {
            report.push(Check::fail(
                "kubeconfig",
                e.msg,
                "the current context must name a cluster with a server and a user with credentials",
            ));
            return None;
        }
    };
    let url = kube.server().trim_end_matches('/').to_string();
    let client = kube.client().clone();
    let started = Instant::now();
    match deadline(wait, client.apiserver_version()).await {
        Ok(info) => {
            report.push(Check::ok(
                "api server",
                format!(
                    "{url} answered GET /version in {} ms: Kubernetes {}",
                    started.elapsed().as_millis(),
                    info.git_version
                ),
            ));
            Some(client)
        }
        Err(e) => {
            report.push(Check::fail("api server", format!("GET {url}/version: {e}"), api_hint(&e, &url)));
            None
        }
    }
}

pub(crate) fn api_hint(error: &str, url: &str) -> String {
    if error.contains("401") {
        return "the API server rejected the credentials: the token may have expired; \
                restarting the multus pod rewrites the kubeconfig"
            .into();
    }
    format!(
        "check that this node reaches {url} (curl -k {url}/version) and that the kubeconfig names the right server; \
         meanwhile every ADD fails with code 11 (try again later)"
    )
}

/// What a person can fix before the plugin's own reading of the kubeconfig: the file
/// missing (the DaemonSet writes it) or unreadable (not root).
fn check_kubeconfig_file(conf: &MultusConf) -> Result<(), Check> {
    if conf.kubeconfig.is_empty() {
        return Ok(());
    }
    let path = Path::new(&conf.kubeconfig);
    if !path.exists() {
        return Err(Check::fail(
            "kubeconfig",
            format!("{} does not exist", path.display()),
            "the Multus DaemonSet writes it when its pod starts on this node: is the kube-multus-ds pod running here?",
        ));
    }
    if let Err(e) = std::fs::File::open(path) {
        return Err(Check::fail(
            "kubeconfig",
            format!("cannot read {}: {e}", path.display()),
            "run the doctor as root",
        ));
    }
    Ok(())
}

/// One permission the plugin needs (reference §1.15).
pub(crate) struct Permission {
    pub(crate) verb: &'static str,
    pub(crate) group: &'static str,
    pub(crate) resource: &'static str,
    pub(crate) subresource: &'static str,
    /// What the plugin cannot do without it.
    pub(crate) purpose: &'static str,
}

impl Permission {
    pub(crate) fn label(&self) -> String {
        let resource = if self.subresource.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        let group = if self.group.is_empty() { String::new() } else { format!(".{}", self.group) };
        format!("{} {resource}{group}", self.verb)
    }

    pub(crate) fn rule(&self) -> String {
        let resource = if self.subresource.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        format!(
            "add to the ClusterRole bound to multus' ServiceAccount: \
             {{apiGroups: [\"{}\"], resources: [\"{resource}\"], verbs: [\"{}\"]}}",
            self.group, self.verb
        )
    }

    pub(crate) fn is(&self, verb: &str, resource: &str, subresource: &str) -> bool {
        self.verb == verb && self.resource == resource && self.subresource == subresource
    }
}

pub(crate) const PERMISSIONS: [Permission; 5] = [
    Permission {
        verb: "get",
        group: "",
        resource: "pods",
        subresource: "",
        purpose: "read the pod's network annotations",
    },
    Permission {
        verb: "patch",
        group: "",
        resource: "pods",
        subresource: "",
        purpose: "write the network-status annotation",
    },
    Permission {
        verb: "update",
        group: "",
        resource: "pods",
        subresource: "status",
        purpose: "write the network-status annotation when patch is denied",
    },
    Permission {
        verb: "get",
        group: "k8s.cni.cncf.io",
        resource: "network-attachment-definitions",
        subresource: "",
        purpose: "read the networks pods select",
    },
    Permission {
        verb: "create",
        group: "",
        resource: "events",
        subresource: "",
        purpose: "report AddedInterface events",
    },
];

/// One SelfSubjectAccessReview per permission, all at once.
pub(crate) async fn check_rbac(client: &Client, wait: Duration) -> Vec<Check> {
    let answers = futures::future::join_all(PERMISSIONS.iter().map(|p| review(client, p, wait))).await;
    rbac_checks(&answers)
}

pub(crate) async fn review(client: &Client, p: &Permission, wait: Duration) -> Result<bool, String> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(p.verb.into()),
                group: Some(p.group.into()),
                resource: Some(p.resource.into()),
                subresource: (!p.subresource.is_empty()).then(|| p.subresource.into()),
                // No namespace: in every namespace, as the plugin works for pods of all of them.
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = deadline(wait, api.create(&PostParams::default(), &review)).await?;
    answer.status.map(|s| s.allowed).ok_or_else(|| "the review came back without a status".into())
}

/// ✗ for what the plugin cannot work without; ⚠ when only patch is denied, since the
/// plugin then falls back to update on pods/status (Go Multus' way).
pub(crate) fn rbac_checks(answers: &[Result<bool, String>]) -> Vec<Check> {
    let allowed = |verb, resource, sub| {
        PERMISSIONS.iter().zip(answers).find(|(p, _)| p.is(verb, resource, sub)).and_then(|(_, a)| a.clone().ok())
    };
    let patch = allowed("patch", "pods", "");
    let update_status = allowed("update", "pods", "status");
    PERMISSIONS
        .iter()
        .zip(answers)
        .map(|(p, answer)| {
            let check = format!("rbac: {}", p.label());
            match answer {
                Err(e) => Check::warn(
                    check,
                    format!("could not ask the API server: {e}"),
                    "ask by hand: kubectl auth can-i --as=system:serviceaccount:kube-system:multus VERB RESOURCE",
                ),
                Ok(true) => Check::ok(check, format!("allowed ({})", p.purpose)),
                Ok(false) if p.is("patch", "pods", "") && update_status == Some(true) => Check::warn(
                    check,
                    "denied: network-status is written with GET + update on pods/status instead \
                     (two requests, retried on conflict)",
                    p.rule(),
                ),
                Ok(false) if p.is("update", "pods", "status") && patch == Some(true) => {
                    Check::ok(check, "denied, and not needed: patch on pods is allowed")
                }
                Ok(false) if p.is("patch", "pods", "") || p.is("update", "pods", "status") => Check::fail(
                    check,
                    "denied, and so is the other way to write it: pods never get their network-status annotation",
                    p.rule(),
                ),
                Ok(false) => Check::fail(check, format!("denied: the plugin cannot {}", p.purpose), p.rule()),
            }
        })
        .collect()
}

/// Run one API call under `wait`; every error as one line.
pub(crate) async fn deadline<T>(
    wait: Duration,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(wait, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer within {} s", wait.as_secs_f64())),
    }
}

pub(crate) fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => chain(other),
    }
}

/// An error and its sources, each once: kube's top-level messages alone rarely say why.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

pub(crate) fn nad_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition");
    ApiResource::from_gvk_with_plural(&gvk, "network-attachment-definitions")
}
