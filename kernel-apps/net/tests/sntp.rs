//! The SNTP client against a server on the same simulated network (smoltcp over a loopback
//! device, simulated clock): the time it measures, and what it does when nobody answers.

use std::time::Duration as StdDuration;

use net::{
    Duration, IpConfig, Ipv4Address, Ipv4Cidr, Stack, UdpOptions, earliest,
    sim::Simulated,
    sntp::{self, Sntp},
};
use smoltcp::phy::{Loopback, Medium};

const HOME: Ipv4Address = Ipv4Address::new(127, 0, 0, 1);
/// The true time when the simulated clock reads zero.
const EPOCH_OFFSET: StdDuration = StdDuration::from_secs(1_800_000_000);

fn stack() -> Stack<Simulated<Loopback>> {
    let config = IpConfig::Static { address: Ipv4Cidr::new(HOME, 8), gateway: None };
    Stack::new(Simulated::new(Loopback::new(Medium::Ethernet)), [0x02, 0, 0, 0, 0, 1], config)
}

/// The true time at simulated time `now`, as an NTP timestamp.
fn ntp_now(now: net::Instant) -> u64 {
    let unix = EPOCH_OFFSET + StdDuration::from_micros(now.total_micros() as u64);
    ((unix.as_secs() + 2_208_988_800) << 32) | ((u64::from(unix.subsec_nanos()) << 32) / 1_000_000_000)
}

/// A server's reply to `request`, received and sent at `now`.
fn reply(request: &[u8], now: net::Instant) -> [u8; sntp::MESSAGE_LEN] {
    let mut m = [0u8; sntp::MESSAGE_LEN];
    m[0] = (4 << 3) | 4;
    m[1] = 1;
    m[24..32].copy_from_slice(&request[40..48]);
    m[32..40].copy_from_slice(&ntp_now(now).to_be_bytes());
    m[40..48].copy_from_slice(&ntp_now(now).to_be_bytes());
    m
}

#[test]
fn measures_the_servers_time_through_the_stack() {
    let mut stack = stack();
    let server = stack.udp_bind(sntp::PORT, &UdpOptions::default()).expect("bind the server");
    let mut client = Sntp::new(&mut stack, (HOME, sntp::PORT)).expect("bind the client");
    let mut buf = [0u8; 128];
    let mut measured = None;
    for _ in 0..100 {
        stack.poll();
        if let Some(m) = client.poll(&mut stack) {
            measured = Some(m);
            break;
        }
        while let Ok(Some((len, from))) = stack.udp_recv(&server, &mut buf) {
            let answer = reply(&buf[..len], stack.now());
            stack.udp_send(&server, from, &answer).expect("reply");
        }
        stack.wait(earliest(client.deadline(), Some(stack.now() + Duration::from_millis(1))));
    }
    let measured = measured.expect("the client measured the time");
    assert!(client.is_done());
    let truth = EPOCH_OFFSET + StdDuration::from_micros(measured.at.total_micros() as u64);
    assert!(
        measured.unix.abs_diff(truth) <= measured.uncertainty + StdDuration::from_millis(1),
        "{measured:?} vs {truth:?}"
    );
    assert!(measured.uncertainty < StdDuration::from_millis(50), "{measured:?}");
}

#[test]
fn gives_up_when_nobody_answers() {
    let mut stack = stack();
    let mut client = Sntp::new(&mut stack, (HOME, 4123)).expect("bind the client");
    for _ in 0..1000 {
        stack.poll();
        assert_eq!(client.poll(&mut stack), None);
        if client.is_done() {
            break;
        }
        stack.wait(client.deadline());
    }
    assert!(client.is_done() && client.result().is_none());
    // Five tries a second apart.
    assert!(stack.now().total_millis() >= 5000, "gave up at {}", stack.now());
    assert_eq!(client.deadline(), None);
}
