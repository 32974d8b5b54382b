//! Registers a service instance and prints the service's membership as it changes, until
//! Ctrl-C (the instance leaves with the session). Against `scopekeeper dev`:
//!
//! ```sh
//! cargo run -p recipes --bin registry -- api a 10.0.0.1:8080
//! cargo run -p recipes --bin registry -- api b 10.0.0.2:8080   # in another terminal
//! ```

use std::time::Duration;

use scopekeeper_client::{Client, ClientConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(service), Some(instance), Some(address)) = (args.next(), args.next(), args.next())
    else {
        anyhow::bail!("usage: registry SERVICE INSTANCE ADDRESS");
    };
    let client =
        Client::connect_with_session(ClientConfig::from_context(None)?, Duration::from_secs(10))
            .await?;
    let registry = recipes::Registry::new(&client, "/services");
    registry.register(&service, &instance, &address).await?;
    println!("registered {service}/{instance} at {address}; Ctrl-C leaves");
    let mut membership = registry.follow(&service).await?;
    loop {
        tokio::select! {
            now = membership.next() => {
                let Some(now) = now else { break };
                let listed: Vec<String> =
                    now?.into_iter().map(|i| format!("{}={}", i.name, i.address)).collect();
                println!("{service}: [{}]", listed.join(", "));
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await?;
    Ok(())
}
