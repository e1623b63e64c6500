//! Failover of a stateful appliance, with real QEMU: rack a runs kvlog (its volume created by
//! the agent at `volumes/<deployment>/<instance>.img`) with `--failover-to b`, a client appends
//! over HTTP and remembers every acknowledged sequence number with the time of its 201; rack a's
//! manager and VM are killed with SIGKILL mid-stream. Rack b boots kvlog on the replicated
//! snapshot (restored into its new instance's volume before the first boot), and every record
//! acknowledged before the reported lag (`last heartbeat - lag`, the snapshot's time) must read
//! back on b with the same key and value; b's kvlog then takes new appends.

mod common;
mod peering;

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use common::{host_port, image, kill, vms_of_all, wait_for_200};
use images::Arch;
use peering::{mesh, now_ms, start, until};
use rack_api::InstanceState;
use serde_json::Value;

/// An HTTP answer: status, head (status line and fields) and body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn field(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// One request on a new connection; None when the connection or the answer fails (a killed VM).
fn request(port: u16, method: &str, path: &str, body: &[u8], timeout: Duration) -> Option<Answer> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(&[head.as_bytes(), body].concat()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.get(9..12)?.parse().ok()?;
    Some(Answer { status, head, body: response[split + 4..].to_vec() })
}

/// An acknowledged append: its sequence number, key, value and when its 201 arrived.
#[derive(Debug, Clone)]
struct Ack {
    seq: u64,
    key: String,
    value: String,
    at_ms: u64,
}

/// Appends to kvlog at `port` one after another until `stop` or until kvlog stops answering.
fn writer(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<Ack>> {
    thread::spawn(move || {
        let mut acks = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let key = format!("k{}", n % 5);
            let value = format!("value {n} written for the failover test");
            let Some(answer) =
                request(port, "POST", &format!("/append?key={key}"), value.as_bytes(), Duration::from_secs(2))
            else {
                continue; // a's VM is gone: the loop ends when the test says stop
            };
            let at_ms = now_ms();
            assert_eq!(answer.status, 201, "append {n}: {}", String::from_utf8_lossy(&answer.body));
            let reply: Value = serde_json::from_slice(&answer.body).expect("the append's answer is JSON");
            let seq = reply["seq"].as_u64().expect("the append's answer names its seq");
            acks.push(Ack { seq, key, value, at_ms });
        }
        acks
    })
}

fn json(rack: &common::Rack, args: &[&str]) -> Value {
    serde_json::from_str(&rack.ok(args)).unwrap_or_else(|e| panic!("{args:?} is not JSON: {e}"))
}

#[test]
fn a_peer_serves_a_dead_rack_s_kvlog_with_every_record_acknowledged_before_the_lag() {
    let mut a = start("a", &[]);
    let b = start("b", &[]);
    mesh(&[&a, &b]);
    a.ok(&["image", "push", image("kvlog", Arch::Aarch64).to_str().expect("utf-8")]);
    a.ok(&["deploy", "kvlog", "--failover-to", "b"]);
    let on_a = a.wait_for("kvlog on a", Duration::from_secs(60), |all| {
        all.len() == 1 && all[0].state == InstanceState::Running && !all[0].ports.is_empty()
    });
    let port_a = host_port(&on_a[0]);
    wait_for_200(port_a, "/healthz", Duration::from_secs(60));
    let deployment = on_a[0].deployment.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let writes = writer(port_a, stop.clone());
    // b holds the image and a snapshot of kvlog's volume taken while it is being written.
    until("b to be ready to take over", Duration::from_secs(60), || {
        let plan = json(&b, &["failover", "plan", "-o", "json"]);
        let incoming = plan["incoming"].as_array()?.iter().find(|p| p["deployment"] == deployment.as_str())?.clone();
        (incoming["would_take_over"] == true
            && incoming["image_complete"] == true
            && incoming["snapshot_taken_ms"].is_u64())
        .then_some(())
    });
    thread::sleep(Duration::from_secs(3));

    // Rack a dies mid-stream: manager and VM at once.
    let vms = vms_of_all(&a);
    a.kill_daemon();
    for pid in vms {
        kill(pid);
    }
    let killed_ms = now_ms();
    stop.store(true, Ordering::SeqCst);
    let acks = writes.join().expect("the writer finishes");

    let on_b = until("kvlog to run on b", Duration::from_secs(90), || {
        let all: Vec<rack_api::Instance> = serde_json::from_str(&b.api_get("/v1/instances")).ok()?;
        all.into_iter().find(|i| i.state == InstanceState::Running && !i.ports.is_empty())
    });
    let port_b = host_port(&on_b);
    // Short attempts: QEMU accepts connections before the guest listens.
    until("kvlog on b to answer", Duration::from_secs(60), || {
        request(port_b, "GET", "/healthz", b"", Duration::from_millis(200)).filter(|a| a.status == 200)
    });
    let serving_ms = now_ms();
    let takeover = until("b to record the takeover", Duration::from_secs(30), || {
        let all = json(&b, &["failover", "status", "-o", "json"]);
        all.as_array()?.iter().find(|t| t["deployment"] == deployment.as_str() && t["state"] == "running").cloned()
    });
    let last_heartbeat_ms = takeover["peer_last_heartbeat_ms"].as_u64().expect("last heartbeat");
    let lag_ms = takeover["lag_ms"].as_u64().expect("a lag: kvlog has a volume");
    let cutoff = last_heartbeat_ms - lag_ms;

    let must_have: Vec<&Ack> = acks.iter().filter(|ack| ack.at_ms < cutoff).collect();
    assert!(!must_have.is_empty(), "appends were acknowledged before the snapshot b holds");
    for ack in &must_have {
        let answer = request(port_b, "GET", &format!("/log/{}", ack.seq), b"", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("kvlog on b did not answer for record {}", ack.seq));
        assert_eq!(answer.status, 200, "record {} (acknowledged before the lag) is missing on b", ack.seq);
        assert_eq!(answer.field("X-Kvlog-Key"), Some(ack.key.as_str()), "record {}'s key", ack.seq);
        assert_eq!(String::from_utf8_lossy(&answer.body), ack.value, "record {}'s value", ack.seq);
    }
    let expected_volume = b.data_dir().join("volumes").join(&on_b.deployment).join(format!("{}.img", on_b.id));
    assert_eq!(
        takeover["volume_path"].as_str(),
        expected_volume.to_str(),
        "restored where b's agent looks: {takeover}"
    );
    let present = acks
        .iter()
        .filter(|ack| {
            request(port_b, "GET", &format!("/log/{}", ack.seq), b"", Duration::from_secs(10))
                .is_some_and(|a| a.status == 200 && a.body == ack.value.as_bytes())
        })
        .count();

    // b's kvlog goes on: a new append gets a number after every record it holds.
    let newest = must_have.iter().map(|ack| ack.seq).max().unwrap_or(0);
    let answer = request(port_b, "POST", "/append?key=after", b"written on b", Duration::from_secs(10))
        .expect("kvlog on b answers an append");
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    let reply: Value = serde_json::from_slice(&answer.body).expect("JSON");
    let seq = reply["seq"].as_u64().expect("a seq");
    assert!(seq > newest, "the new record {seq} comes after the restored ones (up to {newest})");
    let answer = request(port_b, "GET", &format!("/log/{seq}"), b"", Duration::from_secs(10)).expect("answers");
    assert_eq!((answer.status, answer.body.as_slice()), (200, &b"written on b"[..]));

    println!(
        "kvlog failover: a killed at +0 ms (last heartbeat {} ms before), lease expired at +{} ms, kvlog on b \
         answering at +{} ms (recovery {} ms after the lease expired, instance running after {}); replication lag \
         at failure {lag_ms} ms",
        killed_ms.saturating_sub(last_heartbeat_ms),
        takeover["lease_expired_ms"].as_u64().unwrap_or(0).saturating_sub(killed_ms),
        serving_ms.saturating_sub(killed_ms),
        serving_ms.saturating_sub(takeover["lease_expired_ms"].as_u64().unwrap_or(0)),
        takeover["recovery_ms"],
    );
    println!(
        "kvlog failover: {} appends acknowledged on a, {} before the lag cutoff (all on b with the same key and \
         value), {present} present on b in all, {} lost (acknowledged after the snapshot)",
        acks.len(),
        must_have.len(),
        acks.len() - present
    );
}
