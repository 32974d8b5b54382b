//! The client commands: `create`, `get`, `set`, `rm`, `ls`, `stat`, `watch`.

use std::io::Write;

use scopekeeper_client::{Client, CreateMode, SessionState, Stat, proto::ANY_VERSION};

use super::context::ConnectArgs;

#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Creates PATH holding DATA; prints the created path.
    ///
    /// With --ephemeral the command holds its session, and the node, until interrupted or
    /// until its standard input closes; each line read meanwhile (`PATH [DATA]`) creates one
    /// more ephemeral node in the same session.
    Create {
        path: String,
        #[arg(default_value = "")]
        data: String,
        /// Append a 10-digit sequence number to the name.
        #[arg(long, short = 's')]
        sequential: bool,
        /// Delete the node when this command's session ends.
        #[arg(long, short = 'e', conflicts_with_all = ["container", "ttl"])]
        ephemeral: bool,
        /// Delete the node once it has had children and has none left.
        #[arg(long, short = 'c', conflicts_with_all = ["sequential", "ttl"])]
        container: bool,
        /// Delete the node when it has had no children and no change for MS milliseconds.
        #[arg(long, value_name = "MS")]
        ttl: Option<i64>,
        /// The session timeout of an --ephemeral command.
        #[arg(long, value_name = "MS", default_value_t = 10_000)]
        session_timeout: u64,
    },
    /// Prints PATH's data.
    Get { path: String },
    /// Replaces PATH's data; with --version, only if the node is at that version.
    Set {
        path: String,
        data: String,
        #[arg(long, short = 'v', default_value_t = ANY_VERSION, allow_negative_numbers = true)]
        version: i32,
    },
    /// Deletes PATH; with --version, only if the node is at that version.
    Rm {
        path: String,
        #[arg(long, short = 'v', default_value_t = ANY_VERSION, allow_negative_numbers = true)]
        version: i32,
    },
    /// Lists PATH's children, one name a line.
    Ls { path: String },
    /// Prints PATH's Stat as zkCli does.
    Stat { path: String },
    /// Prints every change to PATH (and with --recursive, below it), one line each:
    /// `EVENT PATH ZXID`, until interrupted.
    ///
    /// A persistent watch (ZooKeeper's addWatch): it survives a move of the session to
    /// another node. Without --recursive it sees PATH's creation, data changes and deletion,
    /// and its children coming and going.
    Watch {
        path: String,
        /// Every creation, data change and deletion at or below PATH.
        #[arg(long, short = 'r')]
        recursive: bool,
        /// Exit after this many events.
        #[arg(long, short = 'n', value_name = "N")]
        count: Option<u64>,
        /// The session timeout of the watching session.
        #[arg(long, value_name = "MS", default_value_t = 10_000)]
        session_timeout: u64,
    },
}

pub async fn run(cmd: ClientCommand, connect: &ConnectArgs) -> anyhow::Result<()> {
    if let ClientCommand::Create {
        path,
        data,
        sequential,
        ephemeral: true,
        session_timeout,
        ..
    } = cmd
    {
        return hold_ephemerals(connect, path, data, sequential, session_timeout).await;
    }
    if let ClientCommand::Watch {
        path,
        recursive,
        count,
        session_timeout,
    } = cmd
    {
        return watch(connect, &path, recursive, count, session_timeout).await;
    }
    let client = Client::connect(connect.resolve()?).await?;
    let mut out = std::io::stdout().lock();
    match cmd {
        ClientCommand::Create {
            path,
            data,
            sequential,
            container,
            ttl,
            ..
        } => {
            let mode = match (sequential, container, ttl) {
                (_, true, _) => CreateMode::Container,
                (false, _, Some(ttl_ms)) => CreateMode::PersistentWithTtl { ttl_ms },
                (true, _, Some(ttl_ms)) => CreateMode::PersistentSequentialWithTtl { ttl_ms },
                (true, _, None) => CreateMode::PersistentSequential,
                (false, _, None) => CreateMode::Persistent,
            };
            let (created, _) = client.create(&path, data.as_bytes(), mode).await?;
            writeln!(out, "{created}")?;
        }
        ClientCommand::Get { path } => {
            let (data, _) = client.get(&path).await?;
            out.write_all(&data)?;
            if !data.ends_with(b"\n") {
                writeln!(out)?;
            }
        }
        ClientCommand::Set {
            path,
            data,
            version,
        } => {
            client.set(&path, data.as_bytes(), version).await?;
        }
        ClientCommand::Rm { path, version } => client.delete(&path, version).await?,
        ClientCommand::Ls { path } => {
            for child in client.children(&path).await?.0 {
                writeln!(out, "{child}")?;
            }
        }
        ClientCommand::Stat { path } => {
            let stat = client
                .exists(&path)
                .await?
                .ok_or_else(|| anyhow::anyhow!("NoNode: no node at {path}"))?;
            write!(out, "{}", format_stat(&stat))?;
        }
        ClientCommand::Watch { .. } => unreachable!("served above: it needs a session"),
    }
    Ok(())
}

/// `watch`: a persistent watch printed line by line until Ctrl-C, `count` events, or the end
/// of the session.
async fn watch(
    connect: &ConnectArgs,
    path: &str,
    recursive: bool,
    count: Option<u64>,
    timeout_ms: u64,
) -> anyhow::Result<()> {
    let client = Client::connect_with_session(
        connect.resolve()?,
        std::time::Duration::from_millis(timeout_ms),
    )
    .await?;
    let mut events = client.add_watch(path, recursive).await?;
    let mut state = client
        .session_state()
        .ok_or_else(|| anyhow::anyhow!("the watching client has no session"))?;
    eprintln!(
        "watching {path}{}; Ctrl-C stops",
        if recursive { " and below" } else { "" }
    );
    let mut seen = 0u64;
    while count.is_none_or(|n| seen < n) {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else {
                    anyhow::bail!("the watch on {path} ended: its session is over");
                };
                let mut out = std::io::stdout().lock();
                writeln!(out, "{:?} {} {:#x}", event.kind, event.path, event.zxid)?;
                out.flush()?;
                seen += 1;
            }
            changed = state.changed() => {
                let now = state.borrow_and_update().clone();
                if changed.is_err() || matches!(now, SessionState::Expired | SessionState::Closed) {
                    anyhow::bail!("the watch on {path} ended: the session is {now:?}");
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await?;
    Ok(())
}

/// `create --ephemeral`: creates the first node, then one more per line of standard input, all
/// in one session that lasts until stdin closes or Ctrl-C (then it is closed, and its nodes go).
async fn hold_ephemerals(
    connect: &ConnectArgs,
    path: String,
    data: String,
    sequential: bool,
    timeout_ms: u64,
) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let mode = if sequential {
        CreateMode::EphemeralSequential
    } else {
        CreateMode::Ephemeral
    };
    let client = Client::connect_with_session(
        connect.resolve()?,
        std::time::Duration::from_millis(timeout_ms),
    )
    .await?;
    let session = client.session_id().unwrap_or(0);
    eprintln!("session {session:#x}: holding ephemeral nodes until stdin closes or Ctrl-C");
    let (created, _) = client.create(&path, data.as_bytes(), mode).await?;
    println!("{created}");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => {
                    let (p, d) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
                    match client.create(p, d.as_bytes(), mode).await {
                        Ok((created, _)) => println!("{created}"),
                        Err(e) => eprintln!("{p}: {e}"),
                    }
                }
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await?;
    Ok(())
}

/// zkCli's layout.
pub fn format_stat(s: &Stat) -> String {
    format!(
        "cZxid = {:#x}\nctime = {}\nmZxid = {:#x}\nmtime = {}\npZxid = {:#x}\ncversion = {}\ndataVersion = {}\n\
         aclVersion = {}\nephemeralOwner = {:#x}\ndataLength = {}\nnumChildren = {}\n",
        s.czxid,
        utc(s.ctime),
        s.mzxid,
        utc(s.mtime),
        s.pzxid,
        s.cversion,
        s.version,
        s.aversion,
        s.ephemeral_owner,
        s.data_length,
        s.num_children
    )
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (civil-from-days, no time zones).
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(1_764_028_800_123), "2025-11-25T00:00:00.123Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
