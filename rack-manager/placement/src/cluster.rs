//! The cluster's state: its hosts, what runs where, and the operations that change it one
//! instance or one host at a time (batch placement lives in `engine`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{
    Heuristic,
    engine::Outcome,
    reason::Unplaceable,
    types::{
        Arch, Dimension, GroupId, Host, HostId, InstanceId, InstanceRequest, LabelConstraint, Resources,
        capacity_vector, demand_vector,
    },
};

/// The hosts of a cluster (a rack, or many) and the instances placed on them.
///
/// Every mutation keeps three invariants, which the property tests check from the outside: no host
/// exceeds its capacity in any dimension, every instance runs on a host that satisfies its
/// architecture, devices and labels, and no two replicas of a group share a host.
///
/// `Clone` is the dry run: [`Cluster::plan`] places onto a copy. Serialised as a [`Snapshot`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "Snapshot", into = "Snapshot")]
pub struct Cluster {
    pub(crate) hosts: Vec<HostState>,
    pub(crate) host_index: HashMap<HostId, u32>,
    pub(crate) instances: HashMap<InstanceId, Placed>,
    pub(crate) group_index: HashMap<GroupId, u32>,
    /// Per group (by interned index), the hosts that run one of its replicas, sorted.
    pub(crate) group_hosts: Vec<Vec<u32>>,
}

#[derive(Debug, Clone)]
pub(crate) struct HostState {
    pub host: Host,
    /// Capacity and use as vectors over [`Dimension::ALL`].
    pub cap: [u32; 4],
    pub used: [u32; 4],
    pub cordoned: bool,
    /// In the order they arrived; drains move them in this order.
    pub instances: Vec<InstanceId>,
}

impl HostState {
    pub fn free(&self, d: usize) -> u32 {
        self.cap[d] - self.used[d]
    }

    pub fn fits(&self, demand: &[u32; 4]) -> bool {
        (0..4).all(|d| demand[d] <= self.free(d))
    }

    pub fn is_active(&self) -> bool {
        self.used[3] > 0
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub request: InstanceRequest,
    pub host: u32,
    pub group: u32,
}

/// A read-only view of one host and its load.
#[derive(Debug, Clone, Copy)]
pub struct HostView<'a> {
    pub host: &'a Host,
    pub used: Resources,
    pub instances: u32,
    /// A cordoned host keeps what it runs but receives nothing new.
    pub cordoned: bool,
}

/// Totals over the cluster. Sums are `u64`: 16,000 hosts overflow `u32` milliwatts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub hosts: u32,
    /// Hosts that run at least one instance (the rest sleep).
    pub active_hosts: u32,
    pub cordoned_hosts: u32,
    pub instances: u64,
    pub used_memory_mib: u64,
    pub used_millicores: u64,
    /// What instances add to their hosts' draw.
    pub instance_mw: u64,
    /// Estimated draw of the whole cluster: active hosts' base plus their instances, plus sleeping
    /// hosts' sleep draw.
    pub estimated_draw_mw: u64,
}

/// An instance moved off a drained host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub instance: InstanceId,
    pub to: HostId,
}

/// One instance's placement in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub instance: InstanceId,
    pub host: HostId,
}

/// An instance a plan could not place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplaced {
    pub instance: InstanceId,
    pub reason: Unplaceable,
}

/// The outcome of placing a batch: every request is in exactly one of the two lists, in request
/// order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub heuristic: Heuristic,
    pub assignments: Vec<Assignment>,
    pub unplaced: Vec<Unplaced>,
    /// Hosts that were asleep (ran nothing) and run something under this plan, in the order woken.
    pub woken: Vec<HostId>,
}

/// The outcome of draining a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub host: HostId,
    /// Instances now running elsewhere.
    pub moves: Vec<Move>,
    /// Instances that found no other host and still run on the drained one.
    pub stayed: Vec<Unplaced>,
    pub woken: Vec<HostId>,
}

/// A cluster as data: the daemon stores it, and sends it with a `plan` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub hosts: Vec<HostSnapshot>,
    pub instances: Vec<PlacedInstance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSnapshot {
    pub host: Host,
    #[serde(default)]
    pub cordoned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedInstance {
    pub request: InstanceRequest,
    pub host: HostId,
}

/// Why a host could not join the cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host {0} is already in the cluster")]
    Duplicate(HostId),
    #[error("host {host}: power budget {budget_mw} mW is below its active draw {active_mw} mW")]
    PowerBudget { host: HostId, budget_mw: u32, active_mw: u32 },
}

/// Why a host could not be removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveHostError {
    #[error("no host {0} in the cluster")]
    Unknown(HostId),
    #[error("host {host} still runs {instances} instances: drain it first")]
    NotEmpty { host: HostId, instances: usize },
}

/// The host named is not in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no host {0} in the cluster")]
pub struct UnknownHost(pub HostId);

/// The instance named is not placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not placed in the cluster")]
pub struct UnknownInstance(pub InstanceId);

/// Why an instance could not be put on the host named (see [`Cluster::assign`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    #[error("no host {0} in the cluster")]
    UnknownHost(HostId),
    #[error("{0} is already placed")]
    Duplicate(InstanceId),
    #[error("{instance} is {wanted} but host {host} is {actual}")]
    Arch { instance: InstanceId, host: HostId, wanted: Arch, actual: Arch },
    #[error("{instance} needs {needed} but host {host} offers {offered}")]
    Devices { instance: InstanceId, host: HostId, needed: crate::DeviceSet, offered: crate::DeviceSet },
    #[error("{instance} requires `{constraint}` which host {host}'s labels do not satisfy")]
    Labels { instance: InstanceId, host: HostId, constraint: LabelConstraint },
    #[error("{instance} needs {needed} of {dimension} but host {host} has {free} free")]
    NoRoom { instance: InstanceId, host: HostId, dimension: Dimension, needed: String, free: String },
    #[error("anti-affinity: host {host} already runs a replica of {group}")]
    AntiAffinity { host: HostId, group: GroupId },
}

/// Why a snapshot does not describe a valid cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot: {0}")]
    Host(#[from] HostError),
    #[error("snapshot: {0}")]
    Instance(#[from] AssignError),
}

impl Cluster {
    /// A cluster of these hosts, all awake-able and running nothing.
    pub fn new(hosts: impl IntoIterator<Item = Host>) -> Result<Cluster, HostError> {
        let mut cluster = Cluster {
            hosts: Vec::new(),
            host_index: HashMap::new(),
            instances: HashMap::new(),
            group_index: HashMap::new(),
            group_hosts: Vec::new(),
        };
        for host in hosts {
            cluster.add_host(host)?;
        }
        Ok(cluster)
    }

    /// Adds a host that runs nothing yet (a new or repaired machine).
    pub fn add_host(&mut self, host: Host) -> Result<(), HostError> {
        if self.host_index.contains_key(&host.id) {
            return Err(HostError::Duplicate(host.id));
        }
        if host.power.budget_mw < host.power.active_mw {
            return Err(HostError::PowerBudget {
                host: host.id,
                budget_mw: host.power.budget_mw,
                active_mw: host.power.active_mw,
            });
        }
        let index = u32::try_from(self.hosts.len()).expect("fewer than 2^32 hosts");
        self.host_index.insert(host.id.clone(), index);
        self.hosts.push(HostState {
            cap: capacity_vector(&host),
            used: [0; 4],
            cordoned: false,
            instances: Vec::new(),
            host,
        });
        Ok(())
    }

    /// Removes a host that runs nothing ([`Cluster::drain`] it first).
    pub fn remove_host(&mut self, id: &HostId) -> Result<Host, RemoveHostError> {
        let index = *self.host_index.get(id).ok_or_else(|| RemoveHostError::Unknown(id.clone()))?;
        let running = self.hosts[index as usize].instances.len();
        if running > 0 {
            return Err(RemoveHostError::NotEmpty { host: id.clone(), instances: running });
        }
        let removed = self.hosts.remove(index as usize);
        self.host_index.remove(id);
        // Hosts after the removed one shift down by one; nothing refers to the removed one.
        for slot in self.host_index.values_mut().filter(|s| **s > index) {
            *slot -= 1;
        }
        for placed in self.instances.values_mut().filter(|p| p.host > index) {
            placed.host -= 1;
        }
        for hosts in &mut self.group_hosts {
            for h in hosts.iter_mut().filter(|h| **h > index) {
                *h -= 1;
            }
        }
        Ok(removed.host)
    }

    /// Marks a host as receiving nothing new (`true`), or as schedulable again (`false`).
    /// What it runs stays; [`Cluster::drain`] cordons and moves.
    pub fn set_cordoned(&mut self, id: &HostId, cordoned: bool) -> Result<(), UnknownHost> {
        let index = self.index_of(id).ok_or_else(|| UnknownHost(id.clone()))?;
        self.hosts[index].cordoned = cordoned;
        Ok(())
    }

    /// Puts an instance on a named host, checking everything placement would check except the
    /// cordon: this is how the daemon rebuilds the cluster from what its hosts report running.
    pub fn assign(&mut self, request: InstanceRequest, host: &HostId) -> Result<(), AssignError> {
        let index = self.index_of(host).ok_or_else(|| AssignError::UnknownHost(host.clone()))?;
        if self.instances.contains_key(&request.id) {
            return Err(AssignError::Duplicate(request.id));
        }
        let state = &self.hosts[index];
        let (instance, h) = (request.id, &state.host);
        if h.arch != request.arch {
            return Err(AssignError::Arch { instance, host: host.clone(), wanted: request.arch, actual: h.arch });
        }
        if !h.devices.covers(request.devices) {
            return Err(AssignError::Devices {
                instance,
                host: host.clone(),
                needed: request.devices,
                offered: h.devices,
            });
        }
        if let Some(c) = request.constraints.iter().find(|c| !c.holds(&h.labels)) {
            return Err(AssignError::Labels { instance, host: host.clone(), constraint: c.clone() });
        }
        let demand = demand_vector(&request.demand);
        if let Some(d) = Dimension::ALL.into_iter().find(|d| demand[d.index()] > state.free(d.index())) {
            return Err(AssignError::NoRoom {
                instance,
                host: host.clone(),
                dimension: d,
                needed: d.amount(demand[d.index()].into()),
                free: d.amount(state.free(d.index()).into()),
            });
        }
        let group = self.intern_group(&request.group);
        let index = index as u32;
        if self.group_hosts[group as usize].binary_search(&index).is_ok() {
            return Err(AssignError::AntiAffinity { host: host.clone(), group: request.group });
        }
        self.commit(request, index, group);
        Ok(())
    }

    /// Stops tracking an instance (it was stopped, or its host reported it gone) and returns its
    /// request and the host it ran on. A host left with nothing may sleep.
    pub fn remove(&mut self, id: InstanceId) -> Result<(InstanceRequest, HostId), UnknownInstance> {
        let placed = self.uncommit(id).ok_or(UnknownInstance(id))?;
        Ok((placed.request, self.hosts[placed.host as usize].host.id.clone()))
    }

    /// Cordons a host and moves its instances elsewhere, respecting every constraint including
    /// anti-affinity. Instances that fit nowhere else stay where they are and are reported, with
    /// reasons; the host stays cordoned either way (un-cordon with [`Cluster::set_cordoned`]).
    pub fn drain(&mut self, id: &HostId, heuristic: Heuristic) -> Result<Drain, UnknownHost> {
        let index = self.index_of(id).ok_or_else(|| UnknownHost(id.clone()))?;
        self.hosts[index].cordoned = true;
        let ids = self.hosts[index].instances.clone();
        let requests: Vec<InstanceRequest> =
            ids.iter().filter_map(|i| self.uncommit(*i)).map(|placed| placed.request).collect();
        let (outcomes, mut leftovers, woken) = self.place_batch(requests, heuristic);
        let mut drain = Drain { host: id.clone(), moves: Vec::new(), stayed: Vec::new(), woken };
        for ((outcome, instance), leftover) in outcomes.into_iter().zip(ids).zip(&mut leftovers) {
            match outcome {
                Outcome::Placed(to) => drain.moves.push(Move { instance, to: self.hosts[to as usize].host.id.clone() }),
                Outcome::Failed(reason) => {
                    let request = leftover.take().expect("a failed request is handed back");
                    let group = self.intern_group(&request.group);
                    // It ran here a moment ago, so it still fits and breaks no anti-affinity.
                    self.commit(request, index as u32, group);
                    drain.stayed.push(Unplaced { instance, reason });
                }
                Outcome::Pending => unreachable!("every request of a batch is decided"),
            }
        }
        Ok(drain)
    }

    /// The host an instance runs on.
    pub fn host_of(&self, id: InstanceId) -> Option<&HostId> {
        self.instances.get(&id).map(|p| &self.hosts[p.host as usize].host.id)
    }

    /// The request an instance was placed with.
    pub fn request(&self, id: InstanceId) -> Option<&InstanceRequest> {
        self.instances.get(&id).map(|p| &p.request)
    }

    /// One host and its load.
    pub fn host(&self, id: &HostId) -> Option<HostView<'_>> {
        self.index_of(id).map(|i| self.view(i))
    }

    /// Every host, in the order added.
    pub fn hosts(&self) -> impl Iterator<Item = HostView<'_>> {
        (0..self.hosts.len()).map(|i| self.view(i))
    }

    /// The instances on a host, in the order they arrived.
    pub fn instances_on(&self, id: &HostId) -> Option<impl Iterator<Item = &InstanceRequest>> {
        let index = self.index_of(id)?;
        Some(self.hosts[index].instances.iter().filter_map(|i| self.instances.get(i)).map(|p| &p.request))
    }

    /// Every placed instance and its host, host by host in host order.
    pub fn placements(&self) -> impl Iterator<Item = (&InstanceRequest, &HostId)> {
        self.hosts.iter().flat_map(move |h| {
            h.instances.iter().filter_map(|i| self.instances.get(i)).map(move |p| (&p.request, &h.host.id))
        })
    }

    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// Totals, and the estimated power draw of the whole cluster.
    pub fn stats(&self) -> Stats {
        let mut s = Stats { hosts: self.hosts.len() as u32, ..Stats::default() };
        for h in &self.hosts {
            s.cordoned_hosts += u32::from(h.cordoned);
            s.instances += u64::from(h.used[3]);
            s.used_memory_mib += u64::from(h.used[0]);
            s.used_millicores += u64::from(h.used[1]);
            s.instance_mw += u64::from(h.used[2]);
            if h.is_active() {
                s.active_hosts += 1;
                s.estimated_draw_mw += u64::from(h.host.power.active_mw) + u64::from(h.used[2]);
            } else {
                s.estimated_draw_mw += u64::from(h.host.power.sleep_mw);
            }
        }
        s
    }

    /// The cluster as data, hosts in order and each host's instances in arrival order, so that
    /// [`Cluster::try_from`] rebuilds the same state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            hosts: self.hosts.iter().map(|h| HostSnapshot { host: h.host.clone(), cordoned: h.cordoned }).collect(),
            instances: self
                .placements()
                .map(|(request, host)| PlacedInstance { request: request.clone(), host: host.clone() })
                .collect(),
        }
    }

    pub(crate) fn index_of(&self, id: &HostId) -> Option<usize> {
        self.host_index.get(id).map(|i| *i as usize)
    }

    fn view(&self, index: usize) -> HostView<'_> {
        let h = &self.hosts[index];
        HostView {
            host: &h.host,
            used: Resources { memory_mib: h.used[0], millicores: h.used[1], milliwatts: h.used[2] },
            instances: h.used[3],
            cordoned: h.cordoned,
        }
    }

    pub(crate) fn intern_group(&mut self, group: &GroupId) -> u32 {
        if let Some(g) = self.group_index.get(group) {
            return *g;
        }
        let g = u32::try_from(self.group_hosts.len()).expect("fewer than 2^32 groups");
        self.group_index.insert(group.clone(), g);
        self.group_hosts.push(Vec::new());
        g
    }

    /// Records a placement the caller has checked.
    pub(crate) fn commit(&mut self, request: InstanceRequest, host: u32, group: u32) {
        let demand = demand_vector(&request.demand);
        let state = &mut self.hosts[host as usize];
        for (used, d) in state.used.iter_mut().zip(demand) {
            *used += d;
        }
        debug_assert!(state.used.iter().zip(state.cap).all(|(u, c)| *u <= c), "over capacity");
        state.instances.push(request.id);
        let replicas = &mut self.group_hosts[group as usize];
        let at = replicas.binary_search(&host).expect_err("anti-affinity was checked");
        replicas.insert(at, host);
        self.instances.insert(request.id, Placed { request, host, group });
    }

    pub(crate) fn uncommit(&mut self, id: InstanceId) -> Option<Placed> {
        let placed = self.instances.remove(&id)?;
        let state = &mut self.hosts[placed.host as usize];
        for (used, d) in state.used.iter_mut().zip(demand_vector(&placed.request.demand)) {
            *used -= d;
        }
        if let Some(at) = state.instances.iter().position(|i| *i == id) {
            state.instances.remove(at);
        }
        let replicas = &mut self.group_hosts[placed.group as usize];
        if let Ok(at) = replicas.binary_search(&placed.host) {
            replicas.remove(at);
        }
        Some(placed)
    }
}

impl From<Cluster> for Snapshot {
    fn from(cluster: Cluster) -> Snapshot {
        cluster.snapshot()
    }
}

impl TryFrom<Snapshot> for Cluster {
    type Error = SnapshotError;

    fn try_from(snapshot: Snapshot) -> Result<Cluster, SnapshotError> {
        let mut cluster = Cluster::new(snapshot.hosts.iter().map(|h| h.host.clone()))?;
        for h in snapshot.hosts.iter().filter(|h| h.cordoned) {
            cluster.set_cordoned(&h.host.id, true).expect("the host was just added");
        }
        for placed in snapshot.instances {
            cluster.assign(placed.request, &placed.host)?;
        }
        Ok(cluster)
    }
}
