//! The sandbox the tender enters before it runs guest code: `PR_SET_NO_NEW_PRIVS` and a seccomp
//! filter that allows only the system calls of the run loop. Any other call kills the process.
//!
//! By the time it applies, every file is open, guest RAM is mapped and the vCPU exists, so the
//! run loop needs only:
//! - `ioctl` on the vCPU fd, with `KVM_RUN` or the one register read used to name the guest's
//!   instruction pointer in violation reports;
//! - `read`, `write`, `writev` (console, stderr, tap), `ppoll` (the Poll hypercall), `pread64`,
//!   `pwrite64`, `fdatasync` (block), `clock_gettime` (statistics; normally the vDSO);
//! - what Rust's runtime and allocator do underneath: `brk`, `mmap` (never executable), `mremap`,
//!   `munmap`, `madvise`, `futex`, `sigaltstack`, `rt_sigreturn`, `close`, `exit`, `exit_group`.
//!
//! No `open`, `socket`, `execve`, `fork`, `ptrace`, `mprotect`, or ioctls on other fds: a guest that
//! somehow took over the tender still cannot reach anything the tender did not already hold.

use std::{collections::BTreeMap, os::fd::RawFd};

use anyhow::{Context, Result};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// `_IO(KVMIO, 0x80)`.
pub const KVM_RUN: u64 = 0xae80;
/// x86_64: `_IOR(KVMIO, 0x81, struct kvm_regs)` (144 bytes).
#[cfg(target_arch = "x86_64")]
const KVM_READ_REGISTER: u64 = 0x8090_ae81;
/// aarch64: `_IOW(KVMIO, 0xab, struct kvm_one_reg)` (KVM_GET_ONE_REG, 16 bytes).
#[cfg(target_arch = "aarch64")]
const KVM_READ_REGISTER: u64 = 0x4010_aeab;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// The system calls allowed with any arguments.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_ppoll,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fdatasync,
    // The Random hypercall (the guest's entropy).
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_brk,
    libc::SYS_mremap,
    libc::SYS_munmap,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigreturn,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).context("building a seccomp condition")
}

/// The run loop's filter for a vCPU whose fd is `vcpu_fd`.
pub fn filter(vcpu_fd: RawFd) -> Result<BpfProgram> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED.iter().map(|&call| (call, Vec::new())).collect();
    let fd = u64::try_from(vcpu_fd).context("the vCPU fd is negative")?;
    let ioctl = |request: u64| -> Result<SeccompRule> {
        SeccompRule::new(vec![condition(0, SeccompCmpOp::Eq, fd)?, condition(1, SeccompCmpOp::Eq, request)?])
            .context("building the ioctl rule")
    };
    rules.insert(libc::SYS_ioctl, vec![ioctl(KVM_RUN)?, ioctl(KVM_READ_REGISTER)?]);
    // Memory for the allocator, never executable.
    let no_exec = condition(2, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0)?;
    rules.insert(libc::SYS_mmap, vec![SeccompRule::new(vec![no_exec]).context("building the mmap rule")?]);
    let filter = SeccompFilter::new(rules, SeccompAction::KillProcess, SeccompAction::Allow, ARCH)
        .context("building the seccomp filter")?;
    filter.try_into().context("compiling the seccomp filter")
}

/// Drops privileges for good: no new privileges, and `program` as the seccomp filter.
pub fn enter(program: &BpfProgram) -> Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_NO_NEW_PRIVS)");
    }
    seccompiler::apply_filter(program).context("installing the seccomp filter")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` in a forked child under the filter and returns how the child ended: `Ok(code)`
    /// for an exit, `Err(signal)` for a kill. The child only makes raw system calls (no allocation,
    /// no locks), as a child of a multi-threaded test process must.
    fn in_sandboxed_child(body: fn() -> i32) -> Result<i32, i32> {
        let program = filter(3).expect("the filter builds");
        // SAFETY: the child runs only `enter` (prctl and seccomp system calls on memory prepared
        // before the fork) and `body`, then `_exit`s without returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = if enter(&program).is_ok() { body() } else { 99 };
            // SAFETY: ends the child at once, without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked; `status` is a valid out-pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        if libc::WIFEXITED(status) { Ok(libc::WEXITSTATUS(status)) } else { Err(libc::WTERMSIG(status)) }
    }

    #[test]
    fn the_run_loop_calls_are_allowed() {
        let ended = in_sandboxed_child(|| {
            let byte = b".";
            // SAFETY: writes one byte from a live buffer to stderr.
            let wrote = unsafe { libc::write(2, byte.as_ptr().cast(), 1) };
            // SAFETY: a zero-length ppoll with a zero timeout: no memory is touched but the timespec.
            let polled = unsafe {
                libc::ppoll(std::ptr::null_mut(), 0, &libc::timespec { tv_sec: 0, tv_nsec: 0 }, std::ptr::null())
            };
            let mut seed = [0u8; 32];
            // SAFETY: fills a live 32-byte buffer (the Random hypercall's call).
            let random = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
            if wrote == 1 && polled == 0 && random == 32 { 0 } else { 1 }
        });
        assert_eq!(ended, Ok(0));
    }

    #[test]
    fn opening_a_file_kills_the_process() {
        let ended = in_sandboxed_child(|| {
            // SAFETY: a NUL-terminated path; the call should never return.
            unsafe { libc::openat(libc::AT_FDCWD, c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
            0
        });
        assert_eq!(ended, Err(libc::SIGSYS), "openat must be refused by killing the process");
    }

    #[test]
    fn other_ioctls_and_executable_memory_are_refused() {
        let ended = in_sandboxed_child(|| {
            // SAFETY: an ioctl on stdin with a request that takes no argument; it must not run.
            unsafe { libc::ioctl(0, KVM_RUN as _) };
            0
        });
        assert_eq!(ended, Err(libc::SIGSYS), "KVM_RUN on an fd other than the vCPU's");
        let ended = in_sandboxed_child(|| {
            // SAFETY: asks for a fresh anonymous executable page; the call must not run.
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            0
        });
        assert_eq!(ended, Err(libc::SIGSYS), "executable memory");
    }
}
