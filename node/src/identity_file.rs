//! The marker a node writes into its data directory when it joins a cluster. It lets a restart
//! tell "my data is gone" (refuse) from "I am new" (needs an explicit bootstrap or join).

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

const FILE: &str = "member.toml";

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Membership {
    pub cluster: String,
    pub id: u64,
}

pub fn read(data_dir: &Path) -> anyhow::Result<Option<Membership>> {
    let path = data_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map(Some).with_context(|| {
            format!(
                "{} is corrupt; the node cannot tell which cluster it belongs to",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn write(data_dir: &Path, membership: &Membership) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let path = data_dir.join(FILE);
    let tmp = data_dir.join("member.toml.tmp");
    std::fs::write(&tmp, toml::to_string(membership)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

/// Checks the marker against the configuration.
pub fn check(found: &Membership, cluster: &str, id: u64, data_dir: &Path) -> anyhow::Result<()> {
    if found.cluster != cluster || found.id != id {
        bail!(
            "{} belongs to node {} of cluster {:?}, but this configuration is node {id} of cluster {cluster:?}; \
             point data_dir elsewhere or fix the configuration",
            data_dir.display(),
            found.id,
            found.cluster
        );
    }
    Ok(())
}
