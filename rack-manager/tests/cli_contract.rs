//! The CLI's contract, against the real binary: each exit code `--help` documents, and errors as
//! JSON under `-o json`.

mod common;

use std::{io::Read, io::Write, net::TcpListener, os::unix::fs::PermissionsExt, process::Output};

use common::Rack;
use images::Arch;

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

/// The JSON error body a failed `-o json` command prints on stdout.
fn json_error(output: &Output) -> rack_api::ApiError {
    let body: rack_api::ErrorBody = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON error ({e}): stdout {:?} stderr {:?}",
            output.stdout,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    body.error
}

#[test]
fn every_documented_exit_code_and_json_errors() {
    let help =
        String::from_utf8_lossy(&std::process::Command::new(common::BIN).arg("--help").output().expect("runs").stdout)
            .into_owned();
    for documented in [
        "0  success",
        "1  the operation failed",
        "2  bad command-line usage",
        "3  the manager cannot be reached",
        "4  no usable token",
        "5  the manager refused",
        "6  the manager failed",
    ] {
        assert!(help.contains(documented), "--help documents {documented:?}:\n{help}");
    }
    let rack = Rack::start(&["--launcher", "sim"]);
    let hello = common::image("hello", Arch::Aarch64);

    // 0
    assert_eq!(code(&rack.cli(&["image", "push", hello.to_str().expect("utf-8")])), Some(0));

    // 1: the operation failed here (a file that is not there), as text and as JSON.
    let missing = rack.cli(&["image", "push", "/nonexistent/x.mast"]);
    assert_eq!(code(&missing), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("error: reading /nonexistent/x.mast"));
    let missing = rack.cli(&["-o", "json", "image", "push", "/nonexistent/x.mast"]);
    assert_eq!(code(&missing), Some(1));
    assert_eq!(json_error(&missing).code, "failed");

    // 2: bad usage, e.g. `stop` with nothing to stop; as JSON too.
    assert_eq!(code(&rack.cli(&["stop"])), Some(2));
    assert_eq!(code(&rack.cli(&["deploy", "hello", "--replicas", "many"])), Some(2));
    let usage = rack.cli(&["stop", "-o", "json"]);
    assert_eq!(code(&usage), Some(2));
    assert_eq!(json_error(&usage).code, "usage");

    // 3: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("addr").port();
    let unreachable = rack.cli(&["--manager", &format!("http://127.0.0.1:{port}"), "-o", "json", "ps"]);
    assert_eq!(code(&unreachable), Some(3));
    assert_eq!(json_error(&unreachable).code, "unreachable");

    // 4: a token file others may read is refused before any request; a wrong token is refused by
    // the manager.
    let loose = rack.data_dir().join("loose.token");
    std::fs::write(&loose, rack.token()).expect("writes");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let refused = rack.cli(&["--token-file", loose.to_str().expect("utf-8"), "ps"]);
    assert_eq!(code(&refused), Some(4), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("chmod 600"));
    let wrong = rack.data_dir().join("wrong.token");
    std::fs::write(&wrong, "not-the-token").expect("writes");
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let wrong = rack.cli(&["--token-file", wrong.to_str().expect("utf-8"), "-o", "json", "ps"]);
    assert_eq!(code(&wrong), Some(4));
    assert_eq!(json_error(&wrong).code, "unauthorized");

    // 5: refused on its merits; the JSON error is the manager's own, with its code and hint.
    let unknown = rack.cli(&["-o", "json", "deploy", "nope"]);
    assert_eq!(code(&unknown), Some(5));
    let error = json_error(&unknown);
    assert_eq!(error.code, "not_found");
    assert!(error.hint.is_some_and(|h| h.contains("hello")));

    // 6: the manager failed (here: a server that answers 500 to everything).
    let server = TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://{}", server.local_addr().expect("addr"));
    let answering = std::thread::spawn(move || {
        if let Ok((mut socket, _)) = server.accept() {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request);
            let body = r#"{"error":{"code":"internal","message":"the store is broken"}}"#;
            let _ = write!(
                socket,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let failed = rack.cli(&["--manager", &url, "-o", "json", "ps"]);
    assert_eq!(code(&failed), Some(6));
    assert_eq!(json_error(&failed).message, "the store is broken");
    let _ = answering.join();
}
