//! x86_64 CPU exceptions in words: vector names, error codes and page-fault addresses.
//!
//! Pure decoding, no hardware access: `arch::x86_64` catches the exception, reads the registers
//! and formats an [`Exception`] into its report. The names and bit layouts follow the Intel SDM,
//! volume 3, chapter 6 ("Interrupt and Exception Handling"), with AMD's additions (#HV, #VC, #SX).
//!
//! Only the 32 architectural exception vectors are described; the runtime installs no handlers for
//! external interrupts.

use core::fmt;
use core::ops::Range;

/// The number of architectural exception vectors (0–31).
pub const VECTORS: usize = 32;

/// The double-fault vector, which gets its own stack.
pub const DOUBLE_FAULT: u8 = 8;
/// The page-fault vector, for which CR2 holds the faulting address.
pub const PAGE_FAULT: u8 = 14;

/// The vector's name and mnemonic, e.g. `"page fault (#PF)"`.
pub const fn name(vector: u8) -> &'static str {
    match vector {
        0 => "divide error (#DE)",
        1 => "debug exception (#DB)",
        2 => "non-maskable interrupt (NMI)",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "BOUND range exceeded (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        8 => "double fault (#DF)",
        9 => "coprocessor segment overrun (vector 9, reserved)",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack-segment fault (#SS)",
        13 => "general protection fault (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating-point error (#MF)",
        17 => "alignment check (#AC)",
        18 => "machine check (#MC)",
        19 => "SIMD floating-point exception (#XM)",
        20 => "virtualization exception (#VE)",
        21 => "control-protection exception (#CP)",
        28 => "hypervisor injection exception (#HV)",
        29 => "VMM communication exception (#VC)",
        30 => "security exception (#SX)",
        15 | 22..=27 | 31 => "reserved exception vector",
        _ => "interrupt (not an exception vector)",
    }
}

/// Whether the CPU pushes an error code for this vector. The entry stubs push a dummy zero for
/// the others, so every frame has the same layout.
pub const fn pushes_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

/// An exception as the CPU reported it: the vector and its error code (zero where none is pushed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// The exception's vector number (0–31).
    pub vector: u8,
    /// The error code the CPU pushed, or zero.
    pub error_code: u64,
}

impl fmt::Display for Exception {
    /// The vector's name and, where the error code means something, what it says:
    /// `page fault (#PF): read of a non-present page in supervisor mode`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(name(self.vector))?;
        match self.vector {
            PAGE_FAULT => write!(f, ": {}", PageFaultError(self.error_code)),
            10..=13 if self.error_code != 0 => write!(f, ": {}", SelectorError(self.error_code)),
            21 => write!(f, ": {}", control_protection(self.error_code)),
            _ => Ok(()),
        }
    }
}

/// A page fault's error code in words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFaultError(pub u64);

impl PageFaultError {
    const PRESENT: u64 = 1 << 0;
    const WRITE: u64 = 1 << 1;
    const USER: u64 = 1 << 2;
    const RESERVED_BIT: u64 = 1 << 3;
    const INSTRUCTION_FETCH: u64 = 1 << 4;
    const PROTECTION_KEY: u64 = 1 << 5;
    const SHADOW_STACK: u64 = 1 << 6;
    const SGX: u64 = 1 << 15;
}

impl fmt::Display for PageFaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.0;
        let access = if code & Self::INSTRUCTION_FETCH != 0 {
            "instruction fetch from"
        } else if code & Self::WRITE != 0 {
            "write to"
        } else {
            "read of"
        };
        let page = if code & Self::PRESENT != 0 { "present" } else { "non-present" };
        let mode = if code & Self::USER != 0 { "user" } else { "supervisor" };
        write!(f, "{access} a {page} page in {mode} mode")?;
        if code & Self::PRESENT != 0 {
            f.write_str(" (a protection violation)")?;
        }
        for (bit, words) in [
            (Self::RESERVED_BIT, "; a reserved bit is set in a page-table entry"),
            (Self::PROTECTION_KEY, "; protection-key violation"),
            (Self::SHADOW_STACK, "; shadow-stack access"),
            (Self::SGX, "; SGX access-control violation"),
        ] {
            if code & bit != 0 {
                f.write_str(words)?;
            }
        }
        Ok(())
    }
}

/// The selector error code of #TS, #NP, #SS and #GP: which descriptor the CPU was loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectorError(pub u64);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.0;
        let index = (code >> 3) & 0x1fff;
        if code & 0b10 != 0 {
            write!(f, "while delivering IDT vector {index}")?;
        } else {
            let table = if code & 0b100 != 0 { "LDT" } else { "GDT" };
            write!(f, "segment selector {:#x} ({table} entry {index})", code & 0xfff8)?;
        }
        if code & 0b1 != 0 {
            f.write_str(", during delivery of an external event")?;
        }
        Ok(())
    }
}

/// The kind of control-flow violation a #CP reports.
const fn control_protection(code: u64) -> &'static str {
    match code & 0x7fff {
        1 => "near return address mismatch (NEAR-RET)",
        2 => "far return or IRET address mismatch (FAR-RET/IRET)",
        3 => "missing ENDBRANCH at an indirect branch target",
        4 => "invalid shadow-stack restore token (RSTORSSP)",
        5 => "shadow-stack token already busy (SETSSBSY)",
        _ => "unknown control-protection code",
    }
}

/// What a faulting address most likely means, given the pages this runtime leaves unmapped on
/// purpose: page 0, the guard pages under the stacks, and everything above the 4 GiB identity map.
pub fn address_hint(address: u64, stack_guards: &[Range<u64>]) -> Option<&'static str> {
    if address < 0x1000 {
        Some("a null pointer dereference (page 0 is never mapped)")
    } else if stack_guards.iter().any(|guard| guard.contains(&address)) {
        Some("a stack overflow (the address is in a stack guard page)")
    } else if address >= 1 << 32 {
        Some("an address above 4 GiB, outside the identity map")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(vector: u8, error_code: u64) -> String {
        Exception { vector, error_code }.to_string()
    }

    #[test]
    fn every_vector_has_a_name() {
        for vector in 0..VECTORS as u8 {
            assert!(!name(vector).is_empty());
        }
        assert_eq!(name(0), "divide error (#DE)");
        assert_eq!(name(6), "invalid opcode (#UD)");
        assert_eq!(name(15), "reserved exception vector");
        assert_eq!(name(32), "interrupt (not an exception vector)");
    }

    #[test]
    fn error_code_vectors_match_the_sdm() {
        let with_code: Vec<u8> = (0..32).filter(|&v| pushes_error_code(v)).collect();
        assert_eq!(with_code, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
    }

    #[test]
    fn page_fault_read_of_non_present_page() {
        assert_eq!(words(14, 0), "page fault (#PF): read of a non-present page in supervisor mode");
    }

    #[test]
    fn page_fault_write_and_fetch_and_protection() {
        assert_eq!(words(14, 0b111), "page fault (#PF): write to a present page in user mode (a protection violation)");
        assert_eq!(
            words(14, 0b1_0000),
            "page fault (#PF): instruction fetch from a non-present page in supervisor mode"
        );
        assert_eq!(
            words(14, 0b1001),
            "page fault (#PF): read of a present page in supervisor mode (a protection violation); \
             a reserved bit is set in a page-table entry"
        );
    }

    #[test]
    fn general_protection_with_and_without_selector() {
        assert_eq!(words(13, 0), "general protection fault (#GP)");
        assert_eq!(words(13, 0x18), "general protection fault (#GP): segment selector 0x18 (GDT entry 3)");
        assert_eq!(words(13, (3 << 3) | 0b10), "general protection fault (#GP): while delivering IDT vector 3");
        assert_eq!(
            words(11, 0x2c | 0b1),
            "segment not present (#NP): segment selector 0x28 (LDT entry 5), \
             during delivery of an external event"
        );
    }

    #[test]
    fn control_protection_kinds() {
        assert_eq!(words(21, 3), "control-protection exception (#CP): missing ENDBRANCH at an indirect branch target");
    }

    #[test]
    fn vectors_without_decoding_are_just_named() {
        assert_eq!(words(8, 0), "double fault (#DF)");
        assert_eq!(words(3, 0), "breakpoint (#BP)");
    }

    #[test]
    fn address_hints() {
        let guards = [0x10_0000..0x10_1000, 0x11_0000..0x11_1000];
        assert_eq!(address_hint(8, &guards), Some("a null pointer dereference (page 0 is never mapped)"));
        assert_eq!(address_hint(0x10_0ff8, &guards), Some("a stack overflow (the address is in a stack guard page)"));
        assert_eq!(address_hint(0x10_0000_0000, &guards), Some("an address above 4 GiB, outside the identity map"));
        assert_eq!(address_hint(0x20_0000, &guards), None);
    }
}
