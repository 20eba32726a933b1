//! What went wrong on the way to the API server, in words an operator can act on, and
//! whether waiting can help (CNI code 11, retried inside the budget) or not (code 101,
//! returned at once: a bad CA or a revoked token does not heal by itself, and a kubelet
//! told "try again later" retries forever without anyone seeing the cause).

use crate::error::{CniError, KubeError};

/// The cause of a failed API call, from kube's error and its sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Nothing listens at the address (an apiserver restarting, a wrong port).
    Refused,
    /// The host name does not resolve.
    Dns(String),
    /// The server's certificate chain does not lead to the kubeconfig's CA.
    TlsUntrusted,
    /// The certificate is not for the host name or address in the kubeconfig.
    TlsNameMismatch,
    /// The certificate (or one of its chain) has expired or is not yet valid.
    TlsExpired,
    /// Another TLS failure (protocol, handshake, bad certificate encoding).
    Tls(String),
    /// 401: the token is not accepted.
    Unauthorized,
    /// 403: the service account may not do this.
    Forbidden,
    /// An HTTP status from the API server (429, 5xx, 404, ...).
    Status(u16),
    /// The response body went past `maxApiBodyBytes` (not retried: the same answer
    /// would come again).
    BodyTooLarge(u64),
    /// Anything else below HTTP (reset, timeout, broken stream).
    Transport,
}

impl Cause {
    pub fn of(e: &kube::Error) -> Cause {
        if let kube::Error::Api(s) = e {
            return match s.code {
                401 => Cause::Unauthorized,
                403 => Cause::Forbidden,
                other => Cause::Status(other),
            };
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = source {
            if let Some(cause) = Self::of_one(err) {
                return cause;
            }
            // io::Error's source() skips the error it wraps (hyper-rustls wraps rustls'
            // error in two of them): look at each wrapped one too.
            let mut wrapped = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
            while let Some(inner) = wrapped {
                if let Some(cause) = Self::of_one(inner) {
                    return cause;
                }
                wrapped = inner.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
            }
            source = err.source();
        }
        Cause::Transport
    }

    fn of_one(err: &(dyn std::error::Error + 'static)) -> Option<Cause> {
        if let Some(big) = err.downcast_ref::<super::transport::ApiBodyTooLarge>() {
            return Some(Cause::BodyTooLarge(big.limit));
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            use rustls::CertificateError as C;
            return Some(match tls {
                rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => Cause::TlsUntrusted,
                rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                    Cause::TlsNameMismatch
                }
                rustls::Error::InvalidCertificate(
                    C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
                ) => Cause::TlsExpired,
                other => Cause::Tls(other.to_string()),
            });
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return Some(Cause::Refused);
        }
        // hyper-util's connector names a failed lookup "dns error"; its source says why.
        let text = err.to_string();
        if text.starts_with("dns error") {
            let why = err.source().map(|s| s.to_string()).unwrap_or(text);
            return Some(Cause::Dns(why));
        }
        None
    }

    /// Whether waiting may help: an apiserver restarting, overloaded or briefly unreachable.
    pub fn is_transient(&self) -> bool {
        matches!(self, Cause::Refused | Cause::Transport | Cause::Status(429 | 500 | 502 | 503 | 504))
    }
}

/// `what` failed with `e` talking to `server` (the kubeconfig's URL): a CNI error whose
/// message names the cause, code 11 only when waiting may help.
pub fn api_error(what: &str, server: &str, e: &kube::Error) -> CniError {
    let cause = Cause::of(e);
    let message = match (&cause, e) {
        (Cause::Refused, _) => {
            format!("{what}: connection refused by {server} (is the API server up at that address?)")
        }
        (Cause::Dns(why), _) => format!("{what}: cannot resolve the API server's host in {server}: {why}"),
        (Cause::TlsUntrusted, _) => format!(
            "{what}: TLS: the certificate of {server} is not signed by the kubeconfig's CA \
             (certificate-authority-data does not match the cluster's CA)"
        ),
        (Cause::TlsNameMismatch, _) => {
            format!("{what}: TLS: the certificate of {server} is not valid for that host name or address")
        }
        (Cause::TlsExpired, _) => format!("{what}: TLS: the certificate of {server} has expired or is not yet valid"),
        (Cause::Tls(why), _) => format!("{what}: TLS with {server} failed: {why}"),
        (Cause::BodyTooLarge(limit), _) => format!("{what}: {}", super::transport::ApiBodyTooLarge { limit: *limit }),
        (Cause::Unauthorized, kube::Error::Api(s)) => format!(
            "{what}: 401 Unauthorized from {server}: the kubeconfig's token is not accepted \
             (expired or revoked; `multus install` rewrites it from the service account): {}",
            s.message
        ),
        (Cause::Forbidden, kube::Error::Api(s)) => format!(
            "{what}: 403 Forbidden: {} (the ClusterRole of deployments/multus-daemonset.yml grants what the plugin needs)",
            s.message
        ),
        (_, kube::Error::Api(s)) => format!("{what}: {} ({} {})", s.message, s.code, s.reason),
        (_, other) => format!("{what}: {other}"),
    };
    KubeError::Api { message, transient: cause.is_transient() }.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            serde_json::from_value(
                serde_json::json!({"status": "Failure", "message": message, "reason": "X", "code": code}),
            )
            .unwrap(),
        ))
    }

    fn service(err: impl std::error::Error + Send + Sync + 'static) -> kube::Error {
        kube::Error::Service(Box::new(err))
    }

    #[test]
    fn statuses() {
        assert_eq!(Cause::of(&api(401, "Unauthorized")), Cause::Unauthorized);
        assert_eq!(Cause::of(&api(403, "nope")), Cause::Forbidden);
        assert!(Cause::of(&api(503, "busy")).is_transient());
        assert!(!Cause::of(&api(404, "gone")).is_transient());
        let e = api_error("error getting pod a/b", "https://10.0.0.1:6443", &api(403, "pods \"b\" is forbidden"));
        assert_eq!(e.code, code::KUBERNETES);
        assert!(e.msg.contains("error getting pod a/b: 403 Forbidden: pods \"b\" is forbidden"), "{}", e.msg);
    }

    #[test]
    fn a_body_over_the_cap_names_the_key_and_is_not_retried() {
        let e = service(super::super::transport::ApiBodyTooLarge { limit: 4096 });
        assert_eq!(Cause::of(&e), Cause::BodyTooLarge(4096));
        let e = api_error("cannot get network-attachment-definition a/b", "s", &e);
        assert_eq!(e.code, code::KUBERNETES);
        assert!(e.msg.contains("4096 bytes") && e.msg.contains("maxApiBodyBytes"), "{}", e.msg);
    }

    #[test]
    fn wrapped_io_and_tls_errors() {
        let refused = service(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(Cause::of(&refused), Cause::Refused);
        let e = api_error("x", "https://10.0.0.1:6443", &refused);
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert!(e.msg.contains("connection refused by https://10.0.0.1:6443"), "{}", e.msg);
        for (tls, cause) in [
            (rustls::CertificateError::UnknownIssuer, Cause::TlsUntrusted),
            (rustls::CertificateError::NotValidForName, Cause::TlsNameMismatch),
            (rustls::CertificateError::Expired, Cause::TlsExpired),
        ] {
            // As tokio-rustls reports it: an io::Error wrapping the rustls error.
            let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::InvalidCertificate(tls));
            let e = service(wrapped);
            assert_eq!(Cause::of(&e), cause);
            assert_eq!(api_error("x", "s", &e).code, code::KUBERNETES);
        }
    }
}
