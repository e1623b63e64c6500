//! The ring-wrap case on the tender: `pump` sends 70,000 frames (more than a 16-bit ring index
//! counts) through the tender's shared network rings to a tap, and makes 70,000 disk requests,
//! checking every read-back; it must finish with status 0, none dropped.

mod common;

use std::time::Duration;

use common::TAP;

#[test]
fn the_rings_keep_working_past_65536_frames_and_requests() {
    let test = "the_rings_keep_working_past_65536_frames_and_requests";
    if !common::kvm(test) {
        return;
    }
    let Some(netns) = common::netns("pump") else { return };
    let image = common::tender_image("pump");
    let dir = common::scratch("pump");
    let disk = common::write(dir.path(), "scratch.img", &vec![0; 64 * 512]);
    let child = netns
        .command(env!("CARGO_BIN_EXE_tender"))
        .args(["--net", TAP, "--block"])
        .arg(&disk)
        .arg(&image.artifact)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the tender starts");
    let run = common::wait(child, Duration::from_secs(120));
    run.expect_status(0);
    for says in ["70000 disk requests through one disk", "every read-back matched", "70000 frames", "none dropped"] {
        assert!(run.stdout.contains(says), "expected {says:?}:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    }
}
