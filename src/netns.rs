//! Network namespace and netlink operations (placeholder until the netns module lands).

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetnsError(String);

pub trait NetnsOps {
    async fn link(&self, netns: &Path, ifname: &str) -> Result<Option<LinkInfo>, NetnsError>;
}

pub struct Netlink;

impl NetnsOps for Netlink {
    async fn link(&self, _netns: &Path, _ifname: &str) -> Result<Option<LinkInfo>, NetnsError> {
        Ok(None)
    }
}
