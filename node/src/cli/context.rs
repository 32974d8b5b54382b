//! The user's client configuration, kept the way kubectl and etcdctl keep contexts:
//! `$SCOPEKEEPER_CONFIG`, else `$XDG_CONFIG_HOME/scopekeeper/config.toml`, else
//! `~/.config/scopekeeper/config.toml`. `scopekeeper dev` writes its context there.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use scopekeeper_client::ClientConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UserConfig {
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, ClusterContext>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterContext {
    pub cluster: String,
    pub endpoints: Vec<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SCOPEKEEPER_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(x).join("scopekeeper").join("config.toml"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; set SCOPEKEEPER_CONFIG")?;
    Ok(PathBuf::from(home)
        .join(".config")
        .join("scopekeeper")
        .join("config.toml"))
}

impl UserConfig {
    pub fn load() -> anyhow::Result<Self> {
        let path = path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UserConfig::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, toml::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// Connection flags; each overrides the context's value.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConnectArgs {
    /// Comma-separated `host:port` QUIC endpoints.
    #[arg(
        long,
        env = "SCOPEKEEPER_ENDPOINTS",
        value_delimiter = ',',
        global = true
    )]
    pub endpoints: Vec<String>,
    /// Cluster name the servers' certificates carry.
    #[arg(long, env = "SCOPEKEEPER_CLUSTER", global = true)]
    pub cluster: Option<String>,
    /// CA certificate (PEM).
    #[arg(long, env = "SCOPEKEEPER_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, env = "SCOPEKEEPER_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, env = "SCOPEKEEPER_KEY", global = true)]
    pub key: Option<PathBuf>,
    /// Context in the client config to use (default: its `current`).
    #[arg(long, env = "SCOPEKEEPER_CONTEXT", global = true)]
    pub context: Option<String>,
}

impl ConnectArgs {
    pub fn resolve(&self) -> anyhow::Result<ClientConfig> {
        let user = UserConfig::load()?;
        let name = self.context.clone().or(user.current.clone());
        let ctx = match &name {
            Some(n) => user.contexts.get(n).cloned(),
            None => None,
        };
        if let (Some(n), None) = (&name, &ctx) {
            bail!("context {n:?} is not in {}", path()?.display());
        }
        let pick = |flag: &Option<PathBuf>, from_ctx: Option<PathBuf>, what: &str| {
            flag.clone().or(from_ctx).with_context(|| {
                format!("no {what} given: start `scopekeeper dev`, or pass --{what} (or SCOPEKEEPER_{})", what.to_uppercase())
            })
        };
        let endpoints = if self.endpoints.is_empty() {
            ctx.as_ref()
                .map(|c| c.endpoints.clone())
                .unwrap_or_default()
        } else {
            self.endpoints.clone()
        };
        if endpoints.is_empty() {
            bail!(
                "no endpoints given: start `scopekeeper dev`, or pass --endpoints (or SCOPEKEEPER_ENDPOINTS)"
            );
        }
        Ok(ClientConfig {
            cluster: self
                .cluster
                .clone()
                .or(ctx.as_ref().map(|c| c.cluster.clone()))
                .context("no cluster name given: pass --cluster (or SCOPEKEEPER_CLUSTER)")?,
            endpoints,
            ca: pick(&self.ca, ctx.as_ref().map(|c| c.ca.clone()), "ca")?,
            cert: pick(&self.cert, ctx.as_ref().map(|c| c.cert.clone()), "cert")?,
            key: pick(&self.key, ctx.as_ref().map(|c| c.key.clone()), "key")?,
        })
    }
}
