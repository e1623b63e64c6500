//! `cargo xtask` as a user runs it: the README's commands, their output and their exit codes.

use std::{
    fs,
    process::{Command, Output},
};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).output().expect("xtask runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Builds hello for aarch64 (release) through the CLI and returns the image path it printed last.
fn build_hello() -> String {
    let out = xtask(&["image", "build", "hello", "--arch", "aarch64", "--release"]);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("$ cargo build --package hello --target aarch64-unknown-none"));
    text(&out.stdout).lines().last().expect("a path on stdout").to_owned()
}

#[test]
fn image_build_prints_a_signed_image_path_last() {
    let path = build_hello();
    assert!(path.ends_with("target/images/aarch64/release/hello.mast"), "{path}");
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{path} is not readable: {e}"));
    assert_eq!(&bytes[..8], b"\x89MAST\r\n\x1a", "{path} is not a Mast image");
    let kernel = fs::read(path.replace(".mast", ".img")).expect("the bare kernel sits beside the image");
    assert_eq!(&kernel[56..60], b"ARM\x64", "the kernel is not an arm64 Image");
}

#[test]
fn image_verify_and_inspect_report_on_a_built_image() {
    let path = build_hello();
    let out = xtask(&["image", "verify", &path]);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("verified: hello 0.1.0 for aarch64"), "{}", text(&out.stdout));

    let out = xtask(&["image", "inspect", "--json", &path]);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    let json = text(&out.stdout);
    for needle in [r#""verdict": "verified""#, r#""arch": "aarch64""#, r#""name": "kernel""#, r#""memory_mib": 16"#] {
        assert!(json.contains(needle), "{needle} missing from:\n{json}");
    }

    let stranger = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let out = xtask(&["image", "verify", &path, "--key", stranger]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("which is not a trusted key"), "{}", text(&out.stderr));
}

#[test]
fn a_tampered_image_is_refused_by_run() {
    let path = build_hello();
    let mut bytes = fs::read(&path).expect("built image");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let tampered = std::env::temp_dir().join(format!("mast-cli-tampered-{}.mast", std::process::id()));
    fs::write(&tampered, &bytes).expect("temp file");
    let out = xtask(&["run", "--image", tampered.to_str().expect("utf-8 temp path")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("was refused") && stderr.contains("does not match its hash"), "{stderr}");
}

#[test]
fn run_boots_hello_and_exits_with_its_status() {
    let out = xtask(&["run", "hello", "--arch", "aarch64", "--release", "--", "from", "the cli"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("Hello from Mast") && stdout.contains(r#"args: ["from", "the cli"]"#), "{stdout}");
    assert!(stderr.contains("appliance exited with status 0 (success)"), "{stderr}");
    assert!(stderr.contains("booting hello 0.1.0 (aarch64, image "), "{stderr}");
}

#[test]
fn keygen_writes_a_private_key_and_prints_the_public_one() {
    let dir = std::env::temp_dir().join(format!("mast-cli-keygen-{}", std::process::id()));
    let key = dir.join("signing.key");
    let out = xtask(&["keygen", "--out", key.to_str().expect("utf-8 temp path")]);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    let public = text(&out.stdout);
    assert_eq!(public.trim().len(), 64, "a hex public key: {public}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&key).expect("written").permissions().mode() & 0o777, 0o600);
    let again = xtask(&["keygen", "--out", key.to_str().expect("utf-8 temp path")]);
    assert_eq!(again.status.code(), Some(1), "an existing key must not be overwritten");
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn run_passes_a_panic_through_as_status_101() {
    let out = xtask(&["run", "crash", "--arch", "aarch64", "--release"]);
    assert_eq!(out.status.code(), Some(101), "stderr:\n{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("panicked at"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("status 101 (panic)"));
}

#[test]
fn run_refuses_a_garbage_image() {
    let path = std::env::temp_dir().join(format!("mast-cli-garbage-{}.img", std::process::id()));
    fs::write(&path, vec![0x42u8; 4096]).expect("temp file");
    let out = xtask(&["run", "--image", path.to_str().expect("utf-8 temp path")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("was refused: not a Mast image"), "{stderr}");
}

#[test]
fn unknown_appliances_and_arches_are_explained() {
    let out = xtask(&["image", "build", "nope", "--arch", "aarch64"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            r#"unknown appliance "nope"; the appliances are: cache, crash, hello, hostile, httpd, kvlog, pump"#
        ),
        "{}",
        text(&out.stderr)
    );
    let out = xtask(&["image", "build", "hello", "--arch", "mips"]);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
    assert!(text(&out.stderr).contains("unknown architecture \"mips\""), "{}", text(&out.stderr));
}

#[test]
fn image_list_names_every_appliance() {
    let out = xtask(&["image", "list"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).lines().collect::<Vec<_>>(),
        ["cache", "crash", "hello", "hostile", "httpd", "kvlog", "pump", "random"]
    );
}

/// Both Pis build.
#[test]
fn image_build_for_a_pi_writes_kernel8_img_loaded_at_0x80000() {
    for board in ["rpi3", "rpi4"] {
        let out = xtask(&["image", "build", "hello", "--board", board, "--release"]);
        assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(&format!("--features runtime/board-{board}")), "{stderr}");
        let path = text(&out.stdout).lines().last().expect("a path on stdout").to_owned();
        assert!(path.ends_with(&format!("target/images/aarch64-{board}/release/hello.mast")), "{path}");
        let kernel = fs::read(path.replace("hello.mast", "kernel8.img")).expect("kernel8.img beside the image");
        assert_eq!(&kernel[56..60], b"ARM\x64", "kernel8.img is not an arm64 Image");
        assert_eq!(kernel[8..16], 0x8_0000u64.to_le_bytes(), "text_offset must place the image at 0x80000");
        assert_eq!(&kernel[64..68], b"MAST", "the Mast header must follow the arm64 header");
        // The board travels in the signed manifest, and inspect shows it.
        let out = xtask(&["image", "inspect", &path]);
        assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
        let board_line = text(&out.stdout).lines().find(|l| l.starts_with("board ")).map(str::to_owned);
        assert!(board_line.as_deref().is_some_and(|l| l.contains(board)), "no board line:\n{}", text(&out.stdout));
        let out = xtask(&["image", "inspect", "--json", &path]);
        assert!(text(&out.stdout).contains(&format!("\"board\": \"{board}\"")), "{}", text(&out.stdout));
    }
}

#[test]
fn image_sdcard_writes_a_fat_card_and_names_the_firmware() {
    let dir = tempfile::tempdir().expect("temp dir");
    let card = dir.path().join("card.img");
    let card_arg = card.to_str().expect("UTF-8 temp path");
    let out = xtask(&["image", "sdcard", "hello", "--board", "rpi3", "--release", "-o", card_arg]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stderr:\n{stderr}");
    assert_eq!(text(&out.stdout).lines().last(), Some(card_arg));
    for needed in ["bootcode.bin", "start.elf", "fixup.dat", "bcm2710-rpi-3-b.dtb", "github.com/raspberrypi/firmware"] {
        assert!(stderr.contains(needed), "the firmware instructions lack {needed}:\n{stderr}");
    }
    let files = images::sdcard::read_card(&card).expect("the card reads back");
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["cmdline.txt", "config.txt", "hello.mast", "kernel8.img", "mast-manifest.toml"]);
    let file = |name: &str| files.iter().find(|(n, _)| n == name).map(|(_, bytes)| bytes.clone()).expect("present");
    assert!(text(&file("config.txt")).lines().any(|l| l == "arm_64bit=1"));
    let built = fs::read(
        images::build::image_dir(
            &images::build::workspace_root(),
            images::Arch::Aarch64,
            Some(boot_contract::board::RPI3),
            images::build::Profile::Release,
        )
        .join("kernel8.img"),
    )
    .expect("the built kernel8.img");
    assert_eq!(file("kernel8.img"), built);

    let out = xtask(&["image", "sdcard", "hello", "--board", "virt", "-o", card_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("SD cards are for the Raspberry Pis"), "{}", text(&out.stderr));

    // A Pi 3 image on a Pi 4 card is refused, and no card is written.
    let pi3_image = images::build::image_dir(
        &images::build::workspace_root(),
        images::Arch::Aarch64,
        Some(boot_contract::board::RPI3),
        images::build::Profile::Release,
    )
    .join("hello.mast");
    let other = dir.path().join("other.img");
    let other_arg = other.to_str().expect("UTF-8 temp path");
    let pi3_arg = pi3_image.to_str().expect("UTF-8 path");
    let out = xtask(&["image", "sdcard", "--image", pi3_arg, "--board", "rpi4", "-o", other_arg]);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("built for board rpi3, not board rpi4"), "{}", text(&out.stderr));
    assert!(!other.exists(), "a refused card must not be written");
    let out = xtask(&["image", "sdcard", "--image", pi3_arg, "--board", "rpi3", "-o", other_arg]);
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
}

#[test]
fn run_boots_a_pi_image_on_raspi3b() {
    let out = xtask(&["run", "hello", "--board", "rpi3", "--release", "--", "pi", "two words"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("Hello from Mast on Raspberry Pi 3"), "{stdout}");
    assert!(stdout.contains(r#"args: ["pi", "two words"]"#), "{stdout}");
    assert!(stderr.contains("-machine raspi3b"), "{stderr}");
    // The image alone says it is a Pi image (its text_offset): --image boots it on raspi3b too.
    let image = images::build::image_dir(
        &images::build::workspace_root(),
        images::Arch::Aarch64,
        Some(boot_contract::board::RPI3),
        images::build::Profile::Release,
    )
    .join("hello.mast");
    let out = xtask(&["run", "--image", image.to_str().expect("UTF-8 path")]);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Hello from Mast on Raspberry Pi 3"), "{}", text(&out.stdout));
    // A kernel built for another board than --board names is refused before anything boots.
    let out = xtask(&["run", "--image", image.to_str().expect("UTF-8 path"), "--board", "rpi4"]);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("built for board rpi3, not rpi4"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("qemu-system"), "nothing may boot:\n{}", text(&out.stderr));
}

/// `--board rpi4` boots on `raspi4b` where QEMU has it (QEMU 9 and later), and otherwise says why
/// not (failing instead under `MAST_REQUIRE_QEMU10=1`).
#[test]
fn run_boots_a_pi_4_image_on_raspi4b() {
    let out = xtask(&["run", "hello", "--board", "rpi4", "--release", "--", "pi4"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if let Some(reason) = qemu::version::raspi4b_unavailable_reason() {
        assert!(!qemu::version::required(), "MAST_REQUIRE_QEMU10=1 and {reason}");
        assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
        assert!(stderr.contains("has no `raspi4b` machine"), "{stderr}");
        eprintln!("skipped booting rpi4 in run_boots_a_pi_4_image_on_raspi4b: {reason}");
        return;
    }
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("Hello from Mast on Raspberry Pi 4 (BCM2711)!"), "{stdout}");
    assert!(stdout.contains(r#"args: ["pi4"]"#), "{stdout}");
    assert!(stderr.contains("-machine raspi4b") && stderr.contains("-m 2048M"), "{stderr}");
    // The image says it is a Pi 4's (its manifest's board): --image boots it on raspi4b.
    let image = images::build::image_dir(
        &images::build::workspace_root(),
        images::Arch::Aarch64,
        Some(boot_contract::board::RPI4),
        images::build::Profile::Release,
    )
    .join("hello.mast");
    let out = xtask(&["run", "--image", image.to_str().expect("UTF-8 path"), "--", "alone"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("Hello from Mast on Raspberry Pi 4 (BCM2711)!"), "{stdout}");
    assert!(stderr.contains("-machine raspi4b"), "{stderr}");
}
