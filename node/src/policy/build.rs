//! `scopekeeper policy build`: compile a policy crate for wasm32-unknown-unknown and wrap its
//! core module in a component, in-process with wit-component.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The shadow stack policies are linked with; deep recursion traps (and denies).
pub const POLICY_STACK_BYTES: usize = 64 * 1024;

/// Wraps a core module built with the SDK (it carries the world in a custom section).
pub fn componentize(core_module: &[u8]) -> anyhow::Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .module(core_module)
        .context("the module does not carry the scopekeeper:policy world; was it built with scopekeeper-policy-sdk?")?
        .validate(true)
        .encode()
        .context("encoding the component")
}

/// How every policy is built, whatever the crate's profile says: no debug info, optimized for
/// size, one codegen unit, and a small stack.
fn build_settings() -> [(&'static str, String); 5] {
    [
        ("CARGO_PROFILE_RELEASE_DEBUG", "false".into()),
        ("CARGO_PROFILE_RELEASE_STRIP", "debuginfo".into()),
        ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s".into()),
        ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1".into()),
        // A 64 KiB shadow stack instead of rustc's 1 MiB: the host zeroes every page of a
        // recycled instance, once per log entry, so a small initial memory is a faster policy.
        (
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
            format!("-C link-arg=-zstack-size={POLICY_STACK_BYTES}"),
        ),
    ]
}

/// Builds the crate at `dir` in release mode for wasm32 and returns the component's bytes.
/// Debug info is dropped, the module optimized for size and linked with a small stack, whatever
/// the crate's profile says.
pub fn build_crate(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!(
            "{} has no Cargo.toml; point at a policy crate",
            dir.display()
        );
    }
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .envs(build_settings())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo; is the Rust toolchain installed?")?;
    if !output.status.success() {
        bail!(
            "cargo build failed for {} (is the target installed? `rustup target add wasm32-unknown-unknown`)",
            dir.display()
        );
    }
    let wasm = find_artifact(&String::from_utf8_lossy(&output.stdout)).with_context(|| {
        format!(
            "cargo built no cdylib .wasm for {}; set crate-type = [\"cdylib\"]",
            dir.display()
        )
    })?;
    let core = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    componentize(&core)
}

/// The `.wasm` file among cargo's JSON artifact messages.
fn find_artifact(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains("cdylib"))
        .flat_map(|l| l.split('"'))
        .rfind(|s| s.ends_with(".wasm"))
        .map(PathBuf::from)
}

/// A policy crate of this repository, built once and cached under `target/policies/`, keyed by
/// a digest of its sources, the SDK's and the build settings (so a changed WIT world, policy or
/// stack size is rebuilt):
/// `policies/<name>` or `tests/policies/<name>`. For tests and benchmarks.
#[doc(hidden)]
pub fn repository_component(name: &str) -> anyhow::Result<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the node crate has a parent")?;
    let dir = [
        root.join("policies").join(name),
        root.join("tests/policies").join(name),
    ]
    .into_iter()
    .find(|d| d.join("Cargo.toml").exists())
    .with_context(|| format!("no policy crate named {name}"))?;
    let digest = sources_digest(&[dir.clone(), root.join("policy-sdk")])?;
    let cache = root
        .join("target/policies")
        .join(format!("{name}-{digest}.wasm"));
    if let Ok(bytes) = std::fs::read(&cache) {
        return Ok(bytes);
    }
    let component = build_crate(&dir)?;
    std::fs::create_dir_all(cache.parent().context("cache directory")?)?;
    let tmp = cache.with_extension(format!(
        "{}-{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&tmp, &component)?;
    std::fs::rename(&tmp, &cache)?;
    Ok(component)
}

/// A short digest of the build settings and every `Cargo.toml`, `.rs` and `.wit` file under
/// `dirs`, in path order.
fn sources_digest(dirs: &[PathBuf]) -> anyhow::Result<String> {
    use sha2::Digest as _;
    fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    collect(&path, out)?;
                }
            } else if path
                .extension()
                .is_some_and(|e| e == "rs" || e == "wit" || e == "toml")
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for dir in dirs {
        collect(dir, &mut files).with_context(|| format!("listing {}", dir.display()))?;
    }
    files.sort();
    let mut hasher = sha2::Sha256::new();
    for (name, value) in build_settings() {
        hasher.update(format!("{name}={value}\n").as_bytes());
    }
    for file in files {
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update(std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?);
    }
    let digest = hasher.finalize();
    Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}
