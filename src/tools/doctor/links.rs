//! `multus doctor`: master links of macvlan/ipvlan networks.

use super::*;

/// A macvlan/ipvlan plugin of a network, and what it needs from the host.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MasterUse {
    pub(crate) network: String,
    pub(crate) plugin: String,
    /// `None`: the plugin takes the interface of the host's IPv4 default route.
    pub(crate) master: Option<String>,
    /// The IPAM subnets, to spot the "pod cannot reach its own node" case.
    pub(crate) subnets: Vec<Cidr>,
}

pub(crate) fn master_uses(networks: &[Network]) -> Vec<MasterUse> {
    let mut uses = Vec::new();
    for network in networks {
        for plugin in network.config.plugins() {
            let Some(t @ ("macvlan" | "ipvlan")) = plugin.get("type").and_then(Value::as_str) else {
                continue;
            };
            uses.push(MasterUse {
                network: network.label.clone(),
                plugin: t.to_string(),
                master: plugin.get("master").and_then(Value::as_str).filter(|m| !m.is_empty()).map(String::from),
                subnets: ipam_subnets(plugin),
            });
        }
    }
    uses
}

pub(crate) async fn check_masters(networks: &[Network]) -> Vec<Check> {
    let uses = master_uses(networks);
    if uses.is_empty() {
        return Vec::new();
    }
    let mut checks = Vec::new();
    let default_link = if uses.iter().any(|u| u.master.is_none()) { default_route_link().await } else { None };
    let mut by_link: BTreeMap<String, Vec<&MasterUse>> = BTreeMap::new();
    for u in &uses {
        match (&u.master, &default_link) {
            (Some(m), _) | (None, Some(m)) => by_link.entry(m.clone()).or_default().push(u),
            (None, None) => checks.push(Check::fail(
                format!("master of {}", u.network),
                format!("{} names no master and the host has no IPv4 default route to take one from", u.plugin),
                "set \"master\" to this node's NIC (see `ip link`)",
            )),
        }
    }
    for (name, uses) in by_link {
        let link = Netlink.host_link(&name).await.map_err(|e| e.to_string());
        checks.extend(master_checks(&name, &link, &uses));
    }
    checks
}

pub(crate) async fn default_route_link() -> Option<String> {
    let routes = Netlink.host_default_routes().await.ok()?;
    routes.into_iter().find(|r| r.family == IpFamily::V4).map(|r| r.ifname)
}

/// The link must exist (✗), be up (✗) and, under macvlan, be promiscuous (⚠; ipvlan
/// children share the parent's MAC and need no promiscuity); a subnet of the network
/// holding one of the link's addresses gets a ⚠ note.
pub(crate) fn master_checks(name: &str, link: &Result<Option<LinkInfo>, String>, uses: &[&MasterUse]) -> Vec<Check> {
    let check = format!("master {name}");
    let used_by = uses.iter().map(|u| format!("{} ({})", u.network, u.plugin)).collect::<Vec<_>>().join(", ");
    let link = match link {
        Err(e) => return vec![Check::fail(check, format!("cannot read the link: {e}"), "run the doctor as root")],
        Ok(None) => {
            return vec![Check::fail(
                check,
                format!("no link named {name} on this host; used by {used_by}"),
                "\"master\" must name this node's real NIC (see `ip link`): \
                 every pod selecting these networks here fails",
            )];
        }
        Ok(Some(link)) => link,
    };
    if !link.up {
        return vec![Check::fail(
            check,
            format!("{name} is down; used by {used_by}"),
            format!("ip link set dev {name} up"),
        )];
    }
    let mut checks = Vec::new();
    let macvlan = uses.iter().any(|u| u.plugin == "macvlan");
    if macvlan && !link.promiscuous {
        checks.push(Check::warn(
            &check,
            format!("{name} is up but not promiscuous: macvlan children may get no traffic; used by {used_by}"),
            format!(
                "ip link set dev {name} promisc on (on a VM, also allow promiscuous mode on its vNIC); \
                 make it persistent (e.g. a systemd unit)"
            ),
        ));
    } else {
        let promisc = if link.promiscuous { ", promiscuous" } else { "" };
        checks.push(Check::ok(&check, format!("{name} is up{promisc}; used by {used_by}")));
    }
    checks.extend(uses.iter().filter_map(|u| own_address_note(name, link, u)));
    checks
}

/// A macvlan (or ipvlan) child never talks to its parent: pods of a network whose subnet
/// holds the node's address on the master cannot reach the node at that address.
pub(crate) fn own_address_note(name: &str, link: &LinkInfo, u: &MasterUse) -> Option<Check> {
    let (addr, _) = link.addresses.iter().find(|(a, _)| u.subnets.iter().any(|s| s.contains(*a)))?;
    Some(Check::warn(
        format!("master {name}"),
        format!(
            "{} pods of {} cannot reach this node's {addr} over {name}: a {} child never talks to its parent",
            u.plugin, u.network, u.plugin
        ),
        format!(
            "expected, not a fault: reach this node through another of its addresses, or give the node \
             its own {} interface on {name} with an address in that subnet",
            u.plugin
        ),
    ))
}

/// The subnets an IPAM section names: host-local `subnet` and `ranges`, static
/// `addresses`, whereabouts `range`.
pub(crate) fn ipam_subnets(plugin: &Map<String, Value>) -> Vec<Cidr> {
    let Some(ipam) = plugin.get("ipam").and_then(Value::as_object) else {
        return Vec::new();
    };
    let field = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(String::from);
    let mut texts: Vec<String> = Vec::new();
    texts.extend(["subnet", "range"].iter().filter_map(|k| ipam.get(*k).and_then(Value::as_str).map(String::from)));
    let ranges = ipam.get("ranges").and_then(Value::as_array).into_iter().flatten();
    texts.extend(ranges.filter_map(Value::as_array).flatten().filter_map(|r| field(r, "subnet")));
    let addresses = ipam.get("addresses").and_then(Value::as_array).into_iter().flatten();
    texts.extend(addresses.filter_map(|a| field(a, "address")));
    texts.iter().filter_map(|t| Cidr::parse(t)).collect()
}

/// An IP prefix, `10.12.34.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    pub(crate) addr: IpAddr,
    pub(crate) prefix: u8,
}

impl Cidr {
    pub(crate) fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = text.trim().split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
            match u32::from(prefix) {
                0 => 0,
                p => bits >> (width - p.min(width)),
            }
        }
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), 32, self.prefix) == masked(u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix) == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}
