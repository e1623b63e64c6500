//! `pump`: a test appliance for the ring-wrap case.
//!
//! A virtio queue numbers its entries with 16-bit indices that wrap after 65,536; a long-running
//! appliance passes that point, so it must work past it. `pump` sends `frames=N` Ethernet frames
//! (default 70,000) through its one network device and makes `requests=N` requests (default
//! 70,000: alternate writes and reads of 32 sectors, each read checked against what was written)
//! through its one disk, then exits 0. A ring that stops past the wrap makes it hang (the test's
//! timeout catches that); a wrong completion makes a read-back differ (status 1).
//!
//! The frames are Ethernet broadcasts of the local experimental EtherType 0x88b5, which QEMU's
//! user network and a host's tap drop. The disk is scratch: its first 32 sectors are overwritten.
//!
//! Exit statuses: 0 done, 1 a read-back differed or a device failed, 2 bad arguments, 3 no
//! network device, 4 no disk.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use core::time::Duration;

use runtime::{
    Context, ExitCode,
    block::{BlockDevice, SECTOR_SIZE},
    event, netdev, println,
    time::Instant,
};

runtime::entry!(main);

/// More than a 16-bit ring index counts (65,536), with room to spare.
const DEFAULT_COUNT: u64 = 70_000;
/// Sectors the disk test cycles through.
const SECTORS: u64 = 32;
/// The local experimental EtherType (IEEE 802): nobody on the host side answers it.
const ETHERTYPE_EXPERIMENTAL: [u8; 2] = [0x88, 0xb5];
/// How long to sleep waiting for the device to hand back a transmit buffer, if no interrupt comes.
const TX_WAIT: Duration = Duration::from_millis(1);

const FAILED: ExitCode = ExitCode(1);
const BAD_ARGUMENTS: ExitCode = ExitCode(2);
const NO_NETWORK: ExitCode = ExitCode(3);
const NO_DISK: ExitCode = ExitCode(4);

fn main(ctx: &mut Context) -> ExitCode {
    let (mut frames, mut requests) = (DEFAULT_COUNT, DEFAULT_COUNT);
    for arg in ctx.args() {
        let parsed = match arg.split_once('=') {
            Some(("frames", n)) => n.parse().map(|n| frames = n),
            Some(("requests", n)) => n.parse().map(|n| requests = n),
            _ => {
                println!("pump: unknown argument {arg:?}: expected frames=N or requests=N");
                return BAD_ARGUMENTS;
            }
        };
        if parsed.is_err() {
            println!("pump: {arg:?}: expected a whole number");
            return BAD_ARGUMENTS;
        }
    }
    let started = Instant::now();
    if let Err(status) = pump_disk(requests) {
        return status;
    }
    println!(
        "pump: {requests} disk requests through one disk in {} ms, every read-back matched",
        started.elapsed().as_millis()
    );
    let started = Instant::now();
    if let Err(status) = pump_frames(frames) {
        return status;
    }
    println!("pump: {frames} frames through one network device in {} ms, none dropped", started.elapsed().as_millis());
    ExitCode::SUCCESS
}

/// Alternates a write of a sector (its number and the request's) with a read of it, `requests`
/// requests in all, checking every read.
fn pump_disk(requests: u64) -> Result<(), ExitCode> {
    let mut disk = BlockDevice::open().map_err(|error| {
        println!("pump: {error}");
        NO_DISK
    })?;
    if disk.capacity_sectors() < SECTORS {
        println!("pump: the disk has {} sectors; pump needs {SECTORS}", disk.capacity_sectors());
        return Err(NO_DISK);
    }
    let mut written = [0u8; SECTOR_SIZE];
    let mut read = [0u8; SECTOR_SIZE];
    for round in 0..requests.div_ceil(2) {
        let sector = round % SECTORS;
        written[..8].copy_from_slice(&sector.to_le_bytes());
        written[8..16].copy_from_slice(&round.to_le_bytes());
        let done = disk.write(sector, &written).and_then(|()| disk.read(sector, &mut read));
        if let Err(error) = done {
            println!("pump: disk request {} failed: {error:?}", round * 2);
            return Err(FAILED);
        }
        if read != written {
            println!("pump: round {round}: sector {sector} read back other bytes than were written");
            return Err(FAILED);
        }
    }
    Ok(())
}

/// Sends `frames` broadcast frames, each numbered, waiting for transmit buffers as needed.
fn pump_frames(frames: u64) -> Result<(), ExitCode> {
    let mut net = netdev::NetDevice::open().map_err(|error| {
        println!("pump: {error}");
        NO_NETWORK
    })?;
    let mac = net.mac_address();
    for number in 0..frames {
        let mut frame = loop {
            if let Some(frame) = net.tx_frame(64) {
                break frame;
            }
            event::wait_until(Some(Instant::from_since_reset(Instant::now().since_reset() + TX_WAIT)));
            net.ack_interrupt();
        };
        let packet = frame.packet_mut();
        packet[..6].fill(0xff);
        packet[6..12].copy_from_slice(&mac);
        packet[12..14].copy_from_slice(&ETHERTYPE_EXPERIMENTAL);
        packet[14..22].copy_from_slice(&number.to_le_bytes());
        net.transmit(frame);
    }
    if net.dropped() > 0 {
        println!("pump: the device refused {} of {frames} frames", net.dropped());
        return Err(FAILED);
    }
    Ok(())
}
