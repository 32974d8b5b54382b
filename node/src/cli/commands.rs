//! The client commands: `create`, `get`, `set`, `rm`, `ls`, `stat`.

use std::io::Write;

use scopekeeper_client::{Client, CreateMode, Stat, proto::ANY_VERSION};

use super::context::ConnectArgs;

#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Creates PATH holding DATA; prints the created path.
    Create {
        path: String,
        #[arg(default_value = "")]
        data: String,
        /// Append a 10-digit sequence number to the name.
        #[arg(long, short = 's')]
        sequential: bool,
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
}

pub async fn run(cmd: ClientCommand, connect: &ConnectArgs) -> anyhow::Result<()> {
    let client = Client::connect(connect.resolve()?).await?;
    let mut out = std::io::stdout().lock();
    match cmd {
        ClientCommand::Create {
            path,
            data,
            sequential,
        } => {
            let mode = if sequential {
                CreateMode::PersistentSequential
            } else {
                CreateMode::Persistent
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
    }
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
