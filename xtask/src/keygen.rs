//! `cargo xtask keygen`: a new Ed25519 signing key.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::Args;
use images::{
    build,
    keys::{KeyConfig, SigningKey},
};

#[derive(Debug, Args)]
#[command(
    after_help = "Build with it:  MAST_SIGNING_KEY=FILE cargo xtask image build …\nTrust it elsewhere by adding the printed public key to that place's trusted keys."
)]
pub struct KeygenArgs {
    /// Where to write the secret key (mode 0600). Default: $MAST_SIGNING_KEY, else
    /// .mast/signing.key in the workspace. An existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn main(args: KeygenArgs) -> Result<ExitCode> {
    let path = args.out.unwrap_or_else(|| KeyConfig::for_workspace(&build::workspace_root()).signing_key);
    let key = SigningKey::generate()?;
    key.save(&path)?;
    eprintln!("wrote the secret key to {} (keep it private)", path.display());
    eprintln!("public key (give this to whoever should trust your images):");
    println!("{}", key.public());
    Ok(ExitCode::SUCCESS)
}
