//! Placement, as one call: which host each new replica goes to.
//!
//! This is the seam where the pure placement crate (`rack-manager/placement`, being written
//! separately) plugs in: the daemon builds [`Candidate`]s from the store and calls [`place`],
//! nothing else. Until that crate exists, this is a simple spread: each replica goes to the
//! ready host that can boot the image's architecture and has room for it (memory and vCPUs), with
//! the fewest instances of the same appliance (anti-affinity), then the most free memory.

use std::fmt;

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

/// One host per replica, or why there is none. Deterministic: the same input gives the same plan.
pub fn place(hosts: &[Candidate], request: &Request) -> Result<Vec<String>, PlaceError> {
    let mut usable: Vec<Candidate> = hosts.iter().filter(|h| h.arches.contains(&request.arch)).cloned().collect();
    if usable.is_empty() {
        return Err(PlaceError {
            message: format!("no ready host can boot {} appliances", request.arch),
            hint: "add a host that can (x86_64 needs KVM), or push the image built for another architecture".into(),
        });
    }
    let mut plan = Vec::with_capacity(request.replicas as usize);
    for replica in 0..request.replicas {
        let best = usable
            .iter_mut()
            .filter(|h| h.free_memory_mib >= u64::from(request.memory_mib) && h.free_vcpus >= u64::from(request.vcpus))
            .min_by(|a, b| {
                a.same_appliance
                    .cmp(&b.same_appliance)
                    .then(b.free_memory_mib.cmp(&a.free_memory_mib))
                    .then(a.name.cmp(&b.name))
            });
        let Some(host) = best else {
            let free: u64 = usable.iter().map(|h| h.free_memory_mib).sum();
            return Err(PlaceError {
                message: format!(
                    "only {replica} of {} replicas fit: each needs {} MiB and {} vCPU, and the {} usable host(s) have {free} MiB free in all",
                    request.replicas,
                    request.memory_mib,
                    request.vcpus,
                    usable.len()
                ),
                hint: "deploy fewer replicas, give each less memory (--mem), or add hosts".into(),
            });
        };
        host.free_memory_mib -= u64::from(request.memory_mib);
        host.free_vcpus -= u64::from(request.vcpus);
        host.same_appliance += 1;
        plan.push(host.name.clone());
    }
    Ok(plan)
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

    #[test]
    fn replicas_spread_across_hosts() {
        let plan = place(&[host("a", 1024), host("b", 1024), host("c", 1024)], &request(30)).expect("fits");
        for name in ["a", "b", "c"] {
            assert_eq!(plan.iter().filter(|h| *h == name).count(), 10, "{plan:?}");
        }
    }

    #[test]
    fn impossible_placements_say_why() {
        let error = place(&[host("a", 40)], &request(3)).expect_err("only two fit");
        assert!(error.message.starts_with("only 2 of 3 replicas fit"), "{error}");
        let error = place(&[host("a", 1024)], &Request { arch: "x86_64".into(), ..request(1) }).expect_err("arch");
        assert!(error.message.contains("x86_64"), "{error}");
    }

    #[test]
    fn thousands_of_hosts_place_quickly_and_evenly() {
        let hosts: Vec<Candidate> = (0..2000).map(|i| host(&format!("h{i:04}"), 256)).collect();
        let plan = place(&hosts, &request(4000)).expect("fits");
        let mut counts = std::collections::HashMap::new();
        for h in &plan {
            *counts.entry(h).or_insert(0) += 1;
        }
        assert!(counts.values().all(|&n| n == 2), "uneven spread");
    }
}
