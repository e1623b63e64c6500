//! `net::serve` on the host: the shared event loop over smoltcp's Loopback with a simulated clock,
//! with a small line-echo service. Clients are sockets on the same stack, so every check drives
//! real TCP through the loop's pool, deadlines and closes, deterministically.

use net::{
    ConnectOptions, Duration, Endpoint, IpConfig, Ipv4Address, Ipv4Cidr, Stack, StreamState, TcpStream, UdpOptions,
    serve::{DatagramServer, DatagramService, ServeOptions, Server, Service, State},
    sim::Simulated,
};
use smoltcp::phy::{Loopback, Medium};

const HOME: Ipv4Address = Ipv4Address::new(127, 0, 0, 1);
const PORT: u16 = 7;

type Sim = Simulated<Loopback>;

fn stack() -> Stack<Sim> {
    let config = IpConfig::Static { address: Ipv4Cidr::new(HOME, 8), gateway: None };
    Stack::new(Simulated::new(Loopback::new(Medium::Ethernet)), [0x02, 0, 0, 0, 0, 1], config)
}

/// Echoes each line upper-cased; `quit` closes; a timeout in the middle of a line answers
/// `timeout`.
#[derive(Default)]
struct Lines {
    opened: usize,
    closed: usize,
}

#[derive(Default)]
struct Line {
    input: Vec<u8>,
    output: Vec<u8>,
    closing: bool,
}

impl Service for Lines {
    type Conn = Line;
    fn open(&mut self) -> Line {
        self.opened += 1;
        Line::default()
    }
    fn receive(&mut self, line: &mut Line, data: &[u8]) -> usize {
        // At most 64 bytes of a line may wait: the rest stays in the socket.
        let take = data.len().min(64 - line.input.len());
        line.input.extend_from_slice(&data[..take]);
        while let Some(end) = line.input.iter().position(|&b| b == b'\n') {
            let text: Vec<u8> = line.input.drain(..=end).collect();
            if text == b"quit\n" {
                line.closing = true;
                line.input.clear();
                return data.len();
            }
            line.output.extend(text.to_ascii_uppercase());
        }
        take
    }
    fn end_of_input(&mut self, line: &mut Line) {
        line.closing = true;
    }
    fn has_output(&self, line: &Line) -> bool {
        !line.output.is_empty()
    }
    fn send(&mut self, line: &mut Line, buf: &mut [u8]) -> usize {
        let n = buf.len().min(line.output.len());
        buf[..n].copy_from_slice(&line.output[..n]);
        line.output.drain(..n);
        n
    }
    fn state(&self, line: &Line) -> State {
        match (line.closing, line.input.is_empty() && line.output.is_empty()) {
            (true, _) => State::Closing,
            (false, true) => State::Idle,
            (false, false) => State::Busy,
        }
    }
    fn timeout(&mut self, line: &mut Line) {
        if !line.input.is_empty() {
            line.output.extend_from_slice(b"timeout\n");
        }
        line.closing = true;
    }
    fn closed(&mut self, _line: Line) {
        self.closed += 1;
    }
}

const OPTIONS: ServeOptions =
    ServeOptions { max_connections: 2, timeout: Duration::from_secs(10), ..ServeOptions::new("lines", "tcp", PORT) };

fn server() -> Server<Sim, Lines> {
    Server::tcp(stack(), &OPTIONS, Lines::default()).expect("listen")
}

/// Runs the loop (turn, then sleep until its deadline) until `done` holds.
fn run_until(server: &mut Server<Sim, Lines>, mut done: impl FnMut(&mut Server<Sim, Lines>) -> bool) {
    for _ in 0..10_000 {
        let deadline = server.turn();
        if done(server) {
            return;
        }
        server.stack_mut().wait(deadline);
    }
    panic!("condition not reached (simulated time {})", server.stack_mut().now());
}

fn connect(server: &mut Server<Sim, Lines>) -> TcpStream {
    let client = server.stack_mut().tcp_connect((HOME, PORT), &ConnectOptions::default()).expect("connect");
    run_until(server, |s| s.stack_mut().tcp_state(&client) != StreamState::Connecting);
    client
}

/// Reads what has arrived on `client`.
fn read(server: &mut Server<Sim, Lines>, client: &TcpStream) -> Vec<u8> {
    let mut buf = [0; 256];
    let n = server.stack_mut().tcp_recv(client, &mut buf).unwrap_or(0);
    buf[..n].to_vec()
}

#[test]
fn lines_are_answered_and_quit_closes() {
    let mut server = server();
    let client = connect(&mut server);
    server.stack_mut().tcp_send(&client, b"hello\nwor").expect("send");
    let mut got = Vec::new();
    run_until(&mut server, |s| {
        got.extend(read(s, &client));
        got == b"HELLO\n"
    });
    server.stack_mut().tcp_send(&client, b"ld\nquit\n").expect("send");
    run_until(&mut server, |s| {
        got.extend(read(s, &client));
        s.stack_mut().tcp_state(&client) == StreamState::PeerClosed
    });
    assert_eq!(got, b"HELLO\nWORLD\n");
    assert_eq!((server.service().opened, server.service().closed), (1, 1));
}

#[test]
fn deadlines_close_idle_connections_and_time_out_slow_requests() {
    let mut server = server();
    let idle = connect(&mut server);
    let slow = connect(&mut server);
    let started = server.stack_mut().now();
    // The slow client trickles a line a byte a second: still cut off at its first byte + 10 s.
    let mut got = Vec::new();
    let mut next_byte = started;
    run_until(&mut server, |s| {
        let now = s.stack_mut().now();
        if now >= next_byte && s.stack_mut().tcp_state(&slow) == StreamState::Open {
            let _ = s.stack_mut().tcp_send(&slow, b"a");
            next_byte = now + Duration::from_secs(1);
        }
        got.extend(read(s, &slow));
        s.stack_mut().tcp_state(&slow) == StreamState::PeerClosed
    });
    let took = server.stack_mut().now() - started;
    assert_eq!(got, b"timeout\n");
    assert!(took >= Duration::from_secs(10) && took < Duration::from_secs(12), "the slow request took {took}");
    run_until(&mut server, |s| s.stack_mut().tcp_state(&idle) == StreamState::PeerClosed);
    assert_eq!(server.connections(), 0);
}

#[test]
fn the_pool_refuses_the_connection_beyond_its_bound_and_frees_slots() {
    let mut server = server();
    let first = connect(&mut server);
    let _second = connect(&mut server);
    let third = server.stack_mut().tcp_connect((HOME, PORT), &ConnectOptions::default()).expect("connect");
    run_until(&mut server, |s| s.stack_mut().tcp_state(&third) == StreamState::Closed);
    assert_eq!(server.connections(), 2);
    // A slot frees once a connection is done, and the next attempt is served.
    server.stack_mut().tcp_send(&first, b"quit\n").expect("send");
    run_until(&mut server, |s| s.connections() == 1);
    server.stack_mut().tcp_close(first);
    let closed_at = server.stack_mut().now();
    run_until(&mut server, |s| s.stack_mut().now() > closed_at + Duration::from_secs(1));
    let fourth = connect(&mut server);
    server.stack_mut().tcp_send(&fourth, b"again\n").expect("send");
    let mut got = Vec::new();
    run_until(&mut server, |s| {
        got.extend(read(s, &fourth));
        got == b"AGAIN\n"
    });
}

#[test]
fn a_peer_that_reads_nothing_is_reset() {
    let mut server = server();
    let client = connect(&mut server);
    // Far more answer than the buffers hold, never read: the loop resets after the timeout.
    let started = server.stack_mut().now();
    let mut sent = 0;
    run_until(&mut server, |s| {
        if sent < 200_000 {
            sent += s.stack_mut().tcp_send(&client, &b"0123456789abcdef\n".repeat(64)).unwrap_or(0);
        }
        s.connections() == 0
    });
    let took = server.stack_mut().now() - started;
    assert!(took >= Duration::from_secs(10), "reset after {took}, before the timeout");
    assert_eq!(server.service().closed, 1);
}

struct Echo;

impl DatagramService for Echo {
    fn datagram(&mut self, _from: Endpoint, data: &[u8], reply: &mut Vec<u8>) {
        reply.extend_from_slice(data);
        reply.reverse();
    }
}

#[test]
fn datagrams_are_answered_to_their_sender() {
    let mut server = DatagramServer::udp(stack(), &ServeOptions::new("echo", "udp", PORT), Echo).expect("bind");
    let client = server.stack_mut().udp_bind(5000, &UdpOptions::default()).expect("bind");
    server.stack_mut().udp_send(&client, (HOME, PORT), b"ping").expect("send");
    let mut buf = [0; 16];
    for _ in 0..100 {
        server.turn();
        if let Ok(Some((n, from))) = server.stack_mut().udp_recv(&client, &mut buf) {
            assert_eq!((&buf[..n], from), (&b"gnip"[..], (HOME, PORT)));
            return;
        }
        server.stack_mut().wait(None);
    }
    panic!("no reply");
}
