//! Network namespace and netlink operations.
