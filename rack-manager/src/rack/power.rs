//! The rack core's power operations: the report (`GET /v1/power`, `stats`, `/metrics`), setting
//! a host's model, and the budget check placement makes ([`crate::power`]).

use rack_api::{
    Stats,
    power::{PowerModel, RackPower},
};

use super::{Rack, RackError, Result, instance_view};
use crate::store::StateStore;

impl Rack {
    /// The draw now and each deployment's energy, with `stats` already read (`None`: read now).
    pub fn power(&self, stats: Option<&Stats>) -> Result<RackPower> {
        let read;
        let stats = match stats {
            Some(stats) => stats,
            None => {
                read = self.stats()?;
                &read
            }
        };
        let store = self.store();
        let hosts = super::hosts::hosts(&**store)?;
        let deployments = store.deployments()?;
        let by_id = deployments.iter().map(|d| (d.id.clone(), d.clone())).collect();
        let images = super::images_by_id(&**store)?;
        let instances: Vec<_> = store.instances()?.iter().map(|r| instance_view(r, &by_id, &images)).collect();
        drop(store);
        Ok(self.power.report(&hosts, &instances, stats, &deployments))
    }

    /// Sets host `name`'s power model (`host add --power`, `host power`).
    pub fn set_power(&self, name: &str, model: PowerModel) -> Result<PowerModel> {
        if !self.store().hosts()?.iter().any(|h| h.name == name) {
            return Err(RackError::not_found(format!("there is no host {name:?}"), "see `rack-manager host ls`"));
        }
        self.power.set(name, model).map_err(|e| RackError::internal(format!("saving the power model: {e:#}")))?;
        Ok(model)
    }

    /// Refuses placing one instance of `vcpus` on each of `placed` if a budget would be passed.
    pub(super) fn check_power(&self, store: &dyn StateStore, placed: &[String], vcpus: u32) -> Result<()> {
        let hosts = super::hosts::hosts(store)?;
        let deployments = store.deployments()?;
        let by_id = deployments.iter().map(|d| (d.id.clone(), d.clone())).collect();
        let images = super::images_by_id(store)?;
        let instances: Vec<_> = store.instances()?.iter().map(|r| instance_view(r, &by_id, &images)).collect();
        let reserved = crate::power::reserved(&instances, &deployments);
        self.power.check(&hosts, &reserved, placed, vcpus).map_err(|message| {
            RackError::refused(
                "power_budget",
                message,
                "stop or remove instances, deploy fewer replicas or vCPUs, or raise the budget \
                 (serve --power-budget-w, host power NAME budget=W)",
            )
        })
    }
}
