//! The `cache` appliance's library: what may be cached and for how long ([`policy`]), and the
//! bounded store ([`store`]). No I/O and no clock of its own: times are milliseconds the caller
//! passes in, so the tests run on the host. The appliance (`src/proxy.rs`) joins them to the
//! network.
#![cfg_attr(target_os = "none", no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod policy;
pub mod store;
