//! The stack on the host: smoltcp's Loopback device, a simulated clock, and (for the loss tests)
//! smoltcp's seeded FaultInjector. Server and client sockets live on the same stack, so every test
//! drives real TCP handshakes, retransmissions and closes, deterministically.

use net::{
    ConnectOptions, Duration, IpConfig, Ipv4Address, Ipv4Cidr, ListenError, ListenOptions, Stack, StreamState,
    TcpError, TcpStream, UdpError, UdpOptions, sim::Simulated,
};
use smoltcp::phy::{Device, FaultInjector, Loopback, Medium};

const HOME: Ipv4Address = Ipv4Address::new(127, 0, 0, 1);

fn stack_on<D: Device>(device: D) -> Stack<Simulated<D>> {
    let config = IpConfig::Static { address: Ipv4Cidr::new(HOME, 8), gateway: None };
    Stack::new(Simulated::new(device), [0x02, 0, 0, 0, 0, 1], config)
}

fn stack() -> Stack<Simulated<Loopback>> {
    stack_on(Loopback::new(Medium::Ethernet))
}

/// Runs the event loop (poll, then wait) until `done` holds; panics after `limit` rounds.
fn run_until<D: Device>(
    stack: &mut Stack<Simulated<D>>,
    limit: usize,
    mut done: impl FnMut(&mut Stack<Simulated<D>>) -> bool,
) {
    for _ in 0..limit {
        stack.poll();
        if done(stack) {
            return;
        }
        stack.wait(None);
    }
    panic!("condition not reached within {limit} rounds (simulated time {})", stack.now());
}

/// Connects a client to `port` and returns (client, accepted server side).
fn connect<D: Device>(stack: &mut Stack<Simulated<D>>, listener: &net::TcpListener) -> (TcpStream, TcpStream) {
    let client = stack.tcp_connect((HOME, listener.port()), &ConnectOptions::default()).expect("connect");
    let mut server = None;
    run_until(stack, 1000, |s| {
        server = server.take().or_else(|| s.tcp_accept(listener));
        server.is_some() && s.tcp_state(&client) == StreamState::Open
    });
    (client, server.expect("accepted"))
}

/// Sends all of `data` on `from` and reads it all on `to`, running the loop as needed.
fn transfer<D: Device>(stack: &mut Stack<Simulated<D>>, from: &TcpStream, to: &TcpStream, data: &[u8]) -> Vec<u8> {
    let mut sent = 0;
    let mut received = Vec::new();
    run_until(stack, 100_000, |s| {
        sent += s
            .tcp_send(from, &data[sent..])
            .unwrap_or_else(|e| panic!("send: {e} after {sent} bytes at {} (receiver {:?})", s.now(), s.tcp_state(to)));
        let mut buf = [0u8; 700];
        loop {
            match s.tcp_recv(to, &mut buf).expect("recv") {
                0 => break,
                n => received.extend_from_slice(&buf[..n]),
            }
        }
        received.len() == data.len()
    });
    received
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn echo_both_ways_then_close_frees_the_slot() {
    let mut stack = stack();
    let listener = stack.tcp_listen(8080, &ListenOptions::default()).expect("listen");
    let (client, server) = connect(&mut stack, &listener);
    assert_eq!(stack.tcp_peer(&server).map(|p| p.0), Some(HOME));
    assert_eq!(transfer(&mut stack, &client, &server, b"GET / HTTP/1.1\r\n\r\n"), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(transfer(&mut stack, &server, &client, b"HTTP/1.1 200 OK\r\n\r\n"), b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(stack.tcp_connections(&listener), 1);

    stack.tcp_close(client);
    run_until(&mut stack, 1000, |s| s.tcp_state(&server) == StreamState::PeerClosed);
    let mut buf = [0u8; 8];
    assert_eq!(stack.tcp_recv(&server, &mut buf), Err(TcpError::Finished));
    stack.tcp_close(server);
    run_until(&mut stack, 1000, |s| s.tcp_connections(&listener) == 0);
}

#[test]
fn large_transfers_arrive_intact() {
    let mut stack = stack();
    let listener = stack.tcp_listen(80, &ListenOptions::default()).expect("listen");
    let (client, server) = connect(&mut stack, &listener);
    let data = pattern(200_000);
    assert!(transfer(&mut stack, &server, &client, &data) == data, "bytes differ");
}

#[test]
fn zero_copy_reads_and_writes_handle_buffer_wraparound() {
    let mut stack = stack();
    let options = ListenOptions { rx_buffer: 1000, tx_buffer: 1000, ..ListenOptions::default() };
    let listener = stack.tcp_listen(81, &options).expect("listen");
    let (client, server) = connect(&mut stack, &listener);
    let data = pattern(10_000);
    let (mut sent, mut received) = (0, Vec::new());
    run_until(&mut stack, 100_000, |s| {
        sent += s
            .tcp_send_with(&server, |space| {
                let n = space.len().min(data.len() - sent).min(333);
                space[..n].copy_from_slice(&data[sent..sent + n]);
                n
            })
            .expect("send");
        s.tcp_recv_with(&client, |bytes| {
            // Take a little less than offered, so reads straddle the wrap point in odd ways.
            let n = bytes.len().saturating_sub(1).max(bytes.len().min(1));
            received.extend_from_slice(&bytes[..n]);
            n
        })
        .expect("recv");
        received.len() == data.len()
    });
    assert!(received == data, "bytes differ");
}

#[test]
fn the_pool_bounds_connections_and_refuses_the_rest() {
    let mut stack = stack();
    let options = ListenOptions { max_connections: 2, ..ListenOptions::default() };
    let listener = stack.tcp_listen(8080, &options).expect("listen");
    let (_c1, _s1) = connect(&mut stack, &listener);
    let (_c2, _s2) = connect(&mut stack, &listener);
    let third = stack.tcp_connect((HOME, 8080), &ConnectOptions::default()).expect("connect");
    run_until(&mut stack, 1000, |s| s.tcp_state(&third) == StreamState::Closed);
    assert!(stack.tcp_accept(&listener).is_none());
    assert_eq!(stack.tcp_connections(&listener), 2);
}

#[test]
fn a_burst_of_connection_attempts_in_one_poll_fills_the_growing_pool() {
    // The pool starts with one listening socket and grows between frames: sixteen SYNs that
    // arrive in the same poll must all be accepted, and the seventeenth refused.
    let mut stack = stack();
    let options = ListenOptions { max_connections: 16, ..ListenOptions::default() };
    let listener = stack.tcp_listen(8080, &options).expect("listen");
    let clients: Vec<TcpStream> =
        (0..17).map(|_| stack.tcp_connect((HOME, 8080), &ConnectOptions::default()).expect("connect")).collect();
    let mut servers = Vec::new();
    run_until(&mut stack, 1000, |s| {
        while let Some(server) = s.tcp_accept(&listener) {
            servers.push(server);
        }
        let settled = clients.iter().filter(|c| matches!(s.tcp_state(c), StreamState::Open | StreamState::Closed));
        servers.len() == 16 && settled.count() == 17
    });
    let open = clients.iter().filter(|c| stack.tcp_state(c) == StreamState::Open).count();
    assert_eq!(open, 16, "every attempt within the pool is accepted");
    assert_eq!(stack.tcp_connections(&listener), 16);
}

#[test]
fn a_pool_of_one_serves_connections_one_after_another() {
    let mut stack = stack();
    let options = ListenOptions { max_connections: 1, ..ListenOptions::default() };
    let listener = stack.tcp_listen(8080, &options).expect("listen");
    for round in 0..20u8 {
        let (client, server) = connect(&mut stack, &listener);
        assert_eq!(transfer(&mut stack, &client, &server, &[round; 10]), [round; 10]);
        // The server closes first this time, so its side goes through TIME-WAIT.
        stack.tcp_close(server);
        run_until(&mut stack, 1000, |s| s.tcp_state(&client) == StreamState::PeerClosed);
        stack.tcp_close(client);
        run_until(&mut stack, 1000, |s| s.tcp_connections(&listener) == 0);
    }
}

#[test]
fn aborted_streams_reset_the_peer() {
    let mut stack = stack();
    let listener = stack.tcp_listen(8080, &ListenOptions::default()).expect("listen");
    let (client, server) = connect(&mut stack, &listener);
    stack.tcp_abort(server);
    run_until(&mut stack, 1000, |s| s.tcp_state(&client) == StreamState::Closed);
    assert_eq!(stack.tcp_send(&client, b"x"), Err(TcpError::Closed));
    run_until(&mut stack, 1000, |s| s.tcp_connections(&listener) == 0);
}

#[test]
fn silent_peers_time_out_in_simulated_time() {
    let mut stack = stack_on(FaultInjector::new(Loopback::new(Medium::Ethernet), 3));
    let options = ListenOptions {
        timeout: Some(Duration::from_secs(30)),
        keep_alive: Some(Duration::from_secs(10)),
        ..ListenOptions::default()
    };
    let listener = stack.tcp_listen(8080, &options).expect("listen");
    // The client side never gives up (smoltcp does not count a keep-alive as hearing from the
    // peer, so a client with a timeout would time out first).
    let client = stack.tcp_connect((HOME, 8080), &ConnectOptions { timeout: None, ..ConnectOptions::default() });
    let client = client.expect("connect");
    let mut server = None;
    run_until(&mut stack, 1000, |s| {
        server = server.take().or_else(|| s.tcp_accept(&listener));
        server.is_some() && s.tcp_state(&client) == StreamState::Open
    });
    let server = server.expect("accepted");
    // A live peer, however quiet, is not timed out while it answers the keep-alives.
    let start = stack.now();
    run_until(&mut stack, 100_000, |s| s.now() - start > Duration::from_secs(120));
    assert_eq!(stack.tcp_state(&server), StreamState::Open);

    // Now the wire goes dead: the server hears nothing more and must give up after 30 s.
    stack.platform_mut().device_mut().set_drop_chance(100);
    let _ = stack.tcp_send(&server, b"are you there?");
    let start = stack.now();
    run_until(&mut stack, 100_000, |s| s.tcp_state(&server) == StreamState::Closed);
    let waited = stack.now() - start;
    // The timeout counts from the last segment heard, at most one keep-alive interval earlier.
    assert!(waited >= Duration::from_secs(20) && waited <= Duration::from_secs(30), "timed out after {waited}");
    stack.tcp_close(server);
    stack.tcp_abort(client);
    run_until(&mut stack, 1000, |s| s.tcp_connections(&listener) == 0);
}

#[test]
fn lossy_links_still_deliver_everything_in_order() {
    for seed in [1, 7, 42] {
        let mut injector = FaultInjector::new(Loopback::new(Medium::Ethernet), seed);
        injector.set_drop_chance(10);
        let mut stack = stack_on(injector);
        let listener = stack.tcp_listen(8080, &ListenOptions::default()).expect("listen");
        let (client, server) = connect(&mut stack, &listener);
        let data = pattern(50_000);
        assert!(transfer(&mut stack, &client, &server, &data) == data, "seed {seed}: bytes differ");
    }
}

#[test]
fn udp_datagrams_go_both_ways() {
    let mut stack = stack();
    let a = stack.udp_bind(5000, &UdpOptions::default()).expect("bind");
    let b = stack.udp_bind(5001, &UdpOptions::default()).expect("bind");
    stack.udp_send(&a, (HOME, 5001), b"ping").expect("send");
    let mut buf = [0u8; 64];
    let mut got = None;
    run_until(&mut stack, 100, |s| {
        got = s.udp_recv(&b, &mut buf).expect("recv");
        got.is_some()
    });
    assert_eq!(got, Some((4, (HOME, 5000))));
    assert_eq!(&buf[..4], b"ping");

    stack.udp_send(&b, (HOME, 5000), &[7; 100]).expect("send");
    let mut small = [0u8; 10];
    let mut result = Ok(None);
    run_until(&mut stack, 100, |s| {
        result = s.udp_recv(&a, &mut small);
        result != Ok(None)
    });
    assert_eq!(result, Err(UdpError::Truncated));
    assert_eq!(stack.udp_send(&a, (HOME, 0), b"x"), Err(UdpError::Unaddressable));
    assert_eq!(stack.udp_send(&a, (HOME, 9), &[0; 20_000]), Err(UdpError::TooLarge));
}

#[test]
fn handles_from_another_stack_are_refused() {
    let mut one = stack();
    let mut two = stack();
    let listener = one.tcp_listen(8080, &ListenOptions::default()).expect("listen");
    assert!(two.tcp_accept(&listener).is_none());
    let (client, _server) = connect(&mut one, &listener);
    assert_eq!(two.tcp_send(&client, b"x"), Err(TcpError::WrongStack));
    assert_eq!(two.tcp_state(&client), StreamState::Closed);
    let udp = one.udp_bind(53, &UdpOptions::default()).expect("bind");
    assert_eq!(two.udp_send(&udp, (HOME, 53), b"x"), Err(UdpError::WrongStack));
}

#[test]
fn bad_listen_requests_are_refused() {
    let mut stack = stack();
    assert_eq!(stack.tcp_listen(0, &ListenOptions::default()).err(), Some(ListenError::PortZero));
    let zero = ListenOptions { max_connections: 0, ..ListenOptions::default() };
    assert_eq!(stack.tcp_listen(80, &zero).err(), Some(ListenError::InvalidOptions));
    let _listener = stack.tcp_listen(80, &ListenOptions::default()).expect("listen");
    assert_eq!(stack.tcp_listen(80, &ListenOptions::default()).err(), Some(ListenError::InUse));
}

#[test]
fn an_idle_stack_has_no_deadline() {
    let mut stack = stack();
    let _listener = stack.tcp_listen(80, &ListenOptions::default()).expect("listen");
    stack.poll();
    assert_eq!(stack.poll_at(), None, "an idle stack must let the machine sleep until a frame arrives");
}
