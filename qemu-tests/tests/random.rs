//! `random` on QEMU: the runtime finds the virtio-rng device the harness attaches, and two boots
//! give different bytes from the device and different CSPRNG streams.

mod common;

use images::Arch;
use qemu::{Exit, Machine};

/// The `random:` line of one boot: the source, the device's bytes and the stream's, as words.
fn one_boot(arch: Arch, test: &str) -> Option<(String, String, String)> {
    let image = common::image_for("random", arch, test)?;
    let run = common::run(&Machine::new(arch, image));
    run.check(Exit::Status(0), "random: source").unwrap_or_else(|failure| panic!("{failure}"));
    let line = run.console.iter().find_map(|l| l.text.strip_prefix("random: source ").map(str::to_owned));
    let line = line.unwrap_or_else(|| panic!("no random line:\n{}", run.console_text()));
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [source, "direct", direct, "stream", stream] => {
            Some((source.to_string(), direct.to_string(), stream.to_string()))
        }
        _ => panic!("unreadable random line {line:?}"),
    }
}

fn two_boots_differ(arch: Arch, test: &str) {
    let Some(first) = one_boot(arch, test) else { return };
    let Some(second) = one_boot(arch, test) else { return };
    for (source, direct, stream) in [&first, &second] {
        assert_eq!(source, "virtio-rng");
        for hex in [direct, stream] {
            assert!(hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "not 16 bytes of hex: {hex}");
            assert_ne!(hex, &"0".repeat(32), "all-zero bytes are no entropy");
        }
    }
    assert_ne!(first.1, second.1, "two boots read the same bytes from virtio-rng");
    assert_ne!(first.2, second.2, "two boots gave the same CSPRNG stream");
}

#[test]
fn two_boots_give_different_streams_on_aarch64() {
    two_boots_differ(Arch::Aarch64, "two_boots_give_different_streams_on_aarch64");
}

#[test]
fn two_boots_give_different_streams_on_x86_64() {
    two_boots_differ(Arch::X86_64, "two_boots_give_different_streams_on_x86_64");
}
