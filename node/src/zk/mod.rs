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

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::limits;
use crate::node::Node;

/// Accepts ZooKeeper clients until the node stops; beyond `ZK_CONNECTIONS_MAX` at once, a new
/// connection is closed at once (its client tries another server). With `tls`, each client
/// completes a TLS handshake with a certificate from the cluster CA first (`zk_tls_listen`).
pub async fn accept_loop(node: Node, listener: TcpListener, tls: Option<TlsAcceptor>) {
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
        let _ = stream.set_nodelay(true);
        let (node, counters, tls) = (node.clone(), counters.clone(), tls.clone());
        tokio::spawn(async move {
            counters.connections.fetch_add(1, Ordering::Relaxed);
            match tls {
                None => {
                    let (read, write) = stream.into_split();
                    let halves: (conn::ReadHalf, conn::WriteHalf) =
                        (Box::new(read), Box::new(write));
                    conn::serve(node, halves, peer, counters.clone(), None).await;
                }
                Some(tls) => match handshake(&node, &tls, stream).await {
                    Ok((stream, principal)) => {
                        let (read, write) = tokio::io::split(stream);
                        let halves: (conn::ReadHalf, conn::WriteHalf) =
                            (Box::new(read), Box::new(write));
                        conn::serve(node, halves, peer, counters.clone(), Some(principal)).await;
                    }
                    Err(e) => tracing::info!(%peer, "ZooKeeper TLS client refused: {e}"),
                },
            }
            counters.connections.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
}

/// The TLS handshake of a client on the secure listener, and who its certificate says it is.
async fn handshake(
    node: &Node,
    tls: &TlsAcceptor,
    stream: TcpStream,
) -> Result<(TlsStream<TcpStream>, scopekeeper_transport::Principal), String> {
    let stream = tokio::time::timeout(limits::ZK_TLS_HANDSHAKE_TIMEOUT, tls.accept(stream))
        .await
        .map_err(|_| "the TLS handshake took too long".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (_, session) = stream.get_ref();
    let cert = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or("no client certificate")?;
    let principal = scopekeeper_transport::Principal::from_cert(cert, &node.0.config.cluster)?;
    Ok((stream, principal))
}
