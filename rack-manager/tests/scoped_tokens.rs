//! Scoped tokens against the real daemon and CLI: a read-only token reads but cannot stop,
//! deploy or mint anything (CLI exit 4, API 403, state unchanged); a deploy token deploys and
//! stops but cannot drain a host or mint tokens; a revoked token is refused at once; the admin
//! token keeps working; and `token ls` never shows a secret.

mod common;

use std::{process::Command, time::Duration};

use common::{BIN, Rack, image};
use images::Arch;
use rack_api::{InstanceState, tokens::TokenInfo};

/// The CLI with `token` as its credential (RACK_TOKEN), as a remote operator runs it.
fn cli_as(rack: &Rack, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(rack.data_dir())
        .args(args)
        .env("RACK_TOKEN", token)
        .env_remove("RACK_MANAGER")
        .output()
        .expect("the CLI runs")
}

fn mint(rack: &Rack, scope: &str, name: &str) -> String {
    let token = rack.ok(&["token", "create", scope, "--name", name]).trim().to_owned();
    assert!(token.starts_with("mast-"), "{token}");
    token
}

#[test]
fn each_scope_does_what_it_says_and_no_more() {
    let rack = Rack::start(&["--launcher", "sim", "--memory-mib", "1024"]);
    let hello = image("hello", Arch::Aarch64);
    let reader = mint(&rack, "--read-only", "wall-screen");
    let deployer = mint(&rack, "--deploy", "ci");

    // The deploy token pushes, deploys and reads.
    let pushed = cli_as(&rack, &deployer, &["image", "push", hello.to_str().expect("utf-8 path")]);
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    let deployed = cli_as(&rack, &deployer, &["deploy", "hello", "--replicas", "2", "--restart", "always"]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    let instances = rack.wait_for("2 running", Duration::from_secs(30), |all| {
        all.len() == 2 && all.iter().all(|i| i.state == InstanceState::Running)
    });
    let victim = instances[0].id.clone();

    // The read-only token reads ...
    let listed = cli_as(&rack, &reader, &["ps", "-o", "json"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert_eq!(serde_json::from_slice::<Vec<rack_api::Instance>>(&listed.stdout).expect("json").len(), 2);
    // ... and changes nothing: each refusal is exit 4 with a hint naming the scope.
    for args in [
        vec!["stop", victim.as_str()],
        vec!["rm", victim.as_str()],
        vec!["deploy", "hello", "--detach"],
        vec!["host", "drain", "local"],
        vec!["token", "create", "--admin"],
        vec!["token", "ls"],
    ] {
        let refused = cli_as(&rack, &reader, &args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(4), "read-only `{}`: {stderr}", args.join(" "));
        assert!(stderr.contains("read-only"), "{stderr}");
    }
    let after = rack.ps();
    assert_eq!(after.len(), 2, "nothing was removed or deployed");
    assert!(after.iter().all(|i| i.state == InstanceState::Running), "nothing was stopped");

    // The deploy token stops, but neither drains hosts nor mints tokens.
    let stopped = cli_as(&rack, &deployer, &["stop", &victim]);
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    rack.wait_for("the victim stopped", Duration::from_secs(10), |all| {
        all.iter().any(|i| i.id == victim && i.state == InstanceState::Stopped)
    });
    for args in [vec!["host", "drain", "local"], vec!["token", "create", "--read-only"]] {
        let refused = cli_as(&rack, &deployer, &args);
        assert_eq!(refused.status.code(), Some(4), "deploy `{}`", args.join(" "));
    }

    // `token ls` (admin) lists both, without secrets; revoking refuses the token at once.
    let listing = rack.ok(&["token", "ls", "-o", "json"]);
    let tokens: Vec<TokenInfo> = serde_json::from_str(&listing).expect("json");
    assert_eq!(tokens.len(), 2);
    assert!(!listing.contains(&reader[20..]) && !listing.contains(&deployer[20..]), "no secrets: {listing}");
    rack.ok(&["token", "revoke", "wall-screen"]);
    let refused = cli_as(&rack, &reader, &["ps"]);
    assert_eq!(refused.status.code(), Some(4), "revoked");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("revoked"));
    // The admin token (the data directory's) still does everything.
    rack.ok(&["start", &victim]);
    let admin = mint(&rack, "--admin", "second-admin");
    let drained = cli_as(&rack, &admin, &["token", "ls"]);
    assert!(drained.status.success(), "an admin token manages tokens");
}
