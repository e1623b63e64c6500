//! Capacity that matches reality: per-launcher defaults (a tender host offers thousands of slots
//! out of the box), `host ls` used/total for every limit, and hints that name the limit that bound.

mod common;

use std::{path::PathBuf, process::Command, sync::OnceLock};

use common::Rack;
use images::{Arch, Platform, build};

fn tender_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = build::workspace_root();
            let status = Command::new(env!("CARGO"))
                .args(["build", "--release", "-p", "tender"])
                .current_dir(&root)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "cargo build --release -p tender failed");
            root.join("target/release/tender")
        })
        .clone()
}

fn tender_httpd() -> String {
    let root = build::workspace_root();
    let built = build::build_for_platform(&root, "httpd", Arch::X86_64, Platform::Tender, build::Profile::Release)
        .expect("httpd builds for the tender");
    built.artifact.display().to_string()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn machine_memory_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:")).expect("MemTotal");
    line.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()).expect("a number") / 1024
}

#[test]
fn a_tender_host_offers_thousands_and_a_refusal_names_the_limit() {
    let tender = tender_binary();
    let tender = tender.to_str().expect("utf-8");
    let rack = Rack::start(&["--launcher", "tender", "--tender", tender]);
    assert!(rack.daemon_log().contains("this host offers instances"), "{}", rack.daemon_log());
    let hosts: Vec<rack_api::Host> = serde_json::from_str(&rack.ok(&["host", "ls", "-o", "json"])).expect("hosts");
    let cores = std::thread::available_parallelism().map(|n| n.get() as u32).expect("cores");
    assert_eq!(hosts[0].vcpus, cores * 1000, "1000 vCPUs per core by default");
    assert_eq!(hosts[0].memory_mib, machine_memory_mib() / 2 * 4, "half the RAM × 4 by default");
    let httpd = tender_httpd();
    rack.ok(&["image", "push", &httpd]);
    let plan: rack_api::Plan =
        serde_json::from_str(&rack.ok(&["plan", "httpd", "--replicas", "1000", "-o", "json"])).expect("a plan");
    assert_eq!(plan.hosts.len(), 1000, "a thousand fit out of the box");

    // vCPUs bound.
    let small = Rack::start(&["--launcher", "tender", "--tender", tender, "--vcpus", "64"]);
    small.ok(&["image", "push", &httpd]);
    let refused = small.cli(&["plan", "httpd", "--replicas", "1000"]);
    assert_eq!(refused.status.code(), Some(5));
    let why = stderr(&refused);
    assert!(
        why.contains("only 64 of 1000") && why.contains("vCPUs are the limit") && why.contains("--vcpu-overcommit"),
        "{why}"
    );
    assert!(!why.contains("memory is the limit"), "{why}");
}

#[test]
fn host_ls_shows_used_and_total_and_memory_can_bind() {
    let rack = Rack::start(&["--launcher", "sim", "--vcpus", "10", "--memory-mib", "100"]);
    rack.ok(&["image", "push", common::image("hello", Arch::Aarch64).to_str().expect("utf-8")]);
    rack.ok(&["deploy", "hello", "--replicas", "3"]);
    let table = rack.ok(&["host", "ls"]);
    let row = table.lines().nth(1).expect("a host row");
    assert!(row.contains(" 48/100 ") && row.contains(" 3/10 "), "used/total for memory and vCPUs: {table}");
    let refused = rack.cli(&["plan", "hello", "--replicas", "5"]);
    assert_eq!(refused.status.code(), Some(5));
    let why = stderr(&refused);
    assert!(why.contains("memory is the limit") && why.contains("room for 3 at 16 MiB"), "{why}");
}
