//! Readiness: how an appliance tells its platform that it listens and serves, so whoever started
//! it (the rack manager's on-demand gate) hands it the waiting connection at that moment rather
//! than polling its ports.
//!
//! - **tender**: the `Ready` hypercall (`tender-abi`, ABI 3); the tender tells its parent.
//! - **QEMU**: the console line [`CONSOLE_MARKER`], which the host reads from the console log.
//!
//! The runtime says it once per boot (`runtime::ready()`), whatever the appliance calls.

/// The console line (without its newline) that says the appliance is ready, on QEMU.
pub const CONSOLE_MARKER: &str = "mast: ready";

/// Whether `console` (a run's console output) holds the readiness line.
pub fn console_says_ready(console: &str) -> bool {
    console.lines().any(|line| line.trim_end() == CONSOLE_MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_line_counts() {
        assert!(console_says_ready("httpd: listening\nmast: ready\n"));
        assert!(console_says_ready("mast: ready\r\n"));
        assert!(!console_says_ready("httpd: mast: ready soon\n"));
        assert!(!console_says_ready(""));
    }
}
