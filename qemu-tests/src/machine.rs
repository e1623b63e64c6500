//! One VM's configuration and its QEMU command line.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use images::Arch;

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation: works everywhere, slower. aarch64 guests on an x86_64 host use it.
    Tcg,
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
}

/// A VM to boot: architecture, machine model, accelerator, memory, kernel and command line.
///
/// The defaults are the platforms Mast supports: aarch64 on `virt` (cortex-a72) under TCG with
/// semihosting (so the appliance's exit status becomes QEMU's), and x86_64 on `microvm` under KVM
/// with `isa-debug-exit` (QEMU exits with `status * 2 + 1`).
#[derive(Debug, Clone)]
pub struct Machine {
    pub arch: Arch,
    pub accel: Accel,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub cmdline: String,
    /// aarch64: let the appliance report its exit status through semihosting. Without it the
    /// appliance powers off through PSCI and QEMU exits 0 whatever the status was.
    pub semihosting: bool,
    /// Arguments appended to the command line as they are (devices, netdevs, `-S`…).
    pub extra_args: Vec<OsString>,
    /// The appliance's data bundle, loaded as the initial ramdisk (`-initrd`).
    pub initrd: Option<PathBuf>,
    /// Whether the VM has a virtio-net device on QEMU's user-mode network (see
    /// [`Machine::user_network`]); a TCP forward implies it.
    pub network: bool,
    /// TCP ports forwarded from the host's 127.0.0.1 to the guest, as (host, guest) pairs (see
    /// [`Machine::forward_tcp`]).
    pub tcp_forwards: Vec<(u16, u16)>,
}

/// The default guest RAM: ample for the appliances, small enough to pack thousands per host.
pub const DEFAULT_MEMORY_MIB: u32 = 64;

impl Machine {
    /// The supported machine for `arch`, booting `kernel` with an empty command line.
    pub fn new(arch: Arch, kernel: impl Into<PathBuf>) -> Machine {
        Machine {
            arch,
            accel: match arch {
                Arch::Aarch64 => Accel::Tcg,
                Arch::X86_64 => Accel::Kvm,
            },
            memory_mib: DEFAULT_MEMORY_MIB,
            kernel: kernel.into(),
            cmdline: String::new(),
            semihosting: true,
            extra_args: Vec::new(),
            initrd: None,
            network: false,
            tcp_forwards: Vec::new(),
        }
    }

    /// The machine a verified image asks for: its kernel, its data bundle as the initial ramdisk,
    /// its manifest's memory and boot arguments. Both files are unpacked into `dir`.
    pub fn for_image(image: &images::artifact::VerifiedImage, dir: &Path) -> std::io::Result<Machine> {
        let manifest = image.manifest();
        let mut machine = Machine::new(image.arch(), image.unpack_kernel(dir)?).memory_mib(manifest.memory_mib);
        machine.initrd = image.unpack_data(dir)?;
        Ok(machine.args(&manifest.args))
    }

    /// Sets the kernel command line (the appliance's arguments).
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Machine {
        self.cmdline = cmdline.into();
        self
    }

    /// Joins `args` into a command line, quoting arguments that contain whitespace so that the
    /// runtime's splitter gives back exactly `args`.
    pub fn args<S: AsRef<str>>(self, args: &[S]) -> Machine {
        let line = args.iter().map(|a| quote_arg(a.as_ref())).collect::<Vec<_>>().join(" ");
        self.cmdline(line)
    }

    pub fn memory_mib(mut self, mib: u32) -> Machine {
        self.memory_mib = mib;
        self
    }

    pub fn semihosting(mut self, enabled: bool) -> Machine {
        self.semihosting = enabled;
        self
    }

    pub fn extra_arg(mut self, arg: impl Into<OsString>) -> Machine {
        self.extra_args.push(arg.into());
        self
    }

    /// How this machine passes the appliance's exit status to QEMU's.
    pub(crate) fn status_reporting(&self) -> crate::run::StatusReporting {
        use crate::run::StatusReporting;
        match self.arch {
            Arch::Aarch64 if self.semihosting => StatusReporting::Semihosting,
            Arch::Aarch64 => StatusReporting::None,
            Arch::X86_64 => StatusReporting::DebugExit,
        }
    }

    /// The QEMU command line for this machine, with `qemu` as the program.
    pub fn command(&self, qemu: &Path) -> Command {
        let mut command = Command::new(qemu);
        let common =
            ["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot", "-smp", "1"];
        match self.arch {
            Arch::Aarch64 => {
                command.args(["-machine", "virt", "-cpu", "cortex-a72"]);
                if self.semihosting {
                    command.args(["-semihosting-config", "enable=on,target=native"]);
                }
            }
            Arch::X86_64 => {
                // microvm without what the appliance never touches: no option ROMs, RTC, PIT, PIC or
                // ACPI tables to set up (acpi=off alone saves ~6 ms of boot here), and no
                // `virtio_mmio.device=` words appended to the appliance's command line.
                command.args([
                    "-machine",
                    "microvm,x-option-roms=off,rtc=off,pit=off,pic=off,acpi=off,auto-kernel-cmdline=off,isa-serial=on",
                ]);
                command.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
            }
        }
        command.args([
            "-accel",
            match self.accel {
                Accel::Tcg => "tcg",
                Accel::Kvm => "kvm",
            },
        ]);
        command.arg("-m").arg(format!("{}M", self.memory_mib));
        command.args(common);
        command.arg("-kernel").arg(&self.kernel);
        if let Some(initrd) = &self.initrd {
            command.arg("-initrd").arg(initrd);
        }
        if !self.cmdline.is_empty() {
            command.arg("-append").arg(&self.cmdline);
        }
        if let Some(net) = self.netdev_arg() {
            command.args(["-netdev", &net, "-device", "virtio-net-device,netdev=mastnet0"]);
        }
        command.args(&self.extra_args);
        command
    }
}

fn quote_arg(arg: &str) -> String {
    if arg.is_empty() || arg.chars().any(|c| c.is_ascii_whitespace()) { format!("\"{arg}\"") } else { arg.to_owned() }
}

/// A command line as a shell would show it, for logs and failure reports.
pub(crate) fn display_command(command: &Command) -> String {
    images::command::display(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(machine: &Machine) -> Vec<String> {
        machine.command(Path::new("qemu")).get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn aarch64_boots_virt_under_tcg_with_semihosting() {
        let args = words(&Machine::new(Arch::Aarch64, "/k.img").cmdline("a b"));
        let line = args.join(" ");
        assert!(line.contains("-machine virt -cpu cortex-a72"), "{line}");
        assert!(line.contains("-semihosting-config enable=on,target=native"), "{line}");
        assert!(line.contains("-accel tcg"), "{line}");
        assert!(line.ends_with("-kernel /k.img -append a b"), "{line}");
    }

    #[test]
    fn x86_64_boots_microvm_under_kvm_with_debug_exit() {
        let line = words(&Machine::new(Arch::X86_64, "/k.elf")).join(" ");
        assert!(line.contains("-machine microvm"), "{line}");
        assert!(line.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"), "{line}");
        assert!(line.contains("-accel kvm"), "{line}");
        assert!(!line.contains("-append"), "an empty command line is not passed: {line}");
    }

    #[test]
    fn args_are_quoted_so_the_runtime_splits_them_back() {
        let machine = Machine::new(Arch::Aarch64, "/k").args(&["a", "b c", ""]);
        assert_eq!(machine.cmdline, r#"a "b c" """#);
    }

    #[test]
    fn semihosting_can_be_turned_off() {
        let line = words(&Machine::new(Arch::Aarch64, "/k").semihosting(false)).join(" ");
        assert!(!line.contains("semihosting"), "{line}");
    }
}
