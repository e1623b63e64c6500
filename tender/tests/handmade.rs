//! Hand-assembled guests: the hypercall paths with nothing of the runtime in the way, and every way
//! a hostile guest can break the ABI. Each breach must end the tender with status 126 and one line
//! on stderr naming what the guest did: never a crash, a hang or a signal.

mod common;

use common::{DATA, Guest, run_guest};
use tender_abi::{EXIT_GUEST_VIOLATION, HYPERCALL_MMIO_BASE, Hypercall, PAGE_TABLES_OFFSET};

const VIOLATION: i32 = EXIT_GUEST_VIOLATION as i32;

#[test]
fn console_and_exit_work() {
    if !common::kvm("console_and_exit_work") {
        return;
    }
    let guest = Guest::new().print(0, b"hello from a hand-made guest\n").exit(0x100, 7).spin();
    let run = run_guest("console_and_exit", &guest, &["--stats"]);
    run.expect_status(7).expect_stderr(&["2 VM exits (hypercall 2)", "ConsoleWrite 1, Exit 1"]);
    assert_eq!(run.stdout, "hello from a hand-made guest\n");
}

/// The aarch64 form of a hypercall (a 64-bit store to the window) works on x86_64 too, at CPL 0 here.
#[test]
fn window_stores_are_hypercalls() {
    if !common::kvm("window_stores_are_hypercalls") {
        return;
    }
    let mut guest = Guest::new();
    let block = guest.place(0, &[42u32.to_le_bytes(), [0; 4]].concat());
    let guest = guest.mov_rax(Hypercall::Exit.mmio_address()).mov_rbx(block).store_rbx_at_rax().spin();
    run_guest("window_stores", &guest, &[]).expect_status(42);
}

/// Runs `guest` and checks it is stopped as a violation whose message holds `parts`.
fn violation(test: &str, guest: Guest, parts: &[&str]) {
    if !common::kvm(test) {
        return;
    }
    let run = run_guest(test, &guest, &[]);
    run.expect_status(VIOLATION).expect_stderr(&["tender: guest violation: "]).expect_stderr(parts);
    assert_eq!(run.stderr.lines().filter(|l| l.contains("violation")).count(), 1, "one line:\n{}", run.stderr);
}

#[test]
fn an_unknown_port_is_a_violation() {
    violation("unknown_port", Guest::new().mov_edx(0x3f8).mov_eax(0x41).bytes(&[0xef]), &["I/O port 0x3f8", "write"]);
}

#[test]
fn reading_a_port_is_a_violation() {
    violation("reading_a_port", Guest::new().mov_edx(0x501).bytes(&[0xed]), &["read of I/O port 0x501"]);
}

#[test]
fn an_unknown_hypercall_is_a_violation() {
    violation("unknown_hypercall", Guest::new().out(0, DATA as u32), &["hypercall number 0 does not exist"]);
}

#[test]
fn a_console_buffer_outside_ram_is_a_violation() {
    let mut guest = Guest::new();
    let block = guest.place(0, &[(64u64 << 20).to_le_bytes(), 16u64.to_le_bytes()].concat());
    violation("console_outside", guest.call(Hypercall::ConsoleWrite, block), &["console buffer at 0x4000000"]);
}

#[test]
fn an_overflowing_console_length_is_a_violation() {
    let mut guest = Guest::new();
    let block = guest.place(0, &[DATA.to_le_bytes(), u64::MAX.to_le_bytes()].concat());
    violation(
        "console_overflow",
        guest.call(Hypercall::ConsoleWrite, block),
        &["console buffer", "length 0xffffffffffffffff"],
    );
}

#[test]
fn an_argument_block_outside_ram_is_a_violation() {
    violation(
        "block_outside",
        Guest::new().out(Hypercall::Exit as u16, 0xffff_fff8),
        &["argument block at 0xfffffff8", "not inside guest RAM"],
    );
}

#[test]
fn a_misaligned_argument_block_is_a_violation() {
    violation("misaligned_block", Guest::new().out(Hypercall::ConsoleWrite as u16, DATA as u32 + 4), &["aligned"]);
}

#[test]
fn an_exit_status_above_255_is_a_violation() {
    violation("wide_status", Guest::new().exit(0, 300), &["status 300"]);
}

#[test]
fn hlt_is_a_violation() {
    violation("hlt", Guest::new().bytes(&[0xf4]), &["hlt"]);
}

#[test]
fn an_unhandled_exception_is_a_violation() {
    // ud2 with no IDT: #UD, then #DF, then a triple fault.
    violation("ud2", Guest::new().bytes(&[0x0f, 0x0b]), &["triple fault", "instruction pointer"]);
}

#[test]
fn touching_unmapped_memory_is_a_violation() {
    // 64 MiB: beyond the 16 MiB of RAM, so not in the tender's page tables: a page fault, then a triple fault.
    violation("unmapped", Guest::new().mov_rax(64 << 20).load_rbx_from_rax(), &["triple fault"]);
}

/// A guest may edit the page tables it was given: mapping guest-physical memory beyond its RAM and
/// writing there reaches the tender as an access to unbacked memory.
#[test]
fn writing_beyond_ram_through_its_own_mapping_is_a_violation() {
    let pd_entry_32_mib = PAGE_TABLES_OFFSET + 2 * 4096 + 16 * 8;
    let guest = Guest::new()
        .mov_rax(pd_entry_32_mib)
        .mov_rbx((32 << 20) | 0x87) // present, writable, user, 2 MiB page
        .store_rbx_at_rax()
        .mov_rax((32 << 20) + 0x10)
        .store_rbx_at_rax();
    violation("beyond_ram_write", guest, &["write of 8 bytes at guest-physical address 0x2000010, which is not RAM"]);
}

#[test]
fn reading_beyond_ram_through_its_own_mapping_is_a_violation() {
    let pd_entry_32_mib = PAGE_TABLES_OFFSET + 2 * 4096 + 16 * 8;
    let guest = Guest::new()
        .mov_rax(pd_entry_32_mib)
        .mov_rbx((32 << 20) | 0x87)
        .store_rbx_at_rax()
        .mov_rax(32 << 20)
        .load_rbx_from_rax();
    violation("beyond_ram_read", guest, &["read of 8 bytes at guest-physical address 0x2000000, which is not RAM"]);
}

#[test]
fn a_narrow_window_store_is_a_violation() {
    // `mov [rax], ebx`: 4 bytes where a hypercall takes 8.
    let guest = Guest::new().mov_rax(HYPERCALL_MMIO_BASE + 8).mov_rbx(DATA).bytes(&[0x89, 0x18]);
    violation("narrow_window_store", guest, &["ConsoleWrite with a 4-byte argument"]);
}

#[test]
fn devices_that_are_absent_answer_no_device() {
    // Without --net the tender answers NetAttach with RESULT_NO_DEVICE and never looks at the rings,
    // even impossible ones: the guest learns it has no network, which is no violation.
    if !common::kvm("devices_that_are_absent_answer_no_device") {
        return;
    }
    let mut guest = Guest::new();
    let attach = guest.place(0, &[(1u64 << 40).to_le_bytes(), [0; 8]].concat());
    let show = guest.place(0x100, &[attach.to_le_bytes(), 16u64.to_le_bytes()].concat());
    let guest = guest.call(Hypercall::NetAttach, attach).call(Hypercall::ConsoleWrite, show).exit(0x200, 0);
    let dir = common::scratch("absent_devices");
    let kernel = common::write(dir.path(), "guest.elf", &guest.elf());
    let output = common::tender().arg("--kernel").arg(&kernel).output().expect("tender runs");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.stdout.len(), 16, "the NetAttach block, echoed");
    let result = i32::from_le_bytes(output.stdout[8..12].try_into().expect("4 bytes"));
    assert_eq!(result, tender_abi::RESULT_NO_DEVICE);
}

/// A guest that drops to CPL 3 (where PVM runs it natively rather than emulating it) can still make
/// hypercalls: the identity map is user-accessible and the window form of a call works at any
/// privilege level, where `out` would fault.
#[test]
fn a_guest_at_cpl3_makes_hypercalls_through_the_window() {
    if !common::kvm("a_guest_at_cpl3_makes_hypercalls_through_the_window") {
        return;
    }
    let mut guest = Guest::new();
    // GDT: null, kernel code, kernel data, user data (0x1b), user code (0x23); all flat, 64-bit code.
    let gdt: Vec<u8> =
        [0u64, 0x0020_9a00_0000_0000, 0x0000_9200_0000_0000, 0x0000_f200_0000_0000, 0x0020_fa00_0000_0000]
            .iter()
            .flat_map(|d| d.to_le_bytes())
            .collect();
    let gdt_addr = guest.place(0x300, &gdt);
    let gdtr = guest.place(0x2f0, &[&39u16.to_le_bytes()[..], &gdt_addr.to_le_bytes()].concat());
    let cs_copy = DATA + 0x400;
    let show_cs = guest.place(0x380, &[cs_copy.to_le_bytes(), 2u64.to_le_bytes()].concat());
    let exit = guest.place(0x3a0, &[9u32.to_le_bytes(), [0; 4]].concat());
    let stack = DATA + 0x1800;
    let user_code = common::LOAD + 36; // the length of the CPL 0 part below
    let guest = guest
        .mov_rsp(stack)
        .bytes(&[0x0f, 0x01, 0x14, 0x25]) // lgdt [gdtr]
        .bytes(&(gdtr as u32).to_le_bytes())
        .bytes(&[0x6a, 0x1b]) // push ss
        .bytes(&[0x68])
        .bytes(&(stack as u32).to_le_bytes()) // push rsp
        .bytes(&[0x6a, 0x02]) // push rflags
        .bytes(&[0x6a, 0x23]) // push cs
        .bytes(&[0x68])
        .bytes(&(user_code as u32).to_le_bytes()) // push rip
        .bytes(&[0x48, 0xcf]); // iretq
    let guest = guest
        .bytes(&[0x8c, 0x0c, 0x25]) // mov [cs_copy], cs
        .bytes(&(cs_copy as u32).to_le_bytes())
        .mov_rax(Hypercall::ConsoleWrite.mmio_address())
        .mov_rbx(show_cs)
        .store_rbx_at_rax()
        .mov_rax(Hypercall::Exit.mmio_address())
        .mov_rbx(exit)
        .store_rbx_at_rax()
        .spin();
    let dir = common::scratch("cpl3");
    let kernel = common::write(dir.path(), "guest.elf", &guest.elf());
    let output = common::tender().arg("--kernel").arg(&kernel).output().expect("tender runs");
    assert_eq!(output.status.code(), Some(9), "{}", String::from_utf8_lossy(&output.stderr));
    // The selector's low bits are the privilege level. (PVM shows its own user selector, 0x33, not
    // the GDT's 0x23: it runs guest user code on the host's user segments.)
    assert_eq!(output.stdout.len(), 2);
    assert_eq!(output.stdout[0] & 3, 3, "the code ran at CPL 3 (CS {:#x})", output.stdout[0]);
}

/// An idle guest (blocked in Poll with no timeout) costs nothing until it is stopped; SIGTERM
/// stops it cleanly, with the statistics still printed, and status 128 + 15.
#[test]
fn sigterm_stops_an_idle_guest_cleanly() {
    if !common::kvm("sigterm_stops_an_idle_guest_cleanly") {
        return;
    }
    let mut guest = Guest::new();
    let poll = guest.place(0, &[tender_abi::POLL_FOREVER.to_le_bytes(), [0; 8]].concat());
    let guest = guest.call(Hypercall::Poll, poll).exit(0x100, 1);
    let dir = common::scratch("sigterm");
    let kernel = common::write(dir.path(), "guest.elf", &guest.elf());
    let child = common::tender()
        .arg("--stats")
        .arg("--kernel")
        .arg(&kernel)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tender starts");
    let pid = child.id() as i32;
    // Wait until it sleeps in ppoll (x86_64 system call 271), where an idle guest's tender spends
    // its time, and stop it there.
    let asleep = (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|call| call.starts_with("271 "))
    });
    // SAFETY: signals the child this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let run = common::wait(child, common::TIMEOUT);
    assert!(asleep, "the idle tender never slept");
    run.expect_status(128 + libc::SIGTERM).expect_stderr(&["stopped by signal 15", "hypercalls: Poll 1"]);
}

/// `xgetbv` with CR4.OSXSAVE clear: real KVM raises #UD (then a triple fault, with no IDT); PVM
/// cannot emulate it at all (a KVM internal error). Either way the guest is stopped cleanly.
#[test]
fn an_instruction_kvm_cannot_run_is_a_violation() {
    let test = "an_instruction_kvm_cannot_run_is_a_violation";
    if !common::kvm(test) {
        return;
    }
    let run = run_guest(test, &Guest::new().bytes(&[0x31, 0xc9, 0x0f, 0x01, 0xd0]).spin(), &[]);
    run.expect_status(VIOLATION);
    assert!(
        run.stderr.contains("KVM could not emulate an instruction (internal error")
            || run.stderr.contains("triple fault"),
        "{}",
        run.stderr
    );
}
