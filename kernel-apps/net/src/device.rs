//! The stack on the machine: smoltcp over the runtime's network device ([`runtime::netdev`]:
//! virtio-net on QEMU, the tender's rings on the tender), sleeping in the runtime's event-loop
//! wait. Nothing here knows which platform it runs on.

use core::{cell::RefCell, fmt};

use runtime::netdev::{MAX_FRAME, NetDevice, QUEUE_SIZE, RxFrame};
use smoltcp::{
    phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium},
    time::Instant,
};

use crate::{IpConfig, Platform, Stack};

/// The stack over the machine's network device.
pub type Net = Stack<RuntimePlatform>;

/// Why the network could not be opened.
#[derive(Debug)]
pub struct OpenError(runtime::netdev::OpenError);

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Stack<RuntimePlatform> {
    /// Opens the machine's network device and a stack on it, configured by `config`.
    pub fn open(config: IpConfig) -> Result<Net, OpenError> {
        let nic = NetDevice::open().map_err(OpenError)?;
        let mac = nic.mac_address();
        let platform = RuntimePlatform { device: RuntimeDevice { nic: RefCell::new(nic) } };
        Ok(Stack::new(platform, mac, config))
    }

    /// Whether the device's interrupt wakes the event loop. Without it (a machine with no
    /// interrupt controller the runtime drives) [`Stack::wait`] returns at once and the loop polls.
    pub fn has_interrupts(&self) -> bool {
        self.platform.device.nic.borrow().has_interrupts()
    }
}

/// The runtime as a [`Platform`]: its network device, the monotonic clock, and the event-loop wait.
#[derive(Debug)]
pub struct RuntimePlatform {
    device: RuntimeDevice,
}

impl Platform for RuntimePlatform {
    type Device = RuntimeDevice;

    fn device(&mut self) -> &mut RuntimeDevice {
        &mut self.device
    }

    fn now(&self) -> Instant {
        to_smoltcp(runtime::time::Instant::now())
    }

    fn sleep_until(&mut self, deadline: Option<Instant>) {
        let deadline = deadline.map(|d| {
            let micros = u64::try_from(d.total_micros()).unwrap_or(0);
            runtime::time::Instant::from_since_reset(core::time::Duration::from_micros(micros))
        });
        runtime::event::wait_until(deadline);
        // The wake may be the device's interrupt: lower it before the stack looks at the queues,
        // so a frame that arrives after the look raises it again.
        self.device.nic.get_mut().ack_interrupt();
    }
}

fn to_smoltcp(instant: runtime::time::Instant) -> Instant {
    Instant::from_micros(i64::try_from(instant.since_reset().as_micros()).unwrap_or(i64::MAX))
}

/// The runtime's network device as a smoltcp device. The driver sits in a `RefCell` because smoltcp holds a
/// receive and a transmit token at once (to answer a frame while handling it); each token borrows
/// the driver only inside its own `consume`, and a received frame is owned by its token, so the
/// borrows never overlap.
#[derive(Debug)]
pub struct RuntimeDevice {
    nic: RefCell<NetDevice>,
}

impl phy::Device for RuntimeDevice {
    type RxToken<'a> = RuntimeRx<'a>;
    type TxToken<'a> = RuntimeTx<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RuntimeRx<'_>, RuntimeTx<'_>)> {
        let frame = self.nic.get_mut().receive()?;
        Some((RuntimeRx { nic: &self.nic, frame }, RuntimeTx { nic: &self.nic }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<RuntimeTx<'_>> {
        self.nic.get_mut().can_transmit().then_some(RuntimeTx { nic: &self.nic })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = Some(QUEUE_SIZE / 2);
        // No offloads are negotiated: smoltcp computes and checks every checksum.
        caps.checksum = ChecksumCapabilities::default();
        caps.checksum.ipv4 = Checksum::Both;
        caps
    }
}

/// A received frame, returned to the device after smoltcp has read it.
#[derive(Debug)]
pub struct RuntimeRx<'a> {
    nic: &'a RefCell<NetDevice>,
    frame: RxFrame,
}

impl phy::RxToken for RuntimeRx<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let result = f(self.frame.packet());
        self.nic.borrow_mut().recycle(self.frame);
        result
    }
}

/// Permission to transmit one frame.
#[derive(Debug)]
pub struct RuntimeTx<'a> {
    nic: &'a RefCell<NetDevice>,
}

impl phy::TxToken for RuntimeTx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut nic = self.nic.borrow_mut();
        match nic.tx_frame(len) {
            Some(mut frame) => {
                let result = f(frame.packet_mut());
                nic.transmit(frame);
                result
            }
            None => {
                // No buffer (a token paired with a received frame is handed out without checking)
                // or an oversized frame: build it somewhere and drop it, as a full link would.
                // TCP retransmits; the count shows up in `NetDevice::dropped`.
                nic.count_dropped();
                drop(nic);
                let mut scratch = alloc::vec![0u8; len];
                f(&mut scratch)
            }
        }
    }
}
