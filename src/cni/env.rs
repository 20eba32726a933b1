//! The runtime's environment (`CNI_*` variables), validated exactly as libcni's skel does.

use crate::error::{CniError, EnvError, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::invalid_env(format!("unknown CNI_COMMAND: {other}")));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// `CNI_ARGS`: `K=V;K=V`, order kept (delegates get them in the same order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(pub Vec<(String, String)>);

impl CniArgs {
    /// Parse `CNI_ARGS`. Empty pairs are skipped; a value may contain `=`; a non-empty
    /// pair without `=` is invalid (code 4).
    pub fn parse(s: &str) -> Result<CniArgs> {
        let mut pairs = Vec::new();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| CniError::invalid_env(format!("CNI_ARGS: invalid pair {pair:?}")))?;
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(CniArgs(pairs))
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn to_env_string(&self) -> String {
        format_cni_args(&self.0)
    }

    /// Set `key` when it has no non-empty value yet, else append (Multus' merge rule),
    /// except that an identical pair is not repeated (Go Multus sends every K8S_* twice).
    pub fn merge(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) if v.is_empty() => *v = value.to_string(),
            Some((_, v)) if v == value => {}
            _ => self.0.push((key.to_string(), value.to_string())),
        }
    }
}

/// The pod identity a Kubernetes runtime passes in `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K8sArgs {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub infra_container_id: String,
}

const KNOWN_ARGS: [&str; 6] =
    ["IgnoreUnknown", "IP", "K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"];

impl K8sArgs {
    /// As Go Multus' `GetK8sArgs` (libcni `LoadArgs`): any key order; an unknown key is an
    /// error unless `IgnoreUnknown` is `1`/`true` (every runtime sends it).
    pub fn from_args(args: &CniArgs) -> Result<K8sArgs> {
        let ignore_unknown = match args.get("IgnoreUnknown").map(str::to_ascii_lowercase).as_deref() {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => {
                return Err(CniError::invalid_env(format!("CNI_ARGS: IgnoreUnknown: invalid boolean {other:?}")));
            }
        };
        if !ignore_unknown && let Some((k, _)) = args.0.iter().find(|(k, _)| !KNOWN_ARGS.contains(&k.as_str())) {
            return Err(CniError::invalid_env(format!("CNI_ARGS: unknown args [\"{k}\"]")));
        }
        let get = |k| args.get(k).unwrap_or_default().to_string();
        Ok(K8sArgs {
            namespace: get("K8S_POD_NAMESPACE"),
            name: get("K8S_POD_NAME"),
            uid: get("K8S_POD_UID"),
            infra_container_id: get("K8S_POD_INFRA_CONTAINER_ID"),
        })
    }

    /// `[ns/name/uid]`, the prefix Go Multus puts on every pod-scoped message.
    pub fn tag(&self) -> String {
        format!("[{}/{}/{}]", self.namespace, self.name, self.uid)
    }

    pub fn has_pod(&self) -> bool {
        !self.namespace.is_empty() && !self.name.is_empty()
    }
}

/// Everything the runtime told us in the environment.
#[derive(Debug, Clone)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    /// Empty on a DEL whose netns is already gone (containerd's second DEL).
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, skel's container ID rule.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `K=V;K=V`: the CNI_ARGS wire form of `pairs`, in order.
pub fn format_cni_args(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
}

/// The longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_BYTES: usize = 15;

/// An interface name as libcni's `ValidateInterfaceName` and the kernel's `dev_valid_name`
/// accept it (multus-cni#1243: not as a DNS label): 1..=15 bytes, not `.` or `..`, no `/`,
/// `:` or Unicode whitespace. NUL is rejected too: the kernel would truncate the name there.
/// The one rule for CNI_IFNAME, the annotation's `interface` and every planned attachment.
pub fn check_ifname(name: &str) -> Result<(), InvalidIfname> {
    let reason = if name.is_empty() {
        Some(IfnameProblem::Empty)
    } else if name.len() > MAX_IFNAME_BYTES {
        Some(IfnameProblem::TooLong(name.len()))
    } else if name == "." || name == ".." {
        Some(IfnameProblem::Dots)
    } else {
        name.chars().find_map(|c| match c {
            '/' => Some(IfnameProblem::Slash),
            ':' => Some(IfnameProblem::Colon),
            '\0' => Some(IfnameProblem::Nul),
            c if c.is_whitespace() => Some(IfnameProblem::Whitespace),
            _ => None,
        })
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(InvalidIfname { name: name.to_owned(), reason }),
    }
}

/// An interface name the kernel (or libcni) would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid interface name {name:?}: {reason}")]
pub struct InvalidIfname {
    pub name: String,
    pub reason: IfnameProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IfnameProblem {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 15 bytes, not {0}")]
    TooLong(usize),
    #[error("must not be \".\" or \"..\"")]
    Dots,
    #[error("must not contain '/'")]
    Slash,
    #[error("must not contain ':'")]
    Colon,
    #[error("must not contain whitespace")]
    Whitespace,
    #[error("must not contain NUL")]
    Nul,
}

impl CniEnv {
    /// Read and validate the environment through `get` (the process env in production).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv> {
        let var = |k: &str| get(k).unwrap_or_default();
        let command = Command::parse(&var("CNI_COMMAND"))?;
        use Command::*;
        let required: &[(&str, &[Command])] = &[
            ("CNI_CONTAINERID", &[Add, Check, Del]),
            ("CNI_NETNS", &[Add, Check]),
            ("CNI_IFNAME", &[Add, Check, Del]),
            ("CNI_PATH", &[Add, Check, Del, Gc, Status]),
        ];
        let missing: Vec<&str> =
            required.iter().filter(|(k, cmds)| cmds.contains(&command) && var(k).is_empty()).map(|(k, _)| *k).collect();
        if !missing.is_empty() {
            return Err(CniError::invalid_env(format!("required env variables [{}] missing", missing.join(","))));
        }
        let container_id = var("CNI_CONTAINERID");
        if !container_id.is_empty() && !valid_container_id(&container_id) {
            return Err(EnvError::InvalidContainerId(container_id).into());
        }
        let ifname = var("CNI_IFNAME");
        if !ifname.is_empty() {
            check_ifname(&ifname).map_err(|e| CniError::invalid_env(format!("CNI_IFNAME: {e}")))?;
        }
        let args = CniArgs::parse(&var("CNI_ARGS"))?;
        let path = std::env::split_paths(&var("CNI_PATH")).filter(|p| !p.as_os_str().is_empty()).collect();
        Ok(CniEnv { command, container_id, netns: var("CNI_NETNS"), ifname, args, path })
    }

    pub fn from_process() -> Result<CniEnv> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        CniEnv::from_lookup(|k| m.get(k).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_NETNS", "/n"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/a:/b"),
    ];

    #[test]
    fn required_vars_per_verb() {
        let e = env(ADD).unwrap();
        assert_eq!(e.path.len(), 2);
        let err = env(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(err.code, 4);
        assert_eq!(err.msg, "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing");
        // DEL does not need a netns
        env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "a"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/a")]).unwrap();
        env(&[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/a")]).unwrap();
        env(&[("CNI_COMMAND", "VERSION")]).unwrap();
        assert_eq!(env(&[("CNI_COMMAND", "FOO")]).unwrap_err().code, 4);
    }

    #[test]
    fn validates_container_id_and_ifname() {
        let mut v = ADD.to_vec();
        v[1] = ("CNI_CONTAINERID", "-bad");
        assert_eq!(env(&v).unwrap_err().code, 4);
        v[1] = ("CNI_CONTAINERID", "ok.id_1-2");
        for bad in ["a/b", "a:b", "a b", "0123456789abcdef", ".", ".."] {
            v[3] = ("CNI_IFNAME", bad);
            assert_eq!(env(&v).unwrap_err().code, 4, "{bad}");
        }
        v[3] = ("CNI_IFNAME", "0123456789abcde");
        env(&v).unwrap();
    }

    #[test]
    fn k8s_args_any_order_and_unknown_keys() {
        let a = CniArgs::parse("K8S_POD_UID=u;IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;FOO=a=b").unwrap();
        assert_eq!(a.get("FOO"), Some("a=b"));
        let k = K8sArgs::from_args(&a).unwrap();
        assert_eq!((k.namespace.as_str(), k.name.as_str(), k.uid.as_str()), ("ns", "p", "u"));
        let strict = CniArgs::parse("K8S_POD_NAME=p;FOO=1").unwrap();
        assert_eq!(K8sArgs::from_args(&strict).unwrap_err().code, 4);
        assert_eq!(CniArgs::parse("novalue").unwrap_err().code, 4);
        assert!(CniArgs::parse("").unwrap().0.is_empty());
        let mut m = CniArgs::parse("A=;B=1").unwrap();
        m.merge("A", "x");
        m.merge("B", "2");
        m.merge("B", "1");
        assert_eq!(m.to_env_string(), "A=x;B=1;B=2");
    }
}
