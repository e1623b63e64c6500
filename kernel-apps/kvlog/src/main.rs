//! The `kvlog` appliance: the log of the `kvlog` library served over HTTP/1.1 on port 8080, kept
//! on the first virtio-blk disk. See `docs/appliances.md` for the API and the crate docs of the
//! library for the on-disk format and the durability guarantee.
//!
//! Exit statuses: 2 bad boot arguments, 3 no network device, 4 no disk, 5 the disk holds no
//! usable log (foreign data, unknown version, too small, read errors). The service itself never
//! exits.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

#[cfg(target_os = "none")]
mod server;

/// The appliance runs only on the bare-metal targets; on the host this binary just says so.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "kvlog is an appliance: build it with `cargo xtask image build kvlog`, run it with `cargo xtask run kvlog`"
    );
    std::process::exit(2);
}
