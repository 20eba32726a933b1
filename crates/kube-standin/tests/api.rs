//! The REST surface, seen over raw HTTP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{TIMEOUT, get, merge_patch, post, put, send};
use kube_standin::{Fault, FaultAction, StandIn, Transport};
use serde_json::{Value, json};

const POD: &str = "/api/v1/namespaces/default/pods/web";

fn with_pod() -> StandIn {
    let api = StandIn::start_with(Transport::Http);
    api.add_pod(json!({
        "metadata": {
            "name": "web",
            "annotations": {"keep": "1", "drop": "2", "nested": "x"},
            "labels": {"app": "web"},
        },
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running"},
    }));
    api
}

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).expect("rv")
}

#[test]
fn get_pod_and_not_found() {
    let api = with_pod();
    let reply = get(&api.url(), POD);
    assert_eq!(reply.code, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let pod = reply.body;
    assert_eq!((pod["apiVersion"].as_str(), pod["kind"].as_str()), (Some("v1"), Some("Pod")));
    assert_eq!(pod["metadata"]["namespace"], "default");
    assert_eq!(pod["metadata"]["uid"].as_str().map(str::len), Some(36));
    assert!(pod["metadata"]["creationTimestamp"].is_string());
    assert!(rv(&pod) > 0);
    assert_eq!(api.pod("default", "web"), Some(pod));

    let missing = get(&api.url(), "/api/v1/namespaces/default/pods/nope");
    assert_eq!(missing.code, 404);
    assert_eq!(
        missing.body,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"pods \"nope\" not found","reason":"NotFound",
               "details":{"name":"nope","kind":"pods"},"code":404})
    );
    api.remove_pod("default", "web");
    assert_eq!(get(&api.url(), POD).code, 404);
    assert_eq!(api.pod("default", "web"), None);

    let unknown = get(&api.url(), "/api/v1/namespaces/default/configmaps/x");
    assert_eq!((unknown.code, unknown.body["reason"].as_str()), (404, Some("NotFound")));
    let version = get(&api.url(), "/version");
    assert_eq!((version.body["major"].as_str(), version.body["minor"].as_str()), (Some("1"), Some("33")));
}

#[test]
fn merge_patch_is_real_rfc7386() {
    let api = with_pod();
    let before = api.pod("default", "web").expect("pod");
    let patch = json!({"metadata": {
        "annotations": {"drop": null, "added": "3", "nested": {"deep": {"a": 1}}},
        "labels": null,
    }});
    let reply = merge_patch(&api.url(), POD, &patch);
    assert_eq!(reply.code, 200, "{:?}", reply.body);
    let meta = &reply.body["metadata"];
    assert_eq!(meta["annotations"], json!({"keep": "1", "added": "3", "nested": {"deep": {"a": 1}}}));
    assert!(meta.get("labels").is_none());
    assert_eq!(meta["uid"], before["metadata"]["uid"]);
    assert!(rv(&reply.body) > rv(&before));
    assert_eq!(api.pod("default", "web"), Some(reply.body.clone()));

    // Objects merge recursively; status is ignored on the main resource.
    let nested = json!({"metadata": {"annotations": {"nested": {"deep": {"b": 2}}}}, "status": {"phase": "Failed"}});
    let reply = merge_patch(&api.url(), POD, &nested);
    assert_eq!(reply.body["metadata"]["annotations"]["nested"], json!({"deep": {"a": 1, "b": 2}}));
    assert_eq!(reply.body["status"]["phase"], "Running");

    // The status subresource takes status (and metadata), strategic merge patch too.
    let headers = [("Content-Type", "application/strategic-merge-patch+json; charset=utf-8")];
    let body = json!({"status": {"phase": "Succeeded"}}).to_string();
    let reply = send(&api.url(), "PATCH", &format!("{POD}/status"), &headers, &body, TIMEOUT).expect("patch");
    assert_eq!((reply.code, reply.body["status"]["phase"].as_str()), (200, Some("Succeeded")));

    // A stale resourceVersion in the patch is a failed precondition.
    let stale = json!({"metadata": {"resourceVersion": "1", "annotations": {"x": "y"}}});
    assert_eq!(merge_patch(&api.url(), POD, &stale).code, 409);

    let json_patch = [("Content-Type", "application/json-patch+json")];
    let reply = send(&api.url(), "PATCH", POD, &json_patch, "[]", TIMEOUT).expect("patch");
    assert_eq!((reply.code, reply.body["reason"].as_str()), (415, Some("UnsupportedMediaType")));
    let merge = [("Content-Type", "application/merge-patch+json")];
    let reply = send(&api.url(), "PATCH", POD, &merge, "{not json", TIMEOUT).expect("patch");
    assert_eq!((reply.code, reply.body["reason"].as_str()), (400, Some("BadRequest")));
    let missing = merge_patch(&api.url(), "/api/v1/namespaces/default/pods/nope", &json!({}));
    assert_eq!(missing.code, 404);
}

#[test]
fn update_status_conflict_and_success() {
    let api = with_pod();
    let mut pod = api.pod("default", "web").expect("pod");
    let path = format!("{POD}/status");

    let mut stale = pod.clone();
    stale["metadata"]["resourceVersion"] = "999999".into();
    let conflict = put(&api.url(), &path, &stale);
    assert_eq!(conflict.code, 409);
    assert_eq!(conflict.body["reason"], "Conflict");
    assert_eq!(
        conflict.body["message"],
        "Operation cannot be fulfilled on pods \"web\": the object has been modified; \
         please apply your changes to the latest version and try again"
    );
    assert_eq!(conflict.body["details"], json!({"name": "web", "kind": "pods"}));

    pod["metadata"]["annotations"] = json!({"k8s.v1.cni.cncf.io/network-status": "[]"});
    pod["status"]["phase"] = "Succeeded".into();
    pod["spec"] = json!({"changed": true});
    let updated = put(&api.url(), &path, &pod);
    assert_eq!(updated.code, 200, "{:?}", updated.body);
    assert_eq!(updated.body["metadata"]["annotations"], pod["metadata"]["annotations"]);
    assert_eq!(updated.body["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(updated.body["status"]["phase"], "Succeeded");
    assert_eq!(updated.body["spec"]["containers"][0]["name"], "c", "spec is not updated");
    assert!(rv(&updated.body) > rv(&pod));

    // The old resourceVersion is now stale; PUT on the pod itself checks too.
    assert_eq!(put(&api.url(), POD, &pod).code, 409);
    let mut renamed = updated.body.clone();
    renamed["metadata"]["name"] = "other".into();
    assert_eq!(put(&api.url(), POD, &renamed).code, 400);
    let ok = put(&api.url(), POD, &updated.body);
    assert_eq!(ok.code, 200);
    assert_eq!(ok.body["status"]["phase"], "Succeeded", "update leaves status alone");
}

#[test]
fn nad_get_not_found_and_lists() {
    let api = StandIn::start_with(Transport::Http);
    let config = r#"{"cniVersion":"1.0.0","type":"macvlan"}"#;
    for (ns, name) in [("default", "macvlan"), ("blue", "bridge")] {
        api.add_nad(json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"config": config},
        }));
    }
    let base = "/apis/k8s.cni.cncf.io/v1";
    let nad = get(&api.url(), &format!("{base}/namespaces/default/network-attachment-definitions/macvlan"));
    assert_eq!(nad.code, 200);
    assert_eq!(nad.body["spec"]["config"], config);

    let missing = get(&api.url(), &format!("{base}/namespaces/default/network-attachment-definitions/bridge"));
    assert_eq!(missing.code, 404);
    assert_eq!(missing.body["message"], "network-attachment-definitions.k8s.cni.cncf.io \"bridge\" not found");
    assert_eq!(
        missing.body["details"],
        json!({"name": "bridge", "group": "k8s.cni.cncf.io", "kind": "network-attachment-definitions"})
    );

    let list = get(&api.url(), &format!("{base}/namespaces/blue/network-attachment-definitions"));
    assert_eq!(list.body["kind"], "NetworkAttachmentDefinitionList");
    assert_eq!(list.body["apiVersion"], "k8s.cni.cncf.io/v1");
    assert!(list.body["metadata"]["resourceVersion"].is_string());
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
    let all = get(&api.url(), &format!("{base}/network-attachment-definitions"));
    assert_eq!(all.body["items"].as_array().map(Vec::len), Some(2));
    let requests = api.requests();
    let verbs: Vec<_> = requests.iter().map(|r| (r.verb.as_str(), r.resource.as_str())).collect();
    let nads = "network-attachment-definitions";
    assert_eq!(verbs, [("get", nads), ("get", nads), ("list", nads), ("list", nads)]);
}

#[test]
fn events_are_created_validated_and_listed() {
    let api = StandIn::start_with(Transport::Http);
    let core = json!({
        "metadata": {"generateName": "web."},
        "involvedObject": {"kind": "Pod", "namespace": "blue", "name": "web"},
        "reason": "AddedInterface", "message": "Add eth1", "type": "Normal",
    });
    let created = post(&api.url(), "/api/v1/namespaces/blue/events", &core);
    assert_eq!(created.code, 201, "{:?}", created.body);
    let name = created.body["metadata"]["name"].as_str().expect("name").to_owned();
    assert!(name.starts_with("web.") && name.len() == 9, "{name}");
    assert_eq!(created.body["metadata"]["namespace"], "blue");
    assert!(created.body["metadata"]["uid"].is_string());

    let modern = json!({
        "metadata": {"name": "web.1", "namespace": "blue"},
        "regarding": {"kind": "Pod", "namespace": "blue", "name": "web"},
        "eventTime": "2025-01-01T00:00:00.000000Z", "type": "Warning", "reason": "NoNetwork",
        "action": "Attach", "reportingController": "multus", "reportingInstance": "node-1",
    });
    let path = "/apis/events.k8s.io/v1/namespaces/blue/events";
    assert_eq!(post(&api.url(), path, &modern).code, 201);
    let again = post(&api.url(), path, &modern);
    assert_eq!((again.code, again.body["reason"].as_str()), (409, Some("AlreadyExists")));

    let mut wrong_object = core.clone();
    wrong_object["involvedObject"]["namespace"] = "red".into();
    let invalid = post(&api.url(), "/api/v1/namespaces/blue/events", &wrong_object);
    assert_eq!(invalid.code, 422);
    assert_eq!(invalid.body["reason"], "Invalid");
    let message = invalid.body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Event \"web.")
            && message.ends_with(
                "is invalid: involvedObject.namespace: Invalid value: \"red\": does not match event.namespace"
            ),
        "{message}"
    );
    assert_eq!(invalid.body["details"]["causes"][0]["field"], "involvedObject.namespace");

    let mut incomplete = modern.clone();
    incomplete["metadata"]["name"] = "web.2".into();
    incomplete["reportingController"] = Value::Null;
    let invalid = post(&api.url(), path, &incomplete);
    assert_eq!(invalid.code, 422);
    assert_eq!(
        invalid.body["message"],
        "Event.events.k8s.io \"web.2\" is invalid: reportingController: Required value"
    );

    // The apiserver answers a metadata.namespace mismatch with 400, not 422.
    let mut elsewhere = core.clone();
    elsewhere["metadata"]["namespace"] = "red".into();
    let mismatch = post(&api.url(), "/api/v1/namespaces/blue/events", &elsewhere);
    assert_eq!((mismatch.code, mismatch.body["reason"].as_str()), (400, Some("BadRequest")));

    let events = api.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["metadata"]["name"], name.as_str());
    assert_eq!(events[1]["apiVersion"], "events.k8s.io/v1");

    let patch = json!({"series": {"count": 2}});
    let patched = merge_patch(&api.url(), &format!("{path}/web.1"), &patch);
    assert_eq!(patched.body["series"]["count"], 2);
    assert_eq!(api.events()[1]["series"]["count"], 2);
    let list = get(&api.url(), "/api/v1/namespaces/blue/events");
    assert_eq!((list.body["kind"].as_str(), list.body["items"].as_array().map(Vec::len)), (Some("EventList"), Some(1)));
}

#[test]
fn status_faults_apply_n_times_then_serve_normally() {
    let api = with_pod();
    api.add_fault(Fault::new(FaultAction::Status(503)).method("GET").path_contains("/pods/").times(2));
    api.add_fault(Fault::new(FaultAction::Status(429)).method("PATCH").times(1));
    let codes: Vec<u16> = (0..3).map(|_| get(&api.url(), POD).code).collect();
    assert_eq!(codes, [503, 503, 200]);

    let throttled = merge_patch(&api.url(), POD, &json!({}));
    assert_eq!((throttled.code, throttled.header("retry-after")), (429, Some("1")));
    assert_eq!(throttled.body["reason"], "TooManyRequests");
    assert_eq!(merge_patch(&api.url(), POD, &json!({})).code, 200);
    assert_eq!(api.requests().len(), 5, "faulted requests are recorded too");

    api.add_fault(Fault::new(FaultAction::Status(500)));
    let error = get(&api.url(), POD);
    assert_eq!((error.code, error.body["reason"].as_str()), (500, Some("InternalError")));
    api.clear_faults();
    assert_eq!(get(&api.url(), POD).code, 200);
}

#[test]
fn delay_and_latency_slow_requests_down() {
    let api = with_pod();
    api.add_fault(Fault::new(FaultAction::Delay(Duration::from_millis(300))).times(1));
    let start = Instant::now();
    assert_eq!(get(&api.url(), POD).code, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));

    api.set_latency(Duration::from_millis(200));
    let start = Instant::now();
    assert_eq!(get(&api.url(), POD).code, 200);
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[test]
fn hang_keeps_the_client_waiting_without_blocking_others() {
    let api = with_pod();
    api.add_fault(Fault::new(FaultAction::Hang).times(1));
    let hung = send(&api.url(), "GET", POD, &[], "", Duration::from_millis(500));
    let err = hung.expect_err("a hung request gets no answer");
    assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{err}");

    // A second hanging connection stays open while another is served.
    api.add_fault(Fault::new(FaultAction::Hang).times(1));
    let mut parked = TcpStream::connect(api.addr()).expect("connect");
    parked.write_all(format!("GET {POD} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).expect("write");
    let deadline = Instant::now() + TIMEOUT;
    while api.requests().len() < 2 {
        assert!(Instant::now() < deadline, "the parked request never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(get(&api.url(), POD).code, 200);
    parked.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    assert!(parked.read(&mut [0; 64]).is_err(), "still no answer, still open");
}

#[test]
fn reset_closes_the_connection_unanswered() {
    let api = with_pod();
    api.add_fault(Fault::new(FaultAction::Reset).times(1));
    let mut stream = TcpStream::connect(api.addr()).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.write_all(format!("GET {POD} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).expect("write");
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer)),
        Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}"),
    }
    assert_eq!(get(&api.url(), POD).code, 200);
    assert_eq!(api.requests().len(), 2);
}

#[test]
fn deny_answers_like_rbac() {
    let api = with_pod();
    api.deny("patch", "pods");
    api.deny("update", "pods/status");
    let denied = merge_patch(&api.url(), POD, &json!({"metadata": {"annotations": {"a": "b"}}}));
    assert_eq!(denied.code, 403);
    assert_eq!(
        denied.body,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"pods \"web\" is forbidden: User \"system:serviceaccount:kube-system:multus\" \
                          cannot patch resource \"pods\" in API group \"\" in the namespace \"default\"",
               "reason":"Forbidden","details":{"name":"web","kind":"pods"},"code":403})
    );
    let pod = api.pod("default", "web").expect("pod");
    assert!(pod["metadata"]["annotations"].get("a").is_none());
    assert_eq!(put(&api.url(), &format!("{POD}/status"), &pod).code, 403);
    assert_eq!(get(&api.url(), POD).code, 200);

    let review = |verb: &str, subresource: &str| {
        let body = json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": "default", "verb": verb, "group": "",
                                            "resource": "pods", "subresource": subresource}},
        });
        let reply = post(&api.url(), "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", &body);
        assert_eq!(reply.code, 201);
        reply.body["status"]["allowed"].as_bool()
    };
    assert_eq!(review("patch", ""), Some(false));
    assert_eq!(review("update", "status"), Some(false));
    assert_eq!(review("get", ""), Some(true));
    assert_eq!(review("patch", "status"), Some(true));
}

#[test]
fn token_is_required_when_set() {
    let api = with_pod();
    api.require_token(Some("s3cret"));
    let anonymous = get(&api.url(), POD);
    assert_eq!(anonymous.code, 401);
    assert_eq!(
        anonymous.body,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"Unauthorized","reason":"Unauthorized","code":401})
    );
    let wrong = send(&api.url(), "GET", POD, &[("Authorization", "Bearer nope")], "", TIMEOUT);
    assert_eq!(wrong.expect("reply").code, 401);
    let right = send(&api.url(), "GET", POD, &[("Authorization", "Bearer s3cret")], "", TIMEOUT);
    assert_eq!(right.expect("reply").code, 200);
    assert_eq!(api.requests()[2].authorization.as_deref(), Some("Bearer s3cret"));
    api.require_token(None);
    assert_eq!(get(&api.url(), POD).code, 200);
}

#[test]
fn manifests_load_from_multi_document_yaml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = r#"---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: blue
  annotations:
    k8s.v1.cni.cncf.io/networks: macvlan
spec:
  containers:
  - name: c
    image: busybox
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan
  namespace: blue
spec:
  config: '{"cniVersion": "1.0.0", "type": "macvlan", "master": "eth0"}'
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: ignored
"#;
    std::fs::write(dir.path().join("objects.yaml"), yaml).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").expect("write");
    let api = StandIn::start_with(Transport::Http);
    assert_eq!(api.load_manifests(dir.path()).expect("load"), 2);
    let pod = api.pod("blue", "web").expect("pod");
    assert_eq!(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"], "macvlan");
    let nad = get(&api.url(), "/apis/k8s.cni.cncf.io/v1/namespaces/blue/network-attachment-definitions/macvlan");
    let config: Value = serde_json::from_str(nad.body["spec"]["config"].as_str().expect("config")).expect("json");
    assert_eq!(config["master"], "eth0");

    std::fs::write(dir.path().join("broken.yaml"), "kind: [unclosed").expect("write");
    assert!(api.load_manifests(&dir.path().join("broken.yaml")).is_err());
}

#[test]
fn requests_are_recorded_and_kubeconfig_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let api = with_pod();
    let patch = json!({"metadata": {"annotations": {"a": "b"}}});
    merge_patch(&api.url(), &format!("{POD}?fieldManager=multus"), &patch);
    get(&api.url(), "/_standin/requests");
    let requests = api.requests();
    assert_eq!(requests.len(), 1, "admin calls are not recorded");
    let request = &requests[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("PATCH", POD));
    assert_eq!(request.query, "fieldManager=multus");
    assert_eq!(request.content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(serde_json::from_str::<Value>(&request.body).expect("body"), patch);
    assert_eq!((request.verb.as_str(), request.resource.as_str()), ("patch", "pods"));
    api.clear_requests();
    assert!(api.requests().is_empty());

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    api.write_kubeconfig(&path, "tok").expect("write");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(&format!("server: \"{}\"", api.url())) && text.contains("token: \"tok\""));
}

#[test]
fn admin_api_steers_the_server() {
    let api = StandIn::start_with(Transport::Http);
    let url = api.url();
    assert_eq!(post(&url, "/_standin/pods", &json!({"metadata": {"name": "web"}})).code, 201);
    assert_eq!(post(&url, "/_standin/pods", &json!({"metadata": {}})).code, 400);
    let nad = json!({"metadata": {"name": "n", "namespace": "blue"}, "spec": {"config": "{}"}});
    assert_eq!(post(&url, "/_standin/nads", &nad).code, 201);
    let fault = json!({"method": "GET", "path_contains": "/pods/", "times": 1, "action": {"status": 503}});
    assert_eq!(post(&url, "/_standin/faults", &fault).code, 200);
    assert_eq!(post(&url, "/_standin/faults", &json!({"action": "explode"})).code, 400);
    assert_eq!(get(&url, POD).code, 503);
    assert_eq!(get(&url, POD).code, 200);
    let recorded = get(&url, "/_standin/requests").body;
    assert_eq!(recorded.as_array().map(Vec::len), Some(2));
    assert_eq!(recorded[0]["resource"], "pods");
    assert_eq!(send(&url, "DELETE", "/_standin/requests", &[], "", TIMEOUT).expect("delete").code, 200);
    assert!(api.requests().is_empty());
    assert_eq!(post(&url, "/_standin/deny", &json!({"verb": "get", "resource": "pods"})).code, 200);
    assert_eq!(get(&url, POD).code, 403);
    assert_eq!(send(&url, "DELETE", "/_standin/pods/default/web", &[], "", TIMEOUT).expect("delete").code, 200);
    assert_eq!(api.pod("default", "web"), None);
    assert_eq!(post(&url, "/_standin/latency", &json!({"ms": 1})).code, 200);
    assert_eq!(get(&url, "/_standin/events").body, json!([]));
}

#[test]
fn faults_round_trip_through_serde() {
    let cases = [
        (
            r#"{"method":"GET","path_contains":"/pods/","times":2,"action":{"status":503}}"#,
            Fault::new(FaultAction::Status(503)).method("GET").path_contains("/pods/").times(2),
        ),
        (r#"{"action":{"delay_ms":300}}"#, Fault::new(FaultAction::Delay(Duration::from_millis(300)))),
        (r#"{"action":"hang"}"#, Fault::new(FaultAction::Hang)),
        (r#"{"action":"reset"}"#, Fault::new(FaultAction::Reset)),
    ];
    for (text, fault) in cases {
        let parsed: Fault = serde_json::from_str(text).expect(text);
        assert_eq!(parsed, fault);
        assert_eq!(serde_json::from_value::<Fault>(serde_json::to_value(&fault).expect("ser")).expect("de"), fault);
    }
}

const NADS: &str = "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions";

fn nad(ns: &str, name: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns}, "spec": {"config": "{}"}})
}

/// Starts a watch of `default`'s NADs from `from` on its own thread, and returns once
/// the stand-in has it (it is recorded on arrival, just before it is held).
fn held_watch(api: &StandIn, from: u64, timeout_seconds: u64) -> std::thread::JoinHandle<(Value, Duration)> {
    let url = api.url();
    let path = format!("{NADS}?watch=true&resourceVersion={from}&timeoutSeconds={timeout_seconds}");
    let watcher = std::thread::spawn(move || {
        let started = Instant::now();
        let reply = get(&url, &path);
        assert_eq!(reply.code, 200);
        (reply.body, started.elapsed())
    });
    let arrived = Instant::now();
    while !api.requests().iter().any(|r| r.verb == "watch") {
        assert!(arrived.elapsed() < TIMEOUT, "the watch never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    watcher
}

#[test]
fn a_held_watch_answers_the_next_change_in_its_namespace() {
    let api = StandIn::start_with(Transport::Http);
    api.add_nad(nad("default", "a"));
    let from = rv(&get(&api.url(), NADS).body);
    let watcher = held_watch(&api, from, 2);
    std::thread::sleep(Duration::from_millis(50));
    // Another namespace's change wakes the wait but is not this watch's event.
    api.add_nad(nad("blue", "elsewhere"));
    std::thread::sleep(Duration::from_millis(50));
    api.add_nad(nad("default", "b"));
    let (event, took) = watcher.join().expect("watcher");
    assert_eq!(event["type"], "ADDED", "{event}");
    assert_eq!(event["object"]["metadata"]["name"], "b");
    assert!(took < Duration::from_millis(1900), "answered at the change, not at the timeout: {took:?}");
}

#[test]
fn a_watch_with_nothing_newer_ends_with_a_bookmark_after_its_timeout() {
    let api = StandIn::start_with(Transport::Http);
    api.add_nad(nad("default", "a"));
    let from = rv(&get(&api.url(), NADS).body);
    let (event, took) = held_watch(&api, from, 1).join().expect("watcher");
    assert_eq!(event["type"], "BOOKMARK", "{event}");
    assert_eq!(rv(&event["object"]), from);
    assert!(took >= Duration::from_millis(900), "held for timeoutSeconds: {took:?}");

    // A change before the watch arrives is answered at once.
    api.add_nad(nad("default", "b"));
    let started = Instant::now();
    let event = get(&api.url(), &format!("{NADS}?watch=true&resourceVersion={from}&timeoutSeconds=2")).body;
    assert_eq!((event["type"].as_str(), event["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("b")));
    assert!(started.elapsed() < Duration::from_millis(1900));
}

#[test]
fn compaction_answers_a_held_watch_with_410() {
    let api = StandIn::start_with(Transport::Http);
    api.add_nad(nad("default", "a"));
    let from = rv(&get(&api.url(), NADS).body);
    let watcher = held_watch(&api, from, 2);
    std::thread::sleep(Duration::from_millis(50));
    // A pod write moves the revision past the watch's without a NAD event; compacting
    // there makes the watch's resourceVersion too old.
    api.add_pod(json!({"metadata": {"name": "p"}}));
    api.compact_watch_history();
    let (event, took) = watcher.join().expect("watcher");
    assert_eq!(event["type"], "ERROR", "{event}");
    assert_eq!((event["object"]["code"].as_u64(), event["object"]["reason"].as_str()), (Some(410), Some("Expired")));
    assert!(took < Duration::from_millis(1900), "answered at the compaction: {took:?}");
}
