//! The one error type of the plugin: a CNI error with its spec code.
//!
//! Every failure that can reach the runtime is a [`CniError`]; `main` prints it as the
//! CNI error JSON `{cniVersion, code, msg, details}` on stdout and exits 1.

use serde::{Deserialize, Serialize};

mod kinds;
pub use kinds::{
    DecodeError, DelegateError, EnvError, IoError, KubeError, NotAvailable, OverLimit, VersionError, WaitError,
};

/// CNI spec error codes (SPEC.md "Error"), plus the plugin-specific ones (100+).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Invalid network namespace: the plugin was asked to work on its own (skel's rule).
    pub const INVALID_NETNS: u32 = 8;
    /// Try again later (transient: API server unreachable, readiness not reached).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, existing containers may be degraded.
    pub const NOT_AVAILABLE_DEGRADED: u32 = 51;
    /// A delegate failed without a CNI error of its own (crash, signal, garbage, deadline).
    pub const DELEGATE_FAILED: u32 = 100;
    /// A non-transient Kubernetes API failure (forbidden, NAD missing, pod UID mismatch).
    pub const KUBERNETES: u32 = 101;
    /// A failure inside the pod's network namespace (netlink, interface name taken).
    pub const NETNS: u32 = 102;
}

/// A CNI error: code, message and details, exactly the spec's error object.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
    /// Where in `msg` the pod's tag goes, and what follows it: marked by
    /// [`CniError::about_pod`] where the error arises, filled in once per verb by
    /// [`CniError::with_pod_tag`]. Never part of the wire format.
    #[serde(skip)]
    pod_tag_at: Vec<(usize, &'static str)>,
}

/// The wire fields only: a pending pod tag is not part of what the error says.
impl PartialEq for CniError {
    fn eq(&self, other: &Self) -> bool {
        (self.code, &self.msg, &self.details) == (other.code, &other.msg, &other.details)
    }
}

impl Eq for CniError {}

pub type Result<T, E = CniError> = std::result::Result<T, E>;

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new(), pod_tag_at: Vec::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Prefix our context to the message, keeping the code (a delegate's own code survives).
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        self.prefixed(&format!("{ctx}: "))
    }

    fn prefixed(mut self, prefix: &str) -> Self {
        self.msg.insert_str(0, prefix);
        self.pod_tag_at.iter_mut().for_each(|(at, _)| *at += prefix.len());
        self
    }

    /// This error is about the verb's pod: its message will start `[ns/name/uid]: `.
    pub fn about_pod(mut self) -> Self {
        self.pod_tag_at.push((0, ": "));
        self
    }

    /// As [`Self::about_pod`] where the tag opens the sentence: `[ns/name/uid] msg`.
    pub fn about_pod_phrase(mut self) -> Self {
        self.pod_tag_at.push((0, " "));
        self
    }

    /// Put the pod's tag where [`Self::about_pod`] marked it; done once, where a verb
    /// that works on a pod returns.
    pub fn with_pod_tag(mut self, tag: &str) -> Self {
        let mut marks = std::mem::take(&mut self.pod_tag_at);
        // From the end, so that each insertion leaves the earlier positions valid.
        marks.sort_by_key(|&(at, _)| std::cmp::Reverse(at));
        for (at, separator) in marks {
            self.msg.insert_str(at, &format!("{tag}{separator}"));
        }
        self
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }

    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg)
    }

    pub fn io(what: impl std::fmt::Display, err: std::io::Error) -> Self {
        IoError::Op { what: what.to_string(), source: err }.into()
    }

    /// The JSON document printed on stdout, in the caller's cniVersion.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v
    }
}

/// Collects errors while cleanup goes on (DEL, rollback), then reports them all.
#[derive(Debug, Default)]
pub struct ErrorList(Vec<CniError>);

impl ErrorList {
    pub fn push(&mut self, e: CniError) {
        self.0.push(e);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One error: the single one as is, several joined as Go Multus does (`errors: a / b`),
    /// with the code of the first.
    pub fn into_result(self) -> Result<()> {
        let mut errors = self.0;
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => {
                let mut joined = CniError::new(errors[0].code, "errors: ");
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        joined.msg.push_str(" / ");
                    }
                    let start = joined.msg.len();
                    joined.pod_tag_at.extend(e.pod_tag_at.iter().map(|&(at, sep)| (start + at, sep)));
                    joined.msg.push_str(&e.msg);
                }
                let details = errors
                    .iter()
                    .filter(|e| !e.details.is_empty())
                    .map(|e| e.details.as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                Err(joined.with_details(details))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_tag_goes_where_it_was_marked_through_context_and_joins() {
        let tag = "[ns/pod/uid]";
        let sentence = CniError::new(code::IO, "disk full").about_pod();
        assert_eq!(sentence.clone().with_pod_tag(tag).msg, "[ns/pod/uid]: disk full");
        let phrase = CniError::new(code::NETNS, "gone").context("error deleting net1 (a)").about_pod_phrase();
        assert_eq!(phrase.clone().with_pod_tag(tag).msg, "[ns/pod/uid] error deleting net1 (a): gone");
        // Context added after the mark keeps the tag where it was marked.
        assert_eq!(sentence.clone().context("outer").with_pod_tag(tag).msg, "outer: [ns/pod/uid]: disk full");
        let mut errors = ErrorList::default();
        errors.push(phrase);
        errors.push(CniError::new(code::IO, "untagged"));
        errors.push(sentence);
        let joined = errors.into_result().unwrap_err().with_pod_tag(tag);
        assert_eq!(
            joined.msg,
            "errors: [ns/pod/uid] error deleting net1 (a): gone / untagged / [ns/pod/uid]: disk full"
        );
        assert_eq!(joined.code, code::NETNS);
        // Unmarked errors and the wire format are untouched.
        assert_eq!(CniError::new(7, "x").with_pod_tag(tag).msg, "x");
        assert_eq!(joined.to_json("1.0.0")["msg"], joined.msg.as_str());
    }
}
