//! An agent's own `GET /metrics`: its host's capacity and the resource use of the runs it
//! launched, read from `/proc` at each scrape. Guarded by the read-only token given with
//! `agent --metrics-token-file` (or the manager's token for the agent).

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};
use rack_api::{JoinRequest, agent::RunStats};

type Labels = Vec<(&'static str, String)>;

pub fn render(host: &JoinRequest, runs: &[(String, RunStats)]) -> String {
    let mut registry = Registry::with_prefix("mast_agent");
    let name: Labels = vec![("host", host.name.clone())];
    let memory = Family::<Labels, Gauge>::default();
    memory.get_or_create(&name).set(i64::try_from(host.memory_mib << 20).unwrap_or(i64::MAX));
    let vcpus = Family::<Labels, Gauge>::default();
    vcpus.get_or_create(&name).set(i64::from(host.vcpus));
    let count = Family::<Labels, Gauge>::default();
    count.get_or_create(&name).set(i64::try_from(runs.len()).unwrap_or(i64::MAX));
    let cpu = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    let rss = Family::<Labels, Gauge>::default();
    for (instance, stats) in runs {
        let l: Labels = vec![("host", host.name.clone()), ("instance", instance.clone())];
        cpu.get_or_create(&l).inc_by(stats.cpu_ms as f64 / 1000.0);
        rss.get_or_create(&l).set(i64::try_from(stats.rss_bytes).unwrap_or(i64::MAX));
    }
    registry.register_with_unit("memory", "Memory this host offers to instances", Unit::Bytes, memory);
    registry.register("vcpus", "Virtual CPUs this host offers", vcpus);
    registry.register("runs", "Live runs this agent launched", count);
    registry.register_with_unit("run_cpu", "CPU time of a run's process", Unit::Seconds, cpu);
    registry.register_with_unit("run_resident_memory", "Resident memory of a run's process", Unit::Bytes, rss);
    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}
