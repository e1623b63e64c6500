//! An honest `ps`: a restarted QEMU instance keeps its host port, a stopped one shows no port or
//! uptime, `logs` says where the guest's announced address is reached from the host, and `stats`
//! shows CPU now (not since boot), per host too, for a filter, and `--watch`es.

mod common;

use std::{io::Read, process::Stdio, time::Duration};

use common::{Rack, host_port, wait_for_200};
use images::Arch;
use rack_api::InstanceState;

#[test]
fn ports_stay_stopped_rows_are_blank_logs_annotate_and_stats_are_current() {
    let rack = Rack::start(&[]);
    rack.ok(&["image", "push", common::image("httpd", Arch::Aarch64).to_str().expect("utf-8")]);
    rack.ok(&["deploy", "httpd"]);
    let running = |all: &[rack_api::Instance]| all.len() == 1 && all[0].state == InstanceState::Running;
    let first = rack.wait_for("httpd to run", Duration::from_secs(30), running).remove(0);
    let port = host_port(&first);
    wait_for_200(port, "/", Duration::from_secs(30));

    // logs: the guest's own address, annotated with the forward that reaches it.
    let logs = rack.ok(&["logs", "httpd-1"]);
    assert!(logs.contains(&format!("[from this host: http://127.0.0.1:{port}/]")), "{logs}");

    // stats: current CPU, host totals, a filter, JSON, --watch.
    let stats: serde_json::Value =
        serde_json::from_str(&rack.ok(&["stats", "httpd", "--interval", "0.5", "-o", "json"])).expect("json");
    assert_eq!(stats["instances"].as_array().map(Vec::len), Some(1), "{stats}");
    assert!(stats["instances"][0]["cpu_percent"].is_number(), "CPU over the interval: {stats}");
    assert_eq!(stats["hosts"][0]["host"], "local");
    assert_eq!(stats["hosts"][0]["instances"], 1);
    let table = rack.ok(&["stats"]);
    assert!(table.lines().any(|l| l.starts_with("HOST") && l.contains("INSTANCES")), "host totals: {table}");
    assert!(table.contains("CPU over the last"), "{table}");
    let mut watch = std::process::Command::new(common::BIN)
        .arg("--data-dir")
        .arg(rack.data_dir())
        .args(["stats", "--watch", "--interval", "0.2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("stats --watch starts");
    std::thread::sleep(Duration::from_millis(2000));
    assert!(watch.try_wait().expect("waits").is_none(), "--watch keeps going");
    common::kill(watch.id());
    let _ = watch.wait();
    let mut watched = String::new();
    watch.stdout.take().expect("piped").read_to_string(&mut watched).expect("reads");
    assert!(watched.matches("CPU over the last").count() >= 2, "printed more than once: {watched}");

    // A restart keeps the host port.
    rack.ok(&["restart", "httpd"]);
    let again = rack
        .wait_for("httpd to run again", Duration::from_secs(30), |all| running(all) && all[0].pid != first.pid)
        .remove(0);
    assert_eq!(host_port(&again), port, "the same address after a restart");
    wait_for_200(port, "/", Duration::from_secs(30));

    // A stopped instance: no port, no uptime.
    rack.ok(&["stop", "httpd"]);
    let ps = rack.ok(&["ps", "-a"]);
    let row = ps.lines().find(|l| l.starts_with("httpd-1")).expect("a row");
    assert!(row.contains("stopped") && !row.contains("127.0.0.1") && !row.contains("->"), "{ps}");
}
