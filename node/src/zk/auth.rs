//! ZooKeeper's authentication providers as the facade runs them (`addauth`): what identities a
//! connection gains, and how they read in `whoAmI`. Pure: the connection applies the result.

use base64::Engine as _;
use scopekeeper_client::proto::{ApiError, ErrorCode, Id};

/// What one `addauth` proved.
#[derive(Debug, PartialEq, Eq)]
pub struct Proven {
    /// Identities the connection holds from now on (none if it held them already).
    pub ids: Vec<Id>,
    /// The digest matched the configured `superDigest`: ACLs no longer apply.
    pub superuser: bool,
}

/// Runs `addauth scheme auth` for a connection from `peer_ip`, holding `certified` if its
/// client presented a certificate (the TLS listener). A scheme ZooKeeper 3.8 would refuse
/// (unknown, or x509 on a connection without a client certificate) is `AuthFailed`, after
/// which the connection is closed, as 3.8 closes it.
pub fn authenticate(
    scheme: &str,
    auth: &[u8],
    peer_ip: &str,
    certified: Option<&Id>,
    super_digest: Option<&str>,
) -> Result<Proven, ApiError> {
    match scheme {
        "digest" => {
            let id = digest(auth);
            Ok(Proven {
                superuser: super_digest == Some(id.as_str()),
                ids: vec![Id::new("digest", &id)],
            })
        }
        // Every connection already holds its address; asking again proves nothing new.
        "ip" => Ok(Proven {
            ids: vec![Id::new("ip", peer_ip)],
            superuser: false,
        }),
        "x509" => match certified {
            Some(id) => Ok(Proven {
                ids: vec![id.clone()],
                superuser: false,
            }),
            None => Err(ApiError::new(
                ErrorCode::AuthFailed,
                "x509 authentication needs a client certificate: connect to the TLS listener \
                 (zk_tls_listen) with one issued by the cluster's CA",
            )),
        },
        other => Err(ApiError::new(
            ErrorCode::AuthFailed,
            format!("no authentication provider for scheme {other:?} (digest, ip)"),
        )),
    }
}

/// `user:base64(sha1(user:password))` for `user:password`, as
/// `DigestAuthenticationProvider.generateDigest` computes it: the hash covers the whole
/// credential, the user is everything before the first `:`.
pub fn digest(credential: &[u8]) -> String {
    let user_end = credential
        .iter()
        .position(|b| *b == b':')
        .unwrap_or(credential.len());
    let user = String::from_utf8_lossy(&credential[..user_end]);
    let hash = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, credential);
    let encoded = base64::engine::general_purpose::STANDARD.encode(hash.as_ref());
    format!("{user}:{encoded}")
}

/// How an identity reads in `whoAmI`: a digest by its user name, others by their id.
pub fn client_info(id: &Id) -> (String, String) {
    let user = match id.scheme.as_str() {
        "digest" => id.id.split(':').next().unwrap_or_default().to_string(),
        _ => id.id.clone(),
    };
    (id.scheme.clone(), user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_zookeepers() {
        // `DigestAuthenticationProvider.generateDigest("super:test")`, as ZooKeeper's
        // administrator guide shows it.
        assert_eq!(digest(b"super:test"), "super:D/InIHSb7yEEbrWz8b9l71RjZJU=");
    }

    #[test]
    fn providers() {
        let ip = "127.0.0.1";
        let alice = authenticate("digest", b"alice:pw", ip, None, None).expect("digest");
        assert_eq!(alice.ids, vec![Id::new("digest", &digest(b"alice:pw"))]);
        assert!(!alice.superuser);
        let super_digest = Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU=");
        let root = authenticate("digest", b"super:test", ip, None, super_digest).expect("digest");
        assert!(root.superuser);
        let refused = authenticate("x509", b"", ip, None, None).unwrap_err();
        assert_eq!(refused.code, ErrorCode::AuthFailed);
        let cert = Id::new("x509", "alice");
        let proven = authenticate("x509", b"", ip, Some(&cert), None).expect("x509");
        assert_eq!(proven.ids, vec![cert]);
        let unknown = authenticate("kerberos", b"x", ip, None, None).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::AuthFailed);
        assert_eq!(
            client_info(&alice.ids[0]),
            ("digest".to_string(), "alice".to_string())
        );
    }
}
