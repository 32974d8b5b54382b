//! ZooKeeper's path rules (`PathUtils.validatePath` in ZooKeeper 3.8), shared by the client and the
//! server so that both reject the same paths with the same words.

use crate::proto::{ApiError, ErrorCode};

/// Checks `path` the way ZooKeeper does. A sequential create is checked with a digit appended,
/// so `/queue/` is a valid prefix for `/queue/0000000001`.
pub fn validate(path: &str, sequential: bool) -> Result<(), ApiError> {
    if sequential {
        let mut with_suffix = String::with_capacity(path.len() + 1);
        with_suffix.push_str(path);
        with_suffix.push('1');
        return validate_plain(&with_suffix);
    }
    validate_plain(path)
}

fn validate_plain(path: &str) -> Result<(), ApiError> {
    let invalid = |reason: String| {
        Err(ApiError::new(
            ErrorCode::BadArguments,
            format!("invalid path {path:?}: {reason}"),
        ))
    };
    if path.is_empty() {
        return invalid("path length must be > 0".into());
    }
    if !path.starts_with('/') {
        return invalid("path must start with / character".into());
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') {
        return invalid("path must not end with / character".into());
    }
    let chars: Vec<char> = path.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let last = chars[i - usize::from(i > 0)];
        let next_is_end = i + 1 == chars.len() || chars[i + 1] == '/';
        if c == '\0' {
            return invalid(format!("null character not allowed @{i}"));
        }
        if i > 0 && c == '/' && last == '/' {
            return invalid(format!("empty node name specified @{i}"));
        }
        if i > 1 && c == '.' && last == '.' && chars[i - 2] == '/' && next_is_end {
            return invalid(format!("relative paths not allowed @{i}"));
        }
        if i > 0 && c == '.' && last == '/' && next_is_end {
            return invalid(format!("relative paths not allowed @{i}"));
        }
        if is_forbidden_char(c) {
            return invalid(format!("invalid character @{i}"));
        }
    }
    Ok(())
}

/// ZooKeeper works on UTF-16: control characters, the private use area and the specials block
/// are refused, and so is anything outside the basic plane (a surrogate pair in Java).
fn is_forbidden_char(c: char) -> bool {
    matches!(c,
        '\u{0001}'..='\u{001f}'
        | '\u{007f}'..='\u{009f}'
        | '\u{e000}'..='\u{f8ff}'
        | '\u{fff0}'..='\u{ffff}')
        || u32::from(c) > 0xffff
}

/// The parent of a valid, non-root path: `/a/b` -> `/a`, `/a` -> `/`.
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// The last component of a valid path: `/a/b` -> `b`, `/` -> ``.
pub fn name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Joins a parent path and a child name.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Whether `path` is `root` or below it, component by component: `/ab` is not within `/a`.
pub fn is_within(path: &str, root: &str) -> bool {
    root == "/"
        || path == root
        || (path.len() > root.len()
            && path.starts_with(root)
            && path.as_bytes()[root.len()] == b'/')
}

/// `path` and each of its ancestors, deepest first: `/a/b` -> `/a/b`, `/a`, `/`.
pub fn ancestors_and_self(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| parent(p))
}

/// The name of the child of `root` that `path` is in: `/a/b/c` under `/` is `a`; `None` for
/// the root itself or a path outside it.
pub fn child_below<'p>(root: &str, path: &'p str) -> Option<&'p str> {
    if path == root || !is_within(path, root) {
        return None;
    }
    let rest = if root == "/" {
        &path[1..]
    } else {
        &path[root.len() + 1..]
    };
    rest.split('/').next().filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_below_a_root_are_named() {
        assert_eq!(child_below("/", "/a/b"), Some("a"));
        assert_eq!(child_below("/app", "/app/x/y"), Some("x"));
        assert_eq!(child_below("/app", "/app"), None);
        assert_eq!(child_below("/app", "/apple"), None);
        assert_eq!(child_below("/", "/"), None);
    }

    #[test]
    fn accepts_what_zookeeper_accepts() {
        for ok in [
            "/",
            "/a",
            "/a/b",
            "/a.b",
            "/..a",
            "/a/.b",
            "/zookeeper",
            "/ü",
            "/a b",
        ] {
            assert!(validate(ok, false).is_ok(), "{ok}");
        }
        assert!(validate("/queue/", true).is_ok());
        assert!(validate("/", true).is_ok());
    }

    #[test]
    fn refuses_what_zookeeper_refuses() {
        for bad in [
            "",
            "a",
            "/a/",
            "//",
            "/a//b",
            "/.",
            "/..",
            "/a/./b",
            "/a/../b",
            "/a\0b",
            "/\u{1}",
            "/\u{7f}",
            "/\u{e000}",
            "/\u{fff0}",
            "/\u{1f600}",
        ] {
            let err = validate(bad, false).expect_err(bad);
            assert_eq!(err.code, ErrorCode::BadArguments);
        }
        assert!(validate("/a//", true).is_err());
    }

    #[test]
    fn parent_and_name() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(name("/a/b"), "b");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }

    #[test]
    fn within_goes_by_components() {
        assert!(is_within("/a", "/"));
        assert!(is_within("/a", "/a"));
        assert!(is_within("/a/b", "/a"));
        assert!(!is_within("/ab", "/a"));
        assert!(!is_within("/", "/a"));
        let all: Vec<&str> = ancestors_and_self("/a/b").collect();
        assert_eq!(all, ["/a/b", "/a", "/"]);
    }
}
