//! `scopekeeper node ...`: the cluster's nodes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use scopekeeper_client::Client;
use scopekeeper_client::proto::NodeChange;

use super::context::ConnectArgs;

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Registers a running node (started with `serve --join`) so placement may give it anchors.
    Join {
        id: u64,
        /// `host:port` of the node's QUIC endpoint.
        addr: String,
        /// A label, `key=value` (e.g. `zone=a`); repeatable.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Drains a node: placement moves every anchor off it; then it is forgotten.
    Remove {
        id: u64,
        /// How long to wait for the anchors to move before giving up (the drain continues).
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// Lists the nodes with their labels and the scopes they anchor.
    List,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("label {s:?} is not key=value")),
    }
}

pub async fn run(cmd: NodeCommand, connect: &ConnectArgs) -> anyhow::Result<()> {
    let client = Client::connect(connect.resolve()?).await?;
    match cmd {
        NodeCommand::Join { id, addr, labels } => {
            let labels: BTreeMap<String, String> = labels.into_iter().collect();
            client
                .change_node(NodeChange::Join { id, addr, labels })
                .await?;
            println!("node {id} registered; placement may now give it anchors");
        }
        NodeCommand::Remove { id, timeout_secs } => {
            client.change_node(NodeChange::Drain { id }).await?;
            println!("node {id} draining");
            let deadline = Instant::now() + Duration::from_secs(timeout_secs);
            loop {
                let anchored: Vec<String> = client
                    .scopes()
                    .await?
                    .into_iter()
                    .filter(|s| s.anchors.contains(&id))
                    .map(|s| s.root)
                    .collect();
                if anchored.is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "node {id} still anchors {}; the drain continues, run `node remove {id}` again to finish",
                        anchored.join(", ")
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            client
                .change_node(NodeChange::Forget { id })
                .await
                .context("forgetting the drained node")?;
            println!("node {id} holds no anchors and is removed; stop its process");
        }
        NodeCommand::List => {
            let scopes = client.scopes().await?;
            println!(
                "{:>6}  {:<22} {:<8} {:<20} anchors",
                "id", "addr", "state", "labels"
            );
            for n in client.nodes().await? {
                let labels: Vec<String> =
                    n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let anchored: Vec<&str> = scopes
                    .iter()
                    .filter(|s| s.anchors.contains(&n.id))
                    .map(|s| s.root.as_str())
                    .collect();
                println!(
                    "{:>6}  {:<22} {:<8} {:<20} {}",
                    n.id,
                    n.addr,
                    if n.draining { "draining" } else { "active" },
                    labels.join(","),
                    anchored.join(" ")
                );
            }
        }
    }
    Ok(())
}
