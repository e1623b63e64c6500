//! httpd on the tender, reached over a tap device in a network namespace of the test's own: real
//! frames through the shared rings, real HTTP answers. Also what an idle appliance looks like from
//! the host: asleep, sandboxed, small.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use common::{GUEST_IP, HOST_IP, Running, TAP};

/// One HTTP/1.1 request; the whole response.
fn get(path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&format!("{GUEST_IP}:8080").parse().expect("address"), common::TIMEOUT)
        .expect("httpd accepts connections");
    stream.set_read_timeout(Some(common::TIMEOUT)).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {GUEST_IP}\r\nConnection: close\r\n\r\n").expect("request sent");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response read");
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn httpd_serves_its_site_over_a_tap_and_idles_asleep_in_its_sandbox() {
    let test = "httpd_serves_its_site_over_a_tap";
    if !common::kvm(test) {
        return;
    }
    let Some(netns) = common::netns("httpd") else { return };
    let image = common::tender_image("httpd");
    // Where the tender says the appliance is ready (the Ready hypercall).
    let dir = tempfile::tempdir().expect("a temp dir");
    let ready = std::os::unix::net::UnixDatagram::bind(dir.path().join("ready.sock")).expect("binds");
    ready.set_read_timeout(Some(common::TIMEOUT)).expect("timeout");
    let mut tender = Running::spawn(
        netns
            .command(env!("CARGO_BIN_EXE_tender"))
            .args(["--net", TAP, "--stats", "--ready-socket"])
            .arg(dir.path().join("ready.sock"))
            .arg(&image.artifact)
            .args(["--", &format!("ip={GUEST_IP}/24"), &format!("gw={HOST_IP}")]),
    );
    tender.wait_for("listening on");
    let mut said = [0u8; 16];
    let n = ready.recv(&mut said).expect("httpd says it is ready once it listens");
    assert_eq!(&said[..n], b"ready\n");

    let (index, health) = netns.within(|| (get("/"), get("/healthz")));
    assert!(index.starts_with("HTTP/1.1 200"), "GET /:\n{index}");
    let site = std::fs::read_to_string(common::workspace_file("kernel-apps/httpd/site/index.html")).expect("site");
    let title = site.lines().find(|l| l.contains("<title>")).expect("the site has a title").trim();
    assert!(index.contains(title), "GET / should serve the site's index.html ({title}):\n{index}");
    assert!(health.starts_with("HTTP/1.1 200"), "GET /healthz:\n{health}");

    // Idle: blocked in ppoll (state S), with the sandbox on.
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{}/status", tender.child.id())).expect("tender is alive");
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("?");
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    assert_eq!(field("Seccomp:"), "2", "filter mode\n{status}");
    assert!(field("State:").starts_with('S'), "asleep while idle: {}", field("State:"));
    // KVM adds its own worker to the process (`kvm-nx-lpage-recovery`); the tender adds none.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", tender.child.id())).expect("tasks");
    let ours: Vec<String> = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|comm| comm.trim().to_owned())
        .filter(|comm| !comm.starts_with("kvm-"))
        .collect();
    assert_eq!(ours, ["tender"], "the vCPU runs on the main thread, with no other thread");
    eprintln!("idle httpd tender: PSS {} KiB, RSS {}", tender.pss_kib().unwrap_or(0), field("VmRSS:"));
}

/// A hand-assembled guest whose transmit ring already holds one frame of `frame_len` bytes (the
/// frame in the ELF's data), which it attaches and then polls once.
fn transmitting_guest(frame: &[u8], frame_len: u32) -> common::Guest {
    use tender_abi::{Hypercall, NetRings};
    let mut guest = common::Guest::new();
    let rings_offset = 0x1000; // page-aligned: DATA is
    let rings = guest.place(rings_offset, &vec![0; std::mem::size_of::<NetRings>()]);
    guest.place(rings_offset, &1u32.to_le_bytes()); // tx.produced = 1
    guest.place(rings_offset + 16, &frame_len.to_le_bytes()); // tx.slots[0].len
    guest.place(rings_offset + 16 + 8, frame); // tx.slots[0].frame
    let attach = guest.place(0, &[rings.to_le_bytes(), [0; 8]].concat());
    let poll = guest.place(0x20, &[0u64.to_le_bytes(), [0; 8]].concat());
    guest.call(Hypercall::NetAttach, attach).call(Hypercall::Poll, poll).exit(0x40, 0)
}

/// The frames the host sees arriving on `tap`, from a packet socket (run inside the namespace),
/// until `wanted` arrives or `duration` passes.
fn capture(tap: &str, ready: std::sync::mpsc::Sender<()>, wanted: &[u8], duration: Duration) -> Vec<Vec<u8>> {
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket creation; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
    assert!(fd >= 0, "packet socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nothing else.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let name = std::ffi::CString::new(tap).expect("no NUL");
    // SAFETY: a NUL-terminated interface name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(index > 0, "{tap} exists in the namespace");
    // SAFETY: a zeroed sockaddr_ll is valid; the fields set below are the ones bind reads.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = all;
    address.sll_ifindex = index as i32;
    let timeout = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
    use std::os::fd::AsRawFd;
    // SAFETY: valid pointers to live values of the sizes given.
    unsafe {
        let bound = libc::bind(
            socket.as_raw_fd(),
            (&address as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    let _ = ready.send(());
    let deadline = std::time::Instant::now() + duration;
    let mut frames = Vec::new();
    while std::time::Instant::now() < deadline {
        let mut buffer = [0u8; 2048];
        // SAFETY: receives into a live buffer of the given size.
        let got = unsafe { libc::recv(socket.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if got > 0 {
            frames.push(buffer[..got as usize].to_vec());
            if frames.last().is_some_and(|f| f == wanted) {
                break;
            }
        }
    }
    frames
}

#[test]
fn a_queued_frame_reaches_the_tap() {
    let test = "a_queued_frame_reaches_the_tap";
    if !common::kvm(test) {
        return;
    }
    let Some(netns) = common::netns("txframe") else { return };
    let mut frame = vec![0xff; 6]; // broadcast
    frame.extend([0x02, 0, 0, 0, 0, 0x01]);
    frame.extend([0x88, 0xb5]); // local experimental EtherType
    frame.extend(b"hello from the tx ring");
    frame.resize(60, 0);
    let guest = transmitting_guest(&frame, frame.len() as u32);
    let dir = common::scratch(test);
    let kernel = common::write(dir.path(), "guest.elf", &guest.elf());
    let (ready, is_ready) = std::sync::mpsc::channel();
    let (frames, run) = std::thread::scope(|scope| {
        let capturing = scope.spawn(|| netns.within(|| capture(TAP, ready, &frame, common::TIMEOUT)));
        is_ready.recv().expect("the capture starts");
        let run = common::run(
            netns.command(env!("CARGO_BIN_EXE_tender")).args(["--stats", "--net", TAP, "--kernel"]).arg(&kernel),
        );
        (capturing.join().expect("capture thread"), run)
    });
    run.expect_status(0).expect_stderr(&["frames sent 1"]);
    assert!(frames.contains(&frame), "the frame did not arrive on {TAP}; saw {} other frames", frames.len());
}

#[test]
fn an_oversized_frame_is_a_violation() {
    let test = "an_oversized_frame_is_a_violation";
    if !common::kvm(test) {
        return;
    }
    let Some(netns) = common::netns("bigframe") else { return };
    let guest = transmitting_guest(&[0; 64], 5000);
    let dir = common::scratch(test);
    let kernel = common::write(dir.path(), "guest.elf", &guest.elf());
    let run = common::run(netns.command(env!("CARGO_BIN_EXE_tender")).args(["--net", TAP, "--kernel"]).arg(&kernel));
    run.expect_status(126).expect_stderr(&["tx ring slot 0 holds a 5000-byte frame"]);
}
