//! Deployments: checking and placing a deploy request (`plan` changes nothing), and creating the
//! deployment with its instances in one store transaction.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use rack_api::{DeployRequest, DeployResponse, Deployment, HostState, Image, Plan, RestartPolicy, short_id};

use super::{
    Rack, RackError, Result,
    hosts::candidates,
    images::{Selector, build_label, select_image},
    instance_view, place,
};
use crate::{
    clock::now_ms,
    store::{HostRecord, InstanceRecord, StateStore},
};

/// The most replicas one deployment may ask for.
pub const MAX_REPLICAS: u32 = 100_000;

/// A placed deploy request: where each replica goes, the image, and the settings resolved
/// against the image's manifest.
#[derive(Debug)]
pub(super) struct Placed {
    pub(super) plan: Plan,
    pub(super) image: Image,
    pub(super) memory_mib: u32,
    pub(super) vcpus: u32,
}

/// The shortest idle timeout: below it an appliance would sleep between a client's requests.
pub const MIN_IDLE_TIMEOUT_MS: u64 = 100;
/// The longest idle timeout (a day).
pub const MAX_IDLE_TIMEOUT_MS: u64 = 86_400_000;
/// The most instances one on-demand gate runs at once.
pub const MAX_GATE_INSTANCES: u32 = 64;

fn check_on_demand(on_demand: &rack_api::OnDemand) -> Result<()> {
    if !(MIN_IDLE_TIMEOUT_MS..=MAX_IDLE_TIMEOUT_MS).contains(&on_demand.idle_timeout_ms) {
        return Err(RackError::invalid(
            format!("an idle timeout of {} ms is out of range", on_demand.idle_timeout_ms),
            "give --idle-timeout between 100ms and 24h",
        ));
    }
    if on_demand.max_instances == 0 || on_demand.max_instances > MAX_GATE_INSTANCES {
        return Err(RackError::invalid(
            format!("{} instances per gate is out of range", on_demand.max_instances),
            format!("give --max-instances 1 to {MAX_GATE_INSTANCES}"),
        ));
    }
    Ok(())
}

/// Checks a deploy request and places it, changing nothing.
pub(super) fn place(store: &dyn StateStore, request: &DeployRequest) -> Result<Placed> {
    if request.replicas == 0 || request.replicas > MAX_REPLICAS {
        return Err(RackError::invalid(
            format!("{} replicas is not a number this rack deploys", request.replicas),
            format!("ask for 1 to {MAX_REPLICAS}"),
        ));
    }
    let all_hosts = store.hosts()?;
    let ready: Vec<HostRecord> = all_hosts.iter().filter(|h| h.state == HostState::Ready).cloned().collect();
    let selector =
        Selector { reference: &request.image, arch: request.arch.as_deref(), platform: request.platform.as_deref() };
    let image = select_image(store, &selector, Some(&ready))?;
    let runs_it = |h: &&HostRecord| rack_api::can_run(&h.launcher, &h.arches, &image.arch, &image.platform);
    if !all_hosts.is_empty() && !all_hosts.iter().any(|h| runs_it(&h)) {
        return Err(no_host_runs(&image, &all_hosts));
    }
    let memory_mib = request.memory_mib.unwrap_or(image.memory_mib);
    if memory_mib < image.memory_mib {
        return Err(RackError::invalid(
            format!("{memory_mib} MiB is less than {} needs ({} MiB, from its manifest)", image.name, image.memory_mib),
            format!("give --mem {} or more", image.memory_mib),
        ));
    }
    let vcpus = request.vcpus.unwrap_or(image.vcpus);
    if vcpus == 0 || vcpus > 255 {
        return Err(RackError::invalid(format!("{vcpus} vCPUs is not possible"), "give --vcpus 1 to 255"));
    }
    if let Some(on_demand) = &request.on_demand {
        check_on_demand(on_demand)?;
    }
    let able: Vec<&str> = ready.iter().filter(runs_it).map(|h| h.name.as_str()).collect();
    let mut hosts = candidates(store, &image.name, "")?;
    hosts.retain(|c| able.contains(&c.name.as_str()));
    // An on-demand instance reserves nothing: asleep it is a gate, and its wakes are not placed
    // (docs/on-demand.md, "Limits").
    let (reserved_memory, reserved_vcpus) = if request.on_demand.is_some() { (0, 0) } else { (memory_mib, vcpus) };
    let placement_request = place::Request {
        arch: image.arch.clone(),
        replicas: request.replicas,
        memory_mib: reserved_memory,
        vcpus: reserved_vcpus,
    };
    let placed =
        place::place(&hosts, &placement_request).map_err(|e| RackError::refused("no_placement", e.message, e.hint))?;
    let plan = Plan {
        image_id: image.id.clone(),
        image_name: image.name.clone(),
        memory_mib,
        hosts: placed,
        arch: image.arch.clone(),
        platform: image.platform.clone(),
    };
    Ok(Placed { plan, image, memory_mib, vcpus })
}

/// `local×3, h2×2`: how many replicas went to each host, for the log.
pub(super) fn spread(hosts: &[String]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for host in hosts {
        match counts.iter_mut().find(|(h, _)| h == host) {
            Some((_, n)) => *n += 1,
            None => counts.push((host, 1)),
        }
    }
    counts.iter().map(|(h, n)| format!("{h}×{n}")).collect::<Vec<_>>().join(", ")
}

/// The refusal for an image no host of the rack can run, with the build that one could.
fn no_host_runs(image: &Image, hosts: &[HostRecord]) -> RackError {
    let offered: Vec<String> = hosts
        .iter()
        .map(|h| {
            format!(
                "{} ({} on {})",
                h.name,
                h.launcher,
                if h.arches.is_empty() { "nothing".to_owned() } else { h.arches.join("+") }
            )
        })
        .collect();
    let host = &hosts[0];
    let platform = if host.launcher == "tender" { "tender" } else { "qemu" };
    // The host's own architecture first: on QEMU, x86_64 runs under KVM, aarch64 under TCG.
    let arch = host.arches.iter().find(|a| a.as_str() == std::env::consts::ARCH).or(host.arches.first());
    let hint = match arch {
        Some(arch) => format!(
            "build it for this rack, push it, and deploy again: `{}` (then `rack-manager image push` the .mast it prints)",
            rack_api::build_command(&image.name, arch, platform)
        ),
        None => "no host can boot anything: install QEMU on a host, or add a host that can".to_owned(),
    };
    RackError::refused(
        "no_host_can_run",
        format!(
            "no host of this rack can run {} ({}, {}): the hosts are {}",
            image.name,
            short_id(&image.id),
            build_label(&image.arch, &image.platform),
            offered.join(", ")
        ),
        hint,
    )
}

impl Rack {
    /// Where a deployment would go; changes nothing.
    pub fn plan(&self, request: &DeployRequest) -> Result<Plan> {
        let store = self.store();
        let placed = place(&**store, request)?;
        self.check_power(&**store, &placed.plan.hosts, placed.vcpus)?;
        Ok(placed.plan)
    }

    /// Places and records a deployment; the reconciler starts its instances.
    pub fn deploy(&self, request: &DeployRequest) -> Result<DeployResponse> {
        Ok(self.deploy_seeded(request, None)?.0)
    }

    /// Like [`Rack::deploy`]. With `volume_seed` (a takeover: the down peer's replicated volume
    /// snapshot), every instance placed on this manager's own host gets a copy of that file as
    /// its volume, written before the deployment is stored, so the reconciler can never boot it
    /// on an empty volume; returns the seeded volumes' paths. Instances placed on other hosts
    /// (agents with their own data directories) start with an empty volume.
    pub fn deploy_seeded(
        &self,
        request: &DeployRequest,
        volume_seed: Option<&Path>,
    ) -> Result<(DeployResponse, Vec<PathBuf>)> {
        self.require_scheduler()?;
        // Placement, ids and the record are one critical section: two deploys never place into
        // the same free room. Nothing in it talks to a host.
        let mut store = self.store();
        let Placed { plan, image, memory_mib, vcpus } = place(&**store, request)?;
        self.check_power(&**store, &plan.hosts, vcpus)?;
        let now = now_ms();
        let deployment = Deployment {
            id: format!("d{}", store.next_sequence("deployment")?),
            image_id: image.id.clone(),
            image_name: image.name.clone(),
            replicas: request.replicas,
            memory_mib,
            vcpus,
            args: request.args.clone().unwrap_or_else(|| image.args.clone()),
            restart: RestartPolicy { when: request.restart.unwrap_or(image.restart.when), ..image.restart },
            created_ms: now,
            on_demand: request.on_demand,
        };
        let mut records = Vec::new();
        for host in &plan.hosts {
            let id = format!("{}-{}", image.name, store.next_sequence("instance")?);
            let reserved = if deployment.on_demand.is_some() { 0 } else { memory_mib };
            records.push(InstanceRecord::pending(id, deployment.id.clone(), host.clone(), reserved, now));
        }
        let mut seeded = Vec::new();
        if let Some(seed) = volume_seed {
            // The manager's own host is the one registered without an agent address.
            let local: Vec<String> =
                store.hosts()?.into_iter().filter(|h| h.address.is_none()).map(|h| h.name).collect();
            for record in records.iter().filter(|r| local.contains(&r.host)) {
                let target = self.dir.volume(&deployment.id, &record.id);
                seed_volume(seed, &target).map_err(|e| {
                    RackError::internal(format!("seeding the volume {} from {}: {e}", target.display(), seed.display()))
                })?;
                seeded.push(target);
            }
        }
        store.create_deployment(&deployment, &records)?;
        drop(store);
        tracing::info!(deployment = %deployment.id, image = %image.name, image_id = short_id(&image.id), replicas = request.replicas, "deployed");
        tracing::info!(deployment = %deployment.id, hosts = %spread(&plan.hosts), "placed");
        let deployments = HashMap::from([(deployment.id.clone(), deployment.clone())]);
        let images = HashMap::from([(image.id.clone(), image.clone())]);
        let instances = records.iter().map(|r| instance_view(r, &deployments, &images)).collect();
        self.wake();
        Ok((DeployResponse { deployment, instances }, seeded))
    }
}

/// Copies `seed` to `target` under another name first, so an interrupted copy never leaves a
/// half-written volume where the agent would take it for the instance's own.
fn seed_volume(seed: &Path, target: &Path) -> std::io::Result<()> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let aside = target.with_extension("img.seeding");
    std::fs::copy(seed, &aside)?;
    std::fs::File::open(&aside)?.sync_all()?;
    std::fs::rename(&aside, target)
}
