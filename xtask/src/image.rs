//! `cargo xtask image build|list|inspect|verify`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use images::{
    Arch, Platform,
    artifact::{self, ImageId},
    build::{self, Profile},
    keys::{KeyConfig, PublicKey, TrustedKeys},
    manifest::Manifest,
    sdcard,
};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an appliance into a signed image; prints the image's path as the last line of stdout.
    ///
    /// The image (`.mast`) holds the bootable kernel and the manifest images/<app>.toml, chunked
    /// and signed with the workspace's key ($MAST_SIGNING_KEY, else .mast/signing.key; a
    /// development key is generated there on first use). Images land in
    /// target/images/<arch>/<debug|release>/, next to the bare kernel (.img on aarch64, .elf on
    /// x86_64).
    Build(BuildArgs),
    /// Write a bootable SD-card image for a Raspberry Pi: an MBR with one FAT32 partition holding
    /// config.txt, kernel8.img, cmdline.txt (the manifest's arguments), the signed image and its
    /// manifest. The Pi firmware is not included unless --firmware names a directory holding it;
    /// the command lists the files and where to get them.
    Sdcard(SdcardArgs),
    /// List the appliances that can be built.
    List,
    /// Show what an image contains: manifest, id, signer, parts and chunks, sizes.
    ///
    /// Inspecting does not require trust: it says whether the signature is valid and whether the
    /// signer is trusted, and shows the manifest either way.
    Inspect(InspectArgs),
    /// Verify an image: every chunk, the index, the signature and a trusted key. Exits 1 if any
    /// check fails.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The appliance: a crate in kernel-apps/ (see `cargo xtask image list`).
    pub app: String,
    /// The architecture to build for: aarch64 or x86_64. Implied by --board.
    #[arg(long, value_name = "ARCH", required_unless_present = "board")]
    pub arch: Option<Arch>,
    /// The aarch64 board: virt (QEMU, the default), rpi3 or rpi4. Pi builds also write the kernel
    /// as kernel8.img, for `cargo xtask image sdcard`.
    #[arg(long, value_name = "BOARD", value_parser = parse_board)]
    pub board: Option<build::Board>,
    /// The machine to build for: qemu (the default) or tender (Mast's KVM monitor; images land in
    /// target/images/<arch>-tender/).
    #[arg(long, value_name = "PLATFORM", default_value = "qemu", conflicts_with = "board")]
    pub platform: Platform,
    /// Optimise for size and speed (LTO, stripped); what ships and what the benches measure.
    #[arg(long)]
    pub release: bool,
}

#[derive(Debug, Args)]
pub struct SdcardArgs {
    /// The appliance: a crate in kernel-apps/, built for --board.
    #[arg(required_unless_present = "image", conflicts_with = "image")]
    pub app: Option<String>,
    /// Put this signed image (.mast) on the card instead of building one. It must verify, and its
    /// kernel must have been built for --board.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// The board: rpi3 or rpi4.
    #[arg(long, value_name = "BOARD", value_parser = parse_board)]
    pub board: build::Board,
    /// Where to write the card image (about 257 MiB, sparse).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Build with the release profile (what ships).
    #[arg(long)]
    pub release: bool,
    /// A copy of the firmware repository's boot/ directory: its files for this board go on the card.
    #[arg(long, value_name = "DIR")]
    pub firmware: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image file (.mast).
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The image file (.mast).
    pub file: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Trust this public key (64 hex digits) or the keys in this trusted-keys file, instead of the
    /// workspace's (its signing key and .mast/trusted-keys). Repeatable.
    #[arg(long = "key", value_name = "KEY|FILE")]
    pub keys: Vec<String>,
}

impl TrustArgs {
    /// The keys to trust: those given with --key, else the workspace's.
    pub fn trusted(&self) -> Result<TrustedKeys> {
        if self.keys.is_empty() {
            return Ok(KeyConfig::for_workspace(&build::workspace_root()).trusted()?);
        }
        let mut trusted = TrustedKeys::default();
        for key in &self.keys {
            match key.parse::<PublicKey>() {
                Ok(public) => trusted.add(public),
                Err(_) if PathBuf::from(key).is_file() => {
                    for public in TrustedKeys::load(key.as_ref())?.keys() {
                        trusted.add(*public);
                    }
                }
                Err(e) => bail!("--key {key}: {e}, and no such file exists"),
            }
        }
        Ok(trusted)
    }
}

/// A board name, as `--board` takes it.
pub fn parse_board(name: &str) -> Result<build::Board, String> {
    build::Board::named(name).ok_or_else(|| {
        let names: Vec<&str> = boot_contract::board::ALL.iter().map(|b| b.name).collect();
        format!("unknown board {name:?}: expected one of {}", names.join(", "))
    })
}

pub fn main(command: ImageCommand) -> Result<ExitCode> {
    match command {
        ImageCommand::Build(args) => {
            let profile = if args.release { Profile::Release } else { Profile::Dev };
            let arch = args.arch.unwrap_or(Arch::Aarch64);
            let built =
                build::build_image(&build::workspace_root(), &args.app, arch, args.board, args.platform, profile)?;
            if let Some(warning) = &built.key_warning {
                eprintln!("{warning}");
            }
            eprintln!(
                "built {} {} for {} {}{} ({}): kernel {} bytes ({} in memory), image {} bytes, id {}",
                built.manifest.name,
                built.manifest.version,
                built.platform,
                arch,
                built.board.map_or(String::new(), |b| format!(" board {}", b.name)),
                built.info.format,
                built.info.file_size,
                built.info.memory_size,
                built.artifact_size,
                built.id.short()
            );
            if let Some(boot_file) = &built.boot_file {
                eprintln!("boot file for the firmware: {}", boot_file.display());
            }
            println!("{}", built.artifact.display());
        }
        ImageCommand::Sdcard(args) => return sdcard(args),
        ImageCommand::List => {
            for app in build::appliances(&build::workspace_root()) {
                println!("{app}");
            }
        }
        ImageCommand::Inspect(args) => return inspect(args),
        ImageCommand::Verify(args) => {
            let verified = artifact::verify_file(&args.file, &args.trust.trusted()?)?;
            let header = &verified.header;
            println!(
                "{}: verified: {} {} for {}, id {}, signed by {}",
                args.file.display(),
                verified.manifest().name,
                verified.manifest().version,
                verified.arch(),
                header.id,
                header.signer
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sdcard(args: SdcardArgs) -> Result<ExitCode> {
    let firmware = sdcard::firmware_files(&args.board)?;
    let root = build::workspace_root();
    let profile = if args.release { Profile::Release } else { Profile::Dev };
    let artifact_path = match (&args.image, &args.app) {
        (Some(image), _) => image.clone(),
        (None, Some(app)) => {
            let built = build::build_for_board(&root, app, Arch::Aarch64, Some(args.board), profile)?;
            if let Some(warning) = &built.key_warning {
                eprintln!("{warning}");
            }
            built.artifact
        }
        (None, None) => bail!("name an appliance or --image"),
    };
    // The card gets the kernel from the verified image, like everything else that boots.
    let trusted = KeyConfig::for_workspace(&root).trusted()?;
    let verified = artifact::verify_file(&artifact_path, &trusted)?;
    let app = verified.manifest().name.clone();
    let built_for = verified.manifest().board.as_deref();
    if built_for != Some(args.board.name) {
        bail!(
            "{} holds a kernel built for {}, not board {}: the firmware would load it and nothing would run; \
             build it with --board {}",
            artifact_path.display(),
            built_for.map_or_else(|| format!("{} (no board recorded)", verified.arch()), |b| format!("board {b}")),
            args.board.name,
            args.board.name
        );
    }
    let mast = std::fs::read(&artifact_path).with_context(|| format!("reading {}", artifact_path.display()))?;
    let cmdline: Vec<String> = verified.manifest().args.iter().map(|a| quote_arg(a)).collect();
    let mut files: sdcard::CardFiles = vec![
        ("config.txt".into(), sdcard::config_txt(&args.board, &app).into_bytes()),
        (build::PI_KERNEL_FILE.into(), verified.kernel().to_vec()),
        ("cmdline.txt".into(), format!("{}\n", cmdline.join(" ")).into_bytes()),
        (format!("{app}.mast"), mast),
    ];
    // The manifest file, when the card is made from the source tree.
    let manifest_path = root.join("images").join(format!("{app}.toml"));
    if args.app.is_some() {
        let manifest = std::fs::read(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
        files.push(("mast-manifest.toml".into(), manifest));
    }
    if let Some(dir) = &args.firmware {
        sdcard::add_firmware(&args.board, dir, &mut files)?;
    }
    sdcard::write_card(&args.output, &files)?;
    eprintln!(
        "wrote {} for {} ({}): an MBR and a {} MiB FAT32 partition holding {}",
        args.output.display(),
        args.board.name,
        args.board.description,
        sdcard::PARTITION_BYTES >> 20,
        files.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(", ")
    );
    if args.firmware.is_none() {
        eprintln!("\nThe card does not boot yet: copy these firmware files into its FAT partition, keeping the");
        eprintln!("overlays/ directory, from the Raspberry Pi firmware repository's boot/ directory,");
        eprintln!("{}:", sdcard::FIRMWARE_SOURCE);
        for file in firmware {
            eprintln!("  {file}");
        }
        eprintln!("(or download that directory and run this again with --firmware <dir>).");
    }
    eprintln!("Then write it to the card: dd if={} of=/dev/<sd card> bs=4M conv=fsync", args.output.display());
    eprintln!("Serial console: GPIO 14 (TXD, pin 8) and 15 (RXD, pin 10), ground on pin 6, 3.3 V, 115200 8N1.");
    println!("{}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

/// Quotes an argument with whitespace so the runtime's splitter gives it back whole.
fn quote_arg(arg: &str) -> String {
    if arg.is_empty() || arg.chars().any(|c| c.is_ascii_whitespace()) { format!("\"{arg}\"") } else { arg.to_owned() }
}

fn inspect(args: InspectArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let (id, signer, body, chunks_offset) = artifact::read_unverified(&bytes)
        .with_context(|| format!("{} is not a readable Mast image", args.file.display()))?;
    let trusted = args.trust.trusted()?;
    let verdict = match artifact::verify(&bytes, &trusted) {
        Ok(_) => "verified".to_owned(),
        Err(e) => format!("NOT verified: {e}"),
    };
    let parts: Vec<PartSummary> = body
        .parts
        .iter()
        .map(|p| PartSummary { name: p.name.clone(), bytes: p.size, chunks: p.chunks.len() })
        .collect();
    let distinct = body.distinct_chunks();
    // The platform is in the kernel's ELF notes. Checking the chunks and the signature against the
    // image's own signer (trust aside) gives the kernel's bytes intact.
    let mut own_signer = TrustedKeys::default();
    own_signer.add(signer);
    let platform = artifact::verify(&bytes, &own_signer).ok().and_then(|v| images::kernel::platform_of(v.kernel()));
    let report = Inspection {
        file: args.file.display().to_string(),
        id,
        format_version: body.format_version,
        arch: body.arch,
        platform,
        signer,
        signer_trusted: trusted.contains(&signer),
        verdict,
        file_bytes: bytes.len() as u64,
        header_bytes: chunks_offset,
        distinct_chunks: distinct.len(),
        parts,
        manifest: body.manifest,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("encoding JSON")?);
    } else {
        print!("{}", report.text());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, serde::Serialize)]
struct PartSummary {
    name: String,
    bytes: u64,
    chunks: usize,
}

#[derive(Debug, serde::Serialize)]
struct Inspection {
    file: String,
    #[serde(serialize_with = "display")]
    id: ImageId,
    format_version: u32,
    arch: Arch,
    /// `None` when the kernel part is damaged or unrecognisable.
    platform: Option<Platform>,
    #[serde(serialize_with = "display")]
    signer: PublicKey,
    signer_trusted: bool,
    verdict: String,
    file_bytes: u64,
    header_bytes: u64,
    distinct_chunks: usize,
    parts: Vec<PartSummary>,
    manifest: Manifest,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl Inspection {
    fn text(&self) -> String {
        let m = &self.manifest;
        let mut out = String::new();
        let mut line = |label: &str, value: String| out.push_str(&format!("{label:<14}{value}\n"));
        line("file", self.file.clone());
        line("status", self.verdict.clone());
        line("id", self.id.to_string());
        line(
            "appliance",
            format!(
                "{} {}{}",
                m.name,
                m.version,
                if m.description.is_empty() { String::new() } else { format!(" — {}", m.description) }
            ),
        );
        line(
            "arch",
            format!("{} (manifest: {})", self.arch, m.arches.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")),
        );
        line(
            "platform",
            self.platform.map_or("unknown (damaged or unrecognised kernel)".to_owned(), |p| p.to_string()),
        );
        if let Some(board) = &m.board {
            let description = boot_contract::board::ALL.iter().find(|b| b.name == board).map(|b| b.description);
            line("board", description.map_or(board.clone(), |d| format!("{board} ({d})")));
        }
        line("signer", format!("{} ({})", self.signer, if self.signer_trusted { "trusted" } else { "NOT trusted" }));
        line("format", format!("version {}", self.format_version));
        line(
            "size",
            format!(
                "{} bytes ({} header, {} distinct chunks)",
                self.file_bytes, self.header_bytes, self.distinct_chunks
            ),
        );
        for part in &self.parts {
            line("part", format!("{}: {} bytes in {} chunks", part.name, part.bytes, part.chunks));
        }
        line("resources", format!("{} MiB RAM, {} vCPU", m.memory_mib, m.vcpus));
        for device in &m.devices {
            line("device", format!("{}: {}", device.role, device.kind));
        }
        for listen in &m.listen {
            line("listens", format!("{} {} on {}", listen.protocol, listen.port, listen.net));
        }
        line("reaches", if m.reach.is_empty() { "nobody".into() } else { m.reach.join(", ") });
        line("args", format!("{:?}", m.args));
        line(
            "restart",
            format!(
                "{} (at most {} times, backoff {} ms)",
                m.restart.when, m.restart.max_restarts, m.restart.backoff_ms
            ),
        );
        out
    }
}
