//! Server-to-client packets.
//!
//! Fixed-size answers are arrays; SUBACK and PUBLISH are appended to the caller's buffer, so the
//! server can batch them into one write.

use alloc::vec::Vec;

/// CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectReturn {
    /// Connection accepted.
    Accepted = 0,
    /// The protocol level is not 4.
    UnacceptableProtocolVersion = 1,
    /// The client identifier is not allowed.
    IdentifierRejected = 2,
    /// The server cannot take the connection now.
    ServerUnavailable = 3,
    /// Bad user name or password.
    BadCredentials = 4,
    /// Not authorised.
    NotAuthorized = 5,
}

/// SUBACK's code for a refused filter.
pub const SUBACK_FAILURE: u8 = 0x80;

/// CONNACK.
pub fn connack(session_present: bool, code: ConnectReturn) -> [u8; 4] {
    [0x20, 2, u8::from(session_present && code == ConnectReturn::Accepted), code as u8]
}

/// PUBACK for `packet_id`.
pub fn puback(packet_id: u16) -> [u8; 4] {
    let [high, low] = packet_id.to_be_bytes();
    [0x40, 2, high, low]
}

/// UNSUBACK for `packet_id`.
pub fn unsuback(packet_id: u16) -> [u8; 4] {
    let [high, low] = packet_id.to_be_bytes();
    [0xb0, 2, high, low]
}

/// PINGRESP.
pub const PINGRESP: [u8; 2] = [0xd0, 0];

/// Appends SUBACK for `packet_id` with one return code per filter (a granted QoS or
/// [`SUBACK_FAILURE`]).
pub fn suback(out: &mut Vec<u8>, packet_id: u16, codes: &[u8]) {
    out.push(0x90);
    push_remaining_length(out, 2 + codes.len());
    out.extend_from_slice(&packet_id.to_be_bytes());
    out.extend_from_slice(codes);
}

/// Appends a QoS 0 PUBLISH of `payload` on `topic` (at most 65,535 bytes of topic; longer topics
/// cannot be decoded in the first place). Returns false, appending nothing, if the topic is too long.
pub fn publish_qos0(out: &mut Vec<u8>, topic: &str, payload: &[u8]) -> bool {
    let Ok(topic_len) = u16::try_from(topic.len()) else { return false };
    out.push(0x30);
    push_remaining_length(out, 2 + topic.len() + payload.len());
    out.extend_from_slice(&topic_len.to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload);
    true
}

/// The largest remaining length MQTT can express (four bytes of seven bits).
pub const MAX_REMAINING: usize = 268_435_455;

/// Appends the variable-length encoding of `len` (at most [`MAX_REMAINING`]; larger values are
/// clamped, which callers avoid by bounding what they send).
pub fn push_remaining_length(out: &mut Vec<u8>, len: usize) {
    let mut value = len.min(MAX_REMAINING);
    loop {
        let mut byte = (value & 0x7f) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return;
        }
    }
}
