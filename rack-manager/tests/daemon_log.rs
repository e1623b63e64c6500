//! A daemon that tells what it does: deploys, placements, launches, exits, restarts and its own
//! shutdown as structured lines (JSON with --log-format json), and an unauthenticated
//! `GET /healthz`.

mod common;

use std::time::{Duration, Instant};

use common::{Rack, http_get};
use images::Arch;
use rustix::process::{Pid, Signal, kill_process};

fn events(rack: &Rack) -> Vec<serde_json::Value> {
    rack.daemon_log()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}")))
        .collect()
}

fn has(events: &[serde_json::Value], message: &str, field: &str, value: &str) -> bool {
    events.iter().any(|e| e["message"].as_str().is_some_and(|m| m.starts_with(message)) && e[field] == value)
}

#[test]
fn the_daemon_logs_its_work_as_json_and_answers_healthz() {
    let mut rack = Rack::start(&["--log-format", "json", "--log-level", "info"]);
    let port: u16 = rack.url().rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
    assert_eq!(http_get(port, "/healthz", "", Duration::from_secs(5)), Some((200, "ok\n".to_owned())));
    assert_eq!(
        http_get(port, "/v1/hosts", "", Duration::from_secs(5)).map(|r| r.0),
        Some(401),
        "the API still needs a token"
    );

    rack.ok(&["image", "push", common::image("hello", Arch::Aarch64).to_str().expect("utf-8")]);
    rack.ok(&["deploy", "hello", "--restart", "always", "--arg", "logged"]);
    // hello exits at once; `always` restarts it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !has(&events(&rack), "restart scheduled", "instance", "hello-1")
        || events(&rack).iter().filter(|e| e["message"] == "launched").count() < 2
    {
        assert!(Instant::now() < deadline, "no restart logged: {}", rack.daemon_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    rack.ok(&["rm", "d1"]);
    let log = events(&rack);
    assert!(has(&log, "serving the rack API", "level", "INFO"), "{log:?}");
    assert!(has(&log, "deployed", "deployment", "d1") && has(&log, "deployed", "image", "hello"), "{log:?}");
    assert!(has(&log, "placed", "hosts", "local×1"), "{log:?}");
    assert!(has(&log, "launched", "instance", "hello-1") && has(&log, "exited", "status", "Some(0)"), "{log:?}");
    assert!(log.iter().all(|e| e["timestamp"].is_string()), "{log:?}");

    // Its own shutdown.
    let daemon = rack.daemon.take().expect("running");
    kill_process(Pid::from_child(&daemon), Signal::TERM).expect("SIGTERM");
    let mut daemon = daemon;
    let status = daemon.wait().expect("exits");
    assert!(status.success(), "exits 0 on SIGTERM: {status}");
    assert!(has(&events(&rack), "shutting down", "signal", "SIGTERM"), "{}", rack.daemon_log());
}

#[test]
fn human_lines_by_default() {
    let rack = Rack::start(&["--launcher", "sim"]);
    rack.ok(&["image", "push", common::image("hello", Arch::Aarch64).to_str().expect("utf-8")]);
    rack.ok(&["deploy", "hello", "--replicas", "2"]);
    let log = rack.daemon_log();
    assert!(
        log.lines().any(|l| l.contains(" INFO ") && l.contains("deployed") && l.contains("deployment=d1")),
        "{log}"
    );
    assert!(log.lines().any(|l| l.contains("launched") && l.contains("instance=hello-2")), "{log}");
    assert!(!log.contains('\u{1b}'), "no colours when stderr is not a terminal: {log}");
}
