//! What the hosts last said about on-demand instances' gates (state, wakes, accounting), kept in
//! memory by the manager that reconciles, so `ps` shows it without asking any host (a frozen
//! agent must not slow `ps`). A standby manager of an etcd rack has none: its `ps` shows no gate
//! columns until it is elected.

use std::{collections::HashMap, sync::Mutex};

use rack_api::GateStatus;

/// The last report per instance id.
#[derive(Debug, Default)]
pub struct GateReports {
    reports: Mutex<HashMap<String, GateStatus>>,
}

impl GateReports {
    fn locked(&self) -> std::sync::MutexGuard<'_, HashMap<String, GateStatus>> {
        self.reports.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, instance: &str, status: GateStatus) {
        self.locked().insert(instance.to_owned(), status);
    }

    pub fn forget(&self, instance: &str) {
        self.locked().remove(instance);
    }

    pub fn get(&self, instance: &str) -> Option<GateStatus> {
        self.locked().get(instance).copied()
    }
}
