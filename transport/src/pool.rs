//! Connections to other endpoints, one per (address, name), dialed on demand with capped
//! backoff after failures so that a dead peer costs one timeout, not one per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::{Alpn, Connection, Endpoint, Error, limits};

/// A dial in progress, shared by whoever waits for it.
type Dial = Shared<BoxFuture<'static, Result<Connection, String>>>;

#[derive(Default)]
struct Slot {
    conn: Option<Connection>,
    /// Consecutive failed dials; non-zero means the peer is believed down.
    failures: u32,
    retry_at: Option<Instant>,
    dialing: Option<Dial>,
    /// Why the last dial failed, while `failures` is non-zero.
    last_failure: String,
}

type Slots = HashMap<(SocketAddr, String), Arc<Mutex<Slot>>>;

/// A pool of connections speaking one protocol.
///
/// Dials run on a task of their own, so a caller that gives up (an RPC timeout) cannot cancel
/// one and lose its outcome. While a peer is believed down, callers fail at once with
/// [`Error::Unreachable`] and redials happen in the background with capped backoff: a dead
/// peer costs nothing per request, so nothing waits on it (openraft keeps a request to a peer
/// "in flight" while it waits, and postpones log compaction for it).
pub struct Pool {
    endpoint: Endpoint,
    alpn: Alpn,
    slots: Mutex<Slots>,
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
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

    fn slot(&self, addr: SocketAddr, name: &str) -> Arc<Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry((addr, name.to_string())).or_default().clone()
    }

    /// Starts a dial on its own task; the task records the outcome in the slot.
    fn dial(&self, slot: &Arc<Mutex<Slot>>, addr: SocketAddr, name: &str) -> Dial {
        let (endpoint, alpn, name, record) = (
            self.endpoint.clone(),
            self.alpn,
            name.to_string(),
            slot.clone(),
        );
        let task = tokio::spawn(async move {
            let result = endpoint.connect(addr, &name, alpn).await;
            let mut slot = lock(&record);
            slot.dialing = None;
            match &result {
                Ok(conn) => {
                    slot.failures = 0;
                    slot.retry_at = None;
                    slot.last_failure.clear();
                    slot.conn = Some(conn.clone());
                }
                Err(e) => {
                    slot.failures = slot.failures.saturating_add(1);
                    slot.retry_at = Some(Instant::now() + backoff(slot.failures));
                    slot.last_failure = e.to_string();
                }
            }
            result.map_err(|e| e.to_string())
        });
        async move {
            task.await
                .unwrap_or_else(|e| Err(format!("dial task failed: {e}")))
        }
        .boxed()
        .shared()
    }

    /// A live connection to `addr` proving `name`. Dials if needed; fails at once while the
    /// peer is believed down.
    pub async fn get(&self, addr: SocketAddr, name: &str) -> Result<Connection, Error> {
        let slot = self.slot(addr, name);
        let unreachable = |retry_in: Duration, last_failure: &str| Error::Unreachable {
            addr,
            name: name.to_string(),
            retry_in,
            last_failure: last_failure.to_string(),
        };
        let dial = {
            let mut s = lock(&slot);
            if let Some(conn) = &s.conn {
                if conn.close_reason().is_none() {
                    return Ok(conn.clone());
                }
                s.conn = None;
            }
            let now = Instant::now();
            let down = s.failures > 0;
            match (&s.dialing, s.retry_at) {
                (Some(_), _) if down => return Err(unreachable(Duration::ZERO, &s.last_failure)),
                (Some(dial), _) => dial.clone(),
                (None, Some(at)) if now < at => {
                    return Err(unreachable(at - now, &s.last_failure));
                }
                (None, _) => {
                    let dial = self.dial(&slot, addr, name);
                    s.dialing = Some(dial.clone());
                    if down {
                        // Redial in the background; this caller does not wait for a dead peer.
                        return Err(unreachable(Duration::ZERO, &s.last_failure));
                    }
                    dial
                }
            }
        };
        dial.await.map_err(|reason| Error::Connect {
            addr,
            name: name.to_string(),
            reason,
        })
    }

    /// Drops the cached connection to `addr` after an error, so the next call dials afresh
    /// (without backoff: the failure may have been the connection, not the peer).
    pub async fn invalidate(&self, addr: SocketAddr, name: &str) {
        let slot = self.slot(addr, name);
        if let Some(conn) = lock(&slot).conn.take() {
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
