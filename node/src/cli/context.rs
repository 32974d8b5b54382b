//! Connection flags for the client commands; each overrides the user's context.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use scopekeeper_client::ClientConfig;
use scopekeeper_client::context::UserConfig;

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
        let ctx = user.context(self.context.as_deref())?.cloned();
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
