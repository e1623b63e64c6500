//! AArch64 exception syndromes (ESR_EL1) in words. Owned by the aarch64 port.
//!
//! When the CPU takes an exception it records why in the Exception Syndrome Register: an exception
//! class (what kind of event) and a class-specific syndrome (for aborts, the fault status code and
//! whether the access was a write). [`Syndrome`] turns that into a sentence such as
//! "data abort from the current EL: translation fault, level 1, on a read", and [`vector`] names the
//! vector table slot the exception arrived through.
//!
//! Decoding follows the Arm Architecture Reference Manual (ESR_ELx, DDI 0487). Classes and fault
//! codes this module does not know are printed as numbers rather than guessed at; AArch32 and
//! hypervisor-only classes are named but not decoded further.

use core::fmt;

/// The origin and kind of an exception, from the index (0..16) of the vector that caught it.
///
/// The table has four groups of four: current EL using SP_EL0, current EL using SP_ELx, lower EL in
/// AArch64, lower EL in AArch32; each group holds synchronous, IRQ, FIQ and SError entries.
pub fn vector(index: u64) -> (&'static str, &'static str) {
    let kind = match index % 4 {
        0 => "synchronous exception",
        1 => "IRQ",
        2 => "FIQ",
        _ => "SError",
    };
    let origin = match index / 4 {
        0 => "from the current EL on SP_EL0",
        1 => "from the current EL",
        2 => "from a lower EL (AArch64)",
        3 => "from a lower EL (AArch32)",
        _ => "from an unknown vector",
    };
    (kind, origin)
}

/// Whether the vector `index` receives an exception class in ESR (synchronous and SError entries;
/// IRQ and FIQ leave ESR untouched).
pub fn vector_has_syndrome(index: u64) -> bool {
    matches!(index % 4, 0 | 3)
}

/// The value of ESR_EL1 for one exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Syndrome(pub u64);

impl Syndrome {
    /// The exception class, ESR bits 31:26.
    pub const fn class(self) -> u8 {
        ((self.0 >> 26) & 0x3f) as u8
    }

    /// The instruction-specific syndrome, ESR bits 24:0.
    pub const fn iss(self) -> u32 {
        (self.0 & 0x1ff_ffff) as u32
    }

    /// The exception class in words.
    pub const fn class_name(self) -> &'static str {
        match self.class() {
            0x00 => "unknown reason (an undefined or disabled instruction)",
            0x01 => "trapped WFI or WFE",
            0x03 | 0x04 | 0x05 | 0x06 | 0x0c => "trapped AArch32 coprocessor access",
            0x07 => "trapped SVE, Advanced SIMD or floating-point access",
            0x0d => "branch target exception (BTI)",
            0x0e => "illegal execution state",
            0x11 => "SVC instruction (AArch32)",
            0x15 => "SVC instruction",
            0x16 => "HVC instruction",
            0x17 => "SMC instruction",
            0x18 => "trapped system register or system instruction",
            0x19 => "trapped SVE access",
            0x1c => "pointer authentication failure",
            0x20 => "instruction abort from a lower EL",
            0x21 => "instruction abort from the current EL",
            0x22 => "PC alignment fault",
            0x24 => "data abort from a lower EL",
            0x25 => "data abort from the current EL",
            0x26 => "SP alignment fault",
            0x28 => "trapped floating-point exception (AArch32)",
            0x2c => "trapped floating-point exception",
            0x2f => "SError interrupt",
            0x30 => "breakpoint from a lower EL",
            0x31 => "breakpoint from the current EL",
            0x32 => "software step from a lower EL",
            0x33 => "software step from the current EL",
            0x34 => "watchpoint from a lower EL",
            0x35 => "watchpoint from the current EL",
            0x38 => "BKPT instruction (AArch32)",
            0x3c => "BRK instruction (a breakpoint or a compiler-inserted trap)",
            _ => "unrecognised exception class",
        }
    }

    /// Details of an instruction or data abort; `None` for every other class.
    pub const fn abort(self) -> Option<Abort> {
        let data = match self.class() {
            0x20 | 0x21 => false,
            0x24 | 0x25 => true,
            _ => return None,
        };
        let iss = self.iss();
        Some(Abort {
            status: FaultStatus((iss & 0x3f) as u8),
            data,
            // WnR is meaningful for data aborts only; cache maintenance reports as a write.
            write: data && iss & (1 << 6) != 0,
            cache_maintenance: data && iss & (1 << 8) != 0,
            on_table_walk: iss & (1 << 7) != 0,
            far_valid: iss & (1 << 10) == 0,
        })
    }

    /// Whether FAR_EL1 holds the faulting address for this exception.
    pub const fn far_valid(self) -> bool {
        match self.abort() {
            Some(abort) => abort.far_valid,
            // PC alignment faults and watchpoints also set FAR.
            None => matches!(self.class(), 0x22 | 0x34 | 0x35),
        }
    }
}

impl fmt::Display for Syndrome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNRECOGNISED: &str = "unrecognised exception class";
        let name = self.class_name();
        f.write_str(name)?;
        if name == UNRECOGNISED {
            return write!(f, " {:#04x}", self.class());
        }
        if let Some(abort) = self.abort() {
            write!(f, ": {abort}")?;
        } else if matches!(self.class(), 0x15 | 0x16 | 0x17 | 0x3c) {
            // The immediate of SVC, HVC, SMC and BRK: BRK #1 is what Rust's traps compile to.
            write!(f, " #{:#x}", self.iss() & 0xffff)?;
        }
        Ok(())
    }
}

/// An instruction or data abort, decoded from the syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Abort {
    /// What went wrong (the DFSC or IFSC field).
    pub status: FaultStatus,
    /// A data access (load, store, cache maintenance) rather than an instruction fetch.
    pub data: bool,
    /// The access was a write (data aborts only).
    pub write: bool,
    /// The access was a cache maintenance instruction.
    pub cache_maintenance: bool,
    /// The fault happened while walking the translation tables for the access.
    pub on_table_walk: bool,
    /// FAR_EL1 holds the faulting address.
    pub far_valid: bool,
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        let access = match (self.data, self.cache_maintenance, self.write) {
            (false, _, _) => "an instruction fetch",
            (true, true, _) => "a cache maintenance operation",
            (true, false, true) => "a write",
            (true, false, false) => "a read",
        };
        write!(f, ", on {access}")?;
        if self.on_table_walk {
            f.write_str(" (during the translation table walk)")?;
        }
        Ok(())
    }
}

/// A fault status code (DFSC/IFSC, ESR bits 5:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultStatus(pub u8);

impl FaultStatus {
    /// The translation level the fault occurred at, for codes that carry one (-1 comes with 52-bit
    /// addresses).
    pub const fn level(self) -> Option<i8> {
        match self.0 {
            0x00..=0x0f | 0x14..=0x17 | 0x1c..=0x1f => Some((self.0 & 3) as i8),
            0x13 | 0x1b | 0x29 | 0x2b => Some(-1),
            _ => None,
        }
    }

    /// The fault in words, without the level.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0x00..=0x03 | 0x29 => "address size fault",
            0x04..=0x07 | 0x2b => "translation fault",
            0x08..=0x0b => "access flag fault",
            0x0c..=0x0f => "permission fault",
            0x10 => "synchronous external abort",
            0x11 => "synchronous tag check fault",
            0x13..=0x17 => "synchronous external abort on a translation table walk",
            0x18 => "synchronous parity or ECC error",
            0x1b..=0x1f => "synchronous parity or ECC error on a translation table walk",
            0x21 => "alignment fault",
            0x30 => "TLB conflict abort",
            0x31 => "unsupported atomic hardware update",
            0x34 | 0x35 => "implementation-defined fault",
            _ => "unrecognised fault status",
        }
    }
}

impl fmt::Display for FaultStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        match self.level() {
            Some(level) => write!(f, ", level {level}"),
            None if self.name() == "unrecognised fault status" => write!(f, " {:#04x}", self.0),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(esr: u64) -> String {
        Syndrome(esr).to_string()
    }

    #[test]
    fn read_of_unmapped_memory_at_el1() {
        // What QEMU reports for `crash fault`: EC 0x25, IL, DFSC 0b000101.
        let esr = Syndrome(0x9600_0005);
        assert_eq!(esr.class(), 0x25);
        assert!(esr.far_valid());
        assert_eq!(esr.to_string(), "data abort from the current EL: translation fault, level 1, on a read");
    }

    #[test]
    fn data_abort_details() {
        assert_eq!(text(0x9600_0047), "data abort from the current EL: translation fault, level 3, on a write");
        assert_eq!(text(0x9600_0021), "data abort from the current EL: alignment fault, on a read");
        assert_eq!(text(0x9200_004f), "data abort from a lower EL: permission fault, level 3, on a write");
        assert_eq!(
            text(0x9600_0149),
            "data abort from the current EL: access flag fault, level 1, on a cache maintenance operation"
        );
        assert_eq!(
            text(0x9600_0096),
            "data abort from the current EL: synchronous external abort on a translation table walk, \
             level 2, on a read (during the translation table walk)"
        );
        assert_eq!(text(0x9600_0010), "data abort from the current EL: synchronous external abort, on a read");
        // FnV: the FAR is not valid.
        assert!(!Syndrome(0x9600_0410).far_valid());
        assert_eq!(text(0x9600_002b), "data abort from the current EL: translation fault, level -1, on a read");
        assert_eq!(text(0x9600_003f), "data abort from the current EL: unrecognised fault status 0x3f, on a read");
    }

    #[test]
    fn instruction_aborts_are_fetches() {
        assert_eq!(
            text(0x8600_000e),
            "instruction abort from the current EL: permission fault, level 2, on an instruction fetch"
        );
        assert_eq!(
            text(0x8200_0006),
            "instruction abort from a lower EL: translation fault, level 2, on an instruction fetch"
        );
    }

    #[test]
    fn other_classes() {
        assert_eq!(text(0x0200_0000), "unknown reason (an undefined or disabled instruction)");
        assert_eq!(text(0xf200_0001), "BRK instruction (a breakpoint or a compiler-inserted trap) #0x1");
        assert_eq!(text(0x5600_0000), "SVC instruction #0x0");
        assert_eq!(text(0xbe00_0000), "SError interrupt");
        assert_eq!(text(0x8a00_0000), "PC alignment fault");
        assert!(Syndrome(0x8a00_0000).far_valid());
        assert_eq!(text(0x9a00_0000), "SP alignment fault");
        assert!(!Syndrome(0x9a00_0000).far_valid());
        assert_eq!(text(0x1e00_0000), "trapped SVE, Advanced SIMD or floating-point access");
        assert_eq!(text(0x0800_0000), "unrecognised exception class 0x02");
        assert_eq!(text(0xe800_0000), "unrecognised exception class 0x3a");
        assert_eq!(Syndrome(0x9600_0005).abort().map(|a| a.status.level()), Some(Some(1)));
        assert_eq!(Syndrome(0x5600_0000).abort(), None);
    }

    #[test]
    fn every_class_and_status_has_words() {
        for class in 0..64u64 {
            for iss in [0u64, 0x3f, 0x1ff_ffff] {
                let words = text(class << 26 | iss);
                assert!(!words.is_empty());
            }
        }
        for status in 0..64u8 {
            assert!(!FaultStatus(status).to_string().is_empty());
        }
    }

    #[test]
    fn vector_names() {
        assert_eq!(vector(5), ("IRQ", "from the current EL"));
        assert_eq!(vector(4), ("synchronous exception", "from the current EL"));
        assert_eq!(vector(0), ("synchronous exception", "from the current EL on SP_EL0"));
        assert_eq!(vector(11), ("SError", "from a lower EL (AArch64)"));
        assert_eq!(vector(14), ("FIQ", "from a lower EL (AArch32)"));
        assert!(vector_has_syndrome(4) && vector_has_syndrome(7));
        assert!(!vector_has_syndrome(5) && !vector_has_syndrome(6));
    }
}
