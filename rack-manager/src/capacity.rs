//! What a host offers to instances by default, from what an instance of its launcher really
//! costs, and the flags that change it.
//!
//! Placement reserves each instance's *guest* RAM and vCPUs against what its host offers. What
//! an instance costs the host differs by launcher, so the offer is the host's real resources
//! times an overcommit factor per launcher:
//!
//! - memory: half of the machine's RAM, times `--memory-overcommit`. QEMU costs about twice its
//!   guest RAM (~35 MiB of host memory for a 16 MiB guest: QEMU itself plus the guest): 0.5.
//!   The tender maps guest RAM lazily and is itself ~0.4 MiB, so an idle 16 MiB web appliance
//!   costs ~1–4 MiB (`cargo xtask bench density`): 4.
//! - vCPUs: the machine's cores times `--vcpu-overcommit`. Appliances sleep when idle (`hlt`/
//!   `wfi`); a QEMU process still wakes for its timers, a tender guest costs ~0 idle CPU: 32
//!   per core for QEMU, 1000 per core for the tender.
//!
//! `--memory-mib` and `--vcpus` set the offer outright.

use clap::Args;

use crate::daemon::LauncherKind;

/// Options that size what this host offers (shared by `serve` and `agent`).
#[derive(Debug, Clone, Args)]
pub struct CapacityArgs {
    /// Guest memory this host offers to instances, in MiB [default: half of the machine's RAM
    /// × --memory-overcommit].
    #[arg(long, value_name = "MIB")]
    pub memory_mib: Option<u64>,
    /// vCPUs this host offers to instances [default: its cores × --vcpu-overcommit].
    #[arg(long, value_name = "N")]
    pub vcpus: Option<u32>,
    /// Guest MiB offered per MiB of host memory set aside [default: 0.5 with QEMU, which costs
    /// ~35 MiB per 16 MiB guest; 4 with the tender, whose guests' RAM is mapped as touched; 1 sim].
    #[arg(long, value_name = "FACTOR")]
    pub memory_overcommit: Option<f64>,
    /// vCPUs offered per core [default: 32 with QEMU, 1000 with the tender (an idle guest costs
    /// no CPU), 32 sim].
    #[arg(long, value_name = "N")]
    pub vcpu_overcommit: Option<u32>,
}

/// A host's offer and how it was reached, for the start-up line.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub memory_mib: u64,
    pub vcpus: u32,
    pub explanation: String,
}

fn machine_memory_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(2 << 20);
    kib / 1024
}

fn cores() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

/// The default overcommit factors of `launcher`: (memory, vCPUs per core).
pub fn default_overcommit(launcher: LauncherKind) -> (f64, u32) {
    match launcher {
        LauncherKind::Qemu => (0.5, 32),
        LauncherKind::Tender => (4.0, 1000),
        LauncherKind::Sim => (1.0, 32),
    }
}

impl CapacityArgs {
    /// What this host offers with `launcher`.
    pub fn offer(&self, launcher: LauncherKind) -> Offer {
        offer(self, launcher, machine_memory_mib(), cores())
    }
}

fn offer(args: &CapacityArgs, launcher: LauncherKind, machine_mib: u64, cores: u32) -> Offer {
    let (memory_factor, vcpu_factor) = default_overcommit(launcher);
    let memory_factor = args.memory_overcommit.filter(|f| f.is_finite() && *f > 0.0).unwrap_or(memory_factor);
    let vcpu_factor = args.vcpu_overcommit.filter(|f| *f > 0).unwrap_or(vcpu_factor);
    let memory_mib = args.memory_mib.unwrap_or(((machine_mib / 2) as f64 * memory_factor) as u64);
    let vcpus = args.vcpus.unwrap_or(cores.saturating_mul(vcpu_factor));
    let memory_why = match args.memory_mib {
        Some(_) => "--memory-mib".to_owned(),
        None => format!("half of {machine_mib} MiB × {memory_factor} --memory-overcommit"),
    };
    let vcpus_why = match args.vcpus {
        Some(_) => "--vcpus".to_owned(),
        None => format!("{cores} core(s) × {vcpu_factor} --vcpu-overcommit"),
    };
    Offer { memory_mib, vcpus, explanation: format!("{memory_mib} MiB ({memory_why}), {vcpus} vCPUs ({vcpus_why})") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> CapacityArgs {
        CapacityArgs { memory_mib: None, vcpus: None, memory_overcommit: None, vcpu_overcommit: None }
    }

    #[test]
    fn a_tender_host_offers_thousands_of_slots_out_of_the_box() {
        // A 2-core, 24 GiB machine, 16 MiB and 1 vCPU per instance.
        let offer = offer(&none(), LauncherKind::Tender, 24 * 1024, 2);
        assert!(offer.vcpus >= 2000 && offer.memory_mib / 16 >= 2000, "{offer:?}");
        let qemu = super::offer(&none(), LauncherKind::Qemu, 24 * 1024, 2);
        assert_eq!((qemu.memory_mib, qemu.vcpus), (6 * 1024, 64), "{qemu:?}");
    }

    #[test]
    fn flags_win_over_defaults_and_say_so() {
        let args = CapacityArgs { memory_mib: Some(100), vcpu_overcommit: Some(10), ..none() };
        let offer = offer(&args, LauncherKind::Qemu, 1024, 4);
        assert_eq!((offer.memory_mib, offer.vcpus), (100, 40));
        assert!(offer.explanation.contains("--memory-mib") && offer.explanation.contains("4 core(s) × 10"));
    }
}
