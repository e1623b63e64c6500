//! `rack-manager`: places, runs and supervises Mast appliances on the hosts of a rack.
//!
//! One binary: `serve` runs the manager (store, API, reconciler, and a built-in agent for its own
//! host), `agent --join` runs an agent on another host, and every other subcommand is the CLI,
//! which talks to the manager over its HTTP API.
//!
//! Layers, top to bottom (see docs/ARCHITECTURE.md, "Inside rack-manager"):
//! - [`cli`]: the command line and its output; talks to a manager through [`client`] (the rack
//!   API's HTTP client, and the CLI as this rack's peer for `identity` and `peer probe`), with the
//!   types of the `rack_api` crate;
//! - [`daemon`]: `serve`'s startup and the API handlers (thin calls into the core), on [`http`]
//!   (the hardened hyper/tokio server under the API, agent and peer ports); [`peer`]: rack-to-rack
//!   peering over mutual TLS, image and volume replication, failover; [`reconcile`]: desired state
//!   → observed state, restart policy and backoff; [`replication`]: the background replication
//!   of the image store (cloud and peers);
//! - [`rack`]: the rack core, the rack's state and every operation on it, which all of the above
//!   call and none of which it knows (placement is its [`rack::place`]);
//! - [`store`]: the `StateStore` trait, on SQLite (the default) or etcd; [`agent`]: host agents,
//!   the built-in one and remote ones over pinned TLS; [`launcher`]: the `Launcher` trait, with
//!   QEMU, tender and simulated launchers.
//!
//! Beside the layers: [`credentials`] (who may call what: admin token, join tokens, per-agent
//! credentials), [`datadir`] (where each thing lives in a data directory) and [`clock`].
#![forbid(unsafe_code)]
// clap turns the argument docs into `--help`, where `<data-dir>` is a placeholder, not HTML.
#![allow(rustdoc::invalid_html_tags)]

mod agent;
mod api_tokens;
mod capacity;
mod cli;
mod client;
mod clock;
mod credentials;
mod daemon;
mod dashboard;
mod datadir;
mod http;
mod launcher;
mod logging;
mod metrics;
mod peer;
mod power;
mod rack;
mod reconcile;
mod replication;
mod store;
mod trust;

fn main() -> std::process::ExitCode {
    cli::main()
}
