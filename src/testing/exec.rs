//! A fake [`PluginExec`]: records every delegate invocation and answers from a script.

use crate::cni::Command;
use crate::delegate::{PluginExec, RuntimeConf, validate_plugin_type};
use crate::error::{CniError, Result};
use serde_json::Value;
use std::path::PathBuf;

/// A fake [`PluginExec`] for unit tests: records every call, answers from a script.
#[derive(Debug, Default)]
pub struct FakeExec {
    pub calls: std::sync::Mutex<Vec<FakeCall>>,
    /// `(plugin type, command)` → what to answer; missing entries answer a minimal result.
    pub answers: std::sync::Mutex<Vec<FakeAnswer>>,
}

/// `(plugin type, command, answer)`.
pub type FakeAnswer = (String, Command, Result<Option<Value>>);

#[derive(Debug, Clone)]
pub struct FakeCall {
    pub plugin: String,
    pub command: Command,
    pub ifname: String,
    pub cni_args: Vec<(String, String)>,
    pub stdin: Value,
}

impl FakeExec {
    pub fn answer(&self, plugin: &str, command: Command, answer: Result<Option<Value>>) {
        self.answers.lock().unwrap_or_else(|e| e.into_inner()).push((plugin.into(), command, answer));
    }

    pub fn calls(&self) -> Vec<FakeCall> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl PluginExec for FakeExec {
    fn find(&self, plugin_type: &str) -> Result<PathBuf> {
        validate_plugin_type(plugin_type)?;
        if plugin_type.starts_with("missing") {
            return Err(CniError::invalid_config(format!("failed to find plugin {plugin_type:?}")));
        }
        Ok(PathBuf::from("/fake").join(plugin_type))
    }

    async fn exec(&self, plugin_type: &str, command: Command, rt: &RuntimeConf, stdin: &[u8]) -> Result<Option<Value>> {
        let stdin: Value = serde_json::from_slice(stdin).unwrap_or_default();
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).push(FakeCall {
            plugin: plugin_type.into(),
            command,
            ifname: rt.ifname.clone(),
            cni_args: rt.cni_args.clone(),
            stdin: stdin.clone(),
        });
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, a)) = answers.iter().find(|(p, c, _)| p == plugin_type && *c == command) {
            return a.clone();
        }
        Ok(match command {
            Command::Add => Some(serde_json::json!({
                "cniVersion": stdin.get("cniVersion").cloned().unwrap_or_default(),
                "interfaces": [{"name": rt.ifname, "mac": "02:00:00:00:00:01", "sandbox": rt.netns}],
                "ips": [{"interface": 0, "address": "10.0.0.2/24", "gateway": "10.0.0.1"}],
                "dns": {}
            })),
            _ => None,
        })
    }
}
