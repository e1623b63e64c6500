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
    match unavailable_reason() {
        None => true,
        Some(reason) => skip(test, &format!("x86_64 appliances run under KVM, and {reason}")),
    }
}

/// Whether skipping a test for want of KVM (or of what CI machines have with it: root, an x86_64
/// host) is forbidden: `MAST_REQUIRE_KVM=1`.
pub fn required() -> bool {
    std::env::var("MAST_REQUIRE_KVM").is_ok_and(|v| v == "1")
}

/// For a test that cannot run here because of `reason` (no KVM, the wrong host architecture):
/// panics under `MAST_REQUIRE_KVM=1`, checked before anything else so that CI cannot pass by
/// skipping; otherwise prints why the test is skipped and returns `false`, for
/// `if !kvm::skip(…) { return; }`-style callers.
pub fn skip(test: &str, reason: &str) -> bool {
    if required() {
        panic!("{test} cannot run here and MAST_REQUIRE_KVM=1 forbids skipping it: {reason}");
    }
    eprintln!("skipped {test}: {reason}");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipping_returns_false_or_panics_when_kvm_is_required() {
        // The variable is the process's: decide what this run must see, and check that.
        let outcome = std::panic::catch_unwind(|| skip("a test", "the wrong host"));
        if required() {
            assert!(outcome.is_err(), "MAST_REQUIRE_KVM=1 must turn a skip into a failure");
        } else {
            assert_eq!(outcome.ok(), Some(false));
        }
    }
}
