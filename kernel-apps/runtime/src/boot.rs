//! The shared boot path: from the architecture's hand-off to the appliance's entry function.

use alloc::{string::String, vec::Vec};
use core::{ops::Range, time::Duration};

use crate::{arch, args, bundle::Bundle, console, exit::ExitCode, heap, println, time::Instant};

/// What the architecture tells the shared boot path. Built by `arch::*` before the heap exists.
pub(crate) struct BootInfo {
    /// The machine, in words, for the boot banner (e.g. `"qemu-virt"`).
    pub platform: &'static str,
    /// The kernel command line. It must not lie inside `heap`: it is read after the heap starts.
    pub cmdline: &'static str,
    /// All RAM the platform reported, for the banner.
    pub ram_bytes: usize,
    /// Free RAM for the heap: excludes the image, stack, page tables and boot data.
    pub heap: Range<usize>,
    /// A second, smaller free region for the heap, disjoint from `heap` (empty if none): free RAM
    /// on the other side of the image.
    pub more_heap: Range<usize>,
    /// The clock when the first instruction of the appliance ran.
    pub entry: Instant,
    /// The data bundle the loader placed in RAM (the initrd), outside `heap` and never written.
    pub data: Option<&'static [u8]>,
}

/// Boot timestamps, as durations since the machine was reset.
#[derive(Clone, Copy, Debug)]
pub struct BootTimes {
    /// When the appliance's first instruction ran (reset → firmware → loader → us).
    pub entry: Duration,
    /// When the appliance's entry function was called.
    pub main: Duration,
}

/// What an appliance receives from the runtime.
#[derive(Debug)]
pub struct Context {
    args: Vec<String>,
    platform: &'static str,
    ram_bytes: usize,
    boot: BootTimes,
    data: Option<Bundle<'static>>,
}

impl Context {
    /// The command-line arguments, split as [`crate::args::split`] describes, without the ones the
    /// runtime owns ([`crate::args::appliance_args`]).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The machine this appliance booted on, in words.
    pub fn platform(&self) -> &'static str {
        self.platform
    }

    /// Total RAM the platform reported, in bytes.
    pub fn ram_bytes(&self) -> usize {
        self.ram_bytes
    }

    /// Free heap bytes right now.
    pub fn heap_free_bytes(&self) -> usize {
        heap::free_bytes()
    }

    /// When boot reached the appliance's first instruction and its entry function.
    pub fn boot_times(&self) -> BootTimes {
        self.boot
    }

    /// The appliance's data files (its image's data part, loaded as the initrd), if it has any.
    pub fn data(&self) -> Option<&Bundle<'static>> {
        self.data.as_ref()
    }
}

unsafe extern "Rust" {
    /// Defined by the appliance through `runtime::entry!`.
    fn __mast_app_main(ctx: &mut Context) -> ExitCode;
}

/// Continues the boot on any architecture, runs the appliance, and powers off with its status.
pub(crate) fn start(info: BootInfo) -> ! {
    if info.heap.is_empty() {
        println!("mast: no free RAM for the heap");
        power_off(ExitCode::BOOT_FAILURE);
    }
    // SAFETY: the architecture built `info.heap` and `info.more_heap` to exclude everything still in
    // use, and disjoint (see BootInfo). The larger goes first.
    unsafe {
        heap::add(info.heap.clone());
        heap::add(info.more_heap.clone());
    }

    let data = match info.data.map(Bundle::parse).transpose() {
        Ok(data) => data,
        Err(problem) => {
            println!("mast: the initrd is not a usable data bundle: {problem}");
            power_off(ExitCode::BOOT_FAILURE);
        }
    };
    let mut ctx = Context {
        args: args::appliance_args(info.cmdline),
        platform: info.platform,
        ram_bytes: info.ram_bytes,
        boot: BootTimes { entry: info.entry.since_reset(), main: Duration::ZERO },
        data,
    };
    ctx.boot.main = Instant::now().since_reset();
    // SAFETY: `entry!` defines this symbol with exactly this signature; there is one per appliance,
    // and a missing one fails the link rather than running.
    let status = unsafe { __mast_app_main(&mut ctx) };
    power_off(status)
}

/// Reports the status on the console and powers the machine off with it.
pub(crate) fn power_off(status: ExitCode) -> ! {
    console::emergency_print(format_args!("mast: exit status {}\n", status.0));
    arch::exit(status)
}
