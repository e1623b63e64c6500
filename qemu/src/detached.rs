//! VMs that outlive the program that started them: a supervisor (the rack manager) starts QEMU with
//! the console going to a file it owns, in its own process group, so the VM keeps running when the
//! supervisor is killed and can be adopted again by its pid.

use std::{
    fs::File,
    os::unix::process::CommandExt,
    process::{Child, ExitStatus, Stdio},
    time::Duration,
};

use images::kernel;

use crate::{
    binary::qemu_binary,
    machine::{Machine, display_command},
    run::{ConsoleLine, Exit, SpawnError, classify},
};

impl Machine {
    /// Validates the kernel and starts QEMU with its console (serial) written to `console` and its
    /// own diagnostics to `stderr`, in a new process group, so that neither a signal to the
    /// caller's group (Ctrl-C) nor the caller's death stops the VM. The caller owns the child: it
    /// is **not** killed on drop. Returns the child and the command line as a shell would show it.
    pub fn spawn_detached(&self, console: File, stderr: File) -> Result<(Child, String), SpawnError> {
        kernel::validate_file(self.arch, &self.kernel)?;
        let qemu = qemu_binary(self.arch)?;
        let mut command = self.command(&qemu);
        command.stdin(Stdio::null()).stdout(console).stderr(stderr).process_group(0);
        let shown = display_command(&command);
        let child = command.spawn().map_err(|source| SpawnError::Spawn { command: shown.clone(), source })?;
        Ok((child, shown))
    }

    /// How a run of this machine ended, from QEMU's exit status, the console text of that run and
    /// QEMU's stderr: the same judgement [`crate::Instance::wait_exit`] makes.
    pub fn exit_of(&self, status: ExitStatus, console: &str, stderr: &str) -> Exit {
        let lines: Vec<ConsoleLine> =
            console.lines().map(|text| ConsoleLine { at: Duration::ZERO, text: text.to_owned() }).collect();
        classify(self.status_reporting(), status, &lines, stderr)
    }
}

/// The status an appliance printed in its last words (`mast: exit status N`), if any: how a
/// supervisor that did not start a VM (and so cannot wait for it) learns how it ended.
pub fn reported_status(console: &str) -> Option<u8> {
    console.lines().rev().find_map(|line| line.split_once("mast: exit status ")?.1.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use images::Arch;

    use super::*;

    #[test]
    fn exit_of_decodes_like_a_supervised_run() {
        let machine = Machine::new(Arch::X86_64, "/k.elf");
        assert_eq!(machine.exit_of(ExitStatus::from_raw(203 << 8), "mast: exit status 101\n", ""), Exit::Status(101));
        assert_eq!(machine.exit_of(ExitStatus::from_raw(9), "", ""), Exit::Killed(9));
    }

    #[test]
    fn the_last_reported_status_wins() {
        assert_eq!(reported_status("mast: exit status 3\nmore\nmast: exit status 0\n"), Some(0));
        assert_eq!(reported_status("no status here"), None);
    }
}
