//! Takes a distributed lock, holds it, lets go. Run two at once against `scopekeeper dev` and
//! watch the second wait for the first:
//!
//! ```sh
//! cargo run -p recipes --bin lock -- /recipes/lock 5 & cargo run -p recipes --bin lock -- /recipes/lock 5
//! ```

use std::time::{Duration, Instant};

use scopekeeper_client::{Client, ClientConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "/recipes/lock".into());
    let hold_secs: u64 = args.next().map_or(Ok(3), |s| s.parse())?;
    let client =
        Client::connect_with_session(ClientConfig::from_context(None)?, Duration::from_secs(10))
            .await?;
    let lock = recipes::Lock::new(&client, &path);
    let asked = Instant::now();
    println!("waiting for {path}");
    let held = lock.acquire().await?;
    println!(
        "holding {path} as {} (waited {:?}); letting go in {hold_secs} s",
        held.path(),
        asked.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    held.release().await?;
    println!("released {path}");
    client.close().await?;
    Ok(())
}
