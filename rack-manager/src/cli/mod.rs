//! The command line: argument parsing, finding the manager, and each subcommand's output.
//!
//! Output is a table for people by default and JSON with `-o json` for scripts. Progress of long
//! operations goes to stderr, so stdout stays clean for pipes.

mod logs;
mod on_demand;
mod output;
mod peers;
mod power;
mod replicate;
mod stats;
mod targets;
mod tokens;
mod trust;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use images::keys::PublicKey;
use rack_api::{
    DeployRequest, DeployResponse, DrainResponse, Host, Image, Instance, InstanceState, JoinRequest, Plan, RestartWhen,
};

use crate::{
    agent::LocalAgent,
    client::{Client, ClientError},
    daemon::{self, LauncherKind, ServeConfig, StoreChoice, TenderOptions},
    datadir::DataDir,
};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the operation failed (e.g. a deployed instance could not start), or an unexpected error
  2  bad command-line usage
  3  the manager cannot be reached (is `rack-manager serve` running? is --manager right?)
  4  no usable token: the manager refused it, or it cannot be read (set RACK_TOKEN or --token-file,
     run on the manager's host, or join the group that may read it: see docs/operating.md)
  5  the manager refused the request: bad input, unknown name, conflict, untrusted image,
     impossible placement (the message says which, and state is unchanged)
  6  the manager failed while handling the request";

/// The heading of the options only the CLI's client commands use (not `serve` or `agent`).
const CLIENT_OPTIONS: &str = "Client options (commands that talk to a manager)";

const EXAMPLES: &str = "\
Examples:
  rack-manager serve                               # manager + local host agent, data in ~/.local/share/mast-rack
  rack-manager trust add KEY                       # accept images signed by KEY (a checkout's own key is trusted by serve)
  rack-manager image push target/images/aarch64/release/hello.mast
  rack-manager deploy hello --replicas 3 --arg world --restart on-failure
  rack-manager ps -a
  rack-manager logs hello-1 -f
  rack-manager plan hello --replicas 1000          # where 1000 replicas would go; changes nothing
  rack-manager host join-token --out join.token    # then copy join.token (mode 0600) to the new host, and there:
  rack-manager agent --join http://10.0.0.1:7878 --join-token-file join.token --listen 0.0.0.0:7879";

/// Places, runs and supervises Mast appliances on the hosts of a rack.
///
/// `serve` starts the manager; the other commands talk to it. The CLI finds the manager and its
/// admin token in the data directory (`<data-dir>/address`, `<data-dir>/token`) when run on the
/// same machine; elsewhere give --manager and --token-file (or RACK_TOKEN). Tokens are never
/// taken on the command line, where `ps` would show them.
#[derive(Debug, Parser)]
#[command(name = "rack-manager", version, after_help = format!("{EXAMPLES}\n\n{EXIT_CODES}"))]
pub struct Cli {
    /// The data directory: state, images, logs, token (the manager's; the CLI reads its address
    /// and token there) [env: RACK_DATA_DIR; default ~/.local/share/mast-rack].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The manager's URL, e.g. http://127.0.0.1:7878 [default: read from <data-dir>/address].
    #[arg(
        long,
        global = true,
        env = "RACK_MANAGER",
        hide_env_values = true,
        value_name = "URL",
        help_heading = CLIENT_OPTIONS
    )]
    manager: Option<String>,
    /// A file holding the manager's admin token, mode 0600 [default: RACK_TOKEN, else
    /// <data-dir>/token].
    #[arg(long, global = true, value_name = "PATH", help_heading = CLIENT_OPTIONS)]
    token_file: Option<PathBuf>,
    /// Removed: a token on the command line is visible to every user in `ps`.
    #[arg(long, global = true, hide = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Output format: tables for people, JSON (the API's own types, errors included) for scripts.
    #[arg(short, long, global = true, value_enum, default_value = "table", help_heading = CLIENT_OPTIONS)]
    output: output::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the manager (and, unless --no-local-agent, an agent for this host).
    #[command(
        after_help = "Examples:\n  rack-manager serve\n  rack-manager serve --listen 127.0.0.1:0 --data-dir /tmp/rack --trust <KEY>\n  rack-manager serve --launcher sim --sim-hosts 2000     # thousands of simulated hosts, no VMs\n  rack-manager serve --launcher tender                   # the minimal KVM monitor; guests at 10.64.x.y\n  rack-manager serve --store etcd --etcd-endpoints http://10.0.0.1:2379,http://10.0.0.2:2379 --rack r1 --host-name m1\n  rack-manager serve --store etcd --etcd-endpoints https://10.0.0.1:2379 --etcd-cacert ca.pem --etcd-user r1-manager --etcd-password-file etcd-password --rack r1"
    )]
    Serve(ServeArgs),
    /// Run a host agent that joins a manager (or waits to be added with `host add`).
    #[command(
        after_help = "Examples:\n  rack-manager host join-token --out join.token    # on the manager; copy the file to the new host\n  rack-manager agent --join http://10.0.0.1:7878 --join-token-file join.token --name host-2 --listen 0.0.0.0:7879\n  rack-manager agent --manager-url http://10.0.0.1:7878 --join-token-file join.token --listen 0.0.0.0:7879\n      # it prints its https://…#sha256=… address; then: rack-manager host add host-2 https://10.0.0.2:7879#sha256=…\n\nThe join token is used once: the manager then gives this agent its own credentials, kept in\n<data-dir>/credentials (mode 0600), so restarts need no new token. The agent serves its API over\nTLS with a self-signed certificate (<data-dir>/agent-identity/) that the manager pins at join."
    )]
    Agent(AgentArgs),
    /// List, drain or remove hosts.
    #[command(subcommand)]
    Host(HostCommand),
    /// Push, list, inspect or remove images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Deploy replicas of an image and wait until each has started.
    #[command(
        after_help = "Examples:\n  rack-manager deploy hello\n  rack-manager deploy crash --replicas 3 --arg exit --arg 3 --restart on-failure\n  rack-manager deploy httpd --replicas 10 --mem 32 --detach\n  rack-manager deploy httpd --on-demand --idle-timeout 30s --max-instances 4"
    )]
    Deploy(DeployArgs),
    /// Show where replicas would go, without deploying anything.
    Plan(Sizing),
    /// List instances (active ones; -a for all).
    Ps {
        /// Show every instance, also exited, failed and stopped ones.
        #[arg(short, long)]
        all: bool,
        /// Print only instance ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show console output (the last 64 KiB of each log) of instances or a deployment's.
    #[command(
        after_help = "Examples:\n  rack-manager logs httpd-1 -f\n  rack-manager logs httpd      # every instance of the deployment, each under a header"
    )]
    Logs {
        /// An instance id (`httpd-1`), or a deployment: its id (`d1`) or its image's name (`httpd`).
        #[arg(value_name = "INSTANCE|DEPLOYMENT")]
        instance: String,
        /// Keep printing new output until the instance stops (one instance only).
        #[arg(short, long)]
        follow: bool,
    },
    /// Stop instances (they stay listed; `start` starts them again).
    Stop {
        /// Instance ids (`httpd-1`), or deployments by id (`d1`) or image name (`httpd`).
        #[arg(required = true, value_name = "INSTANCE|DEPLOYMENT")]
        instances: Vec<String>,
    },
    /// Start stopped, exited or failed instances.
    Start {
        /// Instance ids (`httpd-1`), or deployments by id (`d1`) or image name (`httpd`).
        #[arg(required = true, value_name = "INSTANCE|DEPLOYMENT")]
        instances: Vec<String>,
    },
    /// Restart instances.
    Restart {
        /// Instance ids (`httpd-1`), or deployments by id (`d1`) or image name (`httpd`).
        #[arg(required = true, value_name = "INSTANCE|DEPLOYMENT")]
        instances: Vec<String>,
    },
    /// Stop and remove instances (a deployment goes with its last instance).
    Rm {
        /// Instance ids (`httpd-1`), or deployments by id (`d1`) or image name (`httpd`).
        #[arg(required = true, value_name = "INSTANCE|DEPLOYMENT")]
        instances: Vec<String>,
    },
    /// Run exactly N instances of a deployment: new ones are placed like a deploy's, surplus
    /// ones (not running first, then the newest) are removed.
    #[command(after_help = "Examples:\n  rack-manager scale d1 --replicas 5\n  rack-manager scale httpd -n 1")]
    Scale {
        /// The deployment: its id (`d1`) or its image's name (`httpd`).
        #[arg(value_name = "DEPLOYMENT")]
        deployment: String,
        /// How many instances it should have (at least 1; `rm` removes a deployment).
        #[arg(long, short = 'n', value_name = "N")]
        replicas: u32,
    },
    /// CPU (now, over --interval) and memory of running instances, with host totals.
    #[command(
        after_help = "Examples:\n  rack-manager stats\n  rack-manager stats httpd --watch        # one deployment, refreshed every second"
    )]
    Stats(stats::StatsArgs),
    /// Which image signing keys the rack accepts: add, list, remove (live, no restart).
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// Replication of images and volumes to the cloud and peer racks.
    #[command(subcommand)]
    Replicate(replicate::ReplicateCommand),
    /// This rack's name, peer URL and certificate fingerprint: what other racks need to `peer add` it.
    Identity,
    /// Add, list, remove or probe peer racks (mutual TLS, pinned certificates).
    #[command(subcommand)]
    Peer(peers::PeerCommand),
    /// Failover between peer racks: the plan, and what this rack has taken over.
    #[command(subcommand)]
    Failover(peers::FailoverCommand),
    /// Scoped API tokens: read-only (Prometheus, the dashboard), deploy, admin.
    #[command(subcommand)]
    Token(tokens::TokenCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address for the API. Port 0 picks a free port; the URL is written to <data-dir>/address.
    #[arg(long, env = "RACK_LISTEN", hide_env_values = true, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Trust images signed by this public key (64 hex digits); remembered in <data-dir>/trusted-keys.
    #[arg(long, value_name = "KEY")]
    trust: Vec<PublicKey>,
    /// Do not trust the signing key of the Mast checkout `serve` is started from (by default,
    /// started inside a checkout or from its target/, its .mast/signing.key is trusted).
    #[arg(long)]
    no_workspace_trust: bool,
    /// How the built-in agent starts instances.
    #[arg(long, value_enum, default_value = "qemu")]
    launcher: LauncherKind,
    #[command(flatten)]
    tender: TenderArgs,
    /// With --launcher sim: simulate this many hosts.
    #[arg(long, default_value_t = 0)]
    sim_hosts: u32,
    /// The name of this host in `host ls`.
    #[arg(long, default_value = "local")]
    host_name: String,
    #[command(flatten)]
    capacity: crate::capacity::CapacityArgs,
    /// Run no agent here: only hosts that join run instances.
    #[arg(long)]
    no_local_agent: bool,
    /// The most the rack may draw, in watts, if every reserved vCPU were busy: a deploy that
    /// would pass it is refused with the numbers (hosts' models: `host power`; docs/dashboard.md).
    #[arg(long, value_name = "WATTS", value_parser = parse_watts)]
    power_budget_w: Option<f64>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    log: crate::logging::LogArgs,
    #[command(flatten)]
    replication: crate::rack::image_store::ReplicationArgs,
    #[command(flatten)]
    peer: crate::peer::PeerArgs,
}

/// Where the rack's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    /// SQLite in the data directory: one machine manages the rack.
    Sqlite,
    /// An etcd cluster: managers on several machines share the rack, one elected scheduler.
    Etcd,
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// Where the rack's state lives (see docs/rack-state.md).
    #[arg(long = "store", value_enum, default_value = "sqlite")]
    kind: StoreKind,
    /// With --store etcd: the etcd members' client URLs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379", value_name = "URLS")]
    etcd_endpoints: Vec<String>,
    /// This rack's name (also `--rack-name`): with --store etcd its state lives under
    /// /mast/<rack>/ [default: default]; with --peer-listen it is the rack's identity to its
    /// peers, fixed at the first start [default: rack].
    #[arg(long, alias = "rack-name", value_name = "NAME")]
    rack: Option<String>,
    /// With --store etcd: seconds after which a dead manager's hosts read as down and a standby
    /// takes over as scheduler.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    lease_ttl: u32,
    #[command(flatten)]
    etcd_access: EtcdAccessArgs,
}

impl StoreArgs {
    fn choice(&self) -> anyhow::Result<StoreChoice> {
        Ok(match self.kind {
            StoreKind::Sqlite => {
                if let Some(flag) = self.etcd_access.given() {
                    bail!("{flag} is for the etcd store: add --store etcd, or drop {flag}");
                }
                StoreChoice::Sqlite
            }
            StoreKind::Etcd => StoreChoice::Etcd(crate::store::etcd::EtcdSettings {
                endpoints: self.etcd_endpoints.clone(),
                rack: self.rack.clone().unwrap_or_else(|| "default".to_owned()),
                lease_ttl_s: self.lease_ttl,
                access: self.etcd_access.access()?,
            }),
        })
    }
}

/// TLS and the etcd user (docs/rack-state.md, "Securing etcd").
#[derive(Debug, Args)]
struct EtcdAccessArgs {
    /// The CA that signed etcd's certificates (etcd's --trusted-ca-file); required with https://
    /// etcd endpoints.
    #[arg(long, value_name = "FILE")]
    etcd_cacert: Option<PathBuf>,
    /// A client certificate for etcd, where it runs with --client-cert-auth (with --etcd-key).
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// The private key of --etcd-cert; refused unless only its owner may read it (chmod 600).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// The etcd user to log in as, where etcd has authentication on; its password comes from
    /// --etcd-password-file or the environment variable RACK_ETCD_PASSWORD, never the command line.
    #[arg(long, value_name = "NAME")]
    etcd_user: Option<String>,
    /// A file holding --etcd-user's password (a final line break is not part of it); chmod 600.
    #[arg(long, value_name = "FILE")]
    etcd_password_file: Option<PathBuf>,
}

impl EtcdAccessArgs {
    fn access(&self) -> anyhow::Result<crate::store::etcd::EtcdAccess> {
        use crate::store::etcd::{EtcdAccess, PASSWORD_ENV};
        let user = EtcdAccess::user(
            self.etcd_user.as_deref(),
            self.etcd_password_file.as_deref(),
            std::env::var(PASSWORD_ENV).ok(),
        )?;
        Ok(EtcdAccess {
            ca: self.etcd_cacert.clone(),
            client_cert: self.etcd_cert.clone().zip(self.etcd_key.clone()),
            user,
        })
    }

    /// The first etcd access flag given, if any.
    fn given(&self) -> Option<&'static str> {
        [
            (self.etcd_cacert.is_some(), "--etcd-cacert"),
            (self.etcd_cert.is_some(), "--etcd-cert"),
            (self.etcd_user.is_some(), "--etcd-user"),
            (self.etcd_password_file.is_some(), "--etcd-password-file"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }
}

#[derive(Debug, Args)]
struct AgentArgs {
    #[command(flatten)]
    log: crate::logging::LogArgs,
    /// The manager's URL: the agent joins it as a host, and fetches images from it.
    #[arg(long, value_name = "URL", required_unless_present = "manager_url", conflicts_with = "manager_url")]
    join: Option<String>,
    /// The manager's URL, without joining: the agent waits for `rack-manager host add` (and
    /// fetches images from this manager).
    #[arg(long = "manager-url", value_name = "URL")]
    manager_url: Option<String>,
    /// A file holding a join token from `rack-manager host join-token` (mode 0600), for the
    /// first join [env: RACK_JOIN_TOKEN]; not needed once the agent has joined.
    #[arg(long, value_name = "PATH")]
    join_token_file: Option<PathBuf>,
    /// A file (mode 0600) holding the token Prometheus presents to this agent's `GET /metrics`
    /// (e.g. a read-only token from `rack-manager token create --read-only --out FILE`); it
    /// reads the metrics and nothing else.
    #[arg(long, value_name = "PATH")]
    metrics_token_file: Option<PathBuf>,
    /// Address this agent listens on (HTTPS); the manager must be able to reach it.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// This host's name [default: the machine's hostname].
    #[arg(long)]
    name: Option<String>,
    /// Trust images signed by this public key; remembered in <data-dir>/trusted-keys.
    #[arg(long, value_name = "KEY")]
    trust: Vec<PublicKey>,
    /// How this agent starts instances.
    #[arg(long, value_enum, default_value = "qemu")]
    launcher: LauncherKind,
    #[command(flatten)]
    tender: TenderArgs,
    #[command(flatten)]
    capacity: crate::capacity::CapacityArgs,
    /// The rack's etcd (when its manager runs --store etcd): the agent keeps its host's liveness
    /// key there on its own lease, so every manager sees the host down once the agent dies.
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    etcd_endpoints: Option<Vec<String>>,
    /// With --etcd-endpoints: the rack's name, as the manager's --rack.
    #[arg(long, default_value = "default", value_name = "NAME")]
    rack: String,
    /// With --etcd-endpoints: seconds after its death that the host reads as down.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    lease_ttl: u32,
    // With --etcd-endpoints: TLS and the etcd user, whose role needs only the rack's `alive/`
    // and `leased/` prefixes.
    #[command(flatten)]
    etcd_access: EtcdAccessArgs,
}

/// Options of `--launcher tender`.
#[derive(Debug, Args)]
struct TenderArgs {
    /// With --launcher tender: the `tender` binary [default: next to rack-manager].
    #[arg(long, env = "MAST_TENDER", hide_env_values = true, value_name = "PATH")]
    tender: Option<PathBuf>,
    /// With --launcher tender: each instance gets a /30 of this range and a tap `mt<n>` on this
    /// host; guests are reached at their own address.
    #[arg(long, value_name = "CIDR", default_value_t = hostnet::plan::DEFAULT_SUBNET)]
    tender_subnet: hostnet::Subnet,
}

impl TenderArgs {
    fn options(&self) -> TenderOptions {
        TenderOptions { binary: self.tender.clone(), subnet: Some(self.tender_subnet) }
    }
}

#[derive(Debug, Subcommand)]
enum HostCommand {
    /// Add a host whose agent is running (`rack-manager agent --manager-url …`) at ADDRESS.
    Add {
        /// The name the host gets in `host ls` and `ps`.
        name: String,
        /// The address the agent printed: https://HOST:PORT#sha256=<certificate fingerprint>.
        address: String,
        /// The host's power model: idle=W,core=W[,budget=W] [default: idle=20,core=8, no budget].
        #[arg(long, value_name = "MODEL")]
        power: Option<rack_api::power::PowerModel>,
    },
    /// Set a host's power model: watts idle, per busy core, and an optional budget.
    #[command(
        after_help = "Examples:\n  rack-manager host power local idle=35,core=12\n  rack-manager host power edge-2 idle=8,core=4,budget=40   # a Pi-class board on a 40 W supply\n\nUnset keys keep the defaults (idle=20, core=8); `stats` and /metrics show the estimates."
    )]
    Power {
        /// The host, as `host ls` names it.
        name: String,
        /// idle=W,core=W[,budget=W]
        model: rack_api::power::PowerModel,
    },
    /// Mint a one-use join token for a new agent (`agent --join-token-file`).
    #[command(
        after_help = "Examples:\n  rack-manager host join-token --out /tmp/join.token\n  rack-manager host join-token --ttl 600      # prints the token; keep it out of shell history"
    )]
    JoinToken {
        /// Seconds until the token expires (at most a week).
        #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
        ttl: u64,
        /// Write the token to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// List hosts with their capacity and use.
    Ls,
    /// Move a host's instances to other hosts and take no new ones.
    Drain {
        /// The host's name, as `host ls` shows it.
        name: String,
    },
    /// Forget a host that has no instances.
    Rm {
        /// The host's name, as `host ls` shows it.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Upload images; only images signed by a key the rack trusts are accepted.
    Push {
        /// `.mast` files, as `cargo xtask image build` prints them.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// List images.
    Ls,
    /// Show one image (by name or id prefix) in full.
    Inspect {
        /// An image name or id prefix (6+ hex digits).
        image: String,
    },
    /// Remove an image no deployment uses.
    Rm {
        /// An image name or id prefix (6+ hex digits).
        image: String,
    },
}

/// What to place and how big: shared by `deploy` and its dry run, `plan`.
#[derive(Debug, Args)]
struct Sizing {
    /// Image name or id prefix.
    image: String,
    /// How many instances to run (each on the least loaded host that can take it).
    #[arg(long, short = 'n', default_value_t = 1)]
    replicas: u32,
    /// Guest RAM per instance in MiB [default: the manifest's].
    #[arg(long = "mem", value_name = "MIB")]
    memory_mib: Option<u32>,
    /// vCPUs per instance [default: the manifest's].
    #[arg(long)]
    vcpus: Option<u32>,
    /// Of the images with this name, the one built for this architecture (x86_64, aarch64).
    #[arg(long, value_name = "ARCH")]
    arch: Option<String>,
    /// Of the images with this name, the one built for this platform (qemu, tender).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
}

impl Sizing {
    fn request(&self, args: Option<Vec<String>>, restart: Option<RestartWhen>) -> DeployRequest {
        DeployRequest {
            image: self.image.clone(),
            replicas: self.replicas,
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
            args,
            restart,
            arch: self.arch.clone(),
            platform: self.platform.clone(),
            on_demand: None,
        }
    }
}

#[derive(Debug, Args)]
struct DeployArgs {
    #[command(flatten)]
    sizing: Sizing,
    /// A boot argument (repeat for more); replaces the manifest's arguments.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// When to restart an instance that stops: always, on-failure (a non-zero status) or never
    /// [default: the manifest's policy].
    #[arg(long, value_parser = parse_restart)]
    restart: Option<RestartWhen>,
    /// Return once the deployment is recorded, without waiting for the instances to start.
    #[arg(long, short)]
    detach: bool,
    /// How long to wait for the instances to start, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Peer racks that may run this deployment when this rack is down, in order of preference.
    #[arg(long, value_delimiter = ',', value_name = "RACK,...")]
    failover_to: Vec<String>,
    #[command(flatten)]
    on_demand: on_demand::OnDemandArgs,
}

fn parse_watts(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|w| w.is_finite() && *w > 0.0)
        .ok_or_else(|| format!("{text:?} is not a positive number of watts"))
}

fn parse_restart(text: &str) -> Result<RestartWhen, String> {
    text.parse()
}

/// Exit codes (see [`EXIT_CODES`]).
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;
const EXIT_UNAUTHORIZED: u8 = 4;
const EXIT_REFUSED: u8 = 5;
const EXIT_MANAGER_ERROR: u8 = 6;

/// The token could not be read (missing, unreadable, too open): exit 4, like a refused one.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct TokenError(anyhow::Error);

/// Whether the raw arguments ask for JSON output (`-o json`, `--output json`, `-ojson`,
/// `--output=json`), so that even a usage error clap reports comes as JSON.
fn wants_json(args: &[std::ffi::OsString]) -> bool {
    let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    args.windows(2).any(|w| matches!(w, ["-o" | "--output", "json"]))
        || args.iter().any(|a| matches!(*a, "-ojson" | "--output=json"))
}

/// Prints an error the way `-o` asks: `error: …` on stderr, or the API's error body as JSON on
/// stdout (where scripts read), with a stable `code`.
fn report(json: bool, code: &str, error: &anyhow::Error) {
    if !json {
        eprintln!("error: {error:#}");
        return;
    }
    let body = match error.downcast_ref::<ClientError>() {
        Some(ClientError::Api { body, .. }) => body.clone(),
        _ => {
            let text = format!("{error:#}");
            let (message, hint) = match text.split_once("\n  hint: ") {
                Some((message, hint)) => (message.to_owned(), Some(hint.to_owned())),
                None => (text, None),
            };
            rack_api::ErrorBody { error: rack_api::ApiError { code: code.to_owned(), message, hint } }
        }
    };
    if output::print_json(&body).is_err() {
        eprintln!("error: {error:#}");
    }
}

pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let json = wants_json(&args);
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if json && e.use_stderr() => {
            let message = e.to_string();
            let message = message.trim().trim_start_matches("error: ").lines().next().unwrap_or("bad usage");
            report(true, "usage", &anyhow::anyhow!("{message}\n  hint: see `rack-manager --help`"));
            return ExitCode::from(EXIT_USAGE);
        }
        // Help and version (exit 0), or a usage error as clap prints it (exit 2).
        Err(e) => e.exit(),
    };
    let json = cli.output == output::Format::Json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let (code, name) = match error.downcast_ref::<ClientError>() {
                Some(ClientError::Unreachable { .. } | ClientError::NoManager(_)) => (EXIT_UNREACHABLE, "unreachable"),
                Some(ClientError::Api { status: 401 | 403, .. }) => (EXIT_UNAUTHORIZED, "unauthorized"),
                Some(ClientError::Api { status, .. }) if *status < 500 => (EXIT_REFUSED, "refused"),
                Some(ClientError::Api { .. } | ClientError::Decode { .. }) => (EXIT_MANAGER_ERROR, "manager_error"),
                None if error.downcast_ref::<TokenError>().is_some() => (EXIT_UNAUTHORIZED, "no_token"),
                None => (EXIT_FAILED, "failed"),
            };
            report(json, name, &error);
            ExitCode::from(code)
        }
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RACK_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("mast-rack");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/mast-rack")
}

fn client(cli: &Cli, data_dir: &Path) -> anyhow::Result<Client> {
    let dir = DataDir::at(data_dir);
    let manager = match cli.manager.as_ref().filter(|m| !m.is_empty()) {
        Some(url) => url.clone(),
        None => std::fs::read_to_string(dir.address_file()).map(|s| s.trim().to_owned()).map_err(|_| {
            anyhow::Error::new(ClientError::NoManager(format!(
                "no manager has run with the data directory {} (there is no {})\n  hint: start one with \
                 `rack-manager serve`, or pass --manager URL, or the --data-dir of a running manager",
                dir.root().display(),
                dir.address_file().display()
            )))
        })?,
    };
    let token = admin_token(cli, &dir).map_err(|e| anyhow::Error::new(TokenError(e)))?;
    Ok(Client::new(&manager, &token, Duration::from_secs(30)))
}

/// The admin token: --token-file, else RACK_TOKEN, else `<data-dir>/token`. Files that others
/// may read are refused with the `chmod` that fixes them.
fn admin_token(cli: &Cli, dir: &DataDir) -> anyhow::Result<String> {
    if let Some(path) = &cli.token_file {
        return crate::credentials::read_secret_file(path);
    }
    if let Some(token) = std::env::var("RACK_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        return Ok(token.trim().to_owned());
    }
    if !dir.token_file().exists() {
        bail!(
            "no API token: {} does not exist; on another machine, set RACK_TOKEN or pass --token-file \
             (a copy of the manager's <data-dir>/token, mode 0600)",
            dir.token_file().display()
        );
    }
    crate::credentials::read_secret_file(&dir.token_file())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.token.is_some() {
        bail!(
            "--token is no longer accepted: a token on the command line is visible to every user in `ps`; \
             use --token-file PATH (mode 0600) or the RACK_TOKEN environment variable (agents: --join-token-file)"
        );
    }
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    let format = cli.output;
    if !matches!(cli.command, Command::Serve(_) | Command::Agent(_)) {
        // What the shared code logs (`identity` creating one, a peer probe) reaches the user too.
        crate::logging::init(&crate::logging::LogArgs {
            log_format: crate::logging::LogFormat::Human,
            log_level: crate::logging::LogLevel::Info,
        });
    }
    match &cli.command {
        Command::Serve(args) => daemon::serve(ServeConfig {
            log: args.log.clone(),
            store: args.store.choice()?,
            data_dir,
            listen: args.listen,
            trust: args.trust.clone(),
            no_workspace_trust: args.no_workspace_trust,
            launcher: args.launcher,
            tender: args.tender.options(),
            no_local_agent: args.no_local_agent,
            host_name: args.host_name.clone(),
            capacity: args.capacity.clone(),
            sim_hosts: args.sim_hosts,
            power_budget_w: args.power_budget_w,
            replication: args.replication.clone(),
            peer: crate::peer::PeerArgs { rack_name: args.store.rack.clone(), ..args.peer.clone() },
        }),
        Command::Agent(args) => agent(args, &data_dir),
        Command::Host(command) => {
            let client = client(&cli, &data_dir)?;
            match command {
                HostCommand::Add { name, address, power } => {
                    let request = rack_api::AddHostRequest { name: name.clone(), address: address.clone() };
                    let host: Host = client.post("/hosts/add", &request)?;
                    if let Some(model) = power {
                        let _: rack_api::power::PowerModel = client.post(&format!("/hosts/{name}/power"), model)?;
                    }
                    output::hosts(format, &[host])
                }
                HostCommand::Power { name, model } => {
                    let set: rack_api::power::PowerModel = client.post(&format!("/hosts/{name}/power"), model)?;
                    let budget = set.budget_w.map_or_else(|| "no budget".to_owned(), |b| format!("budget {b} W"));
                    output::done(
                        format,
                        &set,
                        &format!("host {name}: {} W idle, {} W per busy core, {budget}", set.idle_w, set.core_w),
                    )
                }
                HostCommand::Ls => output::hosts(format, &client.get::<Vec<Host>>("/hosts")?),
                HostCommand::JoinToken { ttl, out } => {
                    let minted: rack_api::JoinToken =
                        client.post("/join-tokens", &serde_json::json!({ "ttl_s": ttl }))?;
                    match out {
                        Some(path) => {
                            anyhow::ensure!(
                                !path.exists(),
                                "{} exists: give --out a new file (join tokens are one-use)",
                                path.display()
                            );
                            crate::credentials::write_secret_file(path, &format!("{}\n", minted.token))?;
                            eprintln!(
                                "wrote a one-use join token to {} (expires in {ttl} s); on the new host: \
                                 rack-manager agent --join <manager URL> --join-token-file {}",
                                path.display(),
                                path.display()
                            );
                            Ok(())
                        }
                        None => {
                            println!("{}", minted.token);
                            Ok(())
                        }
                    }
                }
                HostCommand::Drain { name } => {
                    let response: DrainResponse = client.post(&format!("/hosts/{name}/drain"), &())?;
                    output::drained(format, &response)
                }
                HostCommand::Rm { name } => {
                    let host: Host = client.delete(&format!("/hosts/{name}"))?;
                    output::done(format, &host, &format!("removed host {}", host.name))
                }
            }
        }
        Command::Image(command) => {
            let client = client(&cli, &data_dir)?;
            match command {
                ImageCommand::Push { files } => {
                    let mut pushed = Vec::new();
                    for file in files {
                        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                        eprintln!("pushing {} ({} bytes)…", file.display(), bytes.len());
                        let image: Image = client.post_raw("/images", "application/octet-stream", &bytes)?;
                        warn_if_unrunnable(&client, &image);
                        pushed.push(image);
                    }
                    output::images(format, &pushed)
                }
                ImageCommand::Ls => output::images(format, &client.get::<Vec<Image>>("/images")?),
                ImageCommand::Inspect { image } => {
                    output::image(format, &client.get::<Image>(&format!("/images/{image}"))?)
                }
                ImageCommand::Rm { image } => {
                    let image: Image = client.delete(&format!("/images/{image}"))?;
                    output::done(
                        format,
                        &image,
                        &format!("removed image {} ({})", image.name, rack_api::short_id(&image.id)),
                    )
                }
            }
        }
        Command::Deploy(args) => deploy(&client(&cli, &data_dir)?, format, args),
        Command::Plan(sizing) => {
            let request = sizing.request(None, None);
            output::plan(format, &client(&cli, &data_dir)?.post::<_, Plan>("/plan", &request)?)
        }
        Command::Ps { all, quiet } => {
            let instances: Vec<Instance> = client(&cli, &data_dir)?.get(&format!("/instances?all={all}"))?;
            output::instances(format, &instances, *quiet)
        }
        Command::Logs { instance, follow } => logs::run(&client(&cli, &data_dir)?, format, instance, *follow),
        Command::Stop { instances } => targets::lifecycle(&client(&cli, &data_dir)?, format, instances, "stop"),
        Command::Start { instances } => targets::lifecycle(&client(&cli, &data_dir)?, format, instances, "start"),
        Command::Restart { instances } => targets::lifecycle(&client(&cli, &data_dir)?, format, instances, "restart"),
        Command::Rm { instances } => targets::lifecycle(&client(&cli, &data_dir)?, format, instances, "rm"),
        Command::Scale { deployment, replicas } => {
            targets::scale(&client(&cli, &data_dir)?, format, deployment, *replicas)
        }
        Command::Stats(args) => stats::run(&client(&cli, &data_dir)?, format, args),
        Command::Trust(command) => trust::run(&client(&cli, &data_dir)?, format, command),
        Command::Replicate(command) => replicate::run(&client(&cli, &data_dir)?, format, command),
        Command::Identity => peers::identity(format, &data_dir),
        Command::Peer(command @ peers::PeerCommand::Probe { .. }) => peers::probe(format, &data_dir, command),
        Command::Peer(command) => peers::peer(&client(&cli, &data_dir)?, format, &data_dir, command),
        Command::Failover(command) => peers::failover(&client(&cli, &data_dir)?, format, command),
        Command::Token(command) => tokens::run(&client(&cli, &data_dir)?, format, command),
    }
}

fn agent(args: &AgentArgs, data_dir: &Path) -> anyhow::Result<()> {
    crate::logging::init(&args.log);
    let join_token = match &args.join_token_file {
        Some(path) => Some(crate::credentials::read_secret_file(path)?),
        None => std::env::var("RACK_JOIN_TOKEN").ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()),
    };
    let dir = DataDir::open(data_dir)?;
    let _lock = dir.lock()?;
    let manager = args.join.as_ref().or(args.manager_url.as_ref()).expect("clap requires one of them");
    let link =
        std::sync::Arc::new(crate::agent::server::ManagerLink::open(manager, dir.credentials_file(), join_token)?);
    let trusted = crate::trust::Trust::open(&dir, &args.trust)?;
    let launcher = daemon::make_launcher(args.launcher, &args.tender.options(), &dir)?;
    let offer = args.capacity.offer(args.launcher);
    let (memory_mib, vcpus) = (offer.memory_mib, offer.vcpus);
    eprintln!("rack-manager: this host offers instances {}", offer.explanation);
    let identity = crate::peer::identity::Identity::load_or_create(&dir.agent_identity_dir(), None)
        .context("the agent's TLS identity")?;
    let tls = crate::peer::tls::server_config_without_client_auth(&identity)?;
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {} (pick another --listen)", args.listen))?;
    let address = listener.local_addr().context("the agent listens on an IP address")?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => {
            std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "agent".into())
        }
    };
    let join = JoinRequest {
        name,
        address: format!("https://{address}"),
        launcher: launcher.name().into(),
        arches: launcher.arches().iter().map(|a| a.name().to_owned()).collect(),
        memory_mib,
        vcpus,
        fingerprint: Some(hex::encode(identity.fingerprint())),
    };
    // Held until the process ends: its lease is the host's liveness.
    let _liveness = match &args.etcd_endpoints {
        Some(endpoints) => {
            let settings = crate::store::etcd::EtcdSettings {
                endpoints: endpoints.clone(),
                rack: args.rack.clone(),
                lease_ttl_s: args.lease_ttl,
                access: args.etcd_access.access()?,
            };
            let mut store = crate::store::etcd::EtcdStore::connect(&settings)?;
            crate::store::StateStore::hold_liveness(&mut store, &join.name)?;
            Some(store)
        }
        None => {
            if let Some(flag) = args.etcd_access.given() {
                bail!("{flag} is for the rack's etcd: add --etcd-endpoints URLS, or drop {flag}");
            }
            None
        }
    };
    let agent = LocalAgent::new(launcher, dir, trusted, Some(link.clone()));
    let metrics_token = args.metrics_token_file.as_deref().map(crate::credentials::read_secret_file).transpose()?;
    crate::agent::server::run(agent, listener, tls, link, args.join.is_some(), join, metrics_token)
}

fn deploy(client: &Client, format: output::Format, args: &DeployArgs) -> anyhow::Result<()> {
    let mut request = args.sizing.request((!args.args.is_empty()).then(|| args.args.clone()), args.restart);
    request.on_demand = args.on_demand.settings();
    let started = Instant::now();
    let response: DeployResponse = client.post("/deployments", &request)?;
    let d = &response.deployment;
    eprintln!(
        "deployment {}: {} replica(s) of {} ({}), {} MiB each, restart {}",
        d.id,
        d.replicas,
        d.image_name,
        rack_api::short_id(&d.image_id),
        d.memory_mib,
        d.restart.when.as_str()
    );
    if !args.failover_to.is_empty() {
        peers::set_plan(client, &d.id, &args.failover_to)?;
    }
    if args.detach {
        return output::instances(format, &response.instances, false);
    }
    let ids: Vec<&str> = response.instances.iter().map(|i| i.id.as_str()).collect();
    let deadline = started + Duration::from_secs(args.timeout);
    let mut last_line = String::new();
    let instances = loop {
        let all: Vec<Instance> = client.get("/instances?all=true")?;
        let mine: Vec<Instance> = all.into_iter().filter(|i| ids.contains(&i.id.as_str())).collect();
        let started_count = mine.iter().filter(|i| i.started_ms.is_some() || i.state == InstanceState::Failed).count();
        let running = mine.iter().filter(|i| i.state == InstanceState::Running).count();
        let line = format!("  {started_count}/{} started, {running} running", ids.len());
        if line != last_line {
            eprintln!("{line}");
            last_line = line;
        }
        if started_count == ids.len() {
            break mine;
        }
        if Instant::now() > deadline {
            bail!(
                "only {started_count} of {} instances started within {} s; see `rack-manager ps -a` and `rack-manager logs`",
                ids.len(),
                args.timeout
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    eprintln!("all {} instance(s) started in {:.2} s", instances.len(), started.elapsed().as_secs_f64());
    output::instances(format, &instances, false)?;
    let failed: Vec<&Instance> = instances.iter().filter(|i| i.state == InstanceState::Failed).collect();
    if !failed.is_empty() {
        let why = failed
            .iter()
            .map(|i| format!("{}: {}", i.id, i.message.as_deref().unwrap_or("failed")))
            .collect::<Vec<_>>();
        bail!("{} instance(s) failed: {}", failed.len(), why.join("; "));
    }
    Ok(())
}

/// After a push: says at once when no host of the rack can run the image, with the build that
/// one could (`plan` and `deploy` refuse it the same way).
fn warn_if_unrunnable(client: &Client, image: &Image) {
    let Ok(hosts) = client.get::<Vec<Host>>("/hosts") else { return };
    if hosts.is_empty() || hosts.iter().any(|h| rack_api::can_run(&h.launcher, &h.arches, &image.arch, &image.platform))
    {
        return;
    }
    let host = &hosts[0];
    let platform = if host.launcher == "tender" { "tender" } else { "qemu" };
    let arch = host.arches.iter().find(|a| a.as_str() == std::env::consts::ARCH).or(host.arches.first());
    eprintln!(
        "warning: no host of this rack can run {} ({} on {}): the hosts run {}",
        image.name,
        image.arch,
        if image.platform.is_empty() { "an unknown platform" } else { &image.platform },
        hosts.iter().map(|h| format!("{} ({})", h.launcher, h.arches.join("+"))).collect::<Vec<_>>().join(", ")
    );
    if let Some(arch) = arch {
        eprintln!("  hint: build one it can run: {}", rack_api::build_command(&image.name, arch, platform));
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every argument and option a user can give has help text, in every subcommand.
    #[test]
    fn every_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !arg.is_hide_set() && !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let mut command = Cli::command();
        command.build();
        walk(&command, "rack-manager", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    /// `serve --help` keeps the client's options apart, and env lines name the variable only.
    #[test]
    fn serve_help_separates_client_options_and_reads_env_properly() {
        let mut command = Cli::command();
        command.build();
        let serve = command.find_subcommand_mut("serve").expect("serve").render_long_help().to_string();
        let client_section = serve.split(super::CLIENT_OPTIONS).nth(1).expect("a client section");
        assert!(client_section.contains("--manager"), "{serve}");
        let before = serve.split(super::CLIENT_OPTIONS).next().expect("text");
        assert!(!before.contains("--manager") && !before.contains("--token-file"), "{serve}");
        assert!(!serve.contains("=]"), "env lines show a value placeholder: {serve}");
    }

    #[test]
    fn help_documents_exit_codes_and_examples() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:") && help.contains("5  the manager refused the request"), "{help}");
        assert!(help.contains("rack-manager deploy hello --replicas 3"), "{help}");
    }
}
