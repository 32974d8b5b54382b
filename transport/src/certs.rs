//! The cluster CA and the certificates it issues (rcgen), and loading them back from PEM.
//!
//! A node's identity is the DNS name `node-<id>.<cluster>`; its certificate also names
//! `<cluster>`, the name clients dial when they only know an address. Client certificates carry
//! the client's name as CN and its roles as `urn:scopekeeper:role:<role>` URIs; policies see both.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// The DNS name a node proves in its certificate.
pub fn node_name(id: u64, cluster: &str) -> String {
    format!("node-{id}.{cluster}")
}

/// A PEM certificate and its key.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A new self-signed cluster CA.
pub fn generate_ca(cluster: &str) -> Result<IssuedCert, Error> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("scopekeeper CA for {cluster}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(cert_err)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A node certificate for `node-<id>.<cluster>`, usable as server and as client.
pub fn issue_node(ca: &IssuedCert, id: u64, cluster: &str) -> Result<IssuedCert, Error> {
    let mut params = CertificateParams::new(vec![node_name(id, cluster), cluster.to_string()])
        .map_err(cert_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, node_name(id, cluster));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    sign(ca, params)
}

/// Roles are subject alternative names of this form: `urn:scopekeeper:role:<role>`.
pub const ROLE_URI_PREFIX: &str = "urn:scopekeeper:role:";

/// A client certificate: CN is the principal's id, each role a URI in the subject alt names.
pub fn issue_client(ca: &IssuedCert, name: &str, roles: &[String]) -> Result<IssuedCert, Error> {
    if name.is_empty() || name.contains(['/', ',', '=']) {
        return Err(Error::Config(format!(
            "client name {name:?} must be non-empty and free of '/', ',' and '='"
        )));
    }
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = roles
        .iter()
        .map(|role| {
            if role.is_empty()
                || !role
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(Error::Config(format!(
                    "role {role:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"
                )));
            }
            let uri = format!("{ROLE_URI_PREFIX}{role}");
            rcgen::string::Ia5String::try_from(uri)
                .map(SanType::URI)
                .map_err(cert_err)
        })
        .collect::<Result<_, _>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    sign(ca, params)
}

fn sign(ca: &IssuedCert, params: CertificateParams) -> Result<IssuedCert, Error> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(cert_err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(cert_err)?;
    let key = KeyPair::generate().map_err(cert_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn cert_err(e: rcgen::Error) -> Error {
    Error::Config(format!("certificate generation failed: {e}"))
}

/// Where the files of one certificate live: `<dir>/<stem>.pem` and `<dir>/<stem>.key`.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn in_dir(dir: &Path, stem: &str) -> Self {
        CertFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        }
    }

    pub fn exist(&self) -> bool {
        self.cert.exists() && self.key.exists()
    }

    pub fn write(&self, issued: &IssuedCert) -> Result<(), Error> {
        if let Some(dir) = self.cert.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::write(&self.cert, &issued.cert_pem).map_err(|e| Error::io(&self.cert, e))?;
        write_private(&self.key, &issued.key_pem)
    }

    pub fn read(&self) -> Result<IssuedCert, Error> {
        Ok(IssuedCert {
            cert_pem: std::fs::read_to_string(&self.cert).map_err(|e| Error::io(&self.cert, e))?,
            key_pem: std::fs::read_to_string(&self.key).map_err(|e| Error::io(&self.key, e))?,
        })
    }
}

fn write_private(path: &Path, pem: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(pem.as_bytes()).map_err(|e| Error::io(path, e))
}

/// What an endpoint proves and whom it trusts: its certificate chain and key, and the CA.
pub struct Credentials {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub ca: CertificateDer<'static>,
}

impl Credentials {
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self, Error> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("unreadable certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(Error::Config(
                "the certificate file holds no certificate".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| Error::Config(format!("unreadable private key PEM: {e}")))?;
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| Error::Config(format!("unreadable CA certificate PEM: {e}")))?;
        Ok(Credentials { chain, key, ca })
    }

    /// Loads a certificate, its key and the CA certificate from PEM files.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, Error> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| Error::io(p, e));
        Self::from_pem(&read(cert)?, &read(key)?, &read(ca)?)
    }
}
