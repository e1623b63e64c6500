//! Placement, as one call: which host each new replica goes to.
//!
//! The rack core builds [`Candidate`]s from the store and calls [`place`], nothing else; [`place`]
//! hands the work to the pure placement engine (the `placement` crate, `rack-manager/placement`)
//! and translates its answer back:
//!
//! - Each candidate that can boot the request's architecture becomes one engine host of that
//!   architecture, with what it has *free* as its capacity (memory, vCPUs as millicores). Its
//!   load is represented by that reduced capacity, because a candidate only carries free amounts.
//!   Candidates carry no power budget or instance-slot limit, so those two dimensions are given
//!   values that never bind (see [`POWER_BUDGET_MW`] and [`host_slots`]).
//! - Replicas are spread by the engine's strict anti-affinity, in rounds: with `N` hosts that can
//!   take a replica, each round of at most `N` replicas is one anti-affinity group, so a round
//!   never puts two replicas on one host and every host gets one replica per full round (30
//!   replicas on 3 hosts: 10 each). Instances of the same appliance that already run count as
//!   members of the earliest rounds on their hosts (zero-demand placeholders), so new replicas go
//!   first to the hosts that run the fewest of them, as the simple spread before the engine did.
//!   Which hosts a partial round (fewer replicas than hosts) uses is the engine's choice under its
//!   default heuristic (balanced best fit, which prefers hosts that already run something and then
//!   the one left with the least free), so hosts still differ by at most one replica per round.
//! - Replicas the strict rounds leave unplaced because the hosts they would spread to are full
//!   are tried again in further rounds over the hosts that still have room, until a pass places
//!   nothing; then the engine's reason for the first one left (already a sentence for a person)
//!   becomes the [`PlaceError`].
//!
//! The output is deterministic: the same candidates and request give the same hosts, in replica
//! order.

use std::fmt;

use placement::{
    Arch, Capacity, Cluster, Heuristic, Host, HostId, HostView, InstanceRequest, PowerModel, Resources, Unplaceable,
};

/// A host as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub arches: Vec<String>,
    pub free_memory_mib: u64,
    pub free_vcpus: u64,
    /// Instances of the same appliance already there: what anti-affinity spreads.
    pub same_appliance: u32,
}

/// What to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub arch: String,
    pub replicas: u32,
    pub memory_mib: u32,
    pub vcpus: u32,
}

/// Why the replicas do not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceError {
    pub message: String,
    pub hint: String,
}

impl fmt::Display for PlaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.hint)
    }
}

/// The power budget every host gets, in milliwatts (1 kW). The daemon does not measure power yet,
/// so instances are placed with a demand of 0 mW and this budget only has to be positive: it
/// keeps the engine's power dimension defined without ever limiting placement.
pub const POWER_BUDGET_MW: u32 = 1_000_000;

/// The hint for a request no host architecture matches.
const ARCH_HINT: &str = "add a host that can (x86_64 needs KVM), or push the image built for another architecture";
/// The hint for replicas that do not fit on the hosts there are: it names the limit that bound
/// (memory or vCPUs), with how many each would allow, and the flags that change it.
fn room_hint(hosts: &[&Candidate], request: &Request) -> String {
    let by_memory: u64 = hosts.iter().map(|c| c.free_memory_mib / u64::from(request.memory_mib.max(1))).sum();
    let by_vcpus: u64 = hosts.iter().map(|c| c.free_vcpus / u64::from(request.vcpus.max(1))).sum();
    let free_memory: u64 = hosts.iter().map(|c| c.free_memory_mib).sum();
    let free_vcpus: u64 = hosts.iter().map(|c| c.free_vcpus).sum();
    if by_vcpus < by_memory {
        format!(
            "vCPUs are the limit: {free_vcpus} free, room for {by_vcpus} at {} each (memory would allow {by_memory}); \
             offer more (`serve --vcpu-overcommit N` or `--vcpus N`, see `host ls`), ask fewer per instance \
             (--vcpus), deploy fewer replicas, or add hosts",
            request.vcpus
        )
    } else {
        format!(
            "memory is the limit: {free_memory} MiB free, room for {by_memory} at {} MiB each (vCPUs would allow \
             {by_vcpus}); offer more (`serve --memory-overcommit F` or `--memory-mib N`, see `host ls`), give each \
             less (--mem, not below the manifest's), deploy fewer replicas, or add hosts",
            request.memory_mib
        )
    }
}

/// The instance slots a host gets: room for every instance this call could put there (its
/// placeholders and all the replicas). Candidates carry no slot limit, so slots never bind.
fn host_slots(candidate: &Candidate, request: &Request) -> u32 {
    candidate.same_appliance.saturating_add(request.replicas)
}

/// A count the engine measures in `u32`, saturating where the daemon's is larger.
fn saturate(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// The anti-affinity group of round `round`. Every cluster here holds one request, so the round
/// alone names the group.
fn round_group(round: u64) -> String {
    format!("round-{round}")
}

/// Whether a host of the cluster has room for one more instance of `demand`.
fn has_room(host: &HostView<'_>, demand: &Resources) -> bool {
    host.host.capacity.memory_mib.saturating_sub(host.used.memory_mib) >= demand.memory_mib
        && host.host.capacity.millicores.saturating_sub(host.used.millicores) >= demand.millicores
}

/// One host per replica, in replica order, or why there is none. Deterministic: the same input
/// gives the same plan.
pub fn place(hosts: &[Candidate], request: &Request) -> Result<Vec<String>, PlaceError> {
    let Some(arch) = Arch::ALL.into_iter().find(|a| a.name() == request.arch) else {
        return Err(PlaceError {
            message: format!("no ready host can boot {} appliances", request.arch),
            hint: ARCH_HINT.into(),
        });
    };
    let demand =
        Resources { memory_mib: request.memory_mib, millicores: request.vcpus.saturating_mul(1000), milliwatts: 0 };
    // A host that can boot several architectures (QEMU boots aarch64 under TCG and x86_64 under
    // KVM) appears as a host of the architecture being placed: the engine gives each host one
    // architecture, and this cluster only ever holds requests of one.
    let usable: Vec<&Candidate> = hosts.iter().filter(|h| h.arches.contains(&request.arch)).collect();
    let mut cluster = Cluster::new(usable.iter().map(|c| Host {
        id: HostId(c.name.clone()),
        arch,
        capacity: Capacity {
            memory_mib: saturate(c.free_memory_mib),
            millicores: saturate(c.free_vcpus.saturating_mul(1000)),
            max_instances: host_slots(c, request),
        },
        power: PowerModel { budget_mw: POWER_BUDGET_MW, active_mw: 0, sleep_mw: 0 },
        labels: Default::default(),
        devices: Default::default(),
    }))
    .map_err(|e| PlaceError { message: e.to_string(), hint: "report this: the store lists a host twice".into() })?;

    let fits_one =
        |c: &Candidate| c.free_memory_mib >= u64::from(demand.memory_mib) && c.free_vcpus >= u64::from(request.vcpus);
    // Existing instances of the appliance sorted by count, on the hosts that can take a replica:
    // round `k` already has a member on each host that runs more than `k` of them.
    let mut existing: Vec<u32> = usable.iter().filter(|c| fits_one(c)).map(|c| c.same_appliance).collect();
    existing.sort_unstable();
    let spread = existing.len() as u64;
    let replica = |id: u64, round: u64| InstanceRequest::new(id, &round_group(round), arch, demand);

    if spread == 0 {
        // No host can take even one replica: one request is enough to learn why, where a request
        // per replica would cost the engine a search per replica.
        let plan = cluster.place(vec![replica(0, 0)], Heuristic::default());
        return Err(unplaced(request, 0, plan.unplaced.first().map(|u| &u.reason), &usable));
    }

    // Placeholders: the `k`-th instance of the appliance on a host is a member of round `k`. They
    // take nothing, because the reduced capacity already counts what they use.
    let mut next_id = u64::from(request.replicas);
    for c in &usable {
        for round in 0..u64::from(c.same_appliance) {
            let placeholder = InstanceRequest::new(next_id, &round_group(round), arch, Resources::default());
            next_id += 1;
            cluster.assign(placeholder, &HostId(c.name.clone())).map_err(|e| PlaceError {
                message: format!("cannot account for what {} runs: {e}", c.name),
                hint: "report this: the store's instances do not match its hosts".into(),
            })?;
        }
    }

    // Each round takes as many new replicas as it has hosts without a member yet, so the hosts
    // that run the fewest instances of the appliance receive the first ones.
    let mut pending = Vec::with_capacity(request.replicas as usize);
    let mut round = 0u64;
    while (pending.len() as u64) < u64::from(request.replicas) {
        let members = (existing.len() - existing.partition_point(|&n| u64::from(n) <= round)) as u64;
        let room = (spread - members).min(u64::from(request.replicas) - pending.len() as u64);
        for _ in 0..room {
            pending.push(replica(pending.len() as u64, round));
        }
        round += 1;
    }

    // Further rounds start after every round a placeholder is in, so they begin empty.
    round = round.max(usable.iter().map(|c| u64::from(c.same_appliance)).max().unwrap_or(0));
    let mut placed: Vec<Option<String>> = vec![None; request.replicas as usize];
    let mut count = 0u32;
    loop {
        let plan = cluster.place(pending, Heuristic::default());
        for assignment in &plan.assignments {
            if let Some(slot) = usize::try_from(assignment.instance.0).ok().and_then(|i| placed.get_mut(i)) {
                *slot = Some(assignment.host.0.clone());
                count += 1;
            }
        }
        if plan.unplaced.is_empty() {
            break;
        }
        if plan.assignments.is_empty() {
            return Err(unplaced(request, count, plan.unplaced.first().map(|u| &u.reason), &usable));
        }
        // What strict rounds could not place goes into further rounds over the hosts left.
        let spread = cluster.hosts().filter(|h| has_room(h, &demand)).count().max(1);
        pending =
            plan.unplaced.iter().enumerate().map(|(i, u)| replica(u.instance.0, round + (i / spread) as u64)).collect();
        round += (plan.unplaced.len() / spread) as u64 + 1;
    }
    placed.into_iter().collect::<Option<Vec<String>>>().ok_or_else(|| PlaceError {
        message: format!("the placement engine placed {count} of {} replicas without saying why", request.replicas),
        hint: "report this: every replica should be placed or have a reason".into(),
    })
}

/// The error for replicas left unplaced, in the engine's words.
fn unplaced(request: &Request, count: u32, reason: Option<&Unplaceable>, hosts: &[&Candidate]) -> PlaceError {
    let why = reason.map_or_else(|| "the placement engine gave no reason".to_owned(), ToString::to_string);
    let hint = match reason {
        Some(Unplaceable::NoArch { .. }) => ARCH_HINT.to_owned(),
        _ => room_hint(hosts, request),
    };
    let message =
        if request.replicas == 1 { why } else { format!("only {count} of {} replicas fit: {why}", request.replicas) };
    PlaceError { message, hint }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, memory: u64) -> Candidate {
        Candidate {
            name: name.into(),
            arches: vec!["aarch64".into()],
            free_memory_mib: memory,
            free_vcpus: 64,
            same_appliance: 0,
        }
    }

    fn request(replicas: u32) -> Request {
        Request { arch: "aarch64".into(), replicas, memory_mib: 16, vcpus: 1 }
    }

    fn count(plan: &[String], name: &str) -> usize {
        plan.iter().filter(|h| *h == name).count()
    }

    #[test]
    fn replicas_spread_across_hosts() {
        let plan = place(&[host("a", 1024), host("b", 1024), host("c", 1024)], &request(30)).expect("fits");
        for name in ["a", "b", "c"] {
            assert_eq!(count(&plan, name), 10, "{plan:?}");
        }
        let again = place(&[host("a", 1024), host("b", 1024), host("c", 1024)], &request(30)).expect("fits");
        assert_eq!(plan, again, "deterministic");
    }

    #[test]
    fn impossible_placements_say_why() {
        let error = place(&[host("a", 40)], &request(3)).expect_err("only two fit");
        assert!(error.message.starts_with("only 2 of 3 replicas fit: no aarch64 host with 16 MiB free"), "{error}");
        let error = place(&[host("a", 1024)], &Request { arch: "x86_64".into(), ..request(1) }).expect_err("arch");
        assert_eq!(error.message, "no x86_64 host in the cluster");
        let error = place(&[host("a", 8)], &request(100_000)).expect_err("none fit");
        assert!(error.message.starts_with("only 0 of 100000 replicas fit"), "{error}");
    }

    #[test]
    fn multi_arch_hosts_take_either_arch() {
        let both = Candidate { arches: vec!["aarch64".into(), "x86_64".into()], ..host("q", 1024) };
        for arch in ["aarch64", "x86_64"] {
            let plan = place(&[both.clone(), host("a", 1024)], &Request { arch: arch.into(), ..request(2) });
            assert!(plan.expect("fits").contains(&"q".to_owned()), "{arch}");
        }
    }

    #[test]
    fn mixed_existing_load_is_spread_around_and_respected() {
        // `a` already runs two of the appliance and `b` one; `c` runs other appliances and has
        // room for only two more replicas.
        let hosts = [
            Candidate { same_appliance: 2, ..host("a", 1024) },
            Candidate { same_appliance: 1, ..host("b", 1024) },
            host("c", 40),
        ];
        let plan = place(&hosts, &request(3)).expect("fits");
        assert_eq!((count(&plan, "a"), count(&plan, "b"), count(&plan, "c")), (0, 1, 2), "{plan:?}");
        // Beyond what `c` holds, the rest spread over `a` and `b` evenly.
        let plan = place(&hosts, &request(9)).expect("fits");
        assert_eq!((count(&plan, "a"), count(&plan, "b"), count(&plan, "c")), (3, 4, 2), "{plan:?}");
        // Existing load limits what fits: vCPUs as well as memory.
        let busy = Candidate { free_vcpus: 1, ..host("d", 1024) };
        let plan = place(&[busy, host("e", 1024)], &request(4)).expect("fits");
        assert_eq!((count(&plan, "d"), count(&plan, "e")), (1, 3), "{plan:?}");
    }

    #[test]
    fn thousands_of_hosts_place_quickly_and_evenly() {
        let hosts: Vec<Candidate> = (0..2000).map(|i| host(&format!("h{i:04}"), 256)).collect();
        let started = std::time::Instant::now();
        let plan = place(&hosts, &request(4000)).expect("fits");
        let mut counts = std::collections::HashMap::new();
        for h in &plan {
            *counts.entry(h).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 2000);
        assert!(counts.values().all(|&n| n == 2), "uneven spread");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    }
}
