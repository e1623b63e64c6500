//! A seeded, realistic cluster and workload, shared by the bench and the tests.
//!
//! The rack is the one in the README: 16 hosts at a cell-tower point of presence, mostly ARM.
//! The workload is what such a rack runs for 5,000–10,000 nearby users: most instances are tiny
//! and mostly asleep (sensor gateways, small HTTP front ends), some are services of a few hundred
//! MiB, a few need a block device or the rack's accelerator. The figures below are a model, chosen
//! so that memory is the dimension that fills first, power (what instances add) follows at about
//! 80% of it, and CPU shares and instance slots have room, as on an edge rack of idle appliances.
//!
//! Everything derives from a seed through [`SplitMix64`], so the same seed gives the same hosts
//! and requests on every machine.

use std::collections::BTreeMap;

use crate::types::{Arch, Capacity, Device, DeviceSet, Host, InstanceRequest, LabelConstraint, PowerModel, Resources};

/// SplitMix64 (Steele, Lea and Flood, 2014): tiny, fast, and good enough for workloads.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub const fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for the `n` used here).
    pub fn below(&mut self, n: u32) -> u32 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u32
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `lo..=hi`, a multiple of `step` above `lo`.
    pub fn step(&mut self, lo: u32, hi: u32, step: u32) -> u32 {
        lo + step * self.below((hi - lo) / step + 1)
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u32) -> bool {
        self.below(100) < percent
    }
}

pub const HOSTS_PER_RACK: u32 = 16;

/// The 16 hosts of rack `rack`, named `r<rack>-h<n>`:
///
/// - `h0`–`h13`: aarch64, 64 GiB, 64 cores, up to 1,024 instances, 180 W budget of which 60 W is
///   the host awake, 4 W asleep; `h13` carries an inference accelerator, so 300 W and 80 W awake;
/// - `h14`, `h15`: x86_64, 64 GiB, 48 cores, 300 W budget, 100 W awake, 8 W asleep;
/// - labels `rack=r<rack>`, `zone=a` on even and `zone=b` on odd hosts, `gpu=true` on `h13`;
/// - every host offers `net`; all but `h3`, `h7` and `h11` offer `block`.
pub fn rack(rack: u32) -> Vec<Host> {
    (0..HOSTS_PER_RACK)
        .map(|n| {
            let arm = n < 14;
            let mut labels = BTreeMap::new();
            labels.insert("rack".to_owned(), format!("r{rack}"));
            labels.insert("zone".to_owned(), if n % 2 == 0 { "a" } else { "b" }.to_owned());
            if n == 13 {
                labels.insert("gpu".to_owned(), "true".to_owned());
            }
            let devices = if matches!(n, 3 | 7 | 11) { vec![Device::Net] } else { vec![Device::Net, Device::Block] };
            Host {
                id: format!("r{rack}-h{n}").as_str().into(),
                arch: if arm { Arch::Aarch64 } else { Arch::X86_64 },
                capacity: Capacity {
                    memory_mib: 64 * 1024,
                    millicores: if arm { 64_000 } else { 48_000 },
                    max_instances: 1024,
                },
                power: if n == 13 {
                    PowerModel { budget_mw: 300_000, active_mw: 80_000, sleep_mw: 5_000 }
                } else if arm {
                    PowerModel { budget_mw: 180_000, active_mw: 60_000, sleep_mw: 4_000 }
                } else {
                    PowerModel { budget_mw: 300_000, active_mw: 100_000, sleep_mw: 8_000 }
                },
                labels,
                devices: DeviceSet::of(&devices),
            }
        })
        .collect()
}

/// `racks` racks of [`rack`]'s hosts.
pub fn racks(racks: u32) -> Vec<Host> {
    (0..racks).flat_map(rack).collect()
}

/// The kinds of appliance in the mix, with their share of deployments (groups).
///
/// | kind | groups | memory MiB | millicores | replicas | needs |
/// |---|---|---|---|---|---|
/// | `sensor` | 55% | 16–64 | 5–50 | 1 | net |
/// | `httpd` | 25% | 32–128 | 10–100 | 2–3 | net |
/// | `svc` | 14% | 256–1024 | 50–500 | 1–3 | net, 30% block |
/// | `store` | 5% | 512–1024 | 100–500 | 3 | net, block |
/// | `infer` | 1% | 512–1024 | 500–1500 | 1 | net, `gpu` label, aarch64 |
///
/// An instance adds 20 mW plus 2.5 mW per millicore (2.5 W a busy core). 88% of groups are
/// aarch64; x86_64 groups have at most 2 replicas (a rack has 2 x86_64 hosts). Of the other
/// aarch64 groups, 6% require `zone=a`, 6% `zone=b`, and 10% avoid the accelerator host (`!gpu`).
///
/// Groups are generated until `count` instances exist (the last group may lose replicas);
/// instance ids are `0..count` and group names `<kind>-<n>`.
pub fn instances(seed: u64, count: usize) -> Vec<InstanceRequest> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(count);
    let mut group = 0u32;
    while out.len() < count {
        let roll = rng.below(100);
        let (kind, memory_mib, millicores, mut replicas, block, gpu) = match roll {
            0..55 => ("sensor", *pick(&mut rng, &[16, 24, 32, 48, 64]), rng.range(5, 50), 1, false, false),
            55..80 => {
                ("httpd", *pick(&mut rng, &[32, 48, 64, 96, 128]), rng.range(10, 100), rng.range(2, 3), false, false)
            }
            80..94 => ("svc", rng.step(256, 1024, 64), rng.step(50, 500, 50), rng.range(1, 3), rng.percent(30), false),
            94..99 => ("store", rng.step(512, 1024, 128), rng.step(100, 500, 50), 3, true, false),
            _ => ("infer", rng.step(512, 1024, 128), rng.step(500, 1500, 250), 1, false, true),
        };
        let arch = if gpu || rng.percent(88) { Arch::Aarch64 } else { Arch::X86_64 };
        let mut constraints = Vec::new();
        if gpu {
            constraints.push(LabelConstraint::Present("gpu".to_owned()));
        } else if arch == Arch::Aarch64 {
            match rng.below(100) {
                0..6 => constraints.push(zone("a")),
                6..12 => constraints.push(zone("b")),
                12..22 => constraints.push(LabelConstraint::Absent("gpu".to_owned())),
                _ => {}
            }
        } else {
            replicas = replicas.min(2);
        }
        let mut devices = vec![Device::Net];
        if block {
            devices.push(Device::Block);
        }
        let name = format!("{kind}-{group}");
        group += 1;
        for _ in 0..replicas {
            if out.len() == count {
                break;
            }
            let demand = Resources { memory_mib, millicores, milliwatts: 20 + millicores * 5 / 2 };
            let mut request = InstanceRequest::new(out.len() as u64, &name, arch, demand).with_devices(&devices);
            request.constraints.clone_from(&constraints);
            out.push(request);
        }
    }
    out
}

fn zone(name: &str) -> LabelConstraint {
    LabelConstraint::Equals { key: "zone".to_owned(), value: name.to_owned() }
}

fn pick<'a, T>(rng: &mut SplitMix64, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u32) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_and_stays_in_range() {
        // The first outputs for seed 0 of the reference implementation.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        for _ in 0..10_000 {
            let v = rng.range(3, 7);
            assert!((3..=7).contains(&v));
            assert_eq!(rng.step(256, 1024, 64) % 64, 0);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_workload() {
        assert_eq!(instances(42, 500), instances(42, 500));
        assert_ne!(instances(42, 500), instances(43, 500));
        assert_eq!(instances(1, 1234).len(), 1234);
    }

    #[test]
    fn the_mix_is_mostly_tiny_and_mostly_arm() {
        let requests = instances(7, 20_000);
        let tiny = requests.iter().filter(|r| r.demand.memory_mib <= 64).count();
        let arm = requests.iter().filter(|r| r.arch == Arch::Aarch64).count();
        let constrained = requests.iter().filter(|r| !r.constraints.is_empty()).count();
        assert!(tiny * 100 / requests.len() >= 40, "tiny: {tiny}");
        assert!(arm * 100 / requests.len() >= 80, "aarch64: {arm}");
        assert!((1000..6000).contains(&constrained), "constrained: {constrained}");
        let hosts = racks(2);
        assert_eq!(hosts.len(), 32);
        assert_eq!(hosts[17].id.0, "r1-h1");
    }
}
