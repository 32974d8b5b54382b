//! `scopekeeper certs ...`: a cluster CA and the certificates it issues.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use scopekeeper_transport::{CertFiles, certs};

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Creates a cluster CA (DIR/ca.pem, DIR/ca.key) and the session secret (DIR/session.secret)
    /// that every node of the cluster shares.
    Ca {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        cluster: String,
    },
    /// Issues DIR/node-ID.pem and .key for `node-ID.CLUSTER`.
    Node {
        id: u64,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        cluster: String,
    },
    /// Issues DIR/client-NAME.pem and .key; each --role is seen by scope policies.
    Client {
        name: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long = "role")]
        roles: Vec<String>,
    },
}

pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Ca { dir, cluster } => {
            let files = CertFiles::in_dir(&dir, "ca");
            if files.exist() {
                bail!(
                    "{} already exists; refusing to replace a CA",
                    files.cert.display()
                );
            }
            files.write(&certs::generate_ca(&cluster)?)?;
            crate::sessions::write_secret(&dir)?;
            println!("{}", files.cert.display());
        }
        CertsCommand::Node { id, dir, cluster } => {
            let issued = certs::issue_node(&read_ca(&dir)?, id, &cluster)?;
            let files = CertFiles::in_dir(&dir, &format!("node-{id}"));
            files.write(&issued)?;
            println!("{}", files.cert.display());
        }
        CertsCommand::Client { name, dir, roles } => {
            let issued = certs::issue_client(&read_ca(&dir)?, &name, &roles)?;
            let files = CertFiles::in_dir(&dir, &format!("client-{name}"));
            files.write(&issued)?;
            println!("{}", files.cert.display());
        }
    }
    Ok(())
}

fn read_ca(dir: &Path) -> anyhow::Result<scopekeeper_transport::IssuedCert> {
    CertFiles::in_dir(dir, "ca").read().with_context(|| {
        format!(
            "no CA in {}; create one with `scopekeeper certs ca --dir {}`",
            dir.display(),
            dir.display()
        )
    })
}
