//! Replies, and `Status` bodies shaped exactly like the apiserver's
//! (k8s.io/apimachinery/pkg/api/errors).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::state::KindInfo;

/// The user the stand-in pretends every caller is (it knows no identities);
/// it appears in 403 messages like the real apiserver's.
pub(crate) const USER: &str = "system:serviceaccount:kube-system:multus";

/// An HTTP answer: status code and JSON body. The body is shared so that a stored
/// object is answered without copying it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub code: u16,
    pub body: Arc<Value>,
}

impl Reply {
    pub fn ok(body: impl Into<Arc<Value>>) -> Reply {
        Reply { code: 200, body: body.into() }
    }

    pub fn created(body: impl Into<Arc<Value>>) -> Reply {
        Reply { code: 201, body: body.into() }
    }
}

/// The usual `reason` for an HTTP error code (`""` is `StatusReasonUnknown`).
pub(crate) fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

/// A failure `Status` with the usual reason for `code`; `details` is omitted
/// when `None`.
pub(crate) fn failure(code: u16, message: String, details: Option<Value>) -> Reply {
    failure_with_reason(code, reason_for(code), message, details)
}

fn failure_with_reason(code: u16, reason: &str, message: String, details: Option<Value>) -> Reply {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
    });
    if let Some(map) = body.as_object_mut() {
        if !reason.is_empty() {
            map.insert("reason".into(), reason.into());
        }
        if let Some(details) = details {
            map.insert("details".into(), details);
        }
        map.insert("code".into(), code.into());
    }
    Reply { code, body: Arc::new(body) }
}

/// `StatusDetails` for a named object of a resource; empty fields are omitted.
pub(crate) fn details(info: &KindInfo, name: &str) -> Value {
    let mut map = Map::new();
    if !name.is_empty() {
        map.insert("name".into(), name.into());
    }
    if !info.group.is_empty() {
        map.insert("group".into(), info.group.into());
    }
    map.insert("kind".into(), info.plural.into());
    Value::Object(map)
}

/// `pods` or `network-attachment-definitions.k8s.cni.cncf.io`.
pub(crate) fn group_resource(info: &KindInfo) -> String {
    if info.group.is_empty() { info.plural.to_owned() } else { format!("{}.{}", info.plural, info.group) }
}

pub(crate) fn not_found(info: &KindInfo, name: &str) -> Reply {
    let message = format!("{} {name:?} not found", group_resource(info));
    failure(404, message, Some(details(info, name)))
}

/// What the apiserver answers for a path it does not serve.
pub(crate) fn no_such_path() -> Reply {
    failure(404, "the server could not find the requested resource".into(), Some(json!({})))
}

pub(crate) fn conflict_modified(info: &KindInfo, name: &str) -> Reply {
    let message = format!(
        "Operation cannot be fulfilled on {} {name:?}: the object has been modified; \
         please apply your changes to the latest version and try again",
        group_resource(info)
    );
    failure(409, message, Some(details(info, name)))
}

pub(crate) fn already_exists(info: &KindInfo, name: &str) -> Reply {
    let message = format!("{} {name:?} already exists", group_resource(info));
    failure_with_reason(409, "AlreadyExists", message, Some(details(info, name)))
}

/// RBAC's 403, message as built by the apiserver's `forbiddenMessage`.
pub(crate) fn forbidden(info: &KindInfo, verb: &str, resource: &str, ns: Option<&str>, name: &str) -> Reply {
    let scope = match ns {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_owned(),
    };
    let why = format!("User {USER:?} cannot {verb} resource {resource:?} in API group {:?} {scope}", info.group);
    let message = match name {
        "" => format!("{} is forbidden: {why}", group_resource(info)),
        name => format!("{} {name:?} is forbidden: {why}", group_resource(info)),
    };
    failure(403, message, Some(details(info, name)))
}

pub(crate) fn unauthorized() -> Reply {
    failure(401, "Unauthorized".into(), None)
}

pub(crate) fn bad_request(message: impl Into<String>) -> Reply {
    failure(400, message.into(), None)
}

pub(crate) fn method_not_allowed() -> Reply {
    let message = "the server does not allow this method on the requested resource".into();
    failure(405, message, Some(json!({})))
}

/// One field error, as in `field.ErrorList`.
pub(crate) struct FieldError {
    pub field: &'static str,
    /// `Some(value)` makes it `FieldValueInvalid`, `None` `FieldValueRequired`.
    pub invalid_value: Option<String>,
    pub detail: &'static str,
}

/// 422 Invalid, formatted like `errors.NewInvalid`.
pub(crate) fn invalid(info: &KindInfo, name: &str, errors: &[FieldError]) -> Reply {
    let rendered: Vec<String> = errors
        .iter()
        .map(|e| {
            let head = match &e.invalid_value {
                Some(value) => format!("Invalid value: {value:?}"),
                None => "Required value".to_owned(),
            };
            match e.detail {
                "" => head,
                detail => format!("{head}: {detail}"),
            }
        })
        .collect();
    let causes: Vec<Value> = errors
        .iter()
        .zip(&rendered)
        .map(|(e, message)| {
            let reason = if e.invalid_value.is_some() { "FieldValueInvalid" } else { "FieldValueRequired" };
            json!({"reason": reason, "message": message, "field": e.field})
        })
        .collect();
    let mut summary: Vec<String> = errors.iter().zip(&rendered).map(|(e, m)| format!("{}: {m}", e.field)).collect();
    let summary = match summary.len() {
        1 => summary.remove(0),
        _ => format!("[{}]", summary.join(", ")),
    };
    let qualified_kind = match info.group {
        "" => info.kind.to_owned(),
        group => format!("{}.{group}", info.kind),
    };
    let message = format!("{qualified_kind} {name:?} is invalid: {summary}");
    let mut details = json!({"name": name, "kind": info.kind, "causes": causes});
    if !info.group.is_empty() {
        details["group"] = info.group.into();
    }
    failure(422, message, Some(details))
}

/// What an injected `FaultAction::Status(code)` answers: the Status the
/// apiserver would send for that code, about the requested object if any.
pub(crate) fn injected(code: u16, target: Option<(&KindInfo, &str)>) -> Reply {
    match (code, target) {
        (404, Some((info, name))) => not_found(info, name),
        (409, Some((info, name))) => conflict_modified(info, name),
        (404, None) => no_such_path(),
        (401, _) => unauthorized(),
        (429, _) => {
            failure(429, "Too many requests, please try again later.".into(), Some(json!({"retryAfterSeconds": 1})))
        }
        (500, _) => failure(500, "Internal error occurred: injected by kube-standin".into(), None),
        (503, _) => failure(503, "the server is currently unable to handle the request".into(), None),
        (504, _) => failure(
            504,
            "the server was unable to return a response in the time allotted, \
             but may still be processing the request"
                .into(),
            None,
        ),
        (code, _) => failure(code, format!("injected by kube-standin ({})", reason_for(code)), None),
    }
}
