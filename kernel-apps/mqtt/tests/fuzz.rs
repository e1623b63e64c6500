//! The fuzz body on stable Rust, without libFuzzer: inputs are the malformed corpus and valid
//! packets, mutated (bytes flipped, inserted, removed, spliced) by a seeded xorshift generator.
//! Not coverage-guided; it complements `fuzz/` (cargo-fuzz, nightly), which this machine may lack.
//!
//! `cargo test -p mqtt --test fuzz` runs 20,000 inputs; `MQTT_FUZZ_INPUTS=1000000` runs more (the
//! count is printed with `--nocapture`), `MQTT_FUZZ_SEED` picks another seed.

mod fuzz_body;

fn seeds() -> Vec<Vec<u8>> {
    let string = |t: &[u8]| {
        let mut v = (t.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(t);
        v
    };
    let mut connect = string(b"MQTT");
    connect.extend_from_slice(&[4, 0b1110_1110, 0, 60]);
    for field in [&b"dev1"[..], b"will/t", b"bye", b"user", b"pw"] {
        connect.extend_from_slice(&string(field));
    }
    let mut publish = string(b"sensors/temp/dev1");
    publish.extend_from_slice(&[0, 5]);
    publish.extend_from_slice(b"21.5");
    let mut subscribe = vec![0, 3];
    subscribe.extend_from_slice(&string(b"sensors/+/#"));
    subscribe.push(1);
    let frame = |first: u8, body: &[u8]| {
        let mut out = vec![first];
        mqtt::encode::push_remaining_length(&mut out, body.len());
        out.extend_from_slice(body);
        out
    };
    vec![
        frame(0x10, &connect),
        frame(0x32, &publish),
        frame(0x30, &publish[..publish.len() - 2]),
        frame(0x82, &subscribe),
        frame(0xa2, &subscribe[..subscribe.len() - 1]),
        vec![0xc0, 0, 0xe0, 0, 0x40, 2, 0, 1],
        vec![0x30, 0xff, 0xff, 0xff, 0x7f],
    ]
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_packets_never_panic() {
    let inputs: u64 = std::env::var("MQTT_FUZZ_INPUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let seed: u64 = std::env::var("MQTT_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x9e37_79b9_7f4a_7c15);
    let seeds = seeds();
    let mut rng = XorShift(seed | 1);
    for _ in 0..inputs {
        let mut input = vec![rng.next() as u8, rng.next() as u8];
        // A few packets back to back, as a connection carries them.
        for _ in 0..1 + rng.below(4) {
            input.extend_from_slice(&seeds[rng.below(seeds.len())]);
        }
        for _ in 0..rng.below(8) {
            let at = rng.below(input.len());
            match rng.below(4) {
                0 => input[at] ^= 1 << rng.below(8),
                1 => input[at] = rng.next() as u8,
                2 => input.insert(at, rng.next() as u8),
                _ => {
                    input.remove(at);
                }
            }
            if input.len() < 3 {
                break;
            }
        }
        fuzz_body::run(&input);
    }
    println!("mqtt fuzz: {inputs} inputs clean (seed {seed:#x})");
}
