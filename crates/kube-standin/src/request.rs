//! What the handlers see of a request: its route (the parsed API path), its RBAC verb,
//! and the query parameters they read.

use crate::state::Kind;

pub(crate) fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// `?watch=true` (or `1`).
pub(crate) fn is_watch(query: &str) -> bool {
    matches!(param(query, "watch"), Some("true" | "1"))
}

/// A parsed API path such as `/api/v1/namespaces/ns/pods/name/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Version,
    Resource { kind: Kind, namespace: Option<String>, name: Option<String>, status: bool },
}

impl Route {
    /// `None` for paths the apiserver would not serve.
    pub fn parse(path: &str) -> Option<Route> {
        let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        let (kinds, rest): (&[Kind], &[&str]) = match segments.as_slice() {
            ["version"] => return Some(Route::Version),
            ["api", "v1", rest @ ..] => (&[Kind::Pod, Kind::CoreEvent], rest),
            ["apis", "k8s.cni.cncf.io", "v1", rest @ ..] => (&[Kind::Nad], rest),
            ["apis", "events.k8s.io", "v1", rest @ ..] => (&[Kind::Event], rest),
            ["apis", "authorization.k8s.io", "v1", rest @ ..] => (&[Kind::SelfSubjectAccessReview], rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !ns.is_empty() => (Some((*ns).to_owned()), rest),
            _ => (None, rest),
        };
        let (plural, name, subresource) = match rest {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some(*name), None),
            [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
            _ => return None,
        };
        let kind = *kinds.iter().find(|k| k.info().plural == plural)?;
        let status = match subresource {
            None => false,
            Some("status") if kind == Kind::Pod => true,
            Some(_) => return None,
        };
        let cluster_scoped = kind == Kind::SelfSubjectAccessReview;
        let valid = match (cluster_scoped, &namespace, name) {
            (true, ns, name) => ns.is_none() && name.is_none(),
            // Namespaced objects are only addressed inside a namespace.
            (false, None, Some(_)) => false,
            (false, _, Some(name)) => !name.is_empty(),
            (false, _, None) => true,
        };
        let name = name.map(str::to_owned);
        valid.then_some(Route::Resource { kind, namespace, name, status })
    }

    /// The RBAC resource: plural plus `/status` for the subresource.
    pub fn resource(&self) -> String {
        match self {
            Route::Version => String::new(),
            Route::Resource { kind, status: false, .. } => kind.info().plural.to_owned(),
            Route::Resource { kind, status: true, .. } => format!("{}/status", kind.info().plural),
        }
    }

    fn named(&self) -> bool {
        matches!(self, Route::Resource { name: Some(_), .. })
    }
}

/// The RBAC verb for a request (`get` on a collection is `list`).
pub(crate) fn verb(method: &str, route: Option<&Route>) -> String {
    match method {
        "GET" | "HEAD" if route.is_some_and(|r| !r.named() && *r != Route::Version) => "list",
        "GET" | "HEAD" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        other => return other.to_ascii_lowercase(),
    }
    .to_owned()
}

/// The parts of a request the handlers look at.
pub(crate) struct ApiRequest<'a> {
    pub method: &'a str,
    pub route: Option<&'a Route>,
    pub verb: &'a str,
    pub authorization: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub accept: Option<&'a str>,
    /// The query string (`watch=true&resourceVersion=...`), `""` when none.
    pub query: &'a str,
    pub body: &'a [u8],
}

/// [`verb`], with `?watch=true` on a collection making it `watch`.
pub(crate) fn verb_with_query(method: &str, route: Option<&Route>, query: &str) -> String {
    let verb = verb(method, route);
    if verb == "list" && is_watch(query) { "watch".to_owned() } else { verb }
}
