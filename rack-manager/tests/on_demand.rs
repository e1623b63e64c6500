//! On-demand httpd with the QEMU launcher (x86_64 `microvm` under KVM): the gate holds its
//! 127.77.x.y address while no VM runs, the first request boots one, is held until the
//! appliance's `mast: ready` console line, and is answered without a reset; idle, the VM is
//! stopped, and the next request wakes it again. (The tender launcher's on-demand test, with
//! kvlog and a crash during a wake, is in `tender.rs`.)

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::{Rack, image};
use images::Arch;
use rack_api::{GateState, Instance};

fn get(address: SocketAddr) -> Result<(u16, String), String> {
    let mut stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status in {text:?}"))?;
    Ok((status, text))
}

fn gate_in(rack: &Rack, state: GateState, within: Duration) -> Instance {
    rack.wait_for(&format!("the gate to be {}", state.as_str()), within, |all| {
        all.len() == 1 && all[0].gate.is_some_and(|g| g.state == state)
    })
    .remove(0)
}

#[test]
fn on_demand_httpd_under_qemu_wakes_on_its_first_request_and_sleeps_when_idle() {
    if !qemu::kvm::available_for("on_demand_httpd_under_qemu_wakes_on_its_first_request_and_sleeps_when_idle") {
        return;
    }
    let rack = Rack::start(&[]);
    rack.ok(&["image", "push", image("httpd", Arch::X86_64).to_str().expect("utf-8 path")]);
    rack.ok(&["deploy", "httpd", "--on-demand", "--idle-timeout", "1s", "--detach"]);
    let asleep = gate_in(&rack, GateState::Asleep, Duration::from_secs(30));
    let port = &asleep.ports[0];
    let address = SocketAddr::new(port.address.expect("a gate address"), port.host_port);
    assert!(address.ip().to_string().starts_with("127.77."), "{address}");
    assert!(common::vms_of(rack.data_dir()).is_empty(), "no VM while asleep");

    for round in 1..=2u64 {
        let started = Instant::now();
        let (status, page) = get(address).unwrap_or_else(|e| panic!("wake {round}: {e}"));
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("<title>Mast httpd</title>"), "{page}");
        eprintln!("QEMU wake {round}: answered after {:?}", started.elapsed());
        let gate = gate_in(&rack, GateState::Running, Duration::from_secs(5)).gate.expect("a gate");
        assert_eq!(gate.wakes, round);
        assert_eq!(common::vms_of(rack.data_dir()).len(), 1, "one VM awake");
        gate_in(&rack, GateState::Asleep, Duration::from_secs(15));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !common::vms_of(rack.data_dir()).is_empty() {
            assert!(Instant::now() < deadline, "the VM still runs after the gate slept");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
