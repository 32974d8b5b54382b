//! The client's side of watches: who waits for which event, and which watches to arm again
//! when the session moves to another node. Which watchers an event reaches follows
//! ZooKeeper's client (`ZKWatchManager.materialize`).

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use crate::path;
use crate::proto::{ArmedWatch, EventKind, WatchEvent, WatchKind};

/// A one-shot watch: resolves with the event that fired it.
pub type Watcher = oneshot::Receiver<WatchEvent>;

/// A persistent watch: every event until it is removed (or the session ends).
pub type WatchStream = mpsc::UnboundedReceiver<WatchEvent>;

enum Waiter {
    Once(oneshot::Sender<WatchEvent>),
    Every(mpsc::UnboundedSender<WatchEvent>),
}

#[derive(Default)]
pub(crate) struct ClientWatches {
    next: u64,
    /// (path, kind) -> waiters by id.
    waiters: HashMap<(String, WatchKind), Vec<(u64, Waiter)>>,
    /// What to arm again after a move: the kind to ask for and the zxid it was armed at.
    armed: HashMap<(String, WatchKind), (WatchKind, i64)>,
}

impl ClientWatches {
    /// Registers a waiter before its request goes out (an event may beat the reply).
    pub(crate) fn add_once(&mut self, p: &str, kind: WatchKind) -> (u64, Watcher) {
        let (tx, rx) = oneshot::channel();
        (self.add(p, kind, Waiter::Once(tx)), rx)
    }

    pub(crate) fn add_every(&mut self, p: &str, kind: WatchKind) -> (u64, WatchStream) {
        let (tx, rx) = mpsc::unbounded_channel();
        (self.add(p, kind, Waiter::Every(tx)), rx)
    }

    fn add(&mut self, p: &str, kind: WatchKind, waiter: Waiter) -> u64 {
        self.next += 1;
        self.waiters
            .entry((p.to_string(), kind))
            .or_default()
            .push((self.next, waiter));
        self.next
    }

    /// The server armed it: remember how to arm it again.
    pub(crate) fn armed_at(&mut self, p: &str, kind: WatchKind, ask: WatchKind, zxid: i64) {
        if self.waiters.contains_key(&(p.to_string(), kind)) {
            self.armed.insert((p.to_string(), kind), (ask, zxid));
        }
    }

    /// The request failed: the waiter goes.
    pub(crate) fn cancel(&mut self, p: &str, kind: WatchKind, id: u64) {
        let key = (p.to_string(), kind);
        if let Some(ws) = self.waiters.get_mut(&key) {
            ws.retain(|(i, _)| *i != id);
            if ws.is_empty() {
                self.waiters.remove(&key);
                self.armed.remove(&key);
            }
        }
    }

    /// Drops every waiter on `p` of `kind` (all kinds if `None`).
    pub(crate) fn remove(&mut self, p: &str, kind: Option<WatchKind>) {
        self.waiters
            .retain(|(wp, k), _| wp != p || kind.is_some_and(|want| want != *k));
        self.armed
            .retain(|(wp, k), _| wp != p || kind.is_some_and(|want| want != *k));
    }

    pub(crate) fn armed(&self) -> Vec<ArmedWatch> {
        self.armed
            .iter()
            .map(|((p, _), (ask, zxid))| ArmedWatch {
                path: p.clone(),
                kind: *ask,
                zxid: *zxid,
            })
            .collect()
    }

    /// Hands an event to every watcher it concerns; one-shot watchers go.
    pub(crate) fn dispatch(&mut self, event: &WatchEvent) {
        let p = event.path.as_str();
        let own: &[WatchKind] = match event.kind {
            EventKind::NodeCreated | EventKind::NodeDataChanged => {
                &[WatchKind::Data, WatchKind::Exist, WatchKind::Persistent]
            }
            EventKind::NodeDeleted => &[
                WatchKind::Data,
                WatchKind::Exist,
                WatchKind::Child,
                WatchKind::Persistent,
            ],
            EventKind::NodeChildrenChanged => &[WatchKind::Child, WatchKind::Persistent],
        };
        let mut keys: Vec<(String, WatchKind)> = own.iter().map(|k| (p.to_string(), *k)).collect();
        if event.kind != EventKind::NodeChildrenChanged {
            keys.extend(
                path::ancestors_and_self(p)
                    .map(|a| (a.to_string(), WatchKind::PersistentRecursive)),
            );
        }
        for key in keys {
            let Some(waiters) = self.waiters.remove(&key) else {
                continue;
            };
            let mut kept = Vec::new();
            for (id, w) in waiters {
                match w {
                    Waiter::Once(tx) => {
                        let _ = tx.send(event.clone());
                    }
                    Waiter::Every(tx) => {
                        if tx.send(event.clone()).is_ok() {
                            kept.push((id, Waiter::Every(tx)));
                        }
                    }
                }
            }
            if kept.is_empty() {
                self.armed.remove(&key);
            } else {
                self.waiters.insert(key, kept);
            }
        }
    }
}
