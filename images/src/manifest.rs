//! Appliance manifests: `images/<appliance>.toml`, parsed in two stages.
//!
//! Stage one deserialises the file into raw structs that reject unknown keys and wrong types.
//! Stage two validates values and their relations and yields a [`Manifest`]. Every error names the
//! file, the key and the fix. `docs/manifest.md` documents every key.
//!
//! The validated manifest travels inside the signed image (see [`crate::artifact`]), so a bare
//! artifact can be inspected, placed and booted without its source tree.

use std::{collections::BTreeSet, fmt, path::Path};

use serde::{Deserialize, Serialize};

use crate::Arch;

/// RAM an appliance needs beyond its own image, for the heap and boot structures.
pub const MIN_HEAP_MIB: u32 = 1;

/// A validated appliance manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The appliance's name: the crate in `kernel-apps/` it is built from.
    pub name: String,
    /// Its version (free-form, e.g. semver).
    pub version: String,
    pub description: String,
    /// Architectures it is built for.
    pub arches: Vec<Arch>,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub vcpus: u8,
    /// Devices by role.
    pub devices: Vec<Device>,
    /// Ports the appliance listens on.
    pub listen: Vec<Listen>,
    /// Who the appliance may reach; empty means nobody.
    pub reach: Vec<String>,
    /// Boot arguments, passed on the kernel command line.
    pub args: Vec<String>,
    /// What a supervisor should do when the appliance stops.
    pub restart: RestartPolicy,
    /// A directory of data files, relative to the appliance's crate, packed into the image's
    /// `data` part and handed to the appliance at boot (see `boot_contract::bundle`).
    pub data: Option<String>,
    /// The board the image's kernel was built for (`boot_contract::board` names: `virt`, `rpi3`,
    /// `rpi4`): set by the build for aarch64 QEMU kernels, which run only at their board's link
    /// address and with its console; `None` in a manifest file and for x86_64 and tender kernels.
    pub board: Option<String>,
}

/// A device an appliance is given, named by its role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// What the device is for, e.g. `"service"` or `"data"`.
    pub role: String,
    pub kind: DeviceKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKind {
    /// A serial console (every appliance has one).
    Console,
    /// A virtio-net interface.
    Net,
    /// A virtio-blk volume of the given size.
    Block { size_mib: u32 },
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceKind::Console => f.write_str("console"),
            DeviceKind::Net => f.write_str("net"),
            DeviceKind::Block { size_mib } => write!(f, "block ({size_mib} MiB)"),
        }
    }
}

/// A port the appliance listens on, on one of its net devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listen {
    pub port: u16,
    pub protocol: Protocol,
    /// The role of the net device it listens on.
    pub net: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// When to restart a stopped appliance, and how patiently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub when: Restart,
    /// Restarts allowed before giving up (0: unlimited).
    pub max_restarts: u32,
    /// Delay before the first restart; it doubles with each consecutive failure.
    pub backoff_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        })
    }
}

/// A manifest that cannot be used, with where and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {location}{problem}\n  fix: {fix}")]
pub struct ManifestError {
    /// The manifest file, as given.
    pub file: String,
    /// `key `memory_mib`: ` or `line 3, column 1: ` — empty when the whole file is at fault.
    pub location: String,
    pub problem: String,
    pub fix: String,
}

impl ManifestError {
    fn at_key(file: &str, key: &str, problem: impl Into<String>, fix: impl Into<String>) -> ManifestError {
        ManifestError {
            file: file.into(),
            location: format!("key `{key}`: "),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

// Stage one: the file's shape. Unknown keys and wrong types are rejected here.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    arches: Vec<String>,
    memory_mib: u32,
    #[serde(default = "one")]
    vcpus: u32,
    #[serde(default)]
    net: Vec<RawNet>,
    #[serde(default)]
    block: Vec<RawBlock>,
    #[serde(default)]
    listen: Vec<RawListen>,
    #[serde(default)]
    reach: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    restart: RawRestart,
    data: Option<String>,
    #[serde(default)]
    http: Option<RawHttp>,
}

/// `[http]`: how `image build` prepares the data part as a web site (see [`SiteOptions`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default = "default_max_age")]
    max_age: u32,
    #[serde(default = "yes")]
    precompress: bool,
}

fn default_max_age() -> u32 {
    SiteOptions::DEFAULT_MAX_AGE
}

fn yes() -> bool {
    true
}

/// The manifest's `[http]` table: the data part is a web site, and `image build` writes its site
/// index (entity tags, `Cache-Control`, gzip variants; `http1::site_index`) into the data part.
/// It shapes the data part only, so it is not part of [`Manifest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteOptions {
    /// `Cache-Control: max-age` in seconds for files whose names carry no content hash.
    pub max_age: u32,
    /// Whether compressible files get a gzip variant.
    pub precompress: bool,
}

impl SiteOptions {
    /// The default `max_age`: five minutes.
    pub const DEFAULT_MAX_AGE: u32 = 300;
    /// The longest `max_age` accepted: a year (RFC 9111 caches need no more).
    pub const MAX_MAX_AGE: u32 = 31_536_000;
}

/// The `[http]` table of the manifest at `path`, if it has one (the manifest is otherwise checked by
/// [`load`]).
pub fn load_site_options(path: &Path) -> Result<Option<SiteOptions>, ManifestError> {
    let (file, text) = read(path)?;
    let raw: RawManifest = toml::from_str(&text).map_err(|e| shape_error(&file, &text, &e))?;
    Ok(raw.http.map(|http| SiteOptions { max_age: http.max_age, precompress: http.precompress }))
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNet {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    name: String,
    size_mib: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    port: u32,
    #[serde(default = "tcp")]
    protocol: String,
    net: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    #[serde(default = "on_failure")]
    policy: String,
    #[serde(default = "five")]
    max_restarts: u32,
    #[serde(default = "half_second")]
    backoff_ms: u32,
}

impl Default for RawRestart {
    fn default() -> Self {
        RawRestart { policy: on_failure(), max_restarts: five(), backoff_ms: half_second() }
    }
}

fn on_failure() -> String {
    "on-failure".into()
}
fn five() -> u32 {
    5
}
fn half_second() -> u32 {
    500
}

/// The manifest file at `path`: its name for errors, and its text.
fn read(path: &Path) -> Result<(String, String), ManifestError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
        file: file.clone(),
        location: String::new(),
        problem: format!("cannot be read: {e}"),
        fix: "create it (see docs/manifest.md) or check the path".into(),
    })?;
    Ok((file, text))
}

/// Reads and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let (file, text) = read(path)?;
    parse(&file, &text)
}

/// Parses and validates manifest text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Manifest, ManifestError> {
    let raw: RawManifest = toml::from_str(text).map_err(|e| shape_error(file, text, &e))?;
    validate(file, raw)
}

fn shape_error(file: &str, text: &str, error: &toml::de::Error) -> ManifestError {
    let location = match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        }
        None => String::new(),
    };
    let problem = error.message().trim().to_owned();
    let fix = if problem.starts_with("unknown field") {
        "remove the key or correct its spelling; docs/manifest.md lists every key"
    } else if problem.starts_with("missing field") {
        "add the key; docs/manifest.md says what it means"
    } else if problem.starts_with("invalid type") {
        "give the key a value of the type docs/manifest.md shows"
    } else {
        "correct the TOML syntax at that position"
    };
    ManifestError { file: file.into(), location, problem, fix: fix.into() }
}

// Stage two: values and relations.

fn validate(file: &str, raw: RawManifest) -> Result<Manifest, ManifestError> {
    let err = |key: &str, problem: String, fix: &str| ManifestError::at_key(file, key, problem, fix);

    if !is_identifier(&raw.name) {
        return Err(err(
            "name",
            format!("{:?} is not a valid appliance name", raw.name),
            "use lowercase letters, digits and '-', starting with a letter (the crate name in kernel-apps/)",
        ));
    }
    if raw.version.trim().is_empty() {
        return Err(err("version", "is empty".into(), "give a version such as \"0.1.0\""));
    }
    if raw.arches.is_empty() {
        return Err(err("arches", "lists no architecture".into(), "list at least one of \"aarch64\", \"x86_64\""));
    }
    let mut arches = Vec::new();
    for name in &raw.arches {
        let arch: Arch = name.parse().map_err(|_| {
            err("arches", format!("{name:?} is not a supported architecture"), "use \"aarch64\" or \"x86_64\"")
        })?;
        if !arches.contains(&arch) {
            arches.push(arch);
        }
    }
    if raw.memory_mib < 2 * MIN_HEAP_MIB || raw.memory_mib > 64 * 1024 {
        return Err(err(
            "memory_mib",
            format!("{} MiB is out of range", raw.memory_mib),
            "give between 2 and 65536 MiB",
        ));
    }
    let vcpus = u8::try_from(raw.vcpus).ok().filter(|v| *v >= 1);
    let Some(vcpus) = vcpus else {
        return Err(err("vcpus", format!("{} is out of range", raw.vcpus), "give between 1 and 255"));
    };

    let mut roles = BTreeSet::new();
    let mut devices = vec![Device { role: "console".into(), kind: DeviceKind::Console }];
    roles.insert("console".to_owned());
    for (i, net) in raw.net.iter().enumerate() {
        let key = format!("net[{i}].name");
        check_role(&net.name, &mut roles)
            .map_err(|p| err(&key, p, "give each device a distinct role name of letters, digits and '-'"))?;
        devices.push(Device { role: net.name.clone(), kind: DeviceKind::Net });
    }
    for (i, block) in raw.block.iter().enumerate() {
        let key = format!("block[{i}].name");
        check_role(&block.name, &mut roles)
            .map_err(|p| err(&key, p, "give each device a distinct role name of letters, digits and '-'"))?;
        if block.size_mib == 0 {
            return Err(err(
                &format!("block[{i}].size_mib"),
                "is 0".into(),
                "give the volume's size in MiB, at least 1",
            ));
        }
        devices.push(Device { role: block.name.clone(), kind: DeviceKind::Block { size_mib: block.size_mib } });
    }

    let nets: Vec<&str> = raw.net.iter().map(|n| n.name.as_str()).collect();
    let mut listen = Vec::new();
    for (i, raw_listen) in raw.listen.iter().enumerate() {
        let port = u16::try_from(raw_listen.port).ok().filter(|p| *p != 0);
        let Some(port) = port else {
            return Err(err(
                &format!("listen[{i}].port"),
                format!("{} is not a port", raw_listen.port),
                "give a port between 1 and 65535",
            ));
        };
        let protocol = match raw_listen.protocol.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                return Err(err(
                    &format!("listen[{i}].protocol"),
                    format!("{other:?} is not a protocol"),
                    "use \"tcp\" or \"udp\"",
                ));
            }
        };
        let net = match (&raw_listen.net, nets.as_slice()) {
            (Some(name), _) if nets.contains(&name.as_str()) => name.clone(),
            (Some(name), _) => {
                return Err(err(
                    &format!("listen[{i}].net"),
                    format!("no net device has the role {name:?}"),
                    "name a role from a [[net]] table",
                ));
            }
            (None, [only]) => (*only).to_owned(),
            (None, []) => {
                return Err(err(
                    &format!("listen[{i}]"),
                    "the appliance has no net device to listen on".into(),
                    "add a [[net]] table with a name",
                ));
            }
            (None, _) => {
                return Err(err(
                    &format!("listen[{i}].net"),
                    "is missing and there are several net devices".into(),
                    "say which [[net]] role it listens on",
                ));
            }
        };
        if listen.iter().any(|l: &Listen| l.port == port && l.protocol == protocol && l.net == net) {
            return Err(err(
                &format!("listen[{i}]"),
                format!("{protocol} port {port} on {net:?} is listed twice"),
                "list each port once",
            ));
        }
        listen.push(Listen { port, protocol, net });
    }

    for (i, target) in raw.reach.iter().enumerate() {
        if !is_reach_target(target) {
            return Err(err(
                &format!("reach[{i}]"),
                format!("{target:?} is not a reachable target"),
                "use \"<appliance-or-host>:<port>\", e.g. \"kvlog:8080\"",
            ));
        }
    }

    if let Some(dir) = &raw.data {
        let escapes = std::path::Path::new(dir).components().any(|c| !matches!(c, std::path::Component::Normal(_)));
        if dir.is_empty() || escapes {
            return Err(err(
                "data",
                format!("{dir:?} is not a directory inside the appliance's crate"),
                "give a relative path without `..`, e.g. \"site\"",
            ));
        }
    }

    if let Some(http) = &raw.http {
        if raw.data.is_none() {
            return Err(err(
                "http",
                "`[http]` describes a site, but there is no `data` directory".into(),
                "add `data = \"site\"` or remove `[http]`",
            ));
        }
        if http.max_age > SiteOptions::MAX_MAX_AGE {
            return Err(err(
                "http.max_age",
                format!("{} seconds is more than a year", http.max_age),
                "give at most 31536000 (files with a content hash in their name are cached a year anyway)",
            ));
        }
    }

    let when = match raw.restart.policy.as_str() {
        "always" => Restart::Always,
        "on-failure" => Restart::OnFailure,
        "never" => Restart::Never,
        other => {
            return Err(err(
                "restart.policy",
                format!("{other:?} is not a restart policy"),
                "use \"always\", \"on-failure\" or \"never\"",
            ));
        }
    };

    Ok(Manifest {
        name: raw.name,
        version: raw.version,
        description: raw.description,
        arches,
        memory_mib: raw.memory_mib,
        vcpus,
        devices,
        listen,
        reach: raw.reach,
        args: raw.args,
        restart: RestartPolicy { when, max_restarts: raw.restart.max_restarts, backoff_ms: raw.restart.backoff_ms },
        data: raw.data,
        board: None,
    })
}

impl Manifest {
    /// Checks the manifest against the kernel it describes: the architecture must be listed, and
    /// RAM must hold the loaded kernel and its data (`resident_bytes`) plus a minimal heap.
    pub fn check_fits(&self, file: &str, arch: Arch, resident_bytes: u64) -> Result<(), ManifestError> {
        let kernel_memory_bytes = resident_bytes;
        if !self.arches.contains(&arch) {
            return Err(ManifestError::at_key(
                file,
                "arches",
                format!("does not list {arch}, the architecture being built"),
                format!("add \"{arch}\" to arches"),
            ));
        }
        let needed_mib = kernel_memory_bytes.div_ceil(1 << 20) + u64::from(MIN_HEAP_MIB);
        if u64::from(self.memory_mib) < needed_mib {
            return Err(ManifestError::at_key(
                file,
                "memory_mib",
                format!(
                    "{} MiB is below what {} needs on {arch}: its image and data occupy {} KiB and the heap needs {MIN_HEAP_MIB} MiB",
                    self.memory_mib,
                    self.name,
                    kernel_memory_bytes.div_ceil(1024)
                ),
                format!("set memory_mib to at least {needed_mib}"),
            ));
        }
        Ok(())
    }

    /// The kernel command line: the manifest's boot arguments, quoted where they hold spaces.
    pub fn cmdline(&self) -> String {
        self.args
            .iter()
            .map(|a| if a.is_empty() || a.contains(char::is_whitespace) { format!("\"{a}\"") } else { a.clone() })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn check_role(role: &str, roles: &mut BTreeSet<String>) -> Result<(), String> {
    if !is_identifier(role) {
        return Err(format!("{role:?} is not a valid role name"));
    }
    if !roles.insert(role.to_owned()) {
        return Err(format!("the role {role:?} is used by two devices"));
    }
    Ok(())
}

fn is_reach_target(target: &str) -> bool {
    match target.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"
name = "hello"
version = "0.1.0"
description = "Greets"
arches = ["aarch64", "x86_64"]
memory_mib = 16
"#;

    fn error(text: &str) -> ManifestError {
        parse("images/test.toml", text).expect_err("manifest must be refused")
    }

    #[test]
    fn a_minimal_manifest_gets_defaults() {
        let m = parse("hello.toml", HELLO).expect("valid");
        assert_eq!(m.arches, [Arch::Aarch64, Arch::X86_64]);
        assert_eq!(m.vcpus, 1);
        assert_eq!(m.devices, [Device { role: "console".into(), kind: DeviceKind::Console }]);
        assert!(m.reach.is_empty(), "reach defaults to nobody");
        assert_eq!(m.restart, RestartPolicy { when: Restart::OnFailure, max_restarts: 5, backoff_ms: 500 });
    }

    #[test]
    fn a_full_manifest_parses() {
        let text = r#"
name = "httpd"
version = "1.2.0"
arches = ["aarch64"]
memory_mib = 32
vcpus = 1
args = ["--root", "/site", "two words"]
reach = ["kvlog:8080"]
[[net]]
name = "service"
[[block]]
name = "data"
size_mib = 64
[[listen]]
port = 8080
[restart]
policy = "always"
backoff_ms = 100
"#;
        let m = parse("httpd.toml", text).expect("valid");
        assert_eq!(m.listen, [Listen { port: 8080, protocol: Protocol::Tcp, net: "service".into() }]);
        assert_eq!(m.devices[2], Device { role: "data".into(), kind: DeviceKind::Block { size_mib: 64 } });
        assert_eq!(m.restart.when, Restart::Always);
        assert_eq!(m.cmdline(), r#"--root /site "two words""#);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = error(&format!("{HELLO}colour = \"blue\"\n"));
        let text = e.to_string();
        assert!(text.starts_with("images/test.toml: line 7, column 1: unknown field `colour`"), "{text}");
        assert!(text.contains("fix: remove the key or correct its spelling"), "{text}");
    }

    #[test]
    fn a_wrong_type_is_named() {
        let e = error(&HELLO.replace("memory_mib = 16", "memory_mib = \"lots\""));
        assert!(e.problem.contains("invalid type"), "{e}");
        assert!(e.location.starts_with("line 6"), "{e}");
    }

    #[test]
    fn a_missing_key_is_named() {
        let e = error(&HELLO.replace("memory_mib = 16\n", ""));
        assert!(e.problem.contains("missing field `memory_mib`"), "{e}");
    }

    #[test]
    fn values_out_of_range_name_the_key_and_the_fix() {
        let cases = [
            (HELLO.replace("memory_mib = 16", "memory_mib = 1"), "key `memory_mib`: 1 MiB is out of range"),
            (HELLO.replace("\"x86_64\"", "\"riscv64\""), "key `arches`: \"riscv64\" is not a supported architecture"),
            (HELLO.replace("name = \"hello\"", "name = \"Hello World\""), "key `name`"),
            (format!("{HELLO}vcpus = 0\n"), "key `vcpus`: 0 is out of range"),
            (format!("{HELLO}reach = [\"anywhere\"]\n"), "key `reach[0]`"),
            (format!("{HELLO}[[listen]]\nport = 80\n"), "key `listen[0]`: the appliance has no net device"),
            (
                format!("{HELLO}[[net]]\nname = \"a\"\n[[listen]]\nport = 70000\n"),
                "key `listen[0].port`: 70000 is not a port",
            ),
            (
                format!("{HELLO}[[net]]\nname = \"a\"\n[[net]]\nname = \"a\"\n"),
                "key `net[1].name`: the role \"a\" is used by two devices",
            ),
            (format!("{HELLO}[restart]\npolicy = \"sometimes\"\n"), "key `restart.policy`"),
            (format!("{HELLO}data = \"../secrets\"\n"), "key `data`: \"../secrets\" is not a directory inside"),
        ];
        for (text, expected) in cases {
            let e = error(&text);
            assert!(e.to_string().contains(expected), "expected {expected:?} in:\n{e}");
            assert!(!e.fix.is_empty());
        }
    }

    #[test]
    fn memory_below_the_kernels_need_is_refused() {
        let m = parse("hello.toml", &HELLO.replace("memory_mib = 16", "memory_mib = 2")).expect("valid");
        assert!(m.check_fits("hello.toml", Arch::Aarch64, 512 * 1024).is_ok());
        let e = m.check_fits("hello.toml", Arch::Aarch64, 3 << 20).expect_err("3 MiB image in 2 MiB");
        assert!(e.to_string().contains("key `memory_mib`: 2 MiB is below what hello needs"), "{e}");
        assert!(e.fix.contains("at least 4"), "{e}");
    }

    #[test]
    fn an_unlisted_arch_is_refused_at_build() {
        let m = parse("hello.toml", &HELLO.replace(", \"x86_64\"", "")).expect("valid");
        let e = m.check_fits("hello.toml", Arch::X86_64, 4096).expect_err("not listed");
        assert!(e.to_string().contains("does not list x86_64"), "{e}");
    }
}
