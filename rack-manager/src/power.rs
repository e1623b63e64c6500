//! Power you can read ([`rack_api::power`] has the model and its terms): each host's model,
//! kept by the manager in `<data-dir>/power.json` (hosts without one use the documented
//! defaults), the rack's estimated draw and each deployment's energy, and the budget check
//! placement makes (`serve --power-budget-w`, a host's `budget=`).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Mutex, RwLock},
};

use rack_api::{
    Deployment, Host, Instance, InstanceState, Stats,
    power::{DeploymentEnergy, HostPower, PowerModel, RackPower},
};

/// The power models of the rack's hosts and the rack's budget.
#[derive(Debug)]
pub struct PowerBook {
    path: PathBuf,
    models: Mutex<HashMap<String, PowerModel>>,
    budget_w: RwLock<Option<f64>>,
}

/// What is reserved on the rack: each host's vCPUs of active instances.
pub type Reserved = HashMap<String, u32>;

impl PowerBook {
    pub fn open(path: PathBuf) -> PowerBook {
        // An unreadable file means defaults: the figures are estimates, never a reason to stop.
        let models =
            std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        PowerBook { path, models: Mutex::new(models), budget_w: RwLock::new(None) }
    }

    pub fn set_rack_budget(&self, budget_w: Option<f64>) {
        *self.budget_w.write().unwrap_or_else(|p| p.into_inner()) = budget_w;
    }

    pub fn rack_budget(&self) -> Option<f64> {
        *self.budget_w.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn model(&self, host: &str) -> PowerModel {
        self.models.lock().unwrap_or_else(|p| p.into_inner()).get(host).copied().unwrap_or_default()
    }

    /// Sets `host`'s model and writes the file.
    pub fn set(&self, host: &str, model: PowerModel) -> anyhow::Result<()> {
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        models.insert(host.to_owned(), model);
        let text = serde_json::to_string_pretty(&*models)?;
        crate::peer::write_atomically(&self.path, text.as_bytes())
    }

    /// The draw now and each deployment's energy, from the instances' CPU use in `stats`.
    pub fn report(
        &self,
        hosts: &[Host],
        instances: &[Instance],
        stats: &Stats,
        deployments: &[Deployment],
    ) -> RackPower {
        let reserved = reserved(instances, deployments);
        let mut busy: HashMap<&str, f64> = HashMap::new();
        let mut energy: HashMap<&str, (f64, f64, f64)> = HashMap::new();
        let deployment_of: HashMap<&str, &str> =
            instances.iter().map(|i| (i.id.as_str(), i.deployment.as_str())).collect();
        for s in stats.instances.iter().filter(|s| s.state == InstanceState::Running) {
            let cores = s.cpu_percent.unwrap_or(0.0) / 100.0;
            *busy.entry(s.host.as_str()).or_default() += cores;
            let core_w = self.model(&s.host).core_w;
            if let Some(deployment) = deployment_of.get(s.id.as_str()) {
                let e = energy.entry(deployment).or_default();
                let seconds = s.cpu_ms.unwrap_or(0) as f64 / 1000.0;
                e.0 += seconds;
                e.1 += seconds * core_w / 3600.0;
                e.2 += cores * core_w;
            }
        }
        let hosts: Vec<HostPower> = hosts
            .iter()
            .map(|h| {
                let model = self.model(&h.name);
                let busy_cores = busy.get(h.name.as_str()).copied().unwrap_or(0.0);
                HostPower {
                    host: h.name.clone(),
                    model,
                    busy_cores,
                    watts: model.idle_w + model.core_w * busy_cores,
                    worst_case_w: worst_case(model, reserved.get(&h.name).copied().unwrap_or(0)),
                }
            })
            .collect();
        let mut deployments: Vec<DeploymentEnergy> = deployments
            .iter()
            .map(|d| {
                let (cpu_seconds, wh, watts) = energy.get(d.id.as_str()).copied().unwrap_or_default();
                DeploymentEnergy { deployment: d.id.clone(), image_name: d.image_name.clone(), cpu_seconds, wh, watts }
            })
            .collect();
        deployments.sort_by(|a, b| a.deployment.cmp(&b.deployment));
        RackPower {
            watts: hosts.iter().map(|h| h.watts).sum(),
            worst_case_w: hosts.iter().map(|h| h.worst_case_w).sum(),
            budget_w: self.rack_budget(),
            hosts,
            deployments,
        }
    }

    /// Whether placing one instance of `vcpus` on each of `placed` keeps the rack and each host
    /// within budget in the worst case; the refusal says the numbers.
    pub fn check(&self, hosts: &[Host], reserved: &Reserved, placed: &[String], vcpus: u32) -> Result<(), String> {
        let mut added: HashMap<&str, u32> = HashMap::new();
        for host in placed {
            *added.entry(host.as_str()).or_default() += vcpus;
        }
        let mut before = 0.0;
        let mut after = 0.0;
        for h in hosts {
            let model = self.model(&h.name);
            let now = reserved.get(&h.name).copied().unwrap_or(0);
            let more = added.get(h.name.as_str()).copied().unwrap_or(0);
            let (was, will) = (worst_case(model, now), worst_case(model, now + more));
            before += was;
            after += will;
            if let Some(budget) = model.budget_w.filter(|b| more > 0 && will > *b) {
                return Err(format!(
                    "host {} would draw up to {will:.1} W (idle {:.1} W + {} reserved vCPUs × {:.1} W), over its budget of \
                     {budget:.1} W; it is at {was:.1} W now",
                    h.name,
                    model.idle_w,
                    now + more,
                    model.core_w
                ));
            }
        }
        if let Some(budget) = self.rack_budget().filter(|b| after > *b) {
            return Err(format!(
                "{} replica(s) of {vcpus} vCPU(s) would raise the rack's worst-case draw from {before:.1} W to {after:.1} W, \
                 over its budget of {budget:.1} W (serve --power-budget-w)",
                placed.len()
            ));
        }
        Ok(())
    }
}

/// A host's draw with `vcpus` reserved vCPUs all busy.
fn worst_case(model: PowerModel, vcpus: u32) -> f64 {
    model.idle_w + model.core_w * f64::from(vcpus)
}

/// vCPUs reserved per host by instances that should run.
pub fn reserved(instances: &[Instance], deployments: &[Deployment]) -> Reserved {
    let vcpus: HashMap<&str, u32> = deployments.iter().map(|d| (d.id.as_str(), d.vcpus)).collect();
    let mut reserved = Reserved::new();
    for i in instances.iter().filter(|i| i.desired == rack_api::Desired::Running) {
        *reserved.entry(i.host.clone()).or_default() += vcpus.get(i.deployment.as_str()).copied().unwrap_or(1);
    }
    reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Host {
        Host {
            name: name.into(),
            address: None,
            launcher: "sim".into(),
            arches: vec![],
            memory_mib: 1024,
            vcpus: 64,
            state: rack_api::HostState::Ready,
            instances: 0,
            memory_used_mib: 0,
            vcpus_used: 0,
        }
    }

    #[test]
    fn budgets_refuse_with_the_numbers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let book = PowerBook::open(dir.path().join("power.json"));
        let hosts = [host("a"), host("b")];
        let reserved = Reserved::from([("a".to_owned(), 2)]);
        // Defaults: 20 W idle, 8 W per core. Now: 20+16 + 20 = 56 W.
        assert!(book.check(&hosts, &reserved, &["a".into(), "b".into()], 1).is_ok(), "no budget");
        book.set_rack_budget(Some(70.0));
        assert!(book.check(&hosts, &reserved, &["b".into()], 1).is_ok(), "64 W");
        let refusal = book.check(&hosts, &reserved, &["a".into(), "b".into()], 1).expect_err("72 W");
        assert!(refusal.contains("from 56.0 W to 72.0 W") && refusal.contains("70.0 W"), "{refusal}");
        book.set("b", "idle=10,core=5,budget=14".parse().expect("valid")).expect("saved");
        let refusal = book.check(&hosts, &reserved, &["b".into()], 1).expect_err("b: 15 W");
        assert!(refusal.contains("host b would draw up to 15.0 W"), "{refusal}");
        assert_eq!(PowerBook::open(dir.path().join("power.json")).model("b").idle_w, 10.0, "kept");
    }
}
