//! Network namespace and netlink operations.
//!
//! Everything the plugin does inside a pod's network namespace goes through
//! [`NetnsOps`], so the CNI commands can be unit-tested against a fake (`crate::testing::FakeNetns`).
//! [`Netlink`] is the real implementation, on top of `rtnetlink`.
//!
//! # Entering a namespace
//!
//! A netlink socket belongs for life to the network namespace of the thread
//! that created it. To talk to a pod's namespace, [`Netlink`] moves the
//! *calling* thread into it with `setns(2)`, creates the socket and moves the
//! thread straight back, all synchronously: there is no `.await` in between,
//! so no other task on the runtime ever runs inside the pod's namespace. The
//! socket then keeps talking to the pod's namespace from the host. It is
//! never done on tokio's blocking pool, whose threads are reused by unrelated
//! work. A drop guard moves the thread back even when unwinding; if that
//! `setns` fails, the process aborts rather than run on in the pod's namespace.
//!
//! The runtime must have its I/O driver enabled
//! (`tokio::runtime::Builder::new_current_thread().enable_all()`).

use std::collections::HashMap;
use std::fmt::Display;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use futures::TryStreamExt;
use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType, RouteVia,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use tokio::task::JoinHandle;

/// The calling thread's own network namespace. Code generic over [`NetnsOps`]
/// can pass this path to work in the host namespace.
pub const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// The main routing table (`RT_TABLE_MAIN`), the only one default routes are
/// read from and written to.
const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The path is empty or nothing exists there any more, e.g. on DEL after
    /// the runtime removed the pod's namespace.
    #[error("network namespace {path} does not exist")]
    NotFound { path: String },
    /// Something exists at the path but it is not a network namespace, e.g.
    /// a bind-mount point whose namespace was unmounted.
    #[error("{path} is not a network namespace")]
    NotANamespace { path: String },
    #[error("network namespace {path}: cannot {action}: {source}")]
    Io {
        path: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("link {ifname} not found in network namespace {netns}")]
    LinkNotFound { netns: String, ifname: String },
    #[error("netlink: {0}")]
    Netlink(String),
    /// ADD, DEL and CHECK on the plugin's own namespace (the skel's rule).
    #[error("plugin's netns and netns {path:?} are the same (set CNI_NETNS_OVERRIDE to allow)")]
    OwnNetns { path: String },
    /// An interface name a network asks for is already taken in the pod.
    #[error("cannot set {network:?} interface name to {ifname:?}: interface name {ifname} already exists")]
    InterfaceExists { network: String, ifname: String },
}

/// One network interface as seen inside its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
    pub index: u32,
    /// Lower-case `aa:bb:cc:dd:ee:ff`; `None` for links without one.
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// Global-scope addresses with their prefix length, in kernel order.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Administratively up (`IFF_UP`), whether or not it has a carrier.
    pub up: bool,
    /// In promiscuous mode, whether set explicitly or by an upper device
    /// such as a bridge or macvlan.
    pub promiscuous: bool,
}

/// One next hop of a unicast default route in the main table. A multipath
/// route yields one entry per next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub ifname: String,
    pub gateway: Option<IpAddr>,
    pub family: IpFamily,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub const fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    const fn address_family(self) -> AddressFamily {
        match self {
            Self::V4 => AddressFamily::Inet,
            Self::V6 => AddressFamily::Inet6,
        }
    }
}

/// Everything the plugin does inside a pod's network namespace (or the
/// host's, via [`THREAD_NETNS`]). `netns` is a namespace file such as
/// `/var/run/netns/cni-…` or `/proc/PID/ns/net`.
///
/// Async because the plugin runs a current_thread tokio runtime. The futures
/// carry no `Send` bound, which is why `async_fn_in_trait` is allowed: the
/// trait is meant for generics on that single-threaded runtime, not `dyn`.
#[allow(async_fn_in_trait)]
pub trait NetnsOps {
    /// All links of the namespace, loopback included.
    async fn links(&self, netns: &Path) -> Result<Vec<LinkInfo>, NetnsError>;

    /// Make `gateway` via `ifname` the only default route of its family: every
    /// other default route of that family in the main table (on any link, of
    /// any type) is deleted, then this one is added. Idempotent: an existing
    /// identical route is kept as it is.
    async fn set_default_route(&self, netns: &Path, ifname: &str, gateway: IpAddr) -> Result<(), NetnsError>;
}

/// Whether `path` is the network namespace this process runs in (same nsfs device and
/// inode as `/proc/self/ns/net`). The CNI skel refuses such a CNI_NETNS with code 8
/// unless CNI_NETNS_OVERRIDE is set: a plugin told to work on "the pod" must never
/// rearrange the host's own links and routes. `stat` never opens, so a FIFO or a
/// device at `path` cannot block this.
pub fn is_own_netns(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata("/proc/self/ns/net"), std::fs::metadata(path)) {
        (Ok(own), Ok(other)) => own.dev() == other.dev() && own.ino() == other.ino(),
        _ => false,
    }
}

fn io_error(path: impl Display, action: &'static str, source: impl Into<io::Error>) -> NetnsError {
    NetnsError::Io { path: path.to_string(), action, source: source.into() }
}

fn open_netns(path: &Path) -> Result<File, NetnsError> {
    let shown = || path.display().to_string();
    if path.as_os_str().is_empty() {
        return Err(NetnsError::NotFound { path: shown() });
    }
    let file = File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => NetnsError::NotFound { path: shown() },
        _ => io_error(path.display(), "open", source),
    })?;
    // A namespace file lives on nsfs; anything else (typically the empty file
    // left behind once a namespace's bind mount is gone) is not one.
    let statfs = fstatfs(&file).map_err(|errno| io_error(path.display(), "statfs", errno))?;
    if statfs.filesystem_type() != NSFS_MAGIC {
        return Err(NetnsError::NotANamespace { path: shown() });
    }
    Ok(file)
}

/// Moves the calling thread back into its original network namespace when
/// dropped, including while unwinding from a panic.
struct ReturnToNetns {
    original: File,
}

impl ReturnToNetns {
    /// Moves the calling thread into the network namespace at `path`.
    fn enter(path: &Path) -> Result<Self, NetnsError> {
        let original = File::open(THREAD_NETNS).map_err(|source| io_error(THREAD_NETNS, "open", source))?;
        let target = open_netns(path)?;
        setns(&target, CloneFlags::CLONE_NEWNET).map_err(|errno| match errno {
            // nsfs, but another kind of namespace.
            Errno::EINVAL => NetnsError::NotANamespace { path: path.display().to_string() },
            _ => io_error(path.display(), "enter", errno),
        })?;
        Ok(Self { original })
    }
}

impl Drop for ReturnToNetns {
    fn drop(&mut self) {
        if let Err(errno) = setns(&self.original, CloneFlags::CLONE_NEWNET) {
            // This thread would keep running the plugin, and fork its
            // delegates, inside the pod's namespace. Nothing can undo that
            // from here (unlike Go, we cannot retire the thread), and
            // returning an error would invite callers to carry on.
            tracing::error!(%errno, "cannot return to the original network namespace; aborting");
            std::process::abort();
        }
    }
}

/// Where a [`Session`] talks to.
#[derive(Clone, Copy)]
enum Namespace<'a> {
    /// The calling thread's namespace, without any `setns`.
    Caller,
    At(&'a Path),
}

impl Namespace<'_> {
    fn describe(self) -> String {
        match self {
            Self::Caller => "host".to_owned(),
            Self::At(path) => path.display().to_string(),
        }
    }
}

/// A netlink connection into one network namespace, closed on drop.
struct Session {
    handle: Handle,
    netns: String,
    connection: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Session {
    fn open(namespace: Namespace<'_>) -> Result<Self, NetnsError> {
        let netns = namespace.describe();
        let created = match namespace {
            Namespace::Caller => rtnetlink::new_connection(),
            Namespace::At(path) => {
                let _return = ReturnToNetns::enter(path)?;
                rtnetlink::new_connection()
            }
        };
        let (connection, handle, _unsolicited) =
            created.map_err(|source| io_error(&netns, "open a netlink socket", source))?;
        Ok(Self { handle, netns, connection: tokio::spawn(connection) })
    }

    fn error(&self, operation: impl Display, error: rtnetlink::Error) -> NetnsError {
        let detail = match &error {
            rtnetlink::Error::NetlinkError(message) => message.to_io().to_string(),
            other => other.to_string(),
        };
        NetnsError::Netlink(format!("{operation} in {}: {detail}", self.netns))
    }

    async fn link_by_name(&self, ifname: &str) -> Result<Option<LinkMessage>, NetnsError> {
        let mut links = self.handle.link().get().match_name(ifname).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(error) if errno(&error) == Some(Errno::ENODEV) => Ok(None),
            Err(error) => Err(self.error(format_args!("get link {ifname}"), error)),
        }
    }

    async fn all_links(&self) -> Result<Vec<LinkMessage>, NetnsError> {
        let links = self.handle.link().get().execute();
        links.try_collect().await.map_err(|error| self.error("list links", error))
    }

    /// Global-scope addresses as `(link index, address, prefix length)`.
    async fn global_addresses(&self) -> Result<Vec<(u32, IpAddr, u8)>, NetnsError> {
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|error| self.error("list addresses", error))?;
        Ok(messages
            .iter()
            .filter(|message| message.header.scope == AddressScope::Universe)
            .filter_map(|message| {
                let address = local_address(&message.attributes)?;
                Some((message.header.index, address, message.header.prefix_len))
            })
            .collect())
    }

    /// Every default route of `family` in the main table, whatever its type.
    async fn default_route_messages(&self, family: IpFamily) -> Result<Vec<RouteMessage>, NetnsError> {
        let mut query = RouteMessage::default();
        // The kernel honours the family of a dump request, not its other
        // fields (that needs strict checking), so filter the rest here.
        query.header.address_family = family.address_family();
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|error| self.error("list routes", error))?;
        Ok(routes
            .into_iter()
            .filter(|route| {
                route.header.address_family == family.address_family()
                    && route.header.destination_prefix_length == 0
                    && route_table(route) == MAIN_TABLE
            })
            .collect())
    }

    async fn delete_route(&self, route: RouteMessage) -> Result<(), NetnsError> {
        tracing::debug!(netns = %self.netns, ?route, "deleting default route");
        match self.handle.route().del(route).execute().await {
            // Already gone: someone else removed it meanwhile.
            Err(error) if errno(&error) == Some(Errno::ESRCH) => Ok(()),
            result => result.map_err(|error| self.error("delete default route", error)),
        }
    }

    async fn add_default_route(&self, link_index: u32, gateway: IpAddr) -> Result<(), NetnsError> {
        tracing::debug!(netns = %self.netns, link_index, %gateway, "adding default route");
        // Protocol "boot", as `ip route add` does.
        let route = match gateway {
            IpAddr::V4(gateway) => RouteMessageBuilder::<Ipv4Addr>::new()
                .output_interface(link_index)
                .gateway(gateway)
                .protocol(RouteProtocol::Boot)
                .build(),
            IpAddr::V6(gateway) => RouteMessageBuilder::<Ipv6Addr>::new()
                .output_interface(link_index)
                .gateway(gateway)
                .protocol(RouteProtocol::Boot)
                .build(),
        };
        match self.handle.route().add(route).execute().await {
            Err(error) if errno(&error) == Some(Errno::EEXIST) => Ok(()),
            result => result.map_err(|error| self.error(format_args!("add default route via {gateway}"), error)),
        }
    }
}

/// The errno of a kernel-reported netlink failure.
fn errno(error: &rtnetlink::Error) -> Option<Errno> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(Errno::from_raw(-message.raw_code())),
        _ => None,
    }
}

fn local_address(attributes: &[AddressAttribute]) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on
    // point-to-point links, and the only one IPv6 sends.
    let local = attributes.iter().find_map(|attribute| match attribute {
        AddressAttribute::Local(address) => Some(*address),
        _ => None,
    });
    local.or_else(|| {
        attributes.iter().find_map(|attribute| match attribute {
            AddressAttribute::Address(address) => Some(*address),
            _ => None,
        })
    })
}

fn link_info(message: &LinkMessage, addresses: &[(u32, IpAddr, u8)]) -> LinkInfo {
    let index = message.header.index;
    let flags = message.header.flags;
    let mut info = LinkInfo {
        name: String::new(),
        index,
        mac: None,
        mtu: None,
        addresses: addresses
            .iter()
            .filter(|(link, ..)| *link == index)
            .map(|&(_, address, prefix_len)| (address, prefix_len))
            .collect(),
        up: flags.contains(LinkFlags::Up),
        // IFF_PROMISC only reports an explicit request; the counter also
        // covers promiscuity held by upper devices.
        promiscuous: flags.contains(LinkFlags::Promisc),
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => info.name.clone_from(name),
            LinkAttribute::Address(bytes) if !bytes.is_empty() => info.mac = Some(format_mac(bytes)),
            LinkAttribute::Mtu(mtu) => info.mtu = Some(*mtu),
            LinkAttribute::Promiscuity(count) => info.promiscuous |= *count > 0,
            _ => {}
        }
    }
    info
}

fn format_mac(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect::<Vec<_>>().join(":")
}

fn route_table(route: &RouteMessage) -> u32 {
    // The header only has room for tables up to 255; RTA_TABLE is authoritative.
    route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

fn gateway(attributes: &[RouteAttribute]) -> Option<IpAddr> {
    attributes.iter().find_map(|attribute| match attribute {
        RouteAttribute::Gateway(RouteAddress::Inet(gateway)) | RouteAttribute::Via(RouteVia::Inet(gateway)) => {
            Some(IpAddr::V4(*gateway))
        }
        RouteAttribute::Gateway(RouteAddress::Inet6(gateway)) | RouteAttribute::Via(RouteVia::Inet6(gateway)) => {
            Some(IpAddr::V6(*gateway))
        }
        _ => None,
    })
}

/// The `(output link index, gateway)` next hops of a route.
fn next_hops(route: &RouteMessage) -> Vec<(u32, Option<IpAddr>)> {
    let mut hops = Vec::new();
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Oif(index) => hops.push((*index, gateway(&route.attributes))),
            RouteAttribute::MultiPath(next_hops) => {
                hops.extend(next_hops.iter().map(|hop| (hop.interface_index, gateway(&hop.attributes))))
            }
            _ => {}
        }
    }
    hops
}

/// The real [`NetnsOps`]: one short-lived netlink connection per call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Netlink;

impl Netlink {
    /// The link named `ifname` in the calling thread's own (host) namespace, or
    /// `None` if there is no such link, e.g. for `multus doctor` to check a master link.
    pub async fn host_link(&self, ifname: &str) -> Result<Option<LinkInfo>, NetnsError> {
        link_in(Namespace::Caller, ifname).await
    }

    /// Unicast default routes (destination prefix length 0) of the main table in the
    /// calling thread's own namespace, IPv4 first, then IPv6.
    pub async fn host_default_routes(&self) -> Result<Vec<DefaultRoute>, NetnsError> {
        default_routes_in(Namespace::Caller).await
    }

    /// [`Self::host_link`] in `netns`: what the tests read back after a change.
    #[cfg(test)]
    async fn link(&self, netns: &Path, ifname: &str) -> Result<Option<LinkInfo>, NetnsError> {
        link_in(Namespace::At(netns), ifname).await
    }

    /// [`Self::host_default_routes`] in `netns`: what the tests read back after a change.
    #[cfg(test)]
    async fn default_routes(&self, netns: &Path) -> Result<Vec<DefaultRoute>, NetnsError> {
        default_routes_in(Namespace::At(netns)).await
    }
}

async fn link_in(namespace: Namespace<'_>, ifname: &str) -> Result<Option<LinkInfo>, NetnsError> {
    let session = Session::open(namespace)?;
    let Some(link) = session.link_by_name(ifname).await? else {
        return Ok(None);
    };
    let addresses = session.global_addresses().await?;
    Ok(Some(link_info(&link, &addresses)))
}

async fn default_routes_in(namespace: Namespace<'_>) -> Result<Vec<DefaultRoute>, NetnsError> {
    let session = Session::open(namespace)?;
    let names: HashMap<u32, String> =
        session.all_links().await?.iter().map(|link| (link.header.index, link_info(link, &[]).name)).collect();
    let mut defaults = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        for route in session.default_route_messages(family).await? {
            if route.header.kind != RouteType::Unicast {
                continue;
            }
            // A link that vanished between the two dumps has no name to report.
            defaults.extend(next_hops(&route).into_iter().filter_map(|(index, gateway)| {
                Some(DefaultRoute { ifname: names.get(&index)?.clone(), gateway, family })
            }));
        }
    }
    Ok(defaults)
}

impl NetnsOps for Netlink {
    async fn links(&self, netns: &Path) -> Result<Vec<LinkInfo>, NetnsError> {
        let session = Session::open(Namespace::At(netns))?;
        let links = session.all_links().await?;
        let addresses = session.global_addresses().await?;
        Ok(links.iter().map(|link| link_info(link, &addresses)).collect())
    }

    async fn set_default_route(&self, netns: &Path, ifname: &str, gateway: IpAddr) -> Result<(), NetnsError> {
        let session = Session::open(Namespace::At(netns))?;
        let link_index = match session.link_by_name(ifname).await? {
            Some(link) => link.header.index,
            None => {
                return Err(NetnsError::LinkNotFound { netns: session.netns.clone(), ifname: ifname.to_owned() });
            }
        };
        // Delete before adding: the kernel refuses a second default route
        // with the same metric. The wanted route, if already there, is kept
        // so that repeating the call never leaves the pod without one.
        let mut wanted_exists = false;
        for route in session.default_route_messages(IpFamily::of(gateway)).await? {
            let is_wanted =
                route.header.kind == RouteType::Unicast && next_hops(&route) == [(link_index, Some(gateway))];
            if is_wanted && !wanted_exists {
                wanted_exists = true;
            } else {
                session.delete_route(route).await?;
            }
        }
        if !wanted_exists {
            session.add_default_route(link_index, gateway).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeNetns, NetnsCall as FakeCall};
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn is_root() -> bool {
        let root = nix::unistd::Uid::effective().is_root();
        if !root {
            eprintln!("skipped: needs root");
        }
        root
    }

    /// Runs `ip ARGS`, panicking with its stderr if it fails.
    fn ip(args: &[&str]) -> String {
        let output = Command::new("ip").args(args).output().expect("run ip");
        assert!(output.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("ip prints UTF-8")
    }

    /// The network namespace the test thread is in, as `net:[inode]`.
    fn thread_netns() -> PathBuf {
        std::fs::read_link(THREAD_NETNS).expect("read thread netns")
    }

    static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

    /// A named network namespace of its own, deleted on drop (with every link
    /// in it), even when the test panics.
    struct TestNetns {
        name: String,
        path: PathBuf,
        id: usize,
    }

    impl TestNetns {
        fn new() -> Self {
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let name = format!("mrs-t-{}-{id}", std::process::id());
            ip(&["netns", "add", &name]);
            let path = Path::new("/run/netns").join(&name);
            Self { name, path, id }
        }

        /// Runs `ip -n NAME ARGS`.
        fn ip(&self, args: &[&str]) -> String {
            let mut all = vec!["-n", self.name.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        }

        /// Creates an up veth pair inside the namespace and returns the name
        /// of its first end, `{prefix}{id}a`.
        fn veth(&self, prefix: &str) -> String {
            let (near, far) = (format!("{prefix}{}a", self.id), format!("{prefix}{}b", self.id));
            self.ip(&["link", "add", &near, "type", "veth", "peer", "name", &far]);
            self.ip(&["link", "set", &far, "up"]);
            self.ip(&["link", "set", &near, "up"]);
            near
        }

        /// Creates an up veth pair with `address` (CIDR) on its first end.
        fn veth_with(&self, prefix: &str, address: &str) -> String {
            let link = self.veth(prefix);
            let mut args = vec!["addr", "add", address, "dev", link.as_str()];
            if address.contains(':') {
                // Usable at once instead of after duplicate address detection.
                args.push("nodad");
            }
            self.ip(&args);
            link
        }

        fn default_routes_shown(&self, family: &str) -> Vec<String> {
            self.ip(&[family, "route", "show", "default"]).lines().map(|line| line.trim().to_owned()).collect()
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        }
    }

    fn v4(address: &str) -> IpAddr {
        address.parse().expect("test address")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn link_reports_a_veth_inside_a_netns() {
        if !is_root() {
            return;
        }
        let netns = TestNetns::new();
        let link = netns.veth_with("lk", "10.1.0.2/24");
        netns.ip(&["link", "set", &link, "address", "02:AA:bb:cc:dd:01", "mtu", "1400"]);

        let info = Netlink.link(&netns.path, &link).await.expect("link").expect("link exists");

        assert_eq!(info.name, link);
        assert!(info.index > 1);
        assert_eq!(info.mac.as_deref(), Some("02:aa:bb:cc:dd:01"));
        assert_eq!(info.mtu, Some(1400));
        // The fe80:: address the kernel adds on up is link-scope, so left out.
        assert_eq!(info.addresses, vec![(v4("10.1.0.2"), 24)]);
        assert!(info.up);
        assert!(!info.promiscuous);

        netns.ip(&["link", "set", &link, "promisc", "on", "down"]);
        let info = Netlink.link(&netns.path, &link).await.expect("link");
        let info = info.expect("link exists");
        assert!(info.promiscuous);
        assert!(!info.up);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn link_is_none_when_missing() {
        if !is_root() {
            return;
        }
        let netns = TestNetns::new();
        let link = Netlink.link(&netns.path, "nosuchlink0").await;
        assert_eq!(link.expect("lookup succeeds"), None);
        // Longer than IFNAMSIZ: the kernel rejects the request itself (ERANGE).
        let too_long = Netlink.link(&netns.path, "averyveryverylongname0").await;
        assert!(matches!(too_long, Err(NetnsError::Netlink(_))), "{too_long:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn links_lists_loopback_and_veths() {
        if !is_root() {
            return;
        }
        let netns = TestNetns::new();
        let link = netns.veth_with("ls", "10.2.0.2/24");

        let links = Netlink.links(&netns.path).await.expect("links");
        let names: Vec<&str> = links.iter().map(|link| link.name.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"lo"));
        assert!(names.contains(&link.as_str()));
        let veth = links.iter().find(|info| info.name == link).expect("veth");
        assert_eq!(veth.addresses, vec![(v4("10.2.0.2"), 24)]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn missing_or_bogus_netns_is_reported_as_such() {
        let missing = PathBuf::from(format!("/run/netns/mrs-t-{}-missing", std::process::id()));
        let result = Netlink.links(&missing).await;
        assert!(
            matches!(&result, Err(NetnsError::NotFound { path }) if *path == missing.display().to_string()),
            "{result:?}"
        );
        let result = Netlink.link(Path::new(""), "eth0").await;
        assert!(matches!(result, Err(NetnsError::NotFound { .. })), "{result:?}");

        // What a namespace's mount point becomes once it is unmounted.
        let leftover = tempfile::NamedTempFile::new().expect("temp file");
        let result = Netlink.default_routes(leftover.path()).await;
        assert!(matches!(result, Err(NetnsError::NotANamespace { .. })), "{result:?}");
        // A namespace, but not a network one.
        let result = Netlink.links(Path::new("/proc/thread-self/ns/uts")).await;
        assert!(matches!(result, Err(NetnsError::NotANamespace { .. })), "{result:?}");

        assert!(open_netns(&missing).is_err());
        assert!(open_netns(Path::new("")).is_err());
        assert!(open_netns(leftover.path()).is_err());
        assert!(open_netns(Path::new(THREAD_NETNS)).is_ok());
        assert!(open_netns(Path::new("/proc/self/ns/net")).is_ok());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_named_netns_opens() {
        if !is_root() {
            return;
        }
        let netns = TestNetns::new();
        assert!(open_netns(&netns.path).is_ok());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn default_routes_lists_both_families() {
        if !is_root() {
            return;
        }
        let netns = TestNetns::new();
        let link = netns.veth_with("dr", "10.3.0.2/24");
        netns.ip(&["addr", "add", "fd00:3::2/64", "dev", &link, "nodad"]);
        assert!(Netlink.default_routes(&netns.path).await.expect("routes").is_empty());

        netns.ip(&["route", "add", "default", "via", "10.3.0.1", "dev", &link]);
        netns.ip(&["-6", "route", "add", "default", "via", "fd00:3::1", "dev", &link]);
        // Not in the main table, so not listed.
        netns.ip(&["route", "add", "default", "via", "10.3.0.9", "dev", &link, "table", "100"]);

        let routes = Netlink.default_routes(&netns.path).await.expect("routes");
        assert_eq!(
            routes,
            vec![
                DefaultRoute { ifname: link.clone(), gateway: Some(v4("10.3.0.1")), family: IpFamily::V4 },
                DefaultRoute { ifname: link.clone(), gateway: Some(v4("fd00:3::1")), family: IpFamily::V6 },
            ]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn set_default_route_replaces_default_routes_on_other_links() {
        if !is_root() {
            return;
        }
        let netns = TestNetns::new();
        let old = netns.veth_with("so", "10.4.0.2/24");
        let new = netns.veth_with("sn", "10.5.0.2/24");
        netns.ip(&["route", "add", "default", "via", "10.4.0.1", "dev", &old]);
        netns.ip(&["route", "add", "default", "via", "10.4.0.3", "dev", &old, "metric", "50"]);

        Netlink.set_default_route(&netns.path, &new, v4("10.5.0.1")).await.expect("set default route");

        let routes = Netlink.default_routes(&netns.path).await.expect("routes");
        assert_eq!(
            routes,
            vec![DefaultRoute { ifname: new.clone(), gateway: Some(v4("10.5.0.1")), family: IpFamily::V4 }]
        );
        assert_eq!(netns.default_routes_shown("-4"), vec![format!("default via 10.5.0.1 dev {new}")]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn set_default_route_is_idempotent() {
        if !is_root() {
            return;
        }
        let netns = TestNetns::new();
        let link = netns.veth_with("id", "10.6.0.2/24");
        for _ in 0..2 {
            Netlink.set_default_route(&netns.path, &link, v4("10.6.0.1")).await.expect("set default route");
            assert_eq!(netns.default_routes_shown("-4"), vec![format!("default via 10.6.0.1 dev {link}")]);
        }
        // An identical route with another metric is kept, not duplicated.
        netns.ip(&["route", "flush", "default"]);
        netns.ip(&["route", "add", "default", "via", "10.6.0.1", "dev", &link, "metric", "7"]);
        Netlink.set_default_route(&netns.path, &link, v4("10.6.0.1")).await.expect("set default route");
        assert_eq!(netns.default_routes_shown("-4"), vec![format!("default via 10.6.0.1 dev {link} metric 7")]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn set_default_route_ipv6_leaves_ipv4_alone() {
        if !is_root() {
            return;
        }
        let netns = TestNetns::new();
        let old = netns.veth_with("6o", "fd00:7::2/64");
        let new = netns.veth_with("6n", "fd00:8::2/64");
        netns.ip(&["addr", "add", "10.7.0.2/24", "dev", &old]);
        netns.ip(&["route", "add", "default", "via", "10.7.0.1", "dev", &old]);
        netns.ip(&["-6", "route", "add", "default", "via", "fd00:7::1", "dev", &old]);

        Netlink.set_default_route(&netns.path, &new, v4("fd00:8::1")).await.expect("set default route");

        let shown = netns.default_routes_shown("-6");
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert!(shown[0].starts_with(&format!("default via fd00:8::1 dev {new} ")), "{shown:?}");
        assert_eq!(netns.default_routes_shown("-4"), vec![format!("default via 10.7.0.1 dev {old}")]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn set_default_route_on_missing_link_fails_and_changes_nothing() {
        if !is_root() {
            return;
        }
        let netns = TestNetns::new();
        let link = netns.veth_with("ml", "10.9.0.2/24");
        netns.ip(&["route", "add", "default", "via", "10.9.0.1", "dev", &link]);

        let result = Netlink.set_default_route(&netns.path, "nosuchlink0", v4("10.9.0.1")).await;

        assert!(
            matches!(&result, Err(NetnsError::LinkNotFound { ifname, .. }) if ifname == "nosuchlink0"),
            "{result:?}"
        );
        assert_eq!(netns.default_routes_shown("-4").len(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn host_netns_is_untouched() {
        if !is_root() {
            return;
        }
        let host_v4 = ip(&["-4", "route", "show", "default"]);
        let host_v6 = ip(&["-6", "route", "show", "default"]);
        let thread = thread_netns();

        let netns = TestNetns::new();
        let link = netns.veth_with("ht", "10.11.0.2/24");
        Netlink.set_default_route(&netns.path, &link, v4("10.11.0.1")).await.expect("set default route");
        let failed = Netlink.set_default_route(&netns.path, "nosuchlink0", v4("10.11.0.1"));
        assert!(failed.await.is_err());
        assert_eq!(thread_netns(), thread);
        // The host's own view is still the host's.
        let host_link = Netlink.host_link(&link).await.expect("host link");
        assert_eq!(host_link, None);
        let lo = Netlink.host_link("lo").await.expect("host lo");
        assert!(lo.is_some_and(|lo| lo.up));
        Netlink.host_default_routes().await.expect("host default routes");

        assert_eq!(thread_netns(), thread);
        assert_eq!(ip(&["-4", "route", "show", "default"]), host_v4);
        assert_eq!(ip(&["-6", "route", "show", "default"]), host_v6);
    }

    #[test]
    fn thread_returns_to_its_netns_even_on_panic() {
        if !is_root() {
            return;
        }
        let netns = TestNetns::new();
        let before = thread_netns();
        let mut inside = None;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _return = ReturnToNetns::enter(&netns.path).expect("enter netns");
            inside = Some(thread_netns());
            panic!("panicking inside the netns on purpose");
        }));
        assert!(result.is_err());
        assert!(inside.as_ref().is_some_and(|inside| *inside != before), "{inside:?}");
        assert_eq!(thread_netns(), before);
    }

    #[test]
    fn next_hops_expands_multipath_routes() {
        let mut hop = rtnetlink::packet_route::route::RouteNextHop::default();
        hop.interface_index = 3;
        hop.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 0, 0, 1)))];
        let mut other = hop.clone();
        other.interface_index = 4;
        other.attributes.clear();
        let mut route = RouteMessage::default();
        route.attributes = vec![RouteAttribute::Table(MAIN_TABLE), RouteAttribute::MultiPath(vec![hop, other])];

        assert_eq!(next_hops(&route), vec![(3, Some(v4("10.0.0.1"))), (4, None)]);
        assert_eq!(route_table(&route), MAIN_TABLE);
    }

    #[test]
    fn mac_is_lower_case_colon_separated() {
        assert_eq!(format_mac(&[0x02, 0xAB, 0, 0x0c, 0xd0, 0xff]), "02:ab:00:0c:d0:ff");
    }

    fn fake_link(name: &str) -> LinkInfo {
        LinkInfo {
            name: name.to_owned(),
            index: 2,
            mac: None,
            mtu: Some(1500),
            addresses: Vec::new(),
            up: true,
            promiscuous: false,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn fake_replaces_default_routes_per_family_and_records_calls() {
        let pod = Path::new("/var/run/netns/pod");
        let fake = FakeNetns::new();
        fake.add_link(pod, fake_link("eth0"));
        fake.add_link(pod, fake_link("net1"));
        let v6_route = DefaultRoute { ifname: "eth0".to_owned(), gateway: Some(v4("fd00::1")), family: IpFamily::V6 };
        fake.add_default_route(pod, v6_route.clone());
        fake.add_default_route(
            pod,
            DefaultRoute { ifname: "eth0".to_owned(), gateway: Some(v4("10.0.0.1")), family: IpFamily::V4 },
        );

        fake.set_default_route(pod, "net1", v4("10.1.0.1")).await.expect("set");
        let net1_route =
            DefaultRoute { ifname: "net1".to_owned(), gateway: Some(v4("10.1.0.1")), family: IpFamily::V4 };
        let routes = fake.default_routes(pod).await.expect("routes");
        assert_eq!(routes, vec![v6_route, net1_route.clone()]);

        let missing_link = fake.set_default_route(pod, "net9", v4("10.1.0.1")).await;
        assert!(matches!(missing_link, Err(NetnsError::LinkNotFound { .. })));
        assert_eq!(fake.link(pod, "net1").await.expect("link"), Some(fake_link("net1")));
        assert_eq!(fake.link(pod, "net9").await.expect("link"), None);

        assert_eq!(
            fake.calls()[..2],
            [
                FakeCall::SetDefaultRoute { netns: pod.to_owned(), ifname: "net1".to_owned(), gateway: v4("10.1.0.1") },
                FakeCall::DefaultRoutes { netns: pod.to_owned() },
            ]
        );
        assert_eq!(fake.calls().len(), 5);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn fake_reports_removed_netns_as_not_found() {
        let pod = Path::new("/var/run/netns/pod");
        let fake = FakeNetns::new();
        fake.add_netns(pod);
        assert_eq!(fake.links(pod).await.expect("links"), Vec::new());

        fake.remove_netns(pod);
        let result = fake.set_default_route(pod, "eth0", v4("10.1.0.1")).await;
        assert!(matches!(result, Err(NetnsError::NotFound { .. })), "{result:?}");
        assert_eq!(
            fake.calls().last(),
            Some(&FakeCall::SetDefaultRoute {
                netns: pod.to_owned(),
                ifname: "eth0".to_owned(),
                gateway: v4("10.1.0.1")
            })
        );
    }
}
