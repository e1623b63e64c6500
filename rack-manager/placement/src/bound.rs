//! A lower bound on the hosts a set of instances needs, to judge a plan against.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{
    cluster::Cluster,
    types::{Arch, Dimension, GroupId, Host, InstanceRequest, capacity_vector, demand_vector},
};

/// No placement of the instances can use fewer hosts than `hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowerBound {
    pub hosts: u64,
    /// One entry per architecture that has instances.
    pub per_arch: Vec<ArchBound>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchBound {
    pub arch: Arch,
    pub hosts: u64,
    /// What sets the bound: a dimension, or `None` for anti-affinity (a group with more replicas
    /// than any dimension needs hosts).
    pub binding: Option<Dimension>,
    /// The hosts of this architecture cannot hold the total demand at all, even packed perfectly.
    pub over_capacity: bool,
}

/// The lower bound of hosts for `requests` on `hosts`.
///
/// For identical hosts it is the familiar `max over dimensions of ⌈Σ demand / capacity⌉`. Hosts
/// may differ, so it is computed as: per dimension, the fewest hosts whose capacities, largest
/// first, add up to the total demand (which is `⌈Σ demand / capacity⌉` when they are equal).
/// An instance runs only on a host of its architecture and every host has one, so each
/// architecture needs its own hosts and the bound is the sum of the per-architecture bounds,
/// each at least the size of the largest group (replicas need distinct hosts).
///
/// Devices and labels are ignored (they only restrict where instances go, so the bound stays
/// valid, just less tight). Cordons are ignored too: the bound is about the hosts given.
pub fn lower_bound<'a>(hosts: &[Host], requests: impl IntoIterator<Item = &'a InstanceRequest>) -> LowerBound {
    let mut demand: HashMap<Arch, [u64; 4]> = HashMap::new();
    let mut groups: HashMap<(Arch, &GroupId), u64> = HashMap::new();
    for r in requests {
        let total = demand.entry(r.arch).or_default();
        for (t, d) in total.iter_mut().zip(demand_vector(&r.demand)) {
            *t += u64::from(d);
        }
        *groups.entry((r.arch, &r.group)).or_default() += 1;
    }
    let mut bound = LowerBound { hosts: 0, per_arch: Vec::new() };
    for arch in Arch::ALL {
        let Some(total) = demand.get(&arch) else { continue };
        let caps: Vec<[u32; 4]> = hosts.iter().filter(|h| h.arch == arch).map(capacity_vector).collect();
        let replicas = groups.iter().filter(|((a, _), _)| *a == arch).map(|(_, n)| *n).max().unwrap_or(0);
        let mut b = ArchBound { arch, hosts: 0, binding: None, over_capacity: false };
        for dimension in Dimension::ALL {
            let d = dimension.index();
            let mut sizes: Vec<u64> = caps.iter().map(|c| u64::from(c[d])).collect();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            let (mut k, mut sum) = (0u64, 0u64);
            for size in sizes {
                if sum >= total[d] {
                    break;
                }
                sum += size;
                k += 1;
            }
            b.over_capacity |= sum < total[d];
            if k > b.hosts {
                b.hosts = k;
                b.binding = Some(dimension);
            }
        }
        if replicas > b.hosts {
            b.hosts = replicas;
            b.binding = None;
        }
        bound.hosts += b.hosts;
        bound.per_arch.push(b);
    }
    bound
}

impl Cluster {
    /// The lower bound of hosts for what the cluster runs now, to compare with
    /// [`crate::Stats::active_hosts`].
    pub fn lower_bound(&self) -> LowerBound {
        let hosts: Vec<Host> = self.hosts().map(|v| v.host.clone()).collect();
        lower_bound(&hosts, self.placements().map(|(r, _)| r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capacity, PowerModel, Resources};

    fn host(name: &str, arch: Arch, memory_mib: u32) -> Host {
        Host {
            id: name.into(),
            arch,
            capacity: Capacity { memory_mib, millicores: 100_000, max_instances: 1000 },
            power: PowerModel { budget_mw: 1_000_000, active_mw: 0, sleep_mw: 0 },
            labels: Default::default(),
            devices: Default::default(),
        }
    }

    fn req(id: u64, group: &str, arch: Arch, memory_mib: u32) -> InstanceRequest {
        InstanceRequest::new(id, group, arch, Resources { memory_mib, millicores: 1, milliwatts: 1 })
    }

    #[test]
    fn homogeneous_hosts_give_the_ceiling_of_the_tightest_dimension() {
        let hosts: Vec<Host> = (0..10).map(|i| host(&format!("h{i}"), Arch::Aarch64, 1000)).collect();
        let requests: Vec<_> = (0..25).map(|i| req(i, &format!("g{i}"), Arch::Aarch64, 100)).collect();
        let b = lower_bound(&hosts, &requests);
        assert_eq!(b.hosts, 3, "2500 MiB on 1000 MiB hosts");
        assert_eq!(b.per_arch[0].binding, Some(Dimension::Memory));
        assert!(!b.per_arch[0].over_capacity);
    }

    #[test]
    fn heterogeneous_hosts_count_the_largest_first_and_arches_add_up() {
        let hosts = vec![
            host("small", Arch::Aarch64, 500),
            host("big", Arch::Aarch64, 2000),
            host("mid", Arch::Aarch64, 1000),
            host("x", Arch::X86_64, 1000),
        ];
        let mut requests: Vec<_> = (0..25).map(|i| req(i, &format!("g{i}"), Arch::Aarch64, 100)).collect();
        requests.push(req(100, "x", Arch::X86_64, 10));
        let b = lower_bound(&hosts, &requests);
        assert_eq!(b.per_arch[0].hosts, 2, "2500 MiB: big + mid");
        assert_eq!(b.per_arch[1].hosts, 1);
        assert_eq!(b.hosts, 3);
    }

    #[test]
    fn a_large_group_needs_a_host_per_replica_and_overload_is_flagged() {
        let hosts: Vec<Host> = (0..4).map(|i| host(&format!("h{i}"), Arch::Aarch64, 1000)).collect();
        let requests: Vec<_> = (0..3).map(|i| req(i, "web", Arch::Aarch64, 10)).collect();
        let b = lower_bound(&hosts, &requests);
        assert_eq!((b.hosts, b.per_arch[0].binding), (3, None));
        let heavy: Vec<_> = (0..50).map(|i| req(i, &format!("g{i}"), Arch::Aarch64, 100)).collect();
        let b = lower_bound(&hosts, &heavy);
        assert!(b.per_arch[0].over_capacity);
        assert_eq!(b.hosts, 4);
        assert_eq!(lower_bound(&hosts, &[]).hosts, 0);
    }
}
