//! The panic handler: report the message and location, then power off with status 101.

use core::panic::PanicInfo;

use crate::{console, exit::ExitCode};

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => console::emergency_print(format_args!(
            "\npanicked at {}:{}:{}:\n{}\n",
            at.file(),
            at.line(),
            at.column(),
            info.message()
        )),
        None => console::emergency_print(format_args!("\npanicked:\n{}\n", info.message())),
    }
    crate::boot::power_off(ExitCode::PANIC)
}
