//! `hello` boots on both architectures, sees its arguments, and reports its boot time.

mod common;

use images::Arch;
use qemu::{Exit, Machine};

fn hello_prints_its_arguments(arch: Arch, test: &str) {
    let Some(image) = common::image_for("hello", arch, test) else { return };
    // aarch64: 16 MiB, the size the heap check below is about.
    let machine = Machine::new(arch, image);
    let machine = if arch == Arch::Aarch64 { machine.memory_mib(16) } else { machine };
    let run = common::run(&machine.args(&["one", "two words", "ünïcode"]));
    run.check(Exit::Status(0), "Hello from Mast").unwrap_or_else(|failure| panic!("{failure}"));
    let args = r#"args: ["one", "two words", "ünïcode"]"#;
    assert!(run.time_of(args).is_some(), "expected {args:?} on the console:\n{}", run.console_text());
    let boot = run.console.iter().find(|l| l.text.starts_with("boot: reset -> entry")).map(|l| l.text.clone());
    let boot = boot.unwrap_or_else(|| panic!("no boot-time line:\n{}", run.console_text()));
    let main_us: u64 = boot
        .split_once("reset -> main ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("unreadable boot line {boot:?}"));
    assert!(main_us > 0 && main_us < 60_000_000, "implausible reset -> main time in {boot:?}");
    assert_eq!(run.console.last().map(|l| l.text.as_str()), Some("mast: exit status 0"));
    if arch == Arch::Aarch64 {
        heap_covers_ram_but_the_image(&boot);
    }
}

/// On aarch64 `virt` the heap is all of RAM but the image (code, data, stacks, page tables) and the
/// device tree's used bytes copied next to it: QEMU's padded tree at half of RAM and the 2 MiB
/// below the image are reclaimed. A 16 MiB guest must keep at least 14 MiB free.
fn heap_covers_ram_but_the_image(boot: &str) {
    let number_before = |unit: &str| -> u64 {
        let (head, _) = boot.split_once(unit).unwrap_or_else(|| panic!("no {unit:?} in {boot:?}"));
        head.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unreadable {boot:?}"))
    };
    let ram_kib = number_before(" MiB, heap free") * 1024;
    let free_kib = number_before(" KiB");
    assert_eq!(ram_kib, 16 * 1024, "the machine has 16 MiB: {boot:?}");
    assert!(free_kib >= 14 * 1024, "heap free {free_kib} KiB of {ram_kib} KiB RAM: under 14 MiB ({boot:?})");
    assert!(free_kib < ram_kib, "more heap than RAM: {boot:?}");
}

#[test]
fn hello_prints_its_arguments_on_aarch64() {
    hello_prints_its_arguments(Arch::Aarch64, "hello_prints_its_arguments_on_aarch64");
}

#[test]
fn hello_prints_its_arguments_on_x86_64() {
    hello_prints_its_arguments(Arch::X86_64, "hello_prints_its_arguments_on_x86_64");
}

#[test]
fn hello_without_arguments_prints_an_empty_list() {
    let Some(image) = common::image_for("hello", Arch::Aarch64, "hello_without_arguments") else { return };
    let run = common::run(&Machine::new(Arch::Aarch64, image));
    run.check(Exit::Status(0), "args: []").unwrap_or_else(|failure| panic!("{failure}"));
}

/// Without semihosting, as on a real board, the appliance powers off through PSCI: QEMU exits by
/// itself, and the status is on the console.
#[test]
fn aarch64_without_semihosting_powers_off_through_psci() {
    let Some(image) = common::image_for("hello", Arch::Aarch64, "aarch64_without_semihosting") else { return };
    let run = common::run(&Machine::new(Arch::Aarch64, image).semihosting(false));
    run.check(Exit::PoweredOff, "mast: exit status 0").unwrap_or_else(|failure| panic!("{failure}"));
}

/// A data bundle given as the initrd reaches the appliance intact.
fn hello_reads_its_data_bundle(arch: Arch, test: &str) {
    let Some(image) = common::image_for("hello", arch, test) else { return };
    let big: Vec<u8> = (0..300 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let bundle = boot_contract::bundle::pack(&[("index.html", b"<h1>hi</h1>"), ("blob.bin", &big)]);
    let dir = std::env::temp_dir().join(format!("mast-hello-data-{}-{arch}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let initrd = dir.join("bundle.data");
    std::fs::write(&initrd, &bundle).expect("bundle written");
    let mut machine = Machine::new(arch, image);
    machine.initrd = Some(initrd);
    let run = common::run(&machine);
    // The same checksum hello computes, over the files in the bundle's (path) order.
    let checksum = big.iter().chain(b"<h1>hi</h1>").fold(0u32, |sum, &b| sum.rotate_left(5) ^ u32::from(b));
    let expected = format!("data: 2 files, {} bytes, checksum {checksum:08x}", big.len() + 11);
    run.check(Exit::Status(0), &expected).unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn hello_reads_its_data_bundle_on_aarch64() {
    hello_reads_its_data_bundle(Arch::Aarch64, "hello_reads_its_data_bundle_on_aarch64");
}

#[test]
fn hello_reads_its_data_bundle_on_x86_64() {
    hello_reads_its_data_bundle(Arch::X86_64, "hello_reads_its_data_bundle_on_x86_64");
}

/// QEMU `microvm` describes its virtio-mmio transports on the command line when
/// `auto-kernel-cmdline` is on (`virtio_mmio.device=512@0xfeb00e00:12`); those arguments are the
/// runtime's, and the appliance must not see them.
#[test]
fn hello_does_not_see_the_runtimes_arguments_on_x86_64() {
    let test = "hello_does_not_see_the_runtimes_arguments_on_x86_64";
    let Some(image) = common::image_for("hello", Arch::X86_64, test) else { return };
    let machine = Machine::new(Arch::X86_64, image)
        .args(&["one"])
        .extra_arg("-machine")
        .extra_arg("auto-kernel-cmdline=on")
        .forward_tcp(qemu::free_local_port().expect("a free port"), 9);
    let run = common::run(&machine);
    run.check(Exit::Status(0), r#"args: ["one"]"#).unwrap_or_else(|failure| panic!("{failure}"));
}
