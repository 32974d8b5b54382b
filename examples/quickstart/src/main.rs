//! Start `scopekeeper dev` in one terminal, then `cargo run -p quickstart` in another.
//! The client reads the context that `scopekeeper dev` recorded, as the CLI does.

use scopekeeper_client::{Client, ClientConfig, CreateMode, ErrorCode, Op};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = Client::connect(ClientConfig::from_context(None)?).await?;

    // A parent for this run, and a config value under it.
    let (root, _) = client
        .create("/quickstart-", b"", CreateMode::PersistentSequential)
        .await?;
    let config = format!("{root}/config");
    client
        .create(&config, b"v1", CreateMode::Persistent)
        .await?;

    // Optimistic concurrency: update only if nobody else did since we read.
    let (data, stat) = client.get(&config).await?;
    println!(
        "{config} = {} (version {})",
        String::from_utf8_lossy(&data),
        stat.version
    );
    client.set(&config, b"v2", stat.version).await?;
    let stale = client
        .set(&config, b"v3", stat.version)
        .await
        .expect_err("stale version");
    assert_eq!(stale.code(), ErrorCode::BadVersion);
    println!(
        "a second update with the stale version {} was refused: {stale}",
        stat.version
    );

    // A multi is all or nothing.
    let queue = format!("{root}/queue");
    client
        .multi(vec![
            Op::Create {
                path: queue.clone(),
                data: vec![],
                mode: CreateMode::Persistent,
                acl: Vec::new(),
            },
            Op::Create {
                path: format!("{queue}/job-"),
                data: b"first".to_vec(),
                mode: CreateMode::PersistentSequential,
                acl: Vec::new(),
            },
            Op::Create {
                path: format!("{queue}/job-"),
                data: b"second".to_vec(),
                mode: CreateMode::PersistentSequential,
                acl: Vec::new(),
            },
        ])
        .await?;
    let (jobs, _) = client.children(&queue).await?;
    println!("{queue}: {jobs:?}");

    // Clean up, children first.
    for job in jobs {
        client.delete(&format!("{queue}/{job}"), -1).await?;
    }
    for path in [queue, config, root] {
        client.delete(&path, -1).await?;
    }
    println!("done");
    Ok(())
}
