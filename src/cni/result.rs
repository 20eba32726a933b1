//! CNI results: one typed model (the 1.x layout) with lossless-enough conversion from
//! and to every spec version, modelled on libcni's convertTo04x/convertFrom04x.
//!
//! Delegate results are parsed here for the network-status annotation and events; the
//! raw JSON of each delegate is what is chained and cached, so nothing a plugin wrote is
//! lost on its way to the next plugin.

use super::version::Version;
use crate::error::{CniError, DecodeError, IoError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Always written (`{}` when empty), as the Go types do.
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Absent for host-side interfaces (bridge, veth peer): the spec makes it optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// CIDR notation: `10.1.1.101/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The 0.1.0/0.2.0 per-family block.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LegacyIp {
    ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<LegacyRoute>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LegacyRoute {
    dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gw: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct LegacyResult {
    #[serde(default)]
    ip4: Option<LegacyIp>,
    #[serde(default)]
    ip6: Option<LegacyIp>,
    #[serde(default)]
    dns: Dns,
}

/// The address part of a CIDR (or a bare address).
pub fn cidr_ip(cidr: &str) -> Option<IpAddr> {
    cidr.split('/').next()?.parse().ok()
}

fn is_v4(cidr: &str) -> bool {
    matches!(cidr_ip(cidr), Some(IpAddr::V4(_)))
}

fn decode_err(version: &str, e: impl std::fmt::Display) -> CniError {
    DecodeError::Invalid { what: format!("cannot decode a cniVersion {version} result"), why: e.to_string() }.into()
}

impl CniResult {
    /// Parse a result of any supported version. `fallback_version` is used when the
    /// result itself carries no `cniVersion` (the version of the config that produced it).
    pub fn from_value(value: &Value, fallback_version: &str) -> Result<CniResult, CniError> {
        if !value.is_object() {
            return Err(DecodeError::NotAnObject("a CNI result").into());
        }
        let version = match value.get("cniVersion").and_then(Value::as_str) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => fallback_version.to_string(),
        };
        let parsed = Version::of_config(&version)?;
        let mut result = if parsed < Version::V0_3_0 {
            let legacy: LegacyResult = serde_json::from_value(value.clone()).map_err(|e| decode_err(&version, e))?;
            let mut r = CniResult { dns: legacy.dns, ..Default::default() };
            for block in [legacy.ip4, legacy.ip6].into_iter().flatten() {
                r.ips.push(IpConfig { interface: None, address: block.ip, gateway: block.gateway });
                r.routes.extend(block.routes.into_iter().map(|lr| Route {
                    dst: lr.dst,
                    gw: lr.gw,
                    ..Default::default()
                }));
            }
            r
        } else {
            // 0.3.x/0.4.0 differ from 1.x only by `ips[].version`, which serde ignores.
            serde_json::from_value::<CniResult>(value.clone()).map_err(|e| decode_err(&version, e))?
        };
        result.cni_version = version;
        for ip in &result.ips {
            if cidr_ip(&ip.address).is_none() {
                return Err(decode_err(&result.cni_version, format!("invalid IP address {:?}", ip.address)));
            }
            if let Some(i) = ip.interface
                && i >= result.interfaces.len()
            {
                return Err(decode_err(
                    &result.cni_version,
                    format!("ip {} references interface {i}, which does not exist", ip.address),
                ));
            }
        }
        Ok(result)
    }

    /// Render in `version` (the caller's config cniVersion: the spec wants the output
    /// version to equal the input's; Go Multus prints the master's own version).
    pub fn to_value(&self, version: &str) -> Result<Value, CniError> {
        let target = Version::of_config(version)?;
        let version = if version.is_empty() { "0.1.0" } else { version };
        if target >= Version::V1_0_0 {
            let mut v = serde_json::to_value(self).map_err(IoError::from)?;
            v["cniVersion"] = version.into();
            return Ok(v);
        }
        if target >= Version::V0_3_0 {
            return Ok(self.to_v03_value(version));
        }
        Ok(self.to_v01_value(version))
    }

    /// 0.3.x/0.4.0: ips carry `version`; interfaces and routes know only the old fields.
    fn to_v03_value(&self, version: &str) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), i.name.clone().into());
                if let Some(m) = &i.mac {
                    o.insert("mac".into(), m.clone().into());
                }
                if let Some(s) = &i.sandbox {
                    o.insert("sandbox".into(), s.clone().into());
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = serde_json::to_value(ip).unwrap_or_default();
                o["version"] = if is_v4(&ip.address) { "4" } else { "6" }.into();
                o
            })
            .collect();
        let routes: Vec<Value> = self.routes.iter().map(legacy_route).collect();
        let mut v = json!({ "cniVersion": version, "dns": self.dns });
        if !interfaces.is_empty() {
            v["interfaces"] = interfaces.into();
        }
        if !ips.is_empty() {
            v["ips"] = ips.into();
        }
        if !routes.is_empty() {
            v["routes"] = routes.into();
        }
        v
    }

    /// 0.1.0/0.2.0: the first address of each family, routes split by family.
    fn to_v01_value(&self, version: &str) -> Value {
        let mut v = json!({ "cniVersion": version, "dns": self.dns });
        for (key, want_v4) in [("ip4", true), ("ip6", false)] {
            if let Some(ip) = self.ips.iter().find(|ip| is_v4(&ip.address) == want_v4) {
                let routes = self
                    .routes
                    .iter()
                    .filter(|r| is_v4(&r.dst) == want_v4)
                    .map(|r| LegacyRoute { dst: r.dst.clone(), gw: r.gw.clone() })
                    .collect();
                let block = LegacyIp { ip: ip.address.clone(), gateway: ip.gateway.clone(), routes };
                v[key] = serde_json::to_value(block).unwrap_or_default();
            }
        }
        v
    }

    /// Convert a raw result of any version into `version`.
    pub fn convert(value: &Value, from_fallback: &str, version: &str) -> Result<Value, CniError> {
        CniResult::from_value(value, from_fallback)?.to_value(version)
    }

    /// Interfaces inside the sandbox (the pod's netns), with their index.
    pub fn sandbox_interfaces(&self) -> impl Iterator<Item = (usize, &Interface)> {
        self.interfaces.iter().enumerate().filter(|(_, i)| i.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
    }

    pub fn is_empty(&self) -> bool {
        self.interfaces.is_empty() && self.ips.is_empty()
    }
}

fn legacy_route(r: &Route) -> Value {
    let mut o = Map::new();
    o.insert("dst".into(), r.dst.clone().into());
    if let Some(gw) = &r.gw {
        o.insert("gw".into(), gw.clone().into());
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::version::SUPPORTED_VERSIONS;

    /// What Debian's bridge plugin prints: host interfaces without `sandbox`.
    const BRIDGE_100: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"de:ad:be:ef:00:01"},{"name":"veth1234","mac":"de:ad:be:ef:00:02"},{"name":"eth0","mac":"de:ad:be:ef:00:03","sandbox":"/var/run/netns/x"}],"ips":[{"interface":2,"address":"10.244.0.5/24","gateway":"10.244.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.0.1"}],"dns":{}}"#;
    const NO_DNS_100: &str = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.1.2/24"}]}"#;
    const V11: &str = r#"{"cniVersion":"1.1.0","interfaces":[{"name":"net1","mac":"aa:bb:cc:dd:ee:ff","mtu":1400,"sandbox":"/n","socketPath":"/s","pciID":"0000:00:01.0"}],"ips":[{"interface":0,"address":"fd00::5/64"}],"routes":[{"dst":"::/0","gw":"fd00::1","mtu":1300,"table":100,"scope":0,"priority":5,"advmss":1200}],"dns":{"nameservers":["10.0.0.10"]}}"#;
    const V031: &str = r#"{"cniVersion":"0.3.1","interfaces":[{"name":"net1","mac":"2e:c2:b8:fe:13:6f","sandbox":"/n"}],"ips":[{"version":"4","interface":0,"address":"10.12.34.201/24","gateway":"10.12.34.254"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;
    const V020: &str = r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/16","gateway":"10.1.0.1","routes":[{"dst":"0.0.0.0/0"}]},"ip6":{"ip":"fd00::5/64"},"dns":{}}"#;

    fn v(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn parses_real_delegate_results() {
        let r = CniResult::from_value(&v(BRIDGE_100), "").unwrap();
        assert_eq!(r.sandbox_interfaces().count(), 1);
        assert_eq!(r.ips[0].interface, Some(2));
        let r = CniResult::from_value(&v(NO_DNS_100), "").unwrap();
        assert_eq!(r.dns, Dns::default());
        let r = CniResult::from_value(&v(V11), "").unwrap();
        assert_eq!(r.interfaces[0].mtu, Some(1400));
        assert_eq!(r.routes[0].table, Some(100));
        let r = CniResult::from_value(&v(V031), "").unwrap();
        assert_eq!(r.ips[0].address, "10.12.34.201/24");
        let r = CniResult::from_value(&v(V020), "").unwrap();
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.routes.len(), 1);
    }

    #[test]
    fn keeps_1_1_fields_and_writes_ip_version_for_0_3() {
        let out = CniResult::convert(&v(V11), "", "1.1.0").unwrap();
        assert_eq!(out, v(V11));
        let out = CniResult::convert(&v(V11), "", "0.3.1").unwrap();
        assert_eq!(out["ips"][0]["version"], "6");
        assert!(out["interfaces"][0].get("mtu").is_none());
        assert!(out["routes"][0].get("table").is_none());
        assert_eq!(out["cniVersion"], "0.3.1");
    }

    #[test]
    fn round_trips_between_every_version_pair() {
        for from in [BRIDGE_100, NO_DNS_100, V11, V031, V020] {
            for to in SUPPORTED_VERSIONS {
                let out = CniResult::convert(&v(from), "", to).unwrap();
                assert_eq!(out["cniVersion"], to);
                // what we print must parse back in its own version
                let back = CniResult::from_value(&out, "").unwrap();
                assert_eq!(back.cni_version, to);
                if Version::parse(to).unwrap() >= Version::V0_3_0 {
                    let orig = CniResult::from_value(&v(from), "").unwrap();
                    assert_eq!(back.ips.len(), orig.ips.len(), "{from} -> {to}");
                }
            }
        }
        // 0.3.1 -> 1.0.0 -> 0.3.1 is the identity on what 0.3.1 can say
        let there = CniResult::convert(&v(V031), "", "1.0.0").unwrap();
        assert_eq!(CniResult::convert(&there, "", "0.3.1").unwrap(), v(V031));
    }

    #[test]
    fn rejects_lies() {
        assert_eq!(CniResult::from_value(&v("[]"), "1.0.0").unwrap_err().code, 6);
        let bad_ip = r#"{"cniVersion":"1.0.0","ips":[{"address":"banana"}]}"#;
        assert_eq!(CniResult::from_value(&v(bad_ip), "").unwrap_err().code, 6);
        let bad_idx = r#"{"cniVersion":"1.0.0","ips":[{"interface":3,"address":"10.0.0.1/8"}]}"#;
        assert!(CniResult::from_value(&v(bad_idx), "").is_err());
        let unknown = r#"{"cniVersion":"7.0.0"}"#;
        assert_eq!(CniResult::from_value(&v(unknown), "").unwrap_err().code, 1);
        // no cniVersion: the config's version is assumed
        assert_eq!(CniResult::from_value(&v(r#"{"ips":[]}"#), "0.4.0").unwrap().cni_version, "0.4.0");
    }
}
