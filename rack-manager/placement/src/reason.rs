//! Why an instance could not be placed, specifically enough to act on.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::{Arch, DeviceSet, Dimension, GroupId, InstanceId, InstanceRequest, LabelConstraint, Resources};

/// The kind of host a request asked for, for messages: `aarch64 host`, or
/// `aarch64 host offering block and matching zone=a, !gpu`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wanted {
    pub arch: Arch,
    pub devices: DeviceSet,
    pub constraints: Vec<LabelConstraint>,
}

impl Wanted {
    pub fn of(request: &InstanceRequest) -> Wanted {
        Wanted { arch: request.arch, devices: request.devices, constraints: request.constraints.clone() }
    }
}

impl fmt::Display for Wanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} host", self.arch)?;
        let offering = !self.devices.is_empty();
        if offering {
            write!(f, " offering {}", self.devices)?;
        }
        if !self.constraints.is_empty() {
            let list: Vec<String> = self.constraints.iter().map(ToString::to_string).collect();
            write!(f, "{} matching {}", if offering { " and" } else { "" }, list.join(", "))?;
        }
        Ok(())
    }
}

/// Why one instance of a plan stays unplaced. The checks run in the order of the variants, so the
/// reason given is the first obstacle: a request for an architecture the cluster lacks says so,
/// rather than that some host is full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Unplaceable {
    /// The instance id is already placed, or appears more than once in the request.
    Duplicate { instance: InstanceId },
    /// No host of the architecture.
    NoArch { arch: Arch },
    /// Hosts of the architecture exist, but none offers the devices.
    NoDevices { arch: Arch, devices: DeviceSet },
    /// Hosts with the architecture and devices exist, but none satisfies the label constraints.
    NoLabels { wanted: Wanted },
    /// Every host that would do is cordoned (being drained, or taken out by an operator).
    Cordoned { wanted: Wanted, hosts: u32 },
    /// Every host that would do already runs a replica of the group.
    AntiAffinity { group: GroupId, hosts: u32 },
    /// No host that would do has enough of one dimension free; `most_free` is the most any has.
    NoRoom { wanted: Wanted, dimension: Dimension, needed: u64, most_free: u64 },
    /// Each dimension is free on some host that would do, but no host has all of them at once.
    Fragmented { wanted: Wanted, demand: Resources },
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unplaceable::Duplicate { instance } => {
                write!(f, "{instance} is already placed, or appears twice in the request")
            }
            Unplaceable::NoArch { arch } => write!(f, "no {arch} host in the cluster"),
            Unplaceable::NoDevices { arch, devices } => write!(f, "no {arch} host offers {devices}"),
            Unplaceable::NoLabels { wanted } => write!(f, "no {wanted} in the cluster"),
            Unplaceable::Cordoned { wanted, hosts: 1 } => write!(f, "the only {wanted} is cordoned"),
            Unplaceable::Cordoned { wanted, hosts } => write!(f, "all {hosts} hosts of kind `{wanted}` are cordoned"),
            Unplaceable::AntiAffinity { group, hosts: 1 } => {
                write!(f, "anti-affinity: the only eligible host already runs a replica of {group}")
            }
            Unplaceable::AntiAffinity { group, hosts } => {
                write!(f, "anti-affinity: all {hosts} eligible hosts already run a replica of {group}")
            }
            Unplaceable::NoRoom { wanted, dimension, needed, most_free } => write!(
                f,
                "no {wanted} with {} free (the most free on one is {})",
                dimension.amount(*needed),
                if *dimension == Dimension::Instances && *most_free == 0 {
                    "none".to_owned()
                } else {
                    dimension.amount(*most_free)
                }
            ),
            Unplaceable::Fragmented { wanted, demand } => write!(
                f,
                "no {wanted} has {}, {}, {} and an instance slot free at once",
                Dimension::Memory.amount(demand.memory_mib.into()),
                Dimension::Cpu.amount(demand.millicores.into()),
                Dimension::Power.amount(demand.milliwatts.into()),
            ),
        }
    }
}

impl std::error::Error for Unplaceable {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Device;

    #[test]
    fn messages_name_the_kind_of_host_and_the_obstacle() {
        let wanted = |devices: &[Device], constraints: &[&str]| Wanted {
            arch: Arch::Aarch64,
            devices: DeviceSet::of(devices),
            constraints: constraints.iter().map(|c| c.parse().expect("valid")).collect(),
        };
        assert_eq!(wanted(&[], &[]).to_string(), "aarch64 host");
        assert_eq!(wanted(&[Device::Block], &[]).to_string(), "aarch64 host offering block");
        assert_eq!(wanted(&[], &["zone=a", "!gpu"]).to_string(), "aarch64 host matching zone=a, !gpu");
        assert_eq!(wanted(&[Device::Net], &["gpu"]).to_string(), "aarch64 host offering net and matching gpu");
        let cordoned = Unplaceable::Cordoned { wanted: wanted(&[], &["zone=a"]), hosts: 3 };
        assert_eq!(cordoned.to_string(), "all 3 hosts of kind `aarch64 host matching zone=a` are cordoned");
        let room = Unplaceable::NoRoom {
            wanted: Wanted { arch: Arch::X86_64, devices: DeviceSet::NONE, constraints: vec![] },
            dimension: Dimension::Memory,
            needed: 512,
            most_free: 300,
        };
        assert_eq!(room.to_string(), "no x86_64 host with 512 MiB free (the most free on one is 300 MiB)");
    }
}
