//! Pipelined replication: each of a leader's replication sessions to a follower is one QUIC
//! stream, with the leader's AppendEntries requests going one way as openraft makes them and
//! the follower's answers coming back the other way, in order.
//!
//! Why not one RPC per request: openraft makes the next request (more entries, or the new
//! commit index) while earlier ones are in flight, but a request-response network holds it
//! until the previous answer is in. A follower that answered a little after the quorum then
//! learnt of the commit only after its own answer's round trip and another request: on the dev
//! cluster its apply, and the watch events that wait for it, came 120-240 us after the
//! leader's reply. On one stream it learns as soon as the leader commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use scopekeeper_transport::frame::{read_frame, write_frame};
use scopekeeper_transport::limits::PEER_FRAME_BYTES_MAX;
use scopekeeper_transport::{Error as TransportError, RecvStream, SendStream};
use tokio::sync::mpsc;

use super::Scope;
use super::types::TypeConfig;
use crate::limits::APPEND_PIPELINE_MAX;
use crate::liveness::PeerLiveness;
use crate::peer::{PeerRequest, Peers};

/// The follower's answer to one request, or why it stopped serving the stream.
pub type StreamAnswer = Result<StreamAppendResult<TypeConfig>, String>;

/// What the leader's side yields per request: the follower's answer, or an error if the
/// stream broke or the follower sent nothing for too long with requests outstanding.
pub type Answered = Result<StreamAnswer, TransportError>;

/// Stops a session's reader and writer tasks when openraft drops its answers.
struct Tasks(Vec<tokio::task::AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Requests handed to the stream so far, and a wake-up for an answer-waiter with none
/// outstanding: its patience starts with the next request.
#[derive(Default)]
struct Sent {
    count: AtomicU64,
    more: tokio::sync::Notify,
}

struct Answers {
    frames: mpsc::Receiver<Result<Option<StreamAnswer>, TransportError>>,
    sent: Arc<Sent>,
    received: u64,
    /// Requests were outstanding at the last silent `patience` too.
    stalled: bool,
    patience: Duration,
    ended: bool,
    _tasks: Tasks,
}

/// Opens a replication session to `node`: `header` names the scope and replica, then every
/// request of `input` follows on the same stream. A follower that answers nothing for between
/// one and two `patience` while requests are outstanding counts as unreachable.
pub async fn open<S>(
    peers: &Peers,
    node: u64,
    addr: &str,
    header: &PeerRequest,
    mut input: S,
    patience: Duration,
) -> Result<BoxStream<'static, Answered>, TransportError>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    let opening = async {
        let (mut send, recv) = peers.open_stream(node, addr).await?;
        write_frame(&mut send, header, PEER_FRAME_BYTES_MAX).await?;
        Ok::<_, TransportError>((send, recv))
    };
    let (mut send, mut recv) = tokio::time::timeout(patience, opening)
        .await
        .map_err(|_| {
            TransportError::Closed(format!(
                "no replication stream to node {node} within {patience:?}"
            ))
        })??;
    let sent = Arc::new(Sent::default());
    let writer = tokio::spawn({
        let sent = sent.clone();
        async move {
            while let Some(request) = input.next().await {
                // Counted before it goes, so an answer never outruns its count.
                sent.count.fetch_add(1, Ordering::AcqRel);
                sent.more.notify_one();
                if write_frame(&mut send, &request, PEER_FRAME_BYTES_MAX)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = send.finish();
        }
    });
    // Frames are read on a task of their own: a read cut short by a timeout would lose the
    // part of a frame it had taken.
    let (frames_tx, frames) = mpsc::channel(APPEND_PIPELINE_MAX);
    let liveness = peers.liveness().clone();
    let reader = tokio::spawn(async move {
        loop {
            let frame = read_frame::<StreamAnswer>(&mut recv, PEER_FRAME_BYTES_MAX).await;
            if matches!(frame, Ok(Some(_))) {
                liveness.heard(node);
            }
            let more = matches!(frame, Ok(Some(Ok(Ok(_)))));
            if frames_tx.send(frame).await.is_err() || !more {
                return;
            }
        }
    });
    let answers = Answers {
        frames,
        sent,
        received: 0,
        stalled: false,
        patience,
        ended: false,
        _tasks: Tasks(vec![writer.abort_handle(), reader.abort_handle()]),
    };
    Ok(futures::stream::unfold(answers, next_answer).boxed())
}

async fn next_answer(mut a: Answers) -> Option<(Answered, Answers)> {
    if a.ended {
        return None;
    }
    loop {
        let outstanding = a.sent.count.load(Ordering::Acquire) > a.received;
        let frame = if outstanding {
            tokio::time::timeout(a.patience, a.frames.recv()).await
        } else {
            // Nothing to wait for: no timer, so that an idle session (most of them, with
            // quiescent scopes) costs no wake-ups.
            a.stalled = false;
            tokio::select! {
                frame = a.frames.recv() => Ok(frame),
                () = a.sent.more.notified() => continue,
            }
        };
        match frame {
            Ok(Some(Ok(Some(answer)))) => {
                a.received += 1;
                a.stalled = false;
                a.ended = !matches!(answer, Ok(Ok(_)));
                return Some((Ok(answer), a));
            }
            // The follower finished its side: the session is over.
            Ok(Some(Ok(None))) | Ok(None) => return None,
            Ok(Some(Err(e))) => {
                a.ended = true;
                return Some((Err(e), a));
            }
            Err(_) => {
                if a.stalled {
                    a.ended = true;
                    let silent = TransportError::Closed(format!(
                        "the follower answered nothing for {:?} with requests outstanding",
                        a.patience * 2
                    ));
                    return Some((Err(silent), a));
                }
                a.stalled = true;
            }
        }
    }
}

/// The follower's side: feeds the stream's requests to the scope's raft and writes its
/// answers back in order, until either side ends. Each request counts as hearing from the
/// leader's node named in `hearing`.
pub async fn serve(
    scope: Result<Arc<Scope>, String>,
    hearing: Option<(Arc<PeerLiveness>, u64)>,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), TransportError> {
    let scope = match scope {
        Ok(s) => s,
        Err(why) => {
            let refused: StreamAnswer = Err(why);
            write_frame(&mut send, &refused, PEER_FRAME_BYTES_MAX).await?;
            return finish(send);
        }
    };
    let (requests_tx, requests) = mpsc::channel(APPEND_PIPELINE_MAX);
    let reader = tokio::spawn({
        let scope = scope.clone();
        async move {
            while let Ok(Some(request)) =
                read_frame::<AppendEntriesRequest<TypeConfig>>(&mut recv, PEER_FRAME_BYTES_MAX)
                    .await
            {
                if let Some((liveness, leader_node)) = &hearing {
                    liveness.heard(*leader_node);
                }
                // Only entries need the ticker: an empty request is the leader's heartbeat or
                // commit index reaching a follower it may just have quiesced.
                if !request.entries.is_empty() {
                    scope.wake();
                }
                if requests_tx.send(request).await.is_err() {
                    return;
                }
            }
        }
    });
    let _reader = Tasks(vec![reader.abort_handle()]);
    let input = futures::stream::unfold(requests, |mut rx| async move {
        rx.recv().await.map(|request| (request, rx))
    });
    let mut answers = std::pin::pin!(scope.raft.stream_append(input));
    while let Some(answer) = answers.next().await {
        let answer: StreamAnswer = answer.map_err(|fatal| fatal.to_string());
        let more = matches!(answer, Ok(Ok(_)));
        write_frame(&mut send, &answer, PEER_FRAME_BYTES_MAX).await?;
        if !more {
            break;
        }
    }
    finish(send)
}

fn finish(mut send: SendStream) -> Result<(), TransportError> {
    send.finish()
        .map_err(|_| TransportError::Closed("replication stream closed early".into()))
}
