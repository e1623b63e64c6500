//! Failover: when a peer has been unreachable both ways for the lease (its heartbeats stopped and
//! it answers none of this rack's), this rack takes over the peer's deployments whose failover
//! list names it first among the racks that are alive, if this rack's policy allows each
//! ([`super::policy::judge`]: an image signed by a key trusted for that peer, within the
//! takeover limits). A refused plan is recorded with state `refused` and its reason, shown by
//! `failover status`, never announced to the peer, and judged again while the peer stays down
//! (the operator may trust a key meanwhile); it is forgotten once the peer is back.
//!
//! A takeover is recorded (and saved) before the deployment is started here, so the down rack
//! hears of it in the reply to its first heartbeat when it comes back, and stops its own copies
//! (see [`super::sync`]). The recovery time is measured from the lease's expiry to the first
//! local instance running; the replication lag at failure, the data-loss window, is the time
//! between the newest volume snapshot this rack holds and the peer's last heartbeat. Hand-back
//! is manual: stop the deployment here (`rack-manager rm`), then start it on the returned rack.

use std::{sync::Arc, thread, time::Duration};

use rack_api::{DeployRequest, InstanceState, peers::Takeover};

use super::{Node, PlanSpec};
use crate::clock::now_ms;

/// How often leases are checked: a fraction of a heartbeat, so detection adds little.
const CHECK_EVERY: Duration = Duration::from_millis(100);

pub fn spawn(node: Arc<Node>) {
    thread::spawn(move || {
        loop {
            check(&node);
            thread::sleep(CHECK_EVERY);
        }
    });
}

/// The rack that should run `plan` when its owner `down` is down: the first in its list, other
/// than the owner, that is this rack or a peer whose heartbeat is current.
pub fn successor<'a>(plan: &'a PlanSpec, down: &str, me: &str, is_up: impl Fn(&str) -> bool) -> Option<&'a str> {
    plan.failover_to.iter().map(String::as_str).find(|rack| *rack != down && (*rack == me || is_up(rack)))
}

/// The state of a takeover this rack's policy refused: nothing runs here for it.
pub const REFUSED: &str = "refused";

fn check(node: &Node) {
    let now = now_ms();
    let lease = node.lease.as_millis() as u64;
    let me = node.identity.name.clone();
    let runtime = node.runtime().clone();
    let mut images = None;
    for (peer, state) in &runtime {
        let Some(last) = state.last_heartbeat_ms else { continue };
        if super::alive(state, now, lease) {
            forget_refusals(node, peer);
            continue;
        }
        // Down since the later of its last heartbeat and its last answer, plus the lease.
        let expired = last.max(state.last_reply_ms.unwrap_or(0)) + lease;
        for plan in &state.plans {
            let existing =
                node.takeovers().iter().find(|t| t.peer == *peer && t.deployment == plan.deployment).cloned();
            if existing.as_ref().is_some_and(|t| t.state != REFUSED)
                || successor(plan, peer, &me, |r| node.peer_is_alive(r, now)) != Some(me.as_str())
            {
                continue;
            }
            // Read once per pass, not per plan: a down peer may have sent hundreds.
            let images = images.get_or_insert_with(|| {
                node.rack.store().images().map_err(|e| format!("reading this rack's images: {e}"))
            });
            let verdict = match images {
                Ok(images) => allowed(node, peer, plan, images),
                Err(error) => Err(error.clone()),
            };
            if let Err(reason) = verdict {
                // Recorded (and logged) when the reason is new, not at every check.
                if existing.and_then(|t| t.message) != Some(reason.clone()) {
                    tracing::warn!("not taking over {} from down rack {peer}: {reason}", plan.deployment);
                    let refused = Takeover {
                        state: REFUSED.into(),
                        message: Some(reason),
                        ..new_takeover(node, peer, last, expired, plan, None, 0)
                    };
                    if let Err(error) = record(node, refused) {
                        tracing::warn!("recording a refused takeover: {error:#}");
                    }
                }
                continue;
            }
            let snapshot = state.snapshots.get(&plan.deployment).copied();
            if let Err(error) = take_over(node, peer, last, expired, plan, snapshot) {
                tracing::info!("taking over {} from {peer}: {error:#}", plan.deployment);
            }
        }
    }
    note_serving(node);
}

/// Whether this rack's policy lets `peer` have `plan` run here now, or why not; `images` are
/// this rack's images.
pub fn allowed(node: &Node, peer: &str, plan: &PlanSpec, images: &[rack_api::Image]) -> Result<(), String> {
    let entry = node.peers().into_iter().find(|p| p.name == peer);
    let image = images.iter().find(|i| i.id == plan.image_id);
    let running: u32 = node
        .takeovers()
        .iter()
        .filter(|t| t.peer == peer && t.deployment != plan.deployment && t.state != REFUSED && t.state != "failed")
        .map(|t| t.replicas)
        .sum();
    super::policy::judge(&node.policy, entry.as_ref(), plan, image, running)
}

/// Drops the refused takeovers of a peer that is alive again: they described an outage.
fn forget_refusals(node: &Node, peer: &str) {
    let mut takeovers = node.takeovers();
    if !takeovers.iter().any(|t| t.peer == peer && t.state == REFUSED) {
        return;
    }
    let mut next = takeovers.clone();
    next.retain(|t| !(t.peer == peer && t.state == REFUSED));
    match node.save_takeovers(&next) {
        Ok(()) => *takeovers = next,
        Err(error) => tracing::warn!("forgetting refused takeovers: {error:#}"),
    }
}

fn new_takeover(
    node: &Node,
    peer: &str,
    last_heartbeat_ms: u64,
    lease_expired_ms: u64,
    plan: &PlanSpec,
    snapshot_taken_ms: Option<u64>,
    epoch: u64,
) -> Takeover {
    Takeover {
        peer: peer.to_owned(),
        deployment: plan.deployment.clone(),
        image_id: plan.image_id.clone(),
        image_name: plan.image_name.clone(),
        replicas: plan.replicas,
        epoch,
        local_deployment: None,
        peer_last_heartbeat_ms: last_heartbeat_ms,
        lease_expired_ms,
        serving_ms: None,
        recovery_ms: None,
        snapshot_taken_ms: snapshot_taken_ms.filter(|_| plan.has_volume),
        lag_ms: snapshot_taken_ms.filter(|_| plan.has_volume).map(|t| last_heartbeat_ms.saturating_sub(t)),
        loss_window_ms: snapshot_taken_ms
            .filter(|_| plan.has_volume)
            .map(|t| last_heartbeat_ms.saturating_sub(t) + node.heartbeat.as_millis() as u64),
        volume_path: None,
        state: "starting".into(),
        message: None,
    }
}

fn take_over(
    node: &Node,
    peer: &str,
    last_heartbeat_ms: u64,
    lease_expired_ms: u64,
    plan: &PlanSpec,
    snapshot_taken_ms: Option<u64>,
) -> anyhow::Result<()> {
    let epoch = node.takeovers().iter().map(|t| t.epoch).max().unwrap_or(0) + 1;
    let mut takeover = new_takeover(node, peer, last_heartbeat_ms, lease_expired_ms, plan, snapshot_taken_ms, epoch);
    if !node.image_complete(&plan.image_id) {
        // The owner is down: the chunks the trickle has not brought yet must come from the cloud tier.
        takeover.message = Some(format!(
            "image {} was not complete here: its missing chunks are fetched from the other remotes",
            plan.image_name
        ));
    }
    if plan.has_volume && snapshot_taken_ms.is_none() {
        takeover.message =
            Some("the deployment has a volume but no snapshot reached this rack: it starts empty".into());
    }
    // Recorded first: from here on the peer, when it returns, is told not to run this deployment.
    record(node, takeover.clone())?;
    let request = DeployRequest {
        image: plan.image_id.clone(),
        replicas: plan.replicas,
        memory_mib: Some(plan.memory_mib),
        vcpus: Some(plan.vcpus),
        args: Some(plan.args.clone()),
        restart: Some(plan.restart),
        arch: None,
        platform: None,
        on_demand: None,
    };
    // The restored snapshot becomes the new instance's volume before the deployment is stored,
    // so the instance's first boot already finds the peer's data.
    let seed = match takeover.snapshot_taken_ms {
        Some(_) => Some(node.snapshot_path(peer, &plan.deployment)?),
        None => None,
    };
    match node.rack.deploy_seeded(&request, seed.as_deref()) {
        Ok((response, seeded)) => {
            if seed.is_some() && seeded.is_empty() {
                takeover.message = Some(
                    "the deployment was placed on another host of this rack, which has no copy of the volume \
                     snapshot: it starts empty"
                        .into(),
                );
            }
            takeover.volume_path = seeded.first().map(|p| p.display().to_string());
            takeover.local_deployment = Some(response.deployment.id);
        }
        Err(error) => {
            takeover.state = "failed".into();
            takeover.message = Some(format!("deploying here failed: {}", error.message));
        }
    }
    tracing::warn!(peer = %peer, deployment = %plan.deployment, image = %plan.image_name, epoch, state = %takeover.state, "failover: took over a deployment from a down rack");
    record(node, takeover)
}

/// Hands a taken-over deployment back once its owner is up again: removes the local instances
/// and forgets the takeover, so the owner's heartbeats no longer hear of it. The owner's copies
/// stay stopped until an operator starts them there (`rack-manager start`).
pub fn release(node: &Node, peer: &str, deployment: &str) -> anyhow::Result<Takeover> {
    let takeover = node
        .takeovers()
        .iter()
        .find(|t| t.peer == peer && t.deployment == deployment)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("this rack has not taken over deployment {deployment} of rack {peer}"))?;
    anyhow::ensure!(
        node.peer_is_alive(peer, now_ms()),
        "rack {peer} is down: handing its deployment back now would only make this rack take it over again"
    );
    if let Some(local) = &takeover.local_deployment {
        let ids: Vec<String> =
            node.rack.store().instances()?.into_iter().filter(|i| &i.deployment == local).map(|i| i.id).collect();
        for id in ids {
            node.rack.remove_instance(&id)?;
        }
    }
    let mut takeovers = node.takeovers();
    let mut next = takeovers.clone();
    next.retain(|t| !(t.peer == peer && t.deployment == deployment));
    node.save_takeovers(&next)?;
    *takeovers = next;
    tracing::info!(peer = %peer, deployment = %deployment, "failover: handed a deployment back to its rack");
    Ok(takeover)
}

/// Adds or replaces a takeover, saved before this returns.
fn record(node: &Node, takeover: Takeover) -> anyhow::Result<()> {
    let mut takeovers = node.takeovers();
    let mut next = takeovers.clone();
    next.retain(|t| !(t.peer == takeover.peer && t.deployment == takeover.deployment));
    next.push(takeover);
    node.save_takeovers(&next)?;
    *takeovers = next;
    Ok(())
}

/// Fills in when each starting takeover's first instance ran.
fn note_serving(node: &Node) {
    let starting: Vec<Takeover> =
        node.takeovers().iter().filter(|t| t.serving_ms.is_none() && t.local_deployment.is_some()).cloned().collect();
    if starting.is_empty() {
        return;
    }
    let Ok(instances) = node.rack.store().instances() else { return };
    for mut takeover in starting {
        let first = instances
            .iter()
            .filter(|i| Some(&i.deployment) == takeover.local_deployment.as_ref() && i.state == InstanceState::Running)
            .filter_map(|i| i.started_ms)
            .min();
        if let Some(started) = first {
            takeover.serving_ms = Some(started);
            takeover.recovery_ms = Some(started.saturating_sub(takeover.lease_expired_ms));
            takeover.state = "running".into();
            if let Err(error) = record(node, takeover) {
                tracing::info!("recording a takeover: {error:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(failover_to: &[&str]) -> PlanSpec {
        PlanSpec {
            deployment: "d1".into(),
            image_id: "00".into(),
            image_name: "httpd".into(),
            replicas: 1,
            memory_mib: 32,
            vcpus: 1,
            args: Vec::new(),
            restart: rack_api::RestartWhen::Always,
            failover_to: failover_to.iter().map(|s| (*s).to_owned()).collect(),
            has_volume: false,
        }
    }

    #[test]
    fn the_first_rack_that_is_up_takes_over() {
        let p = plan(&["b", "c"]);
        assert_eq!(successor(&p, "a", "b", |_| true), Some("b"));
        assert_eq!(successor(&p, "a", "c", |r| r == "b"), Some("b"), "c leaves it to b, which is up");
        assert_eq!(successor(&p, "a", "c", |_| false), Some("c"), "b is down too, so c takes it");
        assert_eq!(successor(&plan(&["a", "c"]), "a", "c", |_| false), Some("c"), "the down rack is skipped");
        assert_eq!(successor(&plan(&["b"]), "a", "c", |_| false), None, "c is not in the list");
    }
}
