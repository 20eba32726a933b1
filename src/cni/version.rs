//! CNI spec versions.

use crate::error::{CniError, VersionError};
use std::fmt;

/// Every spec version this plugin speaks, oldest first (VERSION's `supportedVersions`).
pub const SUPPORTED_VERSIONS: [&str; 7] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest version; VERSION answers in it when the caller names none.
pub const LATEST: &str = "1.1.0";

/// A parsed `major.minor.patch` spec version, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u16, pub u16, pub u16);

impl Version {
    pub const V0_1_0: Version = Version(0, 1, 0);
    pub const V0_3_0: Version = Version(0, 3, 0);
    pub const V0_4_0: Version = Version(0, 4, 0);
    pub const V1_0_0: Version = Version(1, 0, 0);
    pub const V1_1_0: Version = Version(1, 1, 0);

    /// Parse `x.y.z` (no pre-release suffix, as the spec's versions have none).
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.split('.').map(|p| p.parse::<u16>().ok());
        let v = Version(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(v)
    }

    /// The version of a config: absent or empty means 0.1.0 (as libcni/skel treat it);
    /// anything we do not speak is code 1.
    pub fn of_config(s: &str) -> Result<Version, CniError> {
        if s.is_empty() {
            return Ok(Version::V0_1_0);
        }
        match Version::parse(s) {
            Some(v) if SUPPORTED_VERSIONS.contains(&s) => Ok(v),
            _ => Err(VersionError::Incompatible { config: s.to_string(), supported: &SUPPORTED_VERSIONS }.into()),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert_eq!(Version::parse("0.3.1"), Some(Version(0, 3, 1)));
        assert!(Version::parse("0.3").is_none());
        assert!(Version::parse("1.0.0.0").is_none());
        assert!(Version::parse("a.b.c").is_none());
        assert!(Version::V0_4_0 < Version::V1_0_0);
        assert_eq!(Version::of_config("").unwrap(), Version::V0_1_0);
        assert_eq!(Version::of_config("0.9.0").unwrap_err().code, 1);
        assert_eq!(Version::of_config("1.1.0").unwrap(), Version::V1_1_0);
        for v in SUPPORTED_VERSIONS {
            assert_eq!(Version::of_config(v).unwrap().to_string(), v);
        }
    }
}
