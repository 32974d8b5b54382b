//! Connections to other endpoints, one per (address, name), dialed on demand with capped
//! backoff after failures so that a dead peer costs one timeout, not one per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Alpn, Connection, Endpoint, Error, limits};

#[derive(Default)]
struct Slot {
    conn: Option<Connection>,
    failures: u32,
    retry_at: Option<Instant>,
}

type Slots = HashMap<(SocketAddr, String), Arc<tokio::sync::Mutex<Slot>>>;

/// A pool of connections speaking one protocol.
pub struct Pool {
    endpoint: Endpoint,
    alpn: Alpn,
    slots: Mutex<Slots>,
}

impl Pool {
    pub fn new(endpoint: Endpoint, alpn: Alpn) -> Self {
        Pool {
            endpoint,
            alpn,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn slot(&self, addr: SocketAddr, name: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry((addr, name.to_string())).or_default().clone()
    }

    /// A live connection to `addr` proving `name`, dialing if needed. While backing off after a
    /// failed dial, it fails at once with [`Error::Unreachable`].
    pub async fn get(&self, addr: SocketAddr, name: &str) -> Result<Connection, Error> {
        let slot = self.slot(addr, name);
        let mut slot = slot.lock().await;
        if let Some(conn) = &slot.conn {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
            slot.conn = None;
        }
        if let Some(at) = slot.retry_at {
            let now = Instant::now();
            if now < at {
                return Err(Error::Unreachable {
                    addr,
                    name: name.to_string(),
                    retry_in: at - now,
                });
            }
        }
        match self.endpoint.connect(addr, name, self.alpn).await {
            Ok(conn) => {
                slot.failures = 0;
                slot.retry_at = None;
                slot.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                slot.failures = slot.failures.saturating_add(1);
                slot.retry_at = Some(Instant::now() + backoff(slot.failures));
                Err(e)
            }
        }
    }

    /// Drops the cached connection to `addr` after an error, so the next call dials afresh
    /// (without backoff: the failure may have been the connection, not the peer).
    pub async fn invalidate(&self, addr: SocketAddr, name: &str) {
        let slot = self.slot(addr, name);
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.conn.take() {
            conn.close("invalidated after an error");
        }
    }
}

/// `BACKOFF_MIN * 2^(failures-1)`, capped at `BACKOFF_MAX`.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    limits::BACKOFF_MIN
        .saturating_mul(1u32 << exp)
        .min(limits::BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), limits::BACKOFF_MIN);
        assert_eq!(backoff(2), limits::BACKOFF_MIN * 2);
        assert_eq!(backoff(40), limits::BACKOFF_MAX);
    }
}
