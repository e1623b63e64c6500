//! A sans-IO MQTT 3.1.1 codec for the server side: the protocol half of the `telemetry` appliance.
//!
//! It turns the bytes a client sent into [`Packet`]s ([`decode()`]) and builds the server's answers
//! ([`encode`]). It never touches a socket or a clock; the appliance owns I/O, keep-alive timers
//! and sessions. `no_std` + `alloc`, no dependencies, no `unsafe`; its tests run on the host.
//!
//! # Layers
//! - [`mod@decode`]: the fixed header, the remaining length (checked against the caller's limit before
//!   a byte of the body is looked at) and every client-to-server packet of the subset.
//! - [`encode`]: CONNACK, PUBACK, SUBACK, UNSUBACK, PINGRESP and PUBLISH (QoS 0, to subscribers).
//! - [`topic`]: topic names and filters (`+`, `#`), validated, and matching.
//!
//! # Supported
//! CONNECT (protocol level 4; will, user name and password parsed and reported), PUBLISH QoS 0
//! and 1, PUBACK, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT.
//!
//! # Not supported
//! - QoS 2 (PUBLISH with QoS 2, PUBREC, PUBREL, PUBCOMP): [`DecodeError::Unsupported`]; the
//!   server closes the connection, as the specification allows for what it does not implement.
//! - MQTT 3.1 (`MQIsdp`) and 5.0: a CONNECT with another level decodes (so the server can answer
//!   return code 1, "unacceptable protocol version"); another protocol name is malformed.
//!
//! # Guarantees
//! - **Never panics on any input**, whatever its split into reads; property tests and a fuzz
//!   target (`fuzz/`) check this.
//! - **Limits before work:** [`decode()`] refuses a packet whose remaining length exceeds the limit
//!   as soon as the length field is complete, so a client cannot make the server buffer more.
//! - Decoded packets borrow from the input: nothing is copied.
#![cfg_attr(target_os = "none", no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod decode;
pub mod encode;
pub mod topic;

pub use decode::{Connect, DecodeError, Packet, Publish, QoS, Subscribe, Unsubscribe, Will, decode};
