//! Building appliance images for tests, once per test process.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Mutex, OnceLock},
};

use images::{
    Arch,
    build::{self, BuildError, Profile},
};

/// The release image of `app` for `arch`, built on first use and reused afterwards.
///
/// Tests boot release images: they are what ships, and they boot fastest.
pub fn appliance(app: &str, arch: Arch) -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Mutex<HashMap<(String, Arch), PathBuf>>> = OnceLock::new();
    // Builds run one at a time: cargo would serialise them on its lock anyway, and holding ours
    // keeps two tests from rewriting the same image file while a third boots it.
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = built.get(&(app.to_owned(), arch)) {
        return Ok(path.clone());
    }
    let image = build::build(&build::workspace_root(), app, arch, Profile::Release)?.image;
    built.insert((app.to_owned(), arch), image.clone());
    Ok(image)
}
