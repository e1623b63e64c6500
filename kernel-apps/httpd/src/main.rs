//! `httpd`: serves the static site in its image over HTTP/1.1 on port 8080, plus `GET /healthz`.
//!
//! The site is the image's data part (the manifest's `data = "site"`), which the runtime hands
//! over as a bundle of files; `/` is `/index.html`. HTTP itself (parsing, keep-alive,
//! pipelining, status codes, content types) is the `http1` crate's, joined to it in [`site`];
//! the event loop and its policy on resources are `net::serve`'s:
//!
//! - at most [`MAX_CONNECTIONS`] connections at once; further attempts are refused (TCP reset);
//! - a request head is at most `http1::MAX_HEAD_LEN` bytes (431 beyond);
//! - a kept-alive connection idle for the timeout is closed; a request that has begun must be
//!   complete within the timeout (else 408 and close); a client that reads nothing for the
//!   timeout while responses wait is cut off. The timeout is 10 s, or `timeout=SECONDS`;
//! - a peer that goes silent in the middle of TCP (half-open, vanished) is aborted by the stack
//!   after 30 s.
//!
//! Boot arguments: `ip=A.B.C.D/N` and `gw=A.B.C.D` for a static address (DHCP otherwise),
//! `timeout=SECONDS`. The console says `httpd: listening on http://ADDRESS:8080/` once the
//! address is known; nothing is printed per request (console output is slow on x86_64).
//!
//! Exit statuses: 2 bad boot arguments, 3 no network device. The service itself never exits.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

mod site;

use alloc::string::String;

use net::{
    Duration, IpConfig, Net,
    serve::{ServeOptions, Server},
};
use runtime::{Context, ExitCode, println};

runtime::entry!(main);

/// The connection pool: each costs its TCP buffers and up to `http1::MAX_HEAD_LEN` of input.
const MAX_CONNECTIONS: usize = 64;

/// Port 8080 (the manifest's `[[listen]]`). The receive buffer (and window) holds a few
/// pipelined requests (`http1` keeps the request being parsed itself, so a head may be larger);
/// the site's files stream through the transmit buffer. Both are small because each
/// connection's buffers are allocated and zeroed when the pool first needs them, and zeroing
/// memory is what time goes to where the guest is emulated instruction by instruction.
const OPTIONS: ServeOptions = ServeOptions {
    max_connections: MAX_CONNECTIONS,
    rx_buffer: 2048,
    tx_buffer: 4096,
    ..ServeOptions::new("httpd", "http", 8080)
};

const BAD_ARGUMENTS: ExitCode = ExitCode(2);
const NO_NETWORK: ExitCode = ExitCode(3);

fn main(ctx: &mut Context) -> ExitCode {
    let timeout = match timeout_arg(ctx.args(), OPTIONS.timeout) {
        Ok(timeout) => timeout,
        Err(arg) => {
            println!("httpd: boot argument {arg:?}: expected timeout=SECONDS, from 1 to 3600");
            return BAD_ARGUMENTS;
        }
    };
    let config = match IpConfig::from_args(ctx.args()) {
        Ok(config) => config,
        Err(error) => {
            println!("httpd: {error}");
            return BAD_ARGUMENTS;
        }
    };
    let site = site::load(ctx);
    let net = match Net::open(config) {
        Ok(net) => net,
        Err(error) => {
            println!("httpd: {error}");
            return NO_NETWORK;
        }
    };
    if !net.has_interrupts() {
        println!("httpd: no device interrupts on this machine: polling, which keeps a CPU busy");
    }
    match Server::tcp(net, &ServeOptions { timeout, ..OPTIONS }, site::Site(site)) {
        Ok(server) => server.run(),
        Err(error) => {
            // Unreachable with the constants above; a clear message beats a panic all the same.
            println!("httpd: cannot listen on port {}: {error}", OPTIONS.port);
            NO_NETWORK
        }
    }
}

/// `timeout=SECONDS` from the boot arguments (the last one wins), or `default`.
fn timeout_arg(args: &[String], default: Duration) -> Result<Duration, &str> {
    let mut timeout = default;
    for arg in args {
        if let Some(value) = arg.strip_prefix("timeout=") {
            let seconds: u64 = value.parse().map_err(|_| arg.as_str())?;
            if !(1..=3600).contains(&seconds) {
                return Err(arg);
            }
            timeout = Duration::from_secs(seconds);
        }
    }
    Ok(timeout)
}
