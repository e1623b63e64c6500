//! Deployments as things an operator acts on: finding one by id (`d3`) or by its image's name,
//! and scaling it to a number of replicas.

use std::collections::HashMap;

use rack_api::{DeployRequest, Deployment, DeploymentStatus, InstanceState};

use super::{Rack, RackError, Result, deployments::place, deployments_by_id, images_by_id, instance_view};
use crate::{
    clock::now_ms,
    store::{InstanceRecord, StateStore},
};

/// The deployment `reference` names: its id, or the name of its image when only one deployment
/// runs that image.
pub fn find_deployment(store: &dyn StateStore, reference: &str) -> Result<Deployment> {
    let deployments = store.deployments()?;
    if let Some(d) = deployments.iter().find(|d| d.id == reference) {
        return Ok(d.clone());
    }
    let named: Vec<&Deployment> = deployments.iter().filter(|d| d.image_name == reference).collect();
    match named.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(RackError::not_found(
            format!("there is no instance or deployment named {reference:?}"),
            if deployments.is_empty() {
                "the rack runs nothing yet: `rack-manager deploy IMAGE`".to_owned()
            } else {
                let names: Vec<String> = deployments.iter().map(|d| format!("{} ({})", d.id, d.image_name)).collect();
                format!("the deployments are {}; instances are listed by `rack-manager ps -a`", names.join(", "))
            },
        )),
        several => Err(RackError::invalid(
            format!(
                "{reference:?} names {} deployments: {}",
                several.len(),
                several.iter().map(|d| d.id.as_str()).collect::<Vec<_>>().join(", ")
            ),
            "name one by its id (the DEPLOYMENT column of `rack-manager ps -a`)",
        )),
    }
}

fn status(store: &dyn StateStore, deployment: Deployment) -> Result<DeploymentStatus> {
    let deployments = HashMap::from([(deployment.id.clone(), deployment.clone())]);
    let images = images_by_id(store)?;
    let instances = store
        .instances()?
        .iter()
        .filter(|i| i.deployment == deployment.id)
        .map(|i| instance_view(i, &deployments, &images))
        .collect();
    Ok(DeploymentStatus { deployment, instances })
}

/// The number in an instance id (`httpd-12` → 12): newer instances have larger ones.
fn sequence(id: &str) -> u64 {
    id.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

impl Rack {
    /// A deployment (by id or image name) and its instances.
    pub fn deployment(&self, reference: &str) -> Result<DeploymentStatus> {
        let store = self.store();
        let deployment = find_deployment(&**store, reference)?;
        status(&**store, deployment)
    }

    /// Every deployment with its instances.
    pub fn deployments(&self) -> Result<Vec<DeploymentStatus>> {
        let store = self.store();
        let all = deployments_by_id(&**store)?;
        let mut list: Vec<Deployment> = all.into_values().collect();
        list.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        list.into_iter().map(|d| status(&**store, d)).collect()
    }

    /// Runs exactly `replicas` instances of a deployment: new ones are placed like a deploy's
    /// (spread over the hosts that can run the image); surplus ones, those not running first
    /// and then the newest, are stopped and removed.
    pub fn scale(&self, reference: &str, replicas: u32) -> Result<DeploymentStatus> {
        if replicas == 0 {
            return Err(RackError::invalid(
                "a deployment cannot be scaled to 0 replicas",
                format!("to remove it: `rack-manager rm {reference}`; to pause it: `rack-manager stop {reference}`"),
            ));
        }
        self.require_scheduler()?;
        let surplus: Vec<String> = {
            // Placement, ids and the records are one critical section, as in deploy.
            let mut store = self.store();
            let deployment = find_deployment(&**store, reference)?;
            let mut mine: Vec<InstanceRecord> =
                store.instances()?.into_iter().filter(|i| i.deployment == deployment.id).collect();
            let have = mine.len() as u32;
            if replicas > have {
                let request = DeployRequest {
                    image: deployment.image_id.clone(),
                    replicas: replicas - have,
                    memory_mib: Some(deployment.memory_mib),
                    vcpus: Some(deployment.vcpus),
                    args: Some(deployment.args.clone()),
                    restart: Some(deployment.restart.when),
                    arch: None,
                    platform: None,
                    on_demand: deployment.on_demand,
                };
                let placed = place(&**store, &request)?;
                let now = now_ms();
                let mut records = Vec::new();
                for host in &placed.plan.hosts {
                    let id = format!("{}-{}", deployment.image_name, store.next_sequence("instance")?);
                    records.push(InstanceRecord::pending(
                        id,
                        deployment.id.clone(),
                        host.clone(),
                        placed.memory_mib,
                        now,
                    ));
                }
                store.add_instances(&deployment.id, &records)?;
                tracing::info!(deployment = %deployment.id, added = records.len(), hosts = %super::deployments::spread(&placed.plan.hosts), "scaled up");
            }
            // Not running first, then the newest.
            mine.sort_by_key(|i| (i.state == InstanceState::Running, std::cmp::Reverse(sequence(&i.id))));
            mine.into_iter().take(have.saturating_sub(replicas) as usize).map(|i| i.id).collect()
        };
        for id in &surplus {
            self.remove_instance(id)?;
        }
        if !surplus.is_empty() {
            tracing::info!(deployment = reference, removed = ?surplus, "scaled down");
        }
        self.wake();
        let store = self.store();
        let deployment = find_deployment(&**store, reference)?;
        status(&**store, deployment)
    }
}
