//! `rack-manager`: places, runs and supervises Mast appliances on the hosts of a rack.
//!
//! One binary: `serve` runs the manager (store, API, reconciler, and a built-in agent for its own
//! host), `agent --join` runs an agent on another host, and every other subcommand is the CLI,
//! which talks to the manager over its HTTP API.
//!
//! Layers, top to bottom (see docs/ARCHITECTURE.md, "Inside rack-manager"):
//! - [`cli`]: the command line and its output; talks to a manager over HTTP;
//! - [`daemon`]: `serve`'s startup, the HTTP layer and the API handlers (thin calls into the
//!   core); [`peer`]: rack-to-rack peering over mutual TLS, image and volume replication,
//!   failover; [`reconcile`]: desired state → observed state, restart policy and backoff;
//!   [`replication`]: the background replication of the image store (cloud and peers);
//! - [`rack`]: the rack core, the rack's state and every operation on it, which all of the above
//!   call and none of which it knows (placement is its [`rack::place`]);
//! - [`store`]: the `StateStore` trait, on SQLite or etcd; [`agent`]: host agents, local and
//!   remote; [`launcher`]: the `Launcher` trait, QEMU, tender and simulated launchers.
#![forbid(unsafe_code)]
// clap turns the argument docs into `--help`, where `<data-dir>` is a placeholder, not HTML.
#![allow(rustdoc::invalid_html_tags)]

mod agent;
mod cli;
mod client;
mod clock;
mod credentials;
mod daemon;
mod datadir;
mod http;
mod launcher;
mod peer;
mod rack;
mod reconcile;
mod replication;
mod store;

fn main() -> std::process::ExitCode {
    cli::main()
}
