//! `scopekeeper scope ...`: create and inspect scopes.

use std::path::PathBuf;

use anyhow::Context as _;
use scopekeeper_client::Client;
use scopekeeper_client::proto::{PolicySpec, ScopeInfo};

use super::context::ConnectArgs;
use super::policy::parse_mode;

#[derive(Debug, clap::Subcommand)]
pub enum ScopeCommand {
    /// Makes the subtree at PATH a scope of its own, replicated by its own raft group (admin
    /// role required; the current scope's policy must admit it). PATH may hold a subtree
    /// already: it moves into the new scope.
    Create {
        path: String,
        /// The new scope's policy component; without it, the parent scope's policy applies.
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, default_value = "", requires = "policy")]
        params: String,
        /// `enforce` (default) or `audit`.
        #[arg(long, default_value = "enforce", requires = "policy")]
        mode: String,
    },
    /// Splits the subtree at AT off the scope rooted at PATH into a scope of its own, on the
    /// same anchors and under the same policy (admin role required).
    Split { path: String, at: String },
    /// Merges the scope rooted at PATH back into its parent scope (admin role required): it
    /// must have no child scopes and its parent's anchors. Waits until the parent has it.
    Merge { path: String },
    /// Prints the tree of scopes: root path, id, anchors, leader, policy, epoch and size.
    List,
    /// Prints one scope: the one rooted exactly at PATH.
    Show { path: String },
}

pub async fn run(cmd: ScopeCommand, connect: &ConnectArgs) -> anyhow::Result<()> {
    let client = Client::connect(connect.resolve()?).await?;
    match cmd {
        ScopeCommand::Create {
            path,
            policy,
            params,
            mode,
        } => {
            let policy = match policy {
                Some(file) => Some(PolicySpec {
                    component: std::fs::read(&file)
                        .with_context(|| format!("reading {}", file.display()))?,
                    params,
                    mode: parse_mode(&mode)?,
                }),
                None => None,
            };
            let id = client.create_scope(&path, policy).await?;
            println!("created scope {id} rooted at {path}");
            print_scope(&client.scope(&path).await?);
        }
        ScopeCommand::List => {
            let scopes = client.scopes().await?;
            println!(
                "{:<28} {:>20} {:<12} {:>6} {:>5} {:>9} {:>12}  policy",
                "root", "id", "anchors", "leader", "epoch", "znodes", "bytes"
            );
            for s in &scopes {
                let depth = if s.root == "/" {
                    0
                } else {
                    s.root.matches('/').count()
                };
                let root = format!("{}{}", "  ".repeat(depth.saturating_sub(1)), s.root);
                println!(
                    "{:<28} {:>20} {:<12} {:>6} {:>5} {:>9} {:>12}  {}",
                    root,
                    s.id,
                    join(&s.anchors),
                    s.leader.map_or("-".to_string(), |l| l.to_string()),
                    s.epoch,
                    s.znodes,
                    s.data_bytes,
                    policy_label(s)
                );
            }
        }
        ScopeCommand::Show { path } => print_scope(&client.scope(&path).await?),
        ScopeCommand::Merge { path } => {
            client.merge_scope(&path).await?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while client.scopes().await?.iter().any(|s| s.root == path) {
                if std::time::Instant::now() > deadline {
                    anyhow::bail!(
                        "{path} is sealed but its parent has not taken it back within 30 s; \
                         it will once the scope's leader reaches the parent's (see `scope show`)"
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            println!("merged {path} back into its parent scope");
        }
        ScopeCommand::Split { path, at } => {
            let scope = client.scope(&path).await?;
            let inside = at.starts_with(&scope.root)
                && (scope.root == "/" || at[scope.root.len()..].starts_with('/'));
            let delegated = scope
                .children
                .iter()
                .any(|(c, _)| at == *c || at.starts_with(&format!("{c}/")));
            if !inside || delegated || at == scope.root {
                anyhow::bail!("{at} is not inside the scope rooted at {}", scope.root);
            }
            let id = client.create_scope(&at, None).await?;
            println!("split {at} off {} into scope {id}", scope.root);
            print_scope(&client.scope(&at).await?);
        }
    }
    Ok(())
}

fn join(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn policy_label(s: &ScopeInfo) -> String {
    match &s.policy {
        Some(p) => format!("{} {:?}", &p.hash[..12.min(p.hash.len())], p.mode),
        None => "open (none deployed)".into(),
    }
}

fn print_scope(s: &ScopeInfo) {
    println!("root:     {}", s.root);
    println!("id:       {}", s.id);
    match s.parent {
        Some(p) => println!("parent:   {p}"),
        None => println!("parent:   - (the root scope)"),
    }
    println!("epoch:    {}", s.epoch);
    println!("anchors:  {}", join(&s.anchors));
    println!(
        "leader:   {}",
        s.leader.map_or("none known".to_string(), |l| l.to_string())
    );
    println!("policy:   {}", policy_label(s));
    println!("znodes:   {} ({} bytes of data)", s.znodes, s.data_bytes);
    println!("applied:  log index {}", s.applied_index);
    for (path, id) in &s.children {
        println!("child:    {path} (scope {id})");
    }
}
