//! rustls configurations: TLS 1.3 with ring, mutual authentication against the cluster CA.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;

use crate::{Alpn, Credentials, Error};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(creds: &Credentials) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    roots.add(creds.ca.clone()).map_err(|e| {
        Error::Config(format!(
            "the CA certificate is not usable as a trust anchor: {e}"
        ))
    })?;
    Ok(Arc::new(roots))
}

/// Accepts both protocols; every client must present a certificate issued by the cluster CA.
pub fn server_config(creds: &Credentials) -> Result<QuicServerConfig, Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(creds)?, provider())
        .build()
        .map_err(|e| Error::Config(format!("client verifier: {e}")))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(creds.chain.clone(), creds.key.clone_key())
        .map_err(|e| Error::Config(format!("the node certificate or key is unusable: {e}")))?;
    tls.alpn_protocols = vec![Alpn::Peer.wire().to_vec(), Alpn::Client.wire().to_vec()];
    tls.max_early_data_size = 0;
    QuicServerConfig::try_from(tls).map_err(|e| Error::Config(format!("QUIC server config: {e}")))
}

/// Dials one protocol, proving our certificate and checking the server's name against the CA.
pub fn client_config(creds: &Credentials, alpn: Alpn) -> Result<QuicClientConfig, Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(creds)?, provider())
        .build()
        .map_err(|e| Error::Config(format!("server verifier: {e}")))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config(format!("TLS versions: {e}")))?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())
        .map_err(|e| Error::Config(format!("the client certificate or key is unusable: {e}")))?;
    tls.alpn_protocols = vec![alpn.wire().to_vec()];
    tls.enable_early_data = false;
    QuicClientConfig::try_from(tls).map_err(|e| Error::Config(format!("QUIC client config: {e}")))
}

/// For TLS over TCP (ZooKeeper's secure client port): TLS 1.3 or 1.2 (ZooKeeper 3.8's Java
/// client defaults to 1.2), no ALPN, and every client presents a certificate issued by the
/// cluster CA, as ZooKeeper's `ssl.clientAuth=need`.
pub fn tcp_server_config(creds: &Credentials) -> Result<Arc<rustls::ServerConfig>, Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(creds)?, provider())
        .build()
        .map_err(|e| Error::Config(format!("client verifier: {e}")))?;
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Config(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(creds.chain.clone(), creds.key.clone_key())
        .map_err(|e| Error::Config(format!("the node certificate or key is unusable: {e}")))?;
    Ok(Arc::new(tls))
}
