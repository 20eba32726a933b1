//! An in-memory [`NetnsOps`]: namespaces are paths holding links and default routes.

use crate::netns::{DefaultRoute, IpFamily, LinkInfo, NetnsError, NetnsOps};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// An in-memory [`NetnsOps`] for tests of code that drives network
/// namespaces: namespaces are paths holding links and default routes, and
/// every call is recorded for [`FakeNetns::calls`]. Unknown paths behave
/// like deleted namespaces ([`NetnsError::NotFound`]).
#[derive(Debug, Default)]
pub struct FakeNetns {
    state: Mutex<FakeState>,
}

/// A call made to a [`FakeNetns`], with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    Link { netns: PathBuf, ifname: String },
    Links { netns: PathBuf },
    DefaultRoutes { netns: PathBuf },
    SetDefaultRoute { netns: PathBuf, ifname: String, gateway: IpAddr },
}

#[derive(Debug, Default)]
struct FakeState {
    namespaces: HashMap<PathBuf, FakeNamespace>,
    calls: Vec<FakeCall>,
}

#[derive(Debug, Default)]
struct FakeNamespace {
    links: Vec<LinkInfo>,
    default_routes: Vec<DefaultRoute>,
}

impl FakeNetns {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock already failed; the
        // state itself is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates an empty namespace at `netns` (no-op if it exists).
    pub fn add_netns(&self, netns: impl Into<PathBuf>) {
        self.state().namespaces.entry(netns.into()).or_default();
    }

    /// Deletes the namespace at `netns`, as the runtime does before a DEL.
    pub fn remove_netns(&self, netns: &Path) {
        self.state().namespaces.remove(netns);
    }

    /// Adds a link, creating the namespace if needed.
    pub fn add_link(&self, netns: impl Into<PathBuf>, link: LinkInfo) {
        let mut state = self.state();
        state.namespaces.entry(netns.into()).or_default().links.push(link);
    }

    /// Adds a default route, creating the namespace if needed.
    pub fn add_default_route(&self, netns: impl Into<PathBuf>, route: DefaultRoute) {
        let mut state = self.state();
        let namespace = state.namespaces.entry(netns.into()).or_default();
        namespace.default_routes.push(route);
    }

    /// The calls made so far, oldest first.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.state().calls.clone()
    }

    /// Records `call`, then runs `operation` on the namespace at `netns`.
    fn call<T>(
        &self,
        netns: &Path,
        call: FakeCall,
        operation: impl FnOnce(&mut FakeNamespace) -> Result<T, NetnsError>,
    ) -> Result<T, NetnsError> {
        let mut state = self.state();
        state.calls.push(call);
        match state.namespaces.get_mut(netns) {
            Some(namespace) => operation(namespace),
            None => Err(NetnsError::NotFound { path: netns.display().to_string() }),
        }
    }

    /// The link named `ifname`, or `None` (recorded as a call, as the real reads are).
    pub async fn link(&self, netns: &Path, ifname: &str) -> Result<Option<LinkInfo>, NetnsError> {
        let call = FakeCall::Link { netns: netns.to_owned(), ifname: ifname.to_owned() };
        self.call(netns, call, |namespace| Ok(namespace.links.iter().find(|link| link.name == ifname).cloned()))
    }

    /// The namespace's default routes (recorded as a call).
    pub async fn default_routes(&self, netns: &Path) -> Result<Vec<DefaultRoute>, NetnsError> {
        let call = FakeCall::DefaultRoutes { netns: netns.to_owned() };
        self.call(netns, call, |namespace| Ok(namespace.default_routes.clone()))
    }
}

impl NetnsOps for FakeNetns {
    async fn links(&self, netns: &Path) -> Result<Vec<LinkInfo>, NetnsError> {
        let call = FakeCall::Links { netns: netns.to_owned() };
        self.call(netns, call, |namespace| Ok(namespace.links.clone()))
    }

    async fn set_default_route(&self, netns: &Path, ifname: &str, gateway: IpAddr) -> Result<(), NetnsError> {
        let call = FakeCall::SetDefaultRoute { netns: netns.to_owned(), ifname: ifname.to_owned(), gateway };
        self.call(netns, call, |namespace| {
            if !namespace.links.iter().any(|link| link.name == ifname) {
                return Err(NetnsError::LinkNotFound { netns: netns.display().to_string(), ifname: ifname.to_owned() });
            }
            let family = IpFamily::of(gateway);
            namespace.default_routes.retain(|route| route.family != family);
            namespace.default_routes.push(DefaultRoute { ifname: ifname.to_owned(), gateway: Some(gateway), family });
            Ok(())
        })
    }
}
