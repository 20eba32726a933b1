//! What the handlers see of a request: its route (the parsed API path), its RBAC verb,
//! and the query parameters they read.

use std::borrow::Cow;

use crate::state::Kind;

pub(crate) fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// `?watch=true` (or `1`).
pub(crate) fn is_watch(query: &str) -> bool {
    matches!(param(query, "watch"), Some("true" | "1"))
}

/// A parsed API path such as `/api/v1/namespaces/ns/pods/name/status`; namespace and
/// name borrow from the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Version,
    Resource { kind: Kind, namespace: Option<&'a str>, name: Option<&'a str>, status: bool },
}

/// The most segments a served path has: `apis/GROUP/v1/namespaces/NS/PLURAL/NAME/status`.
const MAX_SEGMENTS: usize = 8;

impl<'a> Route<'a> {
    /// `None` for paths the apiserver would not serve.
    pub fn parse(path: &'a str) -> Option<Route<'a>> {
        // On the stack: this runs for every request. A longer path is served by nothing.
        let mut segments = [""; MAX_SEGMENTS];
        let mut count = 0;
        for segment in path.strip_prefix('/')?.split('/') {
            *segments.get_mut(count)? = segment;
            count += 1;
        }
        let (kinds, rest): (&[Kind], &[&str]) = match &segments[..count] {
            ["version"] => return Some(Route::Version),
            ["api", "v1", rest @ ..] => (&[Kind::Pod, Kind::CoreEvent], rest),
            ["apis", "k8s.cni.cncf.io", "v1", rest @ ..] => (&[Kind::Nad], rest),
            ["apis", "events.k8s.io", "v1", rest @ ..] => (&[Kind::Event], rest),
            ["apis", "authorization.k8s.io", "v1", rest @ ..] => (&[Kind::SelfSubjectAccessReview], rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !ns.is_empty() => (Some(*ns), rest),
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
        valid.then_some(Route::Resource { kind, namespace, name, status })
    }

    /// The RBAC resource: plural plus `/status` for the subresource.
    pub fn resource(&self) -> Cow<'static, str> {
        match self {
            Route::Version => Cow::Borrowed(""),
            Route::Resource { kind, status: false, .. } => Cow::Borrowed(kind.info().plural),
            Route::Resource { kind, status: true, .. } => Cow::Owned(format!("{}/status", kind.info().plural)),
        }
    }

    fn named(&self) -> bool {
        matches!(self, Route::Resource { name: Some(_), .. })
    }
}

/// The RBAC verb for a request (`get` on a collection is `list`).
pub(crate) fn verb(method: &str, route: Option<&Route<'_>>) -> Cow<'static, str> {
    Cow::Borrowed(match method {
        "GET" | "HEAD" if route.is_some_and(|r| !r.named() && *r != Route::Version) => "list",
        "GET" | "HEAD" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        other => return Cow::Owned(other.to_ascii_lowercase()),
    })
}

/// The parts of a request the handlers look at.
pub(crate) struct ApiRequest<'a> {
    pub method: &'a str,
    pub route: Option<&'a Route<'a>>,
    pub verb: &'a str,
    pub authorization: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub accept: Option<&'a str>,
    /// The query string (`watch=true&resourceVersion=...`), `""` when none.
    pub query: &'a str,
    pub body: &'a [u8],
}

/// [`verb`], with `?watch=true` on a collection making it `watch`.
pub(crate) fn verb_with_query(method: &str, route: Option<&Route<'_>>, query: &str) -> Cow<'static, str> {
    let verb = verb(method, route);
    if verb == "list" && is_watch(query) { Cow::Borrowed("watch") } else { verb }
}
