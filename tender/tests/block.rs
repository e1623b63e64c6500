//! The block device: a raw file read and written in 512-byte sectors by a hand-assembled guest,
//! with requests the device cannot serve answered with result codes and buffers outside RAM stopped.

mod common;

use common::{DATA, Guest};
use tender_abi::{Hypercall, RESULT_INVALID, RESULT_OK};

/// A BlockIo argument block.
fn block_io(sector: u64, addr: u64, len: u64) -> Vec<u8> {
    [sector.to_le_bytes(), addr.to_le_bytes(), len.to_le_bytes(), [0xee; 8]].concat()
}

/// Adds `call` with a fresh BlockIo block at data offset `offset`, then echoes the block (with its
/// result) to the console.
fn request(mut guest: Guest, offset: usize, call: Hypercall, sector: u64, addr: u64, len: u64) -> Guest {
    let block = guest.place(offset, &block_io(sector, addr, len));
    let echo = guest.place(offset + 0x40, &[block.to_le_bytes(), 32u64.to_le_bytes()].concat());
    guest.call(call, block).call(Hypercall::ConsoleWrite, echo)
}

fn result_of(echoed: &[u8]) -> i32 {
    i32::from_le_bytes(echoed[24..28].try_into().expect("4 bytes"))
}

#[test]
fn sectors_are_read_and_written_in_place() {
    if !common::kvm("sectors_are_read_and_written_in_place") {
        return;
    }
    let dir = common::scratch("block");
    let mut disk = vec![0u8; 4 * 512];
    disk[512..1024].fill(b'1');
    let disk_path = common::write(dir.path(), "disk.img", &disk);

    let mut guest = Guest::new();
    let read_buffer = DATA + 0x1000;
    let written = guest.place(0x800, &[b'W'; 512]);
    let show = guest.place(0x700, &[read_buffer.to_le_bytes(), 512u64.to_le_bytes()].concat());
    let guest = request(guest, 0x000, Hypercall::BlockRead, 1, read_buffer, 512);
    let guest = request(guest, 0x100, Hypercall::BlockWrite, 2, written, 512);
    let guest = request(guest, 0x200, Hypercall::BlockFlush, 0, 0, 0);
    let guest = request(guest, 0x300, Hypercall::BlockRead, 3, read_buffer, 1024); // past the end
    let guest = request(guest, 0x400, Hypercall::BlockRead, 0, read_buffer, 100); // not whole sectors
    let guest = guest.call(Hypercall::ConsoleWrite, show).exit(0x600, 0);

    let kernel = common::write(dir.path(), "guest.elf", &guest.elf());
    let output =
        common::tender().arg("--kernel").arg(&kernel).arg("--block").arg(&disk_path).output().expect("tender runs");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let out = &output.stdout;
    assert_eq!(out.len(), 5 * 32 + 512, "five echoed blocks and the buffer");
    let results: Vec<i32> = out[..160].chunks(32).map(result_of).collect();
    assert_eq!(results, [RESULT_OK, RESULT_OK, RESULT_OK, RESULT_INVALID, RESULT_INVALID]);
    assert_eq!(&out[160..], &[b'1'; 512][..], "sector 1 arrived in guest memory");
    let disk = std::fs::read(&disk_path).expect("disk");
    assert_eq!(&disk[1024..1536], &[b'W'; 512][..], "sector 2 holds what the guest wrote");
    assert_eq!(disk.len(), 4 * 512, "the file keeps its size");
}

#[test]
fn a_block_buffer_outside_ram_is_a_violation() {
    if !common::kvm("a_block_buffer_outside_ram_is_a_violation") {
        return;
    }
    let dir = common::scratch("block_outside");
    let disk_path = common::write(dir.path(), "disk.img", &[0; 1024]);
    let guest = request(Guest::new(), 0, Hypercall::BlockRead, 0, (16 << 20) - 256, 512);
    let kernel = common::write(dir.path(), "guest.elf", &guest.elf());
    let run = common::run(common::tender().arg("--kernel").arg(&kernel).arg("--block").arg(&disk_path));
    run.expect_status(126).expect_stderr(&["BlockRead: block buffer at 0xffff00 with length 0x200"]);
}
