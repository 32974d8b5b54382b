//! Which scope governs which path: each node's cache of routes, resolved like DNS delegation.
//!
//! The authority for a route is the parent scope's delegation record (and a scope's own state
//! for itself); a node's directory is only a cache of those. A stale route is harmless: the
//! scope it names refuses paths it does not govern (`WrongScope`), and the node learns the
//! better route from the refusal and tries again. Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

use scopekeeper_client::path;
use serde::{Deserialize, Serialize};

use crate::storage::{ROOT_SCOPE, ScopeId};

/// A node that replicates a scope, and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Anchor {
    pub node: u64,
    pub addr: String,
}

/// Where a scope sits in the namespace, as its own anchors know it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeIdentity {
    pub id: ScopeId,
    pub root: String,
    pub parent: Option<ScopeId>,
    /// Bumped whenever the scope's extent or anchors change, so newer routes win.
    pub epoch: u64,
}

impl Default for ScopeIdentity {
    /// The root scope, as a fresh cluster starts it.
    fn default() -> Self {
        ScopeIdentity {
            id: ROOT_SCOPE,
            root: "/".into(),
            parent: None,
            epoch: 0,
        }
    }
}

/// How to reach the scope governing a subtree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub scope: ScopeId,
    pub root: String,
    pub epoch: u64,
    pub anchors: Vec<Anchor>,
}

/// A node's routes, keyed by the root path of the scope they reach.
#[derive(Clone, Debug)]
pub struct Directory {
    routes: BTreeMap<String, Route>,
    /// Scopes merged back into their parents. They are gone for good (ids are never reused),
    /// so no route to one is learnt again: a reply that a sealed scope served just before its
    /// merge must not bring its route back.
    merged: BTreeSet<ScopeId>,
}

impl Directory {
    /// A directory that knows only the root scope's anchors.
    pub fn new(root_anchors: Vec<Anchor>) -> Self {
        let root = Route {
            scope: ROOT_SCOPE,
            root: "/".into(),
            epoch: 0,
            anchors: root_anchors,
        };
        Directory {
            routes: BTreeMap::from([("/".to_string(), root)]),
            merged: BTreeSet::new(),
        }
    }

    /// The route of the deepest scope root at or above `p`: the scope believed to govern it.
    pub fn resolve(&self, p: &str) -> &Route {
        path::ancestors_and_self(p)
            .find_map(|a| self.routes.get(a))
            .unwrap_or_else(|| {
                self.routes
                    .get("/")
                    .expect("the root route is never removed")
            })
    }

    /// Takes in a route unless a newer one for the same root is known.
    /// Returns whether anything changed.
    pub fn learn(&mut self, route: Route) -> bool {
        if self.merged.contains(&route.scope) {
            return false;
        }
        match self.routes.get(&route.root) {
            Some(known) if known.epoch > route.epoch => false,
            Some(known) if *known == route => false,
            _ => {
                self.routes.insert(route.root.clone(), route);
                true
            }
        }
    }

    /// Forgets the route rooted at `root` (not the root scope's), after its scope said it no
    /// longer governs a path there. Resolution falls back to the parent.
    pub fn forget(&mut self, root: &str) {
        if root != "/" {
            self.routes.remove(root);
        }
    }

    /// Records that `scope` merged into its parent: its route is forgotten and never learnt
    /// again, and resolution falls back to the scope that took the subtree back.
    pub fn merged(&mut self, scope: ScopeId) {
        if scope != ROOT_SCOPE && self.merged.insert(scope) {
            self.routes.retain(|_, r| r.scope != scope);
        }
    }

    /// Whether `scope` is known to have merged into its parent.
    pub fn has_merged(&self, scope: ScopeId) -> bool {
        self.merged.contains(&scope)
    }

    /// Every route known, in path order.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(scope: ScopeId, root: &str, epoch: u64) -> Route {
        Route {
            scope,
            root: root.into(),
            epoch,
            anchors: vec![Anchor {
                node: scope,
                addr: format!("127.0.0.1:{}", 7000 + scope),
            }],
        }
    }

    #[test]
    fn resolves_to_the_deepest_scope_by_components() {
        let mut d = Directory::new(vec![]);
        d.learn(route(1, "/a", 1));
        d.learn(route(2, "/a/b", 1));
        assert_eq!(d.resolve("/").scope, ROOT_SCOPE);
        assert_eq!(d.resolve("/a").scope, 1);
        assert_eq!(d.resolve("/a/x").scope, 1);
        assert_eq!(d.resolve("/a/b/c").scope, 2);
        assert_eq!(d.resolve("/ab").scope, ROOT_SCOPE);
    }

    #[test]
    fn newer_epochs_win_and_forgetting_falls_back_to_the_parent() {
        let mut d = Directory::new(vec![]);
        assert!(d.learn(route(1, "/a", 2)));
        assert!(!d.learn(route(1, "/a", 1)), "an older route is ignored");
        assert!(d.learn(route(3, "/a", 3)));
        assert_eq!(d.resolve("/a/x").scope, 3);
        d.forget("/a");
        assert_eq!(d.resolve("/a/x").scope, ROOT_SCOPE);
        d.forget("/");
        assert_eq!(d.resolve("/").scope, ROOT_SCOPE, "the root route stays");
    }

    #[test]
    fn a_merged_scope_is_never_routed_to_again() {
        let mut d = Directory::new(vec![]);
        d.learn(route(1, "/a", 1));
        d.learn(route(2, "/a/b", 1));
        d.merged(2);
        assert_eq!(
            d.resolve("/a/b/c").scope,
            1,
            "its parent took the subtree back"
        );
        assert!(d.has_merged(2));
        assert!(
            !d.learn(route(2, "/a/b", 1)),
            "a reply the sealed scope served before its merge"
        );
        assert_eq!(d.resolve("/a/b/c").scope, 1);
        assert!(
            d.learn(route(3, "/a/b", 1)),
            "a later split of the same subtree"
        );
        assert_eq!(d.resolve("/a/b/c").scope, 3);
        d.merged(ROOT_SCOPE);
        assert_eq!(d.resolve("/").scope, ROOT_SCOPE, "the root route stays");
    }
}
