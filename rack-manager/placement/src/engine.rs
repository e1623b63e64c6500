//! Batch placement: order the requests, index the hosts, choose a host for each request.
//!
//! The index is built per batch, in O(hosts · log hosts), and thrown away after it. Keeping it
//! batch-local means removals, cordons and new hosts never have an index to keep consistent,
//! and the label keys it groups hosts by are exactly the keys the batch's constraints mention.
//!
//! Hosts are grouped into *types*: the same architecture, devices and values of the labels the
//! batch's constraints mention (a `rack=r17` label no request asks about does not split a type).
//! Each request's static constraints select a set of types, computed once per distinct
//! combination of constraints (a *class*). Per type, two ordered sets hold the schedulable hosts:
//! `active` (running something) keyed by what they have free in the *primary* dimension, and
//! `idle` (asleep) keyed by their capacity in it. A host that cannot fit the smallest demand of
//! the batch in some dimension is left out of both, so full hosts cost nothing to skip.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::{
    Heuristic,
    cluster::{Assignment, Cluster, HostState, Placed, Plan, Unplaced},
    reason::{Unplaceable, Wanted},
    types::{Arch, DeviceSet, Dimension, HostId, InstanceId, InstanceRequest, LabelConstraint, demand_vector},
};

/// What became of one request of a batch.
#[derive(Debug)]
pub(crate) enum Outcome {
    Pending,
    Placed(u32),
    Failed(Unplaceable),
}

/// How many woken hosts in a row compaction tries to empty, and fails, before it stops.
const COMPACT_TRIES: u32 = 64;

/// Not a type: the host is cordoned, so the batch never considers it.
const NO_TYPE: u32 = u32::MAX;

/// A request as the inner loop sees it.
struct Item {
    demand: [u32; 4],
    class: u32,
    group: u32,
}

/// A distinct combination of static constraints in the batch.
struct Class {
    /// The host types that satisfy it.
    types: Vec<u32>,
    /// How scarce its hosts are: the schedulable hosts of the architecture over those that
    /// satisfy it, in 54.10 fixed point (1024 for an unconstrained request, 2048 for `zone=a`
    /// when half the hosts are in zone `a`; the most for a class no host satisfies).
    scarcity: u64,
}

type TypeKey = (Arch, DeviceSet, Vec<Option<String>>);
type ClassKey = (Arch, DeviceSet, Vec<LabelConstraint>);

/// What the compaction pass needs of the batch.
struct Batch<'a> {
    heuristic: Heuristic,
    classes: &'a [Class],
    items: &'a [Option<Item>],
    /// Each request's position in the placement order.
    rank: &'a [u32],
    ids: &'a [InstanceId],
}

/// Failure reasons computed so far in a batch.
struct Failures {
    /// Per class: the schedulable hosts that satisfy its static constraints, or why none do.
    eligible: Vec<Option<Result<Vec<u32>, Unplaceable>>>,
    /// Per class: the most its hosts have free per dimension, and the index epoch it was computed at.
    most_free: Vec<Option<(u64, [u32; 4])>>,
}

struct Index {
    /// The dimension hosts are ordered by (see [`primary_dimension`]).
    dim: usize,
    /// Counts the changes to the cluster during the batch.
    epoch: u64,
    /// Per type: the largest capacity of its hosts in each dimension, so that a type none of
    /// whose hosts could ever fit a request is skipped without looking at its hosts.
    type_max: Vec<[u32; 4]>,
    type_arch: Vec<Arch>,
    /// The smallest demand of the batch in each dimension.
    min: [u32; 4],
    host_type: Vec<u32>,
    /// Per type: (free in `dim`, host) of schedulable hosts that run something.
    active: Vec<BTreeSet<(u32, u32)>>,
    /// Per type: (capacity in `dim`, host) of schedulable hosts that run nothing.
    idle: Vec<BTreeSet<(u32, u32)>>,
}

impl Index {
    /// Whether some host of type `t` could fit the demand if it ran nothing.
    fn may_fit(&self, t: u32, demand: &[u32; 4]) -> bool {
        demand.iter().zip(&self.type_max[t as usize]).all(|(d, m)| d <= m)
    }

    /// Whether the host cannot take even the smallest request of the batch.
    fn closed(&self, h: &HostState) -> bool {
        (0..4).any(|d| h.free(d) < self.min[d])
    }

    /// Best fit: among active hosts of the types, the one left with the least free in the primary
    /// dimension; ties go to the lower host index. The scan starts at the first host with enough
    /// free in the primary dimension and stops at the first that fits in all four and runs no
    /// replica of the group.
    fn best_fit(&self, hosts: &[HostState], types: &[u32], demand: &[u32; 4], replicas: &[u32]) -> Option<u32> {
        let mut best: Option<(u32, u32)> = None;
        for &t in types.iter().filter(|t| self.may_fit(**t, demand)) {
            for &(free, h) in self.active[t as usize].range((demand[self.dim], 0)..) {
                if best.is_some_and(|b| (free, h) >= b) {
                    break;
                }
                if hosts[h as usize].fits(demand) && replicas.binary_search(&h).is_err() {
                    best = Some((free, h));
                    break;
                }
            }
        }
        best.map(|(_, h)| h)
    }

    /// Nomad's bin-packing score: among all active hosts of the types that fit, the one with the
    /// highest score after placement; ties go to the lower host index.
    fn best_score(&self, hosts: &[HostState], types: &[u32], demand: &[u32; 4], replicas: &[u32]) -> Option<u32> {
        let mut best: Option<(f64, u32)> = None;
        for &t in types.iter().filter(|t| self.may_fit(**t, demand)) {
            for &(_, h) in self.active[t as usize].range((demand[self.dim], 0)..) {
                let host = &hosts[h as usize];
                if !host.fits(demand) || replicas.binary_search(&h).is_ok() {
                    continue;
                }
                let score = nomad_score(host, demand);
                if best.is_none_or(|(s, b)| score > s || (score == s && h < b)) {
                    best = Some((score, h));
                }
            }
        }
        best.map(|(_, h)| h)
    }

    /// The sleeping host to wake: the smallest (in the primary dimension) that fits, then the
    /// lowest index. Sleeping hosts run nothing, so anti-affinity cannot exclude them.
    fn smallest_idle(&self, hosts: &[HostState], types: &[u32], demand: &[u32; 4]) -> Option<u32> {
        let mut best: Option<(u32, u32)> = None;
        for &t in types.iter().filter(|t| self.may_fit(**t, demand)) {
            for &(cap, h) in self.idle[t as usize].range((demand[self.dim], 0)..) {
                if best.is_some_and(|b| (cap, h) >= b) {
                    break;
                }
                if hosts[h as usize].fits(demand) {
                    best = Some((cap, h));
                    break;
                }
            }
        }
        best.map(|(_, h)| h)
    }
}

/// Nomad's `ScoreFitBinPack` (`20 − (10^free_cpu + 10^free_mem)`, free as a fraction after
/// placement), over all four dimensions. The convex `10^free` rewards filling a dimension that
/// still has much free more than one that is nearly full, so it mixes complementary instances.
fn nomad_score(host: &HostState, demand: &[u32; 4]) -> f64 {
    let penalty: f64 = (0..4)
        .filter(|d| host.cap[*d] > 0)
        .map(|d| 10f64.powf(f64::from(host.free(d) - demand[d]) / f64::from(host.cap[d])))
        .sum();
    -penalty
}

/// The dimension whose total demand (the batch plus what already runs) is the largest fraction of
/// the schedulable capacity: the one that decides how many hosts the batch needs, so the one to
/// fit tightly. Ties go to the earlier dimension (memory first).
fn primary_dimension(load: &[u64; 4], capacity: &[u64; 4]) -> usize {
    let mut best = 0;
    for d in 1..4 {
        // load[d] / capacity[d] > load[best] / capacity[best], without division.
        if u128::from(load[d]) * u128::from(capacity[best]) > u128::from(load[best]) * u128::from(capacity[d]) {
            best = d;
        }
    }
    best
}

/// A demand as a fraction of a capacity, in 32.32 fixed point; saturates where nothing has the
/// capacity.
fn share(demand: u32, capacity: u32) -> u64 {
    match (demand, capacity) {
        (0, _) => 0,
        (_, 0) => u64::MAX,
        (d, c) => (u64::from(d) << 32) / u64::from(c),
    }
}

impl Cluster {
    /// Places a batch of requests and applies the placements to the cluster. Requests that
    /// cannot be placed are left out, each with its reason.
    ///
    /// Requests are placed in the heuristic's order, whatever their order here (which only breaks
    /// ties), so the requests of a deployment are best sent in one batch. The same cluster and
    /// the same requests always give the same plan.
    pub fn place(&mut self, requests: Vec<InstanceRequest>, heuristic: Heuristic) -> Plan {
        let ids: Vec<_> = requests.iter().map(|r| r.id).collect();
        let (outcomes, _, woken) = self.place_batch(requests, heuristic);
        let mut plan = Plan { heuristic, assignments: Vec::new(), unplaced: Vec::new(), woken };
        for (outcome, instance) in outcomes.into_iter().zip(ids) {
            match outcome {
                Outcome::Placed(h) => {
                    plan.assignments.push(Assignment { instance, host: self.hosts[h as usize].host.id.clone() })
                }
                Outcome::Failed(reason) => plan.unplaced.push(Unplaced { instance, reason }),
                Outcome::Pending => unreachable!("every request of a batch is decided"),
            }
        }
        plan
    }

    /// The dry run of [`Cluster::place`]: the plan it would make, leaving the cluster unchanged.
    pub fn plan(&self, requests: &[InstanceRequest], heuristic: Heuristic) -> Plan {
        self.clone().place(requests.to_vec(), heuristic)
    }

    /// Places a batch; returns each request's outcome in request order, the requests that were
    /// not placed (the rest are `None`), and the hosts woken.
    pub(crate) fn place_batch(
        &mut self,
        requests: Vec<InstanceRequest>,
        heuristic: Heuristic,
    ) -> (Vec<Outcome>, Vec<Option<InstanceRequest>>, Vec<HostId>) {
        let mut outcomes: Vec<Outcome> = requests.iter().map(|_| Outcome::Pending).collect();
        let mut seen = HashSet::with_capacity(requests.len());
        for (outcome, r) in outcomes.iter_mut().zip(&requests) {
            if self.instances.contains_key(&r.id) || !seen.insert(r.id) {
                *outcome = Outcome::Failed(Unplaceable::Duplicate { instance: r.id });
            }
        }
        drop(seen);
        let pending: Vec<usize> = (0..requests.len()).filter(|i| matches!(outcomes[*i], Outcome::Pending)).collect();
        let mut slots: Vec<Option<InstanceRequest>> = requests.into_iter().map(Some).collect();
        if pending.is_empty() {
            return (outcomes, slots, Vec::new());
        }

        let ids: Vec<InstanceId> = slots.iter().map(|r| r.as_ref().map_or(InstanceId(0), |r| r.id)).collect();
        let (mut index, classes, items) = self.compile(&slots, &pending);
        let order = order(&items, &pending, &self.hosts, &classes, heuristic);
        let mut rank = vec![0u32; slots.len()];
        for (position, &i) in order.iter().enumerate() {
            rank[i] = position as u32;
        }
        let batch = Batch { heuristic, classes: &classes, items: &items, rank: &rank, ids: &ids };
        let mut woken: Vec<u32> = Vec::new();
        let mut failures =
            Failures { eligible: (0..classes.len()).map(|_| None).collect(), most_free: vec![None; classes.len()] };
        for &i in &order {
            outcomes[i] = self.place_one(&mut index, &batch, i, &mut slots, &mut woken, &mut failures);
        }
        if self.compact(&mut index, &batch, &mut outcomes, &mut woken) {
            // Compaction made room; what failed before may fit now.
            for &i in &order {
                if matches!(outcomes[i], Outcome::Failed(_)) {
                    outcomes[i] = self.place_one(&mut index, &batch, i, &mut slots, &mut woken, &mut failures);
                }
            }
        }
        let woken = woken.into_iter().map(|h| self.hosts[h as usize].host.id.clone()).collect();
        (outcomes, slots, woken)
    }

    /// Places one request of the batch: on a running host by the heuristic, else on the sleeping
    /// host to wake, else nowhere, with the reason.
    fn place_one(
        &mut self,
        index: &mut Index,
        batch: &Batch<'_>,
        i: usize,
        slots: &mut [Option<InstanceRequest>],
        woken: &mut Vec<u32>,
        failures: &mut Failures,
    ) -> Outcome {
        let item = batch.items[i].as_ref().expect("pending requests are compiled");
        let types = &batch.classes[item.class as usize].types;
        let chosen = self
            .choose(index, batch.heuristic, types, item)
            .or_else(|| index.smallest_idle(&self.hosts, types, &item.demand));
        let Some(h) = chosen else {
            let request = slots[i].as_ref().expect("not yet placed");
            return Outcome::Failed(self.reason(failures, index.epoch, request, item));
        };
        if !self.hosts[h as usize].is_active() {
            woken.push(h);
        }
        let request = slots[i].take().expect("not yet placed");
        self.put(index, request, h, item.group);
        Outcome::Placed(h)
    }

    /// Why an item fits nowhere. The static part is computed once per class, the most free per
    /// dimension once per class for as long as nothing changes (a batch of many requests that fit
    /// nowhere costs one scan of the hosts, not one each), except for a group that already runs
    /// replicas, whose hosts are left out.
    fn reason(&self, failures: &mut Failures, epoch: u64, request: &InstanceRequest, item: &Item) -> Unplaceable {
        let eligible = failures.eligible[item.class as usize].get_or_insert_with(|| self.eligible(request));
        let hosts = match eligible {
            Ok(hosts) => hosts,
            Err(reason) => return reason.clone(),
        };
        let replicas = &self.group_hosts[item.group as usize];
        if replicas.is_empty() {
            let cached = &mut failures.most_free[item.class as usize];
            let most_free = match cached {
                Some((at, most_free)) if *at == epoch => *most_free,
                _ => cached.insert((epoch, self.most_free(hosts.iter().copied()))).1,
            };
            return no_room(request, &most_free);
        }
        let candidates: Vec<u32> = hosts.iter().copied().filter(|h| replicas.binary_search(h).is_err()).collect();
        if candidates.is_empty() {
            return Unplaceable::AntiAffinity { group: request.group.clone(), hosts: hosts.len() as u32 };
        }
        no_room(request, &self.most_free(candidates.into_iter()))
    }

    /// The most any of these hosts has free, per dimension.
    fn most_free(&self, hosts: impl Iterator<Item = u32>) -> [u32; 4] {
        let mut most = [0u32; 4];
        for h in hosts {
            let state = &self.hosts[h as usize];
            for (d, m) in most.iter_mut().enumerate() {
                *m = (*m).max(state.free(d));
            }
        }
        most
    }

    /// A running host for the item by the heuristic, or `None` (then the caller may wake one).
    fn choose(&self, index: &Index, heuristic: Heuristic, types: &[u32], item: &Item) -> Option<u32> {
        let replicas = &self.group_hosts[item.group as usize];
        match heuristic {
            Heuristic::BalancedBestFit | Heuristic::BestFitDecreasing => {
                index.best_fit(&self.hosts, types, &item.demand, replicas)
            }
            Heuristic::NomadScore => index.best_score(&self.hosts, types, &item.demand, replicas),
        }
    }

    /// Commits a placement the caller has checked, and moves the host in the index.
    fn put(&mut self, index: &mut Index, request: InstanceRequest, h: u32, group: u32) {
        let (dim, t) = (index.dim, index.host_type[h as usize] as usize);
        let host = &self.hosts[h as usize];
        if host.is_active() {
            index.active[t].remove(&(host.free(dim), h));
        } else {
            index.idle[t].remove(&(host.cap[dim], h));
        }
        self.commit(request, h, group);
        index.epoch += 1;
        let host = &self.hosts[h as usize];
        if !index.closed(host) {
            index.active[t].insert((host.free(dim), h));
        }
    }

    /// Undoes a placement of this batch, and moves the host in the index (to the idle set if it
    /// now runs nothing).
    fn take(&mut self, index: &mut Index, id: InstanceId) -> Placed {
        let h = self.instances.get(&id).expect("the batch placed it").host;
        let (dim, t) = (index.dim, index.host_type[h as usize] as usize);
        index.active[t].remove(&(self.hosts[h as usize].free(dim), h));
        let placed = self.uncommit(id).expect("the batch placed it");
        index.epoch += 1;
        let host = &self.hosts[h as usize];
        if !index.closed(host) {
            if host.is_active() {
                index.active[t].insert((host.free(dim), h));
            } else {
                index.idle[t].insert((host.cap[dim], h));
            }
        }
        placed
    }

    /// Puts hosts the batch woke back to sleep where the others can take their instances.
    ///
    /// Best fit leaves the hosts it woke last the emptiest, and the end of a batch (the smallest
    /// requests, the last replicas of groups that need distinct hosts) can wake a host for a
    /// handful of instances. So, least loaded first, each woken host's instances (all of this
    /// batch, so nothing has started yet and moving them costs nothing) are placed again on the
    /// other running hosts; if one of them fits nowhere, the host keeps them all. A host is tried
    /// only if the other running hosts of its architecture have room for its load in the primary
    /// dimension, and the pass stops after [`COMPACT_TRIES`] hosts in a row kept their instances:
    /// the hosts after those are fuller, and each try costs a search per instance.
    ///
    /// Returns whether it put any host back to sleep.
    fn compact(
        &mut self,
        index: &mut Index,
        batch: &Batch<'_>,
        outcomes: &mut [Outcome],
        woken: &mut Vec<u32>,
    ) -> bool {
        let slept = woken.len();
        let dim = index.dim;
        let mut members: HashMap<u32, Vec<usize>> = woken.iter().map(|h| (*h, Vec::new())).collect();
        for (i, outcome) in outcomes.iter().enumerate() {
            if let Outcome::Placed(h) = outcome
                && let Some(list) = members.get_mut(h)
            {
                list.push(i);
            }
        }
        let mut candidates = woken.clone();
        candidates.sort_by_key(|h| (self.hosts[*h as usize].used[dim], *h));
        let room_of = |index: &Index, arch: Arch| -> u64 {
            (0..index.active.len())
                .filter(|t| index.type_arch[*t] == arch)
                .flat_map(|t| index.active[t].iter())
                .map(|(free, _)| u64::from(*free))
                .sum()
        };
        // The free room in the primary dimension of the running hosts per architecture; a failed
        // try leaves it as it was, so it is computed again only after a host is emptied.
        let mut room: HashMap<Arch, u64> = HashMap::new();
        let mut failed_in_a_row = 0;
        for h in candidates {
            if failed_in_a_row == COMPACT_TRIES {
                break;
            }
            let host = &self.hosts[h as usize];
            let (arch, load) = (host.host.arch, u64::from(host.used[dim]));
            let own = if index.closed(host) { 0 } else { u64::from(host.free(dim)) };
            let total = *room.entry(arch).or_insert_with(|| room_of(index, arch));
            if total.saturating_sub(own) < load {
                continue;
            }
            let mut on_host = members.remove(&h).unwrap_or_default();
            on_host.sort_by_key(|i| batch.rank[*i]);
            let taken: Vec<(usize, Placed)> = on_host.iter().map(|&i| (i, self.take(index, batch.ids[i]))).collect();
            let mut moved: Vec<(usize, u32)> = Vec::new();
            let mut back: Vec<(usize, InstanceRequest)> = Vec::new();
            let mut rest = taken.into_iter();
            for (i, placed) in rest.by_ref() {
                let item = batch.items[i].as_ref().expect("placed requests are compiled");
                let types = &batch.classes[item.class as usize].types;
                match self.choose(index, batch.heuristic, types, item) {
                    Some(to) => {
                        self.put(index, placed.request, to, item.group);
                        moved.push((i, to));
                    }
                    None => {
                        back.push((i, placed.request));
                        break;
                    }
                }
            }
            if back.is_empty() {
                for (i, to) in moved {
                    outcomes[i] = Outcome::Placed(to);
                    if let Some(list) = members.get_mut(&to) {
                        list.push(i);
                    }
                }
                woken.retain(|w| *w != h);
                room.clear();
                failed_in_a_row = 0;
                continue;
            }
            failed_in_a_row += 1;
            back.extend(rest.map(|(i, placed)| (i, placed.request)));
            for (i, _) in moved {
                back.push((i, self.take(index, batch.ids[i]).request));
            }
            back.sort_by_key(|(i, _)| batch.rank[*i]);
            for (i, request) in back {
                let group = batch.items[i].as_ref().expect("placed requests are compiled").group;
                self.put(index, request, h, group);
            }
            members.insert(h, on_host);
        }
        woken.len() < slept
    }

    /// Builds the batch's index, its classes (each a list of host types) and its items.
    fn compile(
        &mut self,
        slots: &[Option<InstanceRequest>],
        pending: &[usize],
    ) -> (Index, Vec<Class>, Vec<Option<Item>>) {
        let requests = || pending.iter().filter_map(|i| slots[*i].as_ref());
        let mut keys: Vec<&str> = requests().flat_map(|r| r.constraints.iter().map(LabelConstraint::key)).collect();
        keys.sort_unstable();
        keys.dedup();

        // Host types over the labels the batch asks about.
        let mut type_index: HashMap<TypeKey, u32> = HashMap::new();
        let mut types: Vec<TypeKey> = Vec::new();
        let mut type_hosts: Vec<u32> = Vec::new();
        let mut arch_hosts: HashMap<Arch, u32> = HashMap::new();
        let mut host_type = vec![NO_TYPE; self.hosts.len()];
        for (h, state) in self.hosts.iter().enumerate().filter(|(_, s)| !s.cordoned) {
            let values = keys.iter().map(|k| state.host.labels.get(*k).cloned()).collect();
            let key = (state.host.arch, state.host.devices, values);
            let t = *type_index.entry(key).or_insert_with_key(|key| {
                types.push(key.clone());
                type_hosts.push(0);
                (types.len() - 1) as u32
            });
            host_type[h] = t;
            type_hosts[t as usize] += 1;
            *arch_hosts.entry(state.host.arch).or_default() += 1;
        }

        // Classes of requests, and the per-request items.
        let mut class_index: HashMap<ClassKey, u32> = HashMap::new();
        let mut classes: Vec<Class> = Vec::new();
        let mut items: Vec<Option<Item>> = (0..slots.len()).map(|_| None).collect();
        let mut load = [0u64; 4];
        let mut min = [u32::MAX; 4];
        for &i in pending {
            let request = slots[i].as_ref().expect("pending requests are present");
            let mut constraints = request.constraints.clone();
            constraints.sort_unstable();
            constraints.dedup();
            let key = (request.arch, request.devices, constraints);
            let class = *class_index.entry(key).or_insert_with_key(|(arch, devices, constraints)| {
                let matching = types.iter().enumerate().filter(|(_, (t_arch, t_devices, values))| {
                    t_arch == arch
                        && t_devices.covers(*devices)
                        && constraints.iter().all(|c| {
                            let at = keys.binary_search(&c.key()).expect("every constraint key is indexed");
                            c.holds_for(values[at].as_deref())
                        })
                });
                let types: Vec<u32> = matching.map(|(t, _)| t as u32).collect();
                let eligible: u32 = types.iter().map(|t| type_hosts[*t as usize]).sum();
                let of_arch = arch_hosts.get(arch).copied().unwrap_or(0);
                let scarcity = (u64::from(of_arch) << 10).checked_div(u64::from(eligible)).unwrap_or(u64::MAX);
                classes.push(Class { types, scarcity });
                (classes.len() - 1) as u32
            });
            let demand = demand_vector(&request.demand);
            for d in 0..4 {
                load[d] += u64::from(demand[d]);
                min[d] = min[d].min(demand[d]);
            }
            let group = self.intern_group(&request.group);
            items[i] = Some(Item { demand, class, group });
        }

        let mut capacity = [0u64; 4];
        for state in self.hosts.iter().filter(|s| !s.cordoned) {
            for d in 0..4 {
                load[d] += u64::from(state.used[d]);
                capacity[d] += u64::from(state.cap[d]);
            }
        }
        let dim = primary_dimension(&load, &capacity);
        let mut type_max = vec![[0u32; 4]; types.len()];
        for (h, state) in self.hosts.iter().enumerate().filter(|(h, _)| host_type[*h] != NO_TYPE) {
            for (m, c) in type_max[host_type[h] as usize].iter_mut().zip(state.cap) {
                *m = (*m).max(c);
            }
        }
        let mut index = Index {
            dim,
            epoch: 0,
            type_max,
            type_arch: types.iter().map(|t| t.0).collect(),
            min,
            host_type,
            active: vec![BTreeSet::new(); types.len()],
            idle: vec![BTreeSet::new(); types.len()],
        };
        for (h, state) in self.hosts.iter().enumerate() {
            let t = index.host_type[h];
            if t == NO_TYPE || index.closed(state) {
                continue;
            }
            if state.is_active() {
                index.active[t as usize].insert((state.free(dim), h as u32));
            } else {
                index.idle[t as usize].insert((state.cap[dim], h as u32));
            }
        }
        (index, classes, items)
    }

    /// The schedulable hosts that satisfy a request's static constraints (architecture, devices,
    /// labels), or why there are none. The same for every request of a class, so failures of a
    /// class compute it once.
    fn eligible(&self, request: &InstanceRequest) -> Result<Vec<u32>, Unplaceable> {
        let hosts = || self.hosts.iter().enumerate();
        let of_arch = || hosts().filter(|(_, s)| s.host.arch == request.arch);
        if of_arch().next().is_none() {
            return Err(Unplaceable::NoArch { arch: request.arch });
        }
        let with_devices = || of_arch().filter(|(_, s)| s.host.devices.covers(request.devices));
        if with_devices().next().is_none() {
            return Err(Unplaceable::NoDevices { arch: request.arch, devices: request.devices });
        }
        let matching: Vec<(usize, &HostState)> =
            with_devices().filter(|(_, s)| request.constraints.iter().all(|c| c.holds(&s.host.labels))).collect();
        if matching.is_empty() {
            return Err(Unplaceable::NoLabels { wanted: Wanted::of(request) });
        }
        let schedulable: Vec<u32> = matching.iter().filter(|(_, s)| !s.cordoned).map(|(h, _)| *h as u32).collect();
        if schedulable.is_empty() {
            return Err(Unplaceable::Cordoned { wanted: Wanted::of(request), hosts: matching.len() as u32 });
        }
        Ok(schedulable)
    }
}

/// Why a request does not fit on hosts that have at most `most_free` free: the first dimension
/// none has enough of, or, when each has, that no host has all of them at once.
fn no_room(request: &InstanceRequest, most_free: &[u32; 4]) -> Unplaceable {
    let demand = demand_vector(&request.demand);
    match Dimension::ALL.into_iter().find(|d| demand[d.index()] > most_free[d.index()]) {
        Some(dimension) => Unplaceable::NoRoom {
            wanted: Wanted::of(request),
            dimension,
            needed: demand[dimension.index()].into(),
            most_free: most_free[dimension.index()].into(),
        },
        None => Unplaceable::Fragmented { wanted: Wanted::of(request), demand: request.demand },
    }
}

/// The order to place the pending requests in.
///
/// Largest first: by dominant share (relative to the largest capacity any schedulable host has in
/// each dimension), then the largest sum of shares, then request order. The balanced order then
/// places the requests of scarcer classes first (those that few hosts satisfy: `zone=a`, `gpu`),
/// so that unconstrained requests do not take the room only they can use, and interleaves each
/// scarcity tier (see [`interleave`]).
fn order(
    items: &[Option<Item>],
    pending: &[usize],
    hosts: &[HostState],
    classes: &[Class],
    heuristic: Heuristic,
) -> Vec<usize> {
    let mut reference = [0u32; 4];
    for state in hosts.iter().filter(|s| !s.cordoned) {
        for (r, c) in reference.iter_mut().zip(state.cap) {
            *r = (*r).max(c);
        }
    }
    let balanced = matches!(heuristic, Heuristic::BalancedBestFit | Heuristic::NomadScore);
    let mut keyed: Vec<(u64, u64, u64, usize)> = pending
        .iter()
        .filter_map(|&i| {
            let item = items[i].as_ref()?;
            let shares = (0..4).map(|d| share(item.demand[d], reference[d]));
            let dominant = shares.clone().max().unwrap_or(0);
            let sum = shares.fold(0u64, u64::saturating_add);
            let tier = if balanced { u64::MAX - classes[item.class as usize].scarcity } else { 0 };
            Some((tier, u64::MAX - dominant, u64::MAX - sum, i))
        })
        .collect();
    keyed.sort_unstable();
    if !balanced {
        return keyed.into_iter().map(|(_, _, _, i)| i).collect();
    }
    let mut out = Vec::with_capacity(keyed.len());
    for tier in keyed.chunk_by(|a, b| a.0 == b.0) {
        out.extend(interleave(tier.iter().map(|k| k.3), items));
    }
    out
}

/// Interleaves a largest-first order so that every prefix of it demands the four dimensions in
/// about the proportion the whole does.
///
/// Largest-first alone puts all the big, memory-heavy services before the tiny, power- and
/// slot-heavy sensors: the first hosts fill their memory with services and leave power idle, the
/// last ones run out of power or instance slots with memory idle, and the plan needs ~10% more
/// hosts than the bound. Interleaved, the hosts best fit fills receive the batch's mix, so their
/// dimensions fill together. Each request goes to the queue of the dimension it takes the largest
/// fraction of the total in (its queue keeps the largest-first order); the next request comes
/// from the queue whose dimension the prefix has served least, relative to the total.
fn interleave(order: impl Iterator<Item = usize>, items: &[Option<Item>]) -> Vec<usize> {
    let order: Vec<usize> = order.collect();
    let demand = |i: usize| items[i].as_ref().map_or([0; 4], |item| item.demand);
    let mut total = [0u64; 4];
    for &i in &order {
        for (t, d) in total.iter_mut().zip(demand(i)) {
            *t += u64::from(d);
        }
    }
    // Each request joins the queue of the dimension it takes the largest fraction of the total in.
    let mut queues: [std::collections::VecDeque<usize>; 4] = Default::default();
    for &i in &order {
        let dem = demand(i);
        let mut lean = 0;
        for d in 1..4 {
            if u128::from(dem[d]) * u128::from(total[lean]) > u128::from(dem[lean]) * u128::from(total[d]) {
                lean = d;
            }
        }
        queues[lean].push_back(i);
    }
    let mut prefix = [0u64; 4];
    let mut out = Vec::with_capacity(order.len());
    loop {
        // The dimension furthest behind its share of the total among those with requests left.
        let mut next: Option<usize> = None;
        for d in 0..4 {
            if queues[d].is_empty() {
                continue;
            }
            let behind = next.is_none_or(|b| {
                u128::from(prefix[d]) * u128::from(total[b]) < u128::from(prefix[b]) * u128::from(total[d])
            });
            if behind {
                next = Some(d);
            }
        }
        let Some(d) = next else { break };
        let i = queues[d].pop_front().expect("not empty");
        for (p, x) in prefix.iter_mut().zip(demand(i)) {
            *p += u64::from(x);
        }
        out.push(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_dimension_is_the_tightest_total() {
        assert_eq!(primary_dimension(&[50, 10, 10, 1], &[100, 100, 100, 100]), 0);
        assert_eq!(primary_dimension(&[50, 10, 90, 1], &[100, 100, 100, 100]), 2);
        assert_eq!(primary_dimension(&[50, 50, 10, 1], &[100, 100, 100, 100]), 0, "ties go to memory");
        assert_eq!(primary_dimension(&[1, 1, 1, 1], &[100, 0, 100, 100]), 1, "no capacity at all is tightest");
    }

    #[test]
    fn shares_are_fixed_point_fractions() {
        assert_eq!(share(1, 2), 1 << 31);
        assert_eq!(share(0, 0), 0);
        assert_eq!(share(5, 0), u64::MAX);
        assert_eq!(share(u32::MAX, 1), u64::from(u32::MAX) << 32);
    }

    fn item(memory_mib: u32, milliwatts: u32, class: u32) -> Option<Item> {
        Some(Item { demand: [memory_mib, 1, milliwatts, 1], class, group: 0 })
    }

    #[test]
    fn interleaving_keeps_every_prefix_near_the_whole_mix() {
        // Ten big memory-heavy services, then forty tiny power-heavy sensors (largest first).
        let mut items: Vec<Option<Item>> = (0..10).map(|_| item(1000, 100, 0)).collect();
        items.extend((0..40).map(|_| item(10, 100, 0)));
        let order = interleave(0..items.len(), &items);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>(), "a permutation");
        assert_eq!(&order[..2], &[0, 10], "a service, then the first sensor");
        // Each queue keeps its own largest-first order.
        let services: Vec<usize> = order.iter().copied().filter(|i| *i < 10).collect();
        assert_eq!(services, (0..10).collect::<Vec<_>>());
        // Power is 5,000 in all and memory 10,400: after every prefix, each dimension's share of
        // its total is within one request of the other's.
        let (mut memory, mut power) = (0.0, 0.0);
        for &i in &order {
            let d = items[i].as_ref().expect("item").demand;
            memory += f64::from(d[0]) / 10_400.0;
            power += f64::from(d[2]) / 5_000.0;
            assert!((memory - power).abs() <= 0.1, "memory {memory:.2} vs power {power:.2}");
        }
    }

    #[test]
    fn the_balanced_order_puts_scarce_classes_first() {
        let host = crate::Host {
            id: "h".into(),
            arch: Arch::Aarch64,
            capacity: crate::Capacity { memory_mib: 1000, millicores: 1000, max_instances: 1000 },
            power: crate::PowerModel { budget_mw: 1000, active_mw: 0, sleep_mw: 0 },
            labels: Default::default(),
            devices: DeviceSet::NONE,
        };
        let cluster = Cluster::new([host]).expect("a valid host");
        let classes = [Class { types: vec![], scarcity: 1024 }, Class { types: vec![], scarcity: 14 * 1024 }];
        let items = vec![item(500, 1, 0), item(100, 1, 1), item(300, 1, 0)];
        let pending = [0, 1, 2];
        let balanced = order(&items, &pending, &cluster.hosts, &classes, Heuristic::BalancedBestFit);
        assert_eq!(balanced, [1, 0, 2], "the scarce class first, then largest first");
        let textbook = order(&items, &pending, &cluster.hosts, &classes, Heuristic::BestFitDecreasing);
        assert_eq!(textbook, [0, 2, 1], "largest first only");
    }
}
