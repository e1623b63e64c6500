//! The rack manager's HTTP API, version 1: every request and response body, shared by the daemon
//! (`rack-manager serve`), the host agents (`rack-manager agent`) and the CLI. The table below is
//! the manager's API; [`peers`] holds the types of its peering routes, [`replication`] those of
//! `GET /v1/replication`, and [`agent`] the agent protocol (`/v1/agent/...`, what the manager
//! asks a host agent).
//!
//! Bodies are JSON. Every path starts with [`PREFIX`] (`/v1`); a new incompatible version gets a
//! new prefix and a new module, so an old CLI keeps talking to a new daemon. Every request carries
//! `Authorization: Bearer <credential>` ([`AUTH_HEADER`], [`AUTH_SCHEME`]), and the credential
//! decides what the caller may do: the admin token (generated at the manager's first start) allows
//! every route of the manager's API; a one-use join token only `POST /v1/hosts`; an agent's own
//! credential (from its [`JoinReply`]) only fetching image blobs and joining again as itself; a
//! scoped token ([`tokens`]) what its scope allows; and the manager reaches each agent with a
//! token for that agent alone.
//!
//! Errors are an HTTP status (4xx: the request is at fault and state is unchanged; 5xx: the
//! manager is) with an [`ErrorBody`]: a stable machine-readable `code`, a sentence saying what is
//! wrong, and a `hint` saying what to do.
//!
//! | method and path | request | response |
//! |---|---|---|
//! | `GET /v1/hosts` | | `Vec<Host>` |
//! | `POST /v1/hosts` | [`JoinRequest`] (join token or agent credential) | [`JoinReply`] |
//! | `POST /v1/join-tokens` | `{"ttl_s": N}` | [`JoinToken`] |
//! | `POST /v1/hosts/add` | [`AddHostRequest`] | [`Host`] |
//! | `POST /v1/hosts/{name}/drain` | | [`DrainResponse`] |
//! | `DELETE /v1/hosts/{name}` | | [`Host`] |
//! | `POST /v1/images` | the `.mast` file's bytes | [`Image`] |
//! | `GET /v1/images`, `GET /v1/images/{ref}` | | `Vec<Image>`, [`Image`] |
//! | `GET /v1/images/{ref}/blob` | | the `.mast` file's bytes (agents fetch images this way) |
//! | `DELETE /v1/images/{ref}` | | [`Image`] |
//! | `POST /v1/deployments` | [`DeployRequest`] | [`DeployResponse`] |
//! | `POST /v1/plan` | [`DeployRequest`] | [`Plan`] |
//! | `GET /v1/instances?all=true` | | `Vec<Instance>` |
//! | `GET /v1/instances/{id}` | | [`Instance`] |
//! | `POST /v1/instances/{id}/{stop,start,restart}` | | [`Instance`] |
//! | `DELETE /v1/instances/{id}` | | [`Instance`] |
//! | `GET /v1/instances/{id}/logs?offset=N` | | [`LogChunk`] |
//! | `GET /v1/stats` | | [`Stats`] |
//! | `GET /v1/power` | | [`power::RackPower`] |
//! | `POST /v1/hosts/{name}/power` | [`power::PowerModel`] | [`power::PowerModel`] |
//! | `GET /v1/replication` | | [`replication::ReplicationStatus`] |
//! | `GET /v1/identity` | | [`peers::IdentityView`] |
//! | `GET /v1/peers` | | `Vec<`[`peers::PeerView`]`>` |
//! | `POST /v1/peers` | [`peers::PeerEntry`] | `Option<`[`peers::PeerView`]`>` (201) |
//! | `DELETE /v1/peers/{name}` | | `{"removed": name}` |
//! | `POST /v1/failover/plans` | [`peers::SetPlanRequest`] | [`peers::SetPlanRequest`] |
//! | `GET /v1/failover/plan` | | [`peers::PlanView`] |
//! | `POST /v1/tokens`, `GET /v1/tokens`, `DELETE /v1/tokens/{id}` | [`tokens::CreateTokenRequest`] | [`tokens::CreatedToken`], `Vec<`[`tokens::TokenInfo`]`>`, [`tokens::TokenInfo`] |
//! | `GET /v1/failover/status` | | `Vec<`[`peers::Takeover`]`>` |
//! | `POST /v1/failover/release/{peer}/{deployment}` | | [`peers::Takeover`] |
#![forbid(unsafe_code)]

pub mod peers;
pub mod power;
pub mod replication;
pub mod tokens;

use serde::{Deserialize, Serialize};

/// The prefix of every path in this version of the API.
pub const PREFIX: &str = "/v1";

/// The header that carries the token, and its scheme.
pub const AUTH_HEADER: &str = "Authorization";
pub const AUTH_SCHEME: &str = "Bearer ";

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ApiError,
}

/// What went wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable, for scripts: `unauthorized`, `bad_request`, `not_found`, `conflict`,
    /// `untrusted_image`, `invalid_image`, `no_placement`, `internal`.
    pub code: String,
    /// What is wrong, in one sentence.
    pub message: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Whether a host takes new instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Takes new instances.
    Ready,
    /// Keeps none: its instances were moved elsewhere, and placement skips it.
    Draining,
    /// Its agent has not answered recently.
    Unreachable,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Ready => "ready",
            HostState::Draining => "draining",
            HostState::Unreachable => "unreachable",
        }
    }
}

/// A host of the rack and what it can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    /// Where its agent listens (`http://127.0.0.1:7879`); `None` for the manager's own built-in agent.
    pub address: Option<String>,
    /// The launcher that starts instances there: `qemu`, `tender` or `sim`.
    pub launcher: String,
    /// Architectures it can boot (`aarch64`, `x86_64`).
    pub arches: Vec<String>,
    /// Memory it offers to instances, in MiB.
    pub memory_mib: u64,
    /// Virtual CPUs it offers to instances.
    pub vcpus: u32,
    pub state: HostState,
    /// Instances placed on it (any state but removed).
    pub instances: u32,
    /// Memory those instances reserve, in MiB.
    pub memory_used_mib: u64,
    /// vCPUs those instances reserve.
    #[serde(default)]
    pub vcpus_used: u32,
}

/// An agent announcing itself to the manager (`rack-manager agent --join`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub name: String,
    /// Where the agent serves its API: `https://HOST:PORT`.
    pub address: String,
    pub launcher: String,
    pub arches: Vec<String>,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// The SHA-256 fingerprint (hex) of the certificate the agent serves; the manager pins it.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// The manager's answer to a join: the host, and the agent's own credentials (keep them private).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReply {
    pub host: Host,
    /// What the manager presents to this agent (and nobody else does).
    pub manager_token: String,
    /// What this agent presents to the manager: it may only fetch image blobs and re-join as itself.
    pub agent_credential: String,
}

/// A one-use join token (`POST /v1/join-tokens`, admin only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub token: String,
    /// When it stops being accepted, in ms since the Unix epoch.
    pub expires_ms: u64,
}

/// Asks a waiting agent (`agent --manager-url`) to join under `name` (`host add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub name: String,
}

/// Add a host whose agent is already running (`rack-manager agent --manager-url`): the manager
/// invites the agent at `address` (`https://HOST:PORT#sha256=<fingerprint>`, as the agent
/// prints it), which then joins with its own join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddHostRequest {
    pub name: String,
    pub address: String,
}

/// What draining a host did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainResponse {
    pub host: Host,
    /// Instances given a new host, as (instance, new host).
    pub moved: Vec<(String, String)>,
}

/// A port an appliance listens on, as its manifest declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenPort {
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// What to do when an instance stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartWhen {
    Always,
    OnFailure,
    Never,
}

impl RestartWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartWhen::Always => "always",
            RestartWhen::OnFailure => "on-failure",
            RestartWhen::Never => "never",
        }
    }
}

impl std::str::FromStr for RestartWhen {
    type Err = String;

    fn from_str(s: &str) -> Result<RestartWhen, String> {
        match s {
            "always" => Ok(RestartWhen::Always),
            "on-failure" => Ok(RestartWhen::OnFailure),
            "never" => Ok(RestartWhen::Never),
            other => Err(format!("unknown restart policy {other:?}: expected always, on-failure or never")),
        }
    }
}

/// A restart policy: when, how often, how patiently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub when: RestartWhen,
    /// Consecutive restarts before giving up; 0 means no limit.
    pub max_restarts: u32,
    /// Delay before the first restart; it doubles with each consecutive failure.
    pub backoff_ms: u32,
}

/// A verified image the rack stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The image id: BLAKE3 of manifest and index, 64 hex digits.
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub arch: String,
    /// The public key that signed it.
    pub signer: String,
    /// Size of the `.mast` file in bytes.
    pub size: u64,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub args: Vec<String>,
    pub listen: Vec<ListenPort>,
    pub restart: RestartPolicy,
    /// Milliseconds since the Unix epoch.
    pub pushed_ms: u64,
    /// What runs it: `qemu` or `tender` (from its kernel's notes); empty when not yet known (an
    /// image learned from a peer before its kernel's chunks arrived).
    #[serde(default)]
    pub platform: String,
}

/// Whether a host whose launcher is `launcher` and that boots `arches` can run an image built
/// for `arch` on `platform` (the simulated launcher runs anything of its arches; an image of
/// unknown platform is left to the launch to check).
pub fn can_run(launcher: &str, arches: &[String], arch: &str, platform: &str) -> bool {
    let platform_ok = launcher == "sim" || platform.is_empty() || launcher == platform;
    platform_ok && arches.iter().any(|a| a == arch)
}

/// The command that builds appliance `app` for `arch` on `platform`, as the hints say it.
pub fn build_command(app: &str, arch: &str, platform: &str) -> String {
    let platform = if platform == "tender" { " --platform tender" } else { "" };
    format!("cargo xtask image build {app} --arch {arch}{platform} --release")
}

/// The first 12 hex digits of an image id, for tables and messages (the whole text if shorter).
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Deploy an image (or, through `/v1/plan`, only say where it would go).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// An image name (`hello`) or id prefix (at least 6 hex digits).
    pub image: String,
    pub replicas: u32,
    /// Guest RAM per instance; the manifest's when absent. Never below the manifest's.
    #[serde(default)]
    pub memory_mib: Option<u32>,
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Boot arguments; the manifest's when absent.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// When to restart; the manifest's policy when absent.
    #[serde(default)]
    pub restart: Option<RestartWhen>,
    /// Of the images named `image`, the one built for this architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Of the images named `image`, the one built for this platform (`qemu`, `tender`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Run only when needed: each instance is a gate on the host that starts the appliance on
    /// its first connection and stops it when idle (docs/on-demand.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand: Option<OnDemand>,
}

/// How an on-demand deployment sleeps and scales (docs/on-demand.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnDemand {
    /// With no connection open and no datagram for this long, an instance is stopped.
    pub idle_timeout_ms: u64,
    /// The most instances a gate runs at once (scale out under load; at least 1).
    pub max_instances: u32,
}

/// What an on-demand instance's gate is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateState {
    /// No appliance runs; the service address is held open.
    Asleep,
    /// An appliance is starting for waiting clients.
    Waking,
    /// At least one appliance serves.
    Running,
}

impl GateState {
    pub fn as_str(self) -> &'static str {
        match self {
            GateState::Asleep => "asleep",
            GateState::Waking => "waking",
            GateState::Running => "running",
        }
    }
}

/// An on-demand instance's gate, as its host reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateStatus {
    pub state: GateState,
    /// Appliances running (or starting) now.
    pub awake_instances: u32,
    /// Wakes since the gate opened.
    pub wakes: u64,
    /// Start of the last wake → the appliance said it is ready, in microseconds.
    pub last_wake_us: Option<u64>,
    /// Milliseconds since the last connection or datagram arrived (none: never).
    pub idle_ms: Option<u64>,
    /// CPU time of all its appliances' processes (guest + tender or QEMU), ended runs included.
    pub cpu_ms: u64,
    /// Time at least one appliance was awake.
    pub awake_ms: u64,
}

/// A deployment: the desired state of a set of replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub image_id: String,
    pub image_name: String,
    pub replicas: u32,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub args: Vec<String>,
    pub restart: RestartPolicy,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand: Option<OnDemand>,
}

/// What `deploy` created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployResponse {
    pub deployment: Deployment,
    pub instances: Vec<Instance>,
}

/// Where a deployment's replicas would go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub image_id: String,
    pub image_name: String,
    pub memory_mib: u32,
    /// One host per replica, in replica order.
    pub hosts: Vec<String>,
    /// The image's architecture and platform (what the hosts were chosen to run).
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub platform: String,
}

/// What an instance should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    Running,
    Stopped,
}

/// What an instance is doing, as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Placed, not started yet.
    Pending,
    /// Its VM is running.
    Running,
    /// It stopped and will be restarted when its backoff has passed.
    Backoff,
    /// It stopped by itself and its policy says not to restart it.
    Exited,
    /// It kept failing and its restart limit was reached, or it could not be started.
    Failed,
    /// An operator stopped it.
    Stopped,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Backoff => "backoff",
            InstanceState::Exited => "exited",
            InstanceState::Failed => "failed",
            InstanceState::Stopped => "stopped",
        }
    }

    /// Whether the instance is up or on its way up: what `ps` without `-a` shows.
    pub fn is_active(self) -> bool {
        matches!(self, InstanceState::Pending | InstanceState::Running | InstanceState::Backoff)
    }
}

/// Where an instance's port is reached from its host: without `address`, a forward
/// (`127.0.0.1:host_port` reaches `guest_port` inside it, as with QEMU's user network); with one,
/// the guest's own address on its host's network (the tender launcher's taps), so
/// `address:guest_port`, and `host_port` equals `guest_port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub host_port: u16,
    pub guest_port: u16,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::IpAddr>,
}

impl PortForward {
    /// `127.0.0.1:40000->8080/tcp` for a forward, `10.64.0.2:8080/tcp` for a guest address.
    pub fn endpoint(&self) -> String {
        match self.address {
            Some(address) => format!("{address}:{}/{}", self.guest_port, self.protocol),
            None => format!("127.0.0.1:{}->{}/{}", self.host_port, self.guest_port, self.protocol),
        }
    }
}

/// One replica of a deployment: where it is and what it is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub deployment: String,
    pub image_name: String,
    pub image_id: String,
    pub host: String,
    pub desired: Desired,
    pub state: InstanceState,
    /// The VM's process id on its host, while it runs (none under the simulated launcher).
    pub pid: Option<u32>,
    /// Restarts since it was created.
    pub restarts: u32,
    /// The appliance's last exit status (0 success, 1-100 its own, 101 panic, 102 CPU exception,
    /// 103 boot failure; negative: killed by that signal; absent: unknown or still running).
    pub exit_status: Option<i32>,
    pub ports: Vec<PortForward>,
    pub memory_mib: u32,
    pub created_ms: u64,
    /// When its current (or last) run started.
    pub started_ms: Option<u64>,
    /// Why it is in its state, when that needs saying (a launch error, a restart limit).
    pub message: Option<String>,
    /// Its image's architecture and platform (`qemu`, `tender`; empty when unknown).
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub platform: String,
    /// An on-demand instance's gate, as its host last reported it (to the manager answering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateStatus>,
}

/// Console output of an instance, from `offset` in its log file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub instance: String,
    /// Where `text` starts in the log (bytes); later than the requested offset when older output
    /// was outside the bounded history.
    pub offset: u64,
    pub text: String,
    /// Where to continue reading (`?offset=`) to follow the log.
    pub next_offset: u64,
    /// Whether the instance is still expected to write more.
    pub running: bool,
}

/// Resource use of one instance, from its host's `/proc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStats {
    pub id: String,
    pub host: String,
    pub state: InstanceState,
    pub pid: Option<u32>,
    /// CPU time used by the VM process (user + system), in milliseconds.
    pub cpu_ms: Option<u64>,
    /// Average CPU use since the process started, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Resident memory of the VM process, in bytes.
    pub rss_bytes: Option<u64>,
    /// On-demand instances: seconds at least one appliance was awake (`cpu_ms` then counts
    /// every run the gate started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awake_ms: Option<u64>,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub instances: Vec<InstanceStats>,
    /// The rack's estimated draw and each deployment's energy ([`power`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<power::RackPower>,
}

/// The agent protocol: what the manager asks a host agent to do (`/v1/agent/...`).
pub mod agent {
    use serde::{Deserialize, Serialize};

    use super::PortForward;

    /// Start one instance.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct LaunchRequest {
        pub instance: String,
        pub image_id: String,
        pub memory_mib: u32,
        pub vcpus: u32,
        pub args: Vec<String>,
        /// Guest ports to forward from free host ports.
        pub listen: Vec<super::ListenPort>,
        /// The manager's URL as it is now, to fetch the image from if the host lacks it (the
        /// manager may have restarted elsewhere since the agent joined).
        #[serde(default)]
        pub image_source: Option<String>,
        /// The deployment the instance belongs to: where its volume lives on the host
        /// (`volumes/<deployment>/<instance>.img`), if its image declares one (`[[block]]`).
        #[serde(default)]
        pub deployment: Option<String>,
        /// The ports its previous run was reached at: a restart keeps them where they are free,
        /// so an address someone was given stays true.
        #[serde(default)]
        pub previous_ports: Vec<super::PortForward>,
        /// Open a gate that starts the instance on demand, instead of starting it now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub on_demand: Option<super::OnDemand>,
    }

    /// Which volume to delete: that of `instance` of `deployment` (the instance was removed).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct VolumeRef {
        pub deployment: String,
        pub instance: String,
    }

    /// A started instance, as its host knows it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Launched {
        pub pid: Option<u32>,
        /// The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), so a
        /// reused pid is never mistaken for the instance.
        pub start_ticks: Option<u64>,
        /// Where this run's console output starts in the instance's log.
        pub log_offset: u64,
        pub ports: Vec<PortForward>,
    }

    /// Which run of an instance a question is about.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RunRef {
        pub instance: String,
        pub pid: Option<u32>,
        pub start_ticks: Option<u64>,
        pub log_offset: u64,
    }

    /// Whether a run is still going.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum RunState {
        Running,
        /// Ended; with the appliance's status when it could be learned.
        Exited {
            status: Option<i32>,
        },
    }

    /// Resource use of one run.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RunStats {
        pub cpu_ms: u64,
        pub rss_bytes: u64,
        /// Seconds the process has been running.
        pub age_ms: u64,
        /// An on-demand instance's gate (then the figures above cover all of its runs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub gate: Option<super::GateStatus>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_id_is_12_digits_or_the_whole_of_a_shorter_text() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(short_id(&id), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        // Byte 12 falls inside a character: no panic, the whole text.
        assert_eq!(short_id("aéééééé"), "aéééééé");
    }

    #[test]
    fn requests_round_trip_and_optional_fields_may_be_left_out() {
        let request: DeployRequest = serde_json::from_str(r#"{"image":"hello","replicas":3}"#).expect("minimal");
        assert_eq!(request.memory_mib, None);
        assert_eq!(request.restart, None);
        let text = serde_json::to_string(&DeployRequest { restart: Some(RestartWhen::OnFailure), ..request })
            .expect("serialises");
        assert!(text.contains(r#""restart":"on-failure""#), "{text}");
    }

    #[test]
    fn unknown_restart_policies_are_named() {
        let error = "sometimes".parse::<RestartWhen>().expect_err("not a policy");
        assert!(error.contains("always, on-failure or never"), "{error}");
    }

    #[test]
    fn errors_leave_out_a_missing_hint() {
        let body = ErrorBody { error: ApiError { code: "not_found".into(), message: "no".into(), hint: None } };
        assert_eq!(serde_json::to_string(&body).expect("json"), r#"{"error":{"code":"not_found","message":"no"}}"#);
    }
}

/// `POST /v1/trust`: trust images signed by `key` from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRequest {
    /// An Ed25519 public key, 64 hex digits.
    pub key: String,
}

/// The answer to `POST /v1/trust` and `DELETE /v1/trust/<key>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustReply {
    pub key: String,
    /// False when the key was already trusted (add); removing an untrusted key is a 404.
    pub changed: bool,
}

/// A deployment and its instances: `GET /v1/deployments/<id or name>`, and what
/// `POST /v1/deployments/<id or name>/scale` leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentStatus {
    pub deployment: Deployment,
    pub instances: Vec<Instance>,
}

/// `POST /v1/deployments/<id or name>/scale`: run exactly `replicas` instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub replicas: u32,
}
