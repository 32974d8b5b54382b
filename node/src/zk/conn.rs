//! One ZooKeeper client connection over TCP: the handshake opens or resumes a session, then
//! requests are served one at a time in the order they arrive (so a session's writes take
//! effect in the order sent, and replies go out in request order), while watch events are
//! written as they come, each reply after the events that precede it.
//!
//! Three tasks: a reader (frames in, decoded; a frame over `jute.maxbuffer` or one that does
//! not decode closes the connection), the server (one request at a time), and the writer
//! (events and replies out).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use scopekeeper_client::proto::{
    ApiError, ErrorCode, Id, Op, Reply, Request, ServerFrame, SessionCredentials, WatchKind,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::four_letter::Counters;
use super::proto::{
    ConnectRequest, ConnectResponse, Framed, MultiOp, ReadOp, ReadResult, ZkReply, ZkRequest,
    encode_event, encode_reply, op, xid,
};
use super::translate;
use crate::limits;
use crate::node::Node;
use crate::policy::admission::Principal;

/// What the server task hands the writer.
enum Outgoing {
    /// A reply frame, to be written after the first `events_before` events of the session.
    Reply { frame: Vec<u8>, events_before: u64 },
    /// Write nothing more: close the connection (after closeSession, or an unknown opcode).
    Close,
}

/// The reading half of a client connection, plain TCP or TLS.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a client connection.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Serves one client connection from the handshake to its end. `certified` is who the
/// client's certificate names, on the TLS listener: its `x509` identity (and, for a
/// Scopekeeper client certificate, its roles).
pub async fn serve(
    node: Node,
    (mut read, mut write): (ReadHalf, WriteHalf),
    peer: SocketAddr,
    counters: Arc<Counters>,
    certified: Option<scopekeeper_transport::Principal>,
) {
    let mut first = [0u8; 4];
    if read.read_exact(&mut first).await.is_err() {
        return;
    }
    if let Some(word) = super::four_letter::word(first) {
        let answer = super::four_letter::answer(&node, &counters, word);
        let _ = write.write_all(answer.as_bytes()).await;
        let _ = write.shutdown().await;
        return;
    }
    let connect = match read_frame_after(&mut read, first).await {
        Ok(Some(bytes)) => match ConnectRequest::decode(&bytes) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(%peer, "ZooKeeper handshake unreadable: {e}");
                return;
            }
        },
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(%peer, "ZooKeeper handshake: {e}");
            return;
        }
    };
    // A client that has seen a zxid this cluster cannot have given it (more than the clock
    // slack ahead of now: zxids are leader-stamped milliseconds) came from another cluster;
    // 3.8 refuses such a client by closing, and the client tries another server.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    if connect.last_zxid_seen > (now_ms + limits::ZXID_CLOCK_AHEAD_MAX_MS) << 20 {
        tracing::info!(
            %peer,
            "refusing a ZooKeeper client that has seen zxid {:#x}, ahead of this cluster",
            connect.last_zxid_seen
        );
        return;
    }
    let granted = match connect.session_id {
        0 => crate::sessions::open(&node, connect.timeout_ms).await,
        id => {
            let creds = SessionCredentials {
                id,
                password: connect.password.clone(),
            };
            crate::sessions::resume(&node, creds, connect.timeout_ms).await
        }
    };
    let granted = match granted {
        Ok(g) => g,
        Err(e) if e.code != ErrorCode::SessionExpired => {
            // Not the session's fault (its session scope is electing, this node is catching
            // up): close without an answer, as a ZooKeeper server without a quorum does, and
            // the client tries again, here or elsewhere. Answering would expire its session.
            tracing::info!(%peer, "ZooKeeper handshake not served now: {e}");
            return;
        }
        Err(e) => {
            // 3.8 answers a session it no longer has with a zero timeout and id, then closes:
            // the client reports its session expired.
            tracing::debug!(%peer, "ZooKeeper session refused: {e}");
            let refused = ConnectResponse {
                protocol_version: 0,
                timeout_ms: 0,
                session_id: 0,
                password: vec![0; crate::sessions::PASSWORD_BYTES],
                read_only: connect.read_only.map(|_| false),
            };
            let _ = write_frame(&mut write, &refused.encode()).await;
            return;
        }
    };
    let id = granted.credentials.id;
    let accepted = ConnectResponse {
        protocol_version: 0,
        timeout_ms: granted.timeout_ms,
        session_id: id,
        password: granted.credentials.password,
        read_only: connect.read_only.map(|_| false),
    };
    if write_frame(&mut write, &accepted.encode()).await.is_err() {
        return;
    }
    let (frames, outbox) = mpsc::channel(limits::SESSION_FRAMES_MAX);
    let tag = node.0.sessions.attach(id, granted.timeout_ms, frames);
    tracing::debug!(%peer, session = format!("{id:#x}"), "ZooKeeper session attached");

    let (requests_tx, requests) = mpsc::channel(limits::ZK_REQUESTS_IN_FLIGHT_MAX);
    let (outgoing_tx, outgoing) = mpsc::channel(limits::ZK_REQUESTS_IN_FLIGHT_MAX);
    let reader = tokio::spawn(read_requests(read, requests_tx, peer, counters.clone()));
    let closing = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(serve_requests(
        node.clone(),
        Connection {
            session: id,
            closing: closing.clone(),
            principal: connection_principal(peer, certified),
            peer,
            last_zxid: AtomicI64::new(connect.last_zxid_seen),
        },
        requests,
        outgoing_tx,
    ));
    write_out(&mut write, outbox, outgoing, &closing, &counters).await;
    let _ = write.shutdown().await;
    reader.abort();
    server.abort();
    if node.0.sessions.detach(id, tag) {
        node.0.watches.drop_session(id);
    }
}

/// One frame: a 4-byte big-endian length (at most `jute.maxbuffer`) and that many bytes.
/// `Ok(None)` at a clean end of stream.
async fn read_frame(read: &mut ReadHalf) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match read.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    read_frame_after(read, len).await
}

/// The rest of a frame whose length prefix has been read.
async fn read_frame_after(read: &mut ReadHalf, len: [u8; 4]) -> std::io::Result<Option<Vec<u8>>> {
    let len = i32::from_be_bytes(len);
    let Ok(len) = usize::try_from(len) else {
        return Err(std::io::Error::other(format!(
            "negative frame length {len}"
        )));
    };
    if len > limits::ZK_FRAME_BYTES_MAX {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes exceeds jute.maxbuffer ({} bytes)",
            limits::ZK_FRAME_BYTES_MAX
        )));
    }
    let mut bytes = vec![0u8; len];
    read.read_exact(&mut bytes).await?;
    Ok(Some(bytes))
}

async fn write_frame(write: &mut WriteHalf, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    write.write_all(&frame).await
}

async fn read_requests(
    mut read: ReadHalf,
    requests: mpsc::Sender<Framed>,
    peer: SocketAddr,
    counters: Arc<Counters>,
) {
    loop {
        let bytes = match read_frame(&mut read).await {
            Ok(Some(b)) => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                b
            }
            Ok(None) => return,
            Err(e) => {
                tracing::info!(%peer, "closing a ZooKeeper connection: {e}");
                return;
            }
        };
        match Framed::decode(&bytes) {
            Ok(framed) => {
                if requests.send(framed).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::info!(%peer, "closing a ZooKeeper connection: unreadable request: {e}");
                return;
            }
        }
    }
}

/// The writing half of a connection: every frame out goes through `send`, counted.
struct Out<'a> {
    write: &'a mut WriteHalf,
    counters: &'a Counters,
    /// Watch events written so far: a reply waits until it follows the ones queued before it.
    events_written: u64,
}

impl Out<'_> {
    /// Writes one frame; false once the connection is gone.
    async fn send(&mut self, frame: &[u8]) -> bool {
        let sent = write_frame(self.write, frame).await.is_ok();
        if sent {
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Writes what the session's stream carries; false once there is nothing more to write
    /// (the connection is gone, or the session ended).
    async fn session_frame(&mut self, frame: ServerFrame) -> bool {
        match frame {
            ServerFrame::Event(event) => {
                self.events_written += 1;
                let frame = encode_event(-1, event.kind.zk_code(), &event.path);
                self.send(&frame).await
            }
            ServerFrame::Pong => true,
            ServerFrame::Ended(_) => false,
        }
    }
}

/// Events and replies, in order, until the session ends or the connection goes.
async fn write_out(
    write: &mut WriteHalf,
    mut outbox: mpsc::Receiver<ServerFrame>,
    mut outgoing: mpsc::Receiver<Outgoing>,
    closing: &AtomicBool,
    counters: &Counters,
) {
    let mut out = Out {
        write,
        counters,
        events_written: 0,
    };
    loop {
        let next = tokio::select! {
            biased;
            frame = outbox.recv() => Err(frame),
            reply = outgoing.recv() => Ok(reply),
        };
        match next {
            Err(Some(frame)) => {
                if !out.session_frame(frame).await {
                    return;
                }
            }
            // Closing on this connection: the session table let go of it first, but the
            // closeSession reply is still to come.
            Err(None) if closing.load(Ordering::Acquire) => {
                while let Some(Outgoing::Reply { frame, .. }) = outgoing.recv().await {
                    if !out.send(&frame).await {
                        return;
                    }
                }
                return;
            }
            // This node let go of the session.
            Err(None) => return,
            Ok(Some(Outgoing::Reply {
                frame,
                events_before,
            })) => {
                while out.events_written < events_before {
                    let Some(event) = outbox.recv().await else {
                        return;
                    };
                    if !out.session_frame(event).await {
                        return;
                    }
                }
                if !out.send(&frame).await {
                    return;
                }
            }
            Ok(Some(Outgoing::Close)) | Ok(None) => return,
        }
    }
}

/// Who a new connection is: its address (`ip:`), and on the TLS listener its certificate
/// (`x509:<name>`, the name and roles policies see).
fn connection_principal(
    peer: SocketAddr,
    certified: Option<scopekeeper_transport::Principal>,
) -> Principal {
    let ip = Id::new("ip", &peer.ip().to_string());
    match certified {
        Some(cert) => {
            let mut principal = crate::service::policy_principal(&cert);
            principal.ids.insert(0, ip);
            principal
        }
        None => Principal {
            id: ip.to_string(),
            roles: Vec::new(),
            ids: vec![ip],
        },
    }
}

struct Connection {
    session: i64,
    /// Set once the client asked to close the session.
    closing: Arc<AtomicBool>,
    /// Who the connection acts as: `ip:` of its address and what `addauth` proved. Policies
    /// see the last authenticated identity as the principal's id.
    principal: Principal,
    peer: SocketAddr,
    /// The highest zxid this connection has revealed: every reply header carries it.
    last_zxid: AtomicI64,
}

impl Connection {
    fn saw(&self, zxid: i64) -> i64 {
        self.last_zxid.fetch_max(zxid, Ordering::AcqRel).max(zxid)
    }

    /// `addauth`: the connection holds what the provider proved, for its lifetime (a client
    /// sends its credentials again after reconnecting, as ZooKeeper's clients do).
    fn authenticate(&mut self, node: &Node, scheme: &str, auth: &[u8]) -> Result<(), ApiError> {
        let certified = self.principal.ids.iter().find(|i| i.scheme == "x509");
        let proven = super::auth::authenticate(
            scheme,
            auth,
            &self.peer.ip().to_string(),
            certified,
            node.0.config.zk_super_digest.as_deref(),
        )?;
        for id in proven.ids {
            if id.scheme != "ip" {
                // `digest:alice`, not the hash: the name policies are written against.
                let (scheme, user) = super::auth::client_info(&id);
                self.principal.id = format!("{scheme}:{user}");
            }
            if !self.principal.ids.contains(&id) {
                self.principal.ids.push(id);
            }
        }
        let admin = crate::policy::ADMIN_ROLE;
        if proven.superuser && !self.principal.has_role(admin) {
            self.principal.roles.push(admin.into());
        }
        Ok(())
    }
}

async fn serve_requests(
    node: Node,
    mut conn: Connection,
    mut requests: mpsc::Receiver<Framed>,
    outgoing: mpsc::Sender<Outgoing>,
) {
    while let Some(framed) = requests.recv().await {
        let closing = matches!(
            framed.request,
            ZkRequest::CloseSession | ZkRequest::Unsupported(_)
        );
        if let ZkRequest::Auth { scheme, auth } = &framed.request {
            // 3.8 answers an auth packet with zxid 0; a failure is answered, then closed.
            let result = conn.authenticate(&node, scheme, auth);
            let err = match &result {
                Ok(()) => 0,
                Err(e) => {
                    tracing::debug!(%scheme, "ZooKeeper addauth refused: {e}");
                    e.code.zk_code()
                }
            };
            // 3.8 echoes the request's xid (Java's client sends -4; others count up).
            let frame = encode_reply(framed.xid, 0, err, &ZkReply::Empty);
            let events_before = node.0.sessions.events_queued(conn.session);
            let reply = Outgoing::Reply {
                frame,
                events_before,
            };
            if outgoing.send(reply).await.is_err() || result.is_err() {
                let _ = outgoing.send(Outgoing::Close).await;
                return;
            }
            continue;
        }
        // 3.8 answers pings with the ping xid whatever was sent; everything else echoes the
        // request's xid.
        let reply_xid = match framed.opcode {
            op::PING => xid::PING,
            _ => framed.xid,
        };
        let (err, reply) = match serve_one(&node, &conn, framed).await {
            Ok(reply) => (0, reply),
            Err(e) => {
                tracing::debug!(
                    session = format!("{:#x}", conn.session),
                    "ZooKeeper request: {e}"
                );
                (e.code.zk_code(), ZkReply::Empty)
            }
        };
        let zxid = conn.last_zxid.load(Ordering::Acquire);
        let frame = encode_reply(reply_xid, zxid, err, &reply);
        let events_before = node.0.sessions.events_queued(conn.session);
        if outgoing
            .send(Outgoing::Reply {
                frame,
                events_before,
            })
            .await
            .is_err()
        {
            return;
        }
        if closing {
            let _ = outgoing.send(Outgoing::Close).await;
            return;
        }
    }
}

/// Sends one native request for the session, in order after the session's watch events.
/// A read that meets `ConnectionLoss` (the first quorum round after a quiet spell can fall
/// short while followers wake) is asked again a few times, as the native client does, since
/// reading twice is harmless; a write's unknown outcome is the client's to resolve.
async fn native(node: &Node, conn: &Connection, request: Request) -> Result<Reply, ApiError> {
    let mut attempt = 0;
    let reply = loop {
        attempt += 1;
        let answer = crate::service::serve_session_request(
            node,
            &conn.principal,
            conn.session,
            request.clone(),
        )
        .await;
        match answer {
            Err(e)
                if e.code == ErrorCode::ConnectionLoss
                    && !request.is_write()
                    && attempt < limits::ZK_READ_ATTEMPTS =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempt))).await;
            }
            other => break other?,
        }
    };
    conn.saw(translate::zxid_of(&reply));
    Ok(reply)
}

fn unexpected(reply: Reply) -> ApiError {
    ApiError::new(
        ErrorCode::SystemError,
        format!("unexpected native reply {reply:?}"),
    )
}

fn no_node(path: &str) -> ApiError {
    ApiError::new(ErrorCode::NoNode, format!("no node at {path}"))
}

async fn serve_one(node: &Node, conn: &Connection, framed: Framed) -> Result<ZkReply, ApiError> {
    node.0.sessions.heard(conn.session);
    let after_zxid = conn.last_zxid.load(Ordering::Acquire);
    let write = async |op: MultiOp| -> Result<ZkReply, ApiError> {
        let opcode = match &op {
            MultiOp::Create(c) => c.opcode,
            _ => 0,
        };
        let request = Request::Write {
            op: translate::native_op(&op)?,
            after_zxid,
        };
        match native(node, conn, request).await? {
            Reply::Write { result, .. } => Ok(translate::write_reply(opcode, result)),
            other => Err(unexpected(other)),
        }
    };
    match framed.request {
        ZkRequest::Ping => Ok(ZkReply::Empty),
        ZkRequest::Create(create) => write(MultiOp::Create(create)).await,
        ZkRequest::Delete { path, version } => write(MultiOp::Delete { path, version }).await,
        ZkRequest::SetData {
            path,
            data,
            version,
        } => {
            write(MultiOp::SetData {
                path,
                data,
                version,
            })
            .await
        }
        ZkRequest::Check { path, version } => write(MultiOp::Check { path, version }).await,
        ZkRequest::Exists { path, watch } => {
            let request = Request::Exists { path: path.clone() };
            let reply = read(node, conn, request, watch.then_some(WatchKind::Exist)).await?;
            match reply {
                Reply::Exists(Some(stat)) => Ok(ZkReply::Stat(stat)),
                Reply::Exists(None) => Err(no_node(&path)),
                other => Err(unexpected(other)),
            }
        }
        ZkRequest::GetData { path, watch } => {
            let request = Request::GetData { path };
            match read(node, conn, request, watch.then_some(WatchKind::Data)).await? {
                Reply::Data { data, stat } => Ok(ZkReply::Data { data, stat }),
                other => Err(unexpected(other)),
            }
        }
        ZkRequest::GetChildren {
            path,
            watch,
            with_stat,
        } => match read(
            node,
            conn,
            Request::GetChildren { path },
            watch.then_some(WatchKind::Child),
        )
        .await?
        {
            Reply::Children { children, stat } if with_stat => {
                Ok(ZkReply::Children2 { children, stat })
            }
            Reply::Children { children, .. } => Ok(ZkReply::Children(children)),
            other => Err(unexpected(other)),
        },
        ZkRequest::Sync { path } => {
            match native(node, conn, Request::Sync { path: path.clone() }).await? {
                Reply::Synced => Ok(ZkReply::Sync { path }),
                other => Err(unexpected(other)),
            }
        }
        ZkRequest::Multi(ops) => {
            if ops.is_empty() {
                return Ok(ZkReply::Multi(Vec::new()));
            }
            let native_ops = ops
                .iter()
                .map(translate::native_op)
                .collect::<Result<Vec<_>, _>>()?;
            let request = Request::Multi {
                ops: native_ops,
                after_zxid,
            };
            match native(node, conn, request).await? {
                Reply::Multi { slots, .. } => Ok(translate::multi_reply(slots)),
                other => Err(unexpected(other)),
            }
        }
        ZkRequest::MultiRead(ops) => {
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                let result = match op {
                    ReadOp::GetChildren { path } => {
                        read(node, conn, Request::GetChildren { path }, None)
                            .await
                            .and_then(|r| match r {
                                Reply::Children { children, .. } => {
                                    Ok(ReadResult::Children(children))
                                }
                                other => Err(unexpected(other)),
                            })
                    }
                    ReadOp::GetData { path } => read(node, conn, Request::GetData { path }, None)
                        .await
                        .and_then(|r| match r {
                            Reply::Data { data, stat } => Ok(ReadResult::Data { data, stat }),
                            other => Err(unexpected(other)),
                        }),
                };
                results.push(result.unwrap_or_else(|e| ReadResult::Error(e.code.zk_code())));
            }
            Ok(ZkReply::MultiRead(results))
        }
        ZkRequest::SetWatches(watches) => {
            native(node, conn, translate::set_watches(watches)).await?;
            Ok(ZkReply::Empty)
        }
        ZkRequest::AddWatch { path, recursive } => {
            let kind = if recursive {
                WatchKind::PersistentRecursive
            } else {
                WatchKind::Persistent
            };
            native(node, conn, Request::Watch { path, kind }).await?;
            Ok(ZkReply::Ack)
        }
        ZkRequest::RemoveWatches { path, kind, remove } => {
            let kind = translate::watcher_type(kind)?;
            let found = if remove {
                node.0.watches.remove(conn.session, &path, kind)
            } else {
                node.0.watches.count(conn.session, &path, kind)
            };
            if found == 0 {
                return Err(ApiError::new(
                    ErrorCode::NoWatcher,
                    format!("no such watch on {path}"),
                ));
            }
            Ok(ZkReply::Empty)
        }
        ZkRequest::WhoAmI => Ok(ZkReply::WhoAmI(
            conn.principal
                .ids
                .iter()
                .map(super::auth::client_info)
                .collect(),
        )),
        ZkRequest::CloseSession => {
            conn.closing.store(true, Ordering::Release);
            // Finished even if the client hangs up meanwhile: its ephemerals must go.
            let (node, id) = (node.clone(), conn.session);
            tokio::spawn(async move { crate::sessions::close(&node, id).await })
                .await
                .map_err(|e| ApiError::new(ErrorCode::SystemError, format!("closing: {e}")))??;
            Ok(ZkReply::Empty)
        }
        ZkRequest::GetAcl { path } => match native(node, conn, Request::GetAcl { path }).await? {
            Reply::Acl { acl, stat } => Ok(ZkReply::Acl { acl, stat }),
            other => Err(unexpected(other)),
        },
        ZkRequest::SetAcl { path, acl, version } => {
            if acl.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::InvalidAcl,
                    "an ACL needs at least one entry",
                ));
            }
            let request = Request::Write {
                op: Op::SetAcl { path, acl, version },
                after_zxid,
            };
            match native(node, conn, request).await? {
                Reply::Write { result, .. } => Ok(translate::write_reply(op::SET_ACL, result)),
                other => Err(unexpected(other)),
            }
        }
        ZkRequest::GetAllChildrenNumber { path } => {
            // 3.8 checks READ on the node asked about (only there); reading it does that.
            native(node, conn, Request::GetData { path: path.clone() }).await?;
            // Each scope counts its own znodes and names the child scopes below the path.
            let mut total: u64 = 0;
            let mut todo = vec![path];
            while let Some(p) = todo.pop() {
                match native(node, conn, Request::Descendants { path: p }).await? {
                    Reply::Descendants { count, delegated } => {
                        // A child scope's root is a znode too; its own scope counts below it.
                        total += count + delegated.len() as u64;
                        todo.extend(delegated);
                    }
                    other => return Err(unexpected(other)),
                }
            }
            Ok(ZkReply::Count(i32::try_from(total).unwrap_or(i32::MAX)))
        }
        ZkRequest::GetEphemerals { prefix } => {
            let mut paths = Vec::new();
            for root in crate::sessions::registered_roots(node, conn.session).await? {
                let request = Request::Ephemerals {
                    root,
                    prefix: prefix.clone(),
                };
                match native(node, conn, request).await {
                    Ok(Reply::Paths(found)) => paths.extend(found),
                    Ok(other) => return Err(unexpected(other)),
                    // A registered scope root that no longer exists holds nothing.
                    Err(e) if e.code == ErrorCode::NoNode => {}
                    Err(e) => return Err(e),
                }
            }
            paths.sort();
            Ok(ZkReply::Paths(paths))
        }
        ZkRequest::Auth { .. } => Err(ApiError::new(
            ErrorCode::SystemError,
            "addauth is handled by the connection before requests are served",
        )),
        ZkRequest::Unsupported(opcode) => Err(ApiError::new(
            ErrorCode::Unimplemented,
            format!("unknown opcode {opcode}; closing the connection as ZooKeeper does"),
        )),
    }
}

/// A read (`GetData`, `Exists` or `GetChildren`), leaving a watch of `watch`'s kind if given.
async fn read(
    node: &Node,
    conn: &Connection,
    request: Request,
    watch: Option<WatchKind>,
) -> Result<Reply, ApiError> {
    let (Request::GetData { path } | Request::Exists { path } | Request::GetChildren { path }) =
        &request
    else {
        return Err(ApiError::new(
            ErrorCode::SystemError,
            format!("{request:?} is not a read"),
        ));
    };
    let Some(kind) = watch else {
        let seen = conn.last_zxid.load(Ordering::Acquire);
        let request = node.0.config.zk_reads.request(request, seen);
        return match native(node, conn, request).await? {
            // Counted as seen by `native`, failures included.
            Reply::AtZxid { reply, .. } => *reply,
            other => Ok(other),
        };
    };
    let watched = Request::Watch {
        path: path.clone(),
        kind,
    };
    match native(node, conn, watched).await? {
        Reply::Watched { reply, .. } => Ok(*reply),
        other => Err(unexpected(other)),
    }
}
