//! The ZooKeeper facade: ZooKeeper 3.8's client protocol on TCP, so existing clients (kazoo,
//! Curator, zkCli, the C client) work against any node. `jute` is the record encoding,
//! `proto` the records, `translate` the mapping onto the native API, `conn` one connection.
//! Sessions, watches and routing are the native ones: a ZooKeeper session is a Scopekeeper
//! session, resumable on any node, through either protocol's listener.

pub mod auth;
pub mod conn;
pub mod four_letter;
pub mod jute;
pub mod proto;
pub mod translate;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;

use crate::limits;
use crate::node::Node;

/// Accepts ZooKeeper clients until the node stops; beyond `ZK_CONNECTIONS_MAX` at once, a new
/// connection is closed at once (its client tries another server).
pub async fn accept_loop(node: Node, listener: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits::ZK_CONNECTIONS_MAX));
    let counters = Arc::new(four_letter::Counters::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accepting a ZooKeeper client: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                %peer,
                "refusing a ZooKeeper client: {} connections already",
                limits::ZK_CONNECTIONS_MAX
            );
            continue;
        };
        let (node, counters) = (node.clone(), counters.clone());
        tokio::spawn(async move {
            counters.connections.fetch_add(1, Ordering::Relaxed);
            conn::serve(node, stream, peer, counters.clone()).await;
            counters.connections.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
}
