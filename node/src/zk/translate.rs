//! From ZooKeeper's requests to the native API's and back: which native request serves a
//! ZooKeeper opcode, and how its reply is encoded. Pure; the connection does the I/O.

use scopekeeper_client::proto::{
    ApiError, ArmedWatch, CreateMode, ErrorCode, MultiSlot, Op, OpResult, Reply, Request, WatchKind,
};

use super::proto::{Create, MultiOp, MultiResult, SetWatches, ZkReply, op};

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadArguments, message)
}

/// ZooKeeper's create flags (`CreateMode.fromFlag`), checked against the opcode as 3.8 does:
/// TTL modes only through `createTTL` with a positive TTL, containers only through
/// `createContainer`.
pub fn create_mode(create: &Create) -> Result<CreateMode, ApiError> {
    let ttl = || match create.ttl_ms {
        Some(ttl_ms) if ttl_ms > 0 => Ok(ttl_ms),
        Some(ttl_ms) => Err(bad(format!("TTL {ttl_ms} ms: a TTL must be positive"))),
        None => Err(bad("TTL create modes need the createTTL request")),
    };
    let mode = match create.flags {
        0 => CreateMode::Persistent,
        1 => CreateMode::Ephemeral,
        2 => CreateMode::PersistentSequential,
        3 => CreateMode::EphemeralSequential,
        4 => CreateMode::Container,
        5 => CreateMode::PersistentWithTtl { ttl_ms: ttl()? },
        6 => CreateMode::PersistentSequentialWithTtl { ttl_ms: ttl()? },
        other => return Err(bad(format!("unknown create flags {other}"))),
    };
    let ttl_mode = matches!(
        mode,
        CreateMode::PersistentWithTtl { .. } | CreateMode::PersistentSequentialWithTtl { .. }
    );
    if (create.opcode == op::CREATE_TTL) != ttl_mode {
        return Err(bad("createTTL takes exactly the TTL create modes"));
    }
    if (create.opcode == op::CREATE_CONTAINER) != (mode == CreateMode::Container) {
        return Err(bad(
            "createContainer takes exactly the container create mode",
        ));
    }
    if create.acl.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidAcl,
            "a node needs at least one ACL entry",
        ));
    }
    Ok(mode)
}

/// The native op of one ZooKeeper write.
pub fn native_op(op: &MultiOp) -> Result<Op, ApiError> {
    Ok(match op {
        MultiOp::Create(create) => Op::Create {
            path: create.path.clone(),
            data: create.data.clone(),
            mode: create_mode(create)?,
            acl: create.acl.clone(),
        },
        MultiOp::Delete { path, version } => Op::Delete {
            path: path.clone(),
            version: *version,
        },
        MultiOp::SetData {
            path,
            data,
            version,
        } => Op::SetData {
            path: path.clone(),
            data: data.clone(),
            version: *version,
        },
        MultiOp::Check { path, version } => Op::Check {
            path: path.clone(),
            version: *version,
        },
    })
}

/// How a write's result is encoded: create's bare path, create2's path and Stat, and so on.
pub fn write_reply(opcode: i32, result: OpResult) -> ZkReply {
    match result {
        OpResult::Created { path, .. } if opcode == op::CREATE => ZkReply::Create { path },
        OpResult::Created { path, stat } => ZkReply::Create2 { path, stat },
        OpResult::Set { stat } | OpResult::AclSet { stat } => ZkReply::Stat(stat),
        OpResult::Deleted | OpResult::Checked => ZkReply::Empty,
    }
}

/// A multi's slots as 3.8 encodes them: every op's result, or, if one failed, an error per op.
pub fn multi_reply(slots: Vec<MultiSlot>) -> ZkReply {
    let failed = slots
        .iter()
        .any(|s| matches!(s, MultiSlot::Failed(c) if *c != ErrorCode::Ok));
    let results = slots
        .into_iter()
        .map(|slot| match (slot, failed) {
            (MultiSlot::Failed(code), _) => MultiResult::Error(code.zk_code()),
            (MultiSlot::Done(_), true) => MultiResult::Error(0),
            (MultiSlot::Done(result), false) => match result {
                OpResult::Created { path, .. } => MultiResult::Create { path },
                // setACL never runs in a multi; its Stat would read as setData's.
                OpResult::Set { stat } | OpResult::AclSet { stat } => MultiResult::SetData(stat),
                OpResult::Deleted => MultiResult::Delete,
                OpResult::Checked => MultiResult::Check,
            },
        })
        .collect();
    ZkReply::Multi(results)
}

/// `setWatches` / `setWatches2` as the native re-arming request: each watch fires at once if
/// its node changed after `relative_zxid`.
pub fn set_watches(w: SetWatches) -> Request {
    let zxid = w.relative_zxid;
    let lists = [
        (w.data, WatchKind::Data),
        (w.exist, WatchKind::Exist),
        (w.child, WatchKind::Child),
        (w.persistent, WatchKind::Persistent),
        (w.recursive, WatchKind::PersistentRecursive),
    ];
    let watches = lists
        .into_iter()
        .flat_map(|(paths, kind)| {
            paths
                .into_iter()
                .map(move |path| ArmedWatch { path, kind, zxid })
        })
        .collect();
    Request::SetWatches { watches }
}

/// `WatcherType` of checkWatches / removeWatches: 1 children, 2 data, 3 any, 4 persistent,
/// 5 persistent recursive.
pub fn watcher_type(kind: i32) -> Result<Option<WatchKind>, ApiError> {
    match kind {
        1 => Ok(Some(WatchKind::Child)),
        2 => Ok(Some(WatchKind::Data)),
        3 => Ok(None),
        4 => Ok(Some(WatchKind::Persistent)),
        5 => Ok(Some(WatchKind::PersistentRecursive)),
        other => Err(bad(format!("unknown watcher type {other}"))),
    }
}

/// The highest zxid a reply reveals, for the reply header.
pub fn zxid_of(reply: &Reply) -> i64 {
    let stat_zxid = |s: &scopekeeper_client::Stat| s.czxid.max(s.mzxid).max(s.pzxid);
    match reply {
        Reply::Write { zxid, .. } | Reply::Multi { zxid, .. } => *zxid,
        Reply::Data { stat, .. } | Reply::Children { stat, .. } => stat_zxid(stat),
        Reply::Exists(Some(stat)) => stat_zxid(stat),
        Reply::Watched { reply, zxid } => zxid_of(reply).max(*zxid),
        Reply::AtZxid { reply, zxid } => (**reply).as_ref().map_or(0, zxid_of).max(*zxid),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zk::proto::Acl;

    fn create(opcode: i32, flags: i32, ttl_ms: Option<i64>) -> Create {
        Create {
            opcode,
            path: "/a".into(),
            data: vec![],
            acl: Acl::open(),
            flags,
            ttl_ms,
        }
    }

    #[test]
    fn create_modes_follow_the_opcode() {
        assert_eq!(
            create_mode(&create(op::CREATE, 3, None)),
            Ok(CreateMode::EphemeralSequential)
        );
        assert_eq!(
            create_mode(&create(op::CREATE_TTL, 5, Some(10))),
            Ok(CreateMode::PersistentWithTtl { ttl_ms: 10 })
        );
        for bad in [
            create(op::CREATE, 5, None),
            create(op::CREATE_TTL, 0, Some(10)),
            create(op::CREATE_TTL, 5, Some(0)),
            create(op::CREATE, 4, None),
            create(op::CREATE_CONTAINER, 0, None),
            create(op::CREATE, 9, None),
        ] {
            assert_eq!(
                create_mode(&bad).map_err(|e| e.code),
                Err(ErrorCode::BadArguments),
                "{bad:?}"
            );
        }
        let mut no_acl = create(op::CREATE, 0, None);
        no_acl.acl.clear();
        assert_eq!(
            create_mode(&no_acl).map_err(|e| e.code),
            Err(ErrorCode::InvalidAcl)
        );
    }

    #[test]
    fn a_failed_multi_reports_an_error_per_op() {
        let slots = vec![
            MultiSlot::Done(OpResult::Checked),
            MultiSlot::Failed(ErrorCode::BadVersion),
            MultiSlot::Failed(ErrorCode::RuntimeInconsistency),
        ];
        assert_eq!(
            multi_reply(slots),
            ZkReply::Multi(vec![
                MultiResult::Error(0),
                MultiResult::Error(-103),
                MultiResult::Error(-2),
            ])
        );
    }
}
