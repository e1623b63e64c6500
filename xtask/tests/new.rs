//! `cargo xtask new` end to end: appliances generated from every template into this workspace
//! build, boot and pass their own boot tests on aarch64, x86_64 and the tender, unedited. The
//! generated files are removed afterwards, and Cargo.lock is put back as it was.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Removes what the test generated, and restores Cargo.lock, even when an assertion fails.
struct Generated {
    root: PathBuf,
    names: Vec<String>,
    lock: Vec<u8>,
}

impl Drop for Generated {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = fs::remove_dir_all(self.root.join("kernel-apps").join(name));
            let _ = fs::remove_file(self.root.join("images").join(format!("{name}.toml")));
            let _ = fs::remove_file(self.root.join("qemu-tests/tests").join(format!("{name}.rs")));
        }
        let _ = fs::write(self.root.join("Cargo.lock"), &self.lock);
    }
}

#[test]
fn generated_appliances_boot_and_pass_their_tests_everywhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf();
    let lock = fs::read(root.join("Cargo.lock")).expect("Cargo.lock");
    let pid = std::process::id();
    let mut generated = Generated { root: root.clone(), names: Vec::new(), lock };
    for template in ["http", "tcp", "udp"] {
        let name = format!("newprobe-{template}-{pid}");
        // Registered before it exists, so a half-generated appliance is removed too.
        generated.names.push(name.clone());
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["new", &name, "--template", template])
            .output()
            .expect("xtask runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "xtask new {name}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("cargo test -p qemu-tests --test {name}")), "{stdout}");
    }
    // Once more with a taken name: refused, and nothing is touched.
    let taken = generated.names[0].clone();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask")).args(["new", &taken]).output().expect("xtask runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let mut cargo = images::build::cargo_command(&root);
    cargo.args(["test", "--package", "qemu-tests"]);
    for name in &generated.names {
        cargo.args(["--test", name]);
    }
    let out = cargo.output().expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the generated boot tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Three boots per appliance: aarch64, x86_64, the tender (each skips, saying so, only where
    // this machine cannot run it; CI sets MAST_REQUIRE_KVM=1, where none may).
    assert_eq!(stdout.matches(" ... ok").count(), 9, "{stdout}");
}
