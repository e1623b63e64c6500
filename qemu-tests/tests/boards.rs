//! Board boots on QEMU's Raspberry Pis, `raspi3b` (a Pi 3) and `raspi4b` (a Pi 4, QEMU 9 and
//! later): the same appliances, built with `--board rpi3` or `--board rpi4`, boot from
//! `kernel8.img` at 0x80000 on the four-core machine, see their arguments (QEMU passes them as
//! ATAGs, there is no device tree), report the board they detected and their boot time, and exit
//! through semihosting with the documented statuses. Every test runs on both boards.
//!
//! Where QEMU has no `raspi4b` (Debian bookworm's 7.2), the Pi 4 tests print why they are skipped;
//! with `MAST_REQUIRE_QEMU10=1` (CI) they fail instead.

mod common;

use std::path::PathBuf;

use boot_contract::{ExitCode, board};
use qemu::{Exit, Machine};

/// One of QEMU's Raspberry Pi machines and what an appliance reports on it.
#[derive(Clone, Copy)]
struct Pi {
    board: board::Board,
    machine: fn(PathBuf) -> Machine,
    /// hello's greeting names the board's description.
    greeting: &'static str,
    /// The `compatible` strings of the board's device tree.
    compatible: &'static [&'static str],
}

const PI3: Pi = Pi {
    board: board::RPI3,
    machine: Machine::raspi3b,
    greeting: "Hello from Mast on Raspberry Pi 3",
    compatible: &["raspberrypi,3-model-b", "brcm,bcm2837"],
};

const PI4: Pi = Pi {
    board: board::RPI4,
    machine: Machine::raspi4b,
    greeting: "Hello from Mast on Raspberry Pi 4 (BCM2711)!",
    compatible: &["raspberrypi,4-model-b", "brcm,bcm2711"],
};

impl Pi {
    /// The machine booting the board's release image of `app`, or `None` (with the reason printed)
    /// where this QEMU cannot boot the board; `test` names the test for that message.
    fn boot(self, app: &str, test: &str) -> Option<Machine> {
        if self.board.kind == board::BoardKind::Rpi4 && !qemu::version::raspi4b_available_for(test) {
            return None;
        }
        Some((self.machine)(common::board_image(app, self.board)))
    }
}

/// Declares the test `name` once per board, as `name_on_raspi3b` and `name_on_raspi4b`.
macro_rules! on_each_pi {
    ($name:ident) => {
        mod $name {
            #[test]
            fn on_raspi3b() {
                super::$name(super::PI3, concat!(stringify!($name), "::on_raspi3b"));
            }
            #[test]
            fn on_raspi4b() {
                super::$name(super::PI4, concat!(stringify!($name), "::on_raspi4b"));
            }
        }
    };
}

on_each_pi!(hello_boots_and_reports_the_board);
fn hello_boots_and_reports_the_board(pi: Pi, test: &str) {
    let Some(machine) = pi.boot("hello", test) else { return };
    let run = common::run(&machine.args(&["one", "two words", "ünïcode"]));
    run.check(Exit::Status(0), pi.greeting).unwrap_or_else(|failure| panic!("{failure}"));
    let text = run.console_text();
    let board_line = format!("mast: board {} ({}; no device tree", pi.board.name, pi.board.description);
    assert!(text.contains(&board_line), "no board line {board_line:?}:\n{text}");
    assert!(text.contains(r#"args: ["one", "two words", "ünïcode"]"#), "arguments lost:\n{text}");
    let boot = run.console.iter().find(|l| l.text.starts_with("boot: reset -> entry")).map(|l| l.text.clone());
    let boot = boot.unwrap_or_else(|| panic!("no boot-time line:\n{text}"));
    let main_us: u64 = boot
        .split_once("reset -> main ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("unreadable boot line {boot:?}"));
    assert!(main_us > 0 && main_us < 60_000_000, "implausible reset -> main time in {boot:?}");
    // QEMU's ATAGs give the ARM 960 MiB on both models (raspi3b: the Pi's 1 GiB less the VideoCore's
    // share; raspi4b: the same first-gigabyte memory tag, whatever lies above it).
    assert!(boot.contains("RAM 960 MiB"), "unexpected RAM size in {boot:?}");
    assert_eq!(run.console.last().map(|l| l.text.as_str()), Some("mast: exit status 0"));
}

on_each_pi!(hello_without_arguments);
fn hello_without_arguments(pi: Pi, test: &str) {
    let Some(machine) = pi.boot("hello", test) else { return };
    let run = common::run(&machine);
    run.check(Exit::Status(0), "args: []").unwrap_or_else(|failure| panic!("{failure}"));
}

on_each_pi!(crash_reports_its_panic);
fn crash_reports_its_panic(pi: Pi, test: &str) {
    let Some(machine) = pi.boot("crash", test) else { return };
    let run = common::run(&machine.args(&["panic"]));
    run.check(Exit::Status(ExitCode::PANIC.0), "panicked at kernel-apps/crash/src/main.rs:")
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(run.time_of("crash appliance: deliberate panic").is_some(), "no panic message:\n{}", run.console_text());
}

on_each_pi!(crash_reports_a_fault);
/// The Pis' peripherals share the low memory with RAM; the 2 MiB map leaves what is neither
/// unmapped, so a stray access still faults with a report.
fn crash_reports_a_fault(pi: Pi, test: &str) {
    let Some(machine) = pi.boot("crash", test) else { return };
    let run = common::run(&machine.args(&["fault"]));
    run.check(Exit::Status(ExitCode::CPU_EXCEPTION.0), "FAR=0x1000000000")
        .unwrap_or_else(|failure| panic!("{failure}"));
}

on_each_pi!(crash_reports_a_stack_overflow);
/// The Pis' image sits in the first 2 MiB block, beside firmware memory; its stack's guard page is
/// a level-3 mapping there, and an overflow is a report with status 102.
fn crash_reports_a_stack_overflow(pi: Pi, test: &str) {
    let Some(machine) = pi.boot("crash", test) else { return };
    let run = common::run(&machine.args(&["overflow"]));
    run.check(Exit::Status(ExitCode::CPU_EXCEPTION.0), "probably a stack overflow")
        .unwrap_or_else(|failure| panic!("{failure}"));
}

on_each_pi!(appliance_status_reaches_the_host);
fn appliance_status_reaches_the_host(pi: Pi, test: &str) {
    let Some(machine) = pi.boot("crash", test) else { return };
    let run = common::run(&machine.args(&["exit", "7"]));
    run.check(Exit::Status(7), "mast: exit status 7").unwrap_or_else(|failure| panic!("{failure}"));
}

on_each_pi!(hello_reads_its_data_bundle);
/// `-initrd` reaches the appliance through QEMU's ATAG_INITRD2, as a data bundle.
fn hello_reads_its_data_bundle(pi: Pi, test: &str) {
    let Some(mut machine) = pi.boot("hello", test) else { return };
    let bundle = boot_contract::bundle::pack(&[("index.html", b"<h1>pi</h1>")]);
    let dir = std::env::temp_dir().join(format!("mast-boards-data-{}-{}", pi.board.name, std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let initrd = dir.join("bundle.data");
    std::fs::write(&initrd, &bundle).expect("bundle written");
    machine.initrd = Some(initrd);
    let run = common::run(&machine);
    let checksum = b"<h1>pi</h1>".iter().fold(0u32, |sum, &b| sum.rotate_left(5) ^ u32::from(b));
    let expected = format!("data: 1 files, 11 bytes, checksum {checksum:08x}");
    run.check(Exit::Status(0), &expected).unwrap_or_else(|failure| panic!("{failure}"));
    let _ = std::fs::remove_dir_all(&dir);
}

on_each_pi!(secondary_cores_released_into_the_image_park_in_wfe);
/// QEMU's own boot stub holds cores 1-3 in a spin table, as the Pi firmware does; loaders that
/// release every core into the image instead (here QEMU's generic loader, which points cores 1-3 at
/// 0x80000 too) must find them parked in `wfe`, while core 0 boots. Without semihosting core 0 then
/// halts in `wfi`, and QEMU's monitor shows where each core stopped.
fn secondary_cores_released_into_the_image_park_in_wfe(pi: Pi, test: &str) {
    let Some(machine) = pi.boot("hello", test) else { return };
    use std::{
        io::{Read, Write},
        os::unix::net::UnixStream,
        time::{Duration, Instant},
    };

    const WFE: u32 = 0xd503_205f;
    const WFI: u32 = 0xd503_207f;
    const LOAD_ADDRESS: u64 = 0x8_0000;

    let kernel = machine.kernel.clone();
    let dir = std::env::temp_dir().join(format!("mast-boards-smp-{}-{}", pi.board.name, std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("monitor.sock");
    let mut machine = machine.semihosting(false);
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

/// A flattened device tree, built by hand: just enough of a Pi's for the runtime to choose the
/// board from `compatible` and find its memory (QEMU fills in `/memory` and `/chosen` itself).
fn pi_device_tree(compatible: &[&str], model: &str) -> Vec<u8> {
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

on_each_pi!(hello_with_a_device_tree_reads_the_board_from_it);
/// With a device tree (as the real firmware passes one), the board comes from its `compatible`,
/// the machine's name from its `model`, and the arguments from `/chosen/bootargs`.
fn hello_with_a_device_tree_reads_the_board_from_it(pi: Pi, test: &str) {
    let Some(machine) = pi.boot("hello", test) else { return };
    let dir = std::env::temp_dir().join(format!("mast-boards-dtb-{}-{}", pi.board.name, std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let dtb = dir.join("pi.dtb");
    let model = format!("{} (test tree)", pi.board.description);
    std::fs::write(&dtb, pi_device_tree(pi.compatible, &model)).expect("tree written");
    let machine = machine.args(&["from", "the tree"]).extra_arg("-dtb").extra_arg(&dtb);
    let run = common::run(&machine);
    run.check(Exit::Status(0), &format!("Hello from Mast on {model}!")).unwrap_or_else(|failure| panic!("{failure}"));
    let text = run.console_text();
    let board_line = format!("mast: board {} ({}; device tree)", pi.board.name, pi.board.description);
    assert!(text.contains(&board_line), "no board line {board_line:?}:\n{text}");
    assert!(text.contains(r#"args: ["from", "the tree"]"#), "arguments lost:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
