//! Building appliance images for tests, once per test process, and booting them the way users do:
//! from the signed image, verified, never from the build's loose kernel file.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Mutex, OnceLock},
};

use images::{
    Arch,
    artifact::{self, VerifyFileError},
    build::{self, Board, BuildError, Profile},
    keys::{KeyConfig, KeyError},
};

/// Why a test's appliance could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Verify(#[from] VerifyFileError),
    #[error("unpacking the verified kernel: {0}")]
    Unpack(#[from] std::io::Error),
}

/// The kernel of `app`'s release image for `arch`: built on first use, verified against the
/// workspace's trusted keys, and unpacked to `target/images/verified/`.
///
/// Tests boot release images: they are what ships, and they boot fastest.
pub fn appliance(app: &str, arch: Arch) -> Result<PathBuf, ApplianceError> {
    appliance_for_board(app, arch, None)
}

/// Like [`appliance`], for an aarch64 `board` (`None`: QEMU `virt`).
pub fn appliance_for_board(app: &str, arch: Arch, board: Option<Board>) -> Result<PathBuf, ApplianceError> {
    type Key = (String, Arch, Option<&'static str>);
    static BUILT: OnceLock<Mutex<HashMap<Key, PathBuf>>> = OnceLock::new();
    let key = (app.to_owned(), arch, board.map(|b| b.name));
    // Builds run one at a time: cargo would serialise them on its lock anyway, and holding ours
    // keeps two tests from rewriting the same image file while a third boots it.
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.get(&key) {
        return Ok(path.clone());
    }
    let root = build::workspace_root();
    let image = appliance_image_for_board(app, arch, board)?;
    let trusted = KeyConfig::for_workspace(&root).trusted()?;
    let verified = artifact::verify_file(&image.artifact, &trusted)?;
    let kernel = verified.unpack_kernel(&root.join("target/images/verified"))?;
    built.insert(key, kernel.clone());
    Ok(kernel)
}

/// The signed image of `app` for `arch` (release), built on first use.
pub fn appliance_image(app: &str, arch: Arch) -> Result<build::Built, ApplianceError> {
    appliance_image_for_board(app, arch, None)
}

/// Like [`appliance_image`], for an aarch64 `board` (`None`: QEMU `virt`).
pub fn appliance_image_for_board(app: &str, arch: Arch, board: Option<Board>) -> Result<build::Built, ApplianceError> {
    type Key = (String, Arch, Option<&'static str>);
    static BUILT: OnceLock<Mutex<HashMap<Key, build::Built>>> = OnceLock::new();
    let key = (app.to_owned(), arch, board.map(|b| b.name));
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(image) = built.get(&key) {
        return Ok(image.clone());
    }
    let image = build::build_for_board(&build::workspace_root(), app, arch, board, Profile::Release)?;
    built.insert(key, image.clone());
    Ok(image)
}

/// The machine `app`'s release image for `arch` asks for ([`crate::Machine::for_image`]): its
/// verified kernel, its data bundle (if it has one) as the initial ramdisk, its manifest's memory
/// and arguments. Built on first use, like [`appliance`].
pub fn appliance_machine(app: &str, arch: Arch) -> Result<crate::Machine, ApplianceError> {
    static MACHINES: OnceLock<Mutex<HashMap<(String, Arch), crate::Machine>>> = OnceLock::new();
    // One at a time, like the builds: two tests unpacking the same image at once would race on
    // its files.
    let mut machines = MACHINES.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(machine) = machines.get(&(app.to_owned(), arch)) {
        return Ok(machine.clone());
    }
    let root = build::workspace_root();
    let image = appliance_image(app, arch)?;
    let trusted = KeyConfig::for_workspace(&root).trusted()?;
    let verified = artifact::verify_file(&image.artifact, &trusted)?;
    let machine = crate::Machine::for_image(&verified, &root.join("target/images/verified"))?;
    machines.insert((app.to_owned(), arch), machine.clone());
    Ok(machine)
}
