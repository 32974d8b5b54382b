//! Who is on the other end of a connection, read from the certificate it proved.

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The identity a verified peer certificate establishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A node of this cluster: its certificate names `node-<id>.<cluster>`.
    Node { id: u64 },
    /// A native client: CN is its id; roles come from its role URIs.
    Client { id: String, roles: Vec<String> },
}

impl Principal {
    /// Reads the principal from a certificate that the TLS layer has already verified
    /// against the cluster CA.
    pub fn from_cert(cert: &CertificateDer<'_>, cluster: &str) -> Result<Self, String> {
        let (_, x509) = X509Certificate::from_der(cert.as_ref())
            .map_err(|e| format!("unparseable peer certificate: {e}"))?;
        let suffix = format!(".{cluster}");
        let mut roles = Vec::new();
        if let Ok(Some(san)) = x509.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name
                    && let Some(role) = uri.strip_prefix(crate::certs::ROLE_URI_PREFIX)
                {
                    roles.push(role.to_string());
                }
                if let GeneralName::DNSName(dns) = name
                    && let Some(id) = dns
                        .strip_prefix("node-")
                        .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                        .and_then(|id| id.parse::<u64>().ok())
                {
                    return Ok(Principal::Node { id });
                }
            }
        }
        let subject = x509.subject();
        let id = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or("peer certificate has no common name")?
            .to_string();
        Ok(Principal::Client { id, roles })
    }
}
