//! `cargo xtask image build|list`.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use images::{
    Arch,
    build::{self, Profile},
};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an appliance into a bootable image; prints the image's path as the last line of stdout.
    ///
    /// aarch64 images are raw arm64 Images (QEMU `-kernel`, U-Boot `booti`); x86_64 images are ELF
    /// files booted through PVH. Images land in target/images/<arch>/<debug|release>/.
    Build(BuildArgs),
    /// List the appliances that can be built.
    List,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The appliance: a crate in kernel-apps/ (see `cargo xtask image list`).
    pub app: String,
    /// The architecture to build for: aarch64 or x86_64.
    #[arg(long, value_name = "ARCH")]
    pub arch: Arch,
    /// Optimise for size and speed (LTO, stripped); what ships and what the benches measure.
    #[arg(long)]
    pub release: bool,
}

impl BuildArgs {
    pub fn profile(&self) -> Profile {
        if self.release { Profile::Release } else { Profile::Dev }
    }
}

pub fn main(command: ImageCommand) -> Result<ExitCode> {
    match command {
        ImageCommand::Build(args) => {
            let built = build::build(&build::workspace_root(), &args.app, args.arch, args.profile())?;
            eprintln!(
                "built {} for {} ({}): {} bytes, {} in memory",
                args.app, args.arch, built.info.format, built.info.file_size, built.info.memory_size
            );
            println!("{}", built.image.display());
        }
        ImageCommand::List => {
            for app in build::appliances(&build::workspace_root()) {
                println!("{app}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
