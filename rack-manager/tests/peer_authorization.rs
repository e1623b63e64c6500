//! Peer authorization, attacked for real: a pinned peer is authenticated, not trusted with
//! everything. Each test runs real `rack-manager serve` processes on 127.0.0.1 (simulated
//! launcher, no VM) and plays the hostile peer either as a real rack whose identity the victim
//! pins, or by speaking the peer protocol directly with that rack's certificate and key.
//!
//! - a peer's takeover notices fence only deployments whose failover plan names that peer;
//! - a plan a peer sent is run only with an image key trusted for that peer, within the takeover
//!   limits, with the manifest's arguments, and a refusal says why (`failover status`,
//!   `failover plan --incoming`);
//! - a name from a peer with a path in it is refused before any file is made;
//! - a flood against one rack's peer port does not make its peer take over (down means
//!   unreachable both ways).

mod common;
mod peering;

use std::{io::Write, sync::Arc, time::Duration};

use common::{Rack, image};
use images::Arch;
use peering::{add_peer, add_peer_with_keys, identity, peer, start, until, workspace_keys};
use rack_api::{Instance, InstanceState};
use serde_json::{Value, json};

const SIM: &[&str] = &["--launcher", "sim", "--memory-mib", "4096"];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    [SIM, extra].concat()
}

fn json_of(rack: &Rack, args: &[&str]) -> Value {
    serde_json::from_str(&rack.ok(args)).unwrap_or_else(|e| panic!("{args:?} is not JSON: {e}"))
}

/// Deploys `app` on `rack` (plus `extra` deploy arguments) and returns the deployment's id.
fn deploy(rack: &Rack, app: &str, extra: &[&str]) -> String {
    let mut args = vec!["deploy", app, "-o", "json"];
    args.extend_from_slice(extra);
    let instances: Vec<Instance> = serde_json::from_str(&rack.ok(&args)).expect("deploy -o json lists instances");
    instances.first().expect("one instance").deployment.clone()
}

fn daemon_log(rack: &Rack) -> String {
    std::fs::read_to_string(rack.data_dir().join("daemon.stderr")).unwrap_or_default()
}

/// Speaks the peer protocol to `url` as the rack whose data directory is `as_rack`: its own
/// certificate and key, the way a hostile (or compromised) pinned peer would. The server's
/// certificate is not checked: the attacker does not care who answers.
fn speak_as(as_rack: &Rack, url: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let dir = as_rack.data_dir().join("peer");
    let cert = CertificateDer::from_pem_file(dir.join("identity.crt")).expect("the rack's certificate");
    let key = PrivateKeyDer::from_pem_file(dir.join("identity.key")).expect("the rack's key");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(common::ServerCheck::Any))
        .with_client_auth_cert(vec![cert], key)
        .expect("a client certificate");
    let name = rustls::pki_types::ServerName::try_from("peer.rack.mast").expect("a name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client");
    let address = url.trim_start_matches("https://");
    let socket = std::net::TcpStream::connect(address).expect("the peer port accepts");
    socket.set_read_timeout(Some(Duration::from_secs(10))).expect("a timeout");
    let mut stream = rustls::StreamOwned::new(connection, socket);
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .and_then(|()| stream.write_all(body))
    .expect("the request is sent");
    let mut answer = Vec::new();
    // The server closes after its answer; a missing close_notify is not the attacker's problem.
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    common::split_response(&answer)
}

/// A heartbeat from `rack` carrying `plans`.
fn heartbeat(rack: &str, plans: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({ "rack": rack, "sent_ms": peering::now_ms(), "plans": plans })).expect("JSON")
}

/// A takeover record as a rack keeps it in `peer/takeovers.json`.
fn takeover_record(peer: &str, deployment: &str, epoch: u64) -> Value {
    json!({
        "peer": peer, "deployment": deployment, "image_id": "00".repeat(32), "image_name": "hello",
        "epoch": epoch, "local_deployment": "d1", "peer_last_heartbeat_ms": 1, "lease_expired_ms": 2,
        "serving_ms": null, "recovery_ms": null, "snapshot_taken_ms": null, "lag_ms": null,
        "volume_path": null, "state": "running", "message": null,
    })
}

/// Issue #12, row 4: a pinned peer answering heartbeats with takeover notices for deployments
/// that never named it stopped every instance on the rack. Now only a deployment whose plan
/// names that peer is fenced; the others keep running, and the rack logs what it ignored.
#[test]
fn takeover_notices_fence_only_deployments_that_fail_over_to_that_peer() {
    let b = start("b", SIM);
    let mut m = start("m", SIM);
    let c = start("c", SIM);
    add_peer(&b, &m);
    add_peer(&m, &b);
    add_peer(&b, &c);
    b.ok(&["image", "push", image("hello", Arch::X86_64).to_str().expect("utf-8")]);
    let unplanned = deploy(&b, "hello", &[]);
    let elsewhere = deploy(&b, "hello", &["--failover-to", "c"]);
    let to_m = deploy(&b, "hello", &["--failover-to", "m"]);
    b.wait_for("three instances running", Duration::from_secs(30), |all| {
        all.len() == 3 && all.iter().all(|i| i.state == InstanceState::Running)
    });

    // m claims to have taken over all three (and one b never had, with a path for a name).
    m.kill_daemon();
    let notices: Vec<Value> = [&unplanned, &elsewhere, &to_m, "../../x"]
        .iter()
        .enumerate()
        .map(|(i, d)| takeover_record("b", d, i as u64 + 1))
        .collect();
    std::fs::write(m.data_dir().join("peer/takeovers.json"), serde_json::to_vec(&notices).expect("JSON"))
        .expect("m's takeovers");
    m.start_daemon();

    let all = b.wait_for("b to fence the deployment that fails over to m", Duration::from_secs(20), |all| {
        all.iter().any(|i| i.deployment == to_m && i.state == InstanceState::Stopped)
    });
    let fenced = all.iter().find(|i| i.deployment == to_m).expect("listed");
    assert!(fenced.message.as_deref().is_some_and(|m| m.contains("rack m took this deployment over")), "{fenced:?}");
    // Several more heartbeat rounds: the others stay up.
    std::thread::sleep(Duration::from_secs(3));
    for instance in b.ps() {
        if instance.deployment != to_m {
            assert_eq!(instance.state, InstanceState::Running, "m's notice stopped {instance:?}");
            assert_eq!(instance.message, None, "{instance:?}");
        }
    }
    let log = daemon_log(&b);
    for ignored in [&unplanned, &elsewhere] {
        let line = format!("ignoring rack m's notice that it took over deployment {ignored}:");
        assert_eq!(log.matches(&line).count(), 1, "logged once: {line}\n{log}");
    }
    assert!(log.contains("took over deployment (an invalid name)"), "{log}");
}

/// Issue #12, row 5: a pinned peer sending one heartbeat with a plan (25 replicas, arguments of
/// its choosing, restart always) and going silent had this rack deploy it, with any image it
/// held. Now the plan needs an image key trusted for that peer and must fit the takeover policy;
/// each refusal is visible with its reason. A plan that fits is taken over (the control).
#[test]
fn a_down_peer_s_plan_runs_only_with_a_trusted_image_key_and_within_the_policy() {
    let b = start("b", &with(&["--heartbeat-ms", "300", "--lease-ms", "1200"]));
    let mut m = start("m", SIM);
    add_peer_with_keys(&b, &m, &[]);
    add_peer(&m, &b);
    b.ok(&["image", "push", image("hello", Arch::X86_64).to_str().expect("utf-8")]);
    let images = json_of(&b, &["image", "ls", "-o", "json"]);
    let hello = images.as_array().and_then(|all| all.first()).expect("hello is listed").clone();
    let hello_id = hello["id"].as_str().expect("an id").to_owned();
    let manifest_args = hello["args"].clone();
    let (_, b_url, _) = identity(&b);
    until("m and b to see each other", Duration::from_secs(10), || (peer(&b, "m")["up"] == true).then_some(()));
    // m goes away for good: from now on only the test speaks for it, so b's heartbeats to it fail.
    m.kill_daemon();

    let plan = |replicas: u32, args: Value| {
        json!([{
            "deployment": "d7", "image_id": hello_id, "image_name": "hello", "replicas": replicas,
            "memory_mib": 16, "vcpus": 1, "args": args, "restart": "always", "failover_to": ["b"],
            "has_volume": false,
        }])
    };
    let refusal = |needle: &str| {
        until(&format!("b to refuse m's plan: {needle}"), Duration::from_secs(15), || {
            let status = json_of(&b, &["failover", "status", "-o", "json"]);
            let entry = status.as_array()?.iter().find(|t| t["deployment"] == "d7")?.clone();
            (entry["state"] == "refused" && entry["message"].as_str()?.contains(needle)).then_some(entry)
        })
    };
    let send = |plans: Value| {
        let (status, body) = speak_as(&m, &b_url, "POST", "/peer/v1/heartbeat", &heartbeat("m", plans));
        assert_eq!(status, 200, "{body}");
    };

    // One heartbeat with the attacker's plan, then silence.
    send(plan(25, json!(["--evil"])));
    let incoming = json_of(&b, &["failover", "plan", "--incoming", "-o", "json"]);
    let asked = &incoming["incoming"][0];
    assert_eq!((asked["replicas"].as_u64(), asked["allowed"].as_bool()), (Some(25), Some(false)), "{incoming}");
    assert!(asked["refused_because"].as_str().is_some_and(|r| r.contains("no image key is trusted for peer m")));
    assert_eq!(incoming["trust"], json!([{ "peer": "m", "image_keys": [] }]), "{incoming}");
    let table = b.ok(&["failover", "plan", "--incoming"]);
    println!("$ rack-manager failover plan --incoming\n{table}");
    assert!(table.contains("none: nothing of m is taken over") && table.contains("refused:"), "{table}");
    refusal("no image key is trusted for peer m");
    let shown = b.ok(&["failover", "status"]);
    assert!(shown.contains("refused") && shown.contains("--image-key"), "{shown}");

    // The operator trusts the key for m (while m is down): judged again, the size is refused.
    let keys = workspace_keys();
    add_peer_with_keys(&b, &m, &keys.iter().map(String::as_str).collect::<Vec<_>>());
    refusal("--takeover-max-replicas");

    // m "comes back" for one heartbeat with a smaller plan, custom arguments: refused for those.
    send(plan(2, json!(["--evil"])));
    refusal("--takeover-custom-args");
    std::thread::sleep(Duration::from_secs(1));
    assert!(b.ps().is_empty(), "b started nothing of a refused plan: {:?}", b.ps());
    let takeovers = json_of(&b, &["failover", "status", "-o", "json"]);
    assert!(takeovers.as_array().is_some_and(|all| all.iter().all(|t| t["state"] == "refused")), "{takeovers}");

    // The control: the manifest's arguments, two replicas, a trusted key. b takes it over.
    send(plan(2, manifest_args));
    let running = b.wait_for("b to take over the plan that fits", Duration::from_secs(20), |all| {
        all.len() == 2 && all.iter().all(|i| i.state == InstanceState::Running)
    });
    assert!(running.iter().all(|i| i.id.starts_with("hello-")), "{running:?}");
    until("the takeover to be recorded as running", Duration::from_secs(10), || {
        let status = json_of(&b, &["failover", "status", "-o", "json"]);
        status.as_array()?.iter().find(|t| t["deployment"] == "d7" && t["state"] == "running").cloned()
    });
}

/// Issue #12, row 6: a peer deployment named `../../x` made this rack create a directory
/// outside its data directory (volume snapshots go to `peer/replicas/<rack>/<deployment>.img`).
/// Now the heartbeat carrying that name is refused whole, before anything is kept.
#[test]
fn a_peer_name_with_a_path_in_it_is_refused_before_any_file_is_made() {
    let b = start("b", &with(&["--heartbeat-ms", "300", "--lease-ms", "1200"]));
    let m = start("m", SIM);
    add_peer(&b, &m);
    // m accepts b's certificate (so b's heartbeats to m are answered and b replicates from m)
    // but sends nothing itself: its URL for b leads nowhere. Only the test speaks for m.
    let (_, _, b_fingerprint) = identity(&b);
    let nowhere = format!("https://127.0.0.1:{}", peering::free_port());
    m.ok(&["peer", "add", "b", &nowhere, "--fingerprint", &b_fingerprint]);
    until("b to reach m", Duration::from_secs(10), || (peer(&b, "m")["reachable"] == true).then_some(()));
    let (_, b_url, _) = identity(&b);

    let escape = format!("peerauth-escape-{}", std::process::id());
    let outside = b.data_dir().parent().expect("a parent").join(&escape);
    let hostile = json!([{
        "deployment": format!("../../../../{escape}/x"), "image_id": "ab".repeat(32), "image_name": "hello",
        "replicas": 1, "memory_mib": 16, "vcpus": 1, "args": [], "restart": "always", "failover_to": ["b"],
        "has_volume": true,
    }]);
    // Sent for a while, as a replicating peer would keep sending it.
    for _ in 0..10 {
        let (status, body) = speak_as(&m, &b_url, "POST", "/peer/v1/heartbeat", &heartbeat("m", hostile.clone()));
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("is not a valid deployment name"), "{body}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(!outside.exists(), "{} was created outside b's data directory", outside.display());
    let replicas = b.data_dir().join("peer/replicas");
    let made: Vec<_> = walk(&replicas);
    assert!(made.is_empty(), "nothing is kept for the refused plan: {made:?}");
    let plan = json_of(&b, &["failover", "plan", "--incoming", "-o", "json"]);
    assert_eq!(plan["incoming"], json!([]), "{plan}");

    // The same heartbeat with its names in order is accepted: the refusal was about the name.
    let mut fine = hostile.clone();
    fine[0]["deployment"] = json!("d1");
    fine[0]["has_volume"] = json!(false);
    let (status, body) = speak_as(&m, &b_url, "POST", "/peer/v1/heartbeat", &heartbeat("m", fine));
    assert_eq!(status, 200, "{body}");
    // A forged sender name is refused too (the certificate is m's).
    let (status, _) = speak_as(&m, &b_url, "POST", "/peer/v1/heartbeat", &heartbeat("../b", json!([])));
    assert_eq!(status, 403);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        found.push(entry.path());
        found.extend(walk(&entry.path()));
    }
    found
}

/// A flood against one rack's peer port cuts one direction only (its peer's heartbeats to it);
/// that rack's own heartbeats still reach the peer. A rack is down only when unreachable both
/// ways, so the flood must cause no takeover, and no instance stops on either rack.
#[test]
fn a_flood_against_one_peer_port_causes_no_takeover() {
    let fast = ["--heartbeat-ms", "300", "--lease-ms", "1200"];
    let a = start("a", &with(&fast));
    let b = start("b", &with(&fast));
    peering::mesh(&[&a, &b]);
    a.ok(&["image", "push", image("hello", Arch::X86_64).to_str().expect("utf-8")]);
    deploy(&a, "hello", &["--failover-to", "b"]);
    until("b to be ready to take over", Duration::from_secs(30), || {
        let plan = json_of(&b, &["failover", "plan", "-o", "json"]);
        let incoming = plan["incoming"].as_array()?.first()?.clone();
        (incoming["would_take_over"] == true && incoming["allowed"] == true && incoming["image_complete"] == true)
            .then_some(())
    });

    // 300 connections to b's peer port that never start their TLS handshake, held for 6 s
    // (five leases): the current listener's slots fill, and a's heartbeats to b are dropped.
    let (_, b_url, _) = identity(&b);
    let address = b_url.trim_start_matches("https://").to_owned();
    let mut flood = Vec::new();
    for _ in 0..300 {
        if let Ok(socket) = std::net::TcpStream::connect(&address) {
            flood.push(socket);
        }
    }
    let mut saw_a_stale = false;
    let until_ms = peering::now_ms() + 6000;
    while peering::now_ms() < until_ms {
        saw_a_stale |= peer(&b, "a")["up"] == false;
        assert!(b.ps().is_empty(), "b took a's deployment over during the flood");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(flood);
    println!(
        "flood: {} connections held 6 s; b {} a's heartbeats go stale meanwhile",
        300,
        if saw_a_stale { "saw" } else { "did not see" }
    );
    // After the flood: a's heartbeats flow again and nothing was taken over or fenced.
    until("b to hear from a again", Duration::from_secs(15), || (peer(&b, "a")["up"] == true).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    assert!(b.ps().is_empty(), "b runs a's deployment: {:?}", b.ps());
    assert_eq!(json_of(&b, &["failover", "status", "-o", "json"]), json!([]));
    let on_a = a.ps();
    assert!(on_a.len() == 1 && on_a[0].state == InstanceState::Running, "a's instance stopped: {on_a:?}");
}
