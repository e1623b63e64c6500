//! The ring-wrap case on QEMU: a virtio queue numbers its entries with 16-bit indices, which wrap
//! after 65,536; `pump` sends 70,000 frames through one virtio-net device and makes 70,000 requests
//! through one virtio-blk disk, checking every read-back. A queue that stalls past the wrap hangs
//! the appliance (the timeout fails the test); a wrong completion fails a read-back (status 1).
//!
//! x86_64 only: the queue logic is the same code on both architectures, and under TCG emulation
//! the 140,000 requests would take minutes (`cargo xtask run pump --arch aarch64 --volume F` runs
//! it there by hand).

mod common;

use std::time::Duration;

use images::Arch;
use qemu::{Exit, Machine};

/// The run takes ~20 s on this project's nested-KVM hosts (each request is a VM exit or two).
const TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn virtio_queues_keep_working_past_the_16_bit_index_wrap_on_x86_64() {
    let test = "virtio_queues_keep_working_past_the_16_bit_index_wrap_on_x86_64";
    let Some(image) = common::image_for("pump", Arch::X86_64, test) else { return };
    let dir = tempfile::Builder::new().prefix(test).tempdir().expect("a temporary directory");
    let disk = dir.path().join("scratch.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(1 << 20)).expect("a scratch disk");
    let mut machine = Machine::new(Arch::X86_64, image).volume(&disk);
    machine.network = true;
    let run = machine.run(TIMEOUT).unwrap_or_else(|e| panic!("starting QEMU: {e}"));
    run.check(Exit::Status(0), "70000 frames through one network device").unwrap_or_else(|failure| panic!("{failure}"));
    let text = run.console_text();
    assert!(
        text.contains("70000 disk requests through one disk") && text.contains("every read-back matched"),
        "{text}"
    );
    assert!(text.contains("none dropped"), "{text}");
}
