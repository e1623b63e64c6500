//! The `hostile` appliance (a real runtime-based guest) tries each way out of its sandbox; the
//! tender must stop every attempt with status 126 and one line naming what the guest did, never
//! crash, hang, or let the guest go on.

mod common;

use tender_abi::EXIT_GUEST_VIOLATION;

const VIOLATION: i32 = EXIT_GUEST_VIOLATION as i32;

fn attack(test: &str, attack: &str, says: &[&str], tender_args: &[&str], netns: Option<&common::NetNs>) {
    let image = common::tender_image("hostile");
    let mut command = match netns {
        Some(netns) => netns.command(env!("CARGO_BIN_EXE_tender")),
        None => common::tender(),
    };
    let run = common::run(command.args(tender_args).arg(&image.artifact).args(["--", attack]));
    assert!(run.stdout.contains(&format!("hostile: trying {attack}")), "{test}: the guest ran:\n{}", run.stdout);
    run.expect_status(VIOLATION).expect_stderr(&["tender: guest violation: "]).expect_stderr(says);
    assert!(!run.stdout.contains("was not stopped"), "{test}:\n{}", run.stdout);
}

macro_rules! attacks {
    ($($test:ident: $attack:literal => [$($says:literal),*];)*) => {$(
        #[test]
        fn $test() {
            if common::kvm(stringify!($test)) {
                attack(stringify!($test), $attack, &[$($says),*], &[], None);
            }
        }
    )*};
}

attacks! {
    writing_beyond_ram_is_stopped: "write-outside" => ["write of", "0xc0000000, which is not RAM"];
    reading_beyond_ram_is_stopped: "read-outside" => ["read of", "0xc0000000, which is not RAM"];
    a_console_buffer_beyond_ram_is_stopped: "hypercall-outside" => ["ConsoleWrite: console buffer", "not inside guest RAM"];
    a_wrapping_console_length_is_stopped: "hypercall-overflow" => ["ConsoleWrite: console buffer", "not inside guest RAM"];
    a_bad_port_is_stopped: "bad-port" => ["I/O port 0x3f8"];
    an_unknown_call_is_stopped: "unknown-call" => ["hypercall number"];
}

#[test]
fn corrupt_ring_counters_are_stopped() {
    let test = "corrupt_ring_counters_are_stopped";
    if !common::kvm(test) {
        return;
    }
    let Some(netns) = common::netns("ring") else { return };
    attack(test, "ring-corrupt", &["tx ring in an impossible state"], &["--net", common::TAP], Some(&netns));
}
