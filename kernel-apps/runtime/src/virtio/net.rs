//! The virtio-net driver: Ethernet frames in and out, without copies or allocation per frame.
//!
//! Built on `virtio-drivers`' raw driver, which leaves buffer ownership to the caller. The device
//! owns [`QUEUE_SIZE`] receive buffers at all times: [`NetDevice::receive`] lends one out as an
//! [`RxFrame`] and [`NetDevice::recycle`] gives it back to the device. Transmission never waits:
//! [`NetDevice::tx_frame`] hands out one of [`QUEUE_SIZE`] transmit buffers (reclaiming those the
//! device has finished with), [`NetDevice::transmit`] queues it and notifies the device.
//!
//! The device's interrupt is enabled when it is opened; it wakes the event loop's sleep
//! ([`crate::event`]), after which [`NetDevice::ack_interrupt`] lowers it.
//!
//! # Not supported
//! - Offloads (checksum, segmentation), mergeable receive buffers, multiqueue, the control queue,
//!   and frames larger than a standard 1514-byte Ethernet frame.

use alloc::{boxed::Box, vec::Vec};
use core::fmt;

use virtio_drivers::{device::net::VirtIONetRaw, transport::DeviceType, transport::mmio::MmioTransport};

use super::{ClaimError, Hal, claim};
use crate::arch;

/// Buffers in each direction (and descriptors in each virtqueue). QEMU offers 256; 64 absorbs a
/// burst of 64 frames between two polls at 96 KiB per direction.
pub const QUEUE_SIZE: usize = 64;
/// The largest Ethernet frame (without FCS) the driver carries.
pub const MAX_FRAME: usize = 1514;
/// One buffer: the 12-byte virtio-net header and a frame, rounded up to whole 64-byte cache lines
/// (see `arch::dma` for why buffers own their cache lines).
const BUFFER_SIZE: usize = 1536;
const BUFFER_ALIGN: usize = 64;

type Raw = VirtIONetRaw<Hal, MmioTransport<'static>, QUEUE_SIZE>;

/// A buffer that owns its cache lines.
#[repr(C, align(64))]
struct Buffer([u8; BUFFER_SIZE]);
const _: () = assert!(core::mem::align_of::<Buffer>() == BUFFER_ALIGN && BUFFER_SIZE.is_multiple_of(BUFFER_ALIGN));

fn new_buffer() -> Box<Buffer> {
    Box::new(Buffer([0; BUFFER_SIZE]))
}

/// Why the network device could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// No usable virtio-net device.
    Claim(ClaimError),
    /// The device refused to initialise.
    Driver(virtio_drivers::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Claim(e) => write!(f, "virtio-net: {e}"),
            OpenError::Driver(e) => write!(f, "virtio-net: the device failed to initialise: {e}"),
        }
    }
}

/// A received frame, lent by the device until [`NetDevice::recycle`].
pub struct RxFrame {
    buffer: Box<Buffer>,
    start: usize,
    len: usize,
}

impl RxFrame {
    /// The Ethernet frame.
    pub fn packet(&self) -> &[u8] {
        self.buffer.0.get(self.start..self.start + self.len).unwrap_or(&[])
    }
}

impl fmt::Debug for RxFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RxFrame").field("len", &self.len).finish()
    }
}

/// A frame being built for transmission.
pub struct TxFrame {
    buffer: Box<Buffer>,
    header: usize,
    len: usize,
}

impl TxFrame {
    /// The frame's bytes, to fill in: as long as asked for in [`NetDevice::tx_frame`].
    pub fn packet_mut(&mut self) -> &mut [u8] {
        self.buffer.0.get_mut(self.header..self.header + self.len).unwrap_or(&mut [])
    }
}

impl fmt::Debug for TxFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxFrame").field("len", &self.len).finish()
    }
}

/// A virtio-net device.
pub struct NetDevice {
    raw: Raw,
    /// Receive buffers the device holds, by descriptor token.
    rx: [Option<Box<Buffer>>; QUEUE_SIZE],
    /// Transmit buffers the device holds, by descriptor token, with the length handed over.
    tx_busy: [Option<(Box<Buffer>, usize)>; QUEUE_SIZE],
    /// Boxed, like all buffers: a buffer must stay put while the device holds it, and buffers
    /// pass between this list and `tx_busy`, inside a driver that itself moves.
    #[allow(clippy::vec_box)]
    tx_free: Vec<Box<Buffer>>,
    /// Transmit buffers allocated so far: they are made on demand, up to [`QUEUE_SIZE`], so an
    /// appliance that sends little never pays for (or zeroes) the rest.
    tx_allocated: usize,
    irq: u32,
    interrupts: bool,
    dropped: u64,
}

impl fmt::Debug for NetDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetDevice").field("irq", &self.irq).field("interrupts", &self.interrupts).finish()
    }
}

impl NetDevice {
    /// Claims the first virtio-net device, fills its receive queue and enables its interrupt.
    pub fn open() -> Result<NetDevice, OpenError> {
        let (transport, slot) = claim(DeviceType::Network).map_err(OpenError::Claim)?;
        let raw = Raw::new(transport).map_err(OpenError::Driver)?;
        let mut device = NetDevice {
            raw,
            rx: [const { None }; QUEUE_SIZE],
            tx_busy: [const { None }; QUEUE_SIZE],
            tx_free: Vec::with_capacity(QUEUE_SIZE),
            tx_allocated: 0,
            irq: slot.irq,
            interrupts: false,
            dropped: 0,
        };
        for _ in 0..QUEUE_SIZE {
            device.give_rx(new_buffer()).map_err(OpenError::Driver)?;
        }
        device.interrupts = arch::irq::enable(slot.irq);
        Ok(device)
    }

    /// The device's MAC address.
    pub fn mac_address(&self) -> [u8; 6] {
        self.raw.mac_address()
    }

    /// Whether the device's interrupt can wake the event loop (if not, the loop must poll).
    pub fn has_interrupts(&self) -> bool {
        self.interrupts
    }

    /// Frames dropped because no transmit buffer was free.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Acknowledges the device's interrupt, so its line drops until there is news. Call it after
    /// waking and before looking at the queues, so that nothing arriving in between is missed.
    pub fn ack_interrupt(&mut self) {
        let _ = self.raw.ack_interrupt();
    }

    fn give_rx(&mut self, mut buffer: Box<Buffer>) -> Result<(), virtio_drivers::Error> {
        // SAFETY: the buffer is kept in `self.rx` under the returned token, untouched, until the
        // device returns that token and `receive` takes it back with `receive_complete`.
        let token = unsafe { self.raw.receive_begin(&mut buffer.0)? };
        match self.rx.get_mut(usize::from(token)) {
            Some(slot) => {
                *slot = Some(buffer);
                Ok(())
            }
            // Tokens are descriptor indices, below QUEUE_SIZE; anything else is a driver bug.
            None => Err(virtio_drivers::Error::WrongToken),
        }
    }

    /// The next received frame, if one has arrived.
    pub fn receive(&mut self) -> Option<RxFrame> {
        let token = self.raw.poll_receive()?;
        let mut buffer = self.rx.get_mut(usize::from(token))?.take()?;
        // SAFETY: `buffer` is the one handed to the device under this token by `give_rx`.
        match unsafe { self.raw.receive_complete(token, &mut buffer.0) } {
            Ok((header, len)) => Some(RxFrame { buffer, start: header, len: len.min(BUFFER_SIZE - header) }),
            Err(_) => {
                // The device returned a malformed completion; give the buffer back and move on.
                let _ = self.give_rx(buffer);
                None
            }
        }
    }

    /// Gives a received frame's buffer back to the device.
    pub fn recycle(&mut self, frame: RxFrame) {
        // Fails only if the queue were full, which it cannot be while this buffer is out.
        let _ = self.give_rx(frame.buffer);
    }

    /// Takes back the transmit buffers the device has finished with.
    fn reclaim(&mut self) {
        while let Some(token) = self.raw.poll_transmit() {
            let Some((buffer, len)) = self.tx_busy.get_mut(usize::from(token)).and_then(Option::take) else { break };
            // SAFETY: the same buffer and length that `transmit` passed to `transmit_begin` under
            // this token.
            let _ = unsafe { self.raw.transmit_complete(token, &buffer.0[..len]) };
            self.tx_free.push(buffer);
        }
    }

    /// Whether a frame could be transmitted now.
    pub fn can_transmit(&mut self) -> bool {
        self.reclaim();
        if self.tx_free.is_empty() && self.tx_allocated < QUEUE_SIZE {
            self.tx_free.push(new_buffer());
            self.tx_allocated += 1;
        }
        !self.tx_free.is_empty() && self.raw.can_send()
    }

    /// A buffer for a frame of `len` bytes (at most [`MAX_FRAME`]), if one is free.
    pub fn tx_frame(&mut self, len: usize) -> Option<TxFrame> {
        if len > MAX_FRAME || !self.can_transmit() {
            return None;
        }
        let mut buffer = self.tx_free.pop()?;
        match self.raw.fill_buffer_header(&mut buffer.0) {
            Ok(header) => Some(TxFrame { buffer, header, len }),
            Err(_) => {
                self.tx_free.push(buffer);
                None
            }
        }
    }

    /// Queues a frame for transmission and notifies the device.
    pub fn transmit(&mut self, frame: TxFrame) {
        let len = frame.header + frame.len;
        let buffer = frame.buffer;
        // SAFETY: the buffer is kept in `self.tx_busy` under the returned token, untouched, until
        // `reclaim` sees the token completed and passes the same slice to `transmit_complete`.
        match unsafe { self.raw.transmit_begin(&buffer.0[..len]) } {
            Ok(token) => match self.tx_busy.get_mut(usize::from(token)) {
                Some(slot) => *slot = Some((buffer, len)),
                None => {
                    // Tokens are descriptor indices, below QUEUE_SIZE. Should a driver bug break
                    // that, the device may still read the buffer: leak it rather than free it.
                    Box::leak(buffer);
                    self.dropped += 1;
                }
            },
            Err(_) => {
                self.dropped += 1;
                self.tx_free.push(buffer);
            }
        }
    }

    /// Counts a frame that could not be sent for want of a buffer.
    pub fn count_dropped(&mut self) {
        self.dropped += 1;
    }
}
