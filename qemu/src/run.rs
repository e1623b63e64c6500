//! A running VM: console capture, waiting under deadlines, and what the run amounted to.

use std::{
    fmt,
    io::{BufRead, BufReader, Read},
    os::unix::process::ExitStatusExt,
    process::{Child, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use boot_contract::ExitCode;
use images::kernel::{self, ValidateFileError};

use crate::{
    binary::{MissingQemu, qemu_binary},
    machine::{Machine, display_command},
};

/// One line the appliance printed, and when it arrived (since QEMU was started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleLine {
    pub at: Duration,
    pub text: String,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The appliance powered off and reported this status.
    Status(u8),
    /// The machine powered off without a way to report a status (aarch64 without semihosting,
    /// x86_64 without the debug-exit device). The console's last line still says what it was.
    PoweredOff,
    /// QEMU failed on its own (bad arguments, unloadable kernel); its stderr says why.
    QemuFailed(i32),
    /// QEMU was killed by a signal.
    Killed(i32),
    /// The run outlived its deadline and was killed.
    TimedOut,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Status(code) => write!(f, "exit status {code}"),
            Exit::PoweredOff => f.write_str("powered off without a status"),
            Exit::QemuFailed(code) => write!(f, "QEMU failed with exit code {code}"),
            Exit::Killed(signal) => write!(f, "QEMU killed by signal {signal}"),
            Exit::TimedOut => f.write_str("timed out"),
        }
    }
}

/// Why a VM could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(transparent)]
    MissingQemu(#[from] MissingQemu),
    #[error("refusing to boot: {0}")]
    InvalidImage(#[from] ValidateFileError),
    #[error("could not start `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
}

/// Why waiting for a console line ended without it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("no console line containing {needle:?} within {timeout:?}")]
    TimedOut { needle: String, timeout: Duration },
    #[error("the VM exited before printing a line containing {needle:?}")]
    Exited { needle: String },
}

/// A running VM. Dropping it kills QEMU.
#[derive(Debug)]
pub struct Instance {
    reporting: StatusReporting,
    child: Child,
    started: Instant,
    command: String,
    lines: Receiver<ConsoleLine>,
    console: Vec<ConsoleLine>,
    console_closed: bool,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Machine {
    /// Validates the kernel, starts QEMU and begins capturing its console.
    pub fn spawn(&self) -> Result<Instance, SpawnError> {
        kernel::validate_file(self.arch, &self.kernel)?;
        let qemu = qemu_binary(self.arch)?;
        let mut command = self.command(&qemu);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let shown = display_command(&command);
        let started = Instant::now();
        let mut child = command.spawn().map_err(|source| SpawnError::Spawn { command: shown.clone(), source })?;

        let stdout = child.stdout.take().expect("stdout was piped above");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut raw = Vec::new();
            // Ends at EOF, when QEMU exits, or when the Instance is gone and nobody listens.
            while matches!(reader.read_until(b'\n', &mut raw), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']).to_owned();
                raw.clear();
                if sender.send(ConsoleLine { at: started.elapsed(), text }).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("stderr was piped above");
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });

        Ok(Instance {
            reporting: self.status_reporting(),
            child,
            started,
            command: shown,
            lines,
            console: Vec::new(),
            console_closed: false,
            stderr: Some(stderr),
        })
    }

    /// Boots the machine and waits, at most `timeout`, for it to power off.
    pub fn run(&self, timeout: Duration) -> Result<RunResult, SpawnError> {
        Ok(self.spawn()?.wait_exit(timeout))
    }
}

impl Instance {
    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The QEMU command line, as a shell would show it.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The console lines received so far.
    pub fn console(&self) -> &[ConsoleLine] {
        &self.console
    }

    /// Waits until a console line contains `needle`; returns when it appeared (since start).
    /// Lines already received count, so a marker is never missed by waiting late.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<Duration, WaitError> {
        if let Some(line) = self.console.iter().find(|l| l.text.contains(needle)) {
            return Ok(line.at);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_line(deadline) {
                Ok(line) if line.text.contains(needle) => return Ok(line.at),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Err(WaitError::TimedOut { needle: needle.into(), timeout }),
                Err(RecvTimeoutError::Disconnected) => return Err(WaitError::Exited { needle: needle.into() }),
            }
        }
    }

    fn next_line(&mut self, deadline: Instant) -> Result<ConsoleLine, RecvTimeoutError> {
        if self.console_closed {
            return Err(RecvTimeoutError::Disconnected);
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(line) => {
                self.console.push(line.clone());
                Ok(line)
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.console_closed = true;
                Err(RecvTimeoutError::Disconnected)
            }
            Err(e) => Err(e),
        }
    }

    /// Waits, at most `timeout` from now, for QEMU to exit; kills it if it does not.
    pub fn wait_exit(self, timeout: Duration) -> RunResult {
        self.wait_exit_streaming(timeout, |_| {})
    }

    /// Like [`Instance::wait_exit`], handing each console line to `each_line` as it arrives.
    pub fn wait_exit_streaming(mut self, timeout: Duration, mut each_line: impl FnMut(&ConsoleLine)) -> RunResult {
        let deadline =
            Instant::now().checked_add(timeout).unwrap_or_else(|| Instant::now() + Duration::from_secs(1 << 40));
        // The console closes when QEMU exits, so reading it to the end is the wait.
        while let Ok(line) = self.next_line(deadline) {
            each_line(&line);
        }
        let status = self.reap(deadline);
        let wall = self.started.elapsed();
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        let exit = match status {
            Some(status) => classify(self.reporting, status, &self.console, &stderr),
            None => Exit::TimedOut,
        };
        RunResult { exit, console: std::mem::take(&mut self.console), stderr, wall, command: self.command.clone() }
    }

    /// Waits for the child until `deadline`; kills it and returns `None` if it is still running.
    fn reap(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
                _ => {
                    self.kill();
                    return None;
                }
            }
        }
    }

    /// Kills QEMU (if still running) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The status the appliance printed in its last words (`mast: exit status N`), if any.
fn reported_status(console: &[ConsoleLine]) -> Option<u8> {
    console.iter().rev().find_map(|line| line.text.split_once("mast: exit status ")?.1.trim().parse().ok())
}

/// How a machine passes the appliance's status to QEMU's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusReporting {
    /// aarch64 semihosting `SYS_EXIT`: the exit code is the status.
    Semihosting,
    /// x86_64 `isa-debug-exit`: the exit code is `status * 2 + 1`.
    DebugExit,
    /// Nothing: power-off exits 0 whatever the status.
    None,
}

impl StatusReporting {
    fn decode(self, code: i32) -> Option<u8> {
        match self {
            StatusReporting::Semihosting => u8::try_from(code).ok(),
            StatusReporting::DebugExit => ExitCode::from_x86_debug_exit_status(code).map(|c| c.0),
            StatusReporting::None => None,
        }
    }
}

pub(crate) fn classify(reporting: StatusReporting, status: ExitStatus, console: &[ConsoleLine], stderr: &str) -> Exit {
    let Some(code) = status.code() else {
        return Exit::Killed(status.signal().unwrap_or(0));
    };
    let reported = reported_status(console);
    match reporting.decode(code) {
        Some(decoded) if reported == Some(decoded) => Exit::Status(decoded),
        // QEMU's own failures exit 1 with a message on stderr; the appliance never writes there.
        _ if code != 0 && !stderr.trim().is_empty() => Exit::QemuFailed(code),
        Some(decoded) => Exit::Status(decoded),
        None if code == 0 => Exit::PoweredOff,
        None => Exit::QemuFailed(code),
    }
}

/// Everything a finished run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub exit: Exit,
    pub console: Vec<ConsoleLine>,
    /// QEMU's own diagnostics (the appliance writes only to the console).
    pub stderr: String,
    /// From starting QEMU to its exit.
    pub wall: Duration,
    /// The QEMU command line, as a shell would show it.
    pub command: String,
}

impl RunResult {
    /// The console as one string, a line per line.
    pub fn console_text(&self) -> String {
        self.console.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n")
    }

    /// When the first line containing `needle` appeared.
    pub fn time_of(&self, needle: &str) -> Option<Duration> {
        self.console.iter().find(|l| l.text.contains(needle)).map(|l| l.at)
    }

    /// Passes only when the run ended with `expected` **and** printed `marker`.
    pub fn check(&self, expected: Exit, marker: &str) -> Result<(), RunFailure> {
        let mut problems = Vec::new();
        if self.exit != expected {
            problems.push(format!("expected {expected}, got {}", self.exit));
        }
        if self.time_of(marker).is_none() {
            problems.push(format!("the console never showed {marker:?}"));
        }
        if problems.is_empty() { Ok(()) } else { Err(RunFailure { problems, run: self.clone() }) }
    }
}

/// A run that did not pass, with everything needed to see why.
#[derive(Debug)]
pub struct RunFailure {
    pub problems: Vec<String>,
    pub run: RunResult,
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.problems.join("; "))?;
        writeln!(f, "command: {}", self.run.command)?;
        writeln!(f, "console ({} lines, {:?}):", self.run.console.len(), self.run.wall)?;
        for line in &self.run.console {
            writeln!(f, "  [{:>8.3} ms] {}", line.at.as_secs_f64() * 1e3, line.text)?;
        }
        if !self.run.stderr.trim().is_empty() {
            writeln!(f, "qemu stderr:\n{}", self.run.stderr.trim_end())?;
        }
        Ok(())
    }
}

impl std::error::Error for RunFailure {}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(texts: &[&str]) -> Vec<ConsoleLine> {
        texts.iter().map(|t| ConsoleLine { at: Duration::ZERO, text: (*t).into() }).collect()
    }

    #[test]
    fn aarch64_semihosting_status_is_the_exit_code() {
        let console = lines(&["hi", "mast: exit status 101"]);
        assert_eq!(
            classify(StatusReporting::Semihosting, ExitStatus::from_raw(101 << 8), &console, ""),
            Exit::Status(101)
        );
    }

    #[test]
    fn x86_64_debug_exit_status_is_decoded() {
        let console = lines(&["mast: exit status 0"]);
        assert_eq!(classify(StatusReporting::DebugExit, ExitStatus::from_raw(1 << 8), &console, ""), Exit::Status(0));
        assert_eq!(classify(StatusReporting::DebugExit, ExitStatus::from_raw(203 << 8), &[], ""), Exit::Status(101));
    }

    #[test]
    fn qemu_errors_are_not_mistaken_for_appliance_statuses() {
        let stderr = "qemu-system-aarch64: could not load kernel '/nope'";
        assert_eq!(
            classify(StatusReporting::Semihosting, ExitStatus::from_raw(1 << 8), &[], stderr),
            Exit::QemuFailed(1)
        );
        assert_eq!(
            classify(StatusReporting::DebugExit, ExitStatus::from_raw(1 << 8), &[], stderr),
            Exit::QemuFailed(1)
        );
    }

    #[test]
    fn power_off_without_a_status_channel_has_no_status() {
        assert_eq!(classify(StatusReporting::DebugExit, ExitStatus::from_raw(0), &[], ""), Exit::PoweredOff);
        let console = lines(&["mast: exit status 5"]);
        assert_eq!(classify(StatusReporting::None, ExitStatus::from_raw(0), &console, ""), Exit::PoweredOff);
    }

    #[test]
    fn signals_are_reported() {
        assert_eq!(classify(StatusReporting::Semihosting, ExitStatus::from_raw(9), &[], ""), Exit::Killed(9));
    }

    #[test]
    fn check_needs_both_status_and_marker() {
        let run = RunResult {
            exit: Exit::Status(0),
            console: lines(&["Hello from Mast"]),
            stderr: String::new(),
            wall: Duration::ZERO,
            command: "qemu".into(),
        };
        assert!(run.check(Exit::Status(0), "Hello").is_ok());
        assert!(run.check(Exit::Status(1), "Hello").is_err());
        let failure = run.check(Exit::Status(0), "Goodbye").expect_err("marker missing");
        assert!(failure.to_string().contains("never showed \"Goodbye\""), "{failure}");
    }
}
