//! `cargo xtask`: builds, boots, benchmarks and tests Mast appliances.
//!
//! One module per subcommand; each prints the commands it runs (`$ …`) so any step can be repeated
//! by hand.
// clap turns the argument docs into `--help`, where `<app>` is a placeholder, not HTML.
#![allow(rustdoc::invalid_html_tags)]

mod bench;
mod deps;
mod http_client;
mod image;
mod keygen;
mod lint;
mod new;
mod run;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Mast's build tool.
///
/// Exit codes: 0 on success; `run` exits with the appliance's own status; 1 when the tool itself
/// fails (bad arguments, build errors, invalid images, missing QEMU that cannot be installed).
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build, list, inspect and verify appliance images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Generate an Ed25519 key for signing images.
    Keygen(keygen::KeygenArgs),
    /// Build an appliance and boot it in QEMU, console on stdout; exits with the appliance's status.
    Run(run::RunArgs),
    /// Measure boot times, image sizes, verification speed and chunk sharing.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Clippy (warnings denied) on the host crates and on every appliance for both bare-metal
    /// targets and platforms, then rustdoc (broken intra-doc links denied), as CI runs them.
    Lint(lint::LintArgs),
    /// A new appliance (crate, manifest, boot test) that builds, boots and passes its test at
    /// once: `cargo xtask new NAME --template http|tcp|udp`.
    New(new::NewArgs),
    /// Install or check what the tests need (QEMU), then run the whole test suite.
    Test(test::TestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Image(command) => image::main(command),
        Command::Keygen(args) => keygen::main(args),
        Command::Run(args) => run::main(args),
        Command::Bench(command) => bench::main(command),
        Command::Lint(args) => lint::main(args),
        Command::New(args) => new::main(args),
        Command::Test(args) => test::main(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
