//! Linearizable reads of one scope share read-index calls. A read needs the leader's commit
//! index as of some moment after the read arrived; every read that arrived before a call
//! started can use that call's answer. So a read joins the next call to start, at most one
//! call per scope is in flight, and at 64 clients a follower makes a call per round trip
//! instead of one per read (each a peer RPC to the leader).
//!
//! The calls run on a task of their own: a reader that goes away (its client disconnected)
//! leaves the others served.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::limits;
use crate::peer::Refusal;

type Answer = Result<u64, Refusal>;

#[derive(Clone, Default)]
pub struct ReadRounds {
    state: Arc<Mutex<Rounds>>,
}

#[derive(Default)]
struct Rounds {
    /// Whether the calling task runs; it takes `waiting` before each call and stops when none.
    calling: bool,
    /// Reads that arrived since the last call started.
    waiting: Vec<oneshot::Sender<Answer>>,
}

impl ReadRounds {
    /// The index a read that arrived now must see, from a call that `call` starts after now.
    /// `call` asks the leader; it moves to a new calling task when none runs, else it is dropped.
    pub async fn read_index<F, Fut>(&self, call: F) -> Answer
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Answer> + Send,
    {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut rounds = self.rounds();
            if rounds.waiting.len() >= limits::READS_WAITING_MAX {
                return Err(Refusal::Throttled);
            }
            rounds.waiting.push(answer);
            !std::mem::replace(&mut rounds.calling, true)
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.call_while_waiting(call).await });
        }
        answered
            .await
            .unwrap_or_else(|_| Err(Refusal::Unknown("the read-index task stopped".into())))
    }

    async fn call_while_waiting<F, Fut>(&self, call: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Answer>,
    {
        loop {
            let round = {
                let mut rounds = self.rounds();
                if rounds.waiting.is_empty() {
                    rounds.calling = false;
                    return;
                }
                std::mem::take(&mut rounds.waiting)
            };
            // Every read of `round` arrived before this call starts.
            let answer = call().await;
            for reader in round {
                let _ = reader.send(answer.clone());
            }
        }
    }

    fn rounds(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    /// A leader whose index counts the calls started; each call takes a while.
    fn leader(started: Arc<AtomicU64>) -> impl Fn() -> futures::future::BoxFuture<'static, Answer> {
        move || {
            let started = started.clone();
            Box::pin(async move {
                let index = started.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(index)
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_read_is_answered_by_a_call_started_after_it_arrived() {
        let rounds = ReadRounds::default();
        let started = Arc::new(AtomicU64::new(0));
        let mut reads = Vec::new();
        for i in 0..200u64 {
            let (rounds, started) = (rounds.clone(), started.clone());
            reads.push(tokio::spawn(async move {
                if i % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(i / 7)).await;
                }
                let calls_before = started.load(Ordering::SeqCst);
                let index = rounds.read_index(leader(started)).await.expect("answered");
                (calls_before, index)
            }));
        }
        for read in reads {
            let (calls_before, index) = read.await.expect("read task");
            assert!(
                index > calls_before,
                "read answered by call {index}, which started before it arrived ({calls_before} had)"
            );
        }
        let calls = started.load(Ordering::SeqCst);
        assert!(
            calls < 200,
            "reads did not share calls: {calls} calls for 200 reads"
        );
        assert!(!rounds.rounds().calling && rounds.rounds().waiting.is_empty());
    }

    #[tokio::test]
    async fn a_refusal_reaches_every_read_of_its_round_and_the_next_round_calls_again() {
        let rounds = ReadRounds::default();
        let refused = rounds
            .read_index(|| async { Err(Refusal::NotLeader { leader: None }) })
            .await;
        assert_eq!(refused, Err(Refusal::NotLeader { leader: None }));
        assert_eq!(rounds.read_index(|| async { Ok(9) }).await, Ok(9));
    }
}
