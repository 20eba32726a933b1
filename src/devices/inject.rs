//! A device ID into a delegate's config, exactly as Go Multus does
//! (`delegateAddDeviceID`, `addDeviceIDInConfList`): the top-level keys `deviceID` and
//! `pciBusID` of a single config, or of **every** plugin of a conflist. Plugins that
//! declare the `deviceID` capability also get it in `runtimeConfig` (see `super::attach`).

use crate::delegate::NetworkConfig;
use crate::error::Result;
use serde_json::{Map, Value};

pub fn device_id(config: NetworkConfig, device_id: &str) -> Result<NetworkConfig> {
    fn set(plugin: &mut Map<String, Value>, id: &str) {
        plugin.insert("deviceID".into(), id.into());
        plugin.insert("pciBusID".into(), id.into());
    }
    let mut value = config.value().clone();
    if config.is_list() {
        if let Some(plugins) = value.get_mut("plugins").and_then(Value::as_array_mut) {
            plugins.iter_mut().filter_map(Value::as_object_mut).for_each(|p| set(p, device_id));
        }
    } else {
        set(&mut value, device_id);
    }
    NetworkConfig::with_value(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_conf_and_every_plugin_of_a_conflist() {
        let c = NetworkConfig::from_value(&json!({"cniVersion":"1.0.0","name":"s","type":"sriov","vlan":5})).unwrap();
        let v: Value = serde_json::from_slice(&device_id(c, "0000:03:02.3").unwrap().bytes).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion":"1.0.0","name":"s","type":"sriov","vlan":5,"deviceID":"0000:03:02.3","pciBusID":"0000:03:02.3"})
        );
        let l = NetworkConfig::from_value(
            &json!({"cniVersion":"1.0.0","name":"l","plugins":[{"type":"sriov"},{"type":"tuning","sysctl":{}}]}),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&device_id(l, "0000:03:02.4").unwrap().bytes).unwrap();
        for p in v["plugins"].as_array().unwrap() {
            assert_eq!((p["deviceID"].as_str(), p["pciBusID"].as_str()), (Some("0000:03:02.4"), Some("0000:03:02.4")));
        }
        assert!(v.get("deviceID").is_none(), "not at the list level");
    }
}
