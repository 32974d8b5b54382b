//! A client's session: opened on the first connection's session stream, kept alive by a ping
//! every third of the timeout, resumed on the next node when the connection is lost, and
//! reported through a `watch` channel of [`SessionState`].

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use scopekeeper_transport::frame::{read_frame, write_frame};
use scopekeeper_transport::{Connection, limits as tlimits};
use tokio::sync::{mpsc, watch};

use crate::client::{Link, LinkError};
use crate::proto::{
    ApiError, ErrorCode, Reply, Request, Response, ServerFrame, SessionCredentials, SessionFrame,
    SessionResponse,
};
use crate::watches::ClientWatches;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Not granted yet.
    Connecting,
    /// Served by this node.
    Connected { node: u64 },
    /// The connection was lost; the client is resuming the session elsewhere.
    Disconnected,
    /// The cluster ended the session (or it could not be resumed within its timeout): its
    /// ephemerals are gone.
    Expired,
    /// Closed by this client.
    Closed,
}

pub(crate) struct SessionLink {
    timeout_ms: AtomicI32,
    credentials: Mutex<Option<SessionCredentials>>,
    pub(crate) state: watch::Sender<SessionState>,
    /// To the keepalive task of the current session stream.
    commands: Mutex<Option<mpsc::Sender<SessionFrame>>>,
    pub(crate) watches: Mutex<ClientWatches>,
    /// Watch events handed to watchers so far on the current connection.
    events_seen: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SessionLink {
    pub(crate) fn new(timeout_ms: i32) -> SessionLink {
        SessionLink {
            timeout_ms: AtomicI32::new(timeout_ms),
            credentials: Mutex::new(None),
            state: watch::Sender::new(SessionState::Connecting),
            commands: Mutex::new(None),
            watches: Mutex::new(ClientWatches::default()),
            events_seen: watch::Sender::new(0),
        }
    }

    /// Waits until the events the node sent before a reply have been handed to watchers.
    pub(crate) async fn follow(&self, response: SessionResponse) -> Response {
        let mut seen = self.events_seen.subscribe();
        // The connection may drop meanwhile; the reply is still good, and the events it
        // waited for are re-checked when the watches are re-armed.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            seen.wait_for(|n| *n >= response.events),
        )
        .await;
        response.response
    }

    pub(crate) fn id(&self) -> Option<i64> {
        lock(&self.credentials).as_ref().map(|c| c.id)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed).max(0) as u64)
    }

    /// Refuses to connect again once the session is over.
    pub(crate) fn check_alive(&self) -> Result<(), ApiError> {
        match *self.state.borrow() {
            SessionState::Expired => Err(ApiError::new(
                ErrorCode::SessionExpired,
                "the session expired; connect with a new one",
            )),
            SessionState::Closed => Err(ApiError::new(
                ErrorCode::SessionExpired,
                "the session was closed; connect with a new one",
            )),
            _ => Ok(()),
        }
    }

    /// Opens (or resumes) the session on a new connection's session stream and starts its
    /// keepalive task.
    pub(crate) async fn attach(
        &self,
        link: &Arc<Link>,
        conn: &Connection,
        endpoint: usize,
    ) -> Result<(), LinkError> {
        let (mut send, mut recv) = conn.open_stream().await.map_err(LinkError::Transport)?;
        let request = Request::Connect {
            resume: lock(&self.credentials).clone(),
            timeout_ms: self.timeout_ms.load(Ordering::Relaxed),
        };
        write_frame(&mut send, &request, tlimits::CLIENT_FRAME_BYTES_MAX)
            .await
            .map_err(LinkError::Transport)?;
        let response: Response =
            scopekeeper_transport::frame::expect_frame(&mut recv, tlimits::CLIENT_FRAME_BYTES_MAX)
                .await
                .map_err(LinkError::Transport)?;
        let granted = match response {
            Ok(Reply::Session(granted)) => granted,
            Ok(other) => {
                return Err(LinkError::Api(ApiError::new(
                    ErrorCode::MarshallingError,
                    format!("a session was answered with {other:?}"),
                )));
            }
            Err(e) if e.code == ErrorCode::SessionExpired => {
                self.state.send_replace(SessionState::Expired);
                return Err(LinkError::Api(e));
            }
            // The node could not reach the session's scope: try another.
            Err(e) if e.code == ErrorCode::ConnectionLoss => {
                return Err(LinkError::Transport(scopekeeper_transport::Error::Closed(
                    e.to_string(),
                )));
            }
            Err(e) => return Err(LinkError::Api(e)),
        };
        self.timeout_ms.store(granted.timeout_ms, Ordering::Relaxed);
        *lock(&self.credentials) = Some(granted.credentials);
        let (commands, inbox) = mpsc::channel(4);
        *lock(&self.commands) = Some(commands);
        self.events_seen.send_replace(0);
        tokio::spawn(keep_alive(
            Arc::downgrade(link),
            (endpoint, conn.clone()),
            send,
            recv,
            inbox,
            self.timeout(),
        ));
        // Watches are the connection's: arm them again on the node now serving the session.
        let armed = lock(&self.watches).armed();
        if !armed.is_empty() {
            let request = Request::SetWatches { watches: armed };
            let answer: SessionResponse = conn
                .call(&request, tlimits::CLIENT_FRAME_BYTES_MAX)
                .await
                .map_err(LinkError::Transport)?;
            if let Err(e) = self.follow(answer).await {
                return Err(LinkError::Transport(scopekeeper_transport::Error::Closed(
                    format!("re-arming watches: {e}"),
                )));
            }
        }
        self.state
            .send_replace(SessionState::Connected { node: granted.node });
        Ok(())
    }

    /// Closes the session and waits until the node confirms.
    pub(crate) async fn close(&self) -> Result<(), crate::Error> {
        let commands = lock(&self.commands).clone();
        let Some(commands) = commands else {
            return Ok(());
        };
        let mut state = self.state.subscribe();
        if commands.send(SessionFrame::Close).await.is_err() {
            return Err(crate::Error::Unreachable(
                "the session stream is gone; the session ends when it expires".into(),
            ));
        }
        let ended = tokio::time::timeout(
            Duration::from_secs(30),
            state.wait_for(|s| matches!(s, SessionState::Closed | SessionState::Expired)),
        )
        .await;
        match ended {
            Ok(Ok(_)) => Ok(()),
            _ => Err(crate::Error::Unreachable(
                "no confirmation that the session closed; it ends when it expires".into(),
            )),
        }
    }
}

/// Pings every third of the timeout; a node silent for two thirds of it is given up, and the
/// session resumed on the next endpoint while the timeout allows.
async fn keep_alive(
    link: Weak<Link>,
    (endpoint, conn): (usize, Connection),
    mut send: scopekeeper_transport::SendStream,
    recv: scopekeeper_transport::RecvStream,
    mut commands: mpsc::Receiver<SessionFrame>,
    timeout: Duration,
) {
    let mut frames = read_frames(recv);
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval(timeout / 3);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            _ = ping.tick() => {
                if link.strong_count() == 0 {
                    conn.close("client dropped");
                    return;
                }
                if heard.elapsed() > timeout * 2 / 3 {
                    break None;
                }
                if write_frame(&mut send, &SessionFrame::Ping, tlimits::CLIENT_FRAME_BYTES_MAX).await.is_err() {
                    break None;
                }
            }
            frame = frames.recv() => match frame {
                Some(ServerFrame::Pong) => heard = Instant::now(),
                Some(ServerFrame::Event(event)) => {
                    heard = Instant::now();
                    if let Some(link) = link.upgrade()
                        && let Some(session) = &link.session
                    {
                        lock(&session.watches).dispatch(&event);
                        session.events_seen.send_modify(|n| *n += 1);
                    }
                }
                Some(ServerFrame::Ended(why)) => break Some(why),
                None => break None,
            },
            Some(frame) = commands.recv() => {
                if write_frame(&mut send, &frame, tlimits::CLIENT_FRAME_BYTES_MAX).await.is_err() {
                    break None;
                }
            }
        }
    };
    let Some(link) = link.upgrade() else {
        conn.close("client dropped");
        return;
    };
    let Some(session) = &link.session else {
        return;
    };
    conn.close("session stream ended");
    if let Some(why) = ended {
        let state = if why.code == ErrorCode::Ok {
            SessionState::Closed
        } else {
            SessionState::Expired
        };
        session.state.send_replace(state);
        return;
    }
    session.state.send_replace(SessionState::Disconnected);
    // That node is gone or silent: resume on the next one.
    link.fail_over(endpoint).await;
    let deadline = heard + timeout;
    while Instant::now() < deadline {
        match link.connection().await {
            Ok(_) => return,
            Err(LinkError::Api(_)) => return,
            Err(LinkError::Transport(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    session.state.send_replace(SessionState::Expired);
}

fn read_frames(mut recv: scopekeeper_transport::RecvStream) -> mpsc::Receiver<ServerFrame> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok(Some(frame)) =
            read_frame::<ServerFrame>(&mut recv, tlimits::CLIENT_FRAME_BYTES_MAX).await
        {
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    rx
}
