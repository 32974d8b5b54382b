//! The `scopekeeper` command line.

mod bench;
mod bench_split;
mod certs;
mod commands;
mod context;
mod dev;
mod node;
mod policy;
mod scope;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::NodeConfig;
use crate::node::{Node, StartMode};

#[derive(Debug, Parser)]
#[command(
    name = "scopekeeper",
    version,
    about = "Scopekeeper: ZooKeeper's model, divided into scopes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connect: context::ConnectArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a three-node cluster on loopback, for development.
    Dev(dev::DevArgs),
    /// Runs one node from a TOML configuration file.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Create a new cluster whose voters are the configured peers (empty data only).
        #[arg(long, conflicts_with = "join")]
        bootstrap: bool,
        /// Join a running cluster as a new member (empty data only).
        #[arg(long)]
        join: bool,
    },
    /// Creates the cluster CA and issues node and client certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Builds, tests, deploys and inspects scope policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Adds, drains and lists the cluster's nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Creates and inspects scopes.
    #[command(subcommand)]
    Scope(scope::ScopeCommand),
    /// Measures throughput and latency against a running cluster.
    Bench(bench::BenchArgs),
    #[command(flatten)]
    Client(commands::ClientCommand),
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SCOPEKEEPER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The load generator runs on one thread: its clients spend their time waiting, and a
    // second worker only adds cross-thread wake-ups and stolen tasks. It shares the machine
    // with the nodes it measures, so its CPU is theirs to lose (bench/scaling.py's 9 capped
    // nodes, 144 clients, 2 rounds alternating: 42.5 us per create against 53 on two workers).
    let mut builder = match cli.command {
        Command::Bench(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(args) => {
            init_logging("warn,scopekeeper=info");
            dev::run(args).await
        }
        Command::Serve {
            config,
            bootstrap,
            join,
        } => {
            init_logging("warn,scopekeeper=info");
            let config = NodeConfig::load(&config)?;
            let mode = match (bootstrap, join) {
                (true, _) => StartMode::Bootstrap,
                (_, true) => StartMode::Join,
                _ => StartMode::Existing,
            };
            let node = Node::start(config, mode).await?;
            tokio::signal::ctrl_c().await?;
            node.shutdown().await;
            Ok(())
        }
        Command::Certs(cmd) => certs::run(cmd),
        Command::Policy(cmd) => {
            init_logging("warn");
            policy::run(cmd, &cli.connect).await
        }
        Command::Node(cmd) => {
            init_logging("warn");
            node::run(cmd, &cli.connect).await
        }
        Command::Scope(cmd) => {
            init_logging("warn");
            scope::run(cmd, &cli.connect).await
        }
        Command::Bench(args) => {
            init_logging("warn");
            bench::run(args, &cli.connect).await
        }
        Command::Client(cmd) => {
            init_logging("error");
            commands::run(cmd, &cli.connect).await
        }
    }
}
