//! A platform with a simulated clock, for running the stack deterministically off the hardware.
//!
//! [`Simulated`] wraps any smoltcp device (smoltcp's `Loopback`, optionally behind its
//! `FaultInjector` for seeded loss). Its clock only moves when the stack sleeps: sleeping until a
//! deadline jumps the clock there, so a test of a 30-second timeout takes microseconds and gives
//! the same result every run. A frame sent since the device last came up empty plays the part of
//! a device interrupt: the sleep returns at once without moving the clock, so the frame is
//! received at the time it was sent, as it would be on a fast real link.

use core::cell::Cell;

use smoltcp::{
    phy::{self, Device, DeviceCapabilities, PacketMeta},
    time::{Duration, Instant},
};

use crate::Platform;

/// A device and a simulated clock.
#[derive(Debug)]
pub struct Simulated<D> {
    wire: Wire<D>,
    now: Instant,
    /// How far a sleep without a deadline moves the clock.
    idle_step: Duration,
}

impl<D: Device> Simulated<D> {
    /// `device` with the clock at zero.
    pub fn new(device: D) -> Simulated<D> {
        let wire = Wire { inner: device, frame_sent: Cell::new(false) };
        Simulated { wire, now: Instant::ZERO, idle_step: Duration::from_millis(1) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// The device, for inspection or fault injection.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.wire.inner
    }
}

impl<D: Device> Platform for Simulated<D> {
    type Device = Wire<D>;

    fn device(&mut self) -> &mut Wire<D> {
        &mut self.wire
    }

    fn now(&self) -> Instant {
        self.now
    }

    /// Returns at once if a frame may be waiting; otherwise jumps the clock to `deadline`, or by a
    /// millisecond when there is none.
    fn sleep_until(&mut self, deadline: Option<Instant>) {
        if self.wire.frame_sent.get() {
            return;
        }
        self.now = match deadline {
            Some(deadline) => deadline.max(self.now),
            None => self.now + self.idle_step,
        };
    }
}

/// The simulated device: the wrapped device, plus a note of frames sent since it last had
/// nothing to receive.
#[derive(Debug)]
pub struct Wire<D> {
    inner: D,
    frame_sent: Cell<bool>,
}

impl<D: Device> Device for Wire<D> {
    type RxToken<'a>
        = D::RxToken<'a>
    where
        D: 'a;
    type TxToken<'a>
        = WireTx<'a, D::TxToken<'a>>
    where
        D: 'a;

    fn receive(&mut self, timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let flag = &self.frame_sent;
        match self.inner.receive(timestamp) {
            Some((rx, tx)) => Some((rx, WireTx { inner: tx, frame_sent: flag })),
            None => {
                flag.set(false);
                None
            }
        }
    }

    fn transmit(&mut self, timestamp: Instant) -> Option<Self::TxToken<'_>> {
        let flag = &self.frame_sent;
        self.inner.transmit(timestamp).map(|tx| WireTx { inner: tx, frame_sent: flag })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

/// A transmit token that notes the frame it sends.
#[derive(Debug)]
pub struct WireTx<'a, T> {
    inner: T,
    frame_sent: &'a Cell<bool>,
}

impl<T: phy::TxToken> phy::TxToken for WireTx<'_, T> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        self.frame_sent.set(true);
        self.inner.consume(len, f)
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.inner.set_meta(meta);
    }
}
