//! HTTPS as a kube-apiserver serves it: its own CA (made at start, never written
//! anywhere but the kubeconfig the caller asks for), a serving certificate for
//! `127.0.0.1`, `::1` and `localhost` signed by that CA, and ALPN `h2` + `http/1.1`.

use std::io;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// The server's TLS settings and the CA a client must trust.
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    /// The CA certificate, PEM (what a kubeconfig's `certificate-authority-data` holds).
    pub(crate) ca_pem: String,
}

fn invalid(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("kube-standin TLS: {what}: {e}"))
}

impl Tls {
    /// A fresh CA and serving certificate (ECDSA P-256, as kubeadm's are not, but the
    /// handshake cost is the same order and key generation takes microseconds).
    pub(crate) fn generate() -> io::Result<Tls> {
        let ca_key = KeyPair::generate().map_err(|e| invalid("CA key", e))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| invalid("CA params", e))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "kube-standin-ca");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| invalid("CA certificate", e))?;

        let key = KeyPair::generate().map_err(|e| invalid("serving key", e))?;
        // rcgen makes an IP-address SAN of every name that parses as an IP address.
        let names = vec!["127.0.0.1".to_owned(), "::1".to_owned(), "localhost".to_owned()];
        let mut params = CertificateParams::new(names).map_err(|e| invalid("serving params", e))?;
        params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca).map_err(|e| invalid("serving certificate", e))?;

        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone(), ca.der().clone()];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("protocol versions", e))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| invalid("serving certificate", e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(config)), ca_pem: ca.pem() })
    }
}
