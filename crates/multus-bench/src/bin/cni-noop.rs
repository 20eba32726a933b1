//! A CNI plugin that does nothing, fast: the delegate that isolates multus' own cost.
use std::io::Read;

fn main() {
    let mut stdin = String::new();
    let _ = std::io::stdin().read_to_string(&mut stdin);
    if std::env::var("CNI_COMMAND").as_deref() != Ok("ADD") {
        return;
    }
    let conf: serde_json::Value = serde_json::from_str(&stdin).unwrap_or_default();
    let version = conf.get("cniVersion").and_then(|v| v.as_str()).unwrap_or("1.0.0");
    let ifname = std::env::var("CNI_IFNAME").unwrap_or_default();
    let netns = std::env::var("CNI_NETNS").unwrap_or_default();
    let result = serde_json::json!({
        "cniVersion": version,
        "interfaces": [{"name": ifname, "mac": "02:00:00:00:00:01", "sandbox": netns}],
        "ips": [{"interface": 0, "address": "10.99.0.2/24", "gateway": "10.99.0.1"}],
        "dns": {}
    });
    println!("{result}");
}
