//! Architecture and platform are first-class: `image ls`, `ps` and `plan` show them, a name that
//! several builds share needs an id or --arch/--platform, an image no host can run is refused at
//! once with the build that one could, and a launch that cannot succeed is not retried.

mod common;

use std::time::{Duration, Instant};

use common::Rack;
use images::{Arch, Platform, build};
use rack_api::{Image, InstanceState, Plan};

fn tender_httpd() -> String {
    let built = build::build_for_platform(
        &build::workspace_root(),
        "httpd",
        Arch::X86_64,
        Platform::Tender,
        build::Profile::Release,
    )
    .expect("httpd builds for the tender");
    built.artifact.display().to_string()
}

fn qemu_image(app: &str, arch: Arch) -> String {
    common::image(app, arch).display().to_string()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn builds_of_one_name_are_told_apart_and_chosen_by_what_hosts_run() {
    let rack = Rack::start(&[]); // QEMU: x86_64 under KVM, aarch64 under TCG
    let (x86, arm, tender) = (qemu_image("httpd", Arch::X86_64), qemu_image("httpd", Arch::Aarch64), tender_httpd());
    let pushed = rack.cli(&["image", "push", &tender]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let warning = stderr(&pushed);
    assert!(
        warning.contains("no host of this rack can run httpd (x86_64 on tender)")
            && warning.contains("cargo xtask image build httpd --arch x86_64 --release"),
        "push warns at once, with the build that would run: {warning}"
    );
    let refused = rack.cli(&["plan", "httpd"]);
    assert_eq!(refused.status.code(), Some(5), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("no host of this rack can run httpd")
            && stderr(&refused).contains("cargo xtask image build httpd --arch x86_64 --release"),
        "{}",
        stderr(&refused)
    );
    let started = Instant::now();
    let deploy = rack.cli(&["deploy", "httpd"]);
    assert_eq!(deploy.status.code(), Some(5), "deploy refuses too: {}", stderr(&deploy));
    assert!(started.elapsed() < Duration::from_secs(5), "at once, not after retries");

    // A QEMU build of the same name: chosen, since only it runs here.
    rack.ok(&["image", "push", &x86]);
    let plan: Plan = serde_json::from_str(&rack.ok(&["plan", "httpd", "-o", "json"])).expect("a plan");
    assert_eq!((plan.arch.as_str(), plan.platform.as_str()), ("x86_64", "qemu"));
    let table = rack.ok(&["plan", "httpd"]);
    assert!(table.contains("x86_64 on qemu"), "{table}");

    // And an aarch64 one: both run here (TCG), so the name alone is ambiguous.
    rack.ok(&["image", "push", &arm]);
    let ambiguous = rack.cli(&["plan", "httpd"]);
    assert_eq!(ambiguous.status.code(), Some(5));
    let why = stderr(&ambiguous);
    assert!(why.contains("names 2 images") && why.contains("aarch64/qemu") && why.contains("x86_64/qemu"), "{why}");
    assert!(why.contains("--arch"), "{why}");
    let plan: Plan =
        serde_json::from_str(&rack.ok(&["plan", "httpd", "--arch", "aarch64", "-o", "json"])).expect("a plan");
    assert_eq!((plan.arch.as_str(), plan.platform.as_str()), ("aarch64", "qemu"));

    let images: Vec<Image> = serde_json::from_str(&rack.ok(&["image", "ls", "-o", "json"])).expect("images");
    let mut builds: Vec<(String, String)> = images.iter().map(|i| (i.arch.clone(), i.platform.clone())).collect();
    builds.sort();
    let expected = [("aarch64", "qemu"), ("x86_64", "qemu"), ("x86_64", "tender")];
    assert_eq!(builds, expected.map(|(a, p)| (a.to_owned(), p.to_owned())));
    let table = rack.ok(&["image", "ls"]);
    assert!(table.lines().next().is_some_and(|h| h.contains("ARCH") && h.contains("PLATFORM")), "{table}");
    assert!(table.contains("tender"), "{table}");

    // A short id prefix says how long one must be.
    let short = rack.cli(&["plan", &images[0].id[..4]]);
    assert_eq!(short.status.code(), Some(5));
    assert!(stderr(&short).contains("needs at least 6 hex digits"), "{}", stderr(&short));
}

#[test]
fn a_launch_that_cannot_succeed_is_failed_at_once_not_retried() {
    let mut rack = Rack::start(&[]);
    rack.ok(&["image", "push", &tender_httpd()]);
    // An image pushed by a version that did not record platforms: the launch finds out.
    rack.kill_daemon();
    let db = rusqlite::Connection::open(rack.data_dir().join("state.sqlite")).expect("the state database");
    db.execute("UPDATE images SET platform = ''", []).expect("forgets the platform");
    drop(db);
    rack.start_daemon();
    let started = Instant::now();
    let deploy = rack.cli(&["deploy", "httpd"]);
    assert_eq!(deploy.status.code(), Some(1), "the instance failed: {}", stderr(&deploy));
    assert!(started.elapsed() < Duration::from_secs(10), "no 15 s of retries: {:?}", started.elapsed());
    let instance = rack.ps().pop().expect("one instance");
    assert_eq!(instance.state, InstanceState::Failed);
    assert_eq!(instance.restarts, 0);
    let message = instance.message.unwrap_or_default();
    assert!(message.contains("not retried") && message.contains("tender"), "{message}");
}

#[test]
fn ps_shows_the_deployment_arch_and_platform() {
    let rack = Rack::start(&["--launcher", "sim"]);
    rack.ok(&["image", "push", &qemu_image("hello", Arch::Aarch64)]);
    rack.ok(&["deploy", "hello", "--replicas", "2"]);
    let table = rack.ok(&["ps"]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["DEPLOYMENT", "ARCH", "PLATFORM"] {
        assert!(header.contains(column), "{table}");
    }
    assert!(
        table.lines().skip(1).all(|l| l.contains(" d1 ") && l.contains("aarch64") && l.contains("qemu")),
        "{table}"
    );
    let instances = rack.ps();
    assert!(instances.iter().all(|i| i.arch == "aarch64" && i.platform == "qemu" && i.deployment == "d1"));
}
