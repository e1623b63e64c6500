//! The `cache` appliance: an HTTP/1.1 caching reverse proxy for one origin. See `src/proxy.rs`
//! and docs/appliances.md.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

#[cfg(target_os = "none")]
mod proxy;

/// The appliance runs only on the bare-metal targets; on the host this binary just says so.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "cache is an appliance: build it with `cargo xtask image build cache`, run it with `cargo xtask run cache`"
    );
    std::process::exit(2);
}
