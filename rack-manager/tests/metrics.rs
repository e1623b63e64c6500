//! `/metrics` scraped by a real Prometheus (Debian's `prometheus`, which `cargo xtask test`
//! installs), started here on loopback with a generated configuration that presents a read-only
//! token; then Prometheus's own HTTP API is asked for a few series and the answers are compared
//! with what `ps -o json` says. Also: no token, a revoked token and an agent-less bearer are
//! refused, and a read-only token cannot reach anything that changes state.

mod common;

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Rack, http_get, image};
use images::Arch;
use rack_api::InstanceState;

/// A Prometheus process, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

fn start_prometheus(manager_port: u16, token_file: &std::path::Path) -> Prometheus {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: mast\n    \
             metrics_path: /metrics\n    authorization:\n      type: Bearer\n      credentials_file: {}\n    \
             static_configs:\n      - targets: ['127.0.0.1:{manager_port}']\n",
            token_file.display()
        ),
    )
    .expect("config written");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "prometheus does not start ({e}): `cargo xtask test` installs it (as root on Debian), or \
                 `sudo apt-get install -y prometheus`"
            )
        });
    Prometheus { child, port, _dir: dir }
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant query that returns one series, once Prometheus has one.
fn query(prometheus: &Prometheus, promql: &str, until: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        let path = format!("/api/v1/query?query={}", encode(promql));
        if let Some((200, body)) = http_get(prometheus.port, &path, "", Duration::from_secs(2)) {
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let value = answer["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
            if let Some(value) = value.filter(|v| until(*v)) {
                return value;
            }
            last = body;
        }
        assert!(Instant::now() < deadline, "Prometheus never answered {promql} as expected; last answer: {last}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_real_prometheus_scrapes_the_rack_with_a_read_only_token() {
    let rack = Rack::start(&["--launcher", "sim", "--sim-hosts", "3", "--memory-mib", "256"]);
    let port: u16 = rack.url().rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
    rack.ok(&["image", "push", image("hello", Arch::Aarch64).to_str().expect("utf-8 path")]);
    rack.ok(&["deploy", "hello", "--replicas", "3", "--restart", "always"]);
    let running = rack.wait_for("3 running", Duration::from_secs(30), |all| {
        all.len() == 3 && all.iter().all(|i| i.state == InstanceState::Running)
    });
    rack.ok(&["stop", &running[0].id]);
    let token_file = rack.data_dir().join("prometheus.token");
    rack.ok(&["token", "create", "--read-only", "--name", "prometheus", "--out", token_file.to_str().expect("utf-8")]);
    let token = std::fs::read_to_string(&token_file).expect("token written").trim().to_owned();

    // Refused without a credential, and with a revoked one; the read-only token reads.
    assert_eq!(http_get(port, "/metrics", "", Duration::from_secs(5)).map(|r| r.0), Some(401));
    let spare = rack.ok(&["token", "create", "--read-only", "--name", "spare"]).trim().to_owned();
    rack.ok(&["token", "revoke", "spare"]);
    let bearer = |t: &str| format!("Authorization: Bearer {t}\r\n");
    assert_eq!(http_get(port, "/metrics", &bearer(&spare), Duration::from_secs(5)).map(|r| r.0), Some(401));
    let (status, text) = http_get(port, "/metrics", &bearer(&token), Duration::from_secs(5)).expect("an answer");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("mast_host_vcpus"), "{text}");

    let prometheus = start_prometheus(port, &token_file);
    assert_eq!(query(&prometheus, r#"up{job="mast"}"#, |v| v == 1.0), 1.0, "the target is up");
    let ps = rack.ps();
    let count = |state: InstanceState| ps.iter().filter(|i| i.state == state).count() as f64;
    assert_eq!(count(InstanceState::Running), 2.0);
    let running = query(&prometheus, r#"sum(mast_instances{state="running"})"#, |v| v == 2.0);
    assert_eq!(running, count(InstanceState::Running), "Prometheus agrees with ps");
    let stopped = query(&prometheus, r#"sum(mast_instances{state="stopped"})"#, |v| v == 1.0);
    assert_eq!(stopped, count(InstanceState::Stopped));
    assert_eq!(query(&prometheus, "count(mast_host_vcpus)", |v| v == 3.0), 3.0, "three simulated hosts");
    let placed = query(&prometheus, "sum(mast_host_instances)", |v| v == 3.0);
    assert_eq!(placed, ps.len() as f64);
    // Prometheus's own scrapes are counted by the API it scrapes.
    let scrapes = query(&prometheus, r#"sum(mast_api_requests_total{route="metrics",status="200"})"#, |v| v >= 2.0);
    assert!(scrapes >= 2.0, "{scrapes}");
    let first_starts = query(&prometheus, "mast_instance_start_latency_seconds_count", |v| v == 3.0);
    assert_eq!(first_starts, 3.0, "three instances started once each");
}

#[test]
fn an_agent_serves_its_hosts_metrics_to_its_metrics_token_only() {
    let mut rack = Rack::start(&["--no-local-agent"]);
    let token_file = rack.data_dir().join("agent-metrics.token");
    rack.ok(&["token", "create", "--read-only", "--out", token_file.to_str().expect("utf-8")]);
    let token = std::fs::read_to_string(&token_file).expect("token written").trim().to_owned();
    let flag = token_file.to_str().expect("utf-8");
    rack.add_agent("edge-1", &["--launcher", "sim", "--vcpus", "6", "--metrics-token-file", flag]);
    let hosts = rack.wait_for_hosts(1);
    let address = hosts[0].address.clone().expect("a joined agent's address");
    let (status, text) = common::agent_call(&address, "GET", "/metrics", Some(&token), "");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#"mast_agent_vcpus{host="edge-1"} 6"#), "{text}");
    assert_eq!(common::agent_call(&address, "GET", "/metrics", None, "").0, 401, "no token");
    assert_eq!(common::agent_call(&address, "GET", "/metrics", Some("mast-00-wrong"), "").0, 401);
    // The metrics token reads metrics and nothing else of the agent's API.
    assert_eq!(common::agent_call(&address, "GET", "/v1/agent/info", Some(&token), "").0, 401);
}
