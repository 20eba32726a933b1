//! Property tests of the parsers and converters every invocation goes through, with
//! bounded case counts and a fixed seed (the same cases on every run; set
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` to explore more locally).
//!
//! * the network selection annotation: generated valid selections round-trip through
//!   both forms; arbitrary text never panics;
//! * `00-multus.conf`: arbitrary JSON never panics, and the error code is the one
//!   skel's order of checks gives (6 decode, 7 config, 1 version);
//! * `CNI_ARGS`: serialise → parse is the identity; parse is idempotent;
//! * results: every version pair converts to a result that parses back in the target
//!   version; 1.x → 0.3.1/0.4.0 → 1.x keeps everything 0.3.x can say.

use multus::cni::result::{Dns, Interface, IpConfig, Route};
use multus::cni::version::SUPPORTED_VERSIONS;
use multus::cni::{CniArgs, CniResult};
use multus::config::MultusConf;
use multus::k8s::selection::{NetworkSelection, parse_default_network, parse_networks};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed};
use serde_json::{Map, Value, json};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const SEED: u64 = 0x6d75_6c74_7573;

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(cases);
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(std::env::var("PROPTEST_RNG_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(SEED)),
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// The network selection annotation
// ---------------------------------------------------------------------------------------

/// A DNS-1123 label (NAD names and namespaces).
fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]",
        "[a-z0-9][a-z0-9-]{0,20}[a-z0-9]",
        "[a-z0-9][a-z0-9-]{59,61}[a-z0-9]", // up to the 63-byte limit
    ]
}

/// An interface name the comma form can carry: valid for the kernel and free of the
/// comma form's separators and of the characters that select the JSON form.
fn comma_ifname() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,15}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

/// Any interface name the kernel takes (the JSON form can carry all of them).
fn json_ifname() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.@,#%+=\\[\\]{}\"'é-]{1,7}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

#[derive(Debug, Clone)]
struct Sel {
    namespace: Option<String>,
    name: String,
    interface: Option<String>,
}

fn selections(ifname: BoxedStrategy<String>) -> impl Strategy<Value = Vec<Sel>> {
    prop::collection::vec(
        (prop::option::of(label()), label(), prop::option::of(ifname)).prop_map(|(namespace, name, interface)| Sel {
            namespace,
            name,
            interface,
        }),
        1..8,
    )
}

fn expected(sels: &[Sel], default_ns: &str) -> Vec<NetworkSelection> {
    sels.iter()
        .map(|s| NetworkSelection {
            name: s.name.clone(),
            namespace: s.namespace.clone().unwrap_or_else(|| default_ns.to_string()),
            interface: s.interface.clone(),
            ..NetworkSelection::default()
        })
        .collect()
}

/// Spaces and tabs the comma form trims.
fn pad() -> impl Strategy<Value = String> {
    "[ \t]{0,2}"
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn comma_form_round_trips(sels in selections(comma_ifname().boxed()), pads in prop::collection::vec(pad(), 64)) {
        let mut p = pads.iter().cycle();
        let items: Vec<String> = sels
            .iter()
            .map(|s| {
                let mut item = p.next().unwrap().clone();
                if let Some(ns) = &s.namespace {
                    item += &format!("{ns}{}/{}", p.next().unwrap(), p.next().unwrap());
                }
                item += &s.name;
                if let Some(i) = &s.interface {
                    item += &format!("{}@{}{i}", p.next().unwrap(), p.next().unwrap());
                }
                item + p.next().unwrap()
            })
            .collect();
        let text = items.join(",");
        let parsed = parse_networks(&text, "pod-ns").map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(parsed, expected(&sels, "pod-ns"));
    }

    #[test]
    fn json_form_round_trips(sels in selections(json_ifname().boxed()), legacy in any::<bool>(), qualified in any::<bool>()) {
        let list: Vec<Value> = sels
            .iter()
            .map(|s| {
                let mut o = Map::new();
                match (&s.namespace, qualified) {
                    (Some(ns), true) => {
                        o.insert("name".into(), format!("{ns}/{}", s.name).into());
                    }
                    (Some(ns), false) => {
                        o.insert("name".into(), s.name.clone().into());
                        o.insert("namespace".into(), ns.clone().into());
                    }
                    (None, _) => {
                        o.insert("name".into(), s.name.clone().into());
                    }
                }
                if let Some(i) = &s.interface {
                    o.insert(if legacy { "interfaceRequest" } else { "interface" }.into(), i.clone().into());
                }
                Value::Object(o)
            })
            .collect();
        let text = serde_json::to_string_pretty(&list).unwrap();
        let parsed = parse_networks(&text, "pod-ns").map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed, expected(&sels, "pod-ns"));
    }

    /// Requests that go to the plugins (ips, mac, gateways, ports, bandwidth, args)
    /// come out as they went in.
    #[test]
    fn json_form_keeps_requests(
        name in label(),
        v4 in prop::collection::vec(any::<u32>(), 0..3),
        prefix in 0u8..=32,
        mac in prop::array::uniform6(any::<u8>()),
        gw in any::<u32>(),
        port in 1u32..=65535,
        rate in 0u64..1_000_000_000,
        arg in "[a-z]{1,8}",
    ) {
        let ips: Vec<String> = v4.iter().map(|a| format!("{}/{prefix}", Ipv4Addr::from(*a))).collect();
        let mac = mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        let gw = IpAddr::V4(Ipv4Addr::from(gw));
        let pm = json!([{"hostPort": port, "containerPort": port, "protocol": "udp"}]);
        let bw = json!({"ingressRate": rate, "ingressBurst": rate, "egressRate": rate, "egressBurst": rate});
        let el = json!({"name": name, "ips": ips, "mac": mac, "default-route": [gw.to_string()],
                        "portMappings": pm, "bandwidth": bw, "cni-args": {arg.clone(): true}, "unknown-key": 1});
        let parsed = parse_networks(&json!([el]).to_string(), "ns").map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.len(), 1);
        let s = &parsed[0];
        prop_assert_eq!(&s.ips, &ips);
        prop_assert_eq!(s.mac.as_deref(), Some(mac.as_str()));
        prop_assert_eq!(s.default_route.clone(), Some(vec![gw]));
        prop_assert_eq!(s.port_mappings.as_ref(), Some(&pm));
        prop_assert_eq!(s.bandwidth.as_ref(), Some(&bw));
        prop_assert_eq!(s.cni_args.as_ref().and_then(|a| a.get(&arg)), Some(&Value::Bool(true)));
    }

    /// Arbitrary text never panics, in either annotation; a default network that parses
    /// is exactly one selection.
    #[test]
    fn arbitrary_annotations_never_panic(
        text in prop_oneof![any::<String>(), "[a-z0-9/@,\\[\\]{}\": .-]{0,40}", "\\[\\{\"name\":\"[a-z/]{0,9}\"[,:a-z\" 0-9\\[\\]{}.-]{0,30}"]
    ) {
        let _ = parse_networks(&text, "ns");
        if let Ok(sel) = parse_default_network(&text, "kube-system") {
            prop_assert!(!sel.name.is_empty() && !sel.namespace.is_empty());
        }
        if let Ok(sels) = parse_networks(&text, "ns") {
            prop_assert!(sels.iter().all(|s| !s.name.is_empty() && !s.namespace.is_empty()), "{:?}", sels);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 00-multus.conf
// ---------------------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        prop_oneof![any::<String>(), "[a-z]{0,6}", Just("1.0.0".to_string()), Just("0.3.1".to_string())]
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Keys: mostly the ones MultusConf knows, so type errors are reached.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "name", "cniVersion", "type", "delegates", "clusterNetwork", "defaultNetworks", "kubeconfig",
            "confDir", "cniDir", "binDir", "logFile", "logLevel", "logToStderr", "logOptions",
            "readinessindicatorfile", "namespaceIsolation", "globalNamespaces", "systemNamespaces",
            "multusNamespace", "retryDeleteOnError", "capabilities", "runtimeConfig", "prevResult",
            "delegateTimeoutSeconds", "apiTimeoutSeconds", "cni.dev/valid-attachments",
        ]).prop_map(String::from),
        1 => "[a-zA-Z]{1,8}",
    ]
}

/// A config that would be valid but for the values `extra` puts in.
fn config_object() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map(key(), json_value(), 0..8),
        prop_oneof![Just(None), Just(Some(json!("multus-net"))), json_value().prop_map(Some),],
        prop_oneof![
            Just(None),
            prop::sample::select(SUPPORTED_VERSIONS.to_vec()).prop_map(|v| Some(json!(v))),
            json_value().prop_map(Some)
        ],
    )
        .prop_map(|(extra, name, version)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            match name {
                Some(n) => m.insert("name".into(), n),
                None => m.remove("name"),
            };
            match version {
                Some(v) => m.insert("cniVersion".into(), v),
                None => m.remove("cniVersion"),
            };
            Value::Object(m)
        })
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && c.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

proptest! {
    #![proptest_config(config(512))]

    /// Never a panic; the code follows skel's order: not JSON or not an object → 6; no
    /// or a bad name → 7; a key of the wrong type → 6; an unknown version → 1.
    #[test]
    fn config_parser_codes(v in prop_oneof![1 => json_value(), 4 => config_object()]) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let got = MultusConf::parse(&bytes);
        let Some(obj) = v.as_object() else {
            prop_assert_eq!(got.map(|_| ()).unwrap_err().code, 6);
            return Ok(());
        };
        match obj.get("name") {
            None | Some(Value::Null) => {
                prop_assert_eq!(got.map(|_| ()).unwrap_err().code, 7);
                return Ok(());
            }
            Some(Value::String(n)) if !valid_name(n) => {
                prop_assert_eq!(got.map(|_| ()).unwrap_err().code, 7);
                return Ok(());
            }
            _ => {}
        }
        match got {
            Ok(c) => {
                prop_assert!(valid_name(&c.name));
                prop_assert!(c.cni_version.is_empty() || SUPPORTED_VERSIONS.contains(&c.cni_version.as_str()));
            }
            Err(e) => {
                let version_ok = match obj.get("cniVersion") {
                    None => true,
                    Some(Value::String(s)) => s.is_empty() || SUPPORTED_VERSIONS.contains(&s.as_str()),
                    Some(_) => true, // a type error: 6
                };
                if e.code == 1 {
                    prop_assert!(!version_ok, "code 1 for a good version: {}", e.msg);
                } else {
                    prop_assert_eq!(e.code, 6, "{}", e.msg);
                }
            }
        }
    }

    /// Any number in the three timeouts: no panic, and a deadline `now + timeout` can be
    /// computed (fuzzing found `1e80` panicking in `Duration::from_secs_f64`).
    #[test]
    fn any_timeout_is_usable(t in prop_oneof![any::<f64>(), 0.0..1e6, Just(1e80), Just(f64::MAX)], key in 0usize..3) {
        let key = ["delegateTimeoutSeconds", "apiTimeoutSeconds", "readinessTimeoutSeconds"][key];
        let mut v = json!({"name": "n", "cniVersion": "1.0.0"});
        v[key] = if t.is_finite() { json!(t) } else { json!(null) };
        if let Ok(c) = MultusConf::parse(v.to_string().as_bytes()) {
            for d in [c.delegate_timeout(), c.api_timeout(), c.readiness_timeout()] {
                prop_assert!(std::time::Instant::now().checked_add(d).is_some());
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = MultusConf::parse(&bytes) {
            prop_assert!([1, 6, 7].contains(&e.code), "{}", e.code);
        }
    }
}

// ---------------------------------------------------------------------------------------
// CNI_ARGS
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn cni_args_round_trip(pairs in prop::collection::vec(("[A-Za-z0-9_]{1,12}", "[^;]{0,16}"), 0..8)) {
        let args = CniArgs(pairs.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        let text = args.to_env_string();
        let back = CniArgs::parse(&text).map_err(|e| TestCaseError::fail(e.msg))?;
        prop_assert_eq!(back, args);
    }

    /// Whatever parses, re-parses to the same pairs after serialising.
    #[test]
    fn cni_args_parse_is_idempotent(text in prop_oneof![any::<String>(), "[a-zA-Z=;_ ]{0,40}"]) {
        if let Ok(args) = CniArgs::parse(&text) {
            let again = CniArgs::parse(&args.to_env_string()).map_err(|e| TestCaseError::fail(e.msg))?;
            prop_assert_eq!(again, args);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Results and their conversion
// ---------------------------------------------------------------------------------------

fn cidr() -> impl Strategy<Value = (IpAddr, String)> {
    prop_oneof![
        (any::<u32>(), 0u8..=32)
            .prop_map(|(a, p)| (IpAddr::V4(Ipv4Addr::from(a)), format!("{}/{p}", Ipv4Addr::from(a)))),
        (any::<u128>(), 0u8..=128)
            .prop_map(|(a, p)| (IpAddr::V6(Ipv6Addr::from(a)), format!("{}/{p}", Ipv6Addr::from(a)))),
    ]
}

fn opt_str(re: &'static str) -> impl Strategy<Value = Option<String>> {
    prop::option::of(re)
}

/// A 1.1.0 result using every field.
fn result_11() -> impl Strategy<Value = CniResult> {
    let iface = (
        "[a-z0-9]{1,10}",
        opt_str("([0-9a-f]{2}:){5}[0-9a-f]{2}"),
        prop::option::of(1u32..9000),
        opt_str("/var/run/netns/[a-z0-9]{1,8}"),
        opt_str("/s/[a-z]{1,5}"),
        opt_str("0000:0[0-9]:00.[0-7]"),
    )
        .prop_map(|(name, mac, mtu, sandbox, socket_path, pci_id)| Interface {
            name,
            mac,
            mtu,
            sandbox,
            socket_path,
            pci_id,
        });
    let route = (
        cidr(),
        prop::option::of(cidr()),
        prop::option::of(1u32..9000),
        prop::option::of(1u32..9000),
        prop::option::of(0u32..100),
        prop::option::of(0u32..255),
        prop::option::of(0u32..255),
    )
        .prop_map(|((_, dst), gw, mtu, advmss, priority, table, scope)| Route {
            dst,
            gw: gw.map(|(ip, _)| ip.to_string()),
            mtu,
            advmss,
            priority,
            table,
            scope,
        });
    let dns = (
        prop::collection::vec("[0-9.]{3,15}", 0..3),
        opt_str("[a-z]{1,8}\\.local"),
        prop::collection::vec("[a-z]{1,8}", 0..3),
        prop::collection::vec("ndots:[0-9]", 0..2),
    )
        .prop_map(|(nameservers, domain, search, options)| Dns { nameservers, domain, search, options });
    (
        prop::collection::vec(iface, 0..4),
        prop::collection::vec((cidr(), prop::option::of(cidr()), any::<prop::sample::Index>(), any::<bool>()), 0..4),
        prop::collection::vec(route, 0..4),
        dns,
    )
        .prop_map(|(interfaces, ips, routes, dns)| {
            let n = interfaces.len();
            let ips = ips
                .into_iter()
                .map(|((_, address), gw, idx, with_idx)| IpConfig {
                    interface: (with_idx && n > 0).then(|| idx.index(n)),
                    address,
                    gateway: gw.map(|(ip, _)| ip.to_string()),
                })
                .collect();
            CniResult { cni_version: "1.1.0".into(), interfaces, ips, routes, dns }
        })
}

/// What a 0.3.x/0.4.0 result can say of a result.
fn project_03(r: &CniResult) -> CniResult {
    CniResult {
        cni_version: String::new(),
        interfaces: r
            .interfaces
            .iter()
            .map(|i| Interface {
                name: i.name.clone(),
                mac: i.mac.clone(),
                sandbox: i.sandbox.clone(),
                ..Default::default()
            })
            .collect(),
        ips: r.ips.clone(),
        routes: r
            .routes
            .iter()
            .map(|rt| Route { dst: rt.dst.clone(), gw: rt.gw.clone(), ..Default::default() })
            .collect(),
        dns: r.dns.clone(),
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn one_x_through_zero_three_keeps_what_zero_three_can_say(r in result_11(), via in prop::sample::select(vec!["0.3.0", "0.3.1", "0.4.0"]), back_to in prop::sample::select(vec!["1.0.0", "1.1.0"])) {
        let v = r.to_value("1.1.0").unwrap();
        let old = CniResult::convert(&v, "1.1.0", via).map_err(|e| TestCaseError::fail(e.msg))?;
        prop_assert_eq!(&old["cniVersion"], via);
        for ip in old["ips"].as_array().into_iter().flatten() {
            let want = if ip["address"].as_str().unwrap().contains(':') { "6" } else { "4" };
            prop_assert_eq!(&ip["version"], want);
        }
        let new = CniResult::convert(&old, via, back_to).map_err(|e| TestCaseError::fail(e.msg))?;
        let mut got = CniResult::from_value(&new, back_to).unwrap();
        prop_assert_eq!(&got.cni_version, back_to);
        got.cni_version.clear();
        prop_assert_eq!(got, project_03(&r));
    }

    #[test]
    fn one_zero_and_one_one_are_lossless(r in result_11()) {
        let v = r.to_value("1.1.0").unwrap();
        let there = CniResult::convert(&v, "1.1.0", "1.0.0").unwrap();
        let back = CniResult::convert(&there, "1.0.0", "1.1.0").unwrap();
        prop_assert_eq!(back, v);
    }

    /// Every pair of versions: the converted result parses back in the target version,
    /// names it, and keeps the addresses the target can hold.
    #[test]
    fn every_version_pair_parses_back(r in result_11(), from in prop::sample::select(SUPPORTED_VERSIONS.to_vec()), to in prop::sample::select(SUPPORTED_VERSIONS.to_vec())) {
        let src = CniResult::convert(&r.to_value("1.1.0").unwrap(), "1.1.0", from).map_err(|e| TestCaseError::fail(e.msg))?;
        let src_parsed = CniResult::from_value(&src, from).map_err(|e| TestCaseError::fail(e.msg))?;
        let out = CniResult::convert(&src, from, to).map_err(|e| TestCaseError::fail(e.msg))?;
        prop_assert_eq!(&out["cniVersion"], to);
        let back = CniResult::from_value(&out, to).map_err(|e| TestCaseError::fail(format!("{to}: {} in {out}", e.msg)))?;
        prop_assert_eq!(&back.cni_version, to);
        prop_assert_eq!(&back.dns, &src_parsed.dns);
        let legacy = |v: &str| v == "0.1.0" || v == "0.2.0";
        if legacy(to) {
            // the first address of each family
            let first = |r: &CniResult, v4: bool| r.ips.iter().find(|ip| ip.address.contains(':') != v4).map(|ip| ip.address.clone());
            for v4 in [true, false] {
                prop_assert_eq!(back.ips.iter().find(|ip| ip.address.contains(':') != v4).map(|ip| ip.address.clone()), first(&src_parsed, v4));
            }
        } else {
            prop_assert_eq!(back.ips.iter().map(|i| &i.address).collect::<Vec<_>>(), src_parsed.ips.iter().map(|i| &i.address).collect::<Vec<_>>());
            if !legacy(from) {
                prop_assert_eq!(back.interfaces.len(), src_parsed.interfaces.len());
            }
        }
    }

    /// Arbitrary JSON as a result never panics, in any version.
    #[test]
    fn arbitrary_results_never_panic(v in json_value(), from in prop::sample::select(SUPPORTED_VERSIONS.to_vec()), to in prop::sample::select(SUPPORTED_VERSIONS.to_vec())) {
        if let Ok(out) = CniResult::convert(&v, from, to) {
            prop_assert!(CniResult::from_value(&out, to).is_ok(), "{out}");
        }
    }
}
