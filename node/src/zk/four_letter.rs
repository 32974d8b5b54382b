//! ZooKeeper's four-letter words on the client port: a connection whose first four bytes spell
//! one (instead of a frame length) gets a line-oriented answer and is closed. Only words in
//! the node's whitelist (`zk_four_letter_words`; 3.8's default is `srvr` alone) are answered;
//! any other known word is refused in 3.8's words.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::node::Node;

/// The words this node knows.
pub const WORDS: [&str; 6] = ["ruok", "srvr", "stat", "mntr", "isro", "conf"];

/// The version string clients and monitoring see: the ZooKeeper protocol we speak, then ours.
pub fn version() -> String {
    format!(
        "3.8.0-scopekeeper-{}, built by Scopekeeper",
        env!("CARGO_PKG_VERSION")
    )
}

/// Counters the words report, shared by a node's ZooKeeper connections.
#[derive(Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub connections: AtomicU64,
}

/// The word the first four bytes of a connection spell, if they spell one we know.
pub fn word(first: [u8; 4]) -> Option<&'static str> {
    WORDS.iter().copied().find(|w| w.as_bytes() == first)
}

/// The answer to `word`, or 3.8's refusal if the whitelist does not hold it.
pub fn answer(node: &Node, counters: &Counters, word: &str) -> String {
    let whitelist = &node.0.config.zk_four_letter_words;
    if !whitelist.iter().any(|w| w == word || w == "*") {
        return format!("{word} is not executed because it is not in the whitelist.\n");
    }
    let facts = Facts::of(node, counters);
    match word {
        "ruok" => "imok".into(),
        "isro" => "rw".into(),
        "srvr" => facts.srvr(),
        "stat" => format!(
            "{}\nClients:\n\n{}",
            facts.version_line(),
            facts.srvr_body()
        ),
        "mntr" => facts.mntr(),
        "conf" => conf(node),
        _ => format!("{word} is not a command this node knows.\n"),
    }
}

/// What the words report, gathered once.
struct Facts {
    received: u64,
    sent: u64,
    connections: u64,
    zxid: i64,
    leader: bool,
    znodes: u64,
    data_bytes: u64,
    watches: usize,
    sessions: usize,
    scopes: usize,
}

impl Facts {
    fn of(node: &Node, counters: &Counters) -> Facts {
        let root = node.root();
        let (mut znodes, mut data_bytes) = (0u64, 0u64);
        let scopes = node.scopes();
        for scope in &scopes {
            let state = scope.view().read();
            znodes += state.tree.len() as u64;
            data_bytes += state.tree.data_bytes();
        }
        Facts {
            received: counters.received.load(Ordering::Relaxed),
            sent: counters.sent.load(Ordering::Relaxed),
            connections: counters.connections.load(Ordering::Relaxed),
            zxid: root
                .as_ref()
                .map_or(0, |r| r.view().read().tree.last_zxid()),
            leader: root
                .as_ref()
                .and_then(|r| r.leader())
                .is_some_and(|(l, _)| l == node.id()),
            znodes,
            data_bytes,
            watches: node.0.watches.held(),
            sessions: node.0.sessions.attached_count(),
            scopes: scopes.len(),
        }
    }

    fn mode(&self) -> &'static str {
        if self.leader { "leader" } else { "follower" }
    }

    fn version_line(&self) -> String {
        format!("Zookeeper version: {}", version())
    }

    fn srvr_body(&self) -> String {
        format!(
            "Latency min/avg/max: 0/0.0/0\nReceived: {}\nSent: {}\nConnections: {}\nOutstanding: 0\n\
             Zxid: {:#x}\nMode: {}\nNode count: {}\n",
            self.received,
            self.sent,
            self.connections,
            self.zxid,
            self.mode(),
            self.znodes
        )
    }

    fn srvr(&self) -> String {
        format!("{}\n{}", self.version_line(), self.srvr_body())
    }

    fn mntr(&self) -> String {
        let rows: [(&str, String); 14] = [
            ("zk_version", version()),
            ("zk_server_state", self.mode().into()),
            ("zk_avg_latency", "0.0".into()),
            ("zk_max_latency", "0".into()),
            ("zk_min_latency", "0".into()),
            ("zk_packets_received", self.received.to_string()),
            ("zk_packets_sent", self.sent.to_string()),
            ("zk_num_alive_connections", self.connections.to_string()),
            ("zk_outstanding_requests", "0".into()),
            ("zk_znode_count", self.znodes.to_string()),
            ("zk_watch_count", self.watches.to_string()),
            ("zk_approximate_data_size", self.data_bytes.to_string()),
            ("zk_global_sessions", self.sessions.to_string()),
            ("scopekeeper_scopes", self.scopes.to_string()),
        ];
        rows.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect()
    }
}

fn conf(node: &Node) -> String {
    let c = &node.0.config;
    let mut out = String::new();
    if let Some(addr) = c.zk_listen {
        out.push_str(&format!(
            "clientPort={}\nclientPortAddress={}\n",
            addr.port(),
            addr.ip()
        ));
    }
    out.push_str(&format!(
        "dataDir={}\nserverId={}\nminSessionTimeout={}\nmaxSessionTimeout={}\n",
        c.data_dir.display(),
        c.id,
        crate::limits::SESSION_TIMEOUT_MIN_MS,
        crate::limits::SESSION_TIMEOUT_MAX_MS
    ));
    for peer in &c.peers {
        out.push_str(&format!("server.{}={}\n", peer.id, peer.addr));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_known_words_are_words() {
        assert_eq!(super::word(*b"ruok"), Some("ruok"));
        assert_eq!(super::word(*b"mntr"), Some("mntr"));
        // A real frame length never spells a word: ZooKeeper tells them apart the same way.
        assert_eq!(super::word(44u32.to_be_bytes()), None);
        assert_eq!(super::word(*b"kill"), None);
    }
}
