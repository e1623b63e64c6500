//! `cargo xtask run`: build an appliance, boot it, stream its console, exit with its status.

use std::{io::Write, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use clap::Args;
use images::{
    Arch, Platform, artifact,
    build::{self, Profile},
    manifest::{DeviceKind, Manifest, Protocol},
};
use qemu::{Exit, Machine, kvm};

use crate::{deps, image::TrustArgs};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo xtask run hello --arch aarch64 -- one \"two words\"\n  cargo xtask run crash --arch x86_64 --release -- fault\n  cargo xtask run --image target/images/aarch64/release/hello.img\n  cargo xtask run kvlog --arch x86_64 --volume /tmp/kvlog.img"
)]
pub struct RunArgs {
    /// The appliance to build and boot (see `cargo xtask image list`).
    #[arg(required_unless_present = "image")]
    pub app: Option<String>,
    /// The architecture: aarch64 (QEMU virt, TCG here) or x86_64 (QEMU microvm, KVM).
    /// Defaults to the image's own architecture with --image, else to this machine's.
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<Arch>,
    /// The aarch64 board to build for: virt (the default), rpi3 (booted on QEMU raspi3b) or rpi4
    /// (QEMU raspi4b, QEMU 9 and later). With --image, the board the image must have been built
    /// for (an image boots on its own board's machine; a kernel for another board is refused).
    #[arg(long, value_name = "BOARD", value_parser = crate::image::parse_board)]
    pub board: Option<build::Board>,
    /// The machine: qemu (the default) or tender (Mast's KVM monitor, x86_64: `cargo build -p
    /// tender`, then the tender boots the image; no network, which needs a tap: run the tender by
    /// hand with --net for that).
    #[arg(long, value_name = "PLATFORM", default_value = "qemu", conflicts_with = "board")]
    pub platform: Platform,
    /// Build with the release (appliance) profile.
    #[arg(long)]
    pub release: bool,
    /// Boot this signed image (.mast) instead of building an appliance. It must verify.
    #[arg(long, value_name = "FILE", conflicts_with = "app")]
    pub image: Option<PathBuf>,
    /// Guest memory in MiB (default: the manifest's memory_mib).
    #[arg(long, value_name = "MIB")]
    pub mem: Option<u32>,
    /// Attach FILE as the appliance's volume (a virtio-blk disk), creating it sparse if it does
    /// not exist, at the size of the manifest's `[[block]]` (or --volume-size). kvlog keeps its
    /// log there; the file survives the run.
    #[arg(long, value_name = "FILE")]
    pub volume: Option<PathBuf>,
    /// The size of a volume file that --volume creates, in MiB (default: the manifest's
    /// `[[block]]` size_mib, else 64).
    #[arg(long, value_name = "MIB", requires = "volume")]
    pub volume_size: Option<u64>,
    /// Kill the VM after this many seconds (exit code 124). Default: run until it powers off.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Arguments for the appliance, after `--` (default: the manifest's args).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

pub fn main(args: RunArgs) -> Result<ExitCode> {
    let image = match &args.image {
        Some(image) => image.clone(),
        None => build_image(&args)?,
    };
    // Only verified bytes boot: the kernel QEMU loads is the one unpacked from the checked image.
    let verified = artifact::verify_file(&image, &args.trust.trusted()?)?;
    let arch = verified.arch();
    if args.arch.is_some_and(|wanted| wanted != arch) {
        bail!("{} is an image for {arch}, not {}", image.display(), args.arch.map_or("", |a| a.name()));
    }
    let platform = images::kernel::platform_of(verified.kernel());
    if platform != Some(args.platform) {
        bail!(
            "{} holds a kernel for {}, not {}: build it with --platform {}",
            image.display(),
            platform.map_or("no known platform".to_owned(), |p| p.to_string()),
            args.platform,
            args.platform
        );
    }
    if args.platform == Platform::Tender {
        return run_on_tender(&args, &image, verified.manifest());
    }
    deps::ensure_qemu(arch)?;
    if arch == Arch::X86_64
        && let Some(reason) = kvm::unavailable_reason()
    {
        bail!("x86_64 appliances run under KVM, and {reason}");
    }
    let manifest = verified.manifest();
    check_board(&image, manifest, args.board)?;
    let machine = Machine::for_image(&verified, &build::workspace_root().join("target/images/verified"))
        .context("unpacking the verified image")?;
    if machine.aarch64_machine == qemu::Aarch64Machine::Raspi4b
        && let Some(reason) = qemu::version::raspi4b_unavailable_reason()
    {
        bail!("a Raspberry Pi 4 image cannot boot here: {reason}");
    }
    let mut machine = machine;
    if !args.args.is_empty() {
        machine = machine.args(&args.args);
    }
    if let Some(mib) = args.mem {
        machine = machine.memory_mib(mib);
    }
    if let Some(volume) = &args.volume {
        let declared = manifest.devices.iter().find_map(|device| match device.kind {
            DeviceKind::Block { size_mib } => Some(u64::from(size_mib)),
            _ => None,
        });
        create_volume(volume, args.volume_size.or(declared).unwrap_or(64))?;
        machine = machine.volume(volume);
    }
    let urls = forward_listen_ports(&mut machine, manifest)?;
    eprintln!(
        "booting {} {} ({arch}, image {}, {} MiB)",
        manifest.name,
        manifest.version,
        verified.id().short(),
        machine.memory_mib
    );
    let instance = machine.spawn().context("starting the appliance")?;
    eprintln!("$ {}", instance.command());
    let timeout = args.timeout.map(Duration::from_secs).unwrap_or(Duration::MAX);
    let mut stdout = std::io::stdout().lock();
    let mut announced = urls.is_empty();
    let result = instance.wait_exit_streaming(timeout, |line| {
        // A closed stdout (e.g. piped into `head`) must not stop the appliance from finishing.
        let _ = writeln!(stdout, "{}", line.text);
        // Connections made before the appliance listens can stall in QEMU's user network, so
        // the URLs are offered once it says it listens.
        if !announced && line.text.contains("listening") {
            announced = true;
            for url in &urls {
                eprintln!("open {url}");
            }
        }
    });
    let wall = format!("{:.1} ms", result.wall.as_secs_f64() * 1e3);
    Ok(match result.exit {
        Exit::Status(code) => {
            eprintln!("appliance exited with status {code} ({}) after {wall}", boot_contract::ExitCode(code).meaning());
            ExitCode::from(code)
        }
        Exit::PoweredOff => {
            eprintln!("appliance powered off after {wall} (this machine cannot report a status)");
            ExitCode::SUCCESS
        }
        Exit::TimedOut => {
            eprintln!("appliance still running after {wall}: killed");
            ExitCode::from(124)
        }
        Exit::Killed(signal) => {
            eprintln!("QEMU was killed by signal {signal} after {wall}");
            ExitCode::from(128u8.saturating_add(signal.clamp(0, 127) as u8))
        }
        Exit::QemuFailed(code) => bail!("QEMU failed (exit code {code}):\n{}", result.stderr.trim_end()),
    })
}

/// Forwards each TCP port the manifest listens on from a free port on the host's 127.0.0.1, and
/// returns the URLs to reach them (`http://` for every port: a guess that is right for web
/// services and harmless for others).
fn forward_listen_ports(machine: &mut Machine, manifest: &Manifest) -> Result<Vec<String>> {
    // Every `[[net]]` device becomes the one user-mode network card (QEMU's user network is the
    // only network `run` offers), with or without ports to forward.
    machine.network = manifest.devices.iter().any(|d| d.kind == DeviceKind::Net);
    let mut urls = Vec::new();
    for listen in &manifest.listen {
        if listen.protocol != Protocol::Tcp {
            eprintln!("note: {} port {} is not forwarded (only TCP ports are)", listen.protocol, listen.port);
            continue;
        }
        let host = qemu::free_local_port().context("finding a free port on 127.0.0.1")?;
        machine.tcp_forwards.push((host, listen.port));
        eprintln!("forwarding 127.0.0.1:{host} to the appliance's port {}", listen.port);
        urls.push(format!("http://127.0.0.1:{host}/"));
    }
    Ok(urls)
}

/// Creates `file` as a sparse, zero-filled volume of `mib` MiB unless it exists (an existing
/// volume is used as it is, whatever its size).
fn create_volume(file: &std::path::Path, mib: u64) -> Result<()> {
    match std::fs::OpenOptions::new().write(true).create_new(true).open(file) {
        Ok(created) => {
            created.set_len(mib * 1024 * 1024).with_context(|| format!("sizing the volume {}", file.display()))?;
            eprintln!("created the volume {} ({mib} MiB, sparse)", file.display());
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error).with_context(|| format!("creating the volume {}", file.display())),
    }
}

/// Refuses an image whose kernel was built for another board than `--board` names: it would load
/// at the wrong address or talk to a UART that is not there, and print nothing.
fn check_board(image: &std::path::Path, manifest: &Manifest, wanted: Option<build::Board>) -> Result<()> {
    let Some(wanted) = wanted else { return Ok(()) };
    match manifest.board.as_deref() {
        Some(board) if board == wanted.name => Ok(()),
        Some(board) => bail!(
            "{} holds a kernel built for board {board}, not {}: build it with --board {}",
            image.display(),
            wanted.name,
            wanted.name
        ),
        None => bail!(
            "{} does not say which board its kernel was built for (an x86_64 or tender image, or one \
             built before images recorded it): rebuild it with --board {}",
            image.display(),
            wanted.name
        ),
    }
}

fn build_image(args: &RunArgs) -> Result<PathBuf> {
    let app = args.app.as_deref().expect("clap requires an appliance unless --image is given");
    let arch = match args.board {
        Some(_) => Arch::Aarch64,
        None => args.arch.or_else(Arch::host).context("this machine's architecture has no appliances: pass --arch")?,
    };
    let profile = if args.release { Profile::Release } else { Profile::Dev };
    let built = build::build_image(&build::workspace_root(), app, arch, args.board, args.platform, profile)?;
    if let Some(warning) = &built.key_warning {
        eprintln!("{warning}");
    }
    Ok(built.artifact)
}

/// Builds the tender and lets it boot the (already verified) image, passing its console through;
/// exits with the tender's status (the appliance's, or 125/126, see `tender --help`).
fn run_on_tender(args: &RunArgs, image: &std::path::Path, manifest: &Manifest) -> Result<ExitCode> {
    if manifest.devices.iter().any(|d| d.kind == DeviceKind::Net) {
        eprintln!("note: no network under `xtask run --platform tender`; run the tender with --net TAP for that");
    }
    let root = build::workspace_root();
    let mut cargo = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(&root).args(["build", "--package", "tender"]);
    eprintln!("$ {}", images::command::display(&cargo));
    let status = cargo.status().context("running cargo to build the tender")?;
    if !status.success() {
        bail!("building the tender failed ({status}); its errors are above");
    }
    let mut tender = std::process::Command::new(root.join("target/debug/tender"));
    for key in &args.trust.keys {
        tender.arg("--key").arg(key);
    }
    if let Some(mib) = args.mem {
        tender.arg("--mem").arg(mib.to_string());
    }
    tender.arg(image);
    if !args.args.is_empty() {
        tender.arg("--").args(&args.args);
    }
    eprintln!("$ {}", images::command::display(&tender));
    let began = std::time::Instant::now();
    let mut child = tender.spawn().context("starting the tender")?;
    let timeout = args.timeout.map(Duration::from_secs).unwrap_or(Duration::MAX);
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the tender")? {
            break status;
        }
        if began.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("appliance still running after {:.1} s: killed", began.elapsed().as_secs_f64());
            return Ok(ExitCode::from(124));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = format!("{:.1} ms", began.elapsed().as_secs_f64() * 1e3);
    match status.code() {
        Some(code) => {
            let code = u8::try_from(code).unwrap_or(u8::MAX);
            eprintln!("tender exited with status {code} after {wall}");
            Ok(ExitCode::from(code))
        }
        None => bail!("the tender was killed by a signal ({status}) after {wall}"),
    }
}
