//! A scope: one openraft group over fjall storage, applying transactions to its tree.

pub mod log_store;
pub mod snapshot;
pub mod state_machine;
#[cfg(test)]
mod storage_suite;
pub mod types;
