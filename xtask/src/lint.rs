//! `cargo xtask lint`: clippy with every warning denied, on the host crates and on every appliance
//! for both bare-metal targets, on QEMU and on the tender; then rustdoc with broken intra-doc links
//! denied. CI runs it (`.ci/run`); each command is printed first, so a failure can be reproduced
//! by hand.
//!
//! Appliances build only for the bare-metal targets, so the host pass excludes them (all but
//! those with a library, like kvlog's, which is tested on the host) and the bare-metal passes
//! select them. Clippy lints every workspace crate it compiles, so the runtime,
//! `net`, `http1` and `kvlog` are linted on the bare-metal targets too, with each platform's code.

use std::{
    path::Path,
    process::{Command, ExitCode},
};

use anyhow::{Context, Result};
use clap::Args;
use images::{
    Arch, Platform,
    build::{appliances, cargo_command, workspace_root},
    manifest,
};

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Only clippy; skip rustdoc.
    #[arg(long)]
    pub no_doc: bool,
}

/// Rustdoc's own lints that the docs must pass.
const RUSTDOCFLAGS: &str = "-D rustdoc::broken_intra_doc_links";

pub fn main(args: LintArgs) -> Result<ExitCode> {
    // The rack manager's etcd client is generated at build time by protoc; CI lints a fresh clone
    // before `cargo xtask test` has installed anything.
    crate::deps::ensure_tool(crate::deps::PROTOC)?;
    let root = workspace_root();
    let apps = appliances(&root);
    let mut failed = Vec::new();

    // Appliances with a library (kvlog's log) are host crates too: their logic is tested there.
    let bare_metal_only: Vec<&String> =
        apps.iter().filter(|app| !root.join("kernel-apps").join(app).join("src/lib.rs").is_file()).collect();
    let mut host = cargo_command(&root);
    host.args(["clippy", "--workspace", "--all-targets"]);
    for app in &bare_metal_only {
        host.args(["--exclude", app]);
    }
    host.args(["--", "-D", "warnings"]);
    run("clippy: host crates", host, &mut failed)?;

    for arch in Arch::ALL {
        for platform in [Platform::Qemu, Platform::Tender] {
            let selected = appliances_for(&root, &apps, arch, platform)?;
            if selected.is_empty() {
                continue;
            }
            let mut cargo = cargo_command(&root);
            cargo.args(["clippy", "--target", arch.target_triple()]);
            // Apart from the host build's, so neither invalidates the other's cache.
            cargo.arg("--target-dir").arg(root.join("target/lint"));
            for app in &selected {
                cargo.args(["--package", app]);
            }
            if let Some(feature) = platform.runtime_feature() {
                cargo.args(["--features", feature]);
            }
            cargo.args(["--", "-D", "warnings"]);
            run(&format!("clippy: appliances for {arch} on {}", platform.name()), cargo, &mut failed)?;
        }
    }

    if !args.no_doc {
        let mut doc = cargo_command(&root);
        doc.args(["doc", "--no-deps", "--workspace"]);
        for app in &bare_metal_only {
            doc.args(["--exclude", app]);
        }
        doc.env("RUSTDOCFLAGS", RUSTDOCFLAGS);
        run("rustdoc: host crates", doc, &mut failed)?;
        // The runtime's appliance-facing API (`entry!`, `Context`, the devices) exists only on the
        // bare-metal targets.
        for arch in Arch::ALL {
            let mut doc = cargo_command(&root);
            doc.args(["doc", "--no-deps", "--target", arch.target_triple(), "-p", "runtime", "-p", "net"]);
            doc.args(["--features", "runtime/virtio"]);
            doc.arg("--target-dir").arg(root.join("target/lint"));
            doc.env("RUSTDOCFLAGS", RUSTDOCFLAGS);
            run(&format!("rustdoc: runtime and net for {arch}"), doc, &mut failed)?;
        }
    }

    if failed.is_empty() {
        eprintln!("lint: clean");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("lint failed: {}", failed.join("; "));
        Ok(ExitCode::FAILURE)
    }
}

/// The appliances whose manifests list `arch`; on QEMU, without those made for the tender alone
/// (crates that use the tender's ABI themselves, like `hostile`).
fn appliances_for(root: &Path, apps: &[String], arch: Arch, platform: Platform) -> Result<Vec<String>> {
    let mut selected = Vec::new();
    for app in apps {
        let manifest = manifest::load(&root.join("images").join(format!("{app}.toml")))?;
        if !manifest.arches.contains(&arch) {
            continue;
        }
        let crate_toml = root.join("kernel-apps").join(app).join("Cargo.toml");
        let text = std::fs::read_to_string(&crate_toml).with_context(|| format!("reading {}", crate_toml.display()))?;
        if platform == Platform::Qemu && text.contains("tender-abi") {
            continue;
        }
        selected.push(app.clone());
    }
    Ok(selected)
}

/// Runs one pass, printing its command first; a failing pass is recorded and the others still run.
fn run(what: &str, mut command: Command, failed: &mut Vec<String>) -> Result<()> {
    eprintln!("$ {}", images::command::display(&command));
    let status = command.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        failed.push(what.to_owned());
    }
    Ok(())
}
