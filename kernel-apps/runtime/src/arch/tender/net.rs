//! The tender's network device: Ethernet frames through two rings in guest memory.
//!
//! [`NetDevice::open`] places an [`abi::NetRings`] on the heap (page-aligned, 128 KiB, and not
//! zeroed: only the ring counters are written, and a slot's page is touched when a frame first
//! uses it) and registers it with one `NetAttach` hypercall. From then on no frame costs an exit:
//! the guest produces transmit frames and consumes received ones in the rings, and the tender
//! moves them during the event loop's `Poll` ([`super::wait`]). The tender touches the rings only
//! while the vCPU is stopped in a hypercall, so plain memory accesses suffice.
//!
//! The shape is that of the virtio-net driver (`crate::virtio::net`), so `crate::netdev` can offer
//! either: a received frame is lent in place as an [`RxFrame`] until [`NetDevice::recycle`] (or
//! its drop), a transmit frame is built in place in a [`TxFrame`] and published by
//! [`NetDevice::transmit`]. When the transmit ring is full, [`NetDevice::can_transmit`] polls the
//! tender once without blocking, which drains it (the virtio driver's "notify").
//!
//! # Not supported
//! - More than one device, offloads, and frames above [`MAX_FRAME`] bytes.

use alloc::alloc::{Layout, alloc, dealloc};
use core::{
    fmt,
    ptr::{NonNull, addr_of, addr_of_mut},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
};

use super::abi;

/// Frames in each ring.
pub const QUEUE_SIZE: usize = abi::NET_RING_SLOTS;
/// The largest Ethernet frame (without FCS) the device carries.
pub const MAX_FRAME: usize = abi::NET_MAX_FRAME;

const SLOT_MASK: u32 = QUEUE_SIZE as u32 - 1;

/// The device is a singleton: the tender has one ring pair per guest.
static OPENED: AtomicBool = AtomicBool::new(false);
/// Receive slots whose [`RxFrame`] has been given back (or dropped), one bit per slot, until the
/// ring's `consumed` counter passes them.
static RX_RETURNED: AtomicU32 = AtomicU32::new(0);
/// Whether a [`TxFrame`] is out: there is one transmit slot being filled at a time.
static TX_LENT: AtomicBool = AtomicBool::new(false);

/// Why the network device could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The tender attached no network interface to this appliance.
    NoDevice,
    /// The device is already open.
    AlreadyOpen,
    /// No heap for the rings.
    OutOfMemory,
    /// The tender refused the rings (its result code).
    Refused(i32),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NoDevice => f.write_str("tender net: no network interface (was the tender given a tap device?)"),
            OpenError::AlreadyOpen => f.write_str("tender net: the device is already open"),
            OpenError::OutOfMemory => f.write_str("tender net: no memory for the rings"),
            OpenError::Refused(code) => write!(f, "tender net: the tender refused the rings (result {code})"),
        }
    }
}

/// A received frame, lent in place until [`NetDevice::recycle`] or its drop.
pub struct RxFrame {
    frame: NonNull<u8>,
    len: usize,
    slot: u32,
}

impl RxFrame {
    /// The Ethernet frame.
    pub fn packet(&self) -> &[u8] {
        // SAFETY: `frame` points at the frame bytes of a receive slot holding `len` (at most the
        // slot's size) bytes; the slot is the guest's until this frame is returned (the ring's
        // `consumed` does not pass it before), so the tender does not write it meanwhile.
        unsafe { core::slice::from_raw_parts(self.frame.as_ptr(), self.len) }
    }
}

impl Drop for RxFrame {
    fn drop(&mut self) {
        RX_RETURNED.fetch_or(1 << self.slot, Ordering::Relaxed);
    }
}

impl fmt::Debug for RxFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RxFrame").field("len", &self.len).finish()
    }
}

/// A frame being built in place in the transmit ring.
pub struct TxFrame {
    frame: NonNull<u8>,
    len: usize,
    /// The frame's number in the ring (its `produced` value when handed out).
    sequence: u32,
}

impl TxFrame {
    /// The frame's bytes, to fill in: as long as asked for in [`NetDevice::tx_frame`].
    pub fn packet_mut(&mut self) -> &mut [u8] {
        // SAFETY: `frame` points at the frame bytes of the transmit slot after the last published
        // frame, at least `len` (at most MAX_FRAME) long; the tender reads only published slots,
        // and only one TxFrame exists at a time (TX_LENT), so this is the only reference to them.
        unsafe { core::slice::from_raw_parts_mut(self.frame.as_ptr(), self.len) }
    }
}

impl Drop for TxFrame {
    fn drop(&mut self) {
        TX_LENT.store(false, Ordering::Relaxed);
    }
}

impl fmt::Debug for TxFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxFrame").field("len", &self.len).finish()
    }
}

/// The tender's network device.
pub struct NetDevice {
    rings: NonNull<abi::NetRings>,
    mac: [u8; 6],
    /// The next receive frame to lend out; `consumed <= rx_next <= produced` (wrapping).
    rx_next: u32,
    dropped: u64,
}

impl fmt::Debug for NetDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetDevice").field("mac", &self.mac).field("dropped", &self.dropped).finish_non_exhaustive()
    }
}

fn rings_layout() -> Layout {
    // The ABI asks for page alignment; the size is a constant, so this cannot fail.
    Layout::new::<abi::NetRings>().align_to(abi::PAGE_SIZE as usize).unwrap_or(Layout::new::<abi::NetRings>())
}

impl NetDevice {
    /// Places the rings and attaches them to the tender's network interface.
    pub fn open() -> Result<NetDevice, OpenError> {
        let info = super::boot_info().ok_or(OpenError::NoDevice)?;
        if info.flags & abi::FLAG_NET == 0 {
            return Err(OpenError::NoDevice);
        }
        if OPENED.swap(true, Ordering::AcqRel) {
            return Err(OpenError::AlreadyOpen);
        }
        let layout = rings_layout();
        // SAFETY: the layout has a non-zero size. The memory is not zeroed on purpose: only the
        // counters are read before a slot is written, and they are initialised below.
        let Some(rings) = NonNull::new(unsafe { alloc(layout) }.cast::<abi::NetRings>()) else {
            OPENED.store(false, Ordering::Release);
            return Err(OpenError::OutOfMemory);
        };
        let r = rings.as_ptr();
        // SAFETY: `r` is a fresh, aligned allocation of a whole NetRings; the counters are plain
        // integers, written through raw pointers so no reference to uninitialised slots exists.
        unsafe {
            addr_of_mut!((*r).tx.produced).write(0);
            addr_of_mut!((*r).tx.consumed).write(0);
            addr_of_mut!((*r).tx._reserved).write([0; 2]);
            addr_of_mut!((*r).rx.produced).write(0);
            addr_of_mut!((*r).rx.consumed).write(0);
            addr_of_mut!((*r).rx._reserved).write([0; 2]);
        }
        let mut attach =
            abi::NetAttach { rings: r.expose_provenance() as u64, result: abi::RESULT_NO_DEVICE, _reserved: 0 };
        super::hypercall(abi::Hypercall::NetAttach, &mut attach);
        if attach.result != abi::RESULT_OK {
            // SAFETY: allocated above with this layout, and the tender refused it, so nothing
            // else refers to it.
            unsafe { dealloc(r.cast(), layout) };
            OPENED.store(false, Ordering::Release);
            return Err(if attach.result == abi::RESULT_NO_DEVICE {
                OpenError::NoDevice
            } else {
                OpenError::Refused(attach.result)
            });
        }
        Ok(NetDevice { rings, mac: info.net_mac, rx_next: 0, dropped: 0 })
    }

    /// The interface's MAC address, as the tender assigned it.
    pub fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    /// Always true: the event loop's `Poll` returns when a frame arrives.
    pub fn has_interrupts(&self) -> bool {
        true
    }

    /// Frames dropped because the transmit ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Nothing to acknowledge: `Poll` is the interrupt.
    pub fn ack_interrupt(&mut self) {}

    fn ring_counter(&self, counter: *const u32) -> u32 {
        // SAFETY: `counter` points into the live rings this device owns; the tender writes them only
        // during hypercalls, which the compiler treats as memory accesses, so a volatile read sees
        // its last write.
        unsafe { counter.read_volatile() }
    }

    /// Moves the receive ring's `consumed` past the frames given back in order.
    fn reap_rx(&mut self) {
        let r = self.rings.as_ptr();
        // SAFETY: a field of the live rings (see `ring_counter`).
        let mut consumed = self.ring_counter(unsafe { addr_of!((*r).rx.consumed) });
        let returned = RX_RETURNED.load(Ordering::Relaxed);
        let mut cleared = 0u32;
        while consumed != self.rx_next && returned & (1 << (consumed & SLOT_MASK)) != 0 {
            cleared |= 1 << (consumed & SLOT_MASK);
            consumed = consumed.wrapping_add(1);
        }
        if cleared != 0 {
            RX_RETURNED.fetch_and(!cleared, Ordering::Relaxed);
            // SAFETY: a field of the live rings; only the guest, the consumer, advances it.
            unsafe { addr_of_mut!((*r).rx.consumed).write_volatile(consumed) };
        }
    }

    /// The next received frame, if one has arrived.
    pub fn receive(&mut self) -> Option<RxFrame> {
        self.reap_rx();
        let r = self.rings.as_ptr();
        // SAFETY: a field of the live rings (see `ring_counter`).
        let produced = self.ring_counter(unsafe { addr_of!((*r).rx.produced) });
        let waiting = produced.wrapping_sub(self.rx_next);
        // More than a ring's worth would mean the tender broke the ring; take nothing then.
        if waiting == 0 || waiting > QUEUE_SIZE as u32 {
            return None;
        }
        let slot = self.rx_next & SLOT_MASK;
        // SAFETY: `slot` is below NET_RING_SLOTS; the slot is produced and not yet consumed, so it
        // is the guest's to read.
        let (len, frame) = unsafe {
            let entry = addr_of_mut!((*r).rx.slots[slot as usize]);
            (addr_of!((*entry).len).read_volatile() as usize, addr_of_mut!((*entry).frame).cast::<u8>())
        };
        self.rx_next = self.rx_next.wrapping_add(1);
        let frame = NonNull::new(frame)?;
        Some(RxFrame { frame, len: len.min(MAX_FRAME), slot })
    }

    /// Gives a received frame's slot back to the tender.
    pub fn recycle(&mut self, frame: RxFrame) {
        drop(frame);
        self.reap_rx();
    }

    fn tx_free(&self) -> bool {
        let r = self.rings.as_ptr();
        // SAFETY: fields of the live rings (see `ring_counter`).
        let (produced, consumed) =
            unsafe { (self.ring_counter(addr_of!((*r).tx.produced)), self.ring_counter(addr_of!((*r).tx.consumed))) };
        produced.wrapping_sub(consumed) < QUEUE_SIZE as u32
    }

    /// Whether a frame could be transmitted now. A full ring is drained first by a non-blocking poll.
    pub fn can_transmit(&mut self) -> bool {
        if TX_LENT.load(Ordering::Relaxed) {
            return false;
        }
        if !self.tx_free() {
            super::poll(0);
        }
        self.tx_free()
    }

    /// A slot for a frame of `len` bytes (at most [`MAX_FRAME`]), if one is free.
    pub fn tx_frame(&mut self, len: usize) -> Option<TxFrame> {
        if len > MAX_FRAME || !self.can_transmit() {
            return None;
        }
        let r = self.rings.as_ptr();
        // SAFETY: a field of the live rings (see `ring_counter`).
        let sequence = self.ring_counter(unsafe { addr_of!((*r).tx.produced) });
        // SAFETY: the slot index is below NET_RING_SLOTS; the slot after the last published frame
        // is free (checked by `can_transmit`), so the guest may write it.
        let frame = unsafe { addr_of_mut!((*r).tx.slots[(sequence & SLOT_MASK) as usize].frame).cast::<u8>() };
        let frame = NonNull::new(frame)?;
        TX_LENT.store(true, Ordering::Relaxed);
        Some(TxFrame { frame, len, sequence })
    }

    /// Publishes a frame; the tender sends it at the next poll.
    pub fn transmit(&mut self, frame: TxFrame) {
        let r = self.rings.as_ptr();
        // SAFETY: a field of the live rings (see `ring_counter`).
        let produced = self.ring_counter(unsafe { addr_of!((*r).tx.produced) });
        if frame.sequence != produced {
            self.dropped += 1;
            return;
        }
        // SAFETY: the frame's slot is the free one after the last published frame; its length is
        // at most MAX_FRAME, which fits the field; only the guest, the producer, advances
        // `produced`.
        unsafe {
            addr_of_mut!((*r).tx.slots[(produced & SLOT_MASK) as usize].len).write_volatile(frame.len as u32);
            addr_of_mut!((*r).tx.produced).write_volatile(produced.wrapping_add(1));
        }
    }

    /// Counts a frame that could not be sent for want of a slot.
    pub fn count_dropped(&mut self) {
        self.dropped += 1;
    }
}
