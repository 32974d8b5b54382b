//! A scope: one openraft group over fjall storage, applying transactions to its tree.
//!
//! The sans-IO parts are `tree` (what an entry does) and openraft's engine (when an entry is
//! committed); this module is the shell that stamps proposals, forwards nothing, and waits.
//! Write path, in order: the leader stamps a command, openraft appends it to a majority's log
//! (each append acknowledged only after the shared fsync), commits, every anchor applies it to
//! its tree and fjall, then the proposer's responder answers the client.

pub mod ack;
pub mod append_stream;
mod background;
pub mod genesis;
pub mod governance;
pub mod load;
pub mod log_store;
pub mod network;
pub mod read_rounds;
pub mod snapshot;
pub mod snapshot_builder;
pub mod state_machine;
#[cfg(test)]
mod storage_suite;
pub mod tenure;
pub mod types;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ReadPolicy, SnapshotPolicy};
use tokio::sync::{Semaphore, mpsc, oneshot};

use self::log_store::ScopeLog;
use self::network::ScopeNetwork;
use self::state_machine::{ScopeEvents, ScopeStateMachine, ScopeView};
use self::types::{
    Body, Command, CommandOutcome, CommandResult, Proposal, Raft, SetPolicy, TxnResult,
};
use crate::config::RaftTuning;
use crate::directory::ScopeIdentity;
use crate::limits;
use crate::peer::{Peers, Refusal};
use crate::policy::admission::Principal;
use crate::policy::engine::PolicyEngine;
use crate::policy::quorum::QuorumAnchor;
use crate::storage::{ScopeId, Store};
use crate::tree::{Stamp, Txn};

pub struct Scope {
    pub id: ScopeId,
    /// This node's raft id in the scope (its replica), never reused within the scope.
    pub replica: u64,
    pub raft: Raft,
    view: ScopeView,
    /// Transactions waiting to be batched into the next entry; bounded, a full queue refuses.
    batches: mpsc::Sender<Pending>,
    engine: PolicyEngine,
    /// Holds answers until the scope's quorum rule accepts the anchors that stored them.
    ack: Arc<ack::AckGate>,
    /// Whether this replica's raft ticker is parked (see `liveness`).
    quiescent: AtomicBool,
    /// When a client last asked this scope for anything, for quiescence.
    last_activity: std::sync::Mutex<Instant>,
    /// What each apply changed, for watches.
    feed: state_machine::ChangeFeed,
    /// Linearizable reads on this node share read-index calls.
    pub reads: read_rounds::ReadRounds,
    /// Ends when the replica is closed: its storage writes nothing after that.
    tenure: tenure::Tenure,
}

/// A transaction waiting for its batch.
struct Pending {
    proposal: Proposal,
    zxid_floor: i64,
    reply: oneshot::Sender<Result<TxnResult, Refusal>>,
}

/// The leader's stamp: `zxid_hint = max(now_ms << 20, floor + 1)`, the time of the entry.
fn stamp(zxid_floor: i64) -> Stamp {
    let now = now_ms();
    Stamp {
        zxid_hint: (now << 20).max(zxid_floor.saturating_add(1)),
        time_ms: now,
    }
}

fn unknown_outcome() -> Refusal {
    Refusal::Unknown(format!(
        "the write was not committed within {:?}; it may still take effect",
        limits::WRITE_TIMEOUT
    ))
}

type WriteResult = Result<
    openraft::raft::ClientWriteResponse<types::TypeConfig>,
    RaftError<types::TypeConfig, ClientWriteError<types::TypeConfig>>,
>;

fn write_result(result: WriteResult) -> Result<CommandResult, Refusal> {
    match result {
        Ok(response) => Ok(response.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(Refusal::NotLeader {
            leader: f.leader_node.map(|n| (n.node, n.addr)),
        }),
        Err(e) => Err(Refusal::Unknown(e.to_string())),
    }
}

/// A write's result once the scope's quorum rule accepts who stored it.
async fn acknowledged(
    raft: &Raft,
    ack: &ack::AckGate,
    result: WriteResult,
) -> Result<CommandResult, Refusal> {
    let index = result.as_ref().ok().map(|r| r.log_id.index());
    let outcome = write_result(result)?;
    if let Some(index) = index {
        ack.wait(raft, index).await?;
    }
    Ok(outcome)
}

/// Forms batches in arrival order and submits them to raft in that order, with at most
/// `BATCHES_IN_FLIGHT_MAX` entries in flight: an idle scope sends each transaction at once,
/// a busy one lets them gather behind the entry in flight.
async fn run_batcher(raft: Raft, ack: Arc<ack::AckGate>, mut queue: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(limits::BATCHES_IN_FLIGHT_MAX));
    while let Some(first) = queue.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.proposal.txn.approx_bytes();
        let mut batch = vec![first];
        let mut overflow = None;
        while batch.len() < limits::BATCH_PROPOSALS_MAX {
            match queue.try_recv() {
                Ok(next) if bytes + next.proposal.txn.approx_bytes() <= limits::BATCH_BYTES_MAX => {
                    bytes += next.proposal.txn.approx_bytes();
                    batch.push(next);
                }
                // Too big for this entry: it goes in an entry of its own, right after.
                Ok(next) => {
                    overflow = Some(next);
                    break;
                }
                Err(_) => break,
            }
        }
        submit(&raft, &ack, batch, permit).await;
        if let Some(next) = overflow {
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            submit(&raft, &ack, vec![next], permit).await;
        }
    }
}

/// Submits one batch as one entry, in order, and answers its transactions when it is applied.
async fn submit(
    raft: &Raft,
    ack: &Arc<ack::AckGate>,
    batch: Vec<Pending>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let floor = batch.iter().map(|p| p.zxid_floor).max().unwrap_or(0);
    let (proposals, waiters): (Vec<Proposal>, Vec<_>) =
        batch.into_iter().map(|p| (p.proposal, p.reply)).unzip();
    let command = Command {
        stamp: stamp(floor),
        body: Body::Txns(proposals),
    };
    let (responder, applied) = openraft::impls::ProgressResponder::complete_only();
    if let Err(fatal) = raft.client_write_ff(command, Some(responder)).await {
        for w in waiters {
            let _ = w.send(Err(Refusal::Unknown(format!("raft stopped: {fatal}"))));
        }
        return;
    }
    let (raft, ack) = (raft.clone(), ack.clone());
    tokio::spawn(async move {
        let _permit = permit;
        let outcome = match tokio::time::timeout(limits::WRITE_TIMEOUT, applied).await {
            Err(_) => Err(unknown_outcome()),
            Ok(Err(_)) => Err(Refusal::Unknown("raft dropped the write".into())),
            Ok(Ok(result)) => acknowledged(&raft, &ack, result.map_err(RaftError::APIError)).await,
        };
        match outcome {
            Ok(CommandResult {
                outcome: CommandOutcome::Txns(results),
                ..
            }) if results.len() == waiters.len() => {
                for (w, r) in waiters.into_iter().zip(results) {
                    let _ = w.send(Ok(r));
                }
            }
            Ok(other) => {
                for w in waiters {
                    let _ = w.send(Err(Refusal::Unknown(format!(
                        "unexpected outcome {:?}",
                        other.outcome
                    ))));
                }
            }
            Err(refusal) => {
                for w in waiters {
                    let _ = w.send(Err(refusal.clone()));
                }
            }
        }
    });
}

/// Raft timing and sizes, set explicitly rather than trusted to defaults.
fn raft_config(
    cluster: &str,
    scope: ScopeId,
    tuning: &RaftTuning,
) -> anyhow::Result<Arc<openraft::Config>> {
    let config = openraft::Config {
        cluster_name: format!("{cluster}/scope-{scope}"),
        heartbeat_interval: 200,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        // Our snapshot transport has its own idle timeout; this only bounds openraft's wait.
        install_snapshot_timeout: 600_000,
        max_payload_entries: limits::APPEND_ENTRIES_MAX,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every_entries),
        max_in_snapshot_log_to_keep: tuning.log_kept_behind_snapshot,
        purge_batch_size: 1024,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    Ok(Arc::new(
        config.validate().context("invalid raft configuration")?,
    ))
}

/// Now in ms since the epoch. The one clock read on the write path, in the shell, on the leader
/// (the split loop reads it too, for how long a scope has been cold, never at apply).
pub fn wall_clock_ms() -> i64 {
    now_ms()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What every scope on a node shares.
#[derive(Clone)]
pub struct ScopeHost {
    pub node_id: u64,
    pub store: Store,
    pub peers: Arc<Peers>,
    pub cluster: String,
    pub tuning: RaftTuning,
    pub engine: PolicyEngine,
    pub events: ScopeEvents,
    pub newborns: genesis::Newborns,
}

impl Scope {
    /// Opens the scope `id` from the node's storage. A scope with nothing stored starts as an
    /// empty replica with the identity `fresh`, waiting for its leader's snapshot.
    ///
    /// The replica's raft id is the one stored; else the one the scope's stored membership
    /// gives this node (a scope created here by delegation); else `replica` (a new anchor being
    /// added, named by the leader's first message); else the node's id (the root scope's first
    /// replicas).
    pub async fn open(
        host: &ScopeHost,
        id: ScopeId,
        fresh: ScopeIdentity,
        replica: Option<u64>,
    ) -> anyhow::Result<Scope> {
        let store = host.store.clone();
        let engine = host.engine.clone();
        // A child being born here opens from its carved state (given just after its parent's
        // batch), else from its own rows.
        host.newborns.until_openable(id).await;
        // Loading a scope from its rows reads every znode: not on a worker that drives
        // connections.
        let opening = {
            let (store, engine) = (store.clone(), engine.clone());
            let (events, newborns) = (host.events.clone(), host.newborns.clone());
            tokio::task::spawn_blocking(move || {
                ScopeStateMachine::open(store, id, engine, fresh, Some(events), newborns)
            })
        };
        let sm = opening
            .await
            .context("the task loading a scope failed")?
            .with_context(|| format!("loading scope {id} from {}", store.dir().display()))?;
        let view = sm.view();
        let feed = sm.feed();
        let tenure = sm.tenure();
        let log = ScopeLog::new(store, id, tenure.clone());
        let stored = log
            .replica()
            .with_context(|| format!("reading this node's replica id in scope {id}"))?;
        let replica = match stored {
            Some(r) => r,
            None => {
                let from_membership = view
                    .read()
                    .membership
                    .membership()
                    .nodes()
                    .find(|(_, n)| n.node == host.node_id)
                    .map(|(r, _)| *r);
                let r = from_membership.or(replica).unwrap_or(host.node_id);
                log.set_replica(r)
                    .with_context(|| format!("recording this node's replica id in scope {id}"))?;
                r
            }
        };
        let network = ScopeNetwork {
            scope: id,
            peers: host.peers.clone(),
            view: view.clone(),
        };
        let config = raft_config(&host.cluster, id, &host.tuning)?;
        let raft = Raft::new(replica, config, network, log, sm)
            .await
            .with_context(|| format!("starting raft for scope {id}"))?;
        let ack = Arc::new(ack::AckGate::new(
            engine.clone(),
            view.clone(),
            host.node_id,
        ));
        let (batches, queue) = mpsc::channel(limits::PROPOSALS_IN_FLIGHT_MAX);
        tokio::spawn(run_batcher(raft.clone(), ack.clone(), queue));
        Ok(Scope {
            id,
            replica,
            raft,
            view,
            batches,
            engine,
            ack,
            quiescent: AtomicBool::new(false),
            last_activity: std::sync::Mutex::new(Instant::now()),
            feed,
            reads: read_rounds::ReadRounds::default(),
            tenure,
        })
    }

    /// Ends the replica's tenure (see `tenure`): call after `Raft::shutdown`, before its
    /// rows may be deleted.
    pub fn end_tenure(&self) {
        self.tenure.end();
    }

    /// A client asked for something: the scope must be awake to serve it.
    fn note_activity(&self) {
        *self.last_activity.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.wake();
    }

    /// How long since a client last asked this scope for anything.
    pub fn idle_for(&self) -> Duration {
        self.last_activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    /// Parks raft's ticker: no heartbeats, no election timer, no wakeups. Only when the
    /// group is idle and fully replicated; node-level liveness wakes it if its leader dies.
    pub fn quiesce(&self) {
        if !self.quiescent.swap(true, Ordering::AcqRel) {
            self.raft.runtime_config().tick(false);
            tracing::debug!(scope = self.id, "quiescent");
        }
    }

    /// Resumes raft's ticker; the first tick comes within one heartbeat interval.
    pub fn wake(&self) {
        if self.quiescent.swap(false, Ordering::AcqRel) {
            self.raft.runtime_config().tick(true);
            tracing::debug!(scope = self.id, "awake");
        }
    }

    pub fn is_quiescent(&self) -> bool {
        self.quiescent.load(Ordering::Acquire)
    }

    pub fn view(&self) -> &ScopeView {
        &self.view
    }

    /// Makes this node's scope a member of a new cluster with the given voters.
    pub async fn initialize(&self, voters: BTreeMap<u64, types::AnchorNode>) -> anyhow::Result<()> {
        match self.raft.initialize(voters).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(anyhow::anyhow!("initializing scope {}: {e}", self.id)),
        }
    }

    /// Whether this node holds a membership for the scope (has joined a cluster).
    pub fn is_initialized(&self) -> bool {
        !self.voters().is_empty()
    }

    /// Reads raft's metrics: `read` copies out what its caller needs, and must neither read
    /// them again nor take any other lock. The borrow holds the metrics' read lock; raft's
    /// core, publishing, waits for it to end, and std's RwLock queues every later reader
    /// behind that writer. A second borrow inside the first therefore waited forever, and with
    /// the core waiting too, both tokio workers stopped and the whole node froze (the
    /// `nodes_keep_answering_status_queries_while_writing` test caught it).
    pub fn metrics<T>(&self, read: impl FnOnce(&types::RaftMetrics) -> T) -> T {
        let metrics = self.raft.metrics();
        #[allow(clippy::disallowed_methods)] // This is the one place.
        let borrowed = metrics.borrow_watched();
        read(&borrowed)
    }

    /// The nodes holding the scope's voting replicas.
    pub fn voters(&self) -> Vec<u64> {
        self.metrics(|m| {
            let membership = m.membership_config.membership();
            membership
                .voter_ids()
                .filter_map(|r| membership.get_node(&r).map(|n| n.node))
                .collect()
        })
    }

    /// The node holding the given replica of this scope.
    pub fn node_of(&self, replica: u64) -> Option<u64> {
        self.metrics(|m| {
            m.membership_config
                .membership()
                .get_node(&replica)
                .map(|n| n.node)
        })
    }

    /// The replica `node` holds in this scope, as this replica's membership says.
    pub fn replica_on(&self, node: u64) -> Option<u64> {
        self.metrics(|m| {
            m.membership_config
                .membership()
                .nodes()
                .find(|(_, n)| n.node == node)
                .map(|(r, _)| *r)
        })
    }

    /// The node leading the scope as far as this replica knows, with its address.
    pub fn leader(&self) -> Option<(u64, String)> {
        self.metrics(|m| {
            let leader = m.current_leader?;
            let node = m.membership_config.membership().get_node(&leader)?;
            Some((node.node, node.addr.clone()))
        })
    }

    /// Refuses with the leader's address unless this replica leads the scope.
    fn ensure_leader(&self) -> Result<(), Refusal> {
        if self.raft.is_leader() {
            return Ok(());
        }
        Err(Refusal::NotLeader {
            leader: self.leader(),
        })
    }

    /// What each apply of this replica changes, from now on, and the zxid up to which
    /// changes came before the subscription.
    pub fn changes(
        &self,
    ) -> (
        tokio::sync::broadcast::Receiver<std::sync::Arc<state_machine::FeedItem>>,
        i64,
    ) {
        self.feed.subscribe()
    }

    /// Proposes a client transaction; only the leader accepts. It joins the next batch: one
    /// log entry carries every transaction that arrived while earlier entries were in flight.
    /// `zxid_floor` is the highest zxid the client has seen, so its write is ordered after it
    /// (DESIGN section 6).
    pub async fn propose_txn(
        &self,
        principal: Principal,
        session: i64,
        txn: Txn,
        zxid_floor: i64,
    ) -> Result<TxnResult, Refusal> {
        self.note_activity();
        self.ensure_leader()?;
        // A zxid from the future would push this scope's zxids to the end of their range.
        let horizon = (now_ms() + limits::ZXID_CLOCK_AHEAD_MAX_MS) << 20;
        if zxid_floor > horizon {
            return Err(Refusal::Rejected(scopekeeper_client::ApiError::new(
                scopekeeper_client::ErrorCode::BadArguments,
                format!(
                    "after_zxid {zxid_floor:#x} is more than {} ms ahead of this scope's clock; \
                     it did not come from this cluster",
                    limits::ZXID_CLOCK_AHEAD_MAX_MS
                ),
            )));
        }
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            proposal: Proposal {
                principal,
                session,
                txn,
            },
            zxid_floor,
            reply,
        };
        self.batches.try_send(pending).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refusal::Throttled,
            mpsc::error::TrySendError::Closed(_) => {
                Refusal::Unknown(format!("scope {} is shutting down", self.id))
            }
        })?;
        answer.await.unwrap_or_else(|_| {
            Err(Refusal::Unknown(
                "the batcher stopped before answering".into(),
            ))
        })
    }

    /// Replaces the scope's policy; only the leader accepts. The policy is checked here,
    /// before it can be committed: a refused policy never enters the log.
    pub async fn propose_policy(
        &self,
        principal: Principal,
        set: SetPolicy,
        nodes: Vec<QuorumAnchor>,
    ) -> Result<CommandResult, Refusal> {
        self.note_activity();
        self.ensure_leader()?;
        // Apply would refuse it too; refusing here keeps the log clean.
        governance::check_admin(&principal, "replacing a scope's policy")
            .map_err(Refusal::Rejected)?;
        self.check_policy(&set, &nodes, "policy refused before commit")
            .await?;
        let command = Command {
            stamp: stamp(0),
            body: Body::SetPolicy { principal, set },
        };
        self.write_command(command).await
    }

    /// Creates a child scope at `path`; only the leader accepts. A policy given for the child
    /// is checked here, before commit, as for [`Scope::propose_policy`].
    pub async fn propose_delegation(
        &self,
        principal: Principal,
        path: String,
        policy: Option<SetPolicy>,
        nodes: Vec<QuorumAnchor>,
    ) -> Result<CommandResult, Refusal> {
        self.note_activity();
        self.ensure_leader()?;
        // Apply checks all of this again; refusing here keeps refused requests out of the log.
        governance::check_admin(&principal, "creating a scope").map_err(Refusal::Rejected)?;
        if let Some(set) = &policy {
            // The new scope starts on this scope's anchors: its rule must suit them.
            self.check_policy(
                set,
                &nodes,
                "the new scope's policy was refused before commit",
            )
            .await?;
        }
        let command = Command {
            stamp: stamp(0),
            body: Body::Delegate {
                principal,
                path,
                policy,
            },
        };
        self.write_command(command).await
    }

    /// Seals the scope to merge into its parent `into`; only the leader accepts. Proposed
    /// when the scope's policy's `merge` says so.
    pub async fn propose_seal(&self, into: ScopeId) -> Result<CommandResult, Refusal> {
        self.ensure_leader()?;
        self.write_command(Command {
            stamp: stamp(0),
            body: Body::Seal { into },
        })
        .await
    }

    /// Takes back a sealed child's final state; only the leader accepts.
    pub async fn propose_absorb(
        &self,
        absorb: Box<types::Absorb>,
    ) -> Result<CommandResult, Refusal> {
        self.note_activity();
        self.ensure_leader()?;
        self.write_command(Command {
            stamp: stamp(0),
            body: Body::Absorb(absorb),
        })
        .await
    }

    /// Splits the subtree at `path` off into a child scope; only the leader accepts. Proposed
    /// when the scope's policy says so, or by an admin (`scope split`).
    pub async fn propose_split(&self, path: String) -> Result<CommandResult, Refusal> {
        self.ensure_leader()?;
        self.write_command(Command {
            stamp: stamp(0),
            body: Body::Split { path },
        })
        .await
    }

    /// Creates a session scope at `path` (root scope); only the leader accepts.
    pub async fn propose_session_scope(&self, path: String) -> Result<CommandResult, Refusal> {
        self.note_activity();
        self.ensure_leader()?;
        self.write_command(Command {
            stamp: stamp(0),
            body: Body::SessionScope { path },
        })
        .await
    }

    /// Changes the cluster's node registry (root scope); only the leader accepts.
    pub async fn propose_nodes(
        &self,
        principal: Principal,
        change: scopekeeper_client::proto::NodeChange,
    ) -> Result<CommandResult, Refusal> {
        self.note_activity();
        self.ensure_leader()?;
        governance::check_admin(&principal, "changing the cluster's nodes")
            .map_err(Refusal::Rejected)?;
        self.write_command(Command {
            stamp: stamp(0),
            body: Body::Nodes { principal, change },
        })
        .await
    }

    /// Writes one unbatched command and waits for it to be applied and acknowledged.
    async fn write_command(&self, command: Command) -> Result<CommandResult, Refusal> {
        let write = tokio::time::timeout(limits::WRITE_TIMEOUT, self.raft.client_write(command));
        match write.await {
            Err(_) => Err(unknown_outcome()),
            Ok(result) => acknowledged(&self.raft, &self.ack, result).await,
        }
    }

    /// The checks before commit of a policy for this scope: the engine's (size, validation,
    /// imports, compilation, parameters), then its quorum rule, tabulated over the voters its
    /// own placement would choose among `nodes` (the cluster's eligible nodes; the current
    /// voters if none are known) and refused with a counter-example if it is not monotone,
    /// admits disjoint quorums or cannot be satisfied.
    async fn check_policy(
        &self,
        set: &SetPolicy,
        nodes: &[QuorumAnchor],
        what: &str,
    ) -> Result<(), Refusal> {
        let refuse = |why: String| {
            Refusal::Rejected(scopekeeper_client::ApiError::new(
                scopekeeper_client::ErrorCode::BadArguments,
                format!("{what}: {why}"),
            ))
        };
        let component = Arc::new(set.component.clone());
        let compiled = self
            .engine
            .check(component, &set.params)
            .await
            .map_err(|e| refuse(e.to_string()))?;
        let (engine, params, voters, nodes) = (
            self.engine.clone(),
            set.params.clone(),
            ack::AckGate::voters(&self.view),
            nodes.to_vec(),
        );
        let tabulate = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let anchors = if nodes.is_empty() {
                voters
            } else {
                let current = crate::policy::placement::Placement {
                    voters: voters.iter().map(|v| v.id).collect(),
                    observers: Vec::new(),
                    leader: None,
                };
                let placed =
                    crate::policy::placement::place(&engine, &compiled, &params, &nodes, &current)?;
                let eligible = nodes.iter().map(|n| n.id).collect();
                let target = crate::placement::repair(&placed, &current, &eligible);
                nodes
                    .into_iter()
                    .filter(|n| target.voters.contains(&n.id))
                    .collect()
            };
            crate::policy::quorum::policy_table(&engine, &compiled, &params, &anchors)
                .map(|_| ())
                .map_err(|rule| rule.to_string())
        });
        match tokio::time::timeout(limits::POLICY_COMPILE_TIMEOUT, tabulate).await {
            Err(_) => Err(refuse(format!(
                "its placement and quorum rule took longer than {:?} to evaluate",
                limits::POLICY_COMPILE_TIMEOUT
            ))),
            Ok(Err(join)) => Err(refuse(format!("checking its quorum rule failed: {join}"))),
            Ok(Ok(Err(why))) => Err(refuse(why)),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }

    /// On the leader: returns the index a linearizable read must see. Uses openraft's leader
    /// lease (no quorum round while a quorum acknowledged within the lease; followers refuse to
    /// vote during it), which assumes clocks advance at about the same rate everywhere.
    pub async fn read_index(&self) -> Result<u64, Refusal> {
        self.note_activity();
        match self.raft.ensure_linearizable(ReadPolicy::LeaseRead).await {
            Ok(read) => Ok(read.index()),
            Err(RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(
                f,
            ))) => Err(Refusal::NotLeader {
                leader: f.leader_node.map(|n| (n.node, n.addr)),
            }),
            Err(e) => Err(Refusal::Unknown(e.to_string())),
        }
    }

    /// Waits until this node has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), Refusal> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|e| {
                Refusal::Unknown(format!("this node did not catch up to index {index}: {e}"))
            })
    }
}
