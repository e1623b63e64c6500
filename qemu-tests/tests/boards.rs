//! Board boots on QEMU's `raspi3b` (a Raspberry Pi 3): the same appliances, built with
//! `--board rpi3`, boot from `kernel8.img` at 0x80000 on the four-core machine, see their
//! arguments (QEMU passes them as ATAGs, there is no device tree), report the board they detected
//! and their boot time, and exit through semihosting with the documented statuses.

mod common;

use boot_contract::{ExitCode, board};
use qemu::{Exit, Machine};

fn pi3_image(app: &str) -> std::path::PathBuf {
    common::board_image(app, board::RPI3)
}

#[test]
fn hello_boots_on_raspi3b_and_reports_the_board() {
    let run = common::run(&Machine::raspi3b(pi3_image("hello")).args(&["one", "two words", "ünïcode"]));
    run.check(Exit::Status(0), "Hello from Mast on Raspberry Pi 3").unwrap_or_else(|failure| panic!("{failure}"));
    let text = run.console_text();
    assert!(text.contains("mast: board rpi3 (Raspberry Pi 3 (BCM2837); no device tree"), "no board line:\n{text}");
    assert!(text.contains(r#"args: ["one", "two words", "ünïcode"]"#), "arguments lost:\n{text}");
    let boot = run.console.iter().find(|l| l.text.starts_with("boot: reset -> entry")).map(|l| l.text.clone());
    let boot = boot.unwrap_or_else(|| panic!("no boot-time line:\n{text}"));
    let main_us: u64 = boot
        .split_once("reset -> main ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("unreadable boot line {boot:?}"));
    assert!(main_us > 0 && main_us < 60_000_000, "implausible reset -> main time in {boot:?}");
    // QEMU gives the ARM 960 MiB of the Pi's 1 GiB (the rest is the VideoCore's).
    assert!(boot.contains("RAM 960 MiB"), "unexpected RAM size in {boot:?}");
    assert_eq!(run.console.last().map(|l| l.text.as_str()), Some("mast: exit status 0"));
}

#[test]
fn hello_without_arguments_on_raspi3b() {
    let run = common::run(&Machine::raspi3b(pi3_image("hello")));
    run.check(Exit::Status(0), "args: []").unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn crash_reports_its_panic_on_raspi3b() {
    let run = common::run(&Machine::raspi3b(pi3_image("crash")).args(&["panic"]));
    run.check(Exit::Status(ExitCode::PANIC.0), "panicked at kernel-apps/crash/src/main.rs:")
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(run.time_of("crash appliance: deliberate panic").is_some(), "no panic message:\n{}", run.console_text());
}

/// The Pi's peripherals share the first gigabyte with RAM; the 2 MiB map leaves what is neither
/// unmapped, so a stray access still faults with a report.
#[test]
fn crash_reports_a_fault_on_raspi3b() {
    let run = common::run(&Machine::raspi3b(pi3_image("crash")).args(&["fault"]));
    run.check(Exit::Status(ExitCode::CPU_EXCEPTION.0), "FAR=0x1000000000")
        .unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn appliance_status_reaches_the_host_on_raspi3b() {
    let run = common::run(&Machine::raspi3b(pi3_image("crash")).args(&["exit", "7"]));
    run.check(Exit::Status(7), "mast: exit status 7").unwrap_or_else(|failure| panic!("{failure}"));
}

/// `-initrd` reaches the appliance through QEMU's ATAG_INITRD2, as a data bundle.
#[test]
fn hello_reads_its_data_bundle_on_raspi3b() {
    let bundle = boot_contract::bundle::pack(&[("index.html", b"<h1>pi</h1>")]);
    let dir = std::env::temp_dir().join(format!("mast-boards-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let initrd = dir.join("bundle.data");
    std::fs::write(&initrd, &bundle).expect("bundle written");
    let mut machine = Machine::raspi3b(pi3_image("hello"));
    machine.initrd = Some(initrd);
    let run = common::run(&machine);
    let checksum = b"<h1>pi</h1>".iter().fold(0u32, |sum, &b| sum.rotate_left(5) ^ u32::from(b));
    let expected = format!("data: 1 files, 11 bytes, checksum {checksum:08x}");
    run.check(Exit::Status(0), &expected).unwrap_or_else(|failure| panic!("{failure}"));
}

/// QEMU's own boot stub holds cores 1-3 in a spin table, as the Pi firmware does; loaders that
/// release every core into the image instead (here QEMU's generic loader, which points cores 1-3 at
/// 0x80000 too) must find them parked in `wfe`, while core 0 boots. Without semihosting core 0 then
/// halts in `wfi`, and QEMU's monitor shows where each core stopped.
#[test]
fn secondary_cores_released_into_the_image_park_in_wfe() {
    use std::{
        io::{Read, Write},
        os::unix::net::UnixStream,
        time::{Duration, Instant},
    };

    const WFE: u32 = 0xd503_205f;
    const WFI: u32 = 0xd503_207f;
    const LOAD_ADDRESS: u64 = 0x8_0000;

    let kernel = pi3_image("hello");
    let dir = std::env::temp_dir().join(format!("mast-boards-smp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("monitor.sock");
    let mut machine = Machine::raspi3b(&kernel).semihosting(false);
    for cpu in 1..4 {
        machine = machine.extra_arg("-device").extra_arg(format!("loader,addr={LOAD_ADDRESS:#x},cpu-num={cpu}"));
    }
    let machine = machine.extra_arg("-monitor").extra_arg(format!("unix:{},server=on,wait=off", socket.display()));
    let mut vm = machine.spawn().expect("QEMU starts");
    vm.wait_for("mast: exit status 0", common::TIMEOUT).unwrap_or_else(|e| panic!("{e}"));

    let image = std::fs::read(&kernel).expect("the kernel");
    let instruction = |pc: u64| {
        let at = usize::try_from(pc.checked_sub(LOAD_ADDRESS)?).ok()?;
        Some(u32::from_le_bytes(image.get(at..at.checked_add(4)?)?.try_into().ok()?))
    };
    // A core waiting in a one-instruction loop shows the wait or the branch after it, depending on
    // when QEMU stopped it (TCG treats `wfe` as a yield and leaves the core runnable).
    let waits_in = |pc: u64, op: u32| instruction(pc) == Some(op) || instruction(pc.wrapping_sub(4)) == Some(op);
    let settled = |pcs: &[u64]| pcs.len() == 4 && waits_in(pcs[0], WFI) && pcs[1..].iter().all(|&pc| waits_in(pc, WFE));

    let mut monitor = UnixStream::connect(&socket).expect("the monitor socket");
    monitor.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut reply, mut pcs) = (String::new(), Vec::new());
    // Cores that QEMU has not scheduled yet still sit at the entry: ask until every core has settled.
    while !settled(&pcs) && Instant::now() < deadline {
        monitor.write_all(b"info registers -a\n").expect("monitor command");
        reply.clear();
        let asked = Instant::now();
        while reply.matches("PC=").count() < 4 && asked.elapsed() < Duration::from_secs(2) {
            let mut buf = [0u8; 8192];
            if let Ok(n) = monitor.read(&mut buf) {
                reply.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        pcs = reply.split("PC=").skip(1).filter_map(|rest| u64::from_str_radix(rest.get(..16)?, 16).ok()).collect();
    }
    assert_eq!(pcs.len(), 4, "expected four cores in:\n{reply}");
    assert!(waits_in(pcs[0], WFI), "core 0 should halt in wfi after exiting; PCs {pcs:x?}:\n{reply}");
    for (core, &pc) in pcs.iter().enumerate().skip(1) {
        assert!(waits_in(pc, WFE), "core {core} is not parked in wfe (PC {pc:#x}):\n{reply}");
    }
    let hellos = vm.console().iter().filter(|l| l.text.starts_with("Hello from Mast")).count();
    assert_eq!(hellos, 1, "only core 0 may run the appliance");
    drop(vm);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A flattened device tree, built by hand: just enough of a Pi 3's for the runtime to choose the
/// board from `compatible` and find its memory (QEMU fills in `/memory` and `/chosen` itself).
fn pi3_device_tree(compatible: &[&str], model: &str) -> Vec<u8> {
    struct Tree {
        structure: Vec<u8>,
        strings: Vec<u8>,
    }
    impl Tree {
        fn token(&mut self, token: u32) {
            self.structure.extend_from_slice(&token.to_be_bytes());
        }
        fn pad(&mut self) {
            while !self.structure.len().is_multiple_of(4) {
                self.structure.push(0);
            }
        }
        fn begin(&mut self, name: &str) {
            self.token(1);
            self.structure.extend_from_slice(name.as_bytes());
            self.structure.push(0);
            self.pad();
        }
        fn property(&mut self, name: &str, value: &[u8]) {
            let offset = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            self.token(3);
            self.token(value.len() as u32);
            self.token(offset);
            self.structure.extend_from_slice(value);
            self.pad();
        }
    }
    let strings = |list: &[&str]| list.iter().flat_map(|s| s.bytes().chain([0])).collect::<Vec<u8>>();
    let cells = |list: &[u32]| list.iter().flat_map(|c| c.to_be_bytes()).collect::<Vec<u8>>();
    let mut tree = Tree { structure: Vec::new(), strings: Vec::new() };
    tree.begin("");
    tree.property("compatible", &strings(compatible));
    tree.property("model", &strings(&[model]));
    tree.property("#address-cells", &cells(&[1]));
    tree.property("#size-cells", &cells(&[1]));
    tree.begin("memory@0");
    tree.property("device_type", &strings(&["memory"]));
    tree.property("reg", &cells(&[0, 0x3b40_0000]));
    tree.token(2);
    tree.begin("chosen");
    tree.token(2);
    tree.token(2);
    tree.token(9);

    const HEADER: usize = 40;
    let reservations = [0u8; 16];
    let structure_at = HEADER + reservations.len();
    let strings_at = structure_at + tree.structure.len();
    let total = strings_at + tree.strings.len();
    let mut blob = Vec::with_capacity(total);
    let header = [
        0xd00d_feed,
        total as u32,
        structure_at as u32,
        strings_at as u32,
        HEADER as u32,
        17,
        16,
        0,
        tree.strings.len() as u32,
        tree.structure.len() as u32,
    ];
    header.iter().for_each(|field: &u32| blob.extend_from_slice(&field.to_be_bytes()));
    blob.extend_from_slice(&reservations);
    blob.extend_from_slice(&tree.structure);
    blob.extend_from_slice(&tree.strings);
    blob
}

/// With a device tree (as the real firmware passes one), the board comes from its `compatible`,
/// the machine's name from its `model`, and the arguments from `/chosen/bootargs`.
#[test]
fn hello_on_raspi3b_with_a_device_tree_reads_the_board_from_it() {
    let dir = std::env::temp_dir().join(format!("mast-boards-dtb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let dtb = dir.join("pi3.dtb");
    let tree = pi3_device_tree(&["raspberrypi,3-model-b", "brcm,bcm2837"], "Raspberry Pi 3 Model B (test tree)");
    std::fs::write(&dtb, tree).expect("tree written");
    let machine = Machine::raspi3b(pi3_image("hello")).args(&["from", "the tree"]).extra_arg("-dtb").extra_arg(&dtb);
    let run = common::run(&machine);
    run.check(Exit::Status(0), "Hello from Mast on Raspberry Pi 3 Model B (test tree)!")
        .unwrap_or_else(|failure| panic!("{failure}"));
    let text = run.console_text();
    assert!(text.contains("mast: board rpi3 (Raspberry Pi 3 (BCM2837); device tree)"), "no board line:\n{text}");
    assert!(text.contains(r#"args: ["from", "the tree"]"#), "arguments lost:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
