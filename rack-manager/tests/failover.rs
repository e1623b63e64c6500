//! Failover between three racks on one machine, with real QEMU: rack a (a manager and a second
//! host's agent) runs httpd (with a volume that a writer appends to), a's manager, agent and VMs
//! are killed with SIGKILL, and rack b, first
//! in the deployment's failover list, serves httpd from its replicated image and restores the
//! latest replicated volume snapshot; rack c, second in the list, stays out of it. When a comes
//! back it learns of the takeover before its reconciler runs and does not start a duplicate; the
//! deployment is then handed back by hand.
//!
//! The three racks also share an S3 bucket (a real `moto_server`) as their cloud tier when moto is
//! installed, as a deployment would; failover itself goes rack to rack.
//!
//! The volume is a plain file written by the test at the path the agent gives an instance's
//! volume (`<data-dir>/volumes/<deployment>/<instance>.img`; httpd declares none, so nothing else
//! writes it): each write is "acknowledged" once it is fsynced, and every write acknowledged
//! before the reported replication lag must be on b after failover, in the volume b's instance
//! was given. `failover_kvlog.rs` does the same with the kvlog appliance writing its own volume.

mod common;
mod peering;

use std::{
    collections::HashSet,
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use common::{host_port, image, kill, vms_of_all, wait_for_200};
use images::Arch;
use peering::{mesh, now_ms, peer, start, until};
use rack_api::InstanceState;
use serde_json::Value;

/// Appends numbered lines to `path`, fsyncing each, until `stop`; returns (number, when it was
/// acknowledged) for every write.
fn writer(path: std::path::PathBuf, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<(u64, u64)>> {
    thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("the volume opens");
        let mut acks = Vec::new();
        let mut seq = 0u64;
        while !stop.load(Ordering::SeqCst) {
            seq += 1;
            writeln!(file, "write {seq}").expect("writes");
            file.sync_data().expect("syncs");
            acks.push((seq, now_ms()));
            thread::sleep(Duration::from_millis(5));
        }
        acks
    })
}

fn json(rack: &common::Rack, args: &[&str]) -> Value {
    serde_json::from_str(&rack.ok(args)).unwrap_or_else(|e| panic!("{args:?} is not JSON: {e}"))
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_peer_serves_a_dead_rack_s_httpd_and_the_rack_does_not_run_it_again_on_return() {
    let moto = replica::moto::MotoServer::start_for("the failover test's cloud tier (it runs without one)");
    if let Some(server) = &moto {
        server.create_bucket("mast").expect("the bucket");
        // SAFETY: this binary's only test sets them before it starts any thread or process;
        // nothing reads the environment concurrently.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        }
    }
    let cloud = |rack: &str| -> Vec<String> {
        moto.as_ref()
            .map(|server| vec!["--cloud".to_owned(), format!("s3://mast?endpoint={}&rack={rack}", server.endpoint())])
            .unwrap_or_default()
    };
    let (a_args, b_args, c_args) = (cloud("a"), cloud("b"), cloud("c"));
    let mut a = start("a", &strs(&a_args));
    // Rack a has a second host, whose agent dies with the rest of the rack.
    a.add_agent("a-2", &[]);
    let b = start("b", &strs(&b_args));
    let c = start("c", &strs(&c_args));
    mesh(&[&a, &b, &c]);
    a.ok(&["image", "push", image("httpd", Arch::Aarch64).to_str().expect("utf-8")]);
    a.ok(&["deploy", "httpd", "--failover-to", "b,c"]);
    let on_a = a.wait_for("httpd on a", Duration::from_secs(60), |all| {
        all.len() == 1 && all[0].state == InstanceState::Running && !all[0].ports.is_empty()
    });
    wait_for_200(host_port(&on_a[0]), "/", Duration::from_secs(30));
    let deployment = on_a[0].deployment.clone();
    let volume = a.data_dir().join("volumes").join(&deployment).join(format!("{}.img", on_a[0].id));
    std::fs::create_dir_all(volume.parent().expect("a parent")).expect("the volumes directory");
    // 4 MiB of existing data: the writes then change only the volume's last 64 KiB chunks, and
    // b fetches only those after its first copy.
    let existing = "kvlog record\n".repeat((4 << 20) / 13);
    std::fs::write(&volume, &existing).expect("the volume's existing data");
    let writer_started = std::time::Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(volume.clone(), stop.clone());

    // b holds the image and a recent snapshot, and would take over; c would not (b is up).
    until("b to be ready to take over", Duration::from_secs(60), || {
        let plan = json(&b, &["failover", "plan", "-o", "json"]);
        let incoming = plan["incoming"].as_array()?.iter().find(|p| p["deployment"] == deployment.as_str())?.clone();
        (incoming["would_take_over"] == true
            && incoming["image_complete"] == true
            && incoming["snapshot_taken_ms"].is_u64())
        .then_some(())
    });
    let c_plan = json(&c, &["failover", "plan", "-o", "json"]);
    assert!(
        c_plan["incoming"].as_array().is_some_and(|all| all.iter().all(|p| p["would_take_over"] == false)),
        "c leaves it to b: {c_plan}"
    );
    thread::sleep(Duration::from_secs(2));

    // Rack a dies: writer, manager and VMs, at once.
    stop.store(true, Ordering::SeqCst);
    let acks = writes.join().expect("the writer finishes");
    let writer_ran = writer_started.elapsed();
    let volume_size = std::fs::metadata(&volume).expect("the volume").len();
    let volume_fetched = peer(&b, "a")["volume_bytes_fetched"].as_u64().expect("a count");
    let vms = vms_of_all(&a);
    a.kill_daemon();
    for (agent, _) in &a.agents {
        kill(agent.id());
    }
    for pid in vms {
        kill(pid);
    }
    let killed_ms = now_ms();

    // Measured without CLI processes in the loop: b's API directly, then the forwarded port.
    let on_b = until("httpd to run on b", Duration::from_secs(60), || {
        let all: Vec<rack_api::Instance> = serde_json::from_str(&b.api_get("/v1/instances")).ok()?;
        all.into_iter().find(|i| i.state == InstanceState::Running && !i.ports.is_empty())
    });
    // Short attempts: QEMU accepts connections before the guest listens, and such an early
    // one stalls until its timeout.
    let page = until("httpd on b to answer 200", Duration::from_secs(60), || {
        match common::http_get(host_port(&on_b), "/", "", Duration::from_millis(100)) {
            Some((200, body)) => Some(body),
            _ => None,
        }
    });
    let serving_ms = now_ms();
    assert!(page.contains("<title>Mast httpd</title>"), "{page}");
    let takeover = until("b to record the takeover", Duration::from_secs(30), || {
        let all = json(&b, &["failover", "status", "-o", "json"]);
        all.as_array()?.iter().find(|t| t["deployment"] == deployment.as_str() && t["state"] == "running").cloned()
    });
    assert_eq!(takeover["local_deployment"].as_str(), Some(on_b.deployment.as_str()), "{takeover}");
    assert_eq!(b.ps().len(), 1, "b runs one copy");
    let lease_expired_ms = takeover["lease_expired_ms"].as_u64().expect("lease expiry");
    let last_heartbeat_ms = takeover["peer_last_heartbeat_ms"].as_u64().expect("last heartbeat");
    let lag_ms = takeover["lag_ms"].as_u64().expect("a lag: the deployment has a volume");
    println!(
        "failover: a killed at +0 ms, its last heartbeat {} ms before, lease expired at +{} ms, b serving HTTP 200 at +{} ms: \
         recovery {} ms after the lease expired (instance running after {} ms); replication lag at failure {lag_ms} ms",
        killed_ms.saturating_sub(last_heartbeat_ms),
        lease_expired_ms.saturating_sub(killed_ms),
        serving_ms.saturating_sub(killed_ms),
        serving_ms.saturating_sub(lease_expired_ms),
        takeover["recovery_ms"]
    );
    assert!(json(&c, &["ps", "-a", "-o", "json"]).as_array().is_some_and(Vec::is_empty), "c started nothing");

    // Every write acknowledged before the reported lag is in b's copy of the volume.
    let restored_path = takeover["volume_path"].as_str().expect("a restored volume");
    let expected_path = b.data_dir().join("volumes").join(&on_b.deployment).join(format!("{}.img", on_b.id));
    assert_eq!(std::path::Path::new(restored_path), expected_path, "the volume is restored where b's agent looks");
    let restored = std::fs::read_to_string(restored_path).expect("the restored volume reads");
    let present: HashSet<u64> = restored.lines().filter_map(|l| l.strip_prefix("write ")?.parse().ok()).collect();
    let cutoff = last_heartbeat_ms - lag_ms;
    // At most two 64 KiB chunks change between pulls (about one a second): no whole copies.
    let bound = volume_size + 2 * 65536 * (writer_ran.as_secs() + 3);
    assert!(volume_fetched <= bound, "b fetched {volume_fetched} volume bytes, more than {bound}");
    println!(
        "volume replication: b fetched {volume_fetched} bytes for a {volume_size}-byte volume over {:.1} s of writes",
        writer_ran.as_secs_f64()
    );
    let must_have: Vec<u64> = acks.iter().filter(|(_, at)| *at < cutoff).map(|(seq, _)| *seq).collect();
    assert!(!must_have.is_empty(), "the writer ran long enough before the snapshot");
    let lost: Vec<u64> = must_have.iter().copied().filter(|seq| !present.contains(seq)).collect();
    assert!(lost.is_empty(), "writes acknowledged before the reported lag are missing on b: {lost:?}");
    let window_ms = takeover["loss_window_ms"].as_u64().expect("a loss window");
    let oldest_lost = acks.iter().filter(|(seq, _)| !present.contains(seq)).map(|(_, at)| *at).min();
    println!(
        "volume: {} writes acknowledged, {} before the lag cutoff (all present on b), {} lost; the oldest lost was \
         acknowledged {} ms before the kill (reported loss window {window_ms} ms)",
        acks.len(),
        must_have.len(),
        acks.iter().filter(|(seq, _)| !present.contains(seq)).count(),
        oldest_lost.map_or("-".into(), |at| killed_ms.saturating_sub(at).to_string())
    );

    // a comes back: it hears of the takeover before starting anything, and runs no duplicate.
    a.start_daemon();
    let fenced = a.wait_for("a to keep its copy stopped", Duration::from_secs(30), |all| {
        all.len() == 1 && all[0].state == InstanceState::Stopped
    });
    assert!(fenced[0].message.as_deref().is_some_and(|m| m.contains("rack b took this deployment over")), "{fenced:?}");
    thread::sleep(Duration::from_secs(3));
    assert!(vms_of_all(&a).is_empty(), "a started a VM for a deployment b runs");
    assert_eq!(a.ps()[0].state, InstanceState::Stopped);
    wait_for_200(host_port(&on_b), "/", Duration::from_secs(10));
    until("a and b to see each other again", Duration::from_secs(15), || {
        (peer(&b, "a")["up"] == true && peer(&a, "b")["up"] == true).then_some(())
    });

    // Hand-back, by hand: b gives the deployment up, a starts its copy again, and b does not
    // take it over again.
    b.ok(&["failover", "release", "a", &deployment]);
    assert!(b.ps().is_empty(), "b removed its copy: {:?}", b.ps());
    // a's API has a new port, so its second host's agent joins again (a new process).
    let agent_address = |rack: &common::Rack| {
        json(rack, &["host", "ls", "-o", "json"])
            .as_array()
            .and_then(|hosts| hosts.iter().find(|h| h["name"] == "a-2").map(|h| h["address"].clone()))
    };
    let old_address = agent_address(&a);
    a.add_agent("a-2", &[]);
    until("a-2 to join a again", Duration::from_secs(30), || (agent_address(&a) != old_address).then_some(()));
    a.ok(&["start", &fenced[0].id]);
    let back = a.wait_for("httpd on a again", Duration::from_secs(60), |all| {
        all.len() == 1 && all[0].state == InstanceState::Running && !all[0].ports.is_empty()
    });
    wait_for_200(host_port(&back[0]), "/", Duration::from_secs(30));
    thread::sleep(Duration::from_secs(2));
    assert!(b.ps().is_empty(), "b took it over again");
    assert_eq!(json(&b, &["failover", "status", "-o", "json"]), serde_json::json!([]));
}
