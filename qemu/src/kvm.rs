//! Whether KVM is usable here, and how tests that need it report its absence.
//!
//! x86_64 appliances run on QEMU `microvm` under KVM (their clock is kvmclock). Where `/dev/kvm` is
//! missing, a test that needs it prints why it is skipped; with `MAST_REQUIRE_KVM=1` (set by CI,
//! whose machines have KVM) a missing `/dev/kvm` fails the test instead, so CI can never pass by
//! silently skipping.

use std::{fs::OpenOptions, path::Path};

const KVM_DEVICE: &str = "/dev/kvm";

/// Why KVM cannot be used here, or `None` if it can.
pub fn unavailable_reason() -> Option<String> {
    if !Path::new(KVM_DEVICE).exists() {
        return Some(format!("{KVM_DEVICE} does not exist (no hardware virtualisation on this machine)"));
    }
    match OpenOptions::new().read(true).write(true).open(KVM_DEVICE) {
        Ok(_) => None,
        Err(e) => {
            Some(format!("{KVM_DEVICE} cannot be opened for reading and writing: {e} (add your user to the kvm group)"))
        }
    }
}

/// For a test that needs KVM: `true` if it may run. Otherwise prints why the test is skipped and
/// returns `false`, or panics when `MAST_REQUIRE_KVM=1` says skipping is not acceptable.
pub fn available_for(test: &str) -> bool {
    let Some(reason) = unavailable_reason() else { return true };
    if std::env::var("MAST_REQUIRE_KVM").is_ok_and(|v| v == "1") {
        panic!("{test} needs KVM and MAST_REQUIRE_KVM=1, but {reason}");
    }
    eprintln!("skipped {test}: x86_64 appliances run under KVM, and {reason}");
    false
}
