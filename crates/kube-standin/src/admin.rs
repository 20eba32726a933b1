//! The `/_standin/` admin API, for callers outside the test process.
//! Admin calls are never recorded and ignore latency, faults, token and RBAC.

use std::convert::identity;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::state::{Kind, State};
use crate::status::{self, Reply};
use crate::{Fault, lock};

#[derive(Deserialize)]
struct Latency {
    ms: u64,
}

#[derive(Deserialize)]
struct Denial {
    verb: String,
    resource: String,
}

/// Serves `METHOD /_standin/<path>`.
pub(crate) fn serve(state: &Mutex<State>, method: &str, path: &str, body: &[u8]) -> Reply {
    let segments: Vec<&str> = path.split('/').collect();
    let mut state = lock(state);
    let done = || Reply::ok(json!({}));
    match (method, segments.as_slice()) {
        ("GET", ["requests"]) => Reply::ok(json!(state.requests)),
        ("DELETE", ["requests"]) => {
            state.requests.clear();
            done()
        }
        ("GET", ["connections"]) => Reply::ok(json!(state.connections)),
        ("DELETE", ["connections"]) => {
            state.connections.clear();
            done()
        }
        ("GET", ["events"]) => Reply::ok(Value::Array(state.events())),
        ("POST", ["faults"]) => parse(body).map_or_else(identity, |fault: Fault| {
            state.faults.push(fault);
            done()
        }),
        ("DELETE", ["faults"]) => {
            state.faults.clear();
            done()
        }
        ("POST", ["pods"]) => admit(&mut state, Kind::Pod, body),
        ("POST", ["nads"]) => admit(&mut state, Kind::Nad, body),
        ("DELETE", ["nads", ns, name]) => {
            state.remove(Kind::Nad, ns, name);
            Reply::ok(json!({}))
        }
        ("POST", ["compact"]) => {
            state.compact();
            Reply::ok(json!({}))
        }
        ("GET", ["pods", ns, name]) => match state.get(Kind::Pod, ns, name) {
            Some(pod) => Reply::ok(pod.clone()),
            None => status::not_found(&Kind::Pod.info(), name),
        },
        ("DELETE", ["pods", ns, name]) => {
            state.remove(Kind::Pod, ns, name);
            done()
        }
        ("POST", ["latency"]) => parse(body).map_or_else(identity, |latency: Latency| {
            state.latency = Duration::from_millis(latency.ms);
            done()
        }),
        ("POST", ["deny"]) => parse(body).map_or_else(identity, |denial: Denial| {
            state.denied.insert((denial.verb, denial.resource));
            done()
        }),
        _ => status::no_such_path(),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|err| status::bad_request(format!("bad admin body: {err}")))
}

fn admit(state: &mut State, kind: Kind, body: &[u8]) -> Reply {
    let obj: Value = match parse(body) {
        Ok(obj) => obj,
        Err(reply) => return reply,
    };
    match state.admit(kind, obj) {
        Ok(stored) => Reply::created(stored),
        Err(err) => status::bad_request(err),
    }
}
