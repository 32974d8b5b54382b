//! openraft's own storage suite against the fjall log store and state machine.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use tempfile::TempDir;

use super::log_store::ScopeLog;
use super::state_machine::ScopeStateMachine;
use super::types::TypeConfig;
use crate::storage::Store;

struct FjallBuilder;

impl StoreBuilder<TypeConfig, ScopeLog, ScopeStateMachine, TempDir> for FjallBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, ScopeLog, ScopeStateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let store = Store::open(dir.path()).map_err(|e| {
            StorageError::read(TypeConfig::err_from_error(&std::io::Error::other(
                e.to_string(),
            )))
        })?;
        let engine = crate::policy::engine::PolicyEngine::new().map_err(|e| {
            StorageError::read(TypeConfig::err_from_error(&std::io::Error::other(
                e.to_string(),
            )))
        })?;
        let sm = ScopeStateMachine::open(
            store.clone(),
            7,
            engine,
            Default::default(),
            None,
            Default::default(),
        )
        .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let tenure = sm.tenure();
        Ok((dir, ScopeLog::new(store, 7, tenure), sm))
    }
}

#[test]
fn fjall_store_passes_openraft_suite() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        Suite::test_all(FjallBuilder)
            .await
            .expect("openraft storage suite");
    });
}
