//! `scopekeeper policy ...`: build, dry-run, deploy and inspect scope policies.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use scopekeeper_client::Client;
use scopekeeper_client::proto::{PolicyInfo, PolicyMode};
use serde::Deserialize;

use super::context::ConnectArgs;
use crate::limits;
use crate::policy::build;
use crate::policy::engine::{PolicyEngine, Supply};
use crate::policy::eval::{EntryEvaluation, EvalError};
use crate::policy::wit::exports::scopekeeper::policy::rules as wit;

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Builds the policy crate in DIR for wasm32 and writes a deployable component.
    Build {
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Dry-runs test vectors under the production engine: verdicts and fuel, no cluster needed.
    Test {
        file: PathBuf,
        #[arg(long, default_value = "")]
        params: String,
        /// JSON array of cases; see README for the format.
        #[arg(long)]
        cases: PathBuf,
    },
    /// Replaces the policy of the scope rooted at SCOPE_PATH (admin role required).
    Deploy {
        scope_path: String,
        file: PathBuf,
        #[arg(long, default_value = "")]
        params: String,
        /// `enforce` (default) or `audit` (log denials, admit anyway).
        #[arg(long, default_value = "enforce")]
        mode: String,
    },
    /// Prints the active policy of a scope.
    Show { scope_path: String },
    /// Prints every policy change of a scope, oldest first.
    History { scope_path: String },
}

pub async fn run(cmd: PolicyCommand, connect: &ConnectArgs) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Build { dir, out } => {
            let component = tokio::task::spawn_blocking(move || build::build_crate(&dir)).await??;
            let engine = PolicyEngine::new()?;
            let compiled = engine
                .compile(&component)
                .map_err(|e| anyhow::anyhow!("the built component is refused: {e}"))?;
            std::fs::write(&out, &component)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{} ({} bytes, sha256 {})",
                out.display(),
                component.len(),
                compiled.hash.hex()
            );
            Ok(())
        }
        PolicyCommand::Test {
            file,
            params,
            cases,
        } => test(&file, &params, &cases).await,
        PolicyCommand::Deploy {
            scope_path,
            file,
            params,
            mode,
        } => {
            let mode = parse_mode(&mode)?;
            let component =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let client = Client::connect(connect.resolve()?).await?;
            let info = client
                .set_policy(&scope_path, component, &params, mode)
                .await?;
            println!(
                "deployed on {scope_path}: entries after log index {} are judged by it",
                info.log_index
            );
            print_info(&info);
            Ok(())
        }
        PolicyCommand::Show { scope_path } => {
            let client = Client::connect(connect.resolve()?).await?;
            match client.policy(&scope_path).await? {
                Some(info) => print_info(&info),
                None => {
                    println!("no policy deployed on {scope_path}: everything is admitted (open)")
                }
            }
            Ok(())
        }
        PolicyCommand::History { scope_path } => {
            let client = Client::connect(connect.resolve()?).await?;
            for info in client.policy_history(&scope_path).await? {
                println!(
                    "{}\t{}\t{:?}\tby {}\tparams {}",
                    info.log_index,
                    &info.hash[..12],
                    info.mode,
                    info.set_by,
                    if info.params.is_empty() {
                        "-"
                    } else {
                        &info.params
                    }
                );
            }
            Ok(())
        }
    }
}

pub fn parse_mode(mode: &str) -> anyhow::Result<PolicyMode> {
    match mode {
        "enforce" => Ok(PolicyMode::Enforce),
        "audit" => Ok(PolicyMode::Audit),
        other => bail!("--mode {other:?}: use enforce or audit"),
    }
}

fn print_info(info: &PolicyInfo) {
    println!("hash:       {}", info.hash);
    println!("mode:       {:?}", info.mode);
    println!(
        "params:     {}",
        if info.params.is_empty() {
            "(none)"
        } else {
            &info.params
        }
    );
    println!("since:      log index {}", info.log_index);
    println!("set by:     {} at {} ms", info.set_by, info.time_ms);
    println!("size:       {} bytes", info.component_bytes);
}

/// One test vector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    name: String,
    /// `create`, `delete`, `set` or `check`.
    op: String,
    path: String,
    /// Data as text...
    #[serde(default)]
    data: String,
    /// ... or this many bytes of filler.
    data_bytes: Option<usize>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default = "any_version")]
    version: i32,
    #[serde(default)]
    principal: CasePrincipal,
    #[serde(default)]
    depth: Option<u32>,
    #[serde(default)]
    parent_children: Option<i32>,
    #[serde(default)]
    target_exists: bool,
    #[serde(default)]
    time_ms: i64,
    /// `allow`, `deny` or `trap`; omitted: just report.
    expect: Option<String>,
    /// The denial code expected.
    code: Option<String>,
}

fn any_version() -> i32 {
    -1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasePrincipal {
    #[serde(default)]
    id: String,
    #[serde(default)]
    roles: Vec<String>,
}

fn mode(name: &str) -> anyhow::Result<wit::CreateMode> {
    Ok(match name {
        "persistent" => wit::CreateMode::Persistent,
        "persistent-sequential" => wit::CreateMode::PersistentSequential,
        "ephemeral" => wit::CreateMode::Ephemeral,
        "ephemeral-sequential" => wit::CreateMode::EphemeralSequential,
        "container" => wit::CreateMode::Container,
        "ttl" => wit::CreateMode::Ttl,
        other => bail!("unknown create mode {other:?}"),
    })
}

fn mutation(case: &Case) -> anyhow::Result<wit::Mutation> {
    let op = match case.op.as_str() {
        "create" => wit::OpKind::Create,
        "delete" => wit::OpKind::Delete,
        "set" => wit::OpKind::SetData,
        "check" => wit::OpKind::Check,
        "delegate" => wit::OpKind::Delegate,
        "set-acl" => wit::OpKind::SetAcl,
        other => bail!(
            "case {:?}: unknown op {other:?} (create, delete, set, check, delegate, set-acl)",
            case.name
        ),
    };
    let data = match case.data_bytes {
        Some(n) => vec![b'x'; n],
        None => case.data.as_bytes().to_vec(),
    };
    let create_mode = match (&op, &case.mode) {
        (wit::OpKind::Create, Some(m)) => Some(mode(m)?),
        (wit::OpKind::Create, None) => Some(wit::CreateMode::Persistent),
        _ => None,
    };
    Ok(wit::Mutation {
        op,
        path: case.path.clone(),
        data,
        create_mode,
        expected_version: case.version,
    })
}

fn empty_stat() -> wit::Stat {
    wit::Stat {
        czxid: 0,
        mzxid: 0,
        ctime: 0,
        mtime: 0,
        version: 0,
        cversion: 0,
        aversion: 0,
        ephemeral_owner: 0,
        data_length: 0,
        num_children: 0,
        pzxid: 0,
    }
}

async fn test(file: &PathBuf, params: &str, cases_file: &PathBuf) -> anyhow::Result<()> {
    let component = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let cases: Vec<Case> = serde_json::from_str(
        &std::fs::read_to_string(cases_file)
            .with_context(|| format!("reading {}", cases_file.display()))?,
    )
    .with_context(|| format!("parsing {} (a JSON array of cases)", cases_file.display()))?;
    let engine = PolicyEngine::new()?;
    let compiled = engine
        .check(std::sync::Arc::new(component), params)
        .await
        .map_err(|e| anyhow::anyhow!("the policy would be refused at deploy: {e}"))?;
    println!(
        "policy {} accepts its parameters; {} cases",
        compiled.hash.short(),
        cases.len()
    );
    let mut failures = 0;
    for (i, case) in cases.iter().enumerate() {
        let name = if case.name.is_empty() {
            format!("case {i}")
        } else {
            case.name.clone()
        };
        let mutation = mutation(case)?;
        let principal = wit::Principal {
            id: case.principal.id.clone(),
            roles: case.principal.roles.clone(),
        };
        let depth = case
            .depth
            .unwrap_or_else(|| crate::policy::admission::depth("/", &case.path));
        let entry = wit::Entry {
            log_index: i as u64 + 1,
            time_ms: case.time_ms,
            scope_root: "/".into(),
        };
        let context = wit::Context {
            depth,
            target: case.target_exists.then(empty_stat),
            parent: case.parent_children.map(|n| wit::Stat {
                num_children: n,
                ..empty_stat()
            }),
            stats: wit::ScopeStats {
                znodes: 1,
                data_bytes: 0,
                writes_per_sec: 0,
                ms_since_split: 0,
                ms_since_write: 0,
            },
        };
        // One case, one entry, one fresh instance: as on an anchor.
        let mut eval = EntryEvaluation::begin(
            &engine,
            &compiled,
            limits::POLICY_FUEL_PER_ENTRY,
            Supply::OnTheSpot,
        )
        .map_err(|e| anyhow::anyhow!("instantiating: {e}"))?;
        let op = wit::JudgedOp {
            mutation,
            principal: 0,
            context,
        };
        let outcome = eval.admit_one(params, &entry, &principal, op);
        let fuel = eval.fuel_used();
        let (verdict, code, detail) = match outcome {
            Ok(wit::Verdict {
                decision: wit::Decision::Allow,
                warnings,
            }) => ("allow", String::new(), warnings.join("; ")),
            Ok(wit::Verdict {
                decision: wit::Decision::Deny(d),
                ..
            }) => ("deny", d.code, d.message),
            Err(EvalError::Trap(t)) => ("trap", "trap".to_string(), t),
            Err(EvalError::HostFault(f)) => bail!("the host failed on {name}: {f}"),
        };
        let expected = case
            .expect
            .as_deref()
            .map(|e| e == verdict && case.code.as_deref().is_none_or(|c| c == code));
        let mark = match expected {
            Some(true) => "ok  ",
            Some(false) => {
                failures += 1;
                "FAIL"
            }
            None => "    ",
        };
        println!("{mark} {name:<32} {verdict:<5} {code:<24} fuel {fuel:>9}  {detail}");
    }
    if failures > 0 {
        bail!(
            "{failures} of {} cases did not get the expected verdict",
            cases.len()
        );
    }
    Ok(())
}
