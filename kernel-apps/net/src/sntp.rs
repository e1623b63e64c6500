//! SNTP (RFC 4330): wall-clock time from a server, for machines without a real-time clock (the
//! Raspberry Pis) or with a coarse one.
//!
//! The client has no wall clock of its own, so it measures the exchange on the monotonic clock:
//! the server's transmit time, plus half the round trip less the server's own holding time, is the
//! time at the reply's arrival, give or take half the round trip plus the server's stated root
//! delay and dispersion. The origin timestamp of each request is a counter, not a time: a reply
//! must echo it (which defeats stale and spoofed-without-seeing replies), come from the server
//! asked, and say it is synchronised (leap indicator not 3, stratum 1 to 15).
//!
//! Use it from the event loop: [`Sntp::poll`] after each stack poll (it sends when a request is
//! due and reads replies), [`Sntp::deadline`] into [`Stack::wait`]. On the bare-metal targets a
//! good reply also sets the runtime's wall clock (`runtime::wallclock`, source `sntp`).
//!
//! Not supported: NTP authentication, broadcast/manycast, choosing among several servers.

use core::fmt;
use core::time::Duration as StdDuration;

use crate::{Duration, Endpoint, Instant, Platform, Stack, UdpError, UdpOptions, UdpSocket};

/// The UDP port of (S)NTP servers.
pub const PORT: u16 = 123;
/// The local port the client sends from.
pub const CLIENT_PORT: u16 = 1123;
/// The length of an SNTP message without extensions.
pub const MESSAGE_LEN: usize = 48;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_TO_UNIX: u64 = 2_208_988_800;
/// How long to wait for a reply before asking again, and how many times to ask.
const RETRY_AFTER: Duration = Duration::from_millis(1000);
/// How many requests the client sends before it gives up.
pub const MAX_TRIES: u32 = 5;

/// Why a reply was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// Shorter than [`MESSAGE_LEN`].
    Short,
    /// Not a server's reply (mode 4) of version 3 or 4.
    NotAReply,
    /// The origin timestamp is not the one sent: stale, or not for this request.
    NotOurs,
    /// The server says it is not synchronised (leap indicator 3, stratum 0 or above 15).
    Unsynchronised,
    /// The server's times are impossible (receive after transmit, before 1970).
    Nonsense,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyError::Short => "shorter than an SNTP message",
            ReplyError::NotAReply => "not an SNTP server reply (mode 4, version 3 or 4)",
            ReplyError::NotOurs => "its origin timestamp is not the request's",
            ReplyError::Unsynchronised => "the server is not synchronised",
            ReplyError::Nonsense => "its timestamps are impossible",
        })
    }
}

/// The request for origin timestamp `origin`: version 4, mode 3 (client).
pub fn request(origin: u64) -> [u8; MESSAGE_LEN] {
    let mut message = [0u8; MESSAGE_LEN];
    message[0] = (4 << 3) | 3;
    // The transmit timestamp is what a server copies into its reply's origin timestamp.
    message[40..48].copy_from_slice(&origin.to_be_bytes());
    message
}

/// What a valid reply says, in the client's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The server's receive time, since the Unix epoch.
    pub received: StdDuration,
    /// The server's transmit time, since the Unix epoch.
    pub transmitted: StdDuration,
    /// The server's root delay plus root dispersion: its own distance from true time.
    pub root_distance: StdDuration,
}

/// Reads a reply to the request with origin timestamp `origin`.
pub fn parse_reply(bytes: &[u8], origin: u64) -> Result<Reply, ReplyError> {
    let message: &[u8; MESSAGE_LEN] =
        bytes.get(..MESSAGE_LEN).and_then(|m| m.try_into().ok()).ok_or(ReplyError::Short)?;
    let (leap, version, mode) = (message[0] >> 6, (message[0] >> 3) & 7, message[0] & 7);
    if mode != 4 || !(3..=4).contains(&version) {
        return Err(ReplyError::NotAReply);
    }
    let u32_at = |at: usize| u32::from_be_bytes([message[at], message[at + 1], message[at + 2], message[at + 3]]);
    let u64_at = |at: usize| (u64::from(u32_at(at)) << 32) | u64::from(u32_at(at + 4));
    if u64_at(24) != origin {
        return Err(ReplyError::NotOurs);
    }
    let stratum = message[1];
    if leap == 3 || stratum == 0 || stratum > 15 {
        return Err(ReplyError::Unsynchronised);
    }
    let (received, transmitted) = (unix_time(u64_at(32)), unix_time(u64_at(40)));
    let (Some(received), Some(transmitted)) = (received, transmitted) else {
        return Err(ReplyError::Nonsense);
    };
    if received > transmitted {
        return Err(ReplyError::Nonsense);
    }
    // Root delay and dispersion are 16.16 fixed-point seconds.
    let short = |value: u32| StdDuration::from_nanos((u64::from(value) * 1_000_000_000) >> 16);
    Ok(Reply { received, transmitted, root_distance: short(u32_at(4)) + short(u32_at(8)) })
}

/// An NTP timestamp (seconds since 1900, 32.32 fixed point) as time since the Unix epoch; `None`
/// before 1970. (Era 0 only: good until 2036, when the seconds wrap.)
fn unix_time(ntp: u64) -> Option<StdDuration> {
    let seconds = (ntp >> 32).checked_sub(NTP_TO_UNIX)?;
    let nanos = ((ntp & 0xffff_ffff) * 1_000_000_000) >> 32;
    Some(StdDuration::new(seconds, nanos as u32))
}

/// The wall-clock time an exchange measured: `unix` at monotonic time `at`, give or take
/// `uncertainty`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measured {
    /// Time since the Unix epoch at `at`.
    pub unix: StdDuration,
    /// The monotonic time the reply arrived.
    pub at: Instant,
    /// How far `unix` may be from the true time.
    pub uncertainty: StdDuration,
}

/// The time when a reply arrived at `arrived`, for a request sent at `sent` (both monotonic).
pub fn measure(reply: &Reply, sent: Instant, arrived: Instant) -> Measured {
    let round_trip = StdDuration::from_micros((arrived - sent).total_micros());
    let held = reply.transmitted - reply.received;
    let network = round_trip.saturating_sub(held);
    Measured { unix: reply.transmitted + network / 2, at: arrived, uncertainty: network / 2 + reply.root_distance }
}

/// The client's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The next request leaves at this time.
    SendAt(Instant),
    /// A request with this origin went out at this time.
    Waiting { origin: u64, sent: Instant },
    /// Done: a reply was taken, or every try went unanswered.
    Done,
}

/// An SNTP client asking one server until it gets one good reply (or [`MAX_TRIES`] go unanswered).
#[derive(Debug)]
pub struct Sntp {
    server: Endpoint,
    socket: UdpSocket,
    state: State,
    tries: u32,
    result: Option<Measured>,
}

impl Sntp {
    /// A client of `server`, bound to [`CLIENT_PORT`]; the first request leaves at the next
    /// [`Sntp::poll`].
    pub fn new<P: Platform>(stack: &mut Stack<P>, server: Endpoint) -> Result<Sntp, crate::BindError> {
        let options = UdpOptions { rx_packets: 4, rx_bytes: 4 * 128, tx_packets: 2, tx_bytes: 2 * 128 };
        let socket = stack.udp_bind(CLIENT_PORT, &options)?;
        Ok(Sntp { server, socket, state: State::SendAt(stack.now()), tries: 0, result: None })
    }

    /// Sends a request when one is due and takes the server's reply; returns the measured time
    /// once, when a good reply arrives (and, on the bare-metal targets, sets the runtime's wall
    /// clock with it). Replies that fail [`parse_reply`]'s checks, or come from elsewhere, are
    /// dropped.
    pub fn poll<P: Platform>(&mut self, stack: &mut Stack<P>) -> Option<Measured> {
        let mut buf = [0u8; 128];
        let mut measured = None;
        while let Ok(Some((len, from))) = stack.udp_recv(&self.socket, &mut buf) {
            let State::Waiting { origin, sent } = self.state else { continue };
            if from != self.server {
                continue;
            }
            if let Ok(reply) = parse_reply(buf.get(..len).unwrap_or_default(), origin) {
                let result = measure(&reply, sent, stack.now());
                self.state = State::Done;
                self.result = Some(result);
                measured = Some(result);
            }
        }
        let now = stack.now();
        let due = match self.state {
            State::SendAt(at) => at <= now,
            State::Waiting { sent, .. } => sent + RETRY_AFTER <= now,
            State::Done => false,
        };
        if due {
            if self.tries >= MAX_TRIES {
                self.state = State::Done;
            } else {
                self.tries += 1;
                // A counter the server echoes; the monotonic time keeps it from repeating a
                // previous boot's origin on the first try.
                let origin = (now.total_micros() as u64) << 8 | u64::from(self.tries);
                match stack.udp_send(&self.socket, self.server, &request(origin)) {
                    Ok(()) => self.state = State::Waiting { origin, sent: now },
                    // No address or route yet (DHCP): try again shortly.
                    Err(UdpError::Unaddressable | UdpError::QueueFull) => {
                        self.state = State::SendAt(now + Duration::from_millis(100));
                    }
                    Err(_) => self.state = State::Done,
                }
            }
        }
        #[cfg(target_os = "none")]
        if let Some(m) = measured {
            runtime::wallclock::set(runtime::wallclock::Sample {
                unix: m.unix,
                monotonic: StdDuration::from_micros(u64::try_from(m.at.total_micros()).unwrap_or(0)),
                uncertainty: m.uncertainty,
                source: runtime::wallclock::Source::Sntp,
            });
        }
        measured
    }

    /// When [`Sntp::poll`] next needs to run (for [`Stack::wait`]); `None` once done.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::SendAt(at) => Some(at),
            State::Waiting { sent, .. } => Some(sent + RETRY_AFTER),
            State::Done => None,
        }
    }

    /// Whether the client has stopped: it took a reply, or no server answered.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The time measured, if a reply was taken.
    pub fn result(&self) -> Option<Measured> {
        self.result
    }

    /// Frees the client's socket.
    pub fn close<P: Platform>(self, stack: &mut Stack<P>) {
        stack.udp_close(self.socket);
    }
}

/// The `ntp=A.B.C.D[:PORT]` boot argument, if present: the SNTP server to ask.
pub fn server_from_args<S: AsRef<str>>(args: &[S]) -> Result<Option<Endpoint>, crate::ConfigError> {
    let mut server = None;
    for arg in args {
        let arg = arg.as_ref();
        let Some(value) = arg.strip_prefix("ntp=") else { continue };
        let error = || crate::ConfigError {
            arg: alloc::string::ToString::to_string(arg),
            problem: "expected ntp=A.B.C.D or ntp=A.B.C.D:PORT (an SNTP server's IPv4 address)",
        };
        let (address, port) = match value.split_once(':') {
            Some((address, port)) => (address, port.parse::<u16>().map_err(|_| error())?),
            None => (value, PORT),
        };
        let address = address.parse().map_err(|_| error())?;
        if port == 0 {
            return Err(error());
        }
        server = Some((address, port));
    }
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ntp(unix: StdDuration) -> u64 {
        ((unix.as_secs() + NTP_TO_UNIX) << 32) | ((u64::from(unix.subsec_nanos()) << 32) / 1_000_000_000)
    }

    fn reply(origin: u64, received: StdDuration, transmitted: StdDuration) -> [u8; MESSAGE_LEN] {
        let mut m = [0u8; MESSAGE_LEN];
        m[0] = (4 << 3) | 4;
        m[1] = 2;
        m[4..8].copy_from_slice(&(1u32 << 12).to_be_bytes()); // root delay 1/16 s
        m[24..32].copy_from_slice(&origin.to_be_bytes());
        m[32..40].copy_from_slice(&ntp(received).to_be_bytes());
        m[40..48].copy_from_slice(&ntp(transmitted).to_be_bytes());
        m
    }

    #[test]
    fn requests_are_client_mode_and_carry_the_origin() {
        let r = request(0x0102_0304_0506_0708);
        assert_eq!(r[0], 0x23);
        assert_eq!(&r[40..48], &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn a_good_reply_measures_the_time_at_arrival() {
        let t = StdDuration::from_secs(1_800_000_000);
        let held = StdDuration::from_millis(2);
        let parsed = parse_reply(&reply(42, t, t + held), 42).expect("valid");
        assert_eq!(parsed.root_distance, StdDuration::from_millis(62) + StdDuration::from_micros(500));
        // Sent at 10 s, arrived 22 ms later: 20 ms on the network, 10 ms each way.
        let m = measure(&parsed, Instant::from_millis(10_000), Instant::from_millis(10_022));
        let expected = t + held + StdDuration::from_millis(10);
        assert!(m.unix.abs_diff(expected) < StdDuration::from_micros(1), "{:?}", m.unix);
        assert!(m.uncertainty.abs_diff(StdDuration::from_micros(72_500)) < StdDuration::from_micros(1));
        assert_eq!(m.at, Instant::from_millis(10_022));
    }

    #[test]
    fn bad_replies_are_refused() {
        let t = StdDuration::from_secs(1_800_000_000);
        let good = reply(7, t, t);
        assert_eq!(parse_reply(&good[..47], 7), Err(ReplyError::Short));
        assert_eq!(parse_reply(&good, 8), Err(ReplyError::NotOurs));
        let mut client = good;
        client[0] = (4 << 3) | 3;
        assert_eq!(parse_reply(&client, 7), Err(ReplyError::NotAReply));
        let mut unsynced = good;
        unsynced[0] |= 3 << 6;
        assert_eq!(parse_reply(&unsynced, 7), Err(ReplyError::Unsynchronised));
        let mut stratum0 = good;
        stratum0[1] = 0;
        assert_eq!(parse_reply(&stratum0, 7), Err(ReplyError::Unsynchronised));
        assert_eq!(parse_reply(&reply(7, t + StdDuration::from_secs(1), t), 7), Err(ReplyError::Nonsense));
        let mut before_1970 = good;
        before_1970[40..48].fill(0);
        assert_eq!(parse_reply(&before_1970, 7), Err(ReplyError::Nonsense));
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..64 {
            for fill in [0u8, 0x24, 0xff] {
                let _ = parse_reply(&alloc::vec![fill; len], 0);
            }
        }
    }

    #[test]
    fn server_argument() {
        let addr = |a, b, c, d| crate::Ipv4Address::new(a, b, c, d);
        assert_eq!(server_from_args(&["x"]).expect("valid"), None);
        assert_eq!(server_from_args(&["ntp=10.0.2.2"]).expect("valid"), Some((addr(10, 0, 2, 2), PORT)));
        assert_eq!(server_from_args(&["ntp=10.0.2.2:1230"]).expect("valid"), Some((addr(10, 0, 2, 2), 1230)));
        assert!(server_from_args(&["ntp=pool.ntp.org"]).is_err());
        assert!(server_from_args(&["ntp=10.0.2.2:0"]).is_err());
        assert!(server_from_args(&["ntp=10.0.2.2:x"]).is_err());
    }
}
