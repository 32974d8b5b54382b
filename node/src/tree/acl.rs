//! ZooKeeper's access control lists, as pure functions: whether the identities a caller holds
//! grant a permission under an ACL (`checkACL`), and how an ACL being set is validated and
//! expanded (`fixupACL`). Every anchor runs the same code on the identities carried in the log
//! entry, so every anchor decides the same.
//!
//! Stored form: an empty list means the open ACL (`world:anyone`, every permission). ZooKeeper
//! refuses empty lists, so the empty list is free to stand for the ACL most znodes carry, and
//! costs no allocation per znode.

use std::net::IpAddr;

use scopekeeper_client::proto::{Acl, ApiError, ErrorCode, Id, perms};

/// Who is asking, as ACLs see it: the identities the caller holds (ZooKeeper's `authInfo`:
/// `ip:` of its address, `digest:` per `addauth`, `x509:` of its certificate), and whether ACLs
/// apply to it at all (ZooKeeper's `super`; here the cluster's admins and nodes).
#[derive(Clone, Copy, Debug)]
pub struct AuthInfo<'a> {
    pub ids: &'a [Id],
    pub superuser: bool,
}

impl AuthInfo<'static> {
    /// For the cluster's own transactions (session bookkeeping, reaping, carving).
    pub const SUPER: AuthInfo<'static> = AuthInfo {
        ids: &[],
        superuser: true,
    };
}

/// Schemes an identity can be proven in. `ip` is held without proof, so `auth` in an ACL
/// being set does not pick it up, as in ZooKeeper.
fn is_authenticated(scheme: &str) -> bool {
    matches!(scheme, "digest" | "x509")
}

/// Checks that `auth` holds one of `perm`'s bits on the node at `path`, whose ACL is `acl`.
pub fn check(acl: &[Acl], perm: i32, auth: AuthInfo<'_>, path: &str) -> Result<(), ApiError> {
    if acl.is_empty() || auth.superuser {
        return Ok(());
    }
    for entry in acl.iter().filter(|a| a.perms & perm != 0) {
        if is_world_anyone(&entry.id) {
            return Ok(());
        }
        let held = auth
            .ids
            .iter()
            .filter(|held| held.scheme == entry.id.scheme);
        for held in held {
            if grants(&entry.id, &held.id) {
                return Ok(());
            }
        }
    }
    Err(ApiError::new(
        ErrorCode::NoAuth,
        format!(
            "{path}: the ACL grants none of {} to {}; authenticate (addauth) as an identity it lists",
            perm_names(perm),
            held_names(auth.ids)
        ),
    ))
}

/// Validates an ACL a client is setting and expands its `auth` entries into the identities
/// the caller has proven; returns the form to store (empty for the open ACL).
pub fn fixup(acl: &[Acl], auth: AuthInfo<'_>) -> Result<Vec<Acl>, ApiError> {
    let mut out: Vec<Acl> = Vec::with_capacity(acl.len());
    let mut push = |a: Acl| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    for entry in acl {
        match entry.id.scheme.as_str() {
            "world" if entry.id.id == "anyone" => push(entry.clone()),
            "auth" => {
                let mut proven = auth.ids.iter().filter(|i| is_authenticated(&i.scheme));
                let first = proven.next().ok_or_else(|| {
                    invalid(
                        entry,
                        "the connection has no authenticated identity; addauth before using the auth scheme",
                    )
                })?;
                for id in std::iter::once(first).chain(proven) {
                    push(Acl {
                        perms: entry.perms,
                        id: id.clone(),
                    });
                }
            }
            "digest" if valid_digest(&entry.id.id) => push(entry.clone()),
            "digest" => {
                return Err(invalid(
                    entry,
                    "a digest id is user:base64(sha1(user:password))",
                ));
            }
            "ip" if parse_ip_range(&entry.id.id).is_some() => push(entry.clone()),
            "ip" => return Err(invalid(entry, "an ip id is an address, optionally /bits")),
            "x509" if !entry.id.id.is_empty() => push(entry.clone()),
            _ => {
                return Err(invalid(
                    entry,
                    "schemes are world:anyone, auth, digest, ip and x509",
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidAcl,
            "an ACL needs at least one entry",
        ));
    }
    if out == Acl::open() {
        out.clear();
    }
    Ok(out)
}

/// The ACL as clients see it: the open ACL spelled out.
pub fn visible(stored: &[Acl]) -> Vec<Acl> {
    if stored.is_empty() {
        Acl::open()
    } else {
        stored.to_vec()
    }
}

/// What a caller with READ but not ADMIN sees: digest hashes replaced by `x`, as in 3.8.
pub fn redacted(stored: &[Acl]) -> Vec<Acl> {
    visible(stored)
        .into_iter()
        .map(|mut a| {
            if a.id.scheme == "digest"
                && let Some((user, _)) = a.id.id.split_once(':')
            {
                a.id.id = format!("{user}:x");
            }
            a
        })
        .collect()
}

fn is_world_anyone(id: &Id) -> bool {
    id.scheme == "world" && id.id == "anyone"
}

/// Whether the held identity `held` (same scheme) satisfies the ACL identity `wanted`.
fn grants(wanted: &Id, held: &str) -> bool {
    match wanted.scheme.as_str() {
        "ip" => match (parse_ip_range(&wanted.id), held.parse::<IpAddr>()) {
            (Some((net, bits)), Ok(addr)) => in_range(addr, net, bits),
            _ => false,
        },
        "digest" | "x509" => wanted.id == held,
        _ => false,
    }
}

/// `user:hash`, one colon, a non-empty hash (ZooKeeper splits on `:` and wants two parts).
fn valid_digest(id: &str) -> bool {
    matches!(id.split_once(':'), Some((_, hash)) if !hash.is_empty() && !hash.contains(':'))
}

/// `addr` or `addr/bits`, IPv4 or IPv6.
fn parse_ip_range(id: &str) -> Option<(IpAddr, u32)> {
    let (addr, bits) = match id.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits)),
        None => (id, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b.parse::<u32>().ok().filter(|b| *b <= width)?,
        None => width,
    };
    Some((addr, bits))
}

fn in_range(addr: IpAddr, net: IpAddr, bits: u32) -> bool {
    let mask = |width: u32| -> u128 {
        if bits == 0 {
            0
        } else {
            (!0u128 << (width - bits)) & (!0u128 >> (128 - width))
        }
    };
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = mask(32);
            (u128::from(u32::from(a)) & m) == (u128::from(u32::from(n)) & m)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = mask(128);
            (u128::from(a) & m) == (u128::from(n) & m)
        }
        _ => false,
    }
}

fn invalid(entry: &Acl, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidAcl,
        format!("invalid ACL entry {}: {why}", entry.id),
    )
}

fn perm_names(perm: i32) -> String {
    let names = [
        (perms::READ, "READ"),
        (perms::WRITE, "WRITE"),
        (perms::CREATE, "CREATE"),
        (perms::DELETE, "DELETE"),
        (perms::ADMIN, "ADMIN"),
    ];
    let named: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| perm & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    named.join("/")
}

fn held_names(ids: &[Id]) -> String {
    if ids.is_empty() {
        return "an unauthenticated caller".into();
    }
    let names: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            id: Id::new(scheme, id),
        }
    }

    fn who(ids: &[Id]) -> AuthInfo<'_> {
        AuthInfo {
            ids,
            superuser: false,
        }
    }

    #[test]
    fn open_acl_is_stored_empty_and_read_back_spelled_out() {
        let stored = fixup(&Acl::open(), who(&[])).expect("open is valid");
        assert!(stored.is_empty());
        assert_eq!(visible(&stored), Acl::open());
        assert!(check(&stored, perms::ADMIN, who(&[]), "/a").is_ok());
    }

    #[test]
    fn digest_grants_only_the_listed_bits_to_the_listed_user() {
        let alice = Id::new("digest", "alice:hash");
        let stored = [acl(perms::READ | perms::WRITE, "digest", "alice:hash")];
        let code = |perm, ids: &[Id]| check(&stored, perm, who(ids), "/a").map_err(|e| e.code);
        assert_eq!(code(perms::READ, std::slice::from_ref(&alice)), Ok(()));
        assert_eq!(code(perms::WRITE, std::slice::from_ref(&alice)), Ok(()));
        assert_eq!(
            code(perms::DELETE, std::slice::from_ref(&alice)),
            Err(ErrorCode::NoAuth)
        );
        assert_eq!(code(perms::READ, &[]), Err(ErrorCode::NoAuth));
        let bob = Id::new("digest", "bob:hash");
        assert_eq!(code(perms::READ, &[bob]), Err(ErrorCode::NoAuth));
        // READ|ADMIN (getACL) needs either bit.
        assert_eq!(code(perms::READ | perms::ADMIN, &[alice]), Ok(()));
        let admin = AuthInfo {
            ids: &[],
            superuser: true,
        };
        assert!(check(&stored, perms::DELETE, admin, "/a").is_ok());
    }

    #[test]
    fn ip_ranges_match_by_prefix() {
        let stored = [acl(perms::ALL, "ip", "10.1.0.0/16")];
        let from = |addr: &str| {
            let ids = [Id::new("ip", addr)];
            check(&stored, perms::READ, who(&ids), "/a").is_ok()
        };
        assert!(from("10.1.2.3"));
        assert!(!from("10.2.0.1"));
        assert!(!from("::1"));
        let exact = [acl(perms::ALL, "ip", "127.0.0.1")];
        let ids = [Id::new("ip", "127.0.0.1")];
        assert!(check(&exact, perms::READ, who(&ids), "/a").is_ok());
        let v6 = [acl(perms::ALL, "ip", "fd00::/8")];
        let ids = [Id::new("ip", "fd12::1")];
        assert!(check(&v6, perms::READ, who(&ids), "/a").is_ok());
        let everyone = [acl(perms::ALL, "ip", "0.0.0.0/0")];
        let ids = [Id::new("ip", "192.168.1.1")];
        assert!(check(&everyone, perms::READ, who(&ids), "/a").is_ok());
    }

    #[test]
    fn auth_scheme_expands_to_proven_identities_only() {
        let ids = [
            Id::new("ip", "127.0.0.1"),
            Id::new("digest", "alice:h1"),
            Id::new("x509", "CN=alice"),
        ];
        let got = fixup(&[acl(perms::ALL, "auth", "")], who(&ids)).expect("valid");
        assert_eq!(
            got,
            vec![
                acl(perms::ALL, "digest", "alice:h1"),
                acl(perms::ALL, "x509", "CN=alice")
            ]
        );
        let only_ip = [Id::new("ip", "127.0.0.1")];
        let err = fixup(&[acl(perms::ALL, "auth", "")], who(&only_ip)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidAcl);
    }

    #[test]
    fn malformed_entries_are_invalid() {
        for (scheme, id) in [
            ("world", "someone"),
            ("digest", "alice"),
            ("digest", "alice:"),
            ("digest", "a:b:c"),
            ("ip", "10.0.0.300"),
            ("ip", "10.0.0.0/33"),
            ("x509", ""),
            ("sasl", "bob"),
            ("", ""),
        ] {
            let err = fixup(&[acl(perms::ALL, scheme, id)], who(&[])).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidAcl, "{scheme}:{id}");
        }
        assert_eq!(
            fixup(&[], who(&[])).unwrap_err().code,
            ErrorCode::InvalidAcl
        );
    }

    #[test]
    fn duplicates_collapse_and_digests_redact() {
        let twice = [
            acl(perms::READ, "digest", "alice:secret"),
            acl(perms::READ, "digest", "alice:secret"),
        ];
        let stored = fixup(&twice, who(&[])).expect("valid");
        assert_eq!(stored.len(), 1);
        assert_eq!(redacted(&stored)[0].id.id, "alice:x");
    }
}
