//! One QUIC endpoint per process, serving and dialing.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::HandshakeData;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::frame::{expect_last_frame, write_frame};
use crate::{Alpn, Credentials, EndpointKeys, Error, Principal, limits, tls};

/// A QUIC endpoint with the cluster's TLS configuration.
#[derive(Clone)]
pub struct Endpoint {
    quinn: quinn::Endpoint,
    cluster: Arc<str>,
    peer_client: quinn::ClientConfig,
    client_client: quinn::ClientConfig,
}

/// The connection settings, with `streams` the concurrent streams the other side may open.
fn transport_config(streams: u32) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(limits::KEEP_ALIVE));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(limits::IDLE_TIMEOUT)
            .expect("idle timeout fits QUIC's varint"),
    ));
    t.max_concurrent_bidi_streams(streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    Arc::new(t)
}

impl Endpoint {
    /// Binds `listen`. With `serve`, it accepts connections; otherwise it only dials (clients).
    pub fn bind(
        listen: SocketAddr,
        creds: &Credentials,
        keys: &EndpointKeys,
        cluster: &str,
        serve: bool,
    ) -> Result<Self, Error> {
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &keys.reset);
        let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
        let cid_key = keys.connection_id;
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let server = if serve {
            let mut server = quinn::ServerConfig::with_crypto(Arc::new(tls::server_config(creds)?));
            // Whether a connection is a node's is known only after its handshake, which
            // raises the limit for one (see `Connection::verified`).
            server.transport_config(transport_config(limits::CLIENT_STREAMS_MAX));
            server.migration(false);
            Some(server)
        } else {
            None
        };
        let socket = std::net::UdpSocket::bind(listen).map_err(|e| Error::Bind {
            addr: listen,
            reason: e.to_string(),
        })?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| Error::Config("the QUIC endpoint needs a tokio runtime".into()))?;
        let quinn =
            quinn::Endpoint::new(config, server, socket, runtime).map_err(|e| Error::Bind {
                addr: listen,
                reason: e.to_string(),
            })?;
        let client = |alpn| -> Result<quinn::ClientConfig, Error> {
            let mut c = quinn::ClientConfig::new(Arc::new(tls::client_config(creds, alpn)?));
            c.transport_config(transport_config(match alpn {
                Alpn::Peer => limits::PEER_STREAMS_MAX,
                Alpn::Client => limits::CLIENT_STREAMS_MAX,
            }));
            Ok(c)
        };
        Ok(Endpoint {
            quinn,
            cluster: cluster.into(),
            peer_client: client(Alpn::Peer)?,
            client_client: client(Alpn::Client)?,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.quinn
            .local_addr()
            .map_err(|e| Error::Config(format!("local address: {e}")))
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Waits for the next incoming connection attempt. `None` once the endpoint is closed.
    /// Finish it with [`Endpoint::handshake`], typically on a task of its own.
    pub async fn accept(&self) -> Option<quinn::Incoming> {
        self.quinn.accept().await
    }

    /// Completes an incoming handshake and establishes who the peer is. Fails for unknown CAs,
    /// missing client certificates, and the peer protocol without a node certificate.
    pub async fn handshake(&self, incoming: quinn::Incoming) -> Result<Connection, Error> {
        let remote = incoming.remote_address();
        let refused = |reason: String| Error::Refused { remote, reason };
        let conn = incoming.await.map_err(|e| refused(e.to_string()))?;
        Connection::verified(conn, &self.cluster).map_err(refused)
    }

    /// Dials `addr`, expecting a certificate for `server_name`, within [`limits::CONNECT_TIMEOUT`].
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
        alpn: Alpn,
    ) -> Result<Connection, Error> {
        let config = match alpn {
            Alpn::Peer => self.peer_client.clone(),
            Alpn::Client => self.client_client.clone(),
        };
        let connect_err = |reason: String| Error::Connect {
            addr,
            name: server_name.to_string(),
            reason,
        };
        let connecting = self
            .quinn
            .connect_with(config, addr, server_name)
            .map_err(|e| connect_err(e.to_string()))?;
        let conn = tokio::time::timeout(limits::CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| connect_err(format!("no handshake within {:?}", limits::CONNECT_TIMEOUT)))?
            .map_err(|e| connect_err(e.to_string()))?;
        Connection::verified(conn, &self.cluster).map_err(connect_err)
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.quinn.close(0u32.into(), b"endpoint closed");
    }

    pub async fn wait_idle(&self) {
        self.quinn.wait_idle().await;
    }
}

/// An established connection and who is on the other end.
#[derive(Clone)]
pub struct Connection {
    quinn: quinn::Connection,
    pub alpn: Alpn,
    pub principal: Principal,
}

impl Connection {
    fn verified(conn: quinn::Connection, cluster: &str) -> Result<Self, String> {
        let alpn = conn
            .handshake_data()
            .and_then(|d| d.downcast::<HandshakeData>().ok())
            .and_then(|d| d.protocol)
            .and_then(|p| Alpn::from_wire(&p))
            .ok_or("no known ALPN protocol was negotiated")?;
        let certs = conn
            .peer_identity()
            .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
            .ok_or("the peer presented no certificate")?;
        let leaf = certs
            .first()
            .ok_or("the peer presented an empty certificate chain")?;
        let principal = Principal::from_cert(leaf, cluster)?;
        if alpn == Alpn::Peer && !matches!(principal, Principal::Node { .. }) {
            conn.close(
                1u32.into(),
                b"the peer protocol requires a node certificate",
            );
            return Err(format!(
                "{principal:?} used the peer protocol without a node certificate"
            ));
        }
        if alpn == Alpn::Peer {
            // Already so on the dialing side; the accepting side starts at the clients' limit.
            conn.set_max_concurrent_bi_streams(limits::PEER_STREAMS_MAX.into());
        }
        Ok(Connection {
            quinn: conn,
            alpn,
            principal,
        })
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.quinn.remote_address()
    }

    /// Why the connection closed, if it has.
    pub fn close_reason(&self) -> Option<quinn::ConnectionError> {
        self.quinn.close_reason()
    }

    pub fn close(&self, reason: &str) {
        self.quinn.close(0u32.into(), reason.as_bytes());
    }

    /// Opens a stream for one RPC.
    pub async fn open_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream), Error> {
        self.quinn.open_bi().await.map_err(Error::Connection)
    }

    /// Accepts the next stream the peer opens.
    pub async fn accept_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream), Error> {
        self.quinn.accept_bi().await.map_err(Error::Connection)
    }

    /// One request, one response, on a stream of their own.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        request: &Req,
        cap: usize,
    ) -> Result<Resp, Error> {
        let (mut send, mut recv) = self.open_stream().await?;
        write_frame(&mut send, request, cap).await?;
        send.finish()
            .map_err(|_| Error::Closed("stream closed while sending".into()))?;
        expect_last_frame(&mut recv, cap).await
    }
}
