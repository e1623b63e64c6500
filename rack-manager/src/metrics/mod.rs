//! `GET /metrics`: the rack in the Prometheus text format (OpenMetrics, via the
//! `prometheus-client` crate), for a read-only token ([`crate::credentials::scope_allows`]).
//!
//! Each scrape builds its registry afresh from the rack's state (hosts, instances, resource use,
//! replication, peers and failover), so nothing is kept between scrapes but the API's own
//! request counters and latencies ([`api`]). Series per instance carry `instance`,
//! `deployment` and `host` labels; a removed instance's series disappear with it. The names and
//! their meaning are in docs/dashboard.md ("Metrics").

pub mod agent;
pub mod api;

use std::sync::Arc;

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use rack_api::{Host, Instance, InstanceState, Stats};

use crate::{clock::now_ms, peer::Node, rack::Rack};

/// The content type Prometheus asks for and gets.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;
type IntGauges = Family<Labels, Gauge>;
type FloatGauges = Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>;

/// Deploy → first start, in seconds: simulated and tender instances start in milliseconds,
/// QEMU under TCG in a fraction of a second, a cold image fetch in seconds.
const START_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Everything a scrape reports, read before anything is encoded (no lock held while encoding).
pub struct Snapshot {
    pub hosts: Vec<Host>,
    pub instances: Vec<Instance>,
    pub stats: Stats,
    pub replication: Option<rack_api::replication::ReplicationStatus>,
    pub peers: Vec<rack_api::peers::PeerView>,
    pub takeovers: Vec<rack_api::peers::Takeover>,
    pub power: Option<rack_api::power::RackPower>,
}

impl Snapshot {
    pub fn read(rack: &Rack, peer: Option<&Arc<Node>>) -> crate::rack::Result<Snapshot> {
        let stats = rack.stats()?;
        let hosts = rack.hosts()?;
        let instances = rack.instances(true)?;
        let deployments = rack.store().deployments()?;
        // From what was just read: a second pass over the store would double a scrape's cost.
        let power = rack.power.report(&hosts, &instances, &stats, &deployments);
        Ok(Snapshot {
            power: Some(power),
            hosts,
            instances,
            stats,
            replication: rack.replication.status().ok(),
            peers: peer.map(|n| crate::daemon::peers_api::peers(n)).unwrap_or_default(),
            takeovers: peer.map(|n| n.takeovers().clone()).unwrap_or_default(),
        })
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// The manager's whole scrape, as text.
pub fn render(snapshot: &Snapshot) -> String {
    let mut registry = Registry::with_prefix("mast");
    hosts(&mut registry, &snapshot.hosts);
    instances(&mut registry, &snapshot.instances, &snapshot.stats);
    if let Some(status) = &snapshot.replication {
        replication(&mut registry, status);
    }
    peers(&mut registry, &snapshot.peers, &snapshot.takeovers);
    if let Some(report) = &snapshot.power {
        power(&mut registry, report);
    }
    api::register(&mut registry);
    let mut text = String::with_capacity(256 * (snapshot.instances.len() + 64));
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

fn hosts(registry: &mut Registry, hosts: &[Host]) {
    let memory = IntGauges::default();
    let memory_used = IntGauges::default();
    let vcpus = IntGauges::default();
    let instances = IntGauges::default();
    let state = IntGauges::default();
    for host in hosts {
        let name = labels(&[("host", &host.name)]);
        memory.get_or_create(&name).set(gauge(host.memory_mib << 20));
        memory_used.get_or_create(&name).set(gauge(host.memory_used_mib << 20));
        vcpus.get_or_create(&name).set(i64::from(host.vcpus));
        instances.get_or_create(&name).set(i64::from(host.instances));
        for s in [rack_api::HostState::Ready, rack_api::HostState::Draining, rack_api::HostState::Unreachable] {
            state
                .get_or_create(&labels(&[("host", &host.name), ("state", s.as_str())]))
                .set(i64::from(host.state == s));
        }
    }
    registry.register_with_unit("host_memory", "Memory a host offers to instances", Unit::Bytes, memory);
    registry.register_with_unit("host_memory_used", "Memory its instances reserve", Unit::Bytes, memory_used);
    registry.register("host_vcpus", "Virtual CPUs a host offers", vcpus);
    registry.register("host_instances", "Instances placed on a host (any state but removed)", instances);
    registry.register("host_state", "1 for the host's state (ready, draining, unreachable)", state);
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn instances(registry: &mut Registry, instances: &[Instance], stats: &Stats) {
    let by_state = IntGauges::default();
    let info = IntGauges::default();
    let restarts = Family::<Labels, Counter>::default();
    let exit = IntGauges::default();
    let cpu = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    let rss = IntGauges::default();
    let uptime = FloatGauges::default();
    let start = Histogram::new(START_BUCKETS);
    let wakes = Family::<Labels, Counter>::default();
    let awake = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    let gate_state = IntGauges::default();
    let now = now_ms();
    // Every (deployment, state) pair is reported, zeros included, so a query for a state that
    // has no instance yet finds a 0 rather than nothing.
    let mut deployments: Vec<&str> = instances.iter().map(|i| i.deployment.as_str()).collect();
    deployments.sort_unstable();
    deployments.dedup();
    for deployment in &deployments {
        for state in STATES {
            by_state.get_or_create(&labels(&[("deployment", deployment), ("state", state.as_str())])).set(0);
        }
    }
    for i in instances {
        let id = labels(&[("instance", &i.id), ("deployment", &i.deployment), ("host", &i.host)]);
        by_state.get_or_create(&labels(&[("deployment", &i.deployment), ("state", i.state.as_str())])).inc();
        info.get_or_create(&labels(&[
            ("instance", &i.id),
            ("deployment", &i.deployment),
            ("image", &i.image_name),
            ("host", &i.host),
            ("state", i.state.as_str()),
        ]))
        .set(1);
        restarts.get_or_create(&id).inc_by(u64::from(i.restarts));
        if let Some(status) = i.exit_status {
            exit.get_or_create(&id).set(i64::from(status));
        }
        if let (InstanceState::Running, Some(started)) = (i.state, i.started_ms) {
            uptime.get_or_create(&id).set(now.saturating_sub(started) as f64 / 1000.0);
        }
        if let Some(started) = i.started_ms.filter(|_| i.restarts == 0) {
            start.observe(started.saturating_sub(i.created_ms) as f64 / 1000.0);
        }
        // On-demand instances: each wake, the time awake, and whether the gate sleeps now.
        if let Some(gate) = &i.gate {
            wakes.get_or_create(&id).inc_by(gate.wakes);
            awake.get_or_create(&id).inc_by(gate.awake_ms as f64 / 1000.0);
            gate_state
                .get_or_create(&labels(&[
                    ("instance", &i.id),
                    ("deployment", &i.deployment),
                    ("host", &i.host),
                    ("state", gate.state.as_str()),
                ]))
                .set(1);
        }
    }
    let deployments: std::collections::HashMap<&str, &str> =
        instances.iter().map(|i| (i.id.as_str(), i.deployment.as_str())).collect();
    let deployment_of = |id: &str| deployments.get(id).copied();
    for s in &stats.instances {
        let id = labels(&[("instance", &s.id), ("deployment", deployment_of(&s.id).unwrap_or("")), ("host", &s.host)]);
        if let Some(ms) = s.cpu_ms {
            cpu.get_or_create(&id).inc_by(ms as f64 / 1000.0);
        }
        if let Some(bytes) = s.rss_bytes {
            rss.get_or_create(&id).set(gauge(bytes));
        }
    }
    registry.register("instances", "Instances of a deployment in a state", by_state);
    registry.register("instance_info", "1 per instance, with its image, host and state", info);
    registry.register("instance_restarts", "Restarts of an instance since it was created", restarts);
    registry.register(
        "instance_exit_status",
        "The instance's last exit status (0 success, 101 panic, negative: killed by that signal)",
        exit,
    );
    registry.register_with_unit("instance_cpu", "CPU time of the instance's current run", Unit::Seconds, cpu);
    registry.register_with_unit("instance_resident_memory", "Resident memory of the instance's VM", Unit::Bytes, rss);
    registry.register_with_unit(
        "instance_uptime",
        "Time since the running instance's run started",
        Unit::Seconds,
        uptime,
    );
    registry.register("instance_wakes", "Wakes of an on-demand instance since its gate opened", wakes);
    registry.register_with_unit("instance_awake", "Time an on-demand instance's appliance ran", Unit::Seconds, awake);
    registry.register(
        "instance_gate_state",
        "1 for an on-demand instance's gate state (asleep, waking, running)",
        gate_state,
    );
    registry.register_with_unit(
        "instance_start_latency",
        "From deploy to the first start, over the instances that never restarted",
        Unit::Seconds,
        start,
    );
}

const STATES: [InstanceState; 6] = [
    InstanceState::Pending,
    InstanceState::Running,
    InstanceState::Backoff,
    InstanceState::Exited,
    InstanceState::Failed,
    InstanceState::Stopped,
];

fn replication(registry: &mut Registry, status: &rack_api::replication::ReplicationStatus) {
    let behind = IntGauges::default();
    let lag = FloatGauges::default();
    for image in &status.images {
        let l = labels(&[("kind", "image"), ("name", &image.name), ("id", rack_api::short_id(&image.id))]);
        behind.get_or_create(&l).set(gauge(image.behind_bytes));
    }
    for volume in &status.volumes {
        let l = labels(&[("kind", "volume"), ("name", &volume.name), ("id", "")]);
        behind.get_or_create(&l).set(gauge(volume.behind_bytes));
        if let Some(ms) = volume.lag_ms {
            lag.get_or_create(&l).set(ms as f64 / 1000.0);
        }
    }
    registry.register_with_unit(
        "replication_behind",
        "Bytes of an image or volume not yet where replication takes them",
        Unit::Bytes,
        behind,
    );
    registry.register_with_unit(
        "replication_lag",
        "Age of the newest volume snapshot every remote holds",
        Unit::Seconds,
        lag,
    );
}

fn power(registry: &mut Registry, report: &rack_api::power::RackPower) {
    let host_watts = FloatGauges::default();
    let host_worst = FloatGauges::default();
    let host_budget = FloatGauges::default();
    let busy = FloatGauges::default();
    for h in &report.hosts {
        let l = labels(&[("host", &h.host)]);
        host_watts.get_or_create(&l).set(h.watts);
        host_worst.get_or_create(&l).set(h.worst_case_w);
        busy.get_or_create(&l).set(h.busy_cores);
        if let Some(budget) = h.model.budget_w {
            host_budget.get_or_create(&l).set(budget);
        }
    }
    let energy = FloatGauges::default();
    let deployment_watts = FloatGauges::default();
    for d in &report.deployments {
        let l = labels(&[("deployment", &d.deployment), ("image", &d.image_name)]);
        energy.get_or_create(&l).set(d.wh);
        deployment_watts.get_or_create(&l).set(d.watts);
    }
    let rack = FloatGauges::default();
    rack.get_or_create(&Vec::new()).set(report.watts);
    let rack_worst = FloatGauges::default();
    rack_worst.get_or_create(&Vec::new()).set(report.worst_case_w);
    let watts = Unit::Other("watts".into());
    registry.register_with_unit(
        "host_power",
        "Estimated draw of a host now (idle + busy cores)",
        watts.clone(),
        host_watts,
    );
    registry.register_with_unit(
        "host_power_worst_case",
        "A host's draw if every reserved vCPU were busy",
        watts.clone(),
        host_worst,
    );
    registry.register_with_unit("host_power_budget", "A host's power budget", watts.clone(), host_budget);
    registry.register("host_busy_cores", "Cores a host's instances keep busy", busy);
    registry.register_with_unit("rack_power", "Estimated draw of the whole rack now", watts.clone(), rack);
    registry.register_with_unit(
        "rack_power_worst_case",
        "The rack's draw if every reserved vCPU were busy",
        watts.clone(),
        rack_worst,
    );
    if let Some(budget) = report.budget_w {
        let g = FloatGauges::default();
        g.get_or_create(&Vec::new()).set(budget);
        registry.register_with_unit("rack_power_budget", "serve --power-budget-w", watts.clone(), g);
    }
    registry.register_with_unit("deployment_power", "A deployment's share of the draw now", watts, deployment_watts);
    registry.register_with_unit(
        "deployment_energy",
        "Energy of a deployment's CPU time in its instances' current runs",
        Unit::Other("watt_hours".into()),
        energy,
    );
}

fn peers(registry: &mut Registry, peers: &[rack_api::peers::PeerView], takeovers: &[rack_api::peers::Takeover]) {
    let up = IntGauges::default();
    let reachable = IntGauges::default();
    let fetched = Family::<Labels, Counter>::default();
    let taken = IntGauges::default();
    for p in peers {
        let l = labels(&[("peer", &p.name)]);
        up.get_or_create(&l).set(i64::from(p.up));
        reachable.get_or_create(&l).set(i64::from(p.reachable));
        fetched.get_or_create(&l).inc_by(p.bytes_fetched + p.volume_bytes_fetched);
        taken.get_or_create(&l).set(0);
    }
    for t in takeovers.iter().filter(|t| t.local_deployment.is_some()) {
        taken.get_or_create(&labels(&[("peer", &t.peer)])).inc();
    }
    registry.register("peer_up", "1 while the peer's heartbeat is within its lease", up);
    registry.register("peer_reachable", "1 if the peer answered this rack's last heartbeat", reachable);
    registry.register_with_unit("peer_fetched", "Image and volume bytes fetched from the peer", Unit::Bytes, fetched);
    registry.register("failover_takeovers", "Deployments of a down peer this rack runs now", taken);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, state: InstanceState, restarts: u32) -> Instance {
        Instance {
            id: id.into(),
            deployment: "d1".into(),
            image_name: "hello".into(),
            image_id: "ab".repeat(32),
            arch: "x86_64".into(),
            platform: "qemu".into(),
            gate: None,
            host: "h1".into(),
            desired: rack_api::Desired::Running,
            state,
            pid: None,
            restarts,
            exit_status: (state == InstanceState::Exited).then_some(3),
            ports: Vec::new(),
            memory_mib: 16,
            created_ms: 1000,
            started_ms: Some(1040),
            message: None,
        }
    }

    #[test]
    fn a_scrape_names_each_instance_and_counts_states() {
        let snapshot = Snapshot {
            hosts: Vec::new(),
            instances: vec![
                instance("hello-1", InstanceState::Running, 0),
                instance("hello-2", InstanceState::Exited, 2),
                Instance {
                    gate: Some(rack_api::GateStatus {
                        state: rack_api::GateState::Asleep,
                        awake_instances: 0,
                        wakes: 4,
                        last_wake_us: Some(9000),
                        idle_ms: Some(60_000),
                        cpu_ms: 120,
                        awake_ms: 2500,
                    }),
                    ..instance("httpd-3", InstanceState::Running, 0)
                },
            ],
            stats: Stats {
                instances: vec![rack_api::InstanceStats {
                    id: "hello-1".into(),
                    host: "h1".into(),
                    state: InstanceState::Running,
                    pid: Some(7),
                    cpu_ms: Some(1500),
                    cpu_percent: None,
                    rss_bytes: Some(4096),
                    awake_ms: None,
                }],
                power: None,
            },
            replication: None,
            peers: Vec::new(),
            takeovers: Vec::new(),
            power: None,
        };
        let text = render(&snapshot);
        assert!(text.contains(r#"mast_instances{deployment="d1",state="running"} 2"#), "{text}");
        assert!(text.contains(r#"mast_instances{deployment="d1",state="failed"} 0"#), "{text}");
        assert!(text.contains(r#"mast_instance_restarts_total{instance="hello-2",deployment="d1",host="h1"} 2"#));
        assert!(text.contains(r#"mast_instance_cpu_seconds_total{instance="hello-1",deployment="d1",host="h1"} 1.5"#));
        assert!(text.contains(r#"mast_instance_exit_status{instance="hello-2",deployment="d1",host="h1"} 3"#));
        assert!(text.contains("mast_instance_start_latency_seconds_count 2"), "two never restarted: {text}");
        assert!(
            text.contains(r#"mast_instance_wakes_total{instance="httpd-3",deployment="d1",host="h1"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"mast_instance_awake_seconds_total{instance="httpd-3",deployment="d1",host="h1"} 2.5"#)
        );
        assert!(
            text.contains(r#"mast_instance_gate_state{instance="httpd-3",deployment="d1",host="h1",state="asleep"} 1"#)
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
