//! Stands for election and leads until Ctrl-C. Start several with different names against
//! `scopekeeper dev`; stop the leader and the next in line takes over:
//!
//! ```sh
//! cargo run -p recipes --bin election -- alice
//! cargo run -p recipes --bin election -- bob      # in another terminal
//! ```

use std::time::Duration;

use scopekeeper_client::{Client, ClientConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "candidate".into());
    let dir = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "/recipes/election".into());
    let client =
        Client::connect_with_session(ClientConfig::from_context(None)?, Duration::from_secs(10))
            .await?;
    let election = recipes::Election::new(&client, &dir);
    if let Some(leader) = election.leader().await? {
        println!(
            "{name}: {} leads now; standing in line",
            String::from_utf8_lossy(&leader)
        );
    }
    let ticket = tokio::select! {
        won = election.lead(name.as_bytes()) => won?,
        _ = tokio::signal::ctrl_c() => {
            client.close().await?;
            return Ok(());
        }
    };
    println!(
        "{name}: elected leader of {dir} ({}); Ctrl-C steps down",
        ticket.path()
    );
    tokio::signal::ctrl_c().await?;
    ticket.release().await?;
    println!("{name}: stepped down");
    client.close().await?;
    Ok(())
}
