//! One fuzz input, shared by the cargo-fuzz target (`fuzz/fuzz_targets/decode.rs`) and the stable
//! driver (`tests/fuzz.rs`): the first byte picks the read size, the second the packet limit; the
//! rest arrives in reads of that size into a bounded buffer, as the appliance receives it, and is
//! decoded packet by packet.
//!
//! Checked: no panic; a decoded packet never claims more than the buffer nor less than its header;
//! the buffer never grows past the limit plus a header (what the appliance keeps per connection);
//! an error ends the input, as it ends the connection.

/// The most header bytes in front of a body: the type byte and four length bytes.
const HEADER_MAX: usize = 5;

pub fn run(input: &[u8]) {
    let Some((&[read_seed, limit_seed], data)) = input.split_first_chunk::<2>() else { return };
    let read_size = usize::from(read_seed).max(1);
    let limit = usize::from(limit_seed) * 8;
    let mut buffer: Vec<u8> = Vec::new();
    for piece in data.chunks(read_size) {
        let room = (limit + HEADER_MAX).saturating_sub(buffer.len());
        buffer.extend_from_slice(&piece[..piece.len().min(room)]);
        assert!(buffer.len() <= limit + HEADER_MAX);
        loop {
            match mqtt::decode(&buffer, limit) {
                Ok(Some((packet, used))) => {
                    assert!((2..=buffer.len()).contains(&used), "{packet:?} used {used} of {}", buffer.len());
                    if let mqtt::Packet::Subscribe(subscribe) = &packet {
                        for (filter, _) in &subscribe.filters {
                            let _ = mqtt::topic::matches(filter, "sensors/temp/dev1");
                        }
                    }
                    buffer.drain(..used);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}
