//! The network selection annotation grammar.
//!
//! Pods select extra networks with `k8s.v1.cni.cncf.io/networks` and may replace the cluster-wide
//! default network with `v1.multus-cni.io/default-network`. Both annotations use the same grammar
//! (multi-net-spec v1.3 §4.1.2), in one of two forms chosen exactly as Go Multus chooses:
//!
//! * **JSON form** when the value contains any of `[`, `{` or `"`: a list of selection objects;
//! * **comma form** otherwise: `[<namespace>/]<name>[@<ifname>]` items separated by `,`.
//!
//! This module is pure: it turns annotation text into validated [`NetworkSelection`]s and checks
//! the cross-selection rules (default-route ECMP, namespace isolation). Fetching the
//! NetworkAttachmentDefinitions is someone else's job.
//!
//! # Deliberate differences from Go Multus
//!
//! Go Multus accepts several malformed annotations at parse time and fails later with a confusing
//! error (typically a NAD 404 or a libcni message), or in two cases panics. We reject them up front
//! with an error that names the offending item and its 1-based position:
//!
//! 1. Empty comma items (`a,,b`, a trailing comma, `@eth1`, `ns/`) are errors; Go turns them into a
//!    selection with an empty name that fails at NAD lookup.
//! 2. Dangling separators (`/net1`, `net1@`) are errors; Go silently reads them as "pod namespace"
//!    and "automatic interface name". They are far more likely to be a templating slip than intent.
//! 3. Interface names are validated like libcni and the kernel (`validate_ifname`) in *both*
//!    forms: Go's comma form only checks length, ASCII whitespace and `/` (a `:` fails later in
//!    libcni) and its JSON form checks nothing. We also reject NUL, where the kernel would
//!    silently truncate the name.
//! 4. Namespace and name must be DNS-1123 labels (at most 63 bytes) in *both* forms; Go has no
//!    length limit in the comma form and no check at all in the JSON form.
//! 5. JSON `name` may be `ns/name` (Go Multus issue #705, where it fails as a NAD 404); a
//!    conflicting `namespace` key is an error. JSON `name` is required and must be non-empty.
//! 6. JSON elements that are not objects are errors (Go dereferences `null` elements and panics).
//! 7. `portMappings` (ports 1..=65535, protocol tcp/udp/sctp, `hostIP` an IP) and `bandwidth`
//!    (non-negative integer rates/bursts) are validated, as multi-net-spec v1.3 asks; Go passes
//!    anything of the right JSON type through.
//! 8. An empty string in `default-route` is an error; Go decodes it as a nil IP and counts it as an
//!    IPv6 gateway.
//! 9. A whitespace-only `networks` annotation selects nothing; Go makes one empty-named selection.
//! 10. A default-network annotation selecting zero networks (`[]`) is an error; Go indexes an empty
//!     list and panics.
//! 11. JSON keys are matched like Go's `encoding/json` (exact first, then ASCII case-insensitive),
//!     but when several case variants of a key exist without the exact spelling we report them
//!     instead of silently letting the last one win; Go's Unicode folds (Kelvin sign, long s) are
//!     not applied.
//! 12. Error messages are our own (structured, naming item and position), except that the ECMP and
//!     namespace-isolation errors keep Go's wording as a prefix and add the networks involved.
//!
//! Kept as in Go on purpose: `infiniband-guid` accepts every `net.ParseMAC` form (6, 8 or 20
//! octets) although the spec wants an 8-byte GUID, so that nothing Go accepts is refused here (the
//! plugin consuming `infinibandGUID` can be stricter); `ips` may hold bare IPs or CIDRs, and CIDR
//! prefixes may have leading zeros (`net.ParseCIDR`); IPv4-mapped `default-route` gateways count as
//! IPv4 (`To4()`); empty optional strings (`"mac": ""`) mean "not requested"; `null` means
//! "absent"; unknown keys (including legacy `ipRequest`/`macRequest`) are ignored; a later
//! duplicate of the same key wins; the same network may be selected twice.

use std::fmt;
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cni::env::check_ifname;
pub use crate::cni::env::{IfnameProblem, InvalidIfname};

/// Annotation selecting additional networks for a pod.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// Annotation replacing the cluster default network for a pod.
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";

/// `IFNAMSIZ - 1`: the kernel's limit on interface name length, in bytes.
/// RFC 1123 label length limit (Kubernetes namespaces and NAD names).
const MAX_LABEL_BYTES: usize = 63;

/// One requested attachment, as written by the user.
///
/// The serde attributes give the multi-net-spec / Multus JSON keys, so the derived impls round-trip
/// a parsed selection (e.g. through a cache). They do *not* validate: user input must go through
/// [`parse_networks`] or [`parse_default_network`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkSelection {
    /// NAD name.
    pub name: String,
    /// NAD namespace; after parsing never empty (filled from the default namespace).
    pub namespace: String,
    /// Requested interface name, from `@ifname`, JSON `interface` or legacy `interfaceRequest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Requested IP addresses or CIDRs, validated but kept as written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(rename = "infiniband-guid", skip_serializing_if = "Option::is_none")]
    pub infiniband_guid: Option<String>,
    /// The `portMappings` array as written (validated).
    #[serde(rename = "portMappings", skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Value>,
    /// The `bandwidth` object as written (validated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Value>,
    #[serde(rename = "cni-args", skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<Map<String, Value>>,
    /// Default-route gateways; `Some(vec![])` is meaningful (it removes default routes elsewhere).
    #[serde(rename = "default-route", skip_serializing_if = "Option::is_none")]
    pub default_route: Option<Vec<IpAddr>>,
    #[serde(rename = "deviceID", skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// Why an annotation or a set of selections was rejected. Every message names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// One item (comma form) or element (JSON form) is invalid.
    #[error("network selection {at}: {problem}")]
    Invalid { at: Position, problem: Problem },
    /// The JSON form is not valid JSON.
    #[error("network selection annotation is not valid JSON: {message}")]
    Json { message: String },
    /// The JSON form is valid JSON but not a list.
    #[error("network selection annotation must be a JSON list of objects, not {found}")]
    NotAList { found: &'static str },
    #[error("default network annotation {DEFAULT_NETWORK_ANNOTATION:?} is present but empty")]
    EmptyDefaultNetwork,
    #[error("default network annotation must select exactly one network, but selects {count}: {value:?}")]
    DefaultNetworkCount { count: usize, value: String },
    /// More than one default-route gateway of one address family over all selections.
    #[error(
        "multus does not support ECMP for default-route: {} {family} gateways requested ({})",
        .requests.len(), list(.requests)
    )]
    Ecmp { family: &'static str, requests: Vec<GatewayRequest> },
    #[error(
        "namespace isolation enabled, annotation violates permission, pod is in namespace \
         {pod_namespace} but refers to target namespace {target_namespace} (network {network:?})"
    )]
    NamespaceIsolation { pod_namespace: String, target_namespace: String, network: String },
    #[error(transparent)]
    InterfaceName(#[from] InvalidIfname),
}

/// Where an invalid selection is: its 1-based position and, when known, its text or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub index: usize,
    pub item: Option<String>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.index)?;
        match &self.item {
            Some(item) => write!(f, " ({item:?})"),
            None => Ok(()),
        }
    }
}

/// One default-route gateway and the `namespace/name` of the selection requesting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRequest {
    pub network: String,
    pub gateway: IpAddr,
}

impl fmt::Display for GatewayRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} by {}", self.gateway, self.network)
    }
}

fn list(requests: &[GatewayRequest]) -> String {
    let parts: Vec<String> = requests.iter().map(ToString::to_string).collect();
    parts.join(", ")
}

/// What is wrong with one selection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("empty entry (stray comma?)")]
    EmptyEntry,
    #[error("more than one '{0}'")]
    RepeatedSeparator(char),
    #[error("empty namespace before '/'")]
    EmptyNamespace,
    #[error("empty network name")]
    EmptyName,
    #[error("empty interface name after '@'")]
    EmptyInterface,
    #[error(
        "{what} {value:?} is not a valid DNS-1123 label (lower case alphanumerics and '-', \
         starting and ending with an alphanumeric, at most 63 characters)"
    )]
    NotDnsLabel { what: &'static str, value: String },
    #[error(transparent)]
    Interface(InvalidIfname),
    #[error("must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    #[error("\"name\" is required")]
    MissingName,
    /// A known key has the wrong JSON type; `message` is serde's.
    #[error("key {key:?}: {message}")]
    WrongType { key: &'static str, message: String },
    #[error("key {key:?} is given several times with different case: {variants:?}")]
    AmbiguousKey { key: &'static str, variants: Vec<String> },
    #[error("name {name:?} names namespace {in_name:?} but \"namespace\" is {namespace:?}")]
    NamespaceConflict { name: String, in_name: String, namespace: String },
    #[error("invalid IP address {0:?}")]
    InvalidIp(String),
    #[error("invalid CIDR {value:?}: {reason}")]
    InvalidCidr { value: String, reason: String },
    #[error("invalid MAC address {0:?}")]
    InvalidMac(String),
    #[error("invalid infiniband GUID {0:?}")]
    InvalidGuid(String),
    #[error("portMappings[{index}]: {reason}")]
    InvalidPortMapping { index: usize, reason: String },
    #[error("bandwidth: {0}")]
    InvalidBandwidth(String),
    #[error("default-route: invalid gateway IP address {0:?}")]
    InvalidGateway(String),
}

/// Parse the `k8s.v1.cni.cncf.io/networks` value.
///
/// An empty or whitespace-only value selects nothing. Selections without a namespace get
/// `default_namespace` (the pod's namespace, never empty in practice), so every returned
/// selection has a namespace.
pub fn parse_networks(value: &str, default_namespace: &str) -> Result<Vec<NetworkSelection>, SelectionError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut selections = if is_json_form(value) { parse_json_list(value)? } else { parse_comma_list(value)? };
    for selection in &mut selections {
        if selection.namespace.is_empty() {
            selection.namespace = default_namespace.to_owned();
        }
    }
    Ok(selections)
}

/// Parse `v1.multus-cni.io/default-network`: the same grammar, exactly one selection, namespace
/// defaulting to Multus' own namespace. The caller only calls this when the annotation is present,
/// so an empty value is an error (as in Go).
pub fn parse_default_network(value: &str, multus_namespace: &str) -> Result<NetworkSelection, SelectionError> {
    if value.trim().is_empty() {
        return Err(SelectionError::EmptyDefaultNetwork);
    }
    let selections = parse_networks(value, multus_namespace)?;
    match <[NetworkSelection; 1]>::try_from(selections) {
        Ok([selection]) => Ok(selection),
        Err(selections) => {
            Err(SelectionError::DefaultNetworkCount { count: selections.len(), value: value.to_owned() })
        }
    }
}

/// Check `default-route` requests over all selections: at most one IPv4 and one IPv6 gateway in
/// total, as Go's `CheckGatewayConfig` (which also counts a gateway listed twice as two).
/// IPv4-mapped IPv6 addresses count as IPv4, like Go's `To4()`.
pub fn check_default_routes(selections: &[NetworkSelection]) -> Result<(), SelectionError> {
    let (v4, v6): (Vec<GatewayRequest>, Vec<GatewayRequest>) = selections
        .iter()
        .flat_map(|selection| {
            let network = qualified_name(selection);
            selection
                .default_route
                .iter()
                .flatten()
                .map(move |gateway| GatewayRequest { network: network.clone(), gateway: *gateway })
        })
        .partition(|request| request.gateway.to_canonical().is_ipv4());
    for (family, requests) in [("IPv4", v4), ("IPv6", v6)] {
        if requests.len() > 1 {
            return Err(SelectionError::Ecmp { family, requests });
        }
    }
    Ok(())
}

/// Namespace isolation (Go `GetNetworkDelegates`), to be called only when `namespaceIsolation` is
/// on and only for the `networks` annotation: a selection in another namespace than the pod's must
/// target one of `global_namespaces`.
pub fn check_namespace_isolation(
    sel: &NetworkSelection,
    pod_namespace: &str,
    global_namespaces: &[String],
) -> Result<(), SelectionError> {
    if sel.namespace == pod_namespace || global_namespaces.contains(&sel.namespace) {
        return Ok(());
    }
    Err(SelectionError::NamespaceIsolation {
        pod_namespace: pod_namespace.to_owned(),
        target_namespace: sel.namespace.clone(),
        network: qualified_name(sel),
    })
}

/// Validate an interface name as libcni's `ValidateInterfaceName` and the kernel's
/// `dev_valid_name` do (multus-cni#1243: not as a DNS label): 1..=15 bytes, not `.` or `..`, no
/// `/`, `:` or Unicode whitespace. NUL is rejected too: the kernel would truncate the name there.
pub fn validate_ifname(name: &str) -> Result<(), SelectionError> {
    check_ifname(name).map_err(SelectionError::InterfaceName)
}

/// `namespace/name`, the delegate name Multus uses in messages.
fn qualified_name(selection: &NetworkSelection) -> String {
    format!("{}/{}", selection.namespace, selection.name)
}

/// Go Multus' form detection (`strings.ContainsAny(value, "[{\"")`).
fn is_json_form(value: &str) -> bool {
    value.contains(['[', '{', '"'])
}

// ----- Comma form -------------------------------------------------------------------------------

fn parse_comma_list(value: &str) -> Result<Vec<NetworkSelection>, SelectionError> {
    value
        .split(',')
        .enumerate()
        .map(|(index, raw)| {
            let item = raw.trim();
            parse_comma_item(item).map_err(|problem| SelectionError::Invalid {
                at: Position { index: index + 1, item: Some(item.to_owned()) },
                problem,
            })
        })
        .collect()
}

/// `[<namespace>/]<name>[@<ifname>]`, each part trimmed. Like Go, the item is split on `/` first
/// and the remainder on `@`, so an `@` before the `/` ends up in (and fails) the namespace.
fn parse_comma_item(item: &str) -> Result<NetworkSelection, Problem> {
    if item.is_empty() {
        return Err(Problem::EmptyEntry);
    }
    let (namespace, rest) = match item.split_once('/') {
        Some((_, rest)) if rest.contains('/') => return Err(Problem::RepeatedSeparator('/')),
        Some((namespace, rest)) => (Some(namespace.trim()), rest),
        None => (None, item),
    };
    let (name, interface) = match rest.split_once('@') {
        Some((_, ifname)) if ifname.contains('@') => return Err(Problem::RepeatedSeparator('@')),
        Some((name, ifname)) => (name.trim(), Some(ifname.trim())),
        None => (rest.trim(), None),
    };
    if let Some(namespace) = namespace {
        if namespace.is_empty() {
            return Err(Problem::EmptyNamespace);
        }
        check_label("namespace", namespace)?;
    }
    if name.is_empty() {
        return Err(Problem::EmptyName);
    }
    check_label("network name", name)?;
    if let Some(ifname) = interface {
        if ifname.is_empty() {
            return Err(Problem::EmptyInterface);
        }
        check_ifname(ifname).map_err(Problem::Interface)?;
    }
    Ok(NetworkSelection {
        name: name.to_owned(),
        namespace: namespace.unwrap_or_default().to_owned(),
        interface: interface.map(str::to_owned),
        ..NetworkSelection::default()
    })
}

/// DNS-1123 label: `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, at most 63 bytes.
pub fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_LABEL_BYTES && *first != b'-' && *last != b'-' && bytes.iter().all(allowed)
        }
        _ => false,
    }
}

fn check_label(what: &'static str, value: &str) -> Result<(), Problem> {
    if is_dns_label(value) { Ok(()) } else { Err(Problem::NotDnsLabel { what, value: value.to_owned() }) }
}

// ----- JSON form --------------------------------------------------------------------------------

fn parse_json_list(value: &str) -> Result<Vec<NetworkSelection>, SelectionError> {
    let parsed: Value = serde_json::from_str(value).map_err(|err| SelectionError::Json { message: err.to_string() })?;
    let Value::Array(elements) = parsed else {
        return Err(SelectionError::NotAList { found: json_kind(&parsed) });
    };
    elements
        .iter()
        .enumerate()
        .map(|(index, element)| {
            parse_json_element(element).map_err(|problem| SelectionError::Invalid {
                at: Position { index: index + 1, item: element_label(element) },
                problem,
            })
        })
        .collect()
}

/// The element's `name`, to say which element an error is about.
fn element_label(element: &Value) -> Option<String> {
    let fields = Fields(element.as_object()?);
    fields.get::<String>("name").ok().flatten()
}

fn parse_json_element(element: &Value) -> Result<NetworkSelection, Problem> {
    let Value::Object(object) = element else {
        return Err(Problem::NotAnObject(json_kind(element)));
    };
    let fields = Fields(object);
    // Checked in this order (the first problem is the one reported), as Go does.
    let (namespace, name) = network_name(&fields)?;
    let interface = interface(&fields)?;
    let (ips, mac, infiniband_guid) = addresses(&fields)?;
    let (port_mappings, bandwidth) = capabilities(&fields)?;
    let default_route = default_route(&fields)?;
    Ok(NetworkSelection {
        name,
        namespace: namespace.unwrap_or_default(),
        interface,
        ips,
        mac,
        infiniband_guid,
        port_mappings: port_mappings.map(Value::Array),
        bandwidth: bandwidth.map(Value::Object),
        cni_args: fields.get("cni-args")?,
        default_route,
        device_id: fields.string("deviceID")?,
    })
}

fn network_name(fields: &Fields<'_>) -> Result<(Option<String>, String), Problem> {
    let written_name = fields.string("name")?.ok_or(Problem::MissingName)?;
    let (namespace, name) = split_qualified_name(&written_name, fields.string("namespace")?)?;
    check_label("network name", &name)?;
    if let Some(namespace) = &namespace {
        check_label("namespace", namespace)?;
    }
    Ok((namespace, name))
}

/// `interface` wins; the pre-3.2 `interfaceRequest` is still read (and type-checked) as Go does.
fn interface(fields: &Fields<'_>) -> Result<Option<String>, Problem> {
    let interface = fields.string("interface")?;
    let legacy_interface = fields.string("interfaceRequest")?;
    let interface = interface.or(legacy_interface);
    if let Some(ifname) = &interface {
        check_ifname(ifname).map_err(Problem::Interface)?;
    }
    Ok(interface)
}

type Addresses = (Vec<String>, Option<String>, Option<String>);

/// `ips`, `mac` and `infiniband-guid`.
fn addresses(fields: &Fields<'_>) -> Result<Addresses, Problem> {
    let ips: Vec<String> = fields.get("ips")?.unwrap_or_default();
    for ip in &ips {
        check_ip_or_cidr(ip)?;
    }
    let mac = fields.string("mac")?;
    if let Some(mac) = &mac {
        hardware_addr_len(mac).ok_or_else(|| Problem::InvalidMac(mac.clone()))?;
    }
    // The spec wants an 8-byte GUID, but Go validates with net.ParseMAC (6, 8 or 20 octets) and
    // a drop-in must not refuse what Go accepted; see the module documentation.
    let infiniband_guid = fields.string("infiniband-guid")?;
    if let Some(guid) = &infiniband_guid {
        hardware_addr_len(guid).ok_or_else(|| Problem::InvalidGuid(guid.clone()))?;
    }
    Ok((ips, mac, infiniband_guid))
}

type Capabilities = (Option<Vec<Value>>, Option<Map<String, Value>>);

/// `portMappings` and `bandwidth`.
fn capabilities(fields: &Fields<'_>) -> Result<Capabilities, Problem> {
    let port_mappings: Option<Vec<Value>> = fields.get("portMappings")?;
    if let Some(entries) = &port_mappings {
        for (index, entry) in entries.iter().enumerate() {
            check_port_mapping(entry).map_err(|reason| Problem::InvalidPortMapping { index, reason })?;
        }
    }
    let bandwidth: Option<Map<String, Value>> = fields.get("bandwidth")?;
    if let Some(bandwidth) = &bandwidth {
        check_bandwidth(bandwidth).map_err(Problem::InvalidBandwidth)?;
    }
    Ok((port_mappings, bandwidth))
}

/// Go decodes these straight into []net.IP, so an invalid address fails the whole annotation.
fn default_route(fields: &Fields<'_>) -> Result<Option<Vec<IpAddr>>, Problem> {
    match fields.get::<Vec<String>>("default-route")? {
        None => Ok(None),
        Some(gateways) => {
            Ok(Some(gateways.iter().map(|gateway| parse_gateway(gateway)).collect::<Result<Vec<_>, _>>()?))
        }
    }
}

/// Accept `ns/name` in JSON `name` (Go Multus #705), unless `namespace` says otherwise.
fn split_qualified_name(written: &str, namespace: Option<String>) -> Result<(Option<String>, String), Problem> {
    let Some((in_name, name)) = written.split_once('/') else {
        return Ok((namespace, written.to_owned()));
    };
    if name.contains('/') {
        return Err(Problem::RepeatedSeparator('/'));
    }
    if in_name.is_empty() {
        return Err(Problem::EmptyNamespace);
    }
    if name.is_empty() {
        return Err(Problem::EmptyName);
    }
    if let Some(namespace) = namespace
        && namespace != in_name
    {
        return Err(Problem::NamespaceConflict { name: written.to_owned(), in_name: in_name.to_owned(), namespace });
    }
    Ok((Some(in_name.to_owned()), name.to_owned()))
}

/// Keys of one JSON element, looked up the way Go's `encoding/json` matches struct fields.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// The value of `key`: the exact spelling if present, else its only ASCII case variant.
    /// `null` is treated as absent, as Go leaves the field at its zero value.
    fn lookup(&self, key: &'static str) -> Result<Option<&Value>, Problem> {
        let found = match self.0.get(key) {
            Some(value) => Some(value),
            None => {
                let mut variants = self.0.iter().filter(|(k, _)| k.eq_ignore_ascii_case(key));
                match (variants.next(), variants.next()) {
                    (None, _) => None,
                    (Some((_, value)), None) => Some(value),
                    (Some(first), Some(second)) => {
                        let variants = [first, second].into_iter().chain(variants);
                        let variants = variants.map(|(k, _)| k.clone()).collect();
                        return Err(Problem::AmbiguousKey { key, variants });
                    }
                }
            }
        };
        Ok(found.filter(|value| !value.is_null()))
    }

    /// The value of `key` deserialized as `T`, with serde's message on a type mismatch.
    fn get<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, Problem> {
        self.lookup(key)?
            .map(|value| T::deserialize(value).map_err(|err| Problem::WrongType { key, message: err.to_string() }))
            .transpose()
    }

    /// A string field; empty means "not requested", as Go tests `!= ""`.
    fn string(&self, key: &'static str) -> Result<Option<String>, Problem> {
        Ok(self.get::<String>(key)?.filter(|s| !s.is_empty()))
    }
}

/// How a JSON value is named in messages ("a string", "an object", …).
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// An IP address, or a CIDR when the value contains `/` (Go: `net.ParseIP` / `net.ParseCIDR`).
fn check_ip_or_cidr(value: &str) -> Result<(), Problem> {
    let Some((address, prefix)) = value.split_once('/') else {
        return match value.parse::<IpAddr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(Problem::InvalidIp(value.to_owned())),
        };
    };
    let invalid = |reason: String| Problem::InvalidCidr { value: value.to_owned(), reason };
    let address: IpAddr = address.parse().map_err(|_| invalid(format!("invalid address {address:?}")))?;
    let max_prefix = if address.is_ipv4() { 32 } else { 128 };
    // Digits only: `str::parse::<u32>` would also take a leading '+', which Go refuses.
    let length = Some(prefix)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or_else(|| invalid(format!("invalid prefix length {prefix:?}")))?;
    if length > max_prefix {
        return Err(invalid(format!("prefix length {length} is out of range 0..={max_prefix}")));
    }
    Ok(())
}

/// Go's `net.ParseMAC`: 6, 8 or 20 octets as `xx:xx:…`, `xx-xx-…` or `xxxx.xxxx.…`, one
/// separator throughout. Returns the number of octets.
fn hardware_addr_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let (digits, separator) = match bytes {
        _ if bytes.len() < 14 => return None,
        [_, _, separator @ (b':' | b'-'), ..] => (2, *separator),
        [_, _, _, _, b'.', ..] => (4, b'.'),
        _ => return None,
    };
    // Every group is `digits` hex digits plus a separator, except the last one.
    let group = digits + 1;
    if !(bytes.len() + 1).is_multiple_of(group) {
        return None;
    }
    let octets = (bytes.len() + 1) / group * digits / 2;
    let groups_valid = bytes.chunks(group).all(|chunk| {
        let (hex, rest) = chunk.split_at(digits.min(chunk.len()));
        hex.len() == digits && hex.iter().all(u8::is_ascii_hexdigit) && (rest.is_empty() || rest == [separator])
    });
    (matches!(octets, 6 | 8 | 20) && groups_valid).then_some(octets)
}

/// One `portMappings` entry: `hostPort` and `containerPort` in 1..=65535, optional `protocol`
/// tcp/udp/sctp in any case, optional `hostIP` an IP address (multi-net-spec v1.3).
fn check_port_mapping(entry: &Value) -> Result<(), String> {
    let Value::Object(object) = entry else {
        return Err(format!("must be an object, not {}", json_kind(entry)));
    };
    let fields = Fields(object);
    for key in ["hostPort", "containerPort"] {
        let port =
            fields.lookup(key).map_err(|problem| problem.to_string())?.ok_or_else(|| format!("{key:?} is required"))?;
        if !port.as_u64().is_some_and(|p| (1..=65535).contains(&p)) {
            return Err(format!("{key:?} must be a port number in 1..=65535, not {port}"));
        }
    }
    let protocol = fields.string("protocol").map_err(|p| p.to_string())?;
    if let Some(protocol) = protocol {
        let known = ["tcp", "udp", "sctp"];
        if !known.iter().any(|k| protocol.eq_ignore_ascii_case(k)) {
            return Err(format!("protocol {protocol:?} is not one of tcp, udp, sctp"));
        }
    }
    let host_ip = fields.string("hostIP").map_err(|p| p.to_string())?;
    if let Some(host_ip) = host_ip
        && host_ip.parse::<IpAddr>().is_err()
    {
        return Err(format!("hostIP {host_ip:?} is not an IP address"));
    }
    Ok(())
}

/// `bandwidth`: each rate and burst, when present, a non-negative integer.
fn check_bandwidth(bandwidth: &Map<String, Value>) -> Result<(), String> {
    let fields = Fields(bandwidth);
    for key in ["ingressRate", "ingressBurst", "egressRate", "egressBurst"] {
        let value = fields.lookup(key).map_err(|problem| problem.to_string())?;
        if let Some(value) = value
            && value.as_u64().is_none()
        {
            return Err(format!("{key:?} must be a non-negative integer, not {value}"));
        }
    }
    Ok(())
}

/// A `default-route` gateway. IPv4-mapped IPv6 addresses become IPv4, matching how Go's `To4()`
/// treats them everywhere gateways are used.
fn parse_gateway(text: &str) -> Result<IpAddr, Problem> {
    text.parse::<IpAddr>().map(|ip| ip.to_canonical()).map_err(|_| Problem::InvalidGateway(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::env::MAX_IFNAME_BYTES;
    use serde_json::json;

    const POD_NS: &str = "test";

    fn parse(value: &str) -> Vec<NetworkSelection> {
        parse_networks(value, POD_NS).unwrap_or_else(|err| panic!("{value:?}: {err}"))
    }

    fn parse_one(value: &str) -> NetworkSelection {
        let mut selections = parse(value);
        assert_eq!(selections.len(), 1, "{value:?}");
        selections.remove(0)
    }

    fn error(value: &str) -> SelectionError {
        match parse_networks(value, POD_NS) {
            Ok(selections) => panic!("{value:?} parsed as {selections:?}"),
            Err(err) => err,
        }
    }

    fn problem(value: &str) -> Problem {
        match error(value) {
            SelectionError::Invalid { problem, .. } => problem,
            other => panic!("{value:?}: unexpected error {other:?}"),
        }
    }

    fn selection(namespace: &str, name: &str, interface: Option<&str>) -> NetworkSelection {
        NetworkSelection {
            name: name.into(),
            namespace: namespace.into(),
            interface: interface.map(Into::into),
            ..NetworkSelection::default()
        }
    }

    fn with_routes(name: &str, gateways: &[&str]) -> NetworkSelection {
        NetworkSelection {
            default_route: Some(gateways.iter().map(|g| g.parse().unwrap()).collect()),
            ..selection(POD_NS, name, None)
        }
    }

    // ----- seed examples and reference §6 -----

    #[test]
    fn seed_single_name() {
        assert_eq!(parse("privatezone-macvlan-conf"), [selection(POD_NS, "privatezone-macvlan-conf", None)]);
    }

    #[test]
    fn seed_comma_list_with_space() {
        assert_eq!(
            parse("ipvlan-conf-1, ipvlan-conf-2"),
            [selection(POD_NS, "ipvlan-conf-1", None), selection(POD_NS, "ipvlan-conf-2", None)]
        );
    }

    #[test]
    fn seed_json_with_ips_ignores_gateway_key() {
        let sel = parse_one(r#"[{"name":"macvlan-conf","ips":["10.1.1.101/24"],"gateway":["10.1.1.1"]}]"#);
        assert_eq!(
            sel,
            NetworkSelection { ips: vec!["10.1.1.101/24".into()], ..selection(POD_NS, "macvlan-conf", None) }
        );
    }

    #[test]
    fn two_names_default_to_pod_namespace() {
        // §6 item 9
        assert_eq!(parse("net1,net2"), [selection(POD_NS, "net1", None), selection(POD_NS, "net2", None)]);
    }

    #[test]
    fn namespace_and_interface_with_underscore() {
        // §6 item 10
        assert_eq!(parse_one("default/net1@my_interface"), selection("default", "net1", Some("my_interface")));
    }

    #[test]
    fn spaces_around_every_part_are_trimmed() {
        assert_eq!(parse_one(" ns / net1 @ eth9 "), selection("ns", "net1", Some("eth9")));
        assert_eq!(parse("\tns/a@x ,  b  "), [selection("ns", "a", Some("x")), selection(POD_NS, "b", None)]);
    }

    #[test]
    fn reference_invalid_comma_items() {
        // §6 item 11
        assert_eq!(problem("a/b/c"), Problem::RepeatedSeparator('/'));
        assert_eq!(problem("a@b@c"), Problem::RepeatedSeparator('@'));
        assert_eq!(
            problem("root@someIP/root@someOtherIP"),
            Problem::NotDnsLabel { what: "namespace", value: "root@someIP".into() }
        );
        assert!(matches!(
            problem("default/net1@myIfc Name"),
            Problem::Interface(InvalidIfname { reason: IfnameProblem::Whitespace, .. })
        ));
        assert!(matches!(
            problem("default/net1@very_long_interface_name"),
            Problem::Interface(InvalidIfname { reason: IfnameProblem::TooLong(24), .. })
        ));
    }

    #[test]
    fn garbage_json_is_a_json_error() {
        // §6 item 12
        let err = error("[adsfasdfasdfasf]");
        assert!(matches!(err, SelectionError::Json { .. }), "{err:?}");
        assert!(err.to_string().contains("expected value"), "{err}");
    }

    #[test]
    fn json_three_elements_legacy_request_keys_ignored() {
        // §6 item 13
        let selections = parse(
            r#"[{"name":"net1"},
                {"name":"net2","ipRequest":"1.2.3.4","macRequest":"aa:bb:cc:dd:ee:ff"},
                {"name":"net3","namespace":"other-ns"}]"#,
        );
        assert_eq!(
            selections,
            [selection(POD_NS, "net1", None), selection(POD_NS, "net2", None), selection("other-ns", "net3", None)]
        );
    }

    #[test]
    fn json_bad_mac_cidr_and_type() {
        // §6 item 14
        assert_eq!(problem(r#"[{"name":"n","mac":"zz"}]"#), Problem::InvalidMac("zz".into()));
        let err = error(r#"[{"name":"n","ips":["10.0.0.1/33"]}]"#);
        assert_eq!(
            err.to_string(),
            "network selection #1 (\"n\"): invalid CIDR \"10.0.0.1/33\": prefix length 33 is out of range 0..=32"
        );
        let err = error(r#"[{"name":"n"},{"name":"m","ips":"1.2.3.4"}]"#);
        assert_eq!(
            err.to_string(),
            "network selection #2 (\"m\"): key \"ips\": invalid type: string \"1.2.3.4\", expected a sequence"
        );
    }

    #[test]
    fn default_route_single_and_ecmp() {
        // §6 item 15
        let sel = parse_one(r#"[{"name":"n","default-route":["192.168.2.2"]}]"#);
        assert_eq!(sel.default_route, Some(vec!["192.168.2.2".parse().unwrap()]));
        assert_eq!(check_default_routes(&[sel]), Ok(()));

        let selections =
            parse(r#"[{"name":"a","default-route":["10.0.0.1"]},{"name":"b","default-route":["10.0.0.2"]}]"#);
        let err = check_default_routes(&selections).unwrap_err();
        assert_eq!(
            err.to_string(),
            "multus does not support ECMP for default-route: 2 IPv4 gateways requested \
             (10.0.0.1 by test/a, 10.0.0.2 by test/b)"
        );
    }

    #[test]
    fn default_route_one_per_family_is_fine() {
        let selections = [with_routes("a", &["10.0.0.1"]), with_routes("b", &["fd00::1"])];
        assert_eq!(check_default_routes(&selections), Ok(()));
        let both_on_one = [with_routes("a", &["10.0.0.1", "fd00::1"]), with_routes("b", &[])];
        assert_eq!(check_default_routes(&both_on_one), Ok(()));
    }

    #[test]
    fn default_route_ecmp_cases() {
        let v6 = [with_routes("a", &["fd00::1"]), with_routes("b", &["fd00::2"])];
        assert!(matches!(check_default_routes(&v6), Err(SelectionError::Ecmp { family: "IPv6", .. })));
        // Go counts a gateway listed twice as two; so do we.
        let twice = [with_routes("a", &["10.0.0.1", "10.0.0.1"])];
        assert!(check_default_routes(&twice).is_err());
        // IPv4-mapped addresses count as IPv4, like Go's To4().
        let mapped = [with_routes("a", &["10.0.0.1"]), with_routes("b", &["::ffff:10.0.0.2"])];
        assert!(matches!(check_default_routes(&mapped), Err(SelectionError::Ecmp { family: "IPv4", .. })));
    }

    #[test]
    fn empty_default_route_is_kept() {
        let sel = parse_one(r#"[{"name":"n","default-route":[]}]"#);
        assert_eq!(sel.default_route, Some(vec![]));
        assert_eq!(parse_one(r#"[{"name":"n","default-route":null}]"#).default_route, None);
    }

    #[test]
    fn default_route_entries_must_be_ips() {
        assert_eq!(
            problem(r#"[{"name":"n","default-route":["10.0.0.300"]}]"#),
            Problem::InvalidGateway("10.0.0.300".into())
        );
        // Go decodes "" as a nil IP; we refuse it.
        assert_eq!(problem(r#"[{"name":"n","default-route":[""]}]"#), Problem::InvalidGateway(String::new()));
        assert!(matches!(
            problem(r#"[{"name":"n","default-route":[1]}]"#),
            Problem::WrongType { key: "default-route", .. }
        ));
        let sel = parse_one(r#"[{"name":"n","default-route":["::ffff:10.1.2.3"]}]"#);
        assert_eq!(sel.default_route, Some(vec!["10.1.2.3".parse().unwrap()]));
    }

    #[test]
    fn namespace_isolation() {
        // §6 items 19 and 20
        let sel = parse_one("kube-system/net1");
        let err = check_namespace_isolation(&sel, "test", &["default".into()]).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "namespace isolation enabled, annotation violates permission, pod is in \
                 namespace test but refers to target namespace kube-system"
            ),
            "{err}"
        );
        let globals = ["kube-system".to_owned(), "donkey-kong".to_owned()];
        assert_eq!(check_namespace_isolation(&sel, "test", &globals), Ok(()));
        let own = parse_one("net1");
        assert_eq!(check_namespace_isolation(&own, POD_NS, &[]), Ok(()));
    }

    // ----- default network -----

    #[test]
    fn default_network_uses_multus_namespace() {
        assert_eq!(parse_default_network("net1", "kube-system"), Ok(selection("kube-system", "net1", None)));
        assert_eq!(parse_default_network("other/net1@foo", "kube-system"), Ok(selection("other", "net1", Some("foo"))));
        assert_eq!(
            parse_default_network(r#"[{"name":"net1"}]"#, "kube-system"),
            Ok(selection("kube-system", "net1", None))
        );
    }

    #[test]
    fn default_network_must_be_exactly_one() {
        assert_eq!(
            parse_default_network("a,b", "kube-system"),
            Err(SelectionError::DefaultNetworkCount { count: 2, value: "a,b".into() })
        );
        assert!(matches!(
            parse_default_network("[]", "kube-system"),
            Err(SelectionError::DefaultNetworkCount { count: 0, .. })
        ));
        assert_eq!(parse_default_network("", "kube-system"), Err(SelectionError::EmptyDefaultNetwork));
        assert_eq!(parse_default_network(" \t", "kube-system"), Err(SelectionError::EmptyDefaultNetwork));
        assert!(matches!(parse_default_network("a/b/c", "kube-system"), Err(SelectionError::Invalid { .. })));
    }

    // ----- comma form -----

    #[test]
    fn empty_or_blank_value_selects_nothing() {
        assert_eq!(parse(""), []);
        assert_eq!(parse("  \n\t"), []);
        assert_eq!(parse("[]"), []);
    }

    #[test]
    fn same_network_twice_is_two_attachments() {
        assert_eq!(parse("net1,net1"), [selection(POD_NS, "net1", None), selection(POD_NS, "net1", None)]);
    }

    #[test]
    fn empty_items_are_rejected_with_position() {
        let err = error("a,,b");
        assert_eq!(
            err,
            SelectionError::Invalid {
                at: Position { index: 2, item: Some(String::new()) },
                problem: Problem::EmptyEntry
            }
        );
        assert_eq!(err.to_string(), "network selection #2 (\"\"): empty entry (stray comma?)");
        assert!(matches!(
            error("a,"),
            SelectionError::Invalid { at: Position { index: 2, .. }, problem: Problem::EmptyEntry }
        ));
        assert_eq!(problem(","), Problem::EmptyEntry);
        assert_eq!(problem(" , a"), Problem::EmptyEntry);
    }

    #[test]
    fn dangling_separators_are_rejected() {
        assert_eq!(problem("@eth1"), Problem::EmptyName);
        assert_eq!(problem("ns/"), Problem::EmptyName);
        assert_eq!(problem("ns/@eth1"), Problem::EmptyName);
        assert_eq!(problem("/net1"), Problem::EmptyNamespace);
        assert_eq!(problem(" / net1"), Problem::EmptyNamespace);
        assert_eq!(problem("net1@"), Problem::EmptyInterface);
        assert_eq!(problem("net1@  "), Problem::EmptyInterface);
        assert_eq!(problem("/"), Problem::EmptyNamespace);
        assert_eq!(problem("@"), Problem::EmptyName);
    }

    #[test]
    fn comma_grammar_violations() {
        let not_label = |value: &str| match problem(value) {
            Problem::NotDnsLabel { .. } => {}
            other => panic!("{value:?}: {other:?}"),
        };
        not_label("Net1"); // upper case
        not_label("net.1"); // dots: a label, not a subdomain
        not_label("-net1");
        not_label("net1-");
        not_label("net_1");
        not_label("Default/net1");
        not_label("my ns/net1"); // inner whitespace survives trimming
        not_label("net 1");
        not_label("nét1");
        not_label(&"a".repeat(64));
        not_label(&format!("{}/net1", "n".repeat(64)));
        assert_eq!(parse_one(&"a".repeat(63)).name.len(), 63);
        assert_eq!(problem("a/b@c/d"), Problem::RepeatedSeparator('/'));
        assert_eq!(problem("a@b@"), Problem::RepeatedSeparator('@'));
        assert_eq!(problem("ns/a@b@c"), Problem::RepeatedSeparator('@'));
    }

    #[test]
    fn comma_interface_names_validated_like_linux() {
        let bad_ifname = |value: &str, expected: IfnameProblem| match problem(value) {
            Problem::Interface(InvalidIfname { reason, .. }) => assert_eq!(reason, expected),
            other => panic!("{value:?}: {other:?}"),
        };
        bad_ifname("net1@eth:0", IfnameProblem::Colon); // Go accepts this at parse time
        bad_ifname("net1@.", IfnameProblem::Dots);
        bad_ifname("net1@..", IfnameProblem::Dots);
        bad_ifname("net1@a\u{a0}b", IfnameProblem::Whitespace);
        bad_ifname("net1@abcdefghijklmnop", IfnameProblem::TooLong(16));
        assert_eq!(parse_one("net1@abcdefghijklmno").interface.as_deref(), Some("abcdefghijklmno"));
        assert_eq!(parse_one("net1@Eth.0_x-Y").interface.as_deref(), Some("Eth.0_x-Y"));
        let err = error("good,foo@bar baz");
        assert_eq!(
            err.to_string(),
            "network selection #2 (\"foo@bar baz\"): invalid interface name \"bar baz\": must not contain whitespace"
        );
        assert_eq!(error("a/b/c").to_string(), "network selection #1 (\"a/b/c\"): more than one '/'");
    }

    #[test]
    fn comma_form_detection_matches_go() {
        // Any of `[`, `{`, `"` switches to JSON, even in otherwise comma-looking text.
        assert!(matches!(error("net1\""), SelectionError::Json { .. }));
        assert!(matches!(error("net1,{"), SelectionError::Json { .. }));
        assert!(matches!(error("net1]"), SelectionError::Invalid { .. }));
    }

    // ----- JSON form -----

    #[test]
    fn json_full_element() {
        let sel = parse_one(
            r#"[{"name":"net1","namespace":"ns1","interface":"eth7","ips":["10.0.0.5","fd00::5/64"],
                "mac":"02:00:00:00:00:01","infiniband-guid":"c2:cb:21:00:00:00:00:01",
                "portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"TCP","hostIP":"10.0.0.1"}],
                "bandwidth":{"ingressRate":1000,"ingressBurst":2000,"egressRate":0},
                "cni-args":{"foo":"bar","n":1},"default-route":["10.0.0.1"],"deviceID":"0000:03:02.3",
                "unknown":{"ignored":true}}]"#,
        );
        assert_eq!(
            sel,
            NetworkSelection {
                name: "net1".into(),
                namespace: "ns1".into(),
                interface: Some("eth7".into()),
                ips: vec!["10.0.0.5".into(), "fd00::5/64".into()],
                mac: Some("02:00:00:00:00:01".into()),
                infiniband_guid: Some("c2:cb:21:00:00:00:00:01".into()),
                port_mappings: Some(json!([{"hostPort":8080,"containerPort":80,"protocol":"TCP","hostIP":"10.0.0.1"}])),
                bandwidth: Some(json!({"ingressRate":1000,"ingressBurst":2000,"egressRate":0})),
                cni_args: json!({"foo":"bar","n":1}).as_object().cloned(),
                default_route: Some(vec!["10.0.0.1".parse().unwrap()]),
                device_id: Some("0000:03:02.3".into()),
            }
        );
    }

    #[test]
    fn json_namespace_inside_name() {
        // Go Multus #705
        assert_eq!(
            parse_one(r#"[{"name":"openshift-multus/macvlan-conf"}]"#),
            selection("openshift-multus", "macvlan-conf", None)
        );
        assert_eq!(parse_one(r#"[{"name":"ns1/net1","namespace":"ns1"}]"#), selection("ns1", "net1", None));
        assert_eq!(
            error(r#"[{"name":"ns1/net1","namespace":"ns2"}]"#).to_string(),
            "network selection #1 (\"ns1/net1\"): name \"ns1/net1\" names namespace \"ns1\" but \"namespace\" is \"ns2\""
        );
        assert_eq!(problem(r#"[{"name":"a/b/c"}]"#), Problem::RepeatedSeparator('/'));
        assert_eq!(problem(r#"[{"name":"/net1"}]"#), Problem::EmptyNamespace);
        assert_eq!(problem(r#"[{"name":"ns/"}]"#), Problem::EmptyName);
    }

    #[test]
    fn json_legacy_interface_request() {
        assert_eq!(parse_one(r#"[{"name":"n","interfaceRequest":"legacy0"}]"#).interface.as_deref(), Some("legacy0"));
        assert_eq!(
            parse_one(r#"[{"name":"n","interface":"new0","interfaceRequest":"legacy0"}]"#).interface.as_deref(),
            Some("new0")
        );
        assert_eq!(
            parse_one(r#"[{"name":"n","interface":"","interfaceRequest":"legacy0"}]"#).interface.as_deref(),
            Some("legacy0")
        );
        assert!(matches!(problem(r#"[{"name":"n","interfaceRequest":"bad:name"}]"#), Problem::Interface(_)));
        assert!(matches!(
            problem(r#"[{"name":"n","interface":"ok0","interfaceRequest":7}]"#),
            Problem::WrongType { key: "interfaceRequest", .. }
        ));
    }

    #[test]
    fn json_shape_errors() {
        assert_eq!(error(r#"{"name":"net1"}"#), SelectionError::NotAList { found: "an object" });
        assert_eq!(
            error(r#"{"name":"net1"}"#).to_string(),
            "network selection annotation must be a JSON list of objects, not an object"
        );
        assert_eq!(error(r#""net1""#), SelectionError::NotAList { found: "a string" });
        assert_eq!(problem("[null]"), Problem::NotAnObject("null"));
        assert_eq!(problem(r#"["net1"]"#), Problem::NotAnObject("a string"));
        assert_eq!(
            error(r#"[{"name":"a"},3]"#).to_string(),
            "network selection #2: must be a JSON object, not a number"
        );
        assert!(matches!(error(r#"[{"name":"a"}] x"#), SelectionError::Json { .. }));
        assert!(matches!(error(r#"[{"name":"a"},]"#), SelectionError::Json { .. }));
        assert!(matches!(error(r#"[{"name":"a""#), SelectionError::Json { .. }));
    }

    #[test]
    fn json_name_rules() {
        assert_eq!(problem(r#"[{}]"#), Problem::MissingName);
        assert_eq!(problem(r#"[{"name":""}]"#), Problem::MissingName);
        assert_eq!(problem(r#"[{"name":null}]"#), Problem::MissingName);
        assert!(matches!(problem(r#"[{"name":42}]"#), Problem::WrongType { key: "name", .. }));
        assert!(matches!(problem(r#"[{"name":"Net1"}]"#), Problem::NotDnsLabel { .. }));
        assert!(matches!(problem(r#"[{"name":" net1"}]"#), Problem::NotDnsLabel { .. }));
        assert!(matches!(problem(r#"[{"name":"net1@eth1"}]"#), Problem::NotDnsLabel { .. }));
        assert!(matches!(
            problem(r#"[{"name":"n","namespace":"Bad_NS"}]"#),
            Problem::NotDnsLabel { what: "namespace", .. }
        ));
        // An empty namespace means "the default", as in Go.
        assert_eq!(parse_one(r#"[{"name":"n","namespace":""}]"#).namespace, POD_NS);
    }

    #[test]
    fn json_keys_match_case_insensitively_like_go() {
        let sel = parse_one(r#"[{"Name":"net1","IPS":["10.0.0.1"],"Interface":"eth1"}]"#);
        assert_eq!(sel.name, "net1");
        assert_eq!(sel.ips, ["10.0.0.1"]);
        assert_eq!(sel.interface.as_deref(), Some("eth1"));
        // A repeated key: the last one wins, as in Go.
        assert_eq!(parse_one(r#"[{"name":"a","name":"net1"}]"#).name, "net1");
        // The exact spelling wins over a case variant.
        assert_eq!(parse_one(r#"[{"NAME":"other","name":"net1"}]"#).name, "net1");
        assert_eq!(
            problem(r#"[{"NAME":"a","Name":"b"}]"#),
            Problem::AmbiguousKey { key: "name", variants: vec!["NAME".into(), "Name".into()] }
        );
    }

    #[test]
    fn json_ip_validation() {
        for good in
            ["10.0.0.1", "10.0.0.0/8", "fd00::1", "fd00::/128", "::ffff:1.2.3.4/96", "0.0.0.0/0", "10.0.0.1/024"]
        {
            assert_eq!(parse_one(&format!(r#"[{{"name":"n","ips":["{good}"]}}]"#)).ips, [good]);
        }
        for bad in [
            "",
            "10.0.0.256",
            "010.0.0.1",
            "fd00::/129",
            "10.0.0.1/",
            "10.0.0.1/+8",
            "10.0.0.1/8/8",
            "fe80::1%eth0",
            "x/8",
            "10.0.0.1/99999999999",
        ] {
            let found = problem(&format!(r#"[{{"name":"n","ips":["{bad}"]}}]"#));
            assert!(
                matches!(&found, Problem::InvalidIp(v) | Problem::InvalidCidr { value: v, .. } if v == bad),
                "{bad:?}: {found:?}"
            );
        }
        assert!(matches!(problem(r#"[{"name":"n","ips":[1]}]"#), Problem::WrongType { key: "ips", .. }));
    }

    #[test]
    fn json_mac_forms_follow_go_parse_mac() {
        for good in [
            "00:00:5e:00:53:01",
            "02-00-5E-10-00-00",
            "0000.5e00.5301",
            "00:00:00:00:fe:80:00:00",
            "0000.0000.fe80.0000",
            "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
        ] {
            assert_eq!(parse_one(&format!(r#"[{{"name":"n","mac":"{good}"}}]"#)).mac.as_deref(), Some(good));
            let guid = parse_one(&format!(r#"[{{"name":"n","infiniband-guid":"{good}"}}]"#));
            assert_eq!(guid.infiniband_guid.as_deref(), Some(good));
        }
        for bad in [
            "zz",
            "00:00:5e:00:53",
            "00:00:5e:00:53:0g",
            "00:00-5e:00:53:01",
            "00:00:5e:00:53:01:",
            "0000.5e00.530",
            "0000.5e00:5301",
            "00:00:5e:00:53:01:02",
            "0:00:5e:00:53:01:2",
            "00:00:5e:00:53:\u{e9}1",
        ] {
            assert_eq!(
                problem(&format!(r#"[{{"name":"n","mac":"{bad}"}}]"#)),
                Problem::InvalidMac(bad.into()),
                "{bad:?}"
            );
        }
        assert_eq!(hardware_addr_len("00:00:5e:00:53:01"), Some(6));
        assert_eq!(hardware_addr_len("0000.0000.fe80.0000"), Some(8));
        assert_eq!(hardware_addr_len(&["ab"; 20].join("-")), Some(20));
        assert_eq!(problem(r#"[{"name":"n","infiniband-guid":"nope"}]"#), Problem::InvalidGuid("nope".into()));
        assert_eq!(parse_one(r#"[{"name":"n","mac":""}]"#).mac, None);
    }

    #[test]
    fn json_port_mappings_validation() {
        let pm = |entries: &str| format!(r#"[{{"name":"n","portMappings":{entries}}}]"#);
        let valid = pm(r#"[{"hostPort":1,"containerPort":65535,"protocol":"sctp"},
                           {"hostPort":53,"containerPort":53,"protocol":"Udp","hostIP":""}]"#);
        assert!(parse_one(&valid).port_mappings.is_some());
        assert_eq!(parse_one(&pm("[]")).port_mappings, Some(json!([])));
        let reason = |entries: &str| match problem(&pm(entries)) {
            Problem::InvalidPortMapping { index, reason } => (index, reason),
            other => panic!("{entries}: {other:?}"),
        };
        assert_eq!(
            reason(r#"[{"hostPort":0,"containerPort":80}]"#).1,
            "\"hostPort\" must be a port number in 1..=65535, not 0"
        );
        assert_eq!(
            reason(r#"[{"hostPort":80,"containerPort":65536}]"#).1,
            "\"containerPort\" must be a port number in 1..=65535, not 65536"
        );
        assert_eq!(reason(r#"[{"hostPort":80}]"#).1, "\"containerPort\" is required");
        assert_eq!(reason(r#"[{"hostPort":80,"containerPort":80},{"hostPort":-1,"containerPort":80}]"#).0, 1);
        assert!(reason(r#"[{"hostPort":"80","containerPort":80}]"#).1.contains("\"80\""));
        assert!(reason(r#"[{"hostPort":80.5,"containerPort":80}]"#).1.contains("80.5"));
        assert_eq!(
            reason(r#"[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]"#).1,
            "protocol \"icmp\" is not one of tcp, udp, sctp"
        );
        assert!(reason(r#"[{"hostPort":80,"containerPort":80,"hostIP":"1.2.3"}]"#).1.contains("1.2.3"));
        assert!(reason(r#"[{"hostPort":80,"containerPort":80,"protocol":6}]"#).1.contains("protocol"));
        assert_eq!(reason("[null]").1, "must be an object, not null");
        assert!(matches!(problem(&pm(r#"{"hostPort":80}"#)), Problem::WrongType { key: "portMappings", .. }));
    }

    #[test]
    fn json_bandwidth_validation() {
        let bw = |object: &str| format!(r#"[{{"name":"n","bandwidth":{object}}}]"#);
        assert!(
            parse_one(&bw(r#"{"ingressRate":0,"egressBurst":18446744073709551615,"other":"x"}"#)).bandwidth.is_some()
        );
        for bad in [r#"{"ingressRate":-1}"#, r#"{"egressRate":1.5}"#, r#"{"ingressBurst":"10"}"#] {
            assert!(matches!(problem(&bw(bad)), Problem::InvalidBandwidth(_)), "{bad}");
        }
        assert_eq!(
            problem(&bw(r#"{"ingressRate":-1}"#)).to_string(),
            "bandwidth: \"ingressRate\" must be a non-negative integer, not -1"
        );
        assert!(matches!(problem(&bw("[1]")), Problem::WrongType { key: "bandwidth", .. }));
        assert_eq!(parse_one(&bw("null")).bandwidth, None);
    }

    #[test]
    fn json_cni_args_and_device_id() {
        let sel = parse_one(r#"[{"name":"n","cni-args":{"a":[1,2]},"deviceID":"dev0"}]"#);
        assert_eq!(sel.cni_args, json!({"a":[1,2]}).as_object().cloned());
        assert_eq!(sel.device_id.as_deref(), Some("dev0"));
        assert!(matches!(problem(r#"[{"name":"n","cni-args":"a=b"}]"#), Problem::WrongType { key: "cni-args", .. }));
        assert!(matches!(problem(r#"[{"name":"n","deviceID":1}]"#), Problem::WrongType { key: "deviceID", .. }));
    }

    #[test]
    fn json_element_without_name_is_reported_by_position() {
        assert_eq!(error(r#"[{"name":"a"},{"mac":"zz"}]"#).to_string(), "network selection #2: \"name\" is required");
    }

    // ----- validate_ifname -----

    #[test]
    fn ifname_rules() {
        for good in ["eth0", "a", "net1.100", "my_if-0", "x".repeat(15).as_str(), "ü0", "..."] {
            assert_eq!(validate_ifname(good), Ok(()), "{good:?}");
        }
        let reason = |name: &str| match validate_ifname(name) {
            Err(SelectionError::InterfaceName(InvalidIfname { reason, .. })) => reason,
            other => panic!("{name:?}: {other:?}"),
        };
        assert_eq!(reason(""), IfnameProblem::Empty);
        assert_eq!(reason(&"x".repeat(16)), IfnameProblem::TooLong(16));
        assert_eq!(reason("üüüüüüüü"), IfnameProblem::TooLong(16)); // bytes, not chars
        assert_eq!(reason("."), IfnameProblem::Dots);
        assert_eq!(reason(".."), IfnameProblem::Dots);
        assert_eq!(reason("a/b"), IfnameProblem::Slash);
        assert_eq!(reason("eth0:1"), IfnameProblem::Colon);
        assert_eq!(reason("a b"), IfnameProblem::Whitespace);
        assert_eq!(reason("a\tb"), IfnameProblem::Whitespace);
        assert_eq!(reason("a\u{2003}"), IfnameProblem::Whitespace);
        assert_eq!(reason("a\0b"), IfnameProblem::Nul);
        assert_eq!(
            validate_ifname("eth0:1").unwrap_err().to_string(),
            "invalid interface name \"eth0:1\": must not contain ':'"
        );
    }

    // ----- serialization, properties, robustness -----

    #[test]
    fn serde_round_trip() {
        let full = parse_one(
            r#"[{"name":"n","namespace":"ns","interface":"e1","ips":["10.0.0.1/24"],"mac":"02:00:00:00:00:01",
                "infiniband-guid":"00:00:00:00:00:00:00:01","portMappings":[{"hostPort":80,"containerPort":80}],
                "bandwidth":{"egressRate":5},"cni-args":{"k":"v"},"default-route":["fd00::1"],"deviceID":"d"}]"#,
        );
        let text = serde_json::to_string(&full).unwrap();
        for key in ["\"infiniband-guid\"", "\"portMappings\"", "\"cni-args\"", "\"default-route\"", "\"deviceID\""] {
            assert!(text.contains(key), "{key} missing in {text}");
        }
        assert_eq!(serde_json::from_str::<NetworkSelection>(&text).unwrap(), full);
        // Re-parsing the serialized form as an annotation gives the same selection.
        assert_eq!(parse_one(&format!("[{text}]")), full);

        let minimal = selection("ns", "n", None);
        let text = serde_json::to_string(&minimal).unwrap();
        assert_eq!(text, r#"{"name":"n","namespace":"ns"}"#);
        assert_eq!(serde_json::from_str::<NetworkSelection>(&text).unwrap(), minimal);

        let no_routes = NetworkSelection { default_route: Some(vec![]), ..minimal };
        let text = serde_json::to_string(&no_routes).unwrap();
        assert!(text.contains(r#""default-route":[]"#), "{text}");
        assert_eq!(serde_json::from_str::<NetworkSelection>(&text).unwrap(), no_routes);
    }

    /// Deterministic generator: xorshift over fixed alphabets, no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick(&mut self, alphabet: &[u8], len: usize) -> String {
            (0..len).map(|_| char::from(alphabet[self.below(alphabet.len())])).collect()
        }
        fn label(&mut self) -> String {
            const EDGE: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            const INNER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
            let len = 1 + self.below(MAX_LABEL_BYTES);
            let mut label = self.pick(EDGE, 1);
            if len > 1 {
                label += &self.pick(INNER, len - 2);
                label += &self.pick(EDGE, 1);
            }
            label
        }
        fn ifname(&mut self) -> String {
            const IFNAME: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@";
            loop {
                let len = 1 + self.below(MAX_IFNAME_BYTES);
                let name = self.pick(IFNAME, len);
                // '@' is valid for Linux but is the comma form's separator.
                if name != "." && name != ".." && !name.contains('@') {
                    return name;
                }
            }
        }
    }

    #[test]
    fn generated_selections_parse_back_to_their_parts() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let (ns, name, ifname) = (rng.label(), rng.label(), rng.ifname());
            let expected = selection(&ns, &name, Some(&ifname));
            assert_eq!(parse_one(&format!("{ns}/{name}@{ifname}")), expected);
            assert_eq!(parse_one(&format!(" {ns} / {name} @ {ifname} ")), expected);
            let json = json!([{ "name": format!("{ns}/{name}"), "interface": ifname }]).to_string();
            assert_eq!(parse_one(&json), expected);
            assert_eq!(parse_one(&name).namespace, POD_NS);
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        const PIECES: &[&str] = &[
            "a", "/", "@", ",", " ", "[", "]", "{", "}", "\"", ":", "name", "é", "💥", "\0", "-", ".", "ips", "mac",
            "0", "null", "\\",
        ];
        let mut rng = Rng(42);
        for _ in 0..5000 {
            let len = rng.below(12);
            let value: String = (0..len).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            let _ = parse_networks(&value, POD_NS);
            let _ = parse_default_network(&value, POD_NS);
            let _ = validate_ifname(&value);
            let _ = hardware_addr_len(&value);
            let _ = check_ip_or_cidr(&value);
        }
        for mac in ["ééééééé", "00:00:5e:00:53:0💥", "💥💥💥💥💥💥💥", "0000.5e00.530💥"] {
            assert_eq!(hardware_addr_len(mac), None, "{mac}");
        }
    }
}
