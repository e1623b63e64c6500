//! `rack-manager trust add|ls|rm`: which signing keys the rack accepts images from, changed on
//! the running manager (no restart).

use clap::Subcommand;
use rack_api::{TrustReply, TrustRequest};

use super::output::{self, Format};
use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Accept images signed by KEY from now on (remembered in <data-dir>/trusted-keys).
    #[command(
        after_help = "Examples:\n  rack-manager trust add 5f3c…(64 hex digits)      # the `signed by` key a refused push names\n  rack-manager trust add $(cat .mast/trusted-keys)"
    )]
    Add {
        /// Ed25519 public keys, 64 hex digits each (`cargo xtask image inspect FILE.mast` shows an image's signer).
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// List the keys the rack trusts.
    Ls,
    /// Stop accepting images signed by KEY (pushed images stay; their new launches are refused).
    Rm {
        /// A trusted key, 64 hex digits (see `rack-manager trust ls`).
        #[arg(value_name = "KEY")]
        key: String,
    },
}

pub fn run(client: &Client, format: Format, command: &TrustCommand) -> anyhow::Result<()> {
    match command {
        TrustCommand::Add { keys } => {
            let mut replies = Vec::new();
            for key in keys.iter().flat_map(|k| k.split_whitespace()) {
                let reply: TrustReply = client.post("/trust", &TrustRequest { key: key.to_owned() })?;
                if format == Format::Table {
                    println!("{} {}", if reply.changed { "trusting" } else { "already trusted:" }, reply.key);
                }
                replies.push(reply);
            }
            if format == Format::Json { output::print_json(&replies) } else { Ok(()) }
        }
        TrustCommand::Ls => {
            let keys: Vec<String> = client.get("/trust")?;
            match format {
                Format::Json => output::print_json(&keys),
                Format::Table => {
                    output::table(&["KEY"], &keys.into_iter().map(|k| vec![k]).collect::<Vec<_>>());
                    Ok(())
                }
            }
        }
        TrustCommand::Rm { key } => {
            let reply: TrustReply = client.delete(&format!("/trust/{}", key.trim()))?;
            output::done(format, &reply, &format!("no longer trusting {}", reply.key))
        }
    }
}
