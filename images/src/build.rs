//! Builds an appliance crate into a bootable file.
//!
//! `cargo build` compiles the crate for the bare-metal target; then the linked ELF becomes the
//! bootable file: flattened into a raw arm64 Image on aarch64, copied as-is on x86_64 (QEMU boots
//! the ELF through PVH). The result is validated with [`crate::kernel::validate`] before its path is
//! handed out, so a broken build never reaches a VM.
//!
//! Appliances are compiled in their own target directory (`target/appliances`), so building one
//! from inside `cargo test` or `cargo run` never waits on the outer cargo's lock.

use std::{
    ffi::OsString,
    fmt, fs, io,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    Arch,
    elf::{Elf, ElfError},
    kernel::{self, KernelError, KernelInfo},
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
    /// The bootable file: `target/images/<arch>/<profile>/<app>.<img|elf>`.
    pub image: PathBuf,
    /// The linked ELF it came from (symbols intact in dev builds).
    pub elf: PathBuf,
    pub info: KernelInfo,
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
    let available = appliances(root);
    if !available.iter().any(|name| name == app) {
        return Err(BuildError::UnknownAppliance { name: app.to_owned(), available });
    }
    let target_dir = root.join("target/appliances");
    let mut cargo = cargo_command(root);
    cargo.args(["build", "--package", app, "--target", arch.target_triple(), "--profile", profile.cargo_name()]);
    cargo.arg("--target-dir").arg(&target_dir);
    let shown = display_command(&cargo);
    eprintln!("$ {shown}");
    let status = cargo.status().map_err(|source| BuildError::Spawn { command: shown.clone(), source })?;
    if !status.success() {
        return Err(BuildError::Cargo { command: shown, status });
    }

    let elf_path = target_dir.join(arch.target_triple()).join(profile.cargo_dir()).join(app);
    let elf_bytes = fs::read(&elf_path).map_err(|source| BuildError::Io { action: "reading", path: elf_path.clone(), source })?;
    let image_bytes = match arch {
        Arch::Aarch64 => {
            let elf = Elf::parse(&elf_bytes).map_err(|source| BuildError::Elf { path: elf_path.clone(), source })?;
            elf.flatten(MAX_IMAGE_BYTES).map_err(|source| BuildError::Elf { path: elf_path.clone(), source })?.bytes
        }
        Arch::X86_64 => elf_bytes,
    };

    let image_dir = root.join("target/images").join(arch.name()).join(profile.name());
    fs::create_dir_all(&image_dir).map_err(|source| BuildError::Io { action: "creating", path: image_dir.clone(), source })?;
    let image = image_dir.join(format!("{app}.{}", arch.image_extension()));
    let info = kernel::validate(arch, &image_bytes).map_err(|source| BuildError::Invalid { path: image.clone(), source })?;
    fs::write(&image, &image_bytes).map_err(|source| BuildError::Io { action: "writing", path: image.clone(), source })?;
    Ok(Built { image, elf: elf_path, info })
}

/// A `cargo` command run from `root` with the caller's cargo and rustc settings removed.
///
/// When this runs inside `cargo run` or `cargo test`, the environment carries the outer build's
/// `CARGO_*` and `RUST*` variables (target dir, flags, toolchain); passing them on would build the
/// appliance for the wrong configuration. Only the locations of cargo and rustup themselves stay.
fn cargo_command(root: &Path) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(root);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let keep = matches!(key.as_ref(), "CARGO_HOME" | "RUSTUP_HOME" | "CARGO_TERM_COLOR" | "CARGO_TERM_PROGRESS_WHEN");
        if !keep && (key.starts_with("CARGO") || key.starts_with("RUST")) {
            command.env_remove(key.as_ref());
        }
    }
    command
}

fn display_command(command: &Command) -> String {
    let mut words: Vec<OsString> = vec![command.get_program().to_owned()];
    words.extend(command.get_args().map(|a| a.to_owned()));
    words.iter().map(|w| w.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
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
    fn unknown_appliances_are_named_with_the_choices() {
        let err = build(&workspace_root(), "no-such-app", Arch::Aarch64, Profile::Dev).expect_err("must fail");
        let message = err.to_string();
        assert!(message.contains("\"no-such-app\"") && message.contains("hello"), "{message}");
    }
}
