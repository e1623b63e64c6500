//! `rack-manager token create|ls|revoke`: scoped API tokens ([`rack_api::tokens`]).

use std::path::PathBuf;

use clap::{ArgGroup, Subcommand};
use rack_api::tokens::{CreateTokenRequest, CreatedToken, Scope, TokenInfo};

use super::output::{self, Format};
use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token with one scope; its secret is shown once (or written to --out, mode 0600).
    #[command(
        group(ArgGroup::new("scope").required(true).args(["read_only", "deploy", "admin"])),
        after_help = "Scopes:\n  --read-only  every GET of the API, /metrics and the dashboard; changes nothing\n  --deploy     read, push images, plan, deploy, stop/start/restart/remove instances\n  --admin      everything the manager's admin token may\n\nExamples:\n  rack-manager token create --read-only --name prometheus --out /etc/prometheus/mast.token\n  rack-manager token create --deploy --name ci\n  RACK_TOKEN=$(cat ci.token) rack-manager deploy hello    # use it from the CLI"
    )]
    Create {
        /// Reading only: for Prometheus, a wall screen, a resident's view.
        #[arg(long)]
        read_only: bool,
        /// Reading, and deploying and running instances.
        #[arg(long)]
        deploy: bool,
        /// Everything, as the admin token.
        #[arg(long)]
        admin: bool,
        /// A label for `token ls` [default: <scope>-<id>].
        #[arg(long)]
        name: Option<String>,
        /// Write the token to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// List tokens (ids, names, scopes; never secrets).
    Ls,
    /// Revoke a token by id or name: it is refused from the next request on.
    Revoke {
        /// The token's id or name (`token ls`).
        #[arg(value_name = "ID")]
        id: String,
    },
}

pub fn run(client: &Client, format: Format, command: &TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { read_only, deploy, admin, name, out } => {
            let scope = match (read_only, deploy, admin) {
                (true, _, _) => Scope::ReadOnly,
                (_, true, _) => Scope::Deploy,
                _ => {
                    debug_assert!(*admin, "clap requires one scope");
                    Scope::Admin
                }
            };
            if let Some(path) = out {
                anyhow::ensure!(!path.exists(), "{} exists: give --out a new file", path.display());
            }
            let created: CreatedToken = client.post("/tokens", &CreateTokenRequest { scope, name: name.clone() })?;
            match out {
                Some(path) => {
                    crate::credentials::write_secret_file(path, &format!("{}\n", created.token))?;
                    eprintln!(
                        "wrote {} token {} ({}) to {}",
                        created.info.scope,
                        created.info.id,
                        created.info.name,
                        path.display()
                    );
                    if format == Format::Json {
                        return output::print_json(&created.info);
                    }
                    Ok(())
                }
                None if format == Format::Json => output::print_json(&created),
                None => {
                    eprintln!(
                        "{} token {} ({}); it is shown only now:",
                        created.info.scope, created.info.id, created.info.name
                    );
                    println!("{}", created.token);
                    Ok(())
                }
            }
        }
        TokenCommand::Ls => {
            let tokens: Vec<TokenInfo> = client.get("/tokens")?;
            if format == Format::Json {
                return output::print_json(&tokens);
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| vec![t.id.clone(), t.scope.to_string(), t.name.clone(), output::ago(t.created_ms)])
                .collect();
            output::table(&["ID", "SCOPE", "NAME", "CREATED"], &rows);
            Ok(())
        }
        TokenCommand::Revoke { id } => {
            let info: TokenInfo = client.delete(&format!("/tokens/{id}"))?;
            output::done(format, &info, &format!("revoked token {} ({})", info.id, info.name))
        }
    }
}
