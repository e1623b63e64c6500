//! Publishes the linker script for the target architecture as `mast.ld` on the library search path.
//!
//! `-L` directories from a dependency's build script reach the final link of every appliance, and
//! lld searches them for `-T` scripts, so `.cargo/config.toml` can name `mast.ld` without knowing
//! where the runtime lives.

use std::{env, fs, path::PathBuf};

fn main() {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let os = env::var("CARGO_CFG_TARGET_OS").expect("cargo sets CARGO_CFG_TARGET_OS");
    println!("cargo:rerun-if-changed=build.rs");
    if os != "none" {
        return; // Host build: only the pure modules are compiled, nothing is linked.
    }
    let script = PathBuf::from(format!("src/arch/{arch}/link.ld"));
    println!("cargo:rerun-if-changed={}", script.display());
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy(&script, out.join("mast.ld")).unwrap_or_else(|e| panic!("copying {} to OUT_DIR: {e}", script.display()));
    println!("cargo:rustc-link-search={}", out.display());
}
