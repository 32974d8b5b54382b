//! The user's client configuration, kept the way kubectl and etcdctl keep contexts:
//! `$SCOPEKEEPER_CONFIG`, else `$XDG_CONFIG_HOME/scopekeeper/config.toml`, else
//! `~/.config/scopekeeper/config.toml`. `scopekeeper dev` writes its context there; the CLI and
//! applications read it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ClientConfig, Error};

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

/// Where the client configuration lives.
pub fn path() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("SCOPEKEEPER_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(x).join("scopekeeper").join("config.toml"));
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| Error::Config("HOME is not set; set SCOPEKEEPER_CONFIG".into()))?;
    Ok(PathBuf::from(home)
        .join(".config")
        .join("scopekeeper")
        .join("config.toml"))
}

impl UserConfig {
    pub fn load() -> Result<Self, Error> {
        let path = path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| Error::Config(format!("parsing {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UserConfig::default()),
            Err(e) => Err(Error::Config(format!("reading {}: {e}", path.display()))),
        }
    }

    pub fn save(&self) -> Result<PathBuf, Error> {
        let path = path()?;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::Config(format!("{what} {}: {e}", path.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail("creating the directory of", &e))?;
        }
        let text = toml::to_string_pretty(self).map_err(|e| fail("encoding", &e))?;
        std::fs::write(&path, text).map_err(|e| fail("writing", &e))?;
        Ok(path)
    }

    /// The named context, or the current one; `None` if neither is set.
    pub fn context(&self, name: Option<&str>) -> Result<Option<&ClusterContext>, Error> {
        let Some(name) = name.or(self.current.as_deref()) else {
            return Ok(None);
        };
        match self.contexts.get(name) {
            Some(ctx) => Ok(Some(ctx)),
            None => Err(Error::Config(format!(
                "context {name:?} is not in {}",
                path()?.display()
            ))),
        }
    }
}

impl ClusterContext {
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            cluster: self.cluster.clone(),
            endpoints: self.endpoints.clone(),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

impl ClientConfig {
    /// The configuration of the current context (`scopekeeper dev` sets it), or of `name`.
    pub fn from_context(name: Option<&str>) -> Result<ClientConfig, Error> {
        let user = UserConfig::load()?;
        let ctx = user.context(name)?.ok_or_else(|| {
            Error::Config(format!(
                "no current context in {}; start `scopekeeper dev` first",
                path().map(|p| p.display().to_string()).unwrap_or_default()
            ))
        })?;
        Ok(ctx.client_config())
    }
}
