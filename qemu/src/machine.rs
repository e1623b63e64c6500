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

/// The QEMU machine model an aarch64 appliance boots on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aarch64Machine {
    /// `virt` with a cortex-a72: the default; images built without `--board` (or `--board virt`).
    Virt,
    /// `raspi3b`: a Raspberry Pi 3 (four cortex-a53 cores, 1 GiB, PL011 on `-serial`); images built
    /// with `--board rpi3`. QEMU passes ATAGs, not a device tree, and holds cores 1-3 in its own
    /// spin-table stub at 0x300, as the Pi firmware does.
    Raspi3b,
    /// `raspi4b` (QEMU 9 and later): a Raspberry Pi 4 (four cortex-a72 cores, 2 GiB, the BCM2711's
    /// PL011 on `-serial`); images built with `--board rpi4`. Booted like `raspi3b`: `kernel8.img` at
    /// 0x80000, cores 1-3 held in QEMU's spin-table stub.
    Raspi4b,
}

impl Aarch64Machine {
    /// The Raspberry Pi models: four cores whatever is asked, RAM fixed by the model.
    fn is_raspi(self) -> bool {
        matches!(self, Aarch64Machine::Raspi3b | Aarch64Machine::Raspi4b)
    }
}

/// A VM to boot: architecture, machine model, accelerator, memory, kernel and command line.
///
/// The defaults are the platforms Mast supports: aarch64 on `virt` (cortex-a72) under TCG with
/// semihosting (so the appliance's exit status becomes QEMU's), and x86_64 on `microvm` under KVM
/// with `isa-debug-exit` (QEMU exits with `status * 2 + 1`).
#[derive(Debug, Clone)]
pub struct Machine {
    pub arch: Arch,
    /// The machine model on aarch64 (ignored on x86_64).
    pub aarch64_machine: Aarch64Machine,
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
    /// UDP ports forwarded from the host's loopback to the guest: (host, guest).
    pub udp_forwards: Vec<(u16, u16)>,
    /// A raw disk image attached as the first virtio-blk device (see [`Machine::volume`]).
    pub volume: Option<PathBuf>,
}

/// How `arch` guests run on this host: x86_64 always under KVM (microvm needs it here); aarch64
/// under KVM on an aarch64 host that has it (a rack's Arm hosts), else under TCG emulation.
fn default_accel(arch: Arch) -> Accel {
    match arch {
        Arch::X86_64 => Accel::Kvm,
        Arch::Aarch64 if Arch::host() == Some(Arch::Aarch64) && crate::kvm::unavailable_reason().is_none() => {
            Accel::Kvm
        }
        Arch::Aarch64 => Accel::Tcg,
    }
}

/// The default guest RAM: ample for the appliances, small enough to pack thousands per host.
pub const DEFAULT_MEMORY_MIB: u32 = 64;
/// `raspi3b` accepts only its real memory size.
const RASPI3B_MEMORY_MIB: u32 = 1024;
/// `raspi4b` is QEMU's 2 GiB Pi 4 model, and accepts only that size.
const RASPI4B_MEMORY_MIB: u32 = 2048;

impl Machine {
    /// The supported machine for `arch`, booting `kernel` with an empty command line.
    pub fn new(arch: Arch, kernel: impl Into<PathBuf>) -> Machine {
        Machine {
            arch,
            aarch64_machine: Aarch64Machine::Virt,
            accel: default_accel(arch),
            memory_mib: DEFAULT_MEMORY_MIB,
            kernel: kernel.into(),
            cmdline: String::new(),
            // KVM on Arm cannot hand semihosting calls to QEMU; there the appliance powers off
            // through PSCI and its status is read from its last console line instead.
            semihosting: default_accel(arch) == Accel::Tcg,
            extra_args: Vec::new(),
            initrd: None,
            network: false,
            tcp_forwards: Vec::new(),
            udp_forwards: Vec::new(),
            volume: None,
        }
    }

    /// A Raspberry Pi 3 (QEMU `raspi3b`) booting `kernel`, an image built with `--board rpi3`.
    /// Its memory is fixed at 1 GiB by the machine model.
    pub fn raspi3b(kernel: impl Into<PathBuf>) -> Machine {
        let mut machine = Machine::new(Arch::Aarch64, kernel).memory_mib(RASPI3B_MEMORY_MIB);
        machine.aarch64_machine = Aarch64Machine::Raspi3b;
        machine
    }

    /// A Raspberry Pi 4 (QEMU `raspi4b`, QEMU 9 and later, see [`crate::version`]) booting `kernel`,
    /// an image built with `--board rpi4`. Its memory is fixed at 2 GiB by the machine model.
    pub fn raspi4b(kernel: impl Into<PathBuf>) -> Machine {
        let mut machine = Machine::new(Arch::Aarch64, kernel).memory_mib(RASPI4B_MEMORY_MIB);
        machine.aarch64_machine = Aarch64Machine::Raspi4b;
        machine
    }

    /// The machine a verified image asks for: its kernel, its data bundle as the initial ramdisk,
    /// its manifest's memory and boot arguments. Both files are unpacked into `dir`.
    ///
    /// An aarch64 kernel boots on the machine of the board its manifest names (`rpi3`: `raspi3b`,
    /// `rpi4`: `raspi4b`, each with its fixed RAM; `virt`: `virt`). An image whose manifest names
    /// no board (built before the board travelled in it) boots on `raspi3b` if its kernel is linked
    /// for the Pis (`text_offset` 0x80000, see `boot_contract::board`), else on `virt`.
    pub fn for_image(image: &images::artifact::VerifiedImage, dir: &Path) -> std::io::Result<Machine> {
        use boot_contract::board::{self, BoardKind};
        let manifest = image.manifest();
        let kernel = image.unpack_kernel(dir)?;
        let text_offset = images::kernel::validate(image.arch(), image.kernel()).map_or(0, |info| info.text_offset);
        let board = manifest.board.as_deref().and_then(board::Board::named).map(|b| b.kind);
        let pi_kernel = text_offset == board::RPI3.link_address;
        let mut machine = match (image.arch(), board) {
            (Arch::Aarch64, Some(BoardKind::Rpi4)) => Machine::raspi4b(kernel),
            (Arch::Aarch64, Some(BoardKind::Rpi3)) => Machine::raspi3b(kernel),
            (Arch::Aarch64, None) if pi_kernel => Machine::raspi3b(kernel),
            _ => Machine::new(image.arch(), kernel).memory_mib(manifest.memory_mib),
        };
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

    /// Attaches `file`, a raw disk image, as a virtio-blk device on the MMIO transport (legacy,
    /// QEMU 7.2's default, like the network card). Writes reach the file through the host's page
    /// cache; the guest's flush makes QEMU `fdatasync` it.
    pub fn volume(mut self, file: impl Into<PathBuf>) -> Machine {
        self.volume = Some(file.into());
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
        let common = ["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"];
        // The Pi has four cores whatever is asked; the runtime parks all but the first.
        let cpus = if self.arch == Arch::Aarch64 && self.aarch64_machine.is_raspi() { "4" } else { "1" };
        match self.arch {
            Arch::Aarch64 => {
                match self.aarch64_machine {
                    Aarch64Machine::Virt if self.accel == Accel::Kvm => {
                        // Under KVM the guest runs on the host's own cores and interrupt controller.
                        command.args(["-machine", "virt,gic-version=host", "-cpu", "host"])
                    }
                    Aarch64Machine::Virt => command.args(["-machine", "virt", "-cpu", "cortex-a72"]),
                    Aarch64Machine::Raspi3b => command.args(["-machine", "raspi3b"]),
                    Aarch64Machine::Raspi4b => command.args(["-machine", "raspi4b"]),
                };
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
        command.args(["-smp", cpus]);
        // Every machine with virtio-mmio gets an entropy source (`runtime::entropy`): virtio-rng
        // backed by QEMU's built-in `getrandom` backend. The Pis have no virtio.
        if !(self.arch == Arch::Aarch64 && self.aarch64_machine.is_raspi()) {
            command.args(["-object", "rng-builtin,id=mastrng0", "-device", "virtio-rng-device,rng=mastrng0"]);
        }
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
        if let Some(volume) = &self.volume {
            command.arg("-drive").arg(volume_drive_arg(volume));
            command.args(["-device", "virtio-blk-device,drive=mastvol0"]);
        }
        command.args(&self.extra_args);
        command
    }
}

/// The `-drive` value for a volume file: raw (no format probing of guest-written bytes), and
/// commas in the path doubled, as QEMU's option syntax escapes them.
fn volume_drive_arg(file: &Path) -> OsString {
    let mut arg = OsString::from("file=");
    arg.push(file.as_os_str().to_string_lossy().replace(',', ",,"));
    arg.push(",format=raw,if=none,id=mastvol0,cache=writeback,discard=ignore");
    arg
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
    fn raspi3b_has_its_four_cores_and_1_gib() {
        let line = words(&Machine::raspi3b("/kernel8.img").args(&["a"])).join(" ");
        assert!(line.contains("-machine raspi3b") && !line.contains("cortex-a72"), "{line}");
        assert!(line.contains("-m 1024M") && line.contains("-smp 4"), "{line}");
        assert!(line.contains("-semihosting-config enable=on,target=native"), "{line}");
        assert!(line.ends_with("-kernel /kernel8.img -append a"), "{line}");
    }

    #[test]
    fn raspi4b_has_its_four_cores_and_2_gib() {
        let line = words(&Machine::raspi4b("/kernel8.img").args(&["a"])).join(" ");
        assert!(line.contains("-machine raspi4b") && !line.contains("cortex-a72"), "{line}");
        assert!(line.contains("-m 2048M") && line.contains("-smp 4"), "{line}");
        assert!(line.contains("-semihosting-config enable=on,target=native"), "{line}");
        assert!(line.ends_with("-kernel /kernel8.img -append a"), "{line}");
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
    fn aarch64_uses_tcg_on_a_foreign_host() {
        if Arch::host() != Some(Arch::Aarch64) {
            let machine = Machine::new(Arch::Aarch64, "/k");
            assert_eq!((machine.accel, machine.semihosting), (Accel::Tcg, true));
        }
    }

    /// What an Arm rack host runs: the host's CPU and GIC, no semihosting. (Only the command line
    /// is checked here; this x86_64 machine cannot run it.)
    #[test]
    fn aarch64_under_kvm_uses_the_hosts_cpu_and_gic() {
        let mut machine = Machine::new(Arch::Aarch64, "/k").semihosting(false);
        machine.accel = Accel::Kvm;
        let line = words(&machine).join(" ");
        assert!(line.contains("-machine virt,gic-version=host -cpu host"), "{line}");
        assert!(line.contains("-accel kvm") && !line.contains("semihosting"), "{line}");
    }

    #[test]
    fn a_volume_is_a_raw_virtio_blk_drive() {
        for arch in [Arch::Aarch64, Arch::X86_64] {
            let line = words(&Machine::new(arch, "/k").volume("/data/a,b.img")).join(" ");
            assert!(
                line.contains(
                    "-drive file=/data/a,,b.img,format=raw,if=none,id=mastvol0,cache=writeback,discard=ignore \
                     -device virtio-blk-device,drive=mastvol0"
                ),
                "{line}"
            );
        }
    }

    #[test]
    fn virt_and_microvm_have_an_entropy_source_and_the_pis_none() {
        let rng = "-object rng-builtin,id=mastrng0 -device virtio-rng-device,rng=mastrng0";
        for arch in [Arch::Aarch64, Arch::X86_64] {
            let line = words(&Machine::new(arch, "/k")).join(" ");
            assert!(line.contains(rng), "{line}");
        }
        let line = words(&Machine::raspi3b("/kernel8.img")).join(" ");
        assert!(!line.contains("virtio-rng"), "{line}");
    }

    #[test]
    fn semihosting_can_be_turned_off() {
        let line = words(&Machine::new(Arch::Aarch64, "/k").semihosting(false)).join(" ");
        assert!(!line.contains("semihosting"), "{line}");
    }
}
