//! Property tests: random clusters and random sequences of placements, removals and drains never
//! overfill a host, never break a constraint or anti-affinity, account for every request, give
//! reasons that are true, and never fail a request that some host could take.

use std::collections::{BTreeMap, HashSet};

use placement::{
    Arch, Capacity, Cluster, Device, DeviceSet, Heuristic, Host, HostId, InstanceId, InstanceRequest, LabelConstraint,
    PowerModel, Resources, Unplaceable,
};
use proptest::prelude::*;

fn arb_host() -> impl Strategy<Value = Host> {
    (
        prop_oneof![3 => Just(Arch::Aarch64), 1 => Just(Arch::X86_64)],
        (128u32..2048, 200u32..4000, 1u32..8),
        (0u32..20_000, 0u32..40_000),
        (0usize..3, any::<bool>(), prop::bool::weighted(0.7)),
    )
        .prop_map(|(arch, (memory_mib, millicores, max_instances), (active_mw, spare_mw), (zone, gpu, block))| {
            let mut labels = BTreeMap::new();
            if zone > 0 {
                labels.insert("zone".to_owned(), if zone == 1 { "a" } else { "b" }.to_owned());
            }
            if gpu {
                labels.insert("gpu".to_owned(), "true".to_owned());
            }
            let devices = if block { vec![Device::Net, Device::Block] } else { vec![Device::Net] };
            Host {
                id: HostId(String::new()),
                arch,
                capacity: Capacity { memory_mib, millicores, max_instances },
                power: PowerModel { budget_mw: active_mw + spare_mw, active_mw, sleep_mw: 1000 },
                labels,
                devices: DeviceSet::of(&devices),
            }
        })
}

fn arb_hosts() -> impl Strategy<Value = Vec<Host>> {
    prop::collection::vec(arb_host(), 1..7).prop_map(|hosts| {
        hosts.into_iter().enumerate().map(|(i, h)| Host { id: HostId(format!("h{i}")), ..h }).collect()
    })
}

/// A request without its id (the runner numbers them).
#[derive(Debug, Clone)]
struct Spec {
    arch: Arch,
    demand: Resources,
    group: u8,
    block: bool,
    constraint: Option<&'static str>,
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![4 => Just(Arch::Aarch64), 1 => Just(Arch::X86_64)],
        (16u32..700, 1u32..1500, 0u32..15_000),
        0u8..6,
        prop::bool::weighted(0.2),
        prop_oneof![
            4 => Just(None),
            1 => Just(Some("zone=a")),
            1 => Just(Some("zone=b")),
            1 => Just(Some("!gpu")),
            1 => Just(Some("gpu")),
            1 => Just(Some("zone!=a")),
        ],
    )
        .prop_map(|(arch, (memory_mib, millicores, milliwatts), group, block, constraint)| Spec {
            arch,
            demand: Resources { memory_mib, millicores, milliwatts },
            group,
            block,
            constraint,
        })
}

impl Spec {
    fn request(&self, id: u64) -> InstanceRequest {
        let mut r = InstanceRequest::new(id, &format!("g{}", self.group), self.arch, self.demand)
            .with_devices(if self.block { &[Device::Net, Device::Block] } else { &[Device::Net] });
        if let Some(c) = self.constraint {
            r = r.with_constraint(c.parse::<LabelConstraint>().expect("valid"));
        }
        r
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A batch; `reuse` re-sends an id that may already be placed.
    Place {
        specs: Vec<Spec>,
        heuristic: usize,
        reuse: bool,
    },
    Remove(usize),
    Drain(usize),
    Uncordon(usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop::collection::vec(arb_spec(), 0..25), 0usize..3, prop::bool::weighted(0.1))
            .prop_map(|(specs, heuristic, reuse)| Op::Place { specs, heuristic, reuse }),
        2 => any::<usize>().prop_map(Op::Remove),
        1 => any::<usize>().prop_map(Op::Drain),
        1 => any::<usize>().prop_map(Op::Uncordon),
    ]
}

/// Whether `host` could take `request` now: schedulable, eligible, room in every dimension, no
/// replica of its group. Written from the public API only, independently of the engine.
fn could_take(c: &Cluster, host: &HostId, request: &InstanceRequest) -> bool {
    let view = c.host(host).expect("member");
    let h = view.host;
    !view.cordoned
        && request.eligible_on(h)
        && view.used.memory_mib + request.demand.memory_mib <= h.capacity.memory_mib
        && view.used.millicores + request.demand.millicores <= h.capacity.millicores
        && view.used.milliwatts + request.demand.milliwatts <= h.power.for_instances_mw()
        && view.instances < h.capacity.max_instances
        && c.instances_on(host).expect("member").all(|r| r.group != request.group)
}

/// The invariants that hold after every operation.
fn check(c: &Cluster) -> Result<(), TestCaseError> {
    let mut seen = HashSet::new();
    for view in c.hosts() {
        let h = view.host;
        let on_host: Vec<&InstanceRequest> = c.instances_on(&h.id).expect("member").collect();
        let memory: u32 = on_host.iter().map(|r| r.demand.memory_mib).sum();
        let millicores: u32 = on_host.iter().map(|r| r.demand.millicores).sum();
        let milliwatts: u32 = on_host.iter().map(|r| r.demand.milliwatts).sum();
        prop_assert_eq!(
            (memory, millicores, milliwatts, on_host.len() as u32),
            (view.used.memory_mib, view.used.millicores, view.used.milliwatts, view.instances)
        );
        prop_assert!(memory <= h.capacity.memory_mib, "{}: memory {memory}", h.id);
        prop_assert!(millicores <= h.capacity.millicores, "{}: cpu {millicores}", h.id);
        prop_assert!(milliwatts <= h.power.for_instances_mw(), "{}: power {milliwatts}", h.id);
        prop_assert!(view.instances <= h.capacity.max_instances, "{}: {} instances", h.id, view.instances);
        let mut groups = HashSet::new();
        for r in &on_host {
            prop_assert!(r.eligible_on(h), "{} on {} breaks a constraint", r.id, h.id);
            prop_assert!(groups.insert(&r.group), "two replicas of {} on {}", r.group, h.id);
            prop_assert!(seen.insert(r.id), "{} twice", r.id);
            prop_assert_eq!(c.host_of(r.id), Some(&h.id));
        }
    }
    prop_assert_eq!(seen.len(), c.instance_count());
    Ok(())
}

/// Static reasons must be true of the cluster as it is.
fn check_static_reason(c: &Cluster, request: &InstanceRequest, reason: &Unplaceable) -> Result<(), TestCaseError> {
    let hosts: Vec<_> = c.hosts().collect();
    match reason {
        Unplaceable::NoArch { arch } => prop_assert!(hosts.iter().all(|v| v.host.arch != *arch)),
        Unplaceable::NoDevices { .. } => {
            prop_assert!(hosts.iter().all(|v| v.host.arch != request.arch || !v.host.devices.covers(request.devices)))
        }
        Unplaceable::NoLabels { .. } => prop_assert!(hosts.iter().all(|v| !request.eligible_on(v.host))),
        Unplaceable::Cordoned { hosts: n, .. } => {
            let eligible: Vec<_> = hosts.iter().filter(|v| request.eligible_on(v.host)).collect();
            prop_assert_eq!(eligible.len() as u32, *n);
            prop_assert!(eligible.iter().all(|v| v.cordoned));
        }
        _ => {}
    }
    Ok(())
}

fn run(hosts: Vec<Host>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut c = Cluster::new(hosts).expect("valid hosts");
    let host_ids: Vec<HostId> = c.hosts().map(|v| v.host.id.clone()).collect();
    let mut next_id = 0u64;
    for op in ops {
        match op {
            Op::Place { specs, heuristic, reuse } => {
                let mut batch: Vec<InstanceRequest> = specs
                    .iter()
                    .map(|s| {
                        next_id += 1;
                        s.request(next_id)
                    })
                    .collect();
                if reuse && let Some(first) = batch.first_mut() {
                    first.id = InstanceId(next_id / 2);
                }
                let heuristic = Heuristic::ALL[heuristic];
                let before = c.clone();
                let cordoned: HashSet<HostId> = c.hosts().filter(|v| v.cordoned).map(|v| v.host.id.clone()).collect();
                // Determinism, whatever the hash maps' seeds: a cluster rebuilt from its snapshot
                // plans the same.
                let rebuilt = Cluster::try_from(c.snapshot()).expect("a valid snapshot");
                let dry = rebuilt.plan(&batch, heuristic);
                let plan = c.place(batch.clone(), heuristic);
                prop_assert_eq!(&dry, &plan);
                prop_assert_eq!(plan.assignments.len() + plan.unplaced.len(), batch.len());
                // The hosts it says it woke were asleep and now run something.
                for h in &plan.woken {
                    prop_assert_eq!(before.host(h).map(|v| v.instances), Some(0));
                    prop_assert!(c.host(h).is_some_and(|v| v.instances > 0));
                }
                let woke =
                    c.hosts().filter(|v| v.instances > 0).count() - before.hosts().filter(|v| v.instances > 0).count();
                prop_assert_eq!(plan.woken.len(), woke);
                for a in &plan.assignments {
                    prop_assert_eq!(c.host_of(a.instance), Some(&a.host));
                    prop_assert!(!cordoned.contains(&a.host), "placed on cordoned {}", a.host);
                }
                // Both lists are in request order: merge them back.
                let (mut assigned, mut unplaced) = (plan.assignments.iter().peekable(), plan.unplaced.iter());
                for request in &batch {
                    if assigned.peek().is_some_and(|a| a.instance == request.id) {
                        assigned.next();
                        continue;
                    }
                    let u = unplaced.next().expect("every request is accounted for");
                    prop_assert_eq!(request.id, u.instance);
                    if let Unplaceable::Duplicate { .. } = u.reason {
                        let twice = batch.iter().filter(|r| r.id == request.id).count() > 1;
                        prop_assert!(before.host_of(request.id).is_some() || twice);
                    } else {
                        prop_assert!(before.host_of(request.id).is_none());
                        check_static_reason(&c, request, &u.reason)?;
                    }
                }
                // Single requests are placed whenever some host can take them.
                if batch.len() == 1 && !plan.unplaced.is_empty() {
                    let r = &batch[0];
                    if before.host_of(r.id).is_none() {
                        let feasible = host_ids.iter().any(|h| could_take(&before, h, r));
                        prop_assert!(
                            !feasible,
                            "{} refused ({}) but a host could take it",
                            r.id,
                            plan.unplaced[0].reason
                        );
                    }
                }
            }
            Op::Remove(pick) => {
                let ids: Vec<InstanceId> = c.placements().map(|(r, _)| r.id).collect();
                if !ids.is_empty() {
                    let id = ids[pick % ids.len()];
                    let count = c.instance_count();
                    let (request, _) = c.remove(id).expect("placed");
                    prop_assert_eq!(request.id, id);
                    prop_assert_eq!(c.instance_count(), count - 1);
                    prop_assert!(c.host_of(id).is_none());
                }
            }
            Op::Drain(pick) => {
                let host = &host_ids[pick % host_ids.len()];
                let count = c.instance_count();
                let drain = c.drain(host, Heuristic::default()).expect("member");
                prop_assert_eq!(c.instance_count(), count);
                prop_assert!(c.host(host).expect("member").cordoned);
                let left: HashSet<InstanceId> = c.instances_on(host).expect("member").map(|r| r.id).collect();
                let stayed: HashSet<InstanceId> = drain.stayed.iter().map(|u| u.instance).collect();
                prop_assert_eq!(left, stayed);
                for m in &drain.moves {
                    prop_assert_eq!(c.host_of(m.instance), Some(&m.to));
                    prop_assert_ne!(&m.to, host);
                }
            }
            Op::Uncordon(pick) => {
                c.set_cordoned(&host_ids[pick % host_ids.len()], false).expect("member");
            }
        }
        check(&c)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_every_invariant(hosts in arb_hosts(), ops in prop::collection::vec(arb_op(), 1..12)) {
        run(hosts, ops)?;
    }

    #[test]
    fn one_request_is_placed_whenever_a_host_can_take_it(
        hosts in arb_hosts(),
        load in prop::collection::vec(arb_spec(), 0..30),
        spec in arb_spec(),
        heuristic in 0usize..3,
    ) {
        let mut c = Cluster::new(hosts).expect("valid hosts");
        c.place(load.iter().enumerate().map(|(i, s)| s.request(i as u64)).collect(), Heuristic::ALL[heuristic]);
        let request = spec.request(1000);
        let feasible: Vec<HostId> = c.hosts().map(|v| v.host.id.clone()).filter(|h| could_take(&c, h, &request)).collect();
        let plan = c.place(vec![request.clone()], Heuristic::ALL[heuristic]);
        prop_assert_eq!(plan.assignments.len(), usize::from(!feasible.is_empty()), "{:?}", plan.unplaced);
        if let Some(a) = plan.assignments.first() {
            prop_assert!(feasible.contains(&a.host));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The generated workload at rack scale, with a drain and removals in between.
    #[test]
    fn realistic_workloads_keep_every_invariant(
        seed in any::<u64>(),
        count in 200usize..3000,
        drained in 0usize..16,
        heuristic in 0usize..3,
    ) {
        let heuristic = Heuristic::ALL[heuristic];
        let mut c = Cluster::new(placement::workload::rack(0)).expect("valid hosts");
        let requests = placement::workload::instances(seed, count);
        let (first, second) = requests.split_at(count / 2);
        c.place(first.to_vec(), heuristic);
        check(&c)?;
        let host = c.hosts().nth(drained).map(|v| v.host.id.clone()).expect("16 hosts");
        c.drain(&host, heuristic).expect("member");
        check(&c)?;
        for id in first.iter().step_by(3).map(|r| r.id) {
            let _ = c.remove(id);
        }
        c.set_cordoned(&host, false).expect("member");
        let plan = c.place(second.to_vec(), heuristic);
        prop_assert_eq!(plan.assignments.len() + plan.unplaced.len(), second.len());
        check(&c)?;
    }
}
