//! The network selection annotation parser: both annotations, any text. A selection
//! that parses has a name and a namespace, and survives the default-route check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multus::k8s::selection::{check_default_routes, parse_default_network, parse_networks};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(sels) = parse_networks(text, "pod-ns") {
        assert!(sels.iter().all(|s| !s.name.is_empty() && !s.namespace.is_empty()));
        let _ = check_default_routes(&sels);
    }
    if let Ok(sel) = parse_default_network(text, "kube-system") {
        assert!(!sel.name.is_empty() && !sel.namespace.is_empty());
    }
});
