//! Host networking for tender instances: which addresses an instance gets ([`plan`]), and the tap
//! devices and network namespaces that carry its traffic ([`ip`]).
//!
//! Every instance has its own tap device and its own /30: the host end of the link is `.1`, the
//! guest `.2` (booted with `ip=<guest>/30 gw=<host>`). No bridge, no DHCP, no NAT: the host
//! reaches each guest by the route the /30 installs, and guests cannot reach each other at layer 2.
//!
//! The rack manager's tender launcher puts the taps in its own network namespace; the density
//! bench puts a thousand of them in a namespace it creates ([`ip::Netns`]) and starts each tender
//! inside it ([`ip::run_in`]).

pub mod ip;
pub mod plan;

pub use plan::{Link, Subnet};
