//! A raw ZooKeeper connection for tests that need what no client library shows: exact reply
//! frames, the handshake's session id and password, the moment the server closes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use scopekeeper::zk::jute::{Reader, Writer};
use scopekeeper::zk::proto::{ConnectRequest, op};

/// Frames in and out over TCP, nothing interpreted.
pub struct RawZk {
    stream: TcpStream,
}

/// What an accepted handshake gave.
pub struct Session {
    pub id: i64,
    pub password: Vec<u8>,
}

impl RawZk {
    /// Sends a ConnectRequest: a new session (`resume` None) or the given one, claiming to have
    /// seen `last_zxid_seen`. The answer is left for `recv`.
    pub fn handshake(
        addr: &str,
        last_zxid_seen: i64,
        resume: Option<&Session>,
    ) -> anyhow::Result<RawZk> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut raw = RawZk { stream };
        let connect = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen,
            timeout_ms: 6_000,
            session_id: resume.map_or(0, |s| s.id),
            password: resume.map_or_else(|| vec![0; 16], |s| s.password.clone()),
            read_only: Some(false),
        };
        raw.send(&connect.encode())?;
        Ok(raw)
    }

    /// A handshake the server must accept with a 3.8 ConnectResponse (37 bytes, timeout > 0).
    pub fn connect(addr: &str, resume: Option<&Session>) -> anyhow::Result<(RawZk, Session)> {
        let mut raw = RawZk::handshake(addr, 0, resume)?;
        let reply = raw
            .recv()?
            .ok_or_else(|| anyhow::anyhow!("closed at handshake"))?;
        anyhow::ensure!(
            reply.len() == 37,
            "a 3.8 ConnectResponse is 37 bytes, got {}",
            reply.len()
        );
        let mut r = Reader::new(&reply);
        let (_version, timeout, id) = (r.i32()?, r.i32()?, r.i64()?);
        anyhow::ensure!(timeout > 0, "the session was refused");
        let password = r.buffer()?;
        Ok((raw, Session { id, password }))
    }

    /// Sends one frame (the length prefix is added here).
    pub fn send(&mut self, body: &[u8]) -> anyhow::Result<()> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        Ok(self.stream.write_all(&frame)?)
    }

    /// The next frame; `None` once the server has closed the connection.
    pub fn recv(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        if let Err(e) = self.stream.read_exact(&mut len) {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => Ok(None),
                _ => Err(e.into()),
            };
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Some(body))
    }

    /// Pings; whether the server answered (rather than closing).
    pub fn ping(&mut self) -> anyhow::Result<bool> {
        let mut w = Writer::new();
        w.i32(-2).i32(op::PING);
        if self.send(&w.bytes).is_err() {
            return Ok(false);
        }
        Ok(self.recv()?.is_some())
    }
}
