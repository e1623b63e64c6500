//! `cargo xtask test`: make sure QEMU, etcd and protoc are here, then run the whole test suite.
//!
//! protoc must be installed before `cargo test` compiles anything: rack-manager's etcd client
//! generates its gRPC code with it at build time. (xtask itself does not depend on rack-manager,
//! so it builds without protoc.)

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::Args;
use images::Arch;
use qemu::kvm;

use crate::deps;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    pub cargo_args: Vec<String>,
}

pub fn main(args: TestArgs) -> Result<ExitCode> {
    for arch in Arch::ALL {
        deps::ensure_qemu(arch)?;
    }
    for tool in [deps::PROTOC, deps::ETCD, deps::NGINX, deps::WRK, deps::PROMETHEUS, deps::CHROMIUM, deps::CHROMEDRIVER]
    {
        deps::ensure_tool(tool)?;
    }
    deps::ensure_moto()?;
    deps::ensure_redbot()?;
    if let Some(reason) = kvm::unavailable_reason() {
        eprintln!("note: x86_64 boot tests will be skipped: {reason}");
    }
    let mut cargo = Command::new("cargo");
    // moto is installed now: an S3 test that cannot start it fails rather than skips.
    cargo.arg("test").args(&args.cargo_args).env("MAST_REQUIRE_S3", "1");
    eprintln!("$ cargo test {}", args.cargo_args.join(" "));
    let status = cargo.status().context("running cargo test")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
