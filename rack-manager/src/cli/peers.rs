//! `identity`, `peer add|ls|rm|probe` and `failover plan|status`.

use std::{path::Path, time::Duration};

use clap::Subcommand;
use rack_api::peers::{PeerEntry, PeerView, PlanView, SetPlanRequest, Takeover};

use super::output::{self, Format};
use crate::{
    client::{self, Client},
    clock::now_ms,
};

#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Trust another rack: its name, its peer URL and its certificate's fingerprint (all three
    /// printed by `rack-manager identity` on that rack). Adding a peer again replaces its entry
    /// (e.g. to change its image keys).
    ///
    /// The certificate lets the peer replicate this rack's images and heartbeat with it. To let
    /// this rack take over the peer's deployments when it is down, name the keys whose images it
    /// may run here with --image-key: without one, nothing of the peer's is taken over.
    Add {
        /// The other rack's name, as its `rack-manager identity` prints it.
        name: String,
        /// https://HOST:PORT, the other rack's --peer-listen address.
        url: String,
        /// SHA-256 of the other rack's certificate (64 hex digits); only that certificate is accepted.
        #[arg(long, value_parser = check_fingerprint)]
        fingerprint: String,
        /// An image signing key (64 hex digits) whose images this rack runs when it takes over the
        /// peer's deployments; repeat for several. The image must also be one this rack trusts
        /// (`serve --trust`).
        #[arg(long = "image-key", value_name = "KEY", value_parser = check_image_key)]
        image_keys: Vec<String>,
    },
    /// List peers: URL, fingerprint, last heartbeat, whether they answer, replication counters.
    Ls,
    /// Forget a peer: its certificate is refused from the next connection on.
    Rm {
        /// The peer's name, as `peer ls` shows it.
        name: String,
    },
    /// Connect to a peer URL with this rack's identity, pinning FINGERPRINT, and list its images:
    /// checks both halves of the mutual TLS link. Works without a running manager.
    Probe {
        /// https://HOST:PORT of the rack to probe.
        url: String,
        /// SHA-256 of its certificate (64 hex digits), as its `rack-manager identity` prints it.
        #[arg(long, value_parser = check_fingerprint)]
        fingerprint: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum FailoverCommand {
    /// Which of this rack's deployments fail over where, and which of its peers' deployments this
    /// rack would take over (with image completeness and volume lag).
    Plan {
        /// Only what each peer may ask of this rack, in full: per peer its trusted image keys, and
        /// per plan its image and signer, replicas, memory, vCPUs and arguments, and whether this
        /// rack's policy (`serve --takeover-*`) allows it, or why not.
        #[arg(long)]
        incoming: bool,
    },
    /// Deployments this rack took over: when, recovery time, replication lag at failure.
    Status,
    /// Hand a taken-over deployment back to its rack, which must be up: its instances here are
    /// removed; then start the stopped copies on that rack with `rack-manager start`.
    Release {
        /// The rack that owns the deployment.
        peer: String,
        /// The deployment's id on that rack (the DEPLOYMENT column of `failover status`).
        deployment: String,
    },
}

fn check_fingerprint(text: &str) -> Result<String, String> {
    client::peer::fingerprint_hex(text)
}

fn check_image_key(text: &str) -> Result<String, String> {
    text.parse::<images::keys::PublicKey>()
        .map(|k| k.to_string())
        .map_err(|_| format!("{text:?} is not an image signing key: give its 64 hex digits"))
}

/// `rack-manager identity`: read from the data directory, so it works with the manager stopped.
pub fn identity(format: Format, data_dir: &Path) -> anyhow::Result<()> {
    let view = client::peer::identity(data_dir)?;
    match format {
        Format::Json => output::print_json(&view),
        Format::Table => {
            println!("rack         {}", view.name);
            println!("peer url     {}", view.peer_url.as_deref().unwrap_or("(not serving peers)"));
            println!("fingerprint  {}", view.fingerprint);
            println!(
                "\nOn each other rack: rack-manager peer add {} {} --fingerprint {}",
                view.name,
                view.peer_url.as_deref().unwrap_or("https://HOST:PORT"),
                view.fingerprint
            );
            Ok(())
        }
    }
}

pub fn peer(client: &Client, format: Format, data_dir: &Path, command: &PeerCommand) -> anyhow::Result<()> {
    match command {
        PeerCommand::Add { name, url, fingerprint, image_keys } => {
            let entry = PeerEntry {
                name: name.clone(),
                url: url.clone(),
                fingerprint: fingerprint.clone(),
                image_keys: image_keys.clone(),
            };
            let added: Option<PeerView> = client.post("/peers", &entry)?;
            peers(format, &added.into_iter().collect::<Vec<_>>())
        }
        PeerCommand::Ls => peers(format, &client.get::<Vec<PeerView>>("/peers")?),
        PeerCommand::Rm { name } => {
            let _: serde_json::Value = client.delete(&format!("/peers/{name}"))?;
            println!("{name}");
            Ok(())
        }
        PeerCommand::Probe { .. } => probe(format, data_dir, command),
    }
}

/// Runs without a client: see [`PeerCommand::Probe`].
pub fn probe(format: Format, data_dir: &Path, command: &PeerCommand) -> anyhow::Result<()> {
    let PeerCommand::Probe { url, fingerprint } = command else { unreachable!("only probe") };
    let images = client::peer::probe(data_dir, url, fingerprint, Duration::from_secs(5))?;
    match format {
        Format::Json => output::print_json(&images),
        Format::Table => {
            println!("{url}: mutual TLS ok, {} image(s)", images.len());
            for image in images {
                println!("  {}  {}", rack_api::short_id(&image.id), image.name);
            }
            Ok(())
        }
    }
}

fn age(then: Option<u64>) -> String {
    match then {
        Some(t) => format!("{:.1}s ago", now_ms().saturating_sub(t) as f64 / 1000.0),
        None => "never".into(),
    }
}

fn peers(format: Format, peers: &[PeerView]) -> anyhow::Result<()> {
    if format == Format::Json {
        return output::print_json(&peers);
    }
    println!(
        "{:<12} {:<28} {:<14} {:<14} {:<5} {:<9} {:>6} {:>10} {:>7}",
        "NAME", "URL", "FINGERPRINT", "HEARTBEAT", "UP", "REACHABLE", "IMAGES", "BYTES", "CORRUPT"
    );
    for p in peers {
        println!(
            "{:<12} {:<28} {:<14} {:<14} {:<5} {:<9} {:>6} {:>10} {:>7}",
            p.name,
            p.url,
            format!("{}…", &p.fingerprint[..12.min(p.fingerprint.len())]),
            age(p.last_heartbeat_ms),
            if p.up { "yes" } else { "no" },
            if p.reachable { "yes" } else { "no" },
            p.images_replicated,
            p.bytes_fetched,
            p.corrupt_chunks
        );
        if let Some(error) = &p.last_error {
            println!("  {}: {error}", p.name);
        }
    }
    Ok(())
}

pub fn failover(client: &Client, format: Format, command: &FailoverCommand) -> anyhow::Result<()> {
    match command {
        FailoverCommand::Plan { incoming } => {
            let plan: PlanView = client.get("/failover/plan")?;
            if *incoming {
                return incoming_plans(format, &plan);
            }
            if format == Format::Json {
                return output::print_json(&plan);
            }
            println!("This rack's deployments fail over to:");
            for p in &plan.outgoing {
                println!("  {:<8} {:<12} -> {}", p.deployment, p.image_name, p.failover_to.join(", "));
            }
            println!("Peers' deployments this rack may take over:");
            for p in &plan.incoming {
                println!(
                    "  {}/{:<8} {:<12} list {:<12} peer {:<4} take over: {:<3} image: {:<8} volume lag: {}",
                    p.peer,
                    p.deployment,
                    p.image_name,
                    p.failover_to.join(","),
                    if p.peer_up { "up" } else { "down" },
                    if p.would_take_over { "yes" } else { "no" },
                    if p.image_complete { "complete" } else { "missing" },
                    match (p.has_volume, p.volume_lag_ms) {
                        (false, _) => "no volume".to_owned(),
                        (true, None) => "no snapshot yet".to_owned(),
                        (true, Some(ms)) => format!("{ms} ms"),
                    }
                );
                if let Some(why) = &p.refused_because {
                    println!("    refused by this rack's policy: {why}");
                }
            }
            Ok(())
        }
        FailoverCommand::Release { peer, deployment } => {
            let released: Takeover = client.post(&format!("/failover/release/{peer}/{deployment}"), &())?;
            eprintln!(
                "handed {deployment} back to {peer}; on {peer}: rack-manager start <its {} instances>",
                released.image_name
            );
            Ok(())
        }
        FailoverCommand::Status => {
            let takeovers: Vec<Takeover> = client.get("/failover/status")?;
            if format == Format::Json {
                return output::print_json(&takeovers);
            }
            println!(
                "{:<8} {:<10} {:<12} {:>5} {:<8} {:<9} {:>12} {:>10} {:>10}",
                "PEER", "DEPLOYMENT", "IMAGE", "EPOCH", "LOCAL", "STATE", "RECOVERY", "LAG", "WINDOW"
            );
            for t in &takeovers {
                println!(
                    "{:<8} {:<10} {:<12} {:>5} {:<8} {:<9} {:>12} {:>10} {:>10}",
                    t.peer,
                    t.deployment,
                    t.image_name,
                    t.epoch,
                    t.local_deployment.as_deref().unwrap_or("-"),
                    t.state,
                    t.recovery_ms.map_or("-".into(), |ms| format!("{ms} ms")),
                    t.lag_ms.map_or("-".into(), |ms| format!("{ms} ms")),
                    t.loss_window_ms.map_or("-".into(), |ms| format!("{ms} ms"))
                );
                if let Some(message) = &t.message {
                    println!("  {message}");
                }
            }
            Ok(())
        }
    }
}

/// `failover plan --incoming`: what each peer may ask of this rack, and whether it would be granted.
fn incoming_plans(format: Format, plan: &PlanView) -> anyhow::Result<()> {
    if format == Format::Json {
        return output::print_json(&serde_json::json!({
            "policy": plan.policy,
            "trust": plan.trust,
            "incoming": plan.incoming,
        }));
    }
    if let Some(policy) = &plan.policy {
        println!(
            "Policy: per plan at most {} replicas, {} instances per peer, {} MiB and {} vCPUs per instance; arguments: {}",
            policy.takeover_max_replicas,
            policy.takeover_max_instances,
            policy.takeover_max_memory_mib,
            policy.takeover_max_vcpus,
            if policy.takeover_custom_args { "any" } else { "the image manifest's only" }
        );
    }
    println!("Image keys trusted per peer:");
    for trust in &plan.trust {
        if trust.image_keys.is_empty() {
            println!("  {:<12} none: nothing of {} is taken over", trust.peer, trust.peer);
        } else {
            println!("  {:<12} {}", trust.peer, trust.image_keys.join(", "));
        }
    }
    println!(
        "{:<12} {:<10} {:<12} {:<14} {:<14} {:>8} {:>7} {:>5} {:<7} ARGS",
        "PEER", "DEPLOYMENT", "IMAGE", "IMAGE ID", "SIGNER", "REPLICAS", "MEMORY", "VCPUS", "ALLOWED"
    );
    for p in &plan.incoming {
        println!(
            "{:<12} {:<10} {:<12} {:<14} {:<14} {:>8} {:>7} {:>5} {:<7} {:?}",
            p.peer,
            p.deployment,
            p.image_name,
            rack_api::short_id(&p.image_id),
            p.signer.as_deref().map_or("-".to_owned(), |s| format!("{}…", &s[..12.min(s.len())])),
            p.replicas,
            format!("{}M", p.memory_mib),
            p.vcpus,
            if p.allowed { "yes" } else { "no" },
            p.args
        );
        if let Some(why) = &p.refused_because {
            println!("  refused: {why}");
        }
    }
    if plan.incoming.is_empty() {
        println!("  (no peer has sent a plan that names this rack)");
    }
    Ok(())
}

/// After `deploy --failover-to`: record the plan.
pub fn set_plan(client: &Client, deployment: &str, failover_to: &[String]) -> anyhow::Result<()> {
    let request = SetPlanRequest { deployment: deployment.to_owned(), failover_to: failover_to.to_vec() };
    let _: SetPlanRequest = client.post("/failover/plans", &request)?;
    eprintln!("deployment {deployment} fails over to {}", failover_to.join(", "));
    Ok(())
}
