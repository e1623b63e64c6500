//! The vocabulary of placement: hosts, instance requests, resources and constraints.
//!
//! Every type here is plain data with serde derives, because the daemon sends plans (and the
//! requests and hosts behind them) over its API.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A CPU architecture. Serialised as `"aarch64"` / `"x86_64"`, the same spelling as
/// `images::Arch`, so the daemon converts between the two by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Arch {
    #[serde(rename = "aarch64")]
    Aarch64,
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Aarch64, Arch::X86_64];

    pub const fn name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::X86_64 => "x86_64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kind of virtio device a host can give an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// A network interface (virtio-net on a tap).
    Net,
    /// A block device (virtio-blk on local storage).
    Block,
}

impl Device {
    pub const ALL: [Device; 2] = [Device::Net, Device::Block];

    const fn bit(self) -> u8 {
        match self {
            Device::Net => 1,
            Device::Block => 2,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Device::Net => "net",
            Device::Block => "block",
        }
    }
}

/// A set of device kinds: what a host offers, or what an instance needs. Serialised as a list,
/// `["net", "block"]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "Vec<Device>", into = "Vec<Device>")]
pub struct DeviceSet(u8);

impl DeviceSet {
    pub const NONE: DeviceSet = DeviceSet(0);

    pub fn of(devices: &[Device]) -> DeviceSet {
        DeviceSet(devices.iter().fold(0, |bits, d| bits | d.bit()))
    }

    pub const fn contains(self, device: Device) -> bool {
        self.0 & device.bit() != 0
    }

    /// Whether every device in `needed` is in `self`.
    pub const fn covers(self, needed: DeviceSet) -> bool {
        needed.0 & !self.0 == 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Device> {
        Device::ALL.into_iter().filter(move |d| self.contains(*d))
    }
}

impl From<Vec<Device>> for DeviceSet {
    fn from(devices: Vec<Device>) -> DeviceSet {
        DeviceSet::of(&devices)
    }
}

impl From<DeviceSet> for Vec<Device> {
    fn from(set: DeviceSet) -> Vec<Device> {
        set.iter().collect()
    }
}

impl fmt::Display for DeviceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Device::name).collect();
        if names.is_empty() { f.write_str("no devices") } else { f.write_str(&names.join(" and ")) }
    }
}

/// A host's name, as the daemon's store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostId(pub String);

impl From<&str> for HostId {
    fn from(s: &str) -> HostId {
        HostId(s.to_owned())
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One instance of an appliance, unique across the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub u64);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "instance {}", self.0)
    }
}

/// A deployment: its instances are replicas of one another, and no two of them share a host
/// (anti-affinity), so that losing a host loses at most one replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupId(pub String);

impl From<&str> for GroupId {
    fn from(s: &str) -> GroupId {
        GroupId(s.to_owned())
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one instance uses while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// Guest memory (the appliance's `memory_mib`); memory is never overcommitted.
    pub memory_mib: u32,
    /// CPU shares in thousandths of a host core; an appliance that mostly sleeps asks for little.
    pub millicores: u32,
    /// Estimated power the instance adds to its host's draw, in milliwatts.
    pub milliwatts: u32,
}

/// What a host can hold, apart from power (see [`PowerModel`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capacity {
    /// Memory available to guests.
    pub memory_mib: u32,
    /// CPU shares available to guests, in thousandths of a core.
    pub millicores: u32,
    /// The most instances the host runs at once (tap devices, VMM processes, supervision).
    pub max_instances: u32,
}

/// A host's power: it sleeps when it runs nothing, and draws a base plus what its instances add
/// while awake, which must stay within its budget (the rack's power feed is shared and finite).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PowerModel {
    /// The most the host may draw, in milliwatts.
    pub budget_mw: u32,
    /// What the host draws awake with no instances (CPU, memory, NIC), in milliwatts.
    pub active_mw: u32,
    /// What the host draws asleep (suspend-to-RAM, BMC), in milliwatts.
    pub sleep_mw: u32,
}

impl PowerModel {
    /// The milliwatts left for instances once the host is awake.
    pub const fn for_instances_mw(&self) -> u32 {
        self.budget_mw.saturating_sub(self.active_mw)
    }
}

/// A host of the rack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub id: HostId,
    pub arch: Arch,
    pub capacity: Capacity,
    pub power: PowerModel,
    /// `key=value` labels that instances can require or avoid (`zone=a`, `gpu=true`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The device kinds the host can give instances.
    #[serde(default)]
    pub devices: DeviceSet,
}

/// A requirement on a host's labels, written as in a manifest:
///
/// | text | holds when the host's labels … |
/// |---|---|
/// | `zone=a` | have `zone` set to `a` |
/// | `zone!=a` | do not have `zone` set to `a` (absent counts) |
/// | `gpu` | have a `gpu` key, whatever its value |
/// | `!gpu` | have no `gpu` key |
///
/// Keys and values are non-empty and use `A-Z a-z 0-9 . _ - /`. Serialised as that text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LabelConstraint {
    Equals { key: String, value: String },
    NotEquals { key: String, value: String },
    Present(String),
    Absent(String),
}

impl LabelConstraint {
    /// The label key the constraint looks at.
    pub fn key(&self) -> &str {
        match self {
            LabelConstraint::Equals { key, .. }
            | LabelConstraint::NotEquals { key, .. }
            | LabelConstraint::Present(key)
            | LabelConstraint::Absent(key) => key,
        }
    }

    /// Whether a host whose label `self.key()` has `value` (or is absent) satisfies the constraint.
    pub fn holds_for(&self, value: Option<&str>) -> bool {
        match self {
            LabelConstraint::Equals { value: want, .. } => value == Some(want.as_str()),
            LabelConstraint::NotEquals { value: avoid, .. } => value != Some(avoid.as_str()),
            LabelConstraint::Present(_) => value.is_some(),
            LabelConstraint::Absent(_) => value.is_none(),
        }
    }

    /// Whether a host with these labels satisfies the constraint.
    pub fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        self.holds_for(labels.get(self.key()).map(String::as_str))
    }
}

/// Why a label constraint did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label constraint `{text}`: {problem} (write `key=value`, `key!=value`, `key` or `!key`)")]
pub struct LabelParseError {
    pub text: String,
    pub problem: &'static str,
}

impl FromStr for LabelConstraint {
    type Err = LabelParseError;

    fn from_str(text: &str) -> Result<LabelConstraint, LabelParseError> {
        let fail = |problem| LabelParseError { text: text.to_owned(), problem };
        let word = |s: &str| -> Result<String, LabelParseError> {
            if s.is_empty() {
                return Err(fail("empty key or value"));
            }
            if !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')) {
                return Err(fail("keys and values use only A-Z a-z 0-9 . _ - /"));
            }
            Ok(s.to_owned())
        };
        if let Some((key, value)) = text.split_once("!=") {
            Ok(LabelConstraint::NotEquals { key: word(key)?, value: word(value)? })
        } else if let Some((key, value)) = text.split_once('=') {
            Ok(LabelConstraint::Equals { key: word(key)?, value: word(value)? })
        } else if let Some(key) = text.strip_prefix('!') {
            Ok(LabelConstraint::Absent(word(key)?))
        } else {
            Ok(LabelConstraint::Present(word(text)?))
        }
    }
}

impl TryFrom<String> for LabelConstraint {
    type Error = LabelParseError;

    fn try_from(text: String) -> Result<LabelConstraint, LabelParseError> {
        text.parse()
    }
}

impl From<LabelConstraint> for String {
    fn from(c: LabelConstraint) -> String {
        c.to_string()
    }
}

impl fmt::Display for LabelConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelConstraint::Equals { key, value } => write!(f, "{key}={value}"),
            LabelConstraint::NotEquals { key, value } => write!(f, "{key}!={value}"),
            LabelConstraint::Present(key) => write!(f, "{key}"),
            LabelConstraint::Absent(key) => write!(f, "!{key}"),
        }
    }
}

/// A request to run one instance somewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRequest {
    pub id: InstanceId,
    /// The deployment the instance is a replica of; replicas never share a host.
    pub group: GroupId,
    pub arch: Arch,
    pub demand: Resources,
    /// Device kinds the instance needs (usually `net`).
    #[serde(default)]
    pub devices: DeviceSet,
    /// Label constraints the host must satisfy, all of them.
    #[serde(default)]
    pub constraints: Vec<LabelConstraint>,
}

impl InstanceRequest {
    /// A request with no device needs and no label constraints.
    pub fn new(id: u64, group: &str, arch: Arch, demand: Resources) -> InstanceRequest {
        InstanceRequest {
            id: InstanceId(id),
            group: GroupId::from(group),
            arch,
            demand,
            devices: DeviceSet::NONE,
            constraints: Vec::new(),
        }
    }

    pub fn with_devices(mut self, devices: &[Device]) -> InstanceRequest {
        self.devices = DeviceSet::of(devices);
        self
    }

    pub fn with_constraint(mut self, constraint: LabelConstraint) -> InstanceRequest {
        self.constraints.push(constraint);
        self
    }

    /// Whether `host` satisfies the request's static constraints: architecture, devices, labels.
    pub fn eligible_on(&self, host: &Host) -> bool {
        host.arch == self.arch
            && host.devices.covers(self.devices)
            && self.constraints.iter().all(|c| c.holds(&host.labels))
    }
}

/// The dimensions a host's capacity is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Memory,
    Cpu,
    Power,
    Instances,
}

impl Dimension {
    /// In the order of the internal resource vectors.
    pub const ALL: [Dimension; 4] = [Dimension::Memory, Dimension::Cpu, Dimension::Power, Dimension::Instances];

    pub(crate) const fn index(self) -> usize {
        match self {
            Dimension::Memory => 0,
            Dimension::Cpu => 1,
            Dimension::Power => 2,
            Dimension::Instances => 3,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Dimension::Memory => "memory",
            Dimension::Cpu => "cpu",
            Dimension::Power => "power",
            Dimension::Instances => "instances",
        }
    }

    /// An amount in this dimension for a person: `512 MiB`, `250 millicores`, `1.5 W`, `3 instance slots`.
    pub fn amount(self, value: u64) -> String {
        match self {
            Dimension::Memory => format!("{value} MiB"),
            Dimension::Cpu => format!("{value} millicores"),
            Dimension::Power => watts(value),
            Dimension::Instances if value == 1 => "an instance slot".to_owned(),
            Dimension::Instances => format!("{value} instance slots"),
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Milliwatts as watts with up to three decimals, trailing zeros dropped: `1.5 W`, `250 W`.
pub(crate) fn watts(milliwatts: u64) -> String {
    let whole = milliwatts / 1000;
    let frac = milliwatts % 1000;
    if frac == 0 {
        format!("{whole} W")
    } else {
        let digits = format!("{frac:03}");
        format!("{whole}.{} W", digits.trim_end_matches('0'))
    }
}

/// The four dimensions of a request as a vector: memory, cpu, power, one instance slot.
pub(crate) const fn demand_vector(r: &Resources) -> [u32; 4] {
    [r.memory_mib, r.millicores, r.milliwatts, 1]
}

/// The four dimensions of a host as a vector; power is what is left for instances once awake.
pub(crate) const fn capacity_vector(h: &Host) -> [u32; 4] {
    [h.capacity.memory_mib, h.capacity.millicores, h.power.for_instances_mw(), h.capacity.max_instances]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_constraints_parse_print_and_match() {
        let labels: BTreeMap<String, String> =
            [("zone", "a"), ("gpu", "true")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        for (text, holds) in [
            ("zone=a", true),
            ("zone=b", false),
            ("zone!=b", true),
            ("zone!=a", false),
            ("rack!=r1", true),
            ("gpu", true),
            ("!gpu", false),
            ("ssd", false),
            ("!ssd", true),
        ] {
            let c: LabelConstraint = text.parse().expect(text);
            assert_eq!(c.to_string(), text);
            assert_eq!(c.holds(&labels), holds, "{text}");
        }
        for bad in ["", "=a", "zone=", "!", "zone a", "a=b=c", "!=x"] {
            let err = bad.parse::<LabelConstraint>().expect_err(bad);
            assert!(err.to_string().contains("key=value"), "{err}");
        }
    }

    #[test]
    fn wire_format_is_readable() {
        let r =
            InstanceRequest::new(7, "web", Arch::X86_64, Resources { memory_mib: 64, millicores: 50, milliwatts: 300 })
                .with_devices(&[Device::Net, Device::Block])
                .with_constraint("zone=a".parse().expect("valid"))
                .with_constraint("!gpu".parse().expect("valid"));
        let json = serde_json::to_string(&r).expect("serialises");
        assert_eq!(
            json,
            r#"{"id":7,"group":"web","arch":"x86_64","demand":{"memory_mib":64,"millicores":50,"milliwatts":300},"devices":["net","block"],"constraints":["zone=a","!gpu"]}"#
        );
        let back: InstanceRequest = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, r);
        let bad = json.replace("zone=a", "zone=");
        assert!(serde_json::from_str::<InstanceRequest>(&bad).is_err());
        let minimal: InstanceRequest = serde_json::from_str(
            r#"{"id":1,"group":"g","arch":"aarch64","demand":{"memory_mib":16,"millicores":1,"milliwatts":1}}"#,
        )
        .expect("devices and constraints default to none");
        assert!(minimal.devices.is_empty() && minimal.constraints.is_empty());
    }

    #[test]
    fn devices_and_amounts_read_well() {
        assert!(DeviceSet::of(&[Device::Net, Device::Block]).covers(DeviceSet::of(&[Device::Block])));
        assert!(!DeviceSet::of(&[Device::Net]).covers(DeviceSet::of(&[Device::Block])));
        assert!(DeviceSet::NONE.covers(DeviceSet::NONE));
        assert_eq!(DeviceSet::of(&[Device::Block, Device::Net]).to_string(), "net and block");
        assert_eq!(Dimension::Power.amount(1500), "1.5 W");
        assert_eq!(Dimension::Power.amount(250_000), "250 W");
        assert_eq!(Dimension::Power.amount(20), "0.02 W");
        assert_eq!(Dimension::Memory.amount(512), "512 MiB");
        assert_eq!(Dimension::Instances.amount(1), "an instance slot");
    }
}
