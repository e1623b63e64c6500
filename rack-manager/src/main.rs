//! `rack-manager`: places, runs and supervises Mast appliances on the hosts of a rack.
//!
//! One binary: `serve` runs the manager (store, API, reconciler, and a built-in agent for its own
//! host), `agent --join` runs an agent on another host, and every other subcommand is the CLI,
//! which talks to the manager over its HTTP API.
//!
//! Modules, one owner each:
//! - [`cli`]: the command line and its output;
//! - [`daemon`]: the manager's HTTP layer and API handlers;
//! - [`store`]: the `StateStore` trait and its SQLite implementation;
//! - [`launcher`]: the `Launcher` trait, QEMU and simulated launchers;
//! - [`agent`]: host agents, local and remote;
//! - [`reconcile`]: desired state → observed state, restart policy and backoff;
//! - [`replication`]: the content-addressed image store and its replication (crate `replica`);
//! - [`peer`]: rack-to-rack peering over mutual TLS, image and volume replication, failover;
//! - [`placement`]: the one call that says where replicas go, on top of the
//!   `placement` engine crate.
#![forbid(unsafe_code)]

mod agent;
mod cli;
mod client;
mod daemon;
mod datadir;
mod http;
mod launcher;
mod peer;
mod placement;
mod reconcile;
mod replication;
mod store;

fn main() -> std::process::ExitCode {
    cli::main()
}
