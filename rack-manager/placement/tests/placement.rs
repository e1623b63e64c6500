//! Placement through the public API, as the daemon uses it: each dimension and constraint, the
//! failure reasons, anti-affinity, incremental placement, removal, draining, determinism, and
//! the wire format.

use std::collections::BTreeMap;

use placement::{
    Arch, AssignError, Capacity, Cluster, Device, DeviceSet, GroupId, Heuristic, Host, HostError, HostId, InstanceId,
    InstanceRequest, PowerModel, RemoveHostError, Resources, Unplaceable, lower_bound, workload,
};

/// A host with plenty of everything unless a test says otherwise.
fn host(name: &str) -> Host {
    Host {
        id: name.into(),
        arch: Arch::Aarch64,
        capacity: Capacity { memory_mib: 1024, millicores: 4000, max_instances: 100 },
        power: PowerModel { budget_mw: 100_000, active_mw: 20_000, sleep_mw: 2_000 },
        labels: BTreeMap::new(),
        devices: DeviceSet::of(&[Device::Net]),
    }
}

fn label(mut h: Host, key: &str, value: &str) -> Host {
    h.labels.insert(key.to_owned(), value.to_owned());
    h
}

fn req(id: u64, group: &str, memory_mib: u32) -> InstanceRequest {
    InstanceRequest::new(id, group, Arch::Aarch64, Resources { memory_mib, millicores: 10, milliwatts: 100 })
}

fn cluster(hosts: Vec<Host>) -> Cluster {
    Cluster::new(hosts).expect("valid hosts")
}

fn host_of(c: &Cluster, id: u64) -> String {
    c.host_of(InstanceId(id)).map_or_else(|| "unplaced".to_owned(), |h| h.0.clone())
}

/// Places one request and returns its reason for failing (panics if it was placed).
fn failure(c: &mut Cluster, request: InstanceRequest) -> Unplaceable {
    let plan = c.place(vec![request], Heuristic::default());
    assert!(plan.assignments.is_empty(), "placed: {:?}", plan.assignments);
    plan.unplaced.into_iter().next().expect("one unplaced").reason
}

#[test]
fn memory_is_never_overcommitted() {
    let mut c = cluster(vec![host("a")]);
    let plan = c.place(vec![req(1, "x", 600), req(2, "y", 600)], Heuristic::default());
    assert_eq!(plan.assignments.len(), 1);
    let reason = &plan.unplaced[0].reason;
    assert_eq!(reason.to_string(), "no aarch64 host with 600 MiB free (the most free on one is 424 MiB)");
}

#[test]
fn cpu_shares_are_a_hard_limit() {
    let mut c = cluster(vec![host("a")]);
    let cpu = |id, millicores| {
        InstanceRequest::new(
            id,
            &format!("g{id}"),
            Arch::Aarch64,
            Resources { memory_mib: 16, millicores, milliwatts: 1 },
        )
    };
    assert_eq!(c.place(vec![cpu(1, 3000)], Heuristic::default()).assignments.len(), 1);
    let reason = failure(&mut c, cpu(2, 1500));
    assert_eq!(
        reason.to_string(),
        "no aarch64 host with 1500 millicores free (the most free on one is 1000 millicores)"
    );
    assert_eq!(c.place(vec![cpu(3, 1000)], Heuristic::default()).assignments.len(), 1, "exactly full is fine");
}

#[test]
fn the_power_budget_counts_the_hosts_own_draw() {
    // 100 W budget, 20 W awake: 80 W for instances.
    let mut c = cluster(vec![host("a")]);
    let watts = |id, w: u32| {
        InstanceRequest::new(
            id,
            &format!("g{id}"),
            Arch::Aarch64,
            Resources { memory_mib: 16, millicores: 1, milliwatts: w * 1000 },
        )
    };
    assert_eq!(c.place(vec![watts(1, 50)], Heuristic::default()).assignments.len(), 1);
    let reason = failure(&mut c, watts(2, 35));
    assert_eq!(reason.to_string(), "no aarch64 host with 35 W free (the most free on one is 30 W)");
    let stats = c.stats();
    assert_eq!(stats.estimated_draw_mw, 20_000 + 50_000, "awake base plus the instance");
}

#[test]
fn the_instance_cap_is_a_dimension() {
    let mut h = host("a");
    h.capacity.max_instances = 2;
    let mut c = cluster(vec![h]);
    let plan = c.place((1..=3).map(|i| req(i, &format!("g{i}"), 16)).collect(), Heuristic::default());
    assert_eq!(plan.assignments.len(), 2);
    assert_eq!(
        plan.unplaced[0].reason.to_string(),
        "no aarch64 host with an instance slot free (the most free on one is none)"
    );
}

#[test]
fn architecture_must_match() {
    let mut x86 = host("x");
    x86.arch = Arch::X86_64;
    let mut c = cluster(vec![host("arm")]);
    let mut request = req(1, "web", 64);
    request.arch = Arch::X86_64;
    let reason = failure(&mut c, request.clone());
    assert_eq!(reason, Unplaceable::NoArch { arch: Arch::X86_64 });
    assert_eq!(reason.to_string(), "no x86_64 host in the cluster");
    c.add_host(x86).expect("new host");
    c.place(vec![request], Heuristic::default());
    assert_eq!(host_of(&c, 1), "x");
}

#[test]
fn devices_must_be_offered() {
    let mut c = cluster(vec![host("net-only")]);
    let request = req(1, "db", 64).with_devices(&[Device::Net, Device::Block]);
    let reason = failure(&mut c, request.clone());
    assert_eq!(reason.to_string(), "no aarch64 host offers net and block");
    let mut with_block = host("disk");
    with_block.devices = DeviceSet::of(&[Device::Net, Device::Block]);
    c.add_host(with_block).expect("new host");
    c.place(vec![request], Heuristic::default());
    assert_eq!(host_of(&c, 1), "disk");
}

#[test]
fn label_constraints_select_and_avoid_hosts() {
    let mut c = cluster(vec![
        label(host("a1"), "zone", "a"),
        label(label(host("b-gpu"), "zone", "b"), "gpu", "true"),
        label(host("b"), "zone", "b"),
    ]);
    let with = |id, constraints: &[&str]| {
        constraints.iter().fold(req(id, &format!("g{id}"), 64), |r, c| r.with_constraint(c.parse().expect("valid")))
    };
    c.place(
        vec![with(1, &["zone=a"]), with(2, &["gpu"]), with(3, &["zone=b", "!gpu"]), with(4, &["zone!=b"])],
        Heuristic::default(),
    );
    assert_eq!([host_of(&c, 1), host_of(&c, 2), host_of(&c, 3), host_of(&c, 4)], ["a1", "b-gpu", "b", "a1"]);
    let reason = failure(&mut c, with(5, &["zone=c"]));
    assert_eq!(reason.to_string(), "no aarch64 host matching zone=c in the cluster");
    let reason = failure(&mut c, with(6, &["zone=a", "gpu"]).with_devices(&[Device::Net]));
    assert_eq!(reason.to_string(), "no aarch64 host offering net and matching zone=a, gpu in the cluster");
}

#[test]
fn replicas_never_share_a_host() {
    let mut c = cluster(vec![host("a"), host("b"), host("c")]);
    // One host could hold all four, but replicas spread; the fourth has nowhere to go.
    let plan = c.place((1..=4).map(|i| req(i, "web", 64)).collect(), Heuristic::default());
    assert_eq!(plan.assignments.len(), 3);
    let mut hosts: Vec<String> = (1..=3).map(|i| host_of(&c, i)).collect();
    hosts.sort();
    assert_eq!(hosts, ["a", "b", "c"]);
    let reason = &plan.unplaced[0].reason;
    assert_eq!(*reason, Unplaceable::AntiAffinity { group: GroupId::from("web"), hosts: 3 });
    assert_eq!(reason.to_string(), "anti-affinity: all 3 eligible hosts already run a replica of web");
    // Other groups still share hosts freely.
    c.place(vec![req(10, "api", 64), req(11, "db", 64)], Heuristic::default());
    assert_eq!(host_of(&c, 10), host_of(&c, 11));
}

#[test]
fn anti_affinity_counts_replicas_placed_by_earlier_batches() {
    let mut c = cluster(vec![host("a"), host("b")]);
    c.place(vec![req(1, "web", 64)], Heuristic::default());
    c.place(vec![req(2, "web", 64)], Heuristic::default());
    assert_ne!(host_of(&c, 1), host_of(&c, 2));
    let reason = failure(&mut c, req(3, "web", 64));
    assert_eq!(reason.to_string(), "anti-affinity: all 2 eligible hosts already run a replica of web");
    let mut single = cluster(vec![host("only")]);
    single.place(vec![req(1, "db", 64)], Heuristic::default());
    assert_eq!(
        failure(&mut single, req(2, "db", 64)).to_string(),
        "anti-affinity: the only eligible host already runs a replica of db"
    );
}

#[test]
fn room_split_across_hosts_is_reported_as_fragmented() {
    // `a` has memory but no CPU left, `b` CPU but no memory: each dimension is free somewhere.
    let mut c = cluster(vec![host("a"), host("b")]);
    let r = |id, memory_mib, millicores| {
        InstanceRequest::new(id, &format!("g{id}"), Arch::Aarch64, Resources { memory_mib, millicores, milliwatts: 1 })
    };
    c.assign(r(1, 100, 3900), &"a".into()).expect("fits");
    c.assign(r(2, 1000, 100), &"b".into()).expect("fits");
    let reason = failure(&mut c, r(3, 200, 200));
    assert!(matches!(reason, Unplaceable::Fragmented { .. }), "{reason:?}");
    assert_eq!(
        reason.to_string(),
        "no aarch64 host has 200 MiB, 200 millicores, 0.001 W and an instance slot free at once"
    );
}

#[test]
fn cordoned_hosts_receive_nothing() {
    let mut c = cluster(vec![label(host("a"), "zone", "a"), host("b")]);
    c.set_cordoned(&"a".into(), true).expect("known host");
    let reason = failure(&mut c, req(1, "g", 64).with_constraint("zone=a".parse().expect("valid")));
    assert_eq!(reason.to_string(), "the only aarch64 host matching zone=a is cordoned");
    c.place(vec![req(2, "h", 64)], Heuristic::default());
    assert_eq!(host_of(&c, 2), "b");
    c.set_cordoned(&"a".into(), false).expect("known host");
    c.place(vec![req(1, "g", 64).with_constraint("zone=a".parse().expect("valid"))], Heuristic::default());
    assert_eq!(host_of(&c, 1), "a");
    assert!(c.set_cordoned(&"nope".into(), true).is_err());
}

#[test]
fn duplicate_ids_are_refused() {
    let mut c = cluster(vec![host("a")]);
    let plan = c.place(vec![req(1, "x", 64), req(1, "y", 64)], Heuristic::default());
    assert_eq!(plan.assignments.len(), 1);
    assert_eq!(plan.unplaced[0].reason, Unplaceable::Duplicate { instance: InstanceId(1) });
    assert_eq!(c.request(InstanceId(1)).map(|r| r.group.0.as_str()), Some("x"), "the first one wins");
    let again = failure(&mut c, req(1, "z", 64));
    assert_eq!(again.to_string(), "instance 1 is already placed, or appears twice in the request");
}

#[test]
fn packs_onto_running_hosts_so_the_rest_sleep() {
    let mut c = cluster((0..4).map(|i| host(&format!("h{i}"))).collect());
    let plan = c.place((1..=10).map(|i| req(i, &format!("g{i}"), 32)).collect(), Heuristic::default());
    assert_eq!(plan.woken, [HostId::from("h0")]);
    assert!((1..=10).all(|i| host_of(&c, i) == "h0"));
    // A later batch fills the running host before waking another.
    let plan = c.place((11..=20).map(|i| req(i, &format!("g{i}"), 32)).collect(), Heuristic::default());
    assert!(plan.woken.is_empty());
    let stats = c.stats();
    assert_eq!((stats.active_hosts, stats.instances), (1, 20));
    assert_eq!(stats.estimated_draw_mw, 20_000 + 20 * 100 + 3 * 2_000, "one awake, three asleep");
    // Only when it is full does the next host wake.
    let plan = c.place(vec![req(21, "big", 800)], Heuristic::default());
    assert_eq!(plan.woken, [HostId::from("h1")]);
}

#[test]
fn best_fit_takes_the_running_host_with_the_least_room() {
    for heuristic in [Heuristic::BalancedBestFit, Heuristic::BestFitDecreasing] {
        let mut c = cluster(vec![host("roomy"), host("tight")]);
        c.assign(req(1, "a", 100), &"roomy".into()).expect("fits");
        c.assign(req(2, "b", 800), &"tight".into()).expect("fits");
        c.place(vec![req(3, "c", 100)], heuristic);
        assert_eq!(host_of(&c, 3), "tight", "{heuristic}");
        c.place(vec![req(4, "d", 200)], heuristic);
        assert_eq!(host_of(&c, 4), "roomy", "{heuristic}: 124 MiB left on tight");
    }
}

#[test]
fn wakes_the_smallest_host_that_fits() {
    let mut big = host("big");
    big.capacity.memory_mib = 4096;
    let mut small = host("small");
    small.capacity.memory_mib = 512;
    let mut c = cluster(vec![big, host("mid"), small]);
    c.place(vec![req(1, "a", 300)], Heuristic::default());
    assert_eq!(host_of(&c, 1), "small");
    let mut c2 = c.clone();
    c2.place(vec![req(2, "b", 600)], Heuristic::default());
    assert_eq!(host_of(&c2, 2), "mid", "does not fit on small; mid is smaller than big");
    c.place(vec![req(3, "c", 2000)], Heuristic::default());
    assert_eq!(host_of(&c, 3), "big");
}

#[test]
fn incremental_placement_and_removal() {
    let mut c = cluster(vec![host("a"), host("b")]);
    c.place(vec![req(1, "x", 600), req(2, "y", 300)], Heuristic::default());
    assert_eq!(c.stats().active_hosts, 1);
    let plan = c.place(vec![req(3, "z", 600)], Heuristic::default());
    assert_eq!(plan.woken, [HostId::from("b")]);
    assert_eq!(c.stats().active_hosts, 2);
    let (request, from) = c.remove(InstanceId(3)).expect("placed");
    assert_eq!((request.id, from.0.as_str()), (InstanceId(3), "b"));
    assert_eq!(c.stats().active_hosts, 1, "b sleeps again");
    assert_eq!(c.host(&"b".into()).map(|v| v.instances), Some(0));
    assert!(c.remove(InstanceId(3)).is_err());
    // The memory it used is free again.
    let (request, _) = c.remove(InstanceId(1)).expect("placed");
    c.place(vec![request], Heuristic::default());
    c.place(vec![req(4, "w", 100)], Heuristic::default());
    assert_eq!(c.stats().active_hosts, 1);
    assert_eq!(c.host(&"a".into()).map(|v| v.used.memory_mib), Some(1000));
}

#[test]
fn draining_moves_instances_elsewhere_and_respects_anti_affinity() {
    let mut c = cluster(vec![host("a"), host("b"), host("c")]);
    c.assign(req(1, "web", 300), &"a".into()).expect("fits");
    c.assign(req(2, "web", 300), &"b".into()).expect("fits");
    c.assign(req(3, "db", 300), &"a".into()).expect("fits");
    c.assign(req(4, "cache", 100), &"b".into()).expect("fits");
    let drain = c.drain(&"a".into(), Heuristic::default()).expect("known host");
    assert!(drain.stayed.is_empty(), "{:?}", drain.stayed);
    assert_eq!(drain.moves.len(), 2);
    // web's other replica is on b, so web goes to c; db packs next to it on the running b.
    assert_eq!(host_of(&c, 1), "c");
    assert_eq!(host_of(&c, 3), "b");
    assert_eq!(drain.woken, [HostId::from("c")]);
    let a = c.host(&"a".into()).expect("still a member");
    assert!(a.cordoned && a.instances == 0);
    // Nothing new lands on a drained host.
    c.place(vec![req(5, "new", 900)], Heuristic::default());
    assert_ne!(host_of(&c, 5), "a");
    assert!(c.drain(&"nope".into(), Heuristic::default()).is_err());
    let removed = c.remove_host(&"a".into()).expect("empty");
    assert_eq!(removed.id.0, "a");
    assert!(c.host_of(InstanceId(1)).is_some(), "indices were fixed up");
}

#[test]
fn draining_keeps_instances_that_fit_nowhere_else() {
    let mut c = cluster(vec![host("a"), host("b")]);
    c.assign(req(1, "web", 300), &"a".into()).expect("fits");
    c.assign(req(2, "web", 300), &"b".into()).expect("fits");
    c.assign(req(3, "big", 700), &"a".into()).expect("fits");
    c.assign(req(4, "filler", 400), &"b".into()).expect("fits");
    let drain = c.drain(&"a".into(), Heuristic::default()).expect("known host");
    assert!(drain.moves.is_empty());
    let reasons: Vec<String> = drain.stayed.iter().map(|u| u.reason.to_string()).collect();
    assert_eq!(
        reasons,
        [
            "anti-affinity: the only eligible host already runs a replica of web",
            "no aarch64 host with 700 MiB free (the most free on one is 324 MiB)",
        ]
    );
    assert_eq!((host_of(&c, 1), host_of(&c, 3)), ("a".to_owned(), "a".to_owned()));
    assert!(c.host(&"a".into()).expect("member").cordoned);
    assert_eq!(c.remove_host(&"a".into()), Err(RemoveHostError::NotEmpty { host: "a".into(), instances: 2 }));
}

#[test]
fn the_same_input_gives_the_same_plan() {
    for heuristic in Heuristic::ALL {
        let plans: Vec<String> = (0..2)
            .map(|_| {
                let mut c = cluster(workload::rack(0));
                let plan = c.place(workload::instances(7, 3000), heuristic);
                serde_json::to_string(&plan).expect("serialises")
            })
            .collect();
        assert_eq!(plans[0], plans[1], "{heuristic}");
    }
    let other_seed = cluster(workload::rack(0)).plan(&workload::instances(8, 3000), Heuristic::default());
    let seed_7 = cluster(workload::rack(0)).plan(&workload::instances(7, 3000), Heuristic::default());
    assert_ne!(other_seed, seed_7);
}

#[test]
fn plan_is_a_dry_run() {
    let mut c = cluster(workload::rack(0));
    let requests = workload::instances(3, 500);
    let before = c.stats();
    let dry = c.plan(&requests, Heuristic::default());
    assert_eq!(c.stats(), before);
    assert_eq!(c.instance_count(), 0);
    let real = c.place(requests, Heuristic::default());
    assert_eq!(dry, real);
}

#[test]
fn a_realistic_rack_fits_without_waste() {
    for seed in 1..=3 {
        let hosts = workload::rack(0);
        let requests = workload::instances(seed, 3000);
        let bound = lower_bound(&hosts, &requests);
        let mut c = cluster(hosts);
        let plan = c.place(requests, Heuristic::default());
        assert!(plan.unplaced.is_empty(), "seed {seed}: {:?}", plan.unplaced.first());
        let used = c.stats().active_hosts;
        assert!(u64::from(used) <= bound.hosts + 1, "seed {seed}: {used} hosts, bound {}", bound.hosts);
        assert_eq!(c.lower_bound(), bound);
    }
}

#[test]
fn a_hundred_thousand_instances_use_at_most_103_percent_of_the_bound() {
    let hosts = workload::racks(1000);
    let requests = workload::instances(1, 100_000);
    let bound = lower_bound(&hosts, &requests);
    let mut c = cluster(hosts);
    let plan = c.place(requests, Heuristic::default());
    assert!(plan.unplaced.is_empty());
    let used = u64::from(c.stats().active_hosts);
    assert!(used * 100 <= bound.hosts * 103, "{used} hosts, bound {}", bound.hosts);
    assert_eq!(plan.woken.len() as u64, used);
}

#[test]
fn assign_checks_every_constraint() {
    let mut c = cluster(vec![label(host("a"), "zone", "a")]);
    let x86 = InstanceRequest { arch: Arch::X86_64, ..req(1, "g", 64) };
    let errors = [
        (c.assign(req(1, "g", 64), &"nope".into()), "no host nope in the cluster"),
        (c.clone().assign(x86, &"a".into()), "instance 1 is x86_64 but host a is aarch64"),
        (
            c.clone().assign(req(1, "g", 64).with_devices(&[Device::Block]), &"a".into()),
            "instance 1 needs block but host a offers net",
        ),
        (
            c.clone().assign(req(1, "g", 64).with_constraint("zone=b".parse().expect("valid")), &"a".into()),
            "instance 1 requires `zone=b` which host a's labels do not satisfy",
        ),
        (
            c.clone().assign(req(1, "g", 2048), &"a".into()),
            "instance 1 needs 2048 MiB of memory but host a has 1024 MiB free",
        ),
    ];
    for (result, message) in errors {
        assert_eq!(result.map_err(|e| e.to_string()), Err(message.to_owned()));
    }
    c.assign(req(1, "g", 64), &"a".into()).expect("fits");
    assert_eq!(c.assign(req(1, "h", 64), &"a".into()), Err(AssignError::Duplicate(InstanceId(1))));
    assert_eq!(
        c.assign(req(2, "g", 64), &"a".into()).map_err(|e| e.to_string()),
        Err("anti-affinity: host a already runs a replica of g".to_owned())
    );
}

#[test]
fn hosts_are_validated() {
    let mut bad = host("a");
    bad.power.active_mw = 200_000;
    assert!(matches!(Cluster::new(vec![bad]), Err(HostError::PowerBudget { .. })));
    let mut c = cluster(vec![host("a")]);
    assert_eq!(c.add_host(host("a")), Err(HostError::Duplicate("a".into())));
    assert!(matches!(c.remove_host(&"b".into()), Err(RemoveHostError::Unknown(_))));
}

#[test]
fn the_cluster_round_trips_through_its_snapshot() {
    let mut c = cluster(workload::rack(0));
    c.place(workload::instances(5, 800), Heuristic::default());
    c.set_cordoned(&"r0-h3".into(), true).expect("known");
    let json = serde_json::to_string(&c).expect("serialises");
    let back: Cluster = serde_json::from_str(&json).expect("valid snapshot");
    assert_eq!(back.snapshot(), c.snapshot());
    assert_eq!(back.stats(), c.stats());
    // Placing onto the restored cluster gives what placing onto the original does.
    let more = workload::instances(6, 300).into_iter().map(|mut r| {
        r.id = InstanceId(r.id.0 + 10_000);
        r
    });
    let more: Vec<_> = more.collect();
    assert_eq!(back.plan(&more, Heuristic::default()), c.plan(&more, Heuristic::default()));
    // A snapshot that overfills a host is refused.
    let mut snapshot = c.snapshot();
    let first = snapshot.instances[0].clone();
    snapshot.instances[0].request.demand.memory_mib = 1 << 20;
    snapshot.instances[0].host = first.host;
    let error = Cluster::try_from(snapshot).expect_err("over capacity");
    assert!(error.to_string().starts_with("snapshot: "), "{error}");
}

#[test]
fn plans_and_reasons_serialise_for_the_api() {
    let mut c = cluster(vec![host("a")]);
    let plan = c.place(vec![req(1, "web", 64), req(2, "web", 64)], Heuristic::default());
    let json = serde_json::to_value(&plan).expect("serialises");
    assert_eq!(json["heuristic"], "balanced-best-fit");
    assert_eq!(json["assignments"][0], serde_json::json!({"instance": 1, "host": "a"}));
    assert_eq!(
        json["unplaced"][0],
        serde_json::json!({"instance": 2, "reason": {"reason": "anti_affinity", "group": "web", "hosts": 1}})
    );
    let back: placement::Plan = serde_json::from_value(json).expect("parses");
    assert_eq!(back, plan);
    // Every kind of reason survives the trip.
    let x86 = InstanceRequest { arch: Arch::X86_64, ..req(3, "x", 64) };
    let plan = c.place(
        vec![x86, req(4, "big", 5000), req(5, "disk", 64).with_devices(&[Device::Block]), req(1, "dup", 64)],
        Heuristic::BestFitDecreasing,
    );
    assert_eq!(plan.unplaced.len(), 4);
    let json = serde_json::to_string(&plan).expect("serialises");
    assert_eq!(serde_json::from_str::<placement::Plan>(&json).expect("parses"), plan);
    assert!(json.contains(r#""reason":"no_room","wanted":{"arch":"aarch64","devices":[],"constraints":[]},"dimension":"memory","needed":5000,"most_free":960"#), "{json}");
}

#[test]
fn heuristics_have_stable_names() {
    for h in Heuristic::ALL {
        assert_eq!(h.name().parse::<Heuristic>(), Ok(h));
        assert_eq!(serde_json::to_value(h).expect("serialises"), h.name());
    }
    assert_eq!(Heuristic::default(), Heuristic::BalancedBestFit);
    assert!("first-fit".parse::<Heuristic>().is_err());
}

#[test]
fn every_heuristic_meets_every_constraint_on_the_realistic_mix() {
    for heuristic in Heuristic::ALL {
        let hosts = workload::racks(2);
        let requests = workload::instances(11, 4000);
        let mut c = cluster(hosts);
        let plan = c.place(requests.clone(), heuristic);
        assert_eq!(plan.assignments.len() + plan.unplaced.len(), requests.len());
        for (request, host) in c.placements() {
            let view = c.host(host).expect("member");
            assert!(request.eligible_on(view.host), "{heuristic}: {} on {host}", request.id);
        }
        for view in c.hosts() {
            let h = view.host;
            assert!(view.used.memory_mib <= h.capacity.memory_mib);
            assert!(view.used.millicores <= h.capacity.millicores);
            assert!(view.used.milliwatts <= h.power.for_instances_mw());
            assert!(view.instances <= h.capacity.max_instances);
            let mut groups: Vec<&str> = c.instances_on(&h.id).expect("member").map(|r| r.group.0.as_str()).collect();
            let n = groups.len();
            groups.sort_unstable();
            groups.dedup();
            assert_eq!(groups.len(), n, "{heuristic}: two replicas on {}", h.id);
        }
    }
}
