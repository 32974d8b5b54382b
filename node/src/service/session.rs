//! A client's session stream: opened by `Connect`, it stays open for the life of the session
//! on this connection. The client pings on it and closes the session through it; the node
//! answers pings and pushes what the session must hear (its end, watch events) in order.

use std::sync::atomic::{AtomicI64, Ordering};

use scopekeeper_client::limits as client_limits;
use scopekeeper_client::proto::{
    ApiError, ErrorCode, Reply, Response, ServerFrame, SessionCredentials, SessionFrame,
};
use scopekeeper_transport::frame::{read_frame, write_frame};
use scopekeeper_transport::limits::CLIENT_FRAME_BYTES_MAX;
use scopekeeper_transport::{Error as TransportError, RecvStream, SendStream};
use tokio::sync::mpsc;

use crate::limits;
use crate::node::Node;

pub struct Connect {
    pub resume: Option<SessionCredentials>,
    pub timeout_ms: i32,
}

/// Opens or resumes the session, then serves its stream until the client goes, closes the
/// session, or the session ends.
pub async fn serve(
    node: &Node,
    connect: Connect,
    conn_session: &AtomicI64,
    mut send: SendStream,
    recv: RecvStream,
) -> Result<(), TransportError> {
    if conn_session.load(Ordering::Acquire) != 0 {
        let refused: Response = Err(ApiError::new(
            ErrorCode::BadArguments,
            "this connection has a session already; open a new connection for another",
        ));
        write_frame(&mut send, &refused, CLIENT_FRAME_BYTES_MAX).await?;
        return finish(send);
    }
    let granted = match connect.resume {
        None => crate::sessions::open(node, connect.timeout_ms).await,
        Some(creds) => crate::sessions::resume(node, creds, connect.timeout_ms).await,
    };
    let granted = match granted {
        Ok(g) => g,
        Err(e) => {
            write_frame(&mut send, &Response::Err(e), CLIENT_FRAME_BYTES_MAX).await?;
            return finish(send);
        }
    };
    let id = granted.credentials.id;
    let (frames, mut outbox) = mpsc::channel(limits::SESSION_FRAMES_MAX);
    // The session table holds the only sender: letting go of the session there ends this
    // stream.
    let tag = node.0.sessions.attach(id, granted.timeout_ms, frames);
    conn_session.store(id, Ordering::Release);
    tracing::debug!(session = format!("{id:#x}"), "session attached");
    let result = async {
        write_frame(
            &mut send,
            &Response::Ok(Reply::Session(granted)),
            CLIENT_FRAME_BYTES_MAX,
        )
        .await?;
        let mut inbox = read_frames(recv);
        loop {
            tokio::select! {
                frame = inbox.recv() => match frame {
                    Some(SessionFrame::Ping) => {
                        node.0.sessions.heard(id);
                        write_frame(&mut send, &ServerFrame::Pong, CLIENT_FRAME_BYTES_MAX).await?;
                    }
                    Some(SessionFrame::Close) => {
                        let ended = match crate::sessions::close(node, id).await {
                            Ok(()) => ApiError::new(ErrorCode::Ok, "session closed"),
                            Err(e) => e,
                        };
                        write_frame(&mut send, &ServerFrame::Ended(ended), CLIENT_FRAME_BYTES_MAX).await?;
                        return finish(send);
                    }
                    // The client went away: the session lives on until it expires or resumes.
                    None => return Ok(()),
                },
                out = outbox.recv() => match out {
                    Some(frame @ ServerFrame::Ended(_)) => {
                        write_frame(&mut send, &frame, CLIENT_FRAME_BYTES_MAX).await?;
                        return finish(send);
                    }
                    Some(frame) => write_frame(&mut send, &frame, CLIENT_FRAME_BYTES_MAX).await?,
                    None => return Ok(()),
                },
            }
        }
    }
    .await;
    // Watches belong to the connection: a client that comes back re-arms them.
    if node.0.sessions.detach(id, tag) {
        node.0.watches.drop_session(id);
    }
    result
}

/// Reads the client's frames on a task of their own (a frame half-read must not be dropped
/// by a `select!`); the channel closes when the stream ends or breaks.
fn read_frames(mut recv: RecvStream) -> mpsc::Receiver<SessionFrame> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            match read_frame::<SessionFrame>(&mut recv, client_limits::REQUEST_BYTES_MAX).await {
                Ok(Some(frame)) => {
                    if tx.send(frame).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!("session stream: {e}");
                    return;
                }
            }
        }
    });
    rx
}

fn finish(mut send: SendStream) -> Result<(), TransportError> {
    send.finish()
        .map_err(|_| TransportError::Closed("session stream closed early".into()))
}

/// A request on a connection with a session: watches are served here, on the node the
/// client is connected to; anything else goes through routing, ordered after the session's
/// watch events when it has watches here.
pub async fn serve_request(
    node: &Node,
    principal: &crate::policy::admission::Principal,
    session: i64,
    request: scopekeeper_client::proto::Request,
) -> Response {
    use scopekeeper_client::proto::Request;
    node.0.sessions.heard(session);
    match request {
        Request::Watch { path, kind } => {
            crate::watches::watch(node, principal, session, &path, kind).await
        }
        Request::RemoveWatches { path, kind } => {
            if node.0.watches.remove(session, &path, kind) == 0 {
                return Err(ApiError::new(
                    ErrorCode::NoWatcher,
                    format!("no watch of {kind:?} on {path} to remove"),
                ));
            }
            Ok(Reply::Synced)
        }
        Request::SetWatches { watches } => {
            crate::watches::set_watches(node, principal, session, watches).await
        }
        other if node.0.watches.has_session(session) => {
            crate::watches::ordered(node, principal, session, other).await
        }
        other => super::handle_client(node, principal, session, other).await,
    }
}
