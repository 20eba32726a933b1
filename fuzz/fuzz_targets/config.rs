//! `00-multus.conf` as it arrives on stdin: any bytes. Errors carry the codes skel
//! uses (1, 6, 7); a config that parses answers every accessor without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multus::config::MultusConf;

fuzz_target!(|data: &[u8]| {
    match MultusConf::parse(data) {
        Ok(c) => {
            let _ = c.require_networks();
            let _ = (c.version(), c.global_namespaces(), c.delegate_timeout(), c.api_timeout(), c.readiness_timeout());
            for d in &c.delegates {
                let _ = multus::delegate::NetworkConfig::from_value(d);
            }
        }
        Err(e) => assert!([1, 6, 7].contains(&e.code), "code {}", e.code),
    }
});
