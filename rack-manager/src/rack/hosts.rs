//! Hosts: joining, adding, draining and removing them, and what each has left for placement.

use std::{collections::HashMap, sync::Arc};

use rack_api::{Desired, DrainResponse, Host, HostState, InstanceState, JoinRequest};

use super::{
    Rack, RackError, Result, deployments_by_id,
    place::{self, Candidate},
};
use crate::{
    agent::RemoteAgent,
    peer::identity::Fingerprint,
    store::{HostRecord, InstanceRecord, StateStore},
};

/// How many times an operation re-reads and retries when another writer changed what it read.
pub(super) const RETRIES: usize = 8;

/// Every host with what its instances use.
pub fn hosts(store: &dyn StateStore) -> Result<Vec<Host>> {
    let instances = store.instances()?;
    let deployments = deployments_by_id(store)?;
    Ok(store
        .hosts()?
        .into_iter()
        .map(|h| {
            let placed: Vec<&InstanceRecord> = instances.iter().filter(|i| i.host == h.name).collect();
            Host {
                instances: placed.len() as u32,
                memory_used_mib: placed.iter().filter(|i| reserves(i)).map(|i| u64::from(i.memory_mib)).sum(),
                vcpus_used: placed
                    .iter()
                    .filter(|i| reserves(i))
                    .map(|i| deployments.get(&i.deployment).map_or(1, |d| d.vcpus))
                    .sum(),
                name: h.name,
                address: h.address,
                launcher: h.launcher,
                arches: h.arches,
                memory_mib: h.memory_mib,
                vcpus: h.vcpus,
                state: h.state,
            }
        })
        .collect())
}

/// Whether an instance holds its host's resources: anything an operator has not stopped and
/// that has not ended for good.
pub(super) fn reserves(instance: &InstanceRecord) -> bool {
    instance.desired == Desired::Running && instance.state.is_active()
}

fn host_view(store: &dyn StateStore, name: &str) -> Result<Host> {
    hosts(store)?.into_iter().find(|h| h.name == name).ok_or_else(|| unknown_host(store, name))
}

fn unknown_host(store: &dyn StateStore, name: &str) -> RackError {
    let names: Vec<String> = store.hosts().map(|hs| hs.into_iter().map(|h| h.name).collect()).unwrap_or_default();
    RackError::not_found(format!("there is no host named {name:?}"), format!("the hosts are: {}", names.join(", ")))
}

/// Placement candidates: ready hosts with what they have left, and how many instances of
/// `appliance` each already runs; `exclude` is left out (the host being drained).
pub(super) fn candidates(store: &dyn StateStore, appliance: &str, exclude: &str) -> Result<Vec<Candidate>> {
    let deployments = deployments_by_id(store)?;
    let instances = store.instances()?;
    Ok(store
        .hosts()?
        .into_iter()
        .filter(|h| h.state == HostState::Ready && h.name != exclude)
        .map(|h| {
            let placed: Vec<&InstanceRecord> = instances.iter().filter(|i| i.host == h.name && reserves(i)).collect();
            let used_memory: u64 = placed.iter().map(|i| u64::from(i.memory_mib)).sum();
            // On-demand instances reserve no vCPUs (nor memory: their records hold 0 MiB).
            let used_vcpus: u64 = placed
                .iter()
                .map(|i| match deployments.get(&i.deployment) {
                    Some(d) if d.on_demand.is_some() => 0,
                    Some(d) => u64::from(d.vcpus),
                    None => 1,
                })
                .sum();
            let same = placed
                .iter()
                .filter(|i| deployments.get(&i.deployment).is_some_and(|d| d.image_name == appliance))
                .count() as u32;
            Candidate {
                name: h.name,
                arches: h.arches,
                free_memory_mib: h.memory_mib.saturating_sub(used_memory),
                free_vcpus: u64::from(h.vcpus).saturating_sub(used_vcpus),
                same_appliance: same,
            }
        })
        .collect())
}

impl Rack {
    /// The hosts and what their instances use.
    pub fn hosts(&self) -> Result<Vec<Host>> {
        hosts(&**self.store())
    }

    /// Registers (or re-registers) the agent that announced itself with `join`, serving the
    /// certificate `fingerprint` (pinned from now on; the caller checked the join's credential,
    /// [`crate::credentials::admit`]).
    pub fn join(&self, join: JoinRequest, fingerprint: &Fingerprint) -> Result<Host> {
        if join.name.is_empty()
            || join.name.len() > 63
            || !join.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(RackError::invalid(
                format!("{:?} is not a valid host name", join.name),
                "use up to 63 letters, digits, '-', '_' and '.'",
            ));
        }
        if !join.address.starts_with("https://") || join.address.contains('#') {
            return Err(RackError::invalid(
                format!("{:?} is not an agent URL", join.address),
                "give https://HOST:PORT",
            ));
        }
        let address = crate::credentials::pinned_address(&join.address, fingerprint);
        let view = {
            let mut store = self.store();
            let existing = store.hosts()?.into_iter().find(|h| h.name == join.name);
            if existing.as_ref().is_some_and(|h| h.address.is_none()) {
                return Err(RackError::conflict(
                    format!("{:?} is the manager's own built-in host", join.name),
                    "give the agent another --name",
                ));
            }
            // Sealed: only hosts that joined through a manager are ever contacted (store::JoinKey).
            let record = HostRecord {
                name: join.name.clone(),
                address: Some(address.clone()),
                launcher: join.launcher,
                arches: join.arches,
                memory_mib: join.memory_mib,
                vcpus: join.vcpus,
                state: existing.map_or(HostState::Ready, |h| h.state),
                join_seal: None,
            };
            store.upsert_host(&record.sealed(&crate::store::JoinKey::from_token(&self.token)))?;
            host_view(&**store, &join.name)?
        };
        self.add_agent(&join.name, Arc::new(RemoteAgent::new(&join.name, &address, &self.token)));
        self.wake();
        Ok(view)
    }

    /// Adds the agent waiting at `address` (`https://HOST:PORT#sha256=<fingerprint>`, as it
    /// printed it) as host `name`: invites it over pinned TLS, and it joins with its own join token.
    pub fn add_host(&self, name: String, address: String) -> Result<Host> {
        RemoteAgent::new(&name, &address, &self.token).invite(&name).map_err(|e| {
            RackError::refused(
                "agent_unreachable",
                format!("no agent answered at {address}: {e}"),
                "start one there with `rack-manager agent --manager-url <this manager> --join-token-file FILE --listen ADDR` \
                 and give the address it prints (https://HOST:PORT#sha256=…)",
            )
        })?;
        host_view(&**self.store(), &name)
    }

    /// Moves every instance off host `name` and marks it draining (placement skips it).
    ///
    /// Every move is planned before any is made, so a drain that cannot complete changes
    /// nothing. The moves are written first (compare-and-swap), so the reconciler starts the
    /// instances on their new hosts; only then are the old runs stopped, without the store lock.
    pub fn drain(&self, name: &str) -> Result<DrainResponse> {
        self.require_scheduler()?;
        let mut moved = Vec::new();
        let mut old_runs = Vec::new();
        let mut settled = false;
        for _ in 0..RETRIES {
            let plans = {
                let store = self.store();
                if !store.hosts()?.iter().any(|h| h.name == name) {
                    return Err(unknown_host(&**store, name));
                }
                let on_host: Vec<InstanceRecord> = store.instances()?.into_iter().filter(|i| i.host == name).collect();
                plan_moves(&**store, name, &on_host)?
            };
            let swaps: Vec<(InstanceRecord, InstanceRecord)> = plans
                .into_iter()
                .map(|(old, target)| {
                    let new = moved_record(&old, &target, name);
                    (old, new)
                })
                .collect();
            let written = {
                let mut store = self.store();
                // Marked in the same critical section as the moves: nothing new lands here meanwhile.
                store.set_host_state(name, HostState::Draining)?;
                store.swap_instances(&swaps)?
            };
            settled = written.iter().all(|w| *w);
            for ((old, new), written) in swaps.into_iter().zip(written) {
                if written {
                    moved.push((new.id.clone(), new.host.clone()));
                    if old.state == InstanceState::Running {
                        old_runs.push(old);
                    }
                }
            }
            if settled {
                break;
            }
        }
        // The moved instances run elsewhere now: their old runs stop, without the store lock.
        if let Some(agent) = self.agent(name) {
            for old in &old_runs {
                if let Err(e) = agent.stop(&old.run_ref()) {
                    tracing::info!("stopping {} on drained host {name}: {e}", old.id);
                }
            }
        }
        self.wake();
        if !settled {
            return Err(RackError::conflict(
                format!("instances on {name} kept changing while it was drained; {} were moved", moved.len()),
                format!("run `rack-manager host drain {name}` again"),
            ));
        }
        let host = host_view(&**self.store(), name)?;
        Ok(DrainResponse { host, moved })
    }

    /// Forgets host `name`, which must have no instances left.
    pub fn remove_host(&self, name: &str) -> Result<Host> {
        let host = {
            let mut store = self.store();
            let host = host_view(&**store, name)?;
            if host.instances > 0 {
                return Err(RackError::conflict(
                    format!("host {name} still has {} instance(s)", host.instances),
                    format!(
                        "move them first with `rack-manager host drain {name}`, or remove them with `rack-manager rm`"
                    ),
                ));
            }
            store.remove_host(name)?;
            host
        };
        self.remove_agent(name);
        Ok(host)
    }
}

/// Where each instance on host `name` goes; an error if one has nowhere to go.
fn plan_moves(store: &dyn StateStore, name: &str, on_host: &[InstanceRecord]) -> Result<Vec<(InstanceRecord, String)>> {
    let deployments = deployments_by_id(store)?;
    let images = super::images_by_id(store)?;
    let mut moves = Vec::new();
    let mut pool: HashMap<String, Vec<Candidate>> = HashMap::new();
    for instance in on_host {
        let Some(deployment) = deployments.get(&instance.deployment) else { continue };
        let Some(image) = images.get(&deployment.image_id) else { continue };
        if !pool.contains_key(&deployment.image_name) {
            pool.insert(deployment.image_name.clone(), candidates(store, &deployment.image_name, name)?);
        }
        let Some(hosts) = pool.get_mut(&deployment.image_name) else { continue };
        let request = place::Request {
            arch: image.arch.clone(),
            replicas: 1,
            memory_mib: instance.memory_mib,
            vcpus: deployment.vcpus,
        };
        let target = place::place(hosts, &request)
            .map_err(|e| {
                RackError::refused(
                    "no_placement",
                    format!("cannot drain {name}: instance {} has nowhere to go: {}", instance.id, e.message),
                    e.hint,
                )
            })?
            .into_iter()
            .next()
            .ok_or_else(|| RackError::internal("placement answered no host for one replica"))?;
        // Later moves see the room this one takes.
        for candidate in hosts.iter_mut().filter(|c| c.name == target) {
            candidate.free_memory_mib = candidate.free_memory_mib.saturating_sub(u64::from(instance.memory_mib));
            candidate.free_vcpus = candidate.free_vcpus.saturating_sub(u64::from(deployment.vcpus));
            candidate.same_appliance += 1;
        }
        moves.push((instance.clone(), target));
    }
    Ok(moves)
}

/// `instance` as it is once moved to `target`: no run, to be started there if it should run.
fn moved_record(instance: &InstanceRecord, target: &str, from: &str) -> InstanceRecord {
    let mut moved = instance.clone();
    moved.host = target.to_owned();
    moved.pid = None;
    moved.start_ticks = None;
    moved.ports.clear();
    moved.log_offset = 0;
    if moved.desired == Desired::Running && moved.state != InstanceState::Failed {
        moved.state = InstanceState::Pending;
    } else if moved.state == InstanceState::Running {
        moved.state = InstanceState::Stopped;
    }
    moved.message = Some(format!("moved from {from} (drained)"));
    moved
}
