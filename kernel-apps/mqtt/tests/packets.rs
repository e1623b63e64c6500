//! The codec against hand-built packets (as mosquitto_pub and paho-mqtt send them), a malformed
//! corpus, and properties over arbitrary bytes.

use mqtt::{
    DecodeError, Packet, QoS, decode,
    encode::{self, ConnectReturn},
};

const LIMIT: usize = 4096;

fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    encode::push_remaining_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

fn string(text: &[u8]) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text);
    out
}

fn connect_body(flags: u8, keep_alive: u16, client_id: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend_from_slice(&[4, flags]);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend_from_slice(&string(client_id));
    body.extend_from_slice(rest);
    body
}

#[test]
fn connect_with_will_and_credentials() {
    let mut rest = string(b"status/dev1");
    rest.extend_from_slice(&string(b"gone"));
    rest.extend_from_slice(&string(b"user"));
    rest.extend_from_slice(&string(b"secret"));
    let bytes = frame(0x10, &connect_body(0b1110_1110, 60, b"dev1", &rest));
    let (packet, used) = decode(&bytes, LIMIT).expect("valid").expect("complete");
    assert_eq!(used, bytes.len());
    let Packet::Connect(connect) = packet else { panic!("{packet:?}") };
    assert_eq!((connect.protocol_level, connect.clean_session, connect.keep_alive), (4, true, 60));
    assert_eq!(connect.client_id, "dev1");
    let will = connect.will.expect("a will");
    assert_eq!((will.topic, will.payload, will.qos, will.retain), ("status/dev1", &b"gone"[..], 1, true));
    assert_eq!((connect.username, connect.password), (Some("user"), Some(&b"secret"[..])));
}

#[test]
fn publish_qos0_and_qos1_and_the_answers() {
    let mut body = string(b"sensors/temp/dev1");
    body.extend_from_slice(b"21.5");
    let bytes = frame(0x30, &body);
    let (packet, _) = decode(&bytes, LIMIT).expect("valid").expect("complete");
    let Packet::Publish(publish) = packet else { panic!() };
    assert_eq!(
        (publish.topic, publish.qos, publish.packet_id, publish.payload),
        ("sensors/temp/dev1", QoS::AtMostOnce, None, &b"21.5"[..])
    );

    let mut body = string(b"sensors/temp/dev1");
    body.extend_from_slice(&[0x12, 0x34]);
    body.extend_from_slice(b"-3");
    let bytes = frame(0x3b, &body); // DUP, QoS 1, RETAIN
    let (packet, _) = decode(&bytes, LIMIT).expect("valid").expect("complete");
    let Packet::Publish(publish) = packet else { panic!() };
    assert_eq!(
        (publish.qos, publish.packet_id, publish.dup, publish.retain),
        (QoS::AtLeastOnce, Some(0x1234), true, true)
    );
    assert_eq!(encode::puback(0x1234), [0x40, 2, 0x12, 0x34]);
    assert_eq!(encode::connack(false, ConnectReturn::Accepted), [0x20, 2, 0, 0]);
    assert_eq!(encode::connack(true, ConnectReturn::UnacceptableProtocolVersion), [0x20, 2, 0, 1]);
}

#[test]
fn subscribe_unsubscribe_ping_disconnect_puback() {
    let mut body = vec![0, 7];
    body.extend_from_slice(&string(b"sensors/+/dev1"));
    body.push(1);
    body.extend_from_slice(&string(b"sensors/#"));
    body.push(0);
    let bytes = frame(0x82, &body);
    let (packet, _) = decode(&bytes, LIMIT).expect("valid").expect("complete");
    let Packet::Subscribe(subscribe) = packet else { panic!() };
    assert_eq!(subscribe.packet_id, 7);
    assert_eq!(subscribe.filters, vec![("sensors/+/dev1", 1), ("sensors/#", 0)]);
    let mut suback = Vec::new();
    encode::suback(&mut suback, 7, &[0, encode::SUBACK_FAILURE]);
    assert_eq!(suback, [0x90, 4, 0, 7, 0, 0x80]);

    let mut body = vec![0, 8];
    body.extend_from_slice(&string(b"sensors/#"));
    let bytes = frame(0xa2, &body);
    let (packet, _) = decode(&bytes, LIMIT).expect("valid").expect("complete");
    assert_eq!(packet, Packet::Unsubscribe(mqtt::Unsubscribe { packet_id: 8, filters: vec!["sensors/#"] }));
    assert_eq!(encode::unsuback(8), [0xb0, 2, 0, 8]);

    assert_eq!(decode(&[0xc0, 0], LIMIT), Ok(Some((Packet::PingReq, 2))));
    assert_eq!(decode(&[0xe0, 0], LIMIT), Ok(Some((Packet::Disconnect, 2))));
    assert_eq!(decode(&[0x40, 2, 0, 9], LIMIT), Ok(Some((Packet::PubAck { packet_id: 9 }, 4))));
    assert_eq!(encode::PINGRESP, [0xd0, 0]);
}

#[test]
fn partial_packets_ask_for_more_and_two_packets_decode_one_at_a_time() {
    let mut bytes = vec![0xc0, 0, 0xe0, 0];
    assert_eq!(decode(&bytes, LIMIT), Ok(Some((Packet::PingReq, 2))));
    assert_eq!(decode(&bytes[2..], LIMIT), Ok(Some((Packet::Disconnect, 2))));
    let mut body = string(b"a/b");
    body.extend_from_slice(&[1; 300]);
    bytes = frame(0x30, &body);
    for cut in 0..bytes.len() {
        assert_eq!(decode(&bytes[..cut], LIMIT), Ok(None), "cut at {cut}");
    }
}

#[test]
fn the_limit_is_checked_before_the_body_arrives() {
    // A header announcing 200 MB, with no body at all.
    assert_eq!(decode(&[0x30, 0x80, 0x80, 0x80, 0x60], LIMIT), Err(DecodeError::TooLarge { remaining: 201_326_592 }));
    assert_eq!(decode(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], LIMIT), Err(DecodeError::BadRemainingLength));
    assert_eq!(decode(&[0x30, 0xff, 0xff, 0xff, 0xff], LIMIT), Err(DecodeError::BadRemainingLength));
    assert_eq!(decode(&[0x30, 0xff, 0xff], LIMIT), Ok(None));
}

/// The malformed corpus the boot tests also send to the appliance (`malformed_corpus`).
#[test]
fn the_malformed_corpus_is_refused() {
    for (name, bytes) in malformed_corpus() {
        match decode(&bytes, LIMIT) {
            Err(_) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
}

pub fn malformed_corpus() -> Vec<(&'static str, Vec<u8>)> {
    let mut wildcard = string(b"a/+/b");
    wildcard.push(b'1');
    let mut bad_utf8 = string(&[0xff, 0xfe]);
    bad_utf8.push(b'1');
    let mut nul = string(b"a\0b");
    nul.push(b'1');
    vec![
        ("reserved type 0", vec![0x00, 0]),
        ("reserved type 15", vec![0xf0, 0]),
        ("CONNACK from a client", vec![0x20, 2, 0, 0]),
        ("PUBLISH QoS 3", frame(0x36, &string(b"a"))),
        ("PUBLISH QoS 2", frame(0x34, &[0, 1, b'a', 0, 1])),
        ("DUP on QoS 0", frame(0x38, &string(b"a"))),
        ("PUBLISH wildcard topic", frame(0x30, &wildcard)),
        ("PUBLISH topic not UTF-8", frame(0x30, &bad_utf8)),
        ("PUBLISH topic with NUL", frame(0x30, &nul)),
        ("PUBLISH empty topic", frame(0x30, &string(b""))),
        ("PUBLISH QoS 1 packet id 0", frame(0x32, &[0, 1, b'a', 0, 0])),
        ("PUBLISH truncated topic", frame(0x30, &[0, 9, b'a'])),
        ("SUBSCRIBE wrong flags", frame(0x80, &[0, 1, 0, 1, b'a', 0])),
        ("SUBSCRIBE no filters", frame(0x82, &[0, 1])),
        ("SUBSCRIBE QoS 3", frame(0x82, &[0, 1, 0, 1, b'a', 3])),
        ("UNSUBSCRIBE no filters", frame(0xa2, &[0, 1])),
        ("PINGREQ with a body", frame(0xc0, &[1])),
        ("DISCONNECT wrong flags", vec![0xe1, 0]),
        ("CONNECT wrong protocol name", frame(0x10, &string(b"HTTP"))),
        ("CONNECT reserved flag", frame(0x10, &connect_body(0b0000_0001, 0, b"x", &[]))),
        ("CONNECT password without user", frame(0x10, &connect_body(0b0100_0000, 0, b"x", &string(b"pw")))),
        ("CONNECT truncated", frame(0x10, &connect_body(0, 0, b"x", &[])[..8])),
        ("CONNECT trailing bytes", frame(0x10, &connect_body(0, 0, b"x", &[7]))),
        ("PUBREL (QoS 2)", vec![0x62, 2, 0, 1]),
        ("PUBACK short", frame(0x40, &[0])),
        ("remaining length of five bytes", vec![0x30, 0x80, 0x80, 0x80, 0x80, 0x01]),
        ("oversized remaining length", vec![0x30, 0xff, 0xff, 0xff, 0x7f]),
    ]
}

proptest::proptest! {
    /// Any bytes: an answer, never a panic; a decoded packet never claims more bytes than given.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        if let Ok(Some((_, used))) = decode(&bytes, 256) {
            proptest::prop_assert!(used <= bytes.len() && used >= 2);
        }
    }

    /// Valid PUBLISH packets round-trip through the server's own encoder, whatever the sizes.
    #[test]
    fn publish_round_trips(topic in "[a-z0-9/]{1,40}", payload in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
        let mut bytes = Vec::new();
        proptest::prop_assert!(encode::publish_qos0(&mut bytes, &topic, &payload));
        let (packet, used) = decode(&bytes, 1 << 20).expect("valid").expect("complete");
        proptest::prop_assert_eq!(used, bytes.len());
        let Packet::Publish(publish) = packet else { panic!() };
        proptest::prop_assert_eq!(publish.topic, topic.as_str());
        proptest::prop_assert_eq!(publish.payload, &payload[..]);
    }
}
