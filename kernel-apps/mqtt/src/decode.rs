//! Client-to-server packets, decoded in place from a buffer that may hold a partial packet.
//!
//! [`decode`] returns `Ok(None)` while the buffer holds less than one whole packet (read more),
//! `Ok(Some((packet, used)))` with the bytes it took, or an error after which the server closes
//! the connection (MQTT 3.1.1 §4.8: a protocol violation ends the network connection).

use alloc::vec::Vec;
use core::fmt;

/// A quality of service the subset supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    /// At most once: no acknowledgement.
    AtMostOnce = 0,
    /// At least once: acknowledged with PUBACK.
    AtLeastOnce = 1,
}

/// A client-to-server packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// CONNECT: must be the first packet, and only once.
    Connect(Connect<'a>),
    /// PUBLISH from the client.
    Publish(Publish<'a>),
    /// PUBACK: the client acknowledges a QoS 1 PUBLISH the server sent.
    PubAck {
        /// The acknowledged packet identifier.
        packet_id: u16,
    },
    /// SUBSCRIBE.
    Subscribe(Subscribe<'a>),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe<'a>),
    /// PINGREQ: answer PINGRESP.
    PingReq,
    /// DISCONNECT: the client ends the session cleanly (its will is discarded).
    Disconnect,
}

/// A CONNECT packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect<'a> {
    /// The protocol level: 4 for MQTT 3.1.1. Others decode, so that the server can refuse them
    /// with return code 1.
    pub protocol_level: u8,
    /// Clean session requested.
    pub clean_session: bool,
    /// Keep-alive in seconds; 0 turns the mechanism off.
    pub keep_alive: u16,
    /// The client identifier; may be empty (the server then assigns one, with clean session).
    pub client_id: &'a str,
    /// The will message, if any.
    pub will: Option<Will<'a>>,
    /// The user name, if any.
    pub username: Option<&'a str>,
    /// The password, if any.
    pub password: Option<&'a [u8]>,
}

/// A will message announced in CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its payload.
    pub payload: &'a [u8],
    /// Its QoS (0–2 as sent).
    pub qos: u8,
    /// Its retain flag.
    pub retain: bool,
}

/// A PUBLISH packet from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish<'a> {
    /// The topic name (never a filter: wildcards are malformed here).
    pub topic: &'a str,
    /// Its QoS.
    pub qos: QoS,
    /// The packet identifier (QoS 1 only).
    pub packet_id: Option<u16>,
    /// The DUP flag: a redelivery.
    pub dup: bool,
    /// The RETAIN flag.
    pub retain: bool,
    /// The application message.
    pub payload: &'a [u8],
}

/// A SUBSCRIBE packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe<'a> {
    /// The packet identifier, echoed in SUBACK.
    pub packet_id: u16,
    /// Topic filters with the requested QoS (0–2 as sent). Filters are not validated here: the
    /// server answers an invalid one with the failure code 0x80 ([`crate::topic::valid_filter`]).
    pub filters: Vec<(&'a str, u8)>,
}

/// An UNSUBSCRIBE packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    /// The packet identifier, echoed in UNSUBACK.
    pub packet_id: u16,
    /// The topic filters to remove.
    pub filters: Vec<&'a str>,
}

/// Why bytes could not be decoded. Every one ends the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The remaining length exceeds the caller's limit (checked before the body is read).
    TooLarge {
        /// The length the client announced.
        remaining: usize,
    },
    /// The remaining length field runs past four bytes.
    BadRemainingLength,
    /// A packet type a client never sends (CONNACK, SUBACK…) or the reserved 0 and 15.
    BadType(u8),
    /// The fixed header's flags are wrong for the type (MQTT 3.1.1 §2.2.2).
    BadFlags(u8),
    /// QoS 2 or its packets, which the subset does not implement.
    Unsupported,
    /// The body does not follow the packet's grammar; the text says where.
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { remaining } => write!(f, "packet of {remaining} bytes is over the limit"),
            DecodeError::BadRemainingLength => f.write_str("remaining length longer than four bytes"),
            DecodeError::BadType(t) => write!(f, "packet type {t} is not one a client sends"),
            DecodeError::BadFlags(t) => write!(f, "wrong fixed-header flags for packet type {t}"),
            DecodeError::Unsupported => f.write_str("QoS 2 is not supported"),
            DecodeError::Malformed(what) => write!(f, "malformed packet: {what}"),
        }
    }
}

/// The remaining length at the start of `bytes` (after the first byte): `Ok(None)` if incomplete,
/// else the length and how many bytes encoded it.
pub fn remaining_length(bytes: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0usize;
    for (index, &byte) in bytes.iter().enumerate() {
        if index == 4 {
            return Err(DecodeError::BadRemainingLength);
        }
        value |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some((value, index + 1)));
        }
    }
    if bytes.len() >= 4 { Err(DecodeError::BadRemainingLength) } else { Ok(None) }
}

/// Decodes the first packet in `buf`, refusing one whose remaining length exceeds `max_remaining`.
pub fn decode(buf: &[u8], max_remaining: usize) -> Result<Option<(Packet<'_>, usize)>, DecodeError> {
    let Some((&first, rest)) = buf.split_first() else { return Ok(None) };
    let kind = first >> 4;
    let flags = first & 0x0f;
    check_type_and_flags(kind, flags)?;
    let Some((remaining, length_bytes)) = remaining_length(rest)? else { return Ok(None) };
    if remaining > max_remaining {
        return Err(DecodeError::TooLarge { remaining });
    }
    let total = 1 + length_bytes + remaining;
    let Some(body) = buf.get(1 + length_bytes..total) else { return Ok(None) };
    let packet = match kind {
        1 => Packet::Connect(connect(body)?),
        3 => Packet::Publish(publish(flags, body)?),
        4 => Packet::PubAck { packet_id: exact_packet_id(body)? },
        8 => Packet::Subscribe(subscribe(body)?),
        10 => Packet::Unsubscribe(unsubscribe(body)?),
        12 => empty(body, Packet::PingReq)?,
        14 => empty(body, Packet::Disconnect)?,
        other => return Err(DecodeError::BadType(other)),
    };
    Ok(Some((packet, total)))
}

fn check_type_and_flags(kind: u8, flags: u8) -> Result<(), DecodeError> {
    match kind {
        // PUBLISH's flags are its own; QoS 3 is malformed, QoS 2 unsupported.
        3 => match (flags >> 1) & 0b11 {
            3 => Err(DecodeError::BadFlags(kind)),
            2 => Err(DecodeError::Unsupported),
            0 if flags & 0b1000 != 0 => Err(DecodeError::BadFlags(kind)), // DUP on QoS 0 (§3.3.1.1)
            _ => Ok(()),
        },
        5 | 7 => Err(DecodeError::Unsupported),
        6 => Err(DecodeError::Unsupported),
        8 | 10 if flags == 0b0010 => Ok(()),
        1 | 4 | 12 | 14 if flags == 0 => Ok(()),
        1 | 4 | 8 | 10 | 12 | 14 => Err(DecodeError::BadFlags(kind)),
        other => Err(DecodeError::BadType(other)),
    }
}

/// Reads big-endian fields and length-prefixed strings from a packet body.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let (&byte, rest) = self.rest.split_first().ok_or(DecodeError::Malformed(what))?;
        self.rest = rest;
        Ok(byte)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let (bytes, rest) = self.rest.split_first_chunk::<2>().ok_or(DecodeError::Malformed(what))?;
        self.rest = rest;
        Ok(u16::from_be_bytes(*bytes))
    }

    fn binary(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16(what)?);
        if self.rest.len() < len {
            return Err(DecodeError::Malformed(what));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(bytes)
    }

    /// A UTF-8 string (§1.5.3): valid UTF-8 without U+0000.
    fn string(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let text = core::str::from_utf8(self.binary(what)?).map_err(|_| DecodeError::Malformed(what))?;
        if text.contains('\0') {
            return Err(DecodeError::Malformed(what));
        }
        Ok(text)
    }

    fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16("packet identifier")? {
            0 => Err(DecodeError::Malformed("packet identifier 0")),
            id => Ok(id),
        }
    }

    fn end(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.rest.is_empty() { Ok(()) } else { Err(DecodeError::Malformed(what)) }
    }
}

fn connect(body: &[u8]) -> Result<Connect<'_>, DecodeError> {
    let mut fields = Fields { rest: body };
    if fields.binary("protocol name")? != b"MQTT" {
        return Err(DecodeError::Malformed("protocol name is not MQTT"));
    }
    let protocol_level = fields.u8("protocol level")?;
    let flags = fields.u8("connect flags")?;
    if flags & 1 != 0 {
        return Err(DecodeError::Malformed("reserved connect flag set"));
    }
    let keep_alive = fields.u16("keep alive")?;
    let client_id = fields.string("client identifier")?;
    let has_will = flags & 0b100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b10_0000 != 0;
    if !has_will && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed("will flags without a will"));
    }
    if will_qos == 3 {
        return Err(DecodeError::Malformed("will QoS 3"));
    }
    let will = if has_will {
        let topic = fields.string("will topic")?;
        let payload = fields.binary("will message")?;
        Some(Will { topic, payload, qos: will_qos, retain: will_retain })
    } else {
        None
    };
    let has_username = flags & 0x80 != 0;
    let has_password = flags & 0x40 != 0;
    if has_password && !has_username {
        return Err(DecodeError::Malformed("password without a user name"));
    }
    let username = if has_username { Some(fields.string("user name")?) } else { None };
    let password = if has_password { Some(fields.binary("password")?) } else { None };
    fields.end("bytes after the connect payload")?;
    Ok(Connect { protocol_level, clean_session: flags & 0b10 != 0, keep_alive, client_id, will, username, password })
}

fn publish(flags: u8, body: &[u8]) -> Result<Publish<'_>, DecodeError> {
    let mut fields = Fields { rest: body };
    let topic = fields.string("topic name")?;
    if !crate::topic::valid_name(topic) {
        return Err(DecodeError::Malformed("topic name empty or with a wildcard"));
    }
    let qos = if (flags >> 1) & 0b11 == 1 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
    let packet_id = match qos {
        QoS::AtLeastOnce => Some(fields.packet_id()?),
        QoS::AtMostOnce => None,
    };
    Ok(Publish { topic, qos, packet_id, dup: flags & 0b1000 != 0, retain: flags & 1 != 0, payload: fields.rest })
}

fn exact_packet_id(body: &[u8]) -> Result<u16, DecodeError> {
    let mut fields = Fields { rest: body };
    let id = fields.packet_id()?;
    fields.end("bytes after the packet identifier")?;
    Ok(id)
}

fn subscribe(body: &[u8]) -> Result<Subscribe<'_>, DecodeError> {
    let mut fields = Fields { rest: body };
    let packet_id = fields.packet_id()?;
    let mut filters = Vec::new();
    while !fields.rest.is_empty() {
        let filter = fields.string("topic filter")?;
        let qos = fields.u8("requested QoS")?;
        if qos > 2 {
            return Err(DecodeError::Malformed("requested QoS over 2 or reserved bits set"));
        }
        filters.push((filter, qos));
    }
    if filters.is_empty() {
        return Err(DecodeError::Malformed("SUBSCRIBE without a topic filter"));
    }
    Ok(Subscribe { packet_id, filters })
}

fn unsubscribe(body: &[u8]) -> Result<Unsubscribe<'_>, DecodeError> {
    let mut fields = Fields { rest: body };
    let packet_id = fields.packet_id()?;
    let mut filters = Vec::new();
    while !fields.rest.is_empty() {
        filters.push(fields.string("topic filter")?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Malformed("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Unsubscribe { packet_id, filters })
}

fn empty<'a>(body: &[u8], packet: Packet<'a>) -> Result<Packet<'a>, DecodeError> {
    if body.is_empty() { Ok(packet) } else { Err(DecodeError::Malformed("PINGREQ or DISCONNECT with a body")) }
}
