//! Bad image files are refused before QEMU starts, with an error that says what is wrong, and a VM
//! that never finishes is killed at its deadline rather than hanging the caller.

use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use images::Arch;
use qemu::{Exit, Machine, SpawnError};

fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mast-bad-images-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir is writable");
    let path = dir.join(name);
    fs::write(&path, bytes).expect("temp file is writable");
    path
}

fn refusal(arch: Arch, path: PathBuf) -> String {
    match Machine::new(arch, path).spawn() {
        Err(error @ SpawnError::InvalidImage(_)) => error.to_string(),
        Err(other) => panic!("expected an invalid-image error, got: {other}"),
        Ok(mut instance) => {
            instance.kill();
            panic!("a bad image was booted")
        }
    }
}

#[test]
fn garbage_is_refused_on_both_arches() {
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let path = scratch("garbage.img", &garbage);
    let aarch64 = refusal(Arch::Aarch64, path.clone());
    assert!(aarch64.contains("refusing to boot") && aarch64.contains("not an arm64 Image"), "{aarch64}");
    let x86_64 = refusal(Arch::X86_64, path);
    assert!(x86_64.contains("refusing to boot") && x86_64.contains("not an ELF file"), "{x86_64}");
}

#[test]
fn an_empty_file_is_refused() {
    let message = refusal(Arch::Aarch64, scratch("empty.img", &[]));
    assert!(message.contains("empty file"), "{message}");
}

#[test]
fn a_truncated_image_is_refused_on_both_arches() {
    for arch in Arch::ALL {
        let image = qemu::appliance("hello", arch).unwrap_or_else(|e| panic!("building hello for {arch}: {e}"));
        let bytes = fs::read(&image).expect("built image is readable");
        for cut in [bytes.len() / 2, bytes.len() - 1] {
            let message = refusal(arch, scratch(&format!("truncated-{arch}-{cut}"), &bytes[..cut]));
            assert!(message.contains("truncated"), "{arch}, cut to {cut} of {} bytes: {message}", bytes.len());
        }
    }
}

#[test]
fn an_image_for_the_other_architecture_is_refused() {
    let aarch64 = qemu::appliance("hello", Arch::Aarch64).expect("building hello for aarch64");
    let message = refusal(Arch::X86_64, aarch64);
    assert!(message.contains("built for aarch64"), "{message}");
    let x86_64 = qemu::appliance("hello", Arch::X86_64).expect("building hello for x86_64");
    let message = refusal(Arch::Aarch64, x86_64);
    assert!(message.contains("ELF file"), "{message}");
}

/// `-S` starts QEMU with the CPU stopped, so the VM can never finish on its own.
#[test]
fn a_vm_that_never_finishes_is_killed_at_its_deadline() {
    let image = qemu::appliance("hello", Arch::Aarch64).expect("building hello for aarch64");
    let instance = Machine::new(Arch::Aarch64, image).extra_arg("-S").spawn().expect("QEMU starts");
    let pid = instance.pid();
    let started = Instant::now();
    let run = instance.wait_exit(Duration::from_millis(500));
    assert_eq!(run.exit, Exit::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?} to give up", started.elapsed());
    assert!(!PathBuf::from(format!("/proc/{pid}")).exists(), "QEMU (pid {pid}) is still running");
}
