//! The simulated launcher: no VMs. A run "starts" instantly, "runs" until it is stopped, and uses
//! no CPU or memory, so one machine can stand in for thousands of hosts when testing placement,
//! the store and the reconciler at scale.
//!
//! Because nothing runs, there is nothing to lose in a daemon crash: a run it did not see stopped
//! is taken as still running, which is what adoption after a restart needs.

use std::{collections::HashSet, path::Path, sync::Mutex};

use images::Arch;
use rack_api::agent::{Launched, RunRef, RunState, RunStats};

use super::{LaunchError, LaunchSpec, Launcher};

#[derive(Debug, Default)]
pub struct SimLauncher {
    /// Runs stopped since this process started, by instance and log offset.
    stopped: Mutex<HashSet<(String, u64)>>,
    /// Launches so far, so each run gets its own "log offset" and is told apart from the last.
    launches: Mutex<u64>,
}

impl Launcher for SimLauncher {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn arches(&self) -> Vec<Arch> {
        Arch::ALL.to_vec()
    }

    fn launch(&self, _spec: &LaunchSpec) -> Result<Launched, LaunchError> {
        let mut launches = self.launches.lock().unwrap_or_else(|p| p.into_inner());
        *launches += 1;
        Ok(Launched { pid: None, start_ticks: None, log_offset: *launches, ports: Vec::new() })
    }

    fn state(&self, run: &RunRef, _log: &Path) -> RunState {
        let stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        if stopped.contains(&(run.instance.clone(), run.log_offset)) {
            RunState::Exited { status: None }
        } else {
            RunState::Running
        }
    }

    fn stop(&self, run: &RunRef) {
        self.stopped.lock().unwrap_or_else(|p| p.into_inner()).insert((run.instance.clone(), run.log_offset));
    }

    fn stats(&self, _run: &RunRef) -> Option<RunStats> {
        None
    }
}
