//! A rack on etcd, end to end: real `etcd`, real `rack-manager serve` processes sharing it.
//!
//! - one elected scheduler: a second manager stays standby and refuses placements; after a
//!   `kill -9` of the leader its lease expires, its host reads as down and the standby takes over
//!   and places a new deployment;
//! - image bytes never go into etcd: only metadata does;
//! - an unreachable etcd is reported with what to do;
//! - a secure etcd (TLS with client certificates, authentication on, users whose roles reach only
//!   the rack's prefix; certificates made by the test): the rack works through it, and each
//!   refusal (no CA, a stranger's CA, no or a stranger's client certificate, a loose key, a wrong or
//!   missing password, no user, another rack's prefix) stops `serve` with what to do;
//! - a host record written straight into etcd (no TLS, no auth) is never contacted: the manager's
//!   token never reaches the address it names.
//!
//! The simulated launcher runs the instances: what is tested is the state, not the VMs.

mod common;
#[path = "common/etcd.rs"]
mod etcd_server;

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{BIN, Rack, image};
use etcd_server::{EtcdServer, ServerTls};
use images::Arch;
use rack_api::{Host, HostState, Instance, InstanceState};
use rustix::process::{Pid, Signal, kill_process};

/// The lease TTL the managers run with: short, so failover is quick to test.
const LEASE_TTL: &str = "2";

fn manager(etcd: &EtcdServer, host_name: &str) -> Rack {
    Rack::start(&[
        "--store",
        "etcd",
        "--etcd-endpoints",
        &etcd.endpoint(),
        "--rack",
        "r1",
        "--lease-ttl",
        LEASE_TTL,
        "--launcher",
        "sim",
        "--memory-mib",
        "1024",
        "--host-name",
        host_name,
    ])
}

fn daemon_log(rack: &Rack) -> String {
    std::fs::read_to_string(rack.data_dir().join("daemon.stderr")).unwrap_or_default()
}

fn is_scheduler(rack: &Rack) -> bool {
    daemon_log(rack).contains("is now the scheduler of rack r1")
}

/// Polls `done` every 50 ms for at most `timeout`; returns how long it took.
fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

fn hosts(rack: &Rack) -> Vec<Host> {
    serde_json::from_str(&rack.ok(&["host", "ls", "-o", "json"])).expect("host ls -o json is JSON")
}

fn host_state(rack: &Rack, name: &str) -> Option<HostState> {
    hosts(rack).into_iter().find(|h| h.name == name).map(|h| h.state)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[test]
fn the_standby_takes_over_when_the_scheduler_dies() {
    let Some(etcd) = EtcdServer::start() else { return };
    let hello = image("hello", Arch::Aarch64);
    let mut first = manager(&etcd, "m1");
    wait_until("m1 to be elected", Duration::from_secs(20), || is_scheduler(&first));
    let second = manager(&etcd, "m2");
    // Both managers serve the rack: each keeps the image's bytes in its own data directory.
    first.ok(&["image", "push", path_str(&hello)]);
    second.ok(&["image", "push", path_str(&hello)]);

    wait_until("m1 to see its own host ready", Duration::from_secs(20), || {
        host_state(&first, "m1") == Some(HostState::Ready)
    });
    let deployed: Vec<Instance> =
        serde_json::from_str(&first.ok(&["deploy", "hello", "-o", "json"])).expect("deploy -o json is JSON");
    assert_eq!(deployed[0].host, "m1", "the scheduler places on the host it runs");
    // The standby sees the same state, and refuses to place.
    assert_eq!(second.ps().len(), 1);
    let refused = second.cli(&["deploy", "hello"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("standby"), "{stderr}");
    assert!(!is_scheduler(&second), "two schedulers: {}", daemon_log(&second));

    // kill -9 the scheduler: its lease expires, its host reads as down, the standby takes over.
    let killed = Instant::now();
    first.kill_daemon();
    let down = wait_until("m1 to read as down", Duration::from_secs(30), || {
        host_state(&second, "m1") == Some(HostState::Unreachable)
    });
    let elected = wait_until("m2 to be elected", Duration::from_secs(30), || is_scheduler(&second));
    let placed = Instant::now();
    let deployed: Vec<Instance> = loop {
        let output = second.cli(&["deploy", "hello", "-o", "json"]);
        if output.status.success() {
            break serde_json::from_slice(&output.stdout).expect("deploy -o json is JSON");
        }
        assert!(
            placed.elapsed() < Duration::from_secs(30),
            "the new scheduler did not deploy: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            daemon_log(&second)
        );
        thread::sleep(Duration::from_millis(100));
    };
    let total = killed.elapsed();
    assert_eq!(deployed[0].host, "m2", "m1 is down: the new deployment goes to m2");
    second.wait_for("the new instance running", Duration::from_secs(30), |all| {
        all.iter().any(|i| i.id == deployed[0].id && i.state == InstanceState::Running)
    });
    eprintln!(
        "lease TTL {LEASE_TTL} s; after kill -9 of the scheduler: its host read as down after {:?}, the standby \
         was elected after {:?}, and had placed and started a new deployment after {total:?}",
        down,
        down + elected
    );
}

#[test]
fn the_new_scheduler_supervises_agents_that_joined_the_old_one() {
    let Some(etcd) = EtcdServer::start() else { return };
    let hello = image("hello", Arch::Aarch64);
    let mut first = manager(&etcd, "m1");
    wait_until("m1 to be elected", Duration::from_secs(20), || is_scheduler(&first));
    // The managers of one rack share its API token: agents and the CLI use one.
    let mut second = manager(&etcd, "m2");
    second.kill_daemon();
    std::fs::copy(first.data_dir().join("token"), second.data_dir().join("token")).expect("copies the token");
    second.start_daemon();
    first.ok(&["image", "push", path_str(&hello)]);
    second.ok(&["image", "push", path_str(&hello)]);
    // The agent joins the first manager, after the second one started.
    first.add_agent("a1", &["--launcher", "sim", "--etcd-endpoints", &etcd.endpoint(), "--rack", "r1"]);
    wait_until("a1 to join", Duration::from_secs(30), || host_state(&first, "a1") == Some(HostState::Ready));
    first.ok(&["host", "drain", "m1"]);
    let deployed: Vec<Instance> =
        serde_json::from_str(&first.ok(&["deploy", "hello", "-o", "json"])).expect("deploy -o json is JSON");
    assert_eq!(deployed[0].host, "a1");
    let id = deployed[0].id.clone();

    first.kill_daemon();
    wait_until("m2 to be elected", Duration::from_secs(30), || is_scheduler(&second));
    // The new scheduler reaches the agent it never saw join: it stops and starts its instance.
    let stopped = Instant::now();
    loop {
        let output = second.cli(&["stop", &id]);
        if output.status.success() {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "m2 cannot stop {id}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        thread::sleep(Duration::from_millis(100));
    }
    second.ok(&["start", &id]);
    let instances = second.wait_for("the instance running again", Duration::from_secs(30), |all| {
        all.iter().any(|i| i.id == id && i.state == InstanceState::Running)
    });
    assert_eq!(instances.iter().find(|i| i.id == id).map(|i| i.host.as_str()), Some("a1"));
}

#[test]
fn a_dead_agents_host_reads_as_down_when_its_lease_expires() {
    let Some(etcd) = EtcdServer::start() else { return };
    let mut rack = manager(&etcd, "m1");
    let standby = manager(&etcd, "m2");
    let lease = ["--launcher", "sim", "--etcd-endpoints", &etcd.endpoint(), "--rack", "r1", "--lease-ttl", LEASE_TTL];
    rack.add_agent("a1", &lease);
    wait_until("a1 to join", Duration::from_secs(30), || host_state(&rack, "a1") == Some(HostState::Ready));
    assert!(keys(&etcd.endpoint()).contains(&"/mast/r1/alive/a1".to_owned()), "the agent holds its liveness key");
    // Frozen, not killed: the agent still accepts connections (its pings hang until they time
    // out), but renews nothing. Its lease expires, and etcd deletes its liveness key.
    let frozen = Instant::now();
    let agent = Pid::from_raw(rack.agents[0].0.id() as i32).expect("a pid");
    kill_process(agent, Signal::STOP).expect("SIGSTOP the agent");
    wait_until("a1's liveness key to expire", Duration::from_secs(30), || {
        !keys(&etcd.endpoint()).contains(&"/mast/r1/alive/a1".to_owned())
    });
    let expired = frozen.elapsed();
    // Every manager sees the host down, the standby included, which pings nobody.
    wait_until("a1 to read as down", Duration::from_secs(30), || {
        host_state(&standby, "a1") == Some(HostState::Unreachable)
    });
    eprintln!(
        "lease TTL {LEASE_TTL} s: agent frozen → its liveness key expired after {expired:?}, its host read as down \
         on the standby after {:?}",
        frozen.elapsed()
    );
    let _ = kill_process(agent, Signal::KILL);
    // Removing the host forgets that it was leased.
    rack.ok(&["host", "rm", "a1"]);
    assert_eq!(host_state(&standby, "a1"), None);
}

#[test]
fn image_bytes_never_go_into_etcd() {
    let Some(etcd) = EtcdServer::start() else { return };
    let hello = image("hello", Arch::Aarch64);
    let bytes = std::fs::read(&hello).expect("the image reads");
    let rack = manager(&etcd, "m1");
    wait_until("m1 to be elected", Duration::from_secs(20), || is_scheduler(&rack));
    rack.ok(&["image", "push", path_str(&hello)]);
    wait_until("m1 ready", Duration::from_secs(20), || host_state(&rack, "m1") == Some(HostState::Ready));
    rack.ok(&["deploy", "hello", "--replicas", "3"]);

    let everything = all_pairs(&etcd.endpoint());
    let keys: Vec<&str> = everything.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.iter().any(|k| k.starts_with("/mast/r1/images/")), "the image's metadata is there: {keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("/mast/r1/")), "only the rack's keys: {keys:?}");
    // No value is anywhere near the image's size, and no 64-byte piece of the image is in any.
    let largest = everything.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    assert!(largest < 4096 && largest < bytes.len() / 4, "a {largest}-byte value for a {}-byte image", bytes.len());
    for piece in bytes.chunks(64).filter(|piece| piece.len() == 64) {
        for (key, value) in &everything {
            assert!(!value.windows(64).any(|w| w == piece), "{key} holds bytes of the image");
        }
    }
    eprintln!("etcd holds {} keys for the rack, the largest value {largest} bytes", everything.len());
}

/// Every key in etcd.
fn keys(endpoint: &str) -> Vec<String> {
    all_pairs(endpoint).into_iter().map(|(key, _)| key).collect()
}

/// Every key and value in etcd.
fn all_pairs(endpoint: &str) -> Vec<(String, Vec<u8>)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let mut client = etcd_client::Client::connect([endpoint], None).await.expect("connects");
        let everything = etcd_client::GetOptions::new().with_all_keys();
        let response = client.get(vec![0u8], Some(everything)).await.expect("reads every key");
        response.kvs().iter().map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec())).collect()
    })
}

#[test]
fn an_unreachable_etcd_stops_serve_with_what_to_do() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let dir = tempfile::tempdir().expect("a temp dir");
    let endpoint = format!("http://127.0.0.1:{port}");
    let output = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "etcd", "--etcd-endpoints", &endpoint])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("rack-manager runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "cannot reach etcd at {endpoint}: start it with `etcd` (Debian package etcd-server) or use the default \
             --store sqlite"
        )),
        "{stderr}"
    );
}

/// Certificates for a TLS etcd, made for one test: a CA, etcd's server certificate (for
/// 127.0.0.1), a client certificate from the same CA, and a stranger CA that signed nothing etcd
/// uses. Private keys are 0600, as the manager insists.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let pki = Pki { dir: tempfile::tempdir().expect("a temp dir") };
        let ca_params = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params
        };
        let ca = CertifiedIssuer::self_signed(ca_params("mast test etcd CA"), KeyPair::generate().expect("a key"))
            .expect("the CA signs itself");
        pki.write("ca.pem", &ca.pem(), 0o644);
        let stranger = CertifiedIssuer::self_signed(ca_params("a stranger's CA"), KeyPair::generate().expect("a key"))
            .expect("the stranger CA signs itself");
        pki.write("stranger-ca.pem", &stranger.pem(), 0o644);
        let leaf = |file: &str, names: Vec<String>, common_name: &str, usage, issuer: &CertifiedIssuer<_>| {
            let key = KeyPair::generate().expect("a key");
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, common_name);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, issuer).expect("the CA signs");
            pki.write(&format!("{file}.pem"), &cert.pem(), 0o644);
            pki.write(&format!("{file}-key.pem"), &key.serialize_pem(), 0o600);
        };
        let server = ExtendedKeyUsagePurpose::ServerAuth;
        leaf("server", vec!["127.0.0.1".into(), "localhost".into()], "etcd", server, &ca);
        // Not the name of an etcd user: the manager logs in with its password.
        leaf("client", Vec::new(), "mast test client", ExtendedKeyUsagePurpose::ClientAuth, &ca);
        leaf("stranger-client", Vec::new(), "a stranger", ExtendedKeyUsagePurpose::ClientAuth, &stranger);
        pki
    }

    fn write(&self, name: &str, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::write(&path, text).expect("writes");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn server(&self, client_cert_auth: bool) -> ServerTls {
        ServerTls {
            cert: self.path("server.pem"),
            key: self.path("server-key.pem"),
            client_ca: self.path("ca.pem"),
            client_cert_auth,
            auth_token_ttl_s: AUTH_TOKEN_TTL_S,
        }
    }
}

/// Short, so the tests outlive the login tokens etcd issues: the client must log in again.
const AUTH_TOKEN_TTL_S: u32 = 2;

const MANAGER_PASSWORD: &str = "manager pass phrase";
const AGENT_PASSWORD: &str = "agent pass phrase";

/// A TLS etcd that wants client certificates, with authentication on: `root`, a user
/// `r1-manager` whose role may read and write `/mast/r1/` only, and `r1-agent`, whose role may
/// only keep liveness keys (`alive/`, `leased/`). As docs/rack-state.md sets it up with etcdctl.
fn secure_etcd(pki: &Pki) -> Option<EtcdServer> {
    use etcd_client::{Certificate, ConnectOptions, Identity, Permission, TlsOptions};
    let etcd = EtcdServer::start_tls(pki.server(true))?;
    let read = |name: &str| std::fs::read(pki.path(name)).expect("reads a PEM file");
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(read("client.pem"), read("client-key.pem")));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let options = ConnectOptions::new().with_tls(tls);
        let mut admin = etcd_client::Client::connect([etcd.endpoint()], Some(options)).await.expect("connects");
        admin.user_add("root", "root pass phrase", None).await.expect("adds root");
        admin.role_add("root").await.expect("adds the root role");
        admin.user_grant_role("root", "root").await.expect("root is root");
        admin.role_add("r1-manager").await.expect("adds a role");
        admin
            .role_grant_permission("r1-manager", Permission::read_write("/mast/r1/").with_prefix())
            .await
            .expect("grants the rack's prefix");
        admin.user_add("r1-manager", MANAGER_PASSWORD, None).await.expect("adds the manager's user");
        admin.user_grant_role("r1-manager", "r1-manager").await.expect("grants the role");
        admin.role_add("r1-agent").await.expect("adds a role");
        for prefix in ["/mast/r1/alive/", "/mast/r1/leased/"] {
            admin
                .role_grant_permission("r1-agent", Permission::read_write(prefix).with_prefix())
                .await
                .expect("grants the liveness prefixes");
        }
        admin.user_add("r1-agent", AGENT_PASSWORD, None).await.expect("adds the agent's user");
        admin.user_grant_role("r1-agent", "r1-agent").await.expect("grants the role");
        admin.auth_enable().await.expect("turns authentication on");
    });
    Some(etcd)
}

/// The etcd flags for a secure etcd: TLS with a client certificate, and `user` with the password
/// in the PKI directory's file `password_file`.
fn etcd_access_args(etcd: &EtcdServer, pki: &Pki, user: &str, password_file: &str) -> Vec<String> {
    [
        "--etcd-endpoints",
        &etcd.endpoint(),
        "--etcd-cacert",
        &pki.arg("ca.pem"),
        "--etcd-cert",
        &pki.arg("client.pem"),
        "--etcd-key",
        &pki.arg("client-key.pem"),
        "--etcd-user",
        user,
        "--etcd-password-file",
        &pki.arg(password_file),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The manager's etcd flags for a secure etcd: user r1-manager.
fn secure_args(etcd: &EtcdServer, pki: &Pki) -> Vec<String> {
    pki.write("manager-password", &format!("{MANAGER_PASSWORD}\n"), 0o600);
    etcd_access_args(etcd, pki, "r1-manager", "manager-password")
}

#[test]
fn a_rack_runs_on_etcd_over_tls_with_a_user_limited_to_its_prefix() {
    let pki = Pki::new();
    let Some(etcd) = secure_etcd(&pki) else { return };
    let hello = image("hello", Arch::Aarch64);
    let mut args: Vec<String> =
        ["--store", "etcd", "--rack", "r1", "--lease-ttl", LEASE_TTL, "--launcher", "sim"].map(str::to_owned).to_vec();
    args.extend(["--memory-mib", "1024", "--host-name", "m1"].map(str::to_owned));
    args.extend(secure_args(&etcd, &pki));
    let mut rack = Rack::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_until("m1 to be elected", Duration::from_secs(20), || is_scheduler(&rack));
    rack.ok(&["image", "push", path_str(&hello)]);
    wait_until("m1 ready", Duration::from_secs(20), || host_state(&rack, "m1") == Some(HostState::Ready));

    // An agent keeps its liveness on the same etcd with its own, narrower user.
    pki.write("agent-password", AGENT_PASSWORD, 0o600);
    let mut agent_args: Vec<String> = ["--launcher", "sim", "--rack", "r1"].map(str::to_owned).to_vec();
    agent_args.extend(etcd_access_args(&etcd, &pki, "r1-agent", "agent-password"));
    let agent_args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    rack.add_agent("a1", &agent_args);
    wait_until("a1 to join", Duration::from_secs(30), || host_state(&rack, "a1") == Some(HostState::Ready));

    let deployed: Vec<Instance> =
        serde_json::from_str(&rack.ok(&["deploy", "hello", "--replicas", "2", "-o", "json"])).expect("JSON");
    let mut on: Vec<&str> = deployed.iter().map(|i| i.host.as_str()).collect();
    on.sort_unstable();
    assert_eq!(on, ["a1", "m1"], "spread over both hosts");
    let running = rack.ps().iter().filter(|i| i.state == InstanceState::Running).count();
    assert_eq!(running, 2);

    // Past the tokens' lifetime (the agent's, idle but for its lease renewals, expires), the rack
    // still works: the agent's liveness holds and a new deployment is placed and started.
    thread::sleep(Duration::from_secs(u64::from(AUTH_TOKEN_TTL_S) * 3));
    rack.ok(&["deploy", "hello", "--replicas", "2"]);
    assert_eq!(host_state(&rack, "a1"), Some(HostState::Ready));

    // The state is in etcd, under the rack's prefix, and the agent holds its own liveness key.
    let keys = secure_keys(&etcd, &pki);
    assert!(keys.iter().any(|k| k.starts_with("/mast/r1/instances/")), "{keys:?}");
    assert!(keys.contains(&"/mast/r1/alive/a1".to_owned()), "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("/mast/r1/")), "{keys:?}");
    let agent_log = std::fs::read_to_string(rack.agents[0].1.path().join("agent.stderr")).unwrap_or_default();
    assert!(!agent_log.contains("etcd lease"), "the agent's lease failed: {agent_log}");
}

/// Every key, read as root over TLS.
fn secure_keys(etcd: &EtcdServer, pki: &Pki) -> Vec<String> {
    use etcd_client::{Certificate, ConnectOptions, GetOptions, Identity, TlsOptions};
    let read = |name: &str| std::fs::read(pki.path(name)).expect("reads a PEM file");
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(read("client.pem"), read("client-key.pem")));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let options = ConnectOptions::new().with_tls(tls).with_user("root", "root pass phrase");
        let mut client = etcd_client::Client::connect([etcd.endpoint()], Some(options)).await.expect("connects");
        let response = client.get(vec![0u8], Some(GetOptions::new().with_all_keys().with_keys_only())).await;
        let response = response.expect("root reads every key");
        response.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect()
    })
}

/// Runs `rack-manager serve --store etcd` with `args` and `env`, which must fail within 20 s:
/// its stderr.
fn serve_refused(args: &[String], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--launcher", "sim", "--store", "etcd"])
        .args(if args.iter().any(|a| a == "--rack") { &[][..] } else { &["--rack", "r1"][..] })
        .args(args)
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("RACK_ETCD_PASSWORD")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rack-manager runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve {args:?} kept running: it should have been refused");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr).expect("reads stderr");
    assert!(!status.success(), "serve {args:?} succeeded: {stderr}");
    stderr
}

/// `args` with `flag` (and its value) removed, or its value replaced by `value`.
fn with(args: &[String], flag: &str, value: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == flag {
            let _ = iter.next();
            if let Some(value) = value {
                out.extend([flag.to_owned(), value.to_owned()]);
            }
        } else {
            out.push(arg.clone());
        }
    }
    out
}

#[test]
fn a_secure_etcd_refuses_what_it_should_and_serve_says_what_to_do() {
    let pki = Pki::new();
    let Some(etcd) = secure_etcd(&pki) else { return };
    let good = secure_args(&etcd, &pki);
    let endpoint = etcd.endpoint();
    let expect = |args: Vec<String>, env: &[(&str, &str)], wanted: &str| {
        let stderr = serve_refused(&args, env);
        assert!(stderr.contains(wanted), "serve {args:?}: wanted {wanted:?} in:\n{stderr}");
        eprintln!("refused as it should be: {}", stderr.trim());
    };

    // No CA for an https endpoint.
    expect(with(&good, "--etcd-cacert", None), &[], "give --etcd-cacert FILE");
    // A CA that did not sign etcd's certificate.
    expect(with(&good, "--etcd-cacert", Some(&pki.arg("stranger-ca.pem"))), &[], "does not verify against");
    // No client certificate, where etcd asks for one.
    expect(with(&with(&good, "--etcd-cert", None), "--etcd-key", None), &[], "requires a client certificate");
    // A client certificate from a CA etcd does not trust.
    let stranger = with(&good, "--etcd-cert", Some(&pki.arg("stranger-client.pem")));
    expect(with(&stranger, "--etcd-key", Some(&pki.arg("stranger-client-key.pem"))), &[], "does not accept the client");
    // A private key others can read.
    pki.write("loose-key.pem", &std::fs::read_to_string(pki.path("client-key.pem")).expect("reads"), 0o644);
    expect(with(&good, "--etcd-key", Some(&pki.arg("loose-key.pem"))), &[], "chmod 600");
    // A wrong password, from the environment this time.
    let from_env = with(&good, "--etcd-password-file", None);
    expect(from_env.clone(), &[("RACK_ETCD_PASSWORD", "not the password")], "refused the password of user r1-manager");
    // No password at all.
    expect(from_env, &[], "--etcd-user r1-manager needs its password");
    // No user, on an etcd with authentication on.
    let no_user = with(&with(&good, "--etcd-user", None), "--etcd-password-file", None);
    expect(no_user, &[], "requires a user");
    // The right user, another rack: its role does not reach there.
    let mut other_rack = good.clone();
    other_rack.extend(["--rack".to_owned(), "r2".to_owned()]);
    expect(other_rack, &[], "grant its role the rack's prefix");
    // Plain http to a TLS port.
    let plain = with(
        &with(&with(&with(&good, "--etcd-cacert", None), "--etcd-cert", None), "--etcd-key", None),
        "--etcd-endpoints",
        Some(&endpoint.replace("https://", "http://")),
    );
    let stderr = serve_refused(&plain, &[]);
    assert!(stderr.contains("without TLS"), "the password would go in clear, and serve says so: {stderr}");
    assert!(stderr.contains("if it serves TLS (etcd's --cert-file), use https://"), "{stderr}");

    // With everything right, the same flags work (the refusals above were each for their reason).
    let mut rack_args = vec!["--launcher".to_owned(), "sim".to_owned(), "--store".into(), "etcd".into()];
    rack_args.extend(["--rack", "r1", "--host-name", "m1"].map(str::to_owned));
    rack_args.extend(good);
    let rack = Rack::start(&rack_args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_until("m1 ready", Duration::from_secs(30), || host_state(&rack, "m1") == Some(HostState::Ready));
}

/// A listener that records every connection made to it, and the head of each request (its
/// headers: where a bearer token would be).
struct Trap {
    address: String,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Trap {
    fn start() -> Trap {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
        let address = format!("http://{}", listener.local_addr().expect("its address"));
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = heads.clone();
        // Ends with the test process.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = vec![0u8; 16 * 1024];
                let read = std::io::Read::read(&mut stream, &mut head).unwrap_or(0);
                let head = String::from_utf8_lossy(&head[..read]).into_owned();
                recorded.lock().unwrap_or_else(|p| p.into_inner()).push(format!("connection: {head}"));
                let _ = std::io::Write::write_all(
                    &mut stream,
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                );
            }
        });
        Trap { address, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A `deploy` refused by whichever of `managers` is a standby naming a scheduler: its stderr,
/// and the URL of the other manager (the scheduler).
fn standby_refusal(managers: &[&Rack; 2]) -> (String, String) {
    let started = Instant::now();
    loop {
        for (me, other) in [(managers[0], managers[1]), (managers[1], managers[0])] {
            let output = me.cli(&["deploy", "hello", "--detach"]);
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            if !output.status.success() && stderr.contains("--manager") {
                return (stderr, other.url());
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no standby named a scheduler");
        thread::sleep(Duration::from_millis(200));
    }
}

/// A `deploy` refused by a manager that is (now) a standby: its stderr.
fn wait_until_refused(rack: &Rack) -> String {
    let started = Instant::now();
    loop {
        let output = rack.cli(&["deploy", "hello", "--detach"]);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() && stderr.contains("standby") {
            return stderr;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "still placing: {stderr}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// Writes `value` at `key` straight into etcd, as anyone who reaches an etcd without auth can.
fn put_raw(endpoint: &str, key: &str, value: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let mut client = etcd_client::Client::connect([endpoint], None).await.expect("connects");
        client.put(key, value, None).await.expect("writes");
    });
}

fn read_raw(endpoint: &str, key: &str) -> Option<serde_json::Value> {
    all_pairs(endpoint)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, value)| serde_json::from_slice(&value).expect("a JSON record"))
}

#[test]
fn a_host_record_written_straight_into_etcd_is_never_contacted() {
    let Some(etcd) = EtcdServer::start() else { return };
    let endpoint = etcd.endpoint();
    let hello = image("hello", Arch::Aarch64);
    let trap = Trap::start();
    let mut rack = manager(&etcd, "m1");
    wait_until("m1 to be elected", Duration::from_secs(20), || is_scheduler(&rack));
    rack.ok(&["image", "push", path_str(&hello)]);
    rack.add_agent("a1", &["--launcher", "sim"]);
    wait_until("a1 to join", Duration::from_secs(30), || host_state(&rack, "a1") == Some(HostState::Ready));
    let joined = read_raw(&endpoint, "/mast/r1/hosts/a1").expect("a1's record");
    let a1_seal = joined["join_seal"].as_str().expect("the join sealed a1's record").to_owned();

    // Hosts that nobody joined, at the trap's address, each roomier than any real host so that
    // placement would prefer them: no seal, a made-up seal, and a1's valid seal copied.
    let forged = |name: &str, seal: Option<&str>| {
        let mut record = serde_json::json!({
            "name": name, "address": trap.address, "launcher": "sim", "arches": ["aarch64", "x86_64"],
            "memory_mib": 1u64 << 30, "vcpus": 1u32 << 20, "state": "ready",
        });
        if let Some(seal) = seal {
            record["join_seal"] = seal.into();
        }
        put_raw(&endpoint, &format!("/mast/r1/hosts/{name}"), &record.to_string());
    };
    forged("evil-1", None);
    forged("evil-2", Some(&"00".repeat(32)));
    forged("evil-3", Some(&a1_seal));
    // a1 itself, moved to the trap: its seal no longer matches its address.
    let mut moved = joined.clone();
    moved["address"] = trap.address.clone().into();
    put_raw(&endpoint, "/mast/r1/hosts/a1", &moved.to_string());

    // The manager works on the rack: a deployment (placed while the forged hosts still read as
    // ready), health checks, a drain, a restart (which reconnects every host from the store), a
    // standby starting on the same state.
    rack.ok(&["deploy", "hello", "--replicas", "6", "--detach"]);
    wait_until("the forged hosts to read as unreachable", Duration::from_secs(30), || {
        ["evil-1", "evil-2", "evil-3"].iter().all(|name| host_state(&rack, name) == Some(HostState::Unreachable))
    });
    rack.ok(&["host", "drain", "m1"]);
    rack.kill_daemon();
    rack.start_daemon();
    // The managers of a rack share its token (docs/rack-state.md): the seals are made with it.
    let mut standby = manager(&etcd, "m2");
    standby.kill_daemon();
    std::fs::copy(rack.data_dir().join("token"), standby.data_dir().join("token")).expect("copies the token");
    standby.start_daemon();
    wait_until("a scheduler to be elected again", Duration::from_secs(30), || {
        daemon_log(&rack).matches("is now the scheduler of rack r1").count() >= 2 || is_scheduler(&standby)
    });
    // Several health checks (every 2 s) and reconciler passes.
    thread::sleep(Duration::from_secs(6));
    let heads = trap.heads();
    let token = rack.token();
    assert!(heads.iter().all(|h| !h.contains(&token)), "the admin token reached the forged address: {heads:?}");
    assert!(heads.is_empty(), "a manager contacted an address only an etcd writer named: {heads:?}");
    let log = daemon_log(&rack);
    for name in ["evil-1", "evil-2", "evil-3", "a1"] {
        assert!(
            log.contains(&format!("host {name}: its record names {} but carries no seal", trap.address)),
            "the manager says it does not contact {name}:\n{log}"
        );
    }

    assert!(daemon_log(&standby).contains("host evil-1: its record names"), "{}", daemon_log(&standby));
    // Redirecting a joined host makes it unreachable (an etcd writer can always deny service),
    // never a place the manager's requests go.
    wait_until("a1 to read as unreachable", Duration::from_secs(30), || {
        host_state(&rack, "a1") == Some(HostState::Unreachable)
    });

    // A standby names the scheduler, so that operators send placements there...
    let (refused, scheduler) = standby_refusal(&[&rack, &standby]);
    assert!(refused.contains(&format!("--manager {scheduler}")), "{refused}");
    // ... but only one a manager elected: the URL it names must be sealed too.
    put_raw(&endpoint, "/mast/r1/scheduler", &trap.address);
    let refused = wait_until_refused(&standby);
    assert!(!refused.contains(&trap.address) && refused.contains("no scheduler"), "{refused}");
    assert!(daemon_log(&standby).contains("which no manager of this rack sealed"), "{}", daemon_log(&standby));
    assert!(trap.heads().is_empty(), "{:?}", trap.heads());
    drop(standby);
}
