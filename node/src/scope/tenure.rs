//! A replica's tenure on this node: from its opening until it is closed (retired, merged
//! away, or reopened under another replica id).
//!
//! Openraft's state-machine worker outlives `Raft::shutdown`: commands already queued to it
//! still run. Without a tenure, a retired replica's last apply could write its applied
//! position after `Store::remove_scope` deleted its rows, and the node would find a scope
//! with no tree at its next start and refuse to run. So every write of a replica's storage
//! goes through its `Tenure`, and closing the replica ends it: the end waits for writes in
//! progress and every later write is refused.

use std::io;
use std::sync::{Arc, RwLock};

#[derive(Clone, Debug)]
pub struct Tenure {
    ended: Arc<RwLock<bool>>,
}

impl Tenure {
    pub fn begin() -> Tenure {
        Tenure {
            ended: Arc::new(RwLock::new(false)),
        }
    }

    /// Runs `write` (`what` names it for the error) unless the tenure has ended. Writes run
    /// concurrently with each other; never call `write` from inside `write`.
    pub fn write<T>(&self, what: &str, write: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let ended = self.ended.read().unwrap_or_else(|e| e.into_inner());
        if *ended {
            return Err(io::Error::other(format!(
                "not {what}: this replica was closed on this node and its rows may be deleted"
            )));
        }
        write()
    }

    /// Ends the tenure once the writes in progress are done; later writes are refused.
    pub fn end(&self) {
        *self.ended.write().unwrap_or_else(|e| e.into_inner()) = true;
    }

    pub fn has_ended(&self) -> bool {
        *self.ended.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_run_until_the_end_and_are_refused_after_it() {
        let tenure = Tenure::begin();
        assert_eq!(tenure.write("writing", || Ok(1)).ok(), Some(1));
        let clone = tenure.clone();
        tenure.end();
        assert!(clone.has_ended());
        let refused = clone.write("writing a row", || -> io::Result<()> {
            panic!("a write ran after the tenure ended")
        });
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("not writing a row"), "{message}");
    }

    #[test]
    fn the_end_waits_for_a_write_in_progress() {
        let tenure = Tenure::begin();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (finish_tx, finish_rx) = std::sync::mpsc::channel::<()>();
        let writer = {
            let tenure = tenure.clone();
            std::thread::spawn(move || {
                tenure.write("writing", || {
                    started_tx.send(()).ok();
                    finish_rx.recv().ok();
                    Ok(())
                })
            })
        };
        started_rx.recv().expect("the write started");
        let ender = {
            let tenure = tenure.clone();
            std::thread::spawn(move || tenure.end())
        };
        // The end cannot complete while the write holds the tenure.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!ender.is_finished(), "the end did not wait for the write");
        finish_tx.send(()).expect("the writer waits");
        assert!(writer.join().expect("writer").is_ok());
        ender.join().expect("ender");
        assert!(tenure.has_ended());
    }
}
