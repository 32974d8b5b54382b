//! ZooKeeper 3.8's client protocol records (`zookeeper.jute`), decoded into plain Rust and
//! encoded back. Pure: no sockets, no node. A frame is a 4-byte big-endian length and the
//! record; after the handshake each request is a `RequestHeader` (xid, opcode) and a body,
//! each reply a `ReplyHeader` (xid, zxid, err) and, on success, a body.

use scopekeeper_client::proto::Stat;
pub use scopekeeper_client::proto::{Acl, Id, perms};

use super::jute::{JuteError, Reader, Result, Writer};

/// Opcodes (`ZooDefs.OpCode`).
pub mod op {
    pub const NOTIFICATION: i32 = 0;
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const EXISTS: i32 = 3;
    pub const GET_DATA: i32 = 4;
    pub const SET_DATA: i32 = 5;
    pub const GET_ACL: i32 = 6;
    pub const SET_ACL: i32 = 7;
    pub const GET_CHILDREN: i32 = 8;
    pub const SYNC: i32 = 9;
    pub const PING: i32 = 11;
    pub const GET_CHILDREN2: i32 = 12;
    pub const CHECK: i32 = 13;
    pub const MULTI: i32 = 14;
    pub const CREATE2: i32 = 15;
    pub const RECONFIG: i32 = 16;
    pub const CHECK_WATCHES: i32 = 17;
    pub const REMOVE_WATCHES: i32 = 18;
    pub const CREATE_CONTAINER: i32 = 19;
    pub const DELETE_CONTAINER: i32 = 20;
    pub const CREATE_TTL: i32 = 21;
    pub const MULTI_READ: i32 = 22;
    pub const AUTH: i32 = 100;
    pub const SET_WATCHES: i32 = 101;
    pub const SASL: i32 = 102;
    pub const GET_EPHEMERALS: i32 = 103;
    pub const GET_ALL_CHILDREN_NUMBER: i32 = 104;
    pub const SET_WATCHES2: i32 = 105;
    pub const ADD_WATCH: i32 = 106;
    pub const WHO_AM_I: i32 = 107;
    pub const CREATE_SESSION: i32 = -10;
    pub const CLOSE_SESSION: i32 = -11;
    pub const ERROR: i32 = -1;
}

/// Reserved xids.
pub mod xid {
    pub const NOTIFICATION: i32 = -1;
    pub const PING: i32 = -2;
    pub const AUTH: i32 = -4;
    pub const SET_WATCHES: i32 = -8;
}

/// `Watcher.Event.KeeperState.SyncConnected`, the state of every notification we send.
pub const STATE_SYNC_CONNECTED: i32 = 3;

/// ZooKeeper's permission bits (`ZooDefs.Perms`).

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub password: Vec<u8>,
    /// Absent from clients older than 3.4; we answer in kind.
    pub read_only: Option<bool>,
}

impl ConnectRequest {
    pub fn decode(bytes: &[u8]) -> Result<ConnectRequest> {
        let mut r = Reader::new(bytes);
        let request = ConnectRequest {
            protocol_version: r.i32()?,
            last_zxid_seen: r.i64()?,
            timeout_ms: r.i32()?,
            session_id: r.i64()?,
            password: r.buffer()?,
            read_only: if r.left() > 0 { Some(r.bool()?) } else { None },
        };
        r.finish()?;
        Ok(request)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i32(self.protocol_version)
            .i64(self.last_zxid_seen)
            .i32(self.timeout_ms)
            .i64(self.session_id)
            .buffer(&self.password);
        if let Some(ro) = self.read_only {
            w.bool(ro);
        }
        w.bytes
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectResponse {
    pub protocol_version: i32,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub password: Vec<u8>,
    pub read_only: Option<bool>,
}

impl ConnectResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i32(self.protocol_version)
            .i32(self.timeout_ms)
            .i64(self.session_id)
            .buffer(&self.password);
        if let Some(ro) = self.read_only {
            w.bool(ro);
        }
        w.bytes
    }
}

fn read_acl(r: &mut Reader<'_>) -> Result<Acl> {
    Ok(Acl {
        perms: r.i32()?,
        id: Id {
            scheme: r.string()?,
            id: r.string()?,
        },
    })
}

/// An ACL takes at least its perms and two empty strings.
const ACL_BYTES_MIN: usize = 12;

fn write_acl(w: &mut Writer, acl: &Acl) {
    w.i32(acl.perms).string(&acl.id.scheme).string(&acl.id.id);
}

/// The `ephemeralOwner` a client sees: ZooKeeper keeps container and TTL markers in the
/// field but shows clients 0 for them (`DataNode.getClientEphemeralOwner`); so do we.
pub fn client_ephemeral_owner(owner: i64) -> i64 {
    const CONTAINER: i64 = i64::MIN;
    const TTL_MASK: i64 = 0xff << 56;
    if owner == CONTAINER || owner & TTL_MASK == TTL_MASK {
        0
    } else {
        owner
    }
}

pub fn write_stat(w: &mut Writer, s: &Stat) {
    w.i64(s.czxid)
        .i64(s.mzxid)
        .i64(s.ctime)
        .i64(s.mtime)
        .i32(s.version)
        .i32(s.cversion)
        .i32(s.aversion)
        .i64(client_ephemeral_owner(s.ephemeral_owner))
        .i32(s.data_length)
        .i32(s.num_children)
        .i64(s.pzxid);
}

pub fn read_stat(r: &mut Reader<'_>) -> Result<Stat> {
    Ok(Stat {
        czxid: r.i64()?,
        mzxid: r.i64()?,
        ctime: r.i64()?,
        mtime: r.i64()?,
        version: r.i32()?,
        cversion: r.i32()?,
        aversion: r.i32()?,
        ephemeral_owner: r.i64()?,
        data_length: r.i32()?,
        num_children: r.i32()?,
        pzxid: r.i64()?,
    })
}

/// A create of any of the four create opcodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Create {
    pub opcode: i32,
    pub path: String,
    pub data: Vec<u8>,
    pub acl: Vec<Acl>,
    pub flags: i32,
    /// `createTTL` only.
    pub ttl_ms: Option<i64>,
}

/// One op of a `multi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MultiOp {
    Create(Create),
    Delete {
        path: String,
        version: i32,
    },
    SetData {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    Check {
        path: String,
        version: i32,
    },
}

/// One op of a `multiRead`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOp {
    GetChildren { path: String },
    GetData { path: String },
}

/// The watch lists of `setWatches` (the last two empty) and `setWatches2`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetWatches {
    pub relative_zxid: i64,
    pub data: Vec<String>,
    pub exist: Vec<String>,
    pub child: Vec<String>,
    pub persistent: Vec<String>,
    pub recursive: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZkRequest {
    Create(Create),
    Delete {
        path: String,
        version: i32,
    },
    Exists {
        path: String,
        watch: bool,
    },
    GetData {
        path: String,
        watch: bool,
    },
    SetData {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    GetAcl {
        path: String,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    /// `getChildren` (`with_stat` false) and `getChildren2`.
    GetChildren {
        path: String,
        watch: bool,
        with_stat: bool,
    },
    Sync {
        path: String,
    },
    Ping,
    Check {
        path: String,
        version: i32,
    },
    Multi(Vec<MultiOp>),
    MultiRead(Vec<ReadOp>),
    Auth {
        scheme: String,
        auth: Vec<u8>,
    },
    SetWatches(SetWatches),
    AddWatch {
        path: String,
        recursive: bool,
    },
    /// `checkWatches` (`remove` false) and `removeWatches`; `kind` 1 children, 2 data, 3 any.
    RemoveWatches {
        path: String,
        kind: i32,
        remove: bool,
    },
    GetEphemerals {
        prefix: String,
    },
    GetAllChildrenNumber {
        path: String,
    },
    WhoAmI,
    CloseSession,
    /// An opcode we know but do not serve (reconfig, SASL, deleteContainer, ...), or one we do
    /// not know at all: both are answered as 3.8 answers an unknown one.
    Unsupported(i32),
}

/// A decoded request frame: its xid and what it asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Framed {
    pub xid: i32,
    pub opcode: i32,
    pub request: ZkRequest,
}

fn read_create(r: &mut Reader<'_>, opcode: i32) -> Result<Create> {
    Ok(Create {
        opcode,
        path: r.string()?,
        data: r.buffer()?,
        acl: r.vec(ACL_BYTES_MIN, read_acl)?,
        flags: r.i32()?,
        ttl_ms: if opcode == op::CREATE_TTL {
            Some(r.i64()?)
        } else {
            None
        },
    })
}

fn read_multi(r: &mut Reader<'_>) -> Result<Vec<MultiOp>> {
    let mut ops = Vec::new();
    loop {
        let (kind, done, _err) = (r.i32()?, r.bool()?, r.i32()?);
        if done {
            return Ok(ops);
        }
        ops.push(match kind {
            op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
                MultiOp::Create(read_create(r, kind)?)
            }
            op::DELETE => MultiOp::Delete {
                path: r.string()?,
                version: r.i32()?,
            },
            op::SET_DATA => MultiOp::SetData {
                path: r.string()?,
                data: r.buffer()?,
                version: r.i32()?,
            },
            op::CHECK => MultiOp::Check {
                path: r.string()?,
                version: r.i32()?,
            },
            other => return Err(JuteError::BadLength(other.into())),
        });
    }
}

fn read_multi_read(r: &mut Reader<'_>) -> Result<Vec<ReadOp>> {
    let mut ops = Vec::new();
    loop {
        let (kind, done, _err) = (r.i32()?, r.bool()?, r.i32()?);
        if done {
            return Ok(ops);
        }
        ops.push(match kind {
            // The records carry a watch flag, which multiRead ignores.
            op::GET_CHILDREN => {
                let path = r.string()?;
                r.bool()?;
                ReadOp::GetChildren { path }
            }
            op::GET_DATA => {
                let path = r.string()?;
                r.bool()?;
                ReadOp::GetData { path }
            }
            other => return Err(JuteError::BadLength(other.into())),
        });
    }
}

impl Framed {
    /// Decodes one request frame (without its length prefix).
    pub fn decode(bytes: &[u8]) -> Result<Framed> {
        let mut r = Reader::new(bytes);
        let xid = r.i32()?;
        let opcode = r.i32()?;
        let request = match opcode {
            op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
                ZkRequest::Create(read_create(&mut r, opcode)?)
            }
            op::DELETE => ZkRequest::Delete {
                path: r.string()?,
                version: r.i32()?,
            },
            op::EXISTS => ZkRequest::Exists {
                path: r.string()?,
                watch: r.bool()?,
            },
            op::GET_DATA => ZkRequest::GetData {
                path: r.string()?,
                watch: r.bool()?,
            },
            op::SET_DATA => ZkRequest::SetData {
                path: r.string()?,
                data: r.buffer()?,
                version: r.i32()?,
            },
            op::GET_ACL => ZkRequest::GetAcl { path: r.string()? },
            op::SET_ACL => ZkRequest::SetAcl {
                path: r.string()?,
                acl: r.vec(ACL_BYTES_MIN, read_acl)?,
                version: r.i32()?,
            },
            op::GET_CHILDREN | op::GET_CHILDREN2 => ZkRequest::GetChildren {
                path: r.string()?,
                watch: r.bool()?,
                with_stat: opcode == op::GET_CHILDREN2,
            },
            op::SYNC => ZkRequest::Sync { path: r.string()? },
            op::PING => ZkRequest::Ping,
            op::CHECK => ZkRequest::Check {
                path: r.string()?,
                version: r.i32()?,
            },
            op::MULTI => ZkRequest::Multi(read_multi(&mut r)?),
            op::MULTI_READ => ZkRequest::MultiRead(read_multi_read(&mut r)?),
            op::AUTH => {
                let _type = r.i32()?;
                ZkRequest::Auth {
                    scheme: r.string()?,
                    auth: r.buffer()?,
                }
            }
            op::SET_WATCHES | op::SET_WATCHES2 => {
                let mut w = SetWatches {
                    relative_zxid: r.i64()?,
                    data: r.strings()?,
                    exist: r.strings()?,
                    child: r.strings()?,
                    ..SetWatches::default()
                };
                if opcode == op::SET_WATCHES2 {
                    w.persistent = r.strings()?;
                    w.recursive = r.strings()?;
                }
                ZkRequest::SetWatches(w)
            }
            op::ADD_WATCH => {
                let path = r.string()?;
                let mode = r.i32()?;
                match mode {
                    0 | 1 => ZkRequest::AddWatch {
                        path,
                        recursive: mode == 1,
                    },
                    other => return Err(JuteError::BadLength(other.into())),
                }
            }
            op::CHECK_WATCHES | op::REMOVE_WATCHES => ZkRequest::RemoveWatches {
                path: r.string()?,
                kind: r.i32()?,
                remove: opcode == op::REMOVE_WATCHES,
            },
            op::GET_EPHEMERALS => ZkRequest::GetEphemerals {
                prefix: r.string()?,
            },
            op::GET_ALL_CHILDREN_NUMBER => ZkRequest::GetAllChildrenNumber { path: r.string()? },
            op::WHO_AM_I => ZkRequest::WhoAmI,
            op::CLOSE_SESSION => ZkRequest::CloseSession,
            // Unknown or unserved: the body is not ours to read.
            other => {
                return Ok(Framed {
                    xid,
                    opcode,
                    request: ZkRequest::Unsupported(other),
                });
            }
        };
        r.finish()?;
        Ok(Framed {
            xid,
            opcode,
            request,
        })
    }
}

/// A reply's body, as the request's opcode wants it encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZkReply {
    /// Header only (delete, check, ping, setWatches, removeWatches, auth, closeSession).
    Empty,
    /// An `ErrorResponse` of 0 after the header: what 3.8 sends for `addWatch`.
    Ack,
    Create {
        path: String,
    },
    Create2 {
        path: String,
        stat: Stat,
    },
    Stat(Stat),
    Data {
        data: Vec<u8>,
        stat: Stat,
    },
    Acl {
        acl: Vec<Acl>,
        stat: Stat,
    },
    Children(Vec<String>),
    Children2 {
        children: Vec<String>,
        stat: Stat,
    },
    Sync {
        path: String,
    },
    Multi(Vec<MultiResult>),
    MultiRead(Vec<ReadResult>),
    Paths(Vec<String>),
    Count(i32),
    WhoAmI(Vec<(String, String)>),
}

/// One op's result in a multi's reply. A failed multi reports `Error` for every op: 0 for
/// those before the failure, the failure, then `RuntimeInconsistency` (-2), as 3.8 does.
/// Every create, create2 included, is answered as a plain create, as 3.8 does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MultiResult {
    Create { path: String },
    Delete,
    SetData(Stat),
    Check,
    Error(i32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResult {
    Children(Vec<String>),
    Data { data: Vec<u8>, stat: Stat },
    Error(i32),
}

/// Encodes a reply frame body: the header, then the body if `err` is 0.
pub fn encode_reply(xid: i32, zxid: i64, err: i32, reply: &ZkReply) -> Vec<u8> {
    let mut w = Writer::new();
    w.i32(xid).i64(zxid).i32(err);
    if err != 0 {
        return w.bytes;
    }
    match reply {
        ZkReply::Empty => {}
        ZkReply::Ack => {
            w.i32(0);
        }
        ZkReply::Create { path } | ZkReply::Sync { path } => {
            w.string(path);
        }
        ZkReply::Create2 { path, stat } => {
            w.string(path);
            write_stat(&mut w, stat);
        }
        ZkReply::Stat(stat) => write_stat(&mut w, stat),
        ZkReply::Data { data, stat } => {
            w.buffer(data);
            write_stat(&mut w, stat);
        }
        ZkReply::Acl { acl, stat } => {
            w.vec(acl, write_acl);
            write_stat(&mut w, stat);
        }
        ZkReply::Children(children) | ZkReply::Paths(children) => {
            w.strings(children);
        }
        ZkReply::Children2 { children, stat } => {
            w.strings(children);
            write_stat(&mut w, stat);
        }
        ZkReply::Multi(results) => {
            for result in results {
                let kind = match result {
                    MultiResult::Create { .. } => op::CREATE,
                    MultiResult::Delete => op::DELETE,
                    MultiResult::SetData(_) => op::SET_DATA,
                    MultiResult::Check => op::CHECK,
                    MultiResult::Error(_) => op::ERROR,
                };
                let err = match result {
                    MultiResult::Error(e) => *e,
                    _ => 0,
                };
                w.i32(kind).bool(false).i32(err);
                match result {
                    MultiResult::Create { path } => {
                        w.string(path);
                    }
                    MultiResult::SetData(stat) => write_stat(&mut w, stat),
                    MultiResult::Error(e) => {
                        w.i32(*e);
                    }
                    MultiResult::Delete | MultiResult::Check => {}
                }
            }
            w.i32(-1).bool(true).i32(-1);
        }
        ZkReply::MultiRead(results) => {
            for result in results {
                match result {
                    ReadResult::Children(children) => {
                        w.i32(op::GET_CHILDREN).bool(false).i32(0).strings(children);
                    }
                    ReadResult::Data { data, stat } => {
                        w.i32(op::GET_DATA).bool(false).i32(0).buffer(data);
                        write_stat(&mut w, stat);
                    }
                    ReadResult::Error(e) => {
                        w.i32(op::ERROR).bool(false).i32(*e).i32(*e);
                    }
                }
            }
            w.i32(-1).bool(true).i32(-1);
        }
        ZkReply::Count(n) => {
            w.i32(*n);
        }
        ZkReply::WhoAmI(infos) => {
            w.vec(infos, |w, (scheme, user)| {
                w.string(scheme).string(user);
            });
        }
    }
    w.bytes
}

/// A watch notification: `WatcherEvent` behind a header with xid -1.
pub fn encode_event(zxid: i64, event_type: i32, path: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.i32(xid::NOTIFICATION)
        .i64(zxid)
        .i32(0)
        .i32(event_type)
        .i32(STATE_SYNC_CONNECTED)
        .string(path);
    w.bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Bodies as ZooKeeper 3.8.0 (Debian's package) sent them, recorded with raw frames.
    #[test]
    fn a_failed_multi_is_encoded_as_zookeeper_3_8_encodes_it() {
        let reply = ZkReply::Multi(vec![
            MultiResult::Error(0),
            MultiResult::Error(-103),
            MultiResult::Error(-2),
        ]);
        let bytes = encode_reply(6, 0, 0, &reply);
        assert_eq!(
            hex(&bytes[16..]),
            "ffffffff000000000000000000ffffffff00ffffff99ffffff99ffffffff00fffffffefffffffeffffffff01ffffffff"
        );
        assert_eq!(
            hex(&encode_reply(8, 0, 0, &ZkReply::Multi(vec![]))[16..]),
            "ffffffff01ffffffff"
        );
    }

    #[test]
    fn multi_read_and_small_replies_match_zookeeper_3_8() {
        let reply = ZkReply::MultiRead(vec![
            ReadResult::Children(vec!["a".into()]),
            ReadResult::Error(-101),
        ]);
        assert_eq!(
            hex(&encode_reply(9, 0, 0, &reply)[16..]),
            concat!(
                "000000080000000000",
                "000000010000000161",
                "ffffffff00ffffff9bffffff9b",
                "ffffffff01ffffffff"
            )
        );
        assert_eq!(
            hex(&encode_reply(20, 0, 0, &ZkReply::Ack)[16..]),
            "00000000"
        );
        assert_eq!(
            hex(&encode_reply(11, 0, 0, &ZkReply::Count(6))[16..]),
            "00000006"
        );
        let who = ZkReply::WhoAmI(vec![("ip".into(), "127.0.0.1".into())]);
        assert_eq!(
            hex(&encode_reply(13, 0, 0, &who)[16..]),
            "00000001000000026970000000093132372e302e302e31"
        );
        // An error has no body.
        assert_eq!(encode_reply(1, 5, -101, &who).len(), 16);
    }

    #[test]
    fn requests_round_trip_through_the_decoder() {
        let mut w = Writer::new();
        w.i32(7).i32(op::CREATE_TTL).string("/a").buffer(b"x");
        w.vec(&Acl::open(), write_acl);
        w.i32(5).i64(60_000);
        let framed = Framed::decode(&w.bytes).expect("a createTTL");
        assert_eq!(framed.xid, 7);
        assert_eq!(
            framed.request,
            ZkRequest::Create(Create {
                opcode: op::CREATE_TTL,
                path: "/a".into(),
                data: b"x".to_vec(),
                acl: Acl::open(),
                flags: 5,
                ttl_ms: Some(60_000),
            })
        );
        let connect = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 9,
            timeout_ms: 30_000,
            session_id: 0,
            password: vec![0; 16],
            read_only: None,
        };
        assert_eq!(ConnectRequest::decode(&connect.encode()), Ok(connect));
        let mut w = Writer::new();
        w.i32(1).i32(12_345).bytes.extend_from_slice(b"whatever");
        assert_eq!(
            Framed::decode(&w.bytes).map(|f| f.request),
            Ok(ZkRequest::Unsupported(12_345))
        );
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::super::*;

        /// Frames that start like real requests (a known opcode after the xid) and go on with
        /// anything: the decoder's interesting paths, reached far more often than by bytes
        /// alone.
        fn framed_bytes() -> impl Strategy<Value = Vec<u8>> {
            let opcodes = prop::sample::select(vec![
                op::CREATE,
                op::DELETE,
                op::EXISTS,
                op::GET_DATA,
                op::SET_DATA,
                op::GET_ACL,
                op::SET_ACL,
                op::GET_CHILDREN,
                op::SYNC,
                op::PING,
                op::GET_CHILDREN2,
                op::CHECK,
                op::MULTI,
                op::CREATE2,
                op::CHECK_WATCHES,
                op::REMOVE_WATCHES,
                op::CREATE_CONTAINER,
                op::CREATE_TTL,
                op::MULTI_READ,
                op::AUTH,
                op::SET_WATCHES,
                op::GET_EPHEMERALS,
                op::GET_ALL_CHILDREN_NUMBER,
                op::SET_WATCHES2,
                op::ADD_WATCH,
                op::WHO_AM_I,
                op::CLOSE_SESSION,
                999,
            ]);
            (
                any::<i32>(),
                opcodes,
                prop::collection::vec(any::<u8>(), 0..256),
            )
                .prop_map(|(xid, opcode, rest)| {
                    let mut bytes = xid.to_be_bytes().to_vec();
                    bytes.extend_from_slice(&opcode.to_be_bytes());
                    bytes.extend_from_slice(&rest);
                    bytes
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// No input panics the decoder; an error is an answer, and so is a request.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = Framed::decode(&bytes);
                let _ = ConnectRequest::decode(&bytes);
            }

            #[test]
            fn arbitrary_request_bodies_never_panic(bytes in framed_bytes()) {
                if let Ok(framed) = Framed::decode(&bytes) {
                    // Whatever decoded came from the frame: no string longer than it.
                    let shown = format!("{framed:?}").len();
                    prop_assert!(shown < 64 * (bytes.len() + 64));
                }
            }

            /// Small counts with long bodies: vectors of strings and ACLs decode or fail
            /// cleanly, and a decoded vector never holds more elements than bytes allow.
            #[test]
            fn vectors_are_bounded_by_the_frame(count in 0i32..1_000_000, tail in prop::collection::vec(any::<u8>(), 0..64)) {
                let mut w = Writer::new();
                w.i32(1).i32(op::SET_WATCHES).i64(0).i32(count);
                w.bytes.extend_from_slice(&tail);
                if let Ok(Framed { request: ZkRequest::SetWatches(sw), .. }) = Framed::decode(&w.bytes) {
                    prop_assert!(sw.data.len() * 4 <= tail.len());
                }
            }
        }
    }
}
