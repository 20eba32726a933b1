//! The Kubernetes REST surface: routing, RBAC/token checks and handlers.

use std::sync::Arc;

use serde_json::{Map, Value, json};

pub(crate) use crate::request::{ApiRequest, Route, verb_with_query};
use crate::state::{Kind, State, generated_suffix, meta_str};
use crate::status::{self, FieldError, Reply};

/// Authenticates, authorizes and serves one API request.
pub(crate) fn serve(state: &mut State, req: &ApiRequest<'_>) -> Reply {
    let reply = dispatch(state, req);
    match req.accept {
        Some(accept) if accept.contains("as=PartialObjectMetadata") && reply.code < 300 => {
            Reply { code: reply.code, body: Arc::new(partial_metadata(Arc::unwrap_or_clone(reply.body))) }
        }
        _ => reply,
    }
}

/// The `meta.k8s.io/v1` metadata-only view a client asks for with
/// `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`.
fn partial_metadata(mut body: Value) -> Value {
    let metadata = body.get_mut("metadata").map(Value::take).unwrap_or_else(|| json!({}));
    match body.get_mut("items").map(Value::take) {
        Some(Value::Array(items)) => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "items": items.into_iter().map(partial_metadata).collect::<Vec<_>>(),
        }),
        _ => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})
        }
    }
}

fn dispatch(state: &mut State, req: &ApiRequest<'_>) -> Reply {
    // Compared in place: `authorization == "Bearer " + token` without building the string.
    if let Some(token) = &state.token
        && req.authorization.and_then(|a| a.strip_prefix("Bearer ")) != Some(token.as_str())
    {
        return status::unauthorized();
    }
    let Some(route) = req.route else {
        return status::no_such_path();
    };
    let Route::Resource { kind, namespace, name, status } = route else {
        return match req.method {
            "GET" => Reply::ok(version()),
            _ => status::method_not_allowed(),
        };
    };
    let (kind, ns, name, status) = (*kind, *namespace, *name, *status);
    let resource = route.resource();
    if state.is_denied(req.verb, &resource) {
        let name = name.unwrap_or("");
        return status::forbidden(&kind.info(), req.verb, &resource, ns, name);
    }
    let ns_or_default = ns.unwrap_or("");
    match (req.verb, kind, name) {
        ("get", _, Some(name)) if kind != Kind::SelfSubjectAccessReview => get(state, kind, ns_or_default, name),
        ("list", Kind::Pod | Kind::Nad | Kind::CoreEvent | Kind::Event, None) => list(state, kind, ns),
        ("watch", Kind::Nad, None) => crate::watch::serve(state, req),
        ("patch", Kind::Pod | Kind::CoreEvent | Kind::Event, Some(name)) => {
            patch(state, kind, ns_or_default, name, status, req)
        }
        ("update", Kind::Pod, Some(name)) => update(state, ns_or_default, name, status, req.body),
        ("create", Kind::CoreEvent | Kind::Event, None) => create_event(state, kind, ns_or_default, req.body),
        ("create", Kind::SelfSubjectAccessReview, None) => access_review(state, req.body),
        _ => status::method_not_allowed(),
    }
}

/// What an injected `FaultAction::Status(code)` answers for this request.
pub(crate) fn fault_reply(code: u16, req: &ApiRequest<'_>) -> Reply {
    let target = match req.route {
        Some(Route::Resource { kind, namespace, name, .. }) => Some((kind.info(), *namespace, name.unwrap_or(""))),
        _ => None,
    };
    match (code, &target, req.route) {
        (403, Some((info, ns, name)), Some(route)) => status::forbidden(info, req.verb, &route.resource(), *ns, name),
        _ => status::injected(code, target.as_ref().map(|(info, _, name)| (info, *name))),
    }
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-standin",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

fn get(state: &State, kind: Kind, ns: &str, name: &str) -> Reply {
    match state.get(kind, ns, name) {
        Some(obj) => Reply::ok(Arc::clone(obj)),
        None => status::not_found(&kind.info(), name),
    }
}

fn list(state: &State, kind: Kind, ns: Option<&str>) -> Reply {
    let info = kind.info();
    Reply::ok(json!({
        "apiVersion": info.api_version,
        "kind": format!("{}List", info.kind),
        "metadata": {"resourceVersion": state.current_resource_version()},
        "items": state.list(kind, ns),
    }))
}

/// Parses a JSON body, or answers 400 like the apiserver's decoder does.
fn parse_body(body: &[u8]) -> Result<Value, Reply> {
    if body.is_empty() {
        return Err(status::bad_request("the body of the request was empty"));
    }
    serde_json::from_slice(body).map_err(|err| status::bad_request(format!("error decoding request body: {err}")))
}

/// PATCH with a JSON merge patch (strategic merge patch is treated the same,
/// which is exact for metadata, the only thing multus patches).
fn patch(state: &mut State, kind: Kind, ns: &str, name: &str, status_subresource: bool, req: &ApiRequest<'_>) -> Reply {
    let media_type = req.content_type.and_then(|ct| ct.split(';').next()).map(str::trim);
    if !matches!(media_type, Some("application/merge-patch+json" | "application/strategic-merge-patch+json")) {
        let message = "the body of the request was in an unknown format - accepted media types \
                       include: application/merge-patch+json, \
                       application/strategic-merge-patch+json";
        return status::failure(415, message.into(), None);
    }
    let patch = match parse_body(req.body) {
        Ok(patch) if patch.is_object() => patch,
        Ok(_) => return status::bad_request("the patch is not a JSON object"),
        Err(reply) => return reply,
    };
    let info = kind.info();
    let Some(current) = state.get(kind, ns, name) else {
        return status::not_found(&info, name);
    };
    // A resourceVersion in the patch is a precondition, as in the apiserver.
    if let Some(wanted) = patch.pointer("/metadata/resourceVersion").and_then(Value::as_str)
        && Some(wanted) != meta_str(current, "resourceVersion")
    {
        return status::conflict_modified(&info, name);
    }
    let mut patched = Value::clone(current);
    merge_patch(&mut patched, &patch);
    if let Err(reply) = check_identity(current, &patched, &info, name) {
        return reply;
    }
    if kind == Kind::Pod {
        // The pods strategy ignores status on the main resource and spec on
        // pods/status.
        let kept = if status_subresource { "spec" } else { "status" };
        match current.get(kept) {
            Some(value) => patched[kept] = value.clone(),
            None => drop(patched.as_object_mut().and_then(|o| o.remove(kept))),
        }
    }
    store_update(state, kind, ns, name, patched)
}

/// PUT on a Pod or its status (Update / UpdateStatus).
fn update(state: &mut State, ns: &str, name: &str, status_subresource: bool, body: &[u8]) -> Reply {
    let info = Kind::Pod.info();
    let incoming = match parse_body(body) {
        Ok(incoming) => incoming,
        Err(reply) => return reply,
    };
    let Some(current) = state.get(Kind::Pod, ns, name) else {
        return status::not_found(&info, name);
    };
    if let Some(wanted) = meta_str(&incoming, "resourceVersion").filter(|rv| !rv.is_empty())
        && Some(wanted) != meta_str(current, "resourceVersion")
    {
        return status::conflict_modified(&info, name);
    }
    let mut updated = Value::clone(current);
    if let Err(reply) = check_identity(current, &incoming, &info, name) {
        return reply;
    }
    // Labels and annotations are replaced as a whole, absent means removed;
    // spec is not updated (most of it is immutable), status only on /status.
    for field in ["labels", "annotations"] {
        let value = incoming.get("metadata").and_then(|m| m.get(field)).cloned();
        if let Some(meta) = updated.get_mut("metadata").and_then(Value::as_object_mut) {
            match value {
                Some(value) if !value.is_null() => meta.insert(field.into(), value),
                _ => meta.remove(field),
            };
        }
    }
    if status_subresource {
        updated["status"] = incoming.get("status").cloned().unwrap_or_else(|| json!({}));
    }
    store_update(state, Kind::Pod, ns, name, updated)
}

/// Rejects changes to identity fields, as the apiserver does.
fn check_identity(current: &Value, new: &Value, info: &crate::state::KindInfo, name: &str) -> Result<(), Reply> {
    let (old_ns, new_ns) = (meta_str(current, "namespace"), meta_str(new, "namespace"));
    if new_ns.is_some_and(|ns| Some(ns) != old_ns) {
        return Err(status::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if let (Some(old), Some(new)) = (meta_str(current, "uid"), meta_str(new, "uid"))
        && old != new
    {
        let message = format!("Precondition failed: UID in precondition: {new}, UID in object meta: {old}");
        return Err(status::failure(409, message, Some(status::details(info, name))));
    }
    match meta_str(new, "name") {
        Some(new_name) if new_name != name => Err(status::bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

fn store_update(state: &mut State, kind: Kind, ns: &str, name: &str, mut obj: Value) -> Reply {
    let rv = state.next_resource_version();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), rv.into());
    }
    // The store and the reply share the new version.
    let obj = Arc::new(obj);
    if let Some(slot) = state.get_mut(kind, ns, name) {
        *slot = Arc::clone(&obj);
    }
    Reply::ok(obj)
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` deletes,
/// anything else (arrays included) replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.as_str()).or_insert(Value::Null), value);
            }
        }
    }
}

/// POST of a core/v1 or events.k8s.io/v1 Event.
fn create_event(state: &mut State, kind: Kind, ns: &str, body: &[u8]) -> Reply {
    let info = kind.info();
    let mut event = match parse_body(body) {
        Ok(event) if event.is_object() => event,
        Ok(_) => return status::bad_request("the event is not a JSON object"),
        Err(reply) => return reply,
    };
    if meta_str(&event, "namespace").is_some_and(|n| !n.is_empty() && n != ns) {
        return status::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        );
    }
    let name = match (meta_str(&event, "name"), meta_str(&event, "generateName")) {
        (Some(name), _) if !name.is_empty() => name.to_owned(),
        (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{}", generated_suffix()),
        _ => {
            let error =
                FieldError { field: "metadata.name", invalid_value: None, detail: "name or generateName is required" };
            return status::invalid(&info, "", &[error]);
        }
    };
    let errors = validate_event(kind, ns, &event);
    if !errors.is_empty() {
        return status::invalid(&info, &name, &errors);
    }
    if state.get(kind, ns, &name).is_some() {
        return status::already_exists(&info, &name);
    }
    if event.get("metadata").is_none_or(|m| !m.is_object()) {
        event["metadata"] = json!({});
    }
    event["metadata"]["name"] = name.clone().into();
    event["metadata"]["namespace"] = ns.into();
    if let Some(map) = event.as_object_mut() {
        map.entry("apiVersion").or_insert_with(|| info.api_version.into());
        map.entry("kind").or_insert_with(|| info.kind.into());
    }
    Reply::created(state.create(kind, ns, &name, event))
}

/// The subset of the apiserver's event validation (ValidateEventCreate) that
/// catches real client mistakes.
fn validate_event(kind: Kind, ns: &str, event: &Value) -> Vec<FieldError> {
    let text = |field: &str| event.get(field).and_then(Value::as_str).unwrap_or("");
    let mut errors = Vec::new();
    let (object_field, object_path) = match kind {
        Kind::CoreEvent => ("involvedObject", "involvedObject.namespace"),
        _ => ("regarding", "regarding.namespace"),
    };
    let object_ns = event.get(object_field).and_then(|o| o.get("namespace")).and_then(Value::as_str);
    let object_ns = object_ns.unwrap_or("");
    let mismatch = if kind == Kind::CoreEvent && text("eventTime").is_empty() {
        // Old-style events: the object's namespace must be the event's
        // (cluster-scoped objects may only get events in "default").
        match object_ns {
            "" => ns != "default",
            object_ns => object_ns != ns,
        }
    } else {
        object_ns.is_empty() && ns != "default" && ns != "kube-system"
    };
    if mismatch {
        errors.push(FieldError {
            field: object_path,
            invalid_value: Some(object_ns.to_owned()),
            detail: "does not match event.namespace",
        });
    }
    if kind == Kind::Event {
        for field in ["eventTime", "reportingController", "reportingInstance", "action", "reason"] {
            if text(field).is_empty() {
                errors.push(FieldError { field, invalid_value: None, detail: "" });
            }
        }
        if !matches!(text("type"), "Normal" | "Warning") {
            let value = text("type").to_owned();
            errors.push(FieldError { field: "type", invalid_value: Some(value), detail: "has invalid value" });
        }
    }
    errors
}

/// POST selfsubjectaccessreviews: allowed unless `deny()` says otherwise.
fn access_review(state: &State, body: &[u8]) -> Reply {
    let mut review = match parse_body(body) {
        Ok(review) if review.is_object() => review,
        Ok(_) => return status::bad_request("the review is not a JSON object"),
        Err(reply) => return reply,
    };
    let attrs = review.pointer("/spec/resourceAttributes");
    let field = |name: &str| attrs.and_then(|a| a.get(name)).and_then(Value::as_str).unwrap_or("").to_owned();
    let (verb, subresource) = (field("verb"), field("subresource"));
    let resource = match subresource.as_str() {
        "" => field("resource"),
        sub => format!("{}/{sub}", field("resource")),
    };
    let allowed = attrs.is_none() || !state.is_denied(&verb, &resource);
    let info = Kind::SelfSubjectAccessReview.info();
    review["apiVersion"] = info.api_version.into();
    review["kind"] = info.kind.into();
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = json!({"allowed": allowed});
    Reply::created(review)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::verb;

    /// The examples of RFC 7386, appendix A.
    #[test]
    fn merge_patch_follows_rfc7386() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "patch {patch}");
        }
    }

    #[test]
    fn routes_parse_like_the_apiserver() {
        let pod_status = Route::parse("/api/v1/namespaces/ns/pods/p/status").expect("route");
        assert_eq!(pod_status.resource(), "pods/status");
        assert_eq!(verb("PUT", Some(&pod_status)), "update");
        let nads = Route::parse("/apis/k8s.cni.cncf.io/v1/network-attachment-definitions");
        assert_eq!(verb("GET", nads.as_ref()), "list");
        assert_eq!(Route::parse("/version"), Some(Route::Version));
        for bad in ["/api/v1/pods/p", "/api/v1/namespaces/ns/nodes", "/", "/api/v1/namespaces/ns/pods/p/exec", "x"] {
            assert_eq!(Route::parse(bad), None, "{bad}");
        }
    }
}
