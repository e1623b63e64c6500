//! Shared by the tender tests: running the real `tender` binary with a deadline, building real
//! appliance images, and hand-assembled x86_64 guests for what no well-behaved appliance does.
// Each test binary compiles its own copy and uses only some of these.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use images::{
    Arch, Platform,
    build::{self, Built, Profile},
};
use tender_abi::{ABI_VERSION, ELF_NOTE_NAME, ELF_NOTE_TYPE_ABI, HYPERCALL_PORT_BASE, Hypercall};

/// Generous: a boot takes milliseconds, but CI machines are shared and nested KVM is slow.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Whether KVM tests may run here: x86_64 hosts with a usable /dev/kvm. Prints why not, or panics
/// when `MAST_REQUIRE_KVM=1`, whichever of the two is missing (an ARM CI host must fail here,
/// not pass without running anything).
pub fn kvm(test: &str) -> bool {
    if !cfg!(target_arch = "x86_64") {
        return qemu::kvm::skip(test, "the tender tests run x86_64 guests (this host is not x86_64)");
    }
    qemu::kvm::available_for(test)
}

/// How a tender run ended.
#[derive(Debug)]
pub struct Run {
    /// The exit status, or `None` if killed by a signal (which a test treats as a crash).
    pub status: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Run {
    /// Panics with everything the run printed unless it exited with `status`.
    pub fn expect_status(&self, status: i32) -> &Run {
        assert!(
            self.status == Some(status) && !self.timed_out,
            "expected exit status {status}, got {:?} (signal {:?}, timed out {})\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.signal,
            self.timed_out,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless stderr contains all of `parts`.
    pub fn expect_stderr(&self, parts: &[&str]) -> &Run {
        for part in parts {
            assert!(self.stderr.contains(part), "expected {part:?} on stderr:\n{}", self.stderr);
        }
        self
    }
}

/// The tender binary under test.
pub fn tender() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tender"))
}

/// Runs `command` to completion, killing it after [`TIMEOUT`].
pub fn run(command: &mut Command) -> Run {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tender binary starts");
    wait(child, TIMEOUT)
}

/// Waits for `child` until `timeout`, collecting its output.
pub fn wait(mut child: Child, timeout: Duration) -> Run {
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for tender") {
            break status;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
        }
        thread::sleep(Duration::from_millis(5));
    };
    use std::os::unix::process::ExitStatusExt;
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    Run {
        status: status.code(),
        signal: status.signal(),
        stdout: text(out.join().expect("stdout reader")),
        stderr: text(err.join().expect("stderr reader")),
        timed_out,
    }
}

/// `app`'s release image for the tender (x86_64), built once per test process.
pub fn tender_image(app: &str) -> Built {
    image(app, Platform::Tender)
}

/// `app`'s release image for `platform` (x86_64), built once per test process.
pub fn image(app: &str, platform: Platform) -> Built {
    static BUILT: OnceLock<Mutex<HashMap<(String, Platform), Built>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = (app.to_owned(), platform);
    if let Some(image) = built.get(&key) {
        return image.clone();
    }
    let image = build::build_for_platform(&build::workspace_root(), app, Arch::X86_64, platform, Profile::Release)
        .unwrap_or_else(|e| panic!("building {app} for {platform}: {e}"));
    built.insert(key, image.clone());
    image
}

/// A scratch directory for one test, removed when dropped.
pub fn scratch(test: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("tender-{test}-")).tempdir().expect("temp dir is writable")
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("scratch file is writable");
    path
}

/// Where hand-assembled guests are loaded, and where their data lives.
pub const LOAD: u64 = 0x10_0000;
pub const DATA: u64 = LOAD + 0x1000;

/// A hand-assembled x86_64 guest: code at [`LOAD`], data (argument blocks, buffers) at [`DATA`].
#[derive(Debug, Default)]
pub struct Guest {
    code: Vec<u8>,
    data: Vec<u8>,
}

impl Guest {
    pub fn new() -> Guest {
        Guest::default()
    }

    /// Raw instruction bytes.
    pub fn bytes(mut self, bytes: &[u8]) -> Guest {
        self.code.extend_from_slice(bytes);
        self
    }

    /// Places `bytes` in the data area at `offset` from [`DATA`]; returns their guest address.
    pub fn place(&mut self, offset: usize, bytes: &[u8]) -> u64 {
        if self.data.len() < offset + bytes.len() {
            self.data.resize(offset + bytes.len(), 0);
        }
        self.data[offset..offset + bytes.len()].copy_from_slice(bytes);
        DATA + offset as u64
    }

    /// `mov edx, port; mov eax, arg; out dx, eax`: hypercall `number` the x86_64 way.
    pub fn out(self, number: u16, arg: u32) -> Guest {
        self.mov_edx(u32::from(HYPERCALL_PORT_BASE + number)).mov_eax(arg).bytes(&[0xef])
    }

    pub fn call(self, call: Hypercall, arg: u64) -> Guest {
        self.out(call as u16, u32::try_from(arg).expect("argument blocks are below 4 GiB"))
    }

    pub fn mov_eax(self, value: u32) -> Guest {
        self.bytes(&[0xb8]).bytes(&value.to_le_bytes())
    }

    pub fn mov_edx(self, value: u32) -> Guest {
        self.bytes(&[0xba]).bytes(&value.to_le_bytes())
    }

    /// `mov rax, imm64`.
    pub fn mov_rax(self, value: u64) -> Guest {
        self.bytes(&[0x48, 0xb8]).bytes(&value.to_le_bytes())
    }

    /// `mov rbx, imm64`.
    pub fn mov_rbx(self, value: u64) -> Guest {
        self.bytes(&[0x48, 0xbb]).bytes(&value.to_le_bytes())
    }

    /// `mov rsp, imm64`.
    pub fn mov_rsp(self, value: u64) -> Guest {
        self.bytes(&[0x48, 0xbc]).bytes(&value.to_le_bytes())
    }

    /// `mov [rax], rbx`.
    pub fn store_rbx_at_rax(self) -> Guest {
        self.bytes(&[0x48, 0x89, 0x18])
    }

    /// `mov rbx, [rax]`.
    pub fn load_rbx_from_rax(self) -> Guest {
        self.bytes(&[0x48, 0x8b, 0x18])
    }

    /// `mov dword [addr32], imm32`.
    pub fn store_u32(self, addr: u64, value: u32) -> Guest {
        let addr = u32::try_from(addr).expect("below 4 GiB");
        self.bytes(&[0xc7, 0x04, 0x25]).bytes(&addr.to_le_bytes()).bytes(&value.to_le_bytes())
    }

    /// Exit with `status` through an argument block at data offset `offset`.
    pub fn exit(mut self, offset: usize, status: u32) -> Guest {
        let block = self.place(offset, &[status.to_le_bytes(), [0; 4]].concat());
        self.call(Hypercall::Exit, block)
    }

    /// Prints `text` through a ConsoleWrite block at `offset` (text right after it).
    pub fn print(mut self, offset: usize, text: &[u8]) -> Guest {
        let text_addr = self.place(offset + 16, text);
        let block = self.place(offset, &[text_addr.to_le_bytes(), (text.len() as u64).to_le_bytes()].concat());
        self.call(Hypercall::ConsoleWrite, block)
    }

    /// `jmp $`: spin forever (what follows a call that must not return).
    pub fn spin(self) -> Guest {
        self.bytes(&[0xeb, 0xfe])
    }

    /// The guest as a kernel ELF with the tender ABI note.
    pub fn elf(&self) -> Vec<u8> {
        assert!(self.code.len() <= 0x1000, "code overlaps the data area");
        let mut segment = self.code.clone();
        segment.resize(0x1000, 0xcc); // int3 filler
        segment.extend(&self.data);
        elf(62, LOAD, &segment, &[(ELF_NOTE_NAME, ELF_NOTE_TYPE_ABI, &ABI_VERSION.to_le_bytes())])
    }
}

/// A minimal ELF64 executable for `machine`: one PT_NOTE segment holding `notes` (name, type,
/// descriptor) and one RWX PT_LOAD of `segment` at `load_address`, entered at its start.
pub fn elf(machine: u16, load_address: u64, segment: &[u8], notes: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut note_bytes = Vec::new();
    for (name, kind, desc) in notes {
        let name = [name.as_bytes(), b"\0"].concat();
        note_bytes.extend((name.len() as u32).to_le_bytes());
        note_bytes.extend((desc.len() as u32).to_le_bytes());
        note_bytes.extend(kind.to_le_bytes());
        note_bytes.extend(&name);
        note_bytes.resize(note_bytes.len().next_multiple_of(4), 0);
        note_bytes.extend(*desc);
        note_bytes.resize(note_bytes.len().next_multiple_of(4), 0);
    }
    let headers = 64 + 2 * 56;
    let note_offset = headers as u64;
    let code_offset = (headers + note_bytes.len()).next_multiple_of(16) as u64;
    let mut out = Vec::new();
    out.extend(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    out.extend(2u16.to_le_bytes()); // ET_EXEC
    out.extend(machine.to_le_bytes());
    out.extend(1u32.to_le_bytes());
    out.extend(load_address.to_le_bytes()); // entry
    out.extend(64u64.to_le_bytes()); // program headers right after the header
    out.extend(0u64.to_le_bytes()); // no section headers
    out.extend(0u32.to_le_bytes());
    out.extend([64u16, 56, 2, 64, 0, 0].iter().flat_map(|v| v.to_le_bytes()));
    let header = |kind: u32, offset: u64, addr: u64, size: u64| {
        [kind.to_le_bytes(), 7u32.to_le_bytes()]
            .concat()
            .into_iter()
            .chain([offset, addr, addr, size, size, 4096].iter().flat_map(|v| v.to_le_bytes()))
            .collect::<Vec<u8>>()
    };
    out.extend(header(4, note_offset, 0, note_bytes.len() as u64));
    out.extend(header(1, code_offset, load_address, segment.len() as u64));
    out.extend(&note_bytes);
    out.resize(code_offset as usize, 0);
    out.extend(segment);
    out
}

/// Boots a hand-assembled guest with `extra` tender arguments.
pub fn run_guest(test: &str, guest: &Guest, extra: &[&str]) -> Run {
    let dir = scratch(test);
    let kernel = write(dir.path(), "guest.elf", &guest.elf());
    run(tender().arg("--kernel").arg(&kernel).args(extra))
}

/// A network namespace of its own with one tap device in it, `tap0`, at 10.0.2.2/24 and up; the
/// appliance gets 10.0.2.15. Deleted (with the tap) on drop. Nothing outside it is touched.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

pub const TAP: &str = "tap0";
pub const HOST_IP: &str = "10.0.2.2";
pub const GUEST_IP: &str = "10.0.2.15";

impl NetNs {
    /// Creates it, or says why it cannot (needs root and iproute2).
    pub fn create(test: &str) -> Result<NetNs, String> {
        let name = format!("mast-tender-{}-{test}", std::process::id());
        let ip = |args: &[&str]| -> Result<(), String> {
            let output = Command::new("ip").args(args).output().map_err(|e| format!("running ip: {e}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
            }
        };
        ip(&["netns", "add", &name])?;
        let netns = NetNs { name };
        let n = netns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "tuntap", "add", "dev", TAP, "mode", "tap"])?;
        ip(&["-n", n, "addr", "add", &format!("{HOST_IP}/24"), "dev", TAP])?;
        ip(&["-n", n, "link", "set", TAP, "up"])?;
        Ok(netns)
    }

    /// `command` run inside the namespace (through `ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `body` on a thread that has entered the namespace (so its sockets live there).
    pub fn within<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd;
        let path = format!("/run/netns/{}", self.name);
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = std::fs::File::open(&path).expect("the namespace exists");
                    // SAFETY: moves only this thread into the namespace whose fd is open here.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    body()
                })
                .join()
                .expect("no panic in the namespace thread")
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

/// A namespace for `test`, or `None` with the reason printed (panics under `MAST_REQUIRE_KVM=1`,
/// where CI runs as root and must not skip).
pub fn netns(test: &str) -> Option<NetNs> {
    match NetNs::create(test) {
        Ok(netns) => Some(netns),
        Err(reason) => {
            qemu::kvm::skip(test, &format!("it needs a network namespace with a tap device (root), but {reason}"));
            None
        }
    }
}

/// A running tender whose stdout lines arrive on a channel.
#[derive(Debug)]
pub struct Running {
    pub child: Child,
    pub lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn spawn(command: &mut Command) -> Running {
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("tender starts");
        let stdout = child.stdout.take().expect("piped");
        let (send, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines, seen: Vec::new() }
    }

    /// Waits for a console line containing `text`; panics with what was seen after [`TIMEOUT`].
    pub fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let stderr = self.child.stderr.take().map(|mut e| {
            let mut text = String::new();
            let _ = e.read_to_string(&mut text);
            text
        });
        panic!(
            "no console line with {text:?}; saw:\n{}\nstderr:\n{}",
            self.seen.join("\n"),
            stderr.unwrap_or_default()
        );
    }

    /// Proportional set size of the tender process, in KiB, from /proc/PID/smaps_rollup.
    pub fn pss_kib(&self) -> Option<u64> {
        let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.child.id())).ok()?;
        rollup.lines().find_map(|l| l.strip_prefix("Pss:")?.trim().strip_suffix("kB")?.trim().parse().ok())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file of the workspace, by its path from the root.
pub fn workspace_file(path: &str) -> PathBuf {
    build::workspace_root().join(path)
}
