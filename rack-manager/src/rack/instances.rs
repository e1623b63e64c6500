//! Instances: listing, the lifecycle an operator drives (stop, start, restart, remove), console
//! logs and resource use, and fencing (stopping a deployment for good, when a peer took it over).
//!
//! Each change is a compare-and-swap on the record as read, re-read and retried when the
//! reconciler (or another manager) wrote it meanwhile. Agents are asked without the store lock.

use rack_api::{Desired, Instance, InstanceState, InstanceStats, LogChunk, Stats, agent::VolumeRef};

use super::{Rack, RackError, Result, deployments_by_id, hosts::RETRIES, instance_view};
use crate::store::{InstanceRecord, StateStore};

/// What an operator asks of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Stop,
    Start,
    Restart,
}

fn record(store: &dyn StateStore, id: &str) -> Result<InstanceRecord> {
    store.instance(id)?.ok_or_else(|| {
        RackError::not_found(format!("there is no instance {id:?}"), "list instances with `rack-manager ps -a`")
    })
}

impl Rack {
    /// Every instance, or only the active ones (not stopped, exited or failed).
    pub fn instances(&self, all: bool) -> Result<Vec<Instance>> {
        let store = self.store();
        let deployments = deployments_by_id(&**store)?;
        let images = super::images_by_id(&**store)?;
        Ok(store
            .instances()?
            .iter()
            .filter(|i| all || i.state.is_active())
            .map(|i| Instance { gate: self.gates.get(&i.id), ..instance_view(i, &deployments, &images) })
            .collect())
    }

    pub fn instance(&self, id: &str) -> Result<Instance> {
        let store = self.store();
        let record = record(&**store, id)?;
        Ok(Instance {
            gate: self.gates.get(id),
            ..instance_view(&record, &deployments_by_id(&**store)?, &super::images_by_id(&**store)?)
        })
    }

    fn view(&self, record: &InstanceRecord) -> Result<Instance> {
        let store = self.store();
        Ok(instance_view(record, &deployments_by_id(&**store)?, &super::images_by_id(&**store)?))
    }

    /// Reads instance `id`, lets `change` edit a copy, and writes it only if the stored record
    /// is still the one read; on a lost race, reads and applies `change` again. Returns the
    /// record as read and as written.
    fn change_instance(
        &self,
        id: &str,
        mut change: impl FnMut(&mut InstanceRecord),
    ) -> Result<(InstanceRecord, InstanceRecord)> {
        for _ in 0..RETRIES {
            let old = record(&**self.store(), id)?;
            let mut new = old.clone();
            change(&mut new);
            if new == old {
                return Ok((old, new));
            }
            let swap = [(old, new)];
            if self.store().swap_instances(&swap)?.first() == Some(&true) {
                let [(old, new)] = swap;
                return Ok((old, new));
            }
        }
        Err(RackError::conflict(
            format!("instance {id} kept changing while this was applied"),
            "look at it with `rack-manager ps -a` and retry",
        ))
    }

    /// Stops the run `record` names on its host, asking its agent without the store lock.
    fn stop_run(&self, record: &InstanceRecord) -> Result<()> {
        if record.state != InstanceState::Running {
            return Ok(());
        }
        let agent = self.connected_agent(&record.host)?;
        agent.stop(&record.run_ref()).map_err(|e| {
            RackError::host_unreachable(
                format!("stopping {} on {}: {e}", record.id, record.host),
                "the reconciler keeps trying while the instance is meant to be stopped; or retry when the host is back",
            )
        })
    }

    /// Stop, start or restart instance `id`.
    ///
    /// - stop: the record says stopped first (so nothing restarts it), then the run is stopped.
    ///   If its host does not answer, the reconciler stops it when the host is back.
    /// - start: a stopped, exited or failed instance is started afresh; a running one is left.
    /// - restart: the current run is stopped, then the instance starts afresh.
    pub fn lifecycle(&self, id: &str, action: Lifecycle) -> Result<Instance> {
        let record = match action {
            Lifecycle::Stop => {
                let (old, _) = self.change_instance(id, |r| {
                    r.desired = Desired::Stopped;
                    if r.state != InstanceState::Running {
                        r.state = InstanceState::Stopped;
                    }
                    r.message = Some("stopped by an operator".into());
                })?;
                self.stop_run(&old)?;
                // Our stop ended that run: say so, unless something else changed meanwhile.
                let (_, new) = self.change_instance(id, |r| {
                    if r.state == InstanceState::Running && r.pid == old.pid && r.start_ticks == old.start_ticks {
                        r.state = InstanceState::Stopped;
                        r.pid = None;
                    }
                })?;
                new
            }
            Lifecycle::Start => {
                self.change_instance(id, |r| {
                    r.desired = Desired::Running;
                    if r.state != InstanceState::Running {
                        start_afresh(r);
                    }
                })?
                .1
            }
            Lifecycle::Restart => {
                let mut stopped: Vec<(Option<u32>, Option<u64>)> = Vec::new();
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let current = record(&**self.store(), id)?;
                    // A run not stopped yet by this restart (the first, or one the reconciler
                    // started meanwhile) is stopped before the record is changed.
                    let run = (current.pid, current.start_ticks);
                    if current.state == InstanceState::Running && !stopped.contains(&run) {
                        self.stop_run(&current)?;
                        stopped.push(run);
                    }
                    let mut next = current.clone();
                    next.restarts += 1;
                    next.desired = Desired::Running;
                    start_afresh(&mut next);
                    let swap = [(current, next)];
                    if self.store().swap_instances(&swap)?.first() == Some(&true) {
                        let [(_, next)] = swap;
                        break next;
                    }
                    if attempts >= RETRIES {
                        return Err(RackError::conflict(
                            format!("instance {id} kept changing while it was restarted"),
                            "look at it with `rack-manager ps -a` and retry",
                        ));
                    }
                }
            }
        };
        self.wake();
        self.view(&record)
    }

    /// Removes instance `id`: marks it stopped (so nothing restarts it), stops its run and
    /// deletes its volume on its host, then forgets it. An unreachable host refuses the removal:
    /// a volume must not outlive its record unnoticed, nor the record its volume.
    pub fn remove_instance(&self, id: &str) -> Result<Instance> {
        let (old, _) = self.change_instance(id, |r| {
            r.desired = Desired::Stopped;
            r.message = Some("being removed".into());
        })?;
        let view = self.view(&old)?;
        self.stop_run(&old)?;
        if let Some(agent) = self.agent(&old.host) {
            let volume = VolumeRef { deployment: old.deployment.clone(), instance: old.id.clone() };
            agent.remove_volume(&volume).map_err(|e| {
                RackError::host_unreachable(
                    format!("removing the volume of {} on {}: {e}", old.id, old.host),
                    "retry when the host is back",
                )
            })?;
        }
        let mut store = self.store();
        // An operator's `start` in between wins: the instance stays (its volume is gone, as
        // asked, and is made afresh at its next start).
        if store.instance(id)?.is_some_and(|r| r.desired == Desired::Stopped) {
            store.remove_instance(id)?;
        }
        Ok(view)
    }

    /// Console output of instance `id` from `offset`, from its host.
    pub fn logs(&self, id: &str, offset: u64) -> Result<LogChunk> {
        let record = record(&**self.store(), id)?;
        let agent = self.connected_agent(&record.host)?;
        let mut chunk = agent.logs(id, offset).map_err(|e| {
            RackError::host_unreachable(format!("reading the log of {id} on {}: {e}", record.host), "retry later")
        })?;
        chunk.running = record.desired == Desired::Running && record.state.is_active();
        Ok(chunk)
    }

    /// CPU and memory of every active instance, from their hosts (unknown where a host does
    /// not answer).
    pub fn stats(&self) -> Result<Stats> {
        let records = self.store().instances()?;
        let mut out = Vec::new();
        for record in records.iter().filter(|r| r.state.is_active()) {
            let stats = match (record.state, self.agent(&record.host)) {
                (InstanceState::Running, Some(agent)) => agent.stats(&record.run_ref()).ok().flatten(),
                _ => None,
            };
            out.push(InstanceStats {
                id: record.id.clone(),
                host: record.host.clone(),
                state: record.state,
                pid: record.pid,
                cpu_ms: stats.map(|s| s.cpu_ms),
                cpu_percent: stats.filter(|s| s.age_ms > 0).map(|s| s.cpu_ms as f64 * 100.0 / s.age_ms as f64),
                rss_bytes: stats.map(|s| s.rss_bytes),
                awake_ms: stats.and_then(|s| s.gate).map(|g| g.awake_ms),
            });
        }
        Ok(Stats { instances: out, power: None })
    }

    /// Stops every instance of the deployments `fenced` names for good, each with its message
    /// (a peer took the deployment over): they stay listed, stopped, and nothing restarts them.
    /// They are recorded stopped before their runs are stopped, without the store lock.
    /// Returns how many instances were fenced.
    pub fn fence(&self, fenced: &[(String, String)]) -> Result<usize> {
        let message_for = |deployment: &str| fenced.iter().find(|(d, _)| d == deployment).map(|(_, m)| m.clone());
        let swaps: Vec<(InstanceRecord, InstanceRecord)> = self
            .store()
            .instances()?
            .into_iter()
            .filter(|r| r.desired == Desired::Running)
            .filter_map(|r| {
                let message = message_for(&r.deployment)?;
                let mut next = r.clone();
                next.desired = Desired::Stopped;
                next.state = InstanceState::Stopped;
                next.pid = None;
                next.message = Some(message);
                Some((r, next))
            })
            .collect();
        if swaps.is_empty() {
            return Ok(0);
        }
        let written = self.store().swap_instances(&swaps)?;
        let mut count = 0;
        for ((old, _), written) in swaps.into_iter().zip(written) {
            if !written {
                continue;
            }
            count += 1;
            // The peer runs it now: stopped here at once. A host that does not answer (it went
            // down with this rack) is not waited for; its run, if any, is left as a down host's
            // runs are.
            if old.state == InstanceState::Running
                && let Err(e) = self.stop_run(&old)
            {
                tracing::info!("{e}");
            }
        }
        self.wake();
        Ok(count)
    }
}

/// `record` as it is when started afresh: pending, its failure count and backoff cleared.
fn start_afresh(record: &mut InstanceRecord) {
    record.state = InstanceState::Pending;
    record.pid = None;
    record.failures = 0;
    record.next_start_ms = None;
    record.message = None;
}
