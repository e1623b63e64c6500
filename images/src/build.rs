//! Builds an appliance crate into a signed image.
//!
//! 1. `cargo build` compiles the crate for the bare-metal target, with paths remapped so the bytes
//!    do not depend on where the checkout lives (reproducible builds).
//! 2. The linked ELF becomes the bootable kernel: flattened into a raw arm64 Image on aarch64,
//!    kept as-is on x86_64 (QEMU boots the ELF through PVH), and validated with
//!    [`crate::kernel::validate`], so a broken build never reaches a VM.
//! 3. The manifest `images/<app>.toml` is validated and checked against the kernel (architecture,
//!    memory), and the kernel and manifest are chunked and signed into `<app>.mast`
//!    ([`crate::artifact`]) with the workspace's signing key ([`crate::keys::KeyConfig`]).
//!
//! Appliances are compiled in their own target directory (`target/appliances`), so building one
//! from inside `cargo test` or `cargo run` never waits on the outer cargo's lock.
//!
//! # Boards
//! An aarch64 image is built for one board ([`boot_contract::board`]): QEMU `virt` unless
//! [`build_for_board`] names another. The board becomes the runtime's `board-<name>` cargo feature
//! (the link address differs per board); the appliance crate itself never changes. Boards other
//! than `virt` build in `target/appliances-<board>` (so two boards' builds never overwrite each
//! other's ELF) and land in `target/images/aarch64-<board>/<profile>/`, where the kernel is also
//! written as `kernel8.img`, the name the Raspberry Pi firmware boots. The `.mast` does not record
//! the board; its kernel does (it only runs at its board's link address).
//!
//! # Platforms
//! An image is built for one [`Platform`]: QEMU unless [`build_for_platform`] names the tender.
//! The platform becomes the runtime's `platform-<name>` cargo feature (boot protocol, console,
//! clock, devices and linker script differ; the appliance crate does not). Tender builds go to
//! `target/appliances-tender` and `target/images/<arch>-tender/<profile>/`, and their kernel is the
//! linked ELF on both architectures (`<app>.elf`), carrying the tender ABI note that
//! [`crate::kernel::validate_for`] checks. The `.mast` does not record the platform; its kernel's
//! note does ([`crate::kernel::platform_of`]).

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    process::Command,
};

pub use boot_contract::board::Board;

use crate::{
    Arch, Platform,
    artifact::{self, DATA_PART, ImageId, KERNEL_PART},
    elf::{Elf, ElfError},
    kernel::{self, KernelError, KernelInfo},
    keys::{KeyConfig, KeyError, PublicKey},
    manifest::{self, Manifest, ManifestError},
};

/// The largest raw image the flattener will write: far above any appliance, far below a mistake.
const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// Which cargo profile to build with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Unoptimised, with debug assertions: cargo's `dev` profile.
    Dev,
    /// Small and fast: the workspace's `appliance` profile (opt-level s, LTO, stripped).
    Release,
}

impl Profile {
    fn cargo_name(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Release => "appliance",
        }
    }

    /// The directory cargo writes this profile's artifacts to.
    fn cargo_dir(self) -> &'static str {
        match self {
            Profile::Dev => "debug",
            Profile::Release => "appliance",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Dev => "debug",
            Profile::Release => "release",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A built appliance.
#[derive(Debug, Clone)]
pub struct Built {
    /// The signed image: `target/images/<arch>/<profile>/<app>.mast`.
    pub artifact: PathBuf,
    /// The bootable kernel inside it, also written alone: `<app>.img` (aarch64) or `<app>.elf`.
    pub kernel: PathBuf,
    /// The board it was built for (aarch64 QEMU builds only; `virt` when none was named).
    pub board: Option<Board>,
    /// The platform it was built for.
    pub platform: Platform,
    /// For boards booted by firmware from an SD card: the kernel again, as `kernel8.img`.
    pub boot_file: Option<PathBuf>,
    /// The linked ELF the kernel came from (symbols intact in dev builds).
    pub elf: PathBuf,
    pub info: KernelInfo,
    pub manifest: Manifest,
    pub id: ImageId,
    pub signer: PublicKey,
    /// Size of the `.mast` file.
    pub artifact_size: u64,
    /// Set when a development signing key was generated for this build: show it to the user.
    pub key_warning: Option<String>,
}

/// Why an appliance could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unknown appliance {name:?}; the appliances are: {}", available.join(", "))]
    UnknownAppliance { name: String, available: Vec<String> },
    #[error("could not run `{command}`: {source} (is cargo on PATH?)")]
    Spawn { command: String, source: io::Error },
    #[error("`{command}` failed ({status}); its errors are above")]
    Cargo { command: String, status: std::process::ExitStatus },
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("the linked appliance {path} is not a usable ELF: {source}")]
    Elf { path: PathBuf, source: ElfError },
    #[error("the build produced an invalid image {path}: {source}")]
    Invalid { path: PathBuf, source: KernelError },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("signing key: {0}")]
    Key(#[from] KeyError),
    #[error("--board {board} is an aarch64 board; {arch} appliances run on QEMU microvm only")]
    BoardNeedsAarch64 { board: &'static str, arch: Arch },
    #[error("--board {board} is a QEMU board; the tender is its own machine and takes no board")]
    BoardOnTender { board: &'static str },
}

/// The file name Raspberry Pi firmware boots with `arm_64bit=1`.
pub const PI_KERNEL_FILE: &str = "kernel8.img";

/// Where a board's builds and images go: `virt` keeps the paths it always had.
fn board_suffix(board: Option<Board>) -> String {
    match board {
        Some(board) if board.kind != boot_contract::board::BoardKind::Virt => format!("-{}", board.name),
        _ => String::new(),
    }
}

/// The directory `build` writes `app`'s image and kernel to, for this architecture, board and profile.
pub fn image_dir(root: &Path, arch: Arch, board: Option<Board>, profile: Profile) -> PathBuf {
    root.join("target/images").join(format!("{}{}", arch.name(), board_suffix(board))).join(profile.name())
}

/// The directory [`build_for_platform`] writes images to: [`image_dir`] for QEMU (`virt`),
/// `target/images/<arch>-tender/<profile>/` for the tender.
pub fn platform_image_dir(root: &Path, arch: Arch, platform: Platform, profile: Profile) -> PathBuf {
    match platform {
        Platform::Qemu => image_dir(root, arch, None, profile),
        Platform::Tender => root.join("target/images").join(format!("{}-tender", arch.name())).join(profile.name()),
    }
}

/// The workspace this crate belongs to.
pub fn workspace_root() -> PathBuf {
    let images_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    images_dir.parent().expect("the images crate sits one level below the workspace root").to_path_buf()
}

/// Every appliance in `kernel-apps/` (each crate there except the runtime libraries), sorted.
pub fn appliances(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root.join("kernel-apps"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join("src/main.rs").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Builds `app` for `arch` and returns the validated bootable file.
///
/// Cargo's progress goes to stderr, preceded by the exact command (`$ cargo build …`), so a
/// failure can be reproduced by hand.
pub fn build(root: &Path, app: &str, arch: Arch, profile: Profile) -> Result<Built, BuildError> {
    build_for_board(root, app, arch, None, profile)
}

/// Builds `app` for `arch` and, on aarch64, for `board` (`None`: QEMU `virt`); see the module docs.
pub fn build_for_board(
    root: &Path,
    app: &str,
    arch: Arch,
    board: Option<Board>,
    profile: Profile,
) -> Result<Built, BuildError> {
    build_image(root, app, arch, board, Platform::Qemu, profile)
}

/// Builds `app` for `arch` on `platform` (QEMU: `virt` on aarch64); see the module docs.
pub fn build_for_platform(
    root: &Path,
    app: &str,
    arch: Arch,
    platform: Platform,
    profile: Profile,
) -> Result<Built, BuildError> {
    build_image(root, app, arch, None, platform, profile)
}

/// Builds for a board (QEMU) or a platform; a board on the tender is refused.
pub fn build_image(
    root: &Path,
    app: &str,
    arch: Arch,
    board: Option<Board>,
    platform: Platform,
    profile: Profile,
) -> Result<Built, BuildError> {
    if let Some(board) = board
        && arch != Arch::Aarch64
    {
        return Err(BuildError::BoardNeedsAarch64 { board: board.name, arch });
    }
    if platform == Platform::Tender
        && let Some(board) = board
        && board.kind != boot_contract::board::BoardKind::Virt
    {
        return Err(BuildError::BoardOnTender { board: board.name });
    }
    let suffix = match platform {
        Platform::Qemu => board_suffix(board),
        Platform::Tender => "-tender".to_owned(),
    };
    let available = appliances(root);
    if !available.iter().any(|name| name == app) {
        return Err(BuildError::UnknownAppliance { name: app.to_owned(), available });
    }
    let manifest_path = root.join("images").join(format!("{app}.toml"));
    let manifest_file = format!("images/{app}.toml");
    let manifest = manifest::load(&manifest_path).map_err(|mut e| {
        e.file = manifest_file.clone();
        e
    })?;
    if manifest.name != app {
        return Err(ManifestError {
            file: manifest_file,
            location: "key `name`: ".into(),
            problem: format!("{:?} does not match the appliance {app:?}", manifest.name),
            fix: format!("set name = \"{app}\""),
        }
        .into());
    }

    let target_dir = root.join(format!("target/appliances{suffix}"));
    let mut cargo = cargo_command(root);
    cargo.args(["build", "--package", app, "--target", arch.target_triple(), "--profile", profile.cargo_name()]);
    if let Some(feature) = platform.runtime_feature() {
        cargo.arg("--features").arg(feature);
    } else if !suffix.is_empty()
        && let Some(board) = board
    {
        cargo.arg("--features").arg(format!("runtime/board-{}", board.name));
    }
    cargo.arg("--target-dir").arg(&target_dir);
    cargo.arg("--config").arg(reproducible_rustflags(root, arch));
    let shown = crate::command::display(&cargo);
    eprintln!("$ {shown}");
    let status = cargo.status().map_err(|source| BuildError::Spawn { command: shown.clone(), source })?;
    if !status.success() {
        return Err(BuildError::Cargo { command: shown, status });
    }

    let elf_path = target_dir.join(arch.target_triple()).join(profile.cargo_dir()).join(app);
    let elf_bytes =
        fs::read(&elf_path).map_err(|source| BuildError::Io { action: "reading", path: elf_path.clone(), source })?;
    let image_bytes = match (arch, platform) {
        // The tender loads ELF segments on both architectures.
        (_, Platform::Tender) | (Arch::X86_64, Platform::Qemu) => elf_bytes,
        (Arch::Aarch64, Platform::Qemu) => {
            let elf = Elf::parse(&elf_bytes).map_err(|source| BuildError::Elf { path: elf_path.clone(), source })?;
            elf.flatten(MAX_IMAGE_BYTES).map_err(|source| BuildError::Elf { path: elf_path.clone(), source })?.bytes
        }
    };

    let image_dir = match platform {
        Platform::Qemu => image_dir(root, arch, board, profile),
        Platform::Tender => platform_image_dir(root, arch, platform, profile),
    };
    fs::create_dir_all(&image_dir).map_err(|source| BuildError::Io {
        action: "creating",
        path: image_dir.clone(),
        source,
    })?;
    let extension = match platform {
        Platform::Qemu => arch.image_extension(),
        Platform::Tender => "elf",
    };
    let kernel_path = image_dir.join(format!("{app}.{extension}"));
    let info = kernel::validate_for(arch, platform, &image_bytes)
        .map_err(|source| BuildError::Invalid { path: kernel_path.clone(), source })?;
    let data = match &manifest.data {
        Some(dir) => Some(pack_data(&root.join("kernel-apps").join(app).join(dir), &manifest_file)?),
        None => None,
    };
    let data_len = data.as_ref().map_or(0, |d| d.len() as u64);
    manifest.check_fits(&manifest_file, arch, info.memory_size + data_len)?;
    write(&kernel_path, &image_bytes)?;
    let boot_file = if suffix.is_empty() || platform != Platform::Qemu {
        None
    } else {
        let path = image_dir.join(PI_KERNEL_FILE);
        write(&path, &image_bytes)?;
        Some(path)
    };

    let (key, key_warning) = KeyConfig::for_workspace(root).signing_key()?;
    let mut parts: Vec<(&str, &[u8])> = vec![(KERNEL_PART, &image_bytes)];
    if let Some(data) = &data {
        parts.push((DATA_PART, data));
    }
    // The board travels in the signed manifest, so a bare image says what it boots on.
    let board = match platform {
        Platform::Qemu => board.or((arch == Arch::Aarch64).then_some(boot_contract::board::VIRT)),
        Platform::Tender => None,
    };
    let mut manifest = manifest;
    manifest.board = board.map(|b| b.name.to_owned());
    let signed = artifact::build(arch, &manifest, &parts, &key);
    let (id, signer, ..) = artifact::read_unverified(&signed).expect("an image just built is well-formed");
    let artifact_path = image_dir.join(format!("{app}.mast"));
    write(&artifact_path, &signed)?;
    Ok(Built {
        artifact: artifact_path,
        kernel: kernel_path,
        board,
        platform,
        boot_file,
        elf: elf_path,
        info,
        manifest,
        id,
        signer,
        artifact_size: signed.len() as u64,
        key_warning,
    })
}

/// Packs every file under `dir` into a data bundle, with `/`-separated paths relative to `dir`.
fn pack_data(dir: &Path, manifest_file: &str) -> Result<Vec<u8>, BuildError> {
    fn walk(dir: &Path, prefix: &str, files: &mut Vec<(String, Vec<u8>)>) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            if entry.file_type()?.is_dir() {
                walk(&entry.path(), &path, files)?;
            } else {
                files.push((path, fs::read(entry.path())?));
            }
        }
        Ok(())
    }
    if !dir.is_dir() {
        return Err(ManifestError {
            file: manifest_file.into(),
            location: "key `data`: ".into(),
            problem: format!("{} is not a directory", dir.display()),
            fix: "create it, or remove the key".into(),
        }
        .into());
    }
    let mut files = Vec::new();
    walk(dir, "", &mut files).map_err(|source| BuildError::Io { action: "reading", path: dir.to_owned(), source })?;
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
    Ok(boot_contract::bundle::pack(&refs))
}

/// Writes aside and renames into place: a concurrent reader (another build's test booting the
/// same image) sees the old file or the new one, never half of one.
fn write(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let aside = path.with_extension(format!("{}.tmp", std::process::id()));
    fs::write(&aside, bytes).and_then(|()| fs::rename(&aside, path)).map_err(|source| BuildError::Io {
        action: "writing",
        path: path.to_owned(),
        source,
    })
}

/// Rustflags that keep the checkout's location and the cargo home out of the binary (panic
/// locations and debug info would otherwise embed them), as a `--config` value. Cargo appends
/// these to the target's flags in `.cargo/config.toml` rather than replacing them.
fn reproducible_rustflags(root: &Path, arch: Arch) -> String {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let mut flags = vec![format!("--remap-path-prefix={}=/mast", root.display())];
    if let Some(cargo_home) = cargo_home {
        flags.push(format!("--remap-path-prefix={}=/cargo", cargo_home.display()));
    }
    let quoted: Vec<String> = flags.iter().map(|f| toml_string(f)).collect();
    format!("target.{}.rustflags=[{}]", arch.target_triple(), quoted.join(", "))
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Copies a workspace's source tree (not build outputs, VCS data or keys) to `to`: a second
/// checkout, for reproducibility tests and for benches that build a modified copy.
pub fn copy_source_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        if matches!(entry.file_name().to_str(), Some("target" | ".git" | ".mast")) {
            continue;
        }
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_source_tree(&entry.path(), &dest)?;
        } else {
            fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// A `cargo` command run from `root` with the caller's cargo and rustc settings removed.
///
/// When this runs inside `cargo run` or `cargo test`, the environment carries the outer build's
/// `CARGO_*` and `RUST*` variables (target dir, flags, toolchain); passing them on would build the
/// appliance for the wrong configuration. Only the locations of cargo and rustup themselves stay.
pub fn cargo_command(root: &Path) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(root);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let keep =
            matches!(key.as_ref(), "CARGO_HOME" | "RUSTUP_HOME" | "CARGO_TERM_COLOR" | "CARGO_TERM_PROGRESS_WHEN");
        if !keep && (key.starts_with("CARGO") || key.starts_with("RUST")) {
            command.env_remove(key.as_ref());
        }
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_the_appliances_but_not_the_runtime() {
        let names = appliances(&workspace_root());
        assert!(names.contains(&"hello".to_owned()), "{names:?}");
        assert!(names.contains(&"crash".to_owned()), "{names:?}");
        assert!(!names.contains(&"runtime".to_owned()), "{names:?}");
    }

    #[test]
    fn rustflags_for_reproducibility_are_valid_toml() {
        let value = reproducible_rustflags(Path::new("/tmp/we\"ird dir"), Arch::Aarch64);
        assert!(value.starts_with("target.aarch64-unknown-none.rustflags=["), "{value}");
        let (_, array) = value.split_once('=').expect("key=value");
        let parsed: toml::Value = toml::from_str(&format!("flags = {array}")).expect("valid TOML");
        let first = parsed["flags"][0].as_str().expect("a string");
        assert_eq!(first, "--remap-path-prefix=/tmp/we\"ird dir=/mast");
    }

    #[test]
    fn boards_other_than_virt_get_their_own_directories() {
        let root = Path::new("/w");
        let virt = image_dir(root, Arch::Aarch64, Some(boot_contract::board::VIRT), Profile::Release);
        assert_eq!(virt, image_dir(root, Arch::Aarch64, None, Profile::Release));
        assert_eq!(virt, Path::new("/w/target/images/aarch64/release"));
        let pi = image_dir(root, Arch::Aarch64, Some(boot_contract::board::RPI3), Profile::Dev);
        assert_eq!(pi, Path::new("/w/target/images/aarch64-rpi3/debug"));
    }

    #[test]
    fn tender_builds_get_their_own_directories() {
        let root = Path::new("/w");
        assert_eq!(
            platform_image_dir(root, Arch::X86_64, Platform::Tender, Profile::Release),
            Path::new("/w/target/images/x86_64-tender/release")
        );
        assert_eq!(
            platform_image_dir(root, Arch::X86_64, Platform::Qemu, Profile::Dev),
            image_dir(root, Arch::X86_64, None, Profile::Dev)
        );
    }

    #[test]
    fn boards_are_refused_on_the_tender() {
        let err = build_image(
            &workspace_root(),
            "hello",
            Arch::Aarch64,
            Some(boot_contract::board::RPI3),
            Platform::Tender,
            Profile::Dev,
        )
        .expect_err("a Pi board on the tender");
        assert!(matches!(err, BuildError::BoardOnTender { board: "rpi3" }), "{err}");
    }

    #[test]
    fn boards_need_aarch64() {
        let err =
            build_for_board(&workspace_root(), "hello", Arch::X86_64, Some(boot_contract::board::RPI3), Profile::Dev)
                .expect_err("must fail");
        assert!(matches!(err, BuildError::BoardNeedsAarch64 { board: "rpi3", .. }), "{err}");
    }

    #[test]
    fn unknown_appliances_are_named_with_the_choices() {
        let err = build(&workspace_root(), "no-such-app", Arch::Aarch64, Profile::Dev).expect_err("must fail");
        let message = err.to_string();
        assert!(message.contains("\"no-such-app\"") && message.contains("hello"), "{message}");
    }
}
