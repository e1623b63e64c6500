//! The first push works: `serve` started from a checkout trusts the workspace's signing key and
//! says so, prints the keys it trusts, and `trust add|ls|rm` change trust on the running manager.

mod common;

use common::Rack;
use images::{Arch, build::workspace_root, keys::KeyConfig};

fn workspace_key() -> String {
    let keys = KeyConfig::for_workspace(&workspace_root());
    let (key, _) = keys.signing_key().expect("the workspace signing key");
    key.public().to_string()
}

#[test]
fn a_checkout_push_works_first_time_and_trust_changes_live() {
    let key = workspace_key();
    let image = common::image("hello", Arch::Aarch64);
    let image = image.to_str().expect("a UTF-8 path");
    // No --trust: the binary runs from this checkout's target/, so the checkout's key is trusted.
    let rack = Rack::start_bare(&["--launcher", "sim"]);
    let log = rack.daemon_log();
    assert!(log.contains(&format!("now trusting its signing key {key}")), "serve says why it trusts: {log}");
    assert!(log.contains(&format!("trusting images signed by {key}")), "serve lists its keys: {log}");
    rack.ok(&["image", "push", image]);
    assert!(rack.ok(&["trust", "ls"]).contains(&key));

    // Removed live: the next push is refused, with the command that undoes it.
    assert!(rack.ok(&["trust", "rm", &key]).contains("no longer trusting"));
    let refused = rack.cli(&["image", "push", image]);
    assert_eq!(refused.status.code(), Some(5), "a refused push exits 5");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains(&format!("rack-manager trust add {key}")), "the hint is the fix: {stderr}");
    assert!(!rack.ok(&["trust", "ls"]).contains(&key));

    // Added live: accepted again without a restart, and kept in <data-dir>/trusted-keys.
    assert!(rack.ok(&["trust", "add", &key]).contains(&format!("trusting {key}")));
    rack.ok(&["image", "push", image]);
    let file = std::fs::read_to_string(rack.data_dir().join("trusted-keys")).expect("the trusted-keys file");
    assert!(file.contains(&key), "{file}");

    // Bad input changes nothing and says what a key looks like.
    let bad = rack.cli(&["trust", "add", "abc"]);
    assert_eq!(bad.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("64 hex digits"));
    let missing = rack.cli(&["trust", "rm", &"0".repeat(64)]);
    assert_eq!(missing.status.code(), Some(5), "{missing:?}");
}

#[test]
fn without_workspace_trust_the_start_says_pushes_are_refused() {
    let rack = Rack::start_bare(&["--launcher", "sim", "--no-workspace-trust"]);
    let log = rack.daemon_log();
    assert!(log.contains("trusting no image signing keys yet"), "{log}");
    assert!(!log.contains("now trusting its signing key"), "{log}");
    assert_eq!(rack.ok(&["trust", "ls", "-o", "json"]).trim(), "[]");
}
