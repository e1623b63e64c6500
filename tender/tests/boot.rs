//! Real appliances, built for the tender and signed, booted by the real `tender` binary: output,
//! arguments, exit statuses, and the images it must refuse before running anything.

mod common;

use images::Platform;
use tender_abi::EXIT_TENDER_FAILURE;

const FAILURE: i32 = EXIT_TENDER_FAILURE as i32;

/// The host's wall clock in seconds since the Unix epoch.
fn host_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[test]
fn hello_greets_echoes_its_arguments_and_exits_0() {
    if !common::kvm("hello_greets_echoes_its_arguments_and_exits_0") {
        return;
    }
    let image = common::tender_image("hello");
    let before = host_time();
    let run = common::run(common::tender().arg("--stats").arg(&image.artifact).args(["--", "one", "two words", "ünï"]));
    let after = host_time();
    run.expect_status(0);
    // The wall clock: the host's time in BootInfo, carried forward by the guest's TSC.
    let clock = run.stdout.lines().find_map(|l| l.strip_prefix("clock: ")).unwrap_or_else(|| panic!("{}", run.stdout));
    let reported = clock
        .strip_suffix(" ms (tender)")
        .and_then(|rest| rest.split_once(" +- "))
        .and_then(|(time, _)| time.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("clock line {clock:?}: expected SECONDS.MILLIS +- N ms (tender)"));
    assert!(
        reported > before - 2.0 && reported < after + 2.0,
        "clock {clock:?}: not the host's time ({before:.3} to {after:.3})"
    );
    let lines: Vec<&str> = run.stdout.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(lines.first(), Some(&"Hello from Mast on tender!"), "{}", run.stdout);
    assert!(lines.contains(&r#"args: ["one", "two words", "ünï"]"#), "{}", run.stdout);
    assert_eq!(lines.last(), Some(&"mast: exit status 0"), "{}", run.stdout);
    // Console output is batched: a handful of exits for the whole boot, not one per character.
    let exits: u64 = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("tender: ")?.split_once(" VM exits")?.0.parse().ok())
        .unwrap_or_else(|| panic!("no exit count in --stats:\n{}", run.stderr));
    assert!(exits < 10, "{exits} VM exits to print {} bytes:\n{}", run.stdout.len(), run.stderr);
}

/// The `Random` hypercall reaches the host's `getrandom` through the sandbox, and two boots seed
/// different CSPRNG streams.
#[test]
fn random_gets_different_streams_from_the_host_on_each_boot() {
    if !common::kvm("random_gets_different_streams_from_the_host_on_each_boot") {
        return;
    }
    let image = common::tender_image("random");
    let line = || {
        let run = common::run(common::tender().arg("--stats").arg(&image.artifact));
        run.expect_status(0);
        assert!(run.stderr.contains("Random 2"), "one call for the bytes, one for the seed:\n{}", run.stderr);
        let line = run.stdout.lines().find_map(|l| l.trim_end().strip_prefix("random: source tender direct "));
        line.unwrap_or_else(|| panic!("no random line:\n{}", run.stdout)).to_owned()
    };
    let (first, second) = (line(), line());
    for line in [&first, &second] {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            matches!(words.as_slice(), [direct, "stream", stream] if direct.len() == 32 && stream.len() == 32),
            "{line}"
        );
    }
    assert_ne!(first, second, "two boots on the tender gave the same bytes");
}

#[test]
fn hello_without_arguments_gets_the_manifest_ones() {
    if !common::kvm("hello_without_arguments_gets_the_manifest_ones") {
        return;
    }
    let image = common::tender_image("hello");
    let run = common::run(common::tender().arg(&image.artifact));
    run.expect_status(0);
    let expected = format!("args: {:?}", image.manifest.args);
    assert!(run.stdout.lines().any(|l| l.trim_end() == expected), "expected {expected:?}:\n{}", run.stdout);
}

#[test]
fn crash_reports_each_failure_with_its_status() {
    if !common::kvm("crash_reports_each_failure_with_its_status") {
        return;
    }
    let image = common::tender_image("crash");
    for (args, status, says) in [
        (&["exit", "7"][..], 7, "mast: exit status 7"),
        (&["panic"][..], 101, "deliberate panic"),
        (&["fault"][..], 102, "mast: exit status 102"),
        // The runtime unmaps its stacks' guard pages in the tender's identity map.
        (&["overflow"][..], 102, "probably a stack overflow"),
    ] {
        let run = common::run(common::tender().arg(&image.artifact).arg("--").args(args));
        run.expect_status(status);
        assert!(run.stdout.contains(says), "crash {args:?}: expected {says:?}:\n{}", run.stdout);
    }
}

#[test]
fn a_kernel_built_for_qemu_is_refused() {
    let image = common::image("hello", Platform::Qemu);
    let run = common::run(common::tender().arg(&image.artifact));
    run.expect_status(FAILURE).expect_stderr(&["built for QEMU", "--platform tender"]);
    assert!(run.stdout.is_empty(), "nothing ran: {}", run.stdout);
}

#[test]
fn a_tampered_image_is_refused() {
    let image = common::tender_image("hello");
    let mut bytes = std::fs::read(&image.artifact).expect("image is readable");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let dir = common::scratch("tampered");
    let tampered = common::write(dir.path(), "hello.mast", &bytes);
    let run = common::run(common::tender().arg(&tampered));
    run.expect_status(FAILURE).expect_stderr(&["was refused", "does not match its hash"]);
    assert!(run.stdout.is_empty(), "nothing ran: {}", run.stdout);
}

#[test]
fn an_image_signed_by_an_untrusted_key_is_refused() {
    let image = common::tender_image("hello");
    let stranger = images::keys::SigningKey::from_seed([9; 32]).public().to_string();
    let run = common::run(common::tender().args(["--key", &stranger]).arg(&image.artifact));
    run.expect_status(FAILURE).expect_stderr(&["was refused", "which is not a trusted key"]);
    let trusted = image.signer.to_string();
    if common::kvm("an_image_signed_by_an_untrusted_key_is_refused") {
        common::run(common::tender().args(["--key", &trusted]).arg(&image.artifact)).expect_status(0);
    }
}

#[test]
fn missing_devices_are_named_before_anything_runs() {
    let image = common::tender_image("hello");
    let run = common::run(common::tender().args(["--net", "mastnotap0"]).arg(&image.artifact));
    run.expect_status(FAILURE).expect_stderr(&["no network interface named \"mastnotap0\"", "ip tuntap add"]);
    let run = common::run(common::tender().args(["--block", "/nonexistent/disk.img"]).arg(&image.artifact));
    run.expect_status(FAILURE).expect_stderr(&["--block /nonexistent/disk.img"]);
}

#[test]
fn bad_usage_is_a_tender_failure() {
    let run = common::run(common::tender().arg("--mem"));
    run.expect_status(FAILURE);
    let run = common::run(common::tender().arg("/nonexistent/image.mast"));
    run.expect_status(FAILURE).expect_stderr(&["/nonexistent/image.mast"]);
}

#[test]
fn mem_overrides_the_manifest_and_odd_sizes_are_refused() {
    if !common::kvm("mem_overrides_the_manifest_and_odd_sizes_are_refused") {
        return;
    }
    let image = common::tender_image("hello");
    let run = common::run(common::tender().args(["--mem", "48"]).arg(&image.artifact));
    run.expect_status(0);
    assert!(run.stdout.contains("RAM 48 MiB"), "the guest sees the RAM it was given:\n{}", run.stdout);
    let run = common::run(common::tender().args(["--mem", "5"]).arg(&image.artifact));
    run.expect_status(FAILURE).expect_stderr(&["whole 2 MiB pages"]);
    let run = common::run(common::tender().args(["--mem", "4096"]).arg(&image.artifact));
    run.expect_status(FAILURE).expect_stderr(&["at most 1008 MiB"]);
}
