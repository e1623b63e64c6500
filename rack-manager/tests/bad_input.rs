//! Bad input gets a clear 4xx error (and a documented CLI exit code), and changes nothing.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
};

use common::{Rack, image};
use images::{
    Arch,
    artifact::{self, KERNEL_PART},
    keys::SigningKey,
};
use rack_api::ErrorBody;

/// Sends one raw HTTP request and returns (status, body).
fn raw(rack: &Rack, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let url = rack.url();
    let address = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("the daemon listens");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn error_of(body: &str) -> ErrorBody {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not an error body ({e}): {body}"))
}

fn assert_refused(output: &std::process::Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "expected exit {code}; stderr:\n{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
}

#[test]
fn bad_requests_are_refused_clearly_and_change_nothing() {
    let rack = Rack::start(&[]);
    let hello = image("hello", Arch::Aarch64);
    rack.ok(&["image", "push", hello.to_str().expect("utf-8 path")]);
    let images_before = rack.ok(&["image", "ls", "-o", "json"]);
    let hosts_before = rack.ok(&["host", "ls", "-o", "json"]);

    // Unknown image.
    assert_refused(&rack.cli(&["deploy", "nginx"]), 5, "no image is named or has an id starting with \"nginx\"");

    // A tampered image: one byte of the kernel's chunks flipped.
    let mut tampered = std::fs::read(&hello).expect("image readable");
    let last = tampered.len() - 100;
    tampered[last] ^= 0x55;
    let tampered_path = rack.data_dir().join("tampered.mast");
    std::fs::write(&tampered_path, &tampered).expect("written");
    assert_refused(&rack.cli(&["image", "push", tampered_path.to_str().expect("utf-8")]), 5, "does not match its hash");

    // Garbage.
    let garbage = rack.data_dir().join("garbage.mast");
    std::fs::write(&garbage, b"not an image at all").expect("written");
    assert_refused(&rack.cli(&["image", "push", garbage.to_str().expect("utf-8")]), 5, "not a Mast image");

    // A well-formed image signed by a key the rack does not trust.
    let bytes = std::fs::read(&hello).expect("image readable");
    let verified = artifact::verify(
        &bytes,
        &images::keys::TrustedKeys::new([artifact::read_unverified(&bytes).expect("readable").1]),
    )
    .expect("verifies with its own signer");
    let stranger = SigningKey::from_seed([42; 32]);
    let foreign = artifact::build(Arch::Aarch64, verified.manifest(), &[(KERNEL_PART, verified.kernel())], &stranger);
    let foreign_path = rack.data_dir().join("foreign.mast");
    std::fs::write(&foreign_path, foreign).expect("written");
    let output = rack.cli(&["image", "push", foreign_path.to_str().expect("utf-8")]);
    assert_refused(&output, 5, &format!("signed by {}", stranger.public()));
    assert_refused(&output, 5, "rack-manager trust add");

    // Impossible placement.
    assert_refused(&rack.cli(&["deploy", "hello", "--replicas", "100000", "--mem", "65536"]), 5, "replicas fit");
    assert_refused(&rack.cli(&["deploy", "hello", "--mem", "1"]), 5, "less than hello needs");
    assert_refused(&rack.cli(&["deploy", "hello", "--replicas", "0"]), 5, "0 replicas");

    // Bad token, through the CLI and raw; a token on the command line is refused outright.
    let wrong = rack.data_dir().join("wrong.token");
    std::fs::write(&wrong, "wrong\n").expect("written");
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    assert_refused(&rack.cli(&["--token-file", wrong.to_str().expect("utf-8"), "ps"]), 4, "no valid API token");
    assert_refused(&rack.cli(&["--token", "wrong", "ps"]), 1, "use --token-file PATH");
    let (status, body) = raw(&rack, "GET", "/v1/instances", None, "");
    assert_eq!((status, error_of(&body).error.code.as_str()), (401, "unauthorized"));

    // Malformed JSON, a wrong shape, an unknown path.
    let token = rack.token();
    let (status, body) = raw(&rack, "POST", "/v1/deployments", Some(&token), "{\"image\": \"hello\", \"replicas\": ");
    let error = error_of(&body).error;
    assert_eq!((status, error.code.as_str()), (400, "bad_request"));
    assert!(error.message.contains("not a valid deploy request") && error.hint.is_some(), "{error:?}");
    let (status, body) = raw(&rack, "POST", "/v1/deployments", Some(&token), "{\"image\": 7}");
    assert_eq!(status, 400, "{body}");
    let (status, body) = raw(&rack, "GET", "/v2/instances", Some(&token), "");
    assert_eq!(status, 404, "{body}");
    assert!(error_of(&body).error.hint.is_some_and(|h| h.contains("/v1")));

    // Unknown hosts and instances.
    assert_refused(&rack.cli(&["host", "drain", "nowhere"]), 5, "no host named \"nowhere\"");
    assert_refused(&rack.cli(&["stop", "hello-99"]), 5, "no instance or deployment named \"hello-99\"");

    // Nothing changed.
    assert!(rack.ps().is_empty(), "no instance was created");
    assert_eq!(rack.ok(&["image", "ls", "-o", "json"]), images_before);
    assert_eq!(rack.ok(&["host", "ls", "-o", "json"]), hosts_before);
}

#[test]
fn an_unreachable_manager_has_its_own_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = std::process::Command::new(common::BIN)
        .args(["--manager", "http://127.0.0.1:9", "--data-dir"])
        .env("RACK_TOKEN", "x")
        .arg(dir.path())
        .arg("ps")
        .output()
        .expect("runs");
    assert_refused(&output, 3, "cannot reach http://127.0.0.1:9");
    let output = std::process::Command::new(common::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("ps")
        .env_remove("RACK_MANAGER")
        .output()
        .expect("runs");
    assert_refused(&output, 3, "rack-manager serve");
}

#[test]
fn help_teaches_with_examples_and_exit_codes() {
    let output = std::process::Command::new(common::BIN).arg("--help").output().expect("runs");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for needle in ["Examples:", "Exit codes:", "rack-manager deploy", "serve", "agent", "plan"] {
        assert!(help.contains(needle), "{needle:?} missing from --help:\n{help}");
    }
}
