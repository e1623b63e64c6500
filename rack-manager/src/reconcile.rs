//! The reconciler: drives observed state (instances as they are) towards desired state
//! (deployments and each instance's `desired`), on every tick and whenever the API wakes it.
//!
//! One pass, per instance:
//! - desired running, pending (or backed off and its delay passed): launch it on its host;
//! - desired running, running: ask the host whether the run is still going; if it ended, record
//!   the exit status and apply the deployment's restart policy (`always`, `on-failure` on a
//!   non-zero or unknown status, `never`), with a delay of `backoff_ms * 2^(n-1)` for the n-th
//!   consecutive restart (capped at one minute) and giving up after `max_restarts` (0: never);
//!   a run that lasted [`STABLE_RUN`] resets the count;
//! - desired stopped but still running: stop it.
//!
//! Runs are named by pid and start time, so after a daemon restart the first pass re-adopts runs
//! that are still going and restarts (by policy) those that ended while nobody watched.

use std::time::Duration;

use rack_api::{
    Deployment, Desired, HostState, Image, InstanceState, RestartWhen,
    agent::{LaunchRequest, RunState},
};

use crate::{
    clock::now_ms,
    rack::{Rack, deployments_by_id, images_by_id},
    store::InstanceRecord,
};

/// How often the reconciler looks when nothing wakes it.
pub const TICK: Duration = Duration::from_millis(250);

/// A run that lasted this long was healthy: its end starts the backoff afresh.
pub const STABLE_RUN: Duration = Duration::from_secs(10);

/// The longest delay between restarts.
pub const MAX_BACKOFF_MS: u64 = 60_000;

/// How often every host's agent is asked whether it answers.
pub const HEALTH_CHECK: Duration = Duration::from_secs(2);

/// Runs passes forever, and checks the hosts' health every [`HEALTH_CHECK`].
pub fn run(rack: &Rack) {
    let mut last_check = std::time::Instant::now() - HEALTH_CHECK;
    let mut was_scheduler = true;
    loop {
        // A standby manager (etcd store) watches; the elected scheduler acts, starting with a
        // health check the moment it is elected.
        let scheduler = rack.is_scheduler();
        if scheduler && !was_scheduler {
            last_check = std::time::Instant::now() - HEALTH_CHECK;
        }
        was_scheduler = scheduler;
        if !scheduler {
            if last_check.elapsed() >= HEALTH_CHECK {
                last_check = std::time::Instant::now();
                if let Err(e) = connect_joined_agents(rack) {
                    tracing::info!("reading hosts: {e}");
                }
            }
            rack.sleep(TICK);
            continue;
        }
        if last_check.elapsed() >= HEALTH_CHECK {
            last_check = std::time::Instant::now();
            if let Err(e) = check_hosts(rack) {
                tracing::info!("health check: {e}");
            }
        }
        if let Err(e) = pass(rack) {
            tracing::info!("reconciler: {e}");
        }
        rack.sleep(TICK);
    }
}

/// Marks hosts whose agent does not answer `unreachable` (placement skips them; their instances
/// stay where they are, neither restarted elsewhere nor forgotten), and ready again when it does.
/// A draining host stays draining.
pub fn check_hosts(rack: &Rack) -> crate::store::Result<()> {
    let hosts = connect_joined_agents(rack)?;
    let mut changes = Vec::new();
    for host in hosts {
        let answers = rack.agent(&host.name).is_some_and(|agent| agent.ping().is_ok());
        match (host.state, answers) {
            (HostState::Ready, false) => changes.push((host.name, HostState::Unreachable)),
            (HostState::Unreachable, true) => changes.push((host.name, HostState::Ready)),
            _ => {}
        }
    }
    let mut store = rack.store();
    for (name, state) in &changes {
        store.set_host_state(name, *state)?;
    }
    // Said only of changes that hold: on etcd, an expired liveness lease keeps a host down even
    // when its agent answers the scheduler.
    if !changes.is_empty() {
        let hosts = store.hosts()?;
        for (name, state) in changes {
            if hosts.iter().any(|h| h.name == name && h.state == state) {
                tracing::info!("host {name} is now {}", state.as_str());
            }
        }
    }
    Ok(())
}

/// Reaches the agents of joined hosts, also those that joined through another manager of an etcd
/// rack; returns the hosts.
///
/// Only records sealed by a manager's join path are contacted: anyone who can write the store
/// (an etcd without auth) could otherwise point a host at an address of their choosing and
/// receive the manager's requests and credentials there. Such a host gets no agent, so it reads
/// as unreachable and nothing runs on it.
pub fn connect_joined_agents(rack: &Rack) -> crate::store::Result<Vec<crate::store::HostRecord>> {
    let hosts = rack.store().hosts()?;
    let key = crate::store::JoinKey::from_token(&rack.token);
    for host in &hosts {
        let Some(address) = &host.address else { continue };
        if !host.is_joined(&key) {
            warn_unsealed(&host.name, address);
            continue;
        }
        if rack.agent(&host.name).is_none() {
            rack.add_agent(
                &host.name,
                std::sync::Arc::new(crate::agent::RemoteAgent::new(&host.name, address, &rack.token)),
            );
        }
    }
    Ok(hosts)
}

/// Says once per host and address that its record is not sealed, and what to do.
fn warn_unsealed(name: &str, address: &str) {
    static WARNED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    let key = (name.to_owned(), address.to_owned());
    if warned.contains(&key) || warned.len() >= 1024 {
        return;
    }
    warned.push(key);
    tracing::info!(
        "host {name}: its record names {address} but carries no seal from this rack's managers (it \
         was not written by a join, or before seals existed): not contacting it. If it is yours, join it again \
         (restart its agent with --join, or `rack-manager host add {name} {address}`); otherwise remove it \
         (`rack-manager host rm {name}`) and secure etcd (docs/rack-state.md)"
    );
}

/// The delay before the `n`-th consecutive restart (n ≥ 1).
pub fn backoff_ms(base_ms: u32, n: u32) -> u64 {
    let factor = 1u64 << n.saturating_sub(1).min(20);
    (u64::from(base_ms) * factor).min(MAX_BACKOFF_MS)
}

/// One pass over every instance.
///
/// The store is not locked while hosts are asked and VMs started: a remote agent may need the
/// manager's API meanwhile (to fetch an image), and one slow host must not stall every request.
/// Instead each change is written only if the instance was not changed by someone else (an
/// operator's `stop` or `rm`, or another manager of an etcd rack) in the meantime, by
/// compare-and-swap; a run started for a change that lost that race is
/// stopped again, so no VM is ever left without a record.
pub fn pass(rack: &Rack) -> crate::store::Result<()> {
    let (records, deployments, images) = {
        let store = rack.store();
        (store.instances()?, deployments_by_id(&**store)?, images_by_id(&**store)?)
    };
    let mut changed = Vec::new();
    for record in records {
        let Some(deployment) = deployments.get(&record.deployment) else { continue };
        let mut next = record.clone();
        step(rack, &mut next, deployment, images.get(&deployment.image_id));
        if next != record {
            changed.push((record, next));
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    // Compare-and-swap: each change is written only if nobody changed the instance since it was read.
    let written = rack.store().swap_instances(&changed)?;
    let mut orphaned = Vec::new();
    for ((old, new), written) in changed.into_iter().zip(written) {
        if !written && new.state == InstanceState::Running && old.state != InstanceState::Running {
            orphaned.push(new);
        }
    }
    for run in orphaned {
        if let Some(agent) = rack.agent(&run.host) {
            let _ = agent.stop(&run.run_ref());
        }
    }
    Ok(())
}

fn step(rack: &Rack, record: &mut InstanceRecord, deployment: &Deployment, image: Option<&Image>) {
    // A host without an agent (removed, or not joined again since a restart) is left alone.
    let Some(agent) = rack.agent(&record.host) else { return };
    let now = now_ms();
    match (record.desired, record.state) {
        (Desired::Running, InstanceState::Pending) => launch(rack, record, deployment, image),
        (Desired::Running, InstanceState::Backoff) if record.next_start_ms.is_none_or(|at| now >= at) => {
            record.restarts += 1;
            launch(rack, record, deployment, image);
        }
        (Desired::Running, InstanceState::Running) => match agent.state(&record.run_ref()) {
            Ok(RunState::Running) => {
                // An on-demand instance's gate: what `ps` shows of it (state, wakes, accounting).
                if deployment.on_demand.is_some()
                    && let Ok(Some(stats)) = agent.stats(&record.run_ref())
                    && let Some(gate) = stats.gate
                {
                    rack.gates.set(&record.id, gate);
                }
            }
            Ok(RunState::Exited { status }) => {
                rack.gates.forget(&record.id);
                exited(record, deployment, status, now)
            }
            // Unreachable: the host may come back; its runs are neither restarted elsewhere nor lost.
            Err(_) => {}
        },
        (Desired::Stopped, InstanceState::Running) if agent.stop(&record.run_ref()).is_ok() => {
            record.state = InstanceState::Stopped;
            record.pid = None;
        }
        (Desired::Stopped, InstanceState::Pending | InstanceState::Backoff) => record.state = InstanceState::Stopped,
        _ => {}
    }
}

fn launch(rack: &Rack, record: &mut InstanceRecord, deployment: &Deployment, image: Option<&Image>) {
    let Some(agent) = rack.agent(&record.host) else { return };
    // An image learned from a remote is assembled (its missing chunks fetched) before it boots.
    if let Err(e) = rack.materialize(&deployment.image_id) {
        record.pid = None;
        record.message = Some(format!("launch failed: {e}"));
        give_up_or_back_off(record, deployment, now_ms());
        return;
    }
    let request = LaunchRequest {
        instance: record.id.clone(),
        image_id: deployment.image_id.clone(),
        memory_mib: deployment.memory_mib,
        vcpus: deployment.vcpus,
        args: deployment.args.clone(),
        listen: image.map(|i| i.listen.clone()).unwrap_or_default(),
        image_source: rack.image_source.clone(),
        deployment: Some(deployment.id.clone()),
        previous_ports: record.ports.clone(),
        on_demand: deployment.on_demand,
    };
    match agent.launch(&request) {
        Ok(launched) => {
            record.state = InstanceState::Running;
            record.pid = launched.pid;
            record.start_ticks = launched.start_ticks;
            record.log_offset = launched.log_offset;
            record.ports = launched.ports;
            record.started_ms = Some(now_ms());
            record.next_start_ms = None;
            record.message = None;
            tracing::info!(instance = %record.id, deployment = %deployment.id, host = %record.host, pid = ?record.pid, ports = ?record.ports.iter().map(|p| p.endpoint()).collect::<Vec<_>>(), "launched");
        }
        Err(crate::agent::AgentError::Impossible(e)) => {
            // Retrying cannot help (another platform's image): fail at once, saying why.
            record.pid = None;
            record.state = InstanceState::Failed;
            record.message = Some(format!("cannot run here, not retried: {e}"));
            tracing::warn!(instance = %record.id, host = %record.host, error = %e, "launch impossible, not retried");
        }
        Err(e) => {
            // A launch that fails counts as a failed run: retried with backoff, then given up.
            tracing::warn!(instance = %record.id, host = %record.host, error = %e, "launch failed");
            record.pid = None;
            record.message = Some(format!("launch failed: {e}"));
            give_up_or_back_off(record, deployment, now_ms());
        }
    }
}

fn exited(record: &mut InstanceRecord, deployment: &Deployment, status: Option<i32>, now: u64) {
    tracing::info!(instance = %record.id, deployment = %deployment.id, host = %record.host, status = ?status, "exited");
    record.exit_status = status;
    record.pid = None;
    let failed = status != Some(0);
    let restart = match deployment.restart.when {
        RestartWhen::Always => true,
        RestartWhen::OnFailure => failed,
        RestartWhen::Never => false,
    };
    let shown = status.map_or("an unknown status".to_owned(), |s| format!("status {s}"));
    if !restart {
        record.state = InstanceState::Exited;
        record.message = Some(format!("exited with {shown}; restart policy {}", deployment.restart.when.as_str()));
        return;
    }
    if record.started_ms.is_some_and(|started| now.saturating_sub(started) >= STABLE_RUN.as_millis() as u64) {
        record.failures = 0;
    }
    record.message = Some(format!("exited with {shown}"));
    give_up_or_back_off(record, deployment, now);
}

fn give_up_or_back_off(record: &mut InstanceRecord, deployment: &Deployment, now: u64) {
    record.failures += 1;
    let max = deployment.restart.max_restarts;
    if max != 0 && record.failures > max {
        record.state = InstanceState::Failed;
        let why = record.message.take().unwrap_or_default();
        record.message = Some(format!("gave up after {max} consecutive restarts; last: {why}"));
        tracing::warn!(instance = %record.id, deployment = %deployment.id, restarts = max, "gave up: {why}");
        return;
    }
    record.state = InstanceState::Backoff;
    record.next_start_ms = Some(now + backoff_ms(deployment.restart.backoff_ms, record.failures));
    tracing::info!(instance = %record.id, failures = record.failures, backoff_ms = backoff_ms(deployment.restart.backoff_ms, record.failures), "restart scheduled");
}

#[cfg(test)]
mod tests {
    use rack_api::RestartPolicy;

    use super::*;

    fn deployment(when: RestartWhen, max: u32) -> Deployment {
        Deployment {
            id: "d1".into(),
            image_id: "x".into(),
            image_name: "crash".into(),
            replicas: 1,
            memory_mib: 16,
            vcpus: 1,
            args: vec![],
            restart: RestartPolicy { when, max_restarts: max, backoff_ms: 100 },
            created_ms: 0,
            on_demand: None,
        }
    }

    fn running() -> InstanceRecord {
        InstanceRecord {
            id: "crash-1".into(),
            deployment: "d1".into(),
            host: "local".into(),
            desired: Desired::Running,
            state: InstanceState::Running,
            pid: Some(10),
            start_ticks: Some(5),
            log_offset: 0,
            restarts: 0,
            failures: 0,
            exit_status: None,
            ports: vec![],
            memory_mib: 16,
            created_ms: 0,
            started_ms: Some(1_000),
            next_start_ms: None,
            message: None,
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!([1, 2, 3, 4].map(|n| backoff_ms(500, n)), [500, 1000, 2000, 4000]);
        assert_eq!(backoff_ms(500, 40), MAX_BACKOFF_MS);
    }

    #[test]
    fn on_failure_restarts_failures_only() {
        let mut record = running();
        exited(&mut record, &deployment(RestartWhen::OnFailure, 5), Some(0), 2_000);
        assert_eq!(record.state, InstanceState::Exited);
        let mut record = running();
        exited(&mut record, &deployment(RestartWhen::OnFailure, 5), Some(101), 2_000);
        assert_eq!(
            (record.state, record.next_start_ms, record.exit_status),
            (InstanceState::Backoff, Some(2_100), Some(101))
        );
    }

    #[test]
    fn never_and_always_do_what_they_say() {
        let mut record = running();
        exited(&mut record, &deployment(RestartWhen::Never, 5), Some(3), 2_000);
        assert_eq!(record.state, InstanceState::Exited);
        let mut record = running();
        exited(&mut record, &deployment(RestartWhen::Always, 5), Some(0), 2_000);
        assert_eq!(record.state, InstanceState::Backoff);
    }

    #[test]
    fn the_restart_limit_is_enforced_and_a_long_run_resets_it() {
        let policy = deployment(RestartWhen::OnFailure, 2);
        let mut record = running();
        for _ in 0..2 {
            exited(&mut record, &policy, Some(1), 2_000);
            assert_eq!(record.state, InstanceState::Backoff);
            record.state = InstanceState::Running;
        }
        exited(&mut record, &policy, Some(1), 2_000);
        assert_eq!(record.state, InstanceState::Failed);
        assert!(record.message.as_deref().is_some_and(|m| m.contains("gave up after 2")), "{:?}", record.message);

        let mut record = running();
        record.failures = 2;
        exited(&mut record, &policy, Some(1), 1_000 + STABLE_RUN.as_millis() as u64);
        assert_eq!((record.state, record.failures), (InstanceState::Backoff, 1));
    }
}
