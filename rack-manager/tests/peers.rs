//! Rack-to-rack peering with real `rack-manager serve` processes on 127.0.0.1: mutual TLS with
//! pinned certificates, image replication that fetches only missing chunks and refuses untrusted
//! signers, damaged chunks on the wire, a partition that heals, and the rack cut off by a
//! partition stopping its copy of a deployment its peer took over meanwhile.
//!
//! The racks use the simulated launcher: nothing here boots a VM (see `failover.rs` for that).

mod common;
mod peering;

use std::{collections::HashSet, io::Write, sync::Arc, time::Duration};

use common::image;
use images::{Arch, artifact};
use peering::{complete_image_ids, has_all_images_of, identity, image_ids, mesh, peer, start, until};

const SIM: &[&str] = &["--launcher", "sim", "--memory-mib", "4096"];

fn probe(from: &common::Rack, to: &common::Rack, fingerprint: &str) -> std::process::Output {
    let (_, url, _) = identity(to);
    from.cli(&["peer", "probe", &url, "--fingerprint", fingerprint])
}

fn text(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn mutual_tls_refuses_unknown_clients_and_servers() {
    let a = start("a", SIM);
    let b = start("b", SIM);
    let c = start("c", SIM);
    mesh(&[&a, &b]);
    let (_, b_url, b_fingerprint) = identity(&b);
    let (_, _, c_fingerprint) = identity(&c);

    let ok = probe(&a, &b, &b_fingerprint);
    assert!(ok.status.success(), "a configured peer gets through: {}", text(&ok));
    assert!(text(&ok).contains("mutual TLS ok"), "{}", text(&ok));

    // c has a certificate of its own, but b does not know it: refused in the handshake.
    let unknown_client = probe(&c, &b, &b_fingerprint);
    assert!(!unknown_client.status.success(), "{}", text(&unknown_client));
    assert!(text(&unknown_client).contains("TLS handshake"), "{}", text(&unknown_client));

    // a pins c's certificate but reaches b: the server is not who it should be.
    let wrong_server = probe(&a, &b, &c_fingerprint);
    assert!(!wrong_server.status.success(), "{}", text(&wrong_server));
    assert!(text(&wrong_server).contains("not the pinned"), "{}", text(&wrong_server));

    // A client with no certificate at all gets no byte of b's data.
    let address = b_url.trim_start_matches("https://").to_owned();
    let answer = no_certificate_get(&address, "/peer/v1/images");
    assert!(answer.is_err(), "a client without a certificate was answered: {answer:?}");

    // Heartbeats flow both ways over the pinned link.
    until("a and b to see each other's heartbeats", Duration::from_secs(10), || {
        (peer(&a, "b")["up"] == true && peer(&b, "a")["up"] == true).then_some(())
    });
    // `peer rm` takes effect on the next handshake.
    b.ok(&["peer", "rm", "a"]);
    let removed = probe(&a, &b, &b_fingerprint);
    assert!(!removed.status.success(), "a removed peer is refused: {}", text(&removed));
    let bad = b.cli(&["peer", "add", "x", "https://127.0.0.1:1", "--fingerprint", "12ab"]);
    assert_eq!(bad.status.code(), Some(2), "a short fingerprint is a usage error: {}", text(&bad));
}

/// GET over TLS with no client certificate (and no check of the server's): the raw attempt an
/// unauthenticated client would make.
fn no_certificate_get(address: &str, path: &str) -> Result<Vec<u8>, String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(common::ServerCheck::Any))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("peer.rack.mast").expect("a name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let socket = std::net::TcpStream::connect(address).map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(connection, socket);
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut answer).map_err(|e| e.to_string())?;
    if answer.is_empty() { Err("closed without an answer".into()) } else { Ok(answer) }
}

/// The bytes of `image`'s distinct chunks that none of `have` holds.
fn missing_bytes(image: &std::path::Path, have: &[&std::path::Path]) -> (u64, usize) {
    let chunks = |path: &std::path::Path| {
        let bytes = std::fs::read(path).expect("the image reads");
        artifact::read_unverified(&bytes).expect("an image").2.distinct_chunks()
    };
    let held: HashSet<[u8; 32]> = have.iter().flat_map(|p| chunks(p)).map(|c| c.hash).collect();
    let missing: Vec<_> = chunks(image).into_iter().filter(|c| !held.contains(&c.hash)).collect();
    (missing.iter().map(|c| u64::from(c.len)).sum(), missing.len())
}

#[test]
fn a_peer_fetches_only_the_chunks_it_lacks_and_refuses_untrusted_images() {
    // a also trusts a second key, which b does not: b must refuse what that key signed.
    let other_key = images::keys::SigningKey::from_seed([7; 32]);
    let other = other_key.public().to_string();
    let a = start("a", &["--launcher", "sim", "--memory-mib", "4096", "--trust", &other]);
    let b = start("b", SIM);
    mesh(&[&a, &b]);

    let httpd = image("httpd", Arch::X86_64);
    let hello = image("hello", Arch::X86_64);
    a.ok(&["image", "push", httpd.to_str().expect("utf-8")]);
    until("b to replicate httpd", Duration::from_secs(30), || has_all_images_of(&b, &a).then_some(()));
    let first = peer(&b, "a");
    let (httpd_bytes, httpd_chunks) = missing_bytes(&httpd, &[]);
    assert_eq!(first["bytes_fetched"], httpd_bytes, "b fetched every chunk of its first image once: {first}");
    assert_eq!(first["chunks_fetched"], httpd_chunks as u64, "{first}");

    // hello shares chunks with httpd (the runtime): b fetches only the others.
    a.ok(&["image", "push", hello.to_str().expect("utf-8")]);
    until("b to replicate hello", Duration::from_secs(30), || has_all_images_of(&b, &a).then_some(()));
    let second = peer(&b, "a");
    let (hello_bytes, hello_chunks) = missing_bytes(&hello, &[&httpd]);
    let (hello_total, _) = missing_bytes(&hello, &[]);
    assert!(hello_bytes < hello_total, "the test needs images that share chunks");
    assert_eq!(
        second["bytes_fetched"].as_u64().expect("a number") - httpd_bytes,
        hello_bytes,
        "b fetched only hello's chunks that httpd lacks: {second}"
    );
    let hello_distinct = missing_bytes(&hello, &[]).1;
    assert_eq!(second["chunks_reused"].as_u64(), Some((hello_distinct - hello_chunks) as u64), "{second}");
    println!(
        "replication: b fetched {httpd_bytes} bytes ({httpd_chunks} chunks) for httpd, then {hello_bytes} of hello's {hello_total} bytes ({hello_chunks} chunks)"
    );
    // b can deploy what it replicated (the simulated launcher starts it).
    b.ok(&["deploy", "hello"]);

    // An image signed by a key b does not trust: a stores it, b refuses it after its header
    // and fetches none of its chunks.
    let untrusted = resigned(&httpd, &other_key, "other-httpd");
    a.ok(&["image", "push", untrusted.path().to_str().expect("utf-8")]);
    let before = peer(&b, "a");
    until("b to refuse the untrusted image", Duration::from_secs(20), || {
        (peer(&b, "a")["refused_images"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    thread_sleep(Duration::from_secs(2));
    let after = peer(&b, "a");
    assert_eq!(image_ids(&b).len(), 2, "the untrusted image was not stored");
    assert_eq!(after["chunks_fetched"], before["chunks_fetched"], "no chunk of an untrusted image is fetched");
}

fn thread_sleep(duration: Duration) {
    std::thread::sleep(duration);
}

/// `image` with its manifest renamed, signed by `key`.
fn resigned(image: &std::path::Path, key: &images::keys::SigningKey, name: &str) -> tempfile::NamedTempFile {
    let trusted = images::keys::KeyConfig::for_workspace(&images::build::workspace_root()).trusted().expect("keys");
    let verified = artifact::verify(&std::fs::read(image).expect("reads"), &trusted).expect("verifies");
    let mut manifest = verified.manifest().clone();
    manifest.name = name.to_owned();
    let mut parts = vec![(artifact::KERNEL_PART, verified.kernel())];
    if let Some(data) = verified.data() {
        parts.push((artifact::DATA_PART, data));
    }
    let bytes = artifact::build(verified.arch(), &manifest, &parts, key);
    let mut file = tempfile::Builder::new().suffix(".mast").tempfile().expect("temp file");
    file.write_all(&bytes).expect("writes");
    file
}

#[test]
fn damaged_chunks_on_the_wire_are_detected_and_fetched_again() {
    let a = start("a", &["--launcher", "sim", "--test-corrupt-chunks", "3"]);
    let b = start("b", SIM);
    mesh(&[&a, &b]);
    a.ok(&["image", "push", image("httpd", Arch::X86_64).to_str().expect("utf-8")]);
    until("b to replicate httpd", Duration::from_secs(30), || has_all_images_of(&b, &a).then_some(()));
    let seen = peer(&b, "a");
    assert_eq!(seen["corrupt_chunks"], 3, "each damaged chunk was caught by its hash: {seen}");
    let inspect = b.ok(&["image", "inspect", "httpd", "-o", "json"]);
    let original =
        artifact::read_unverified(&std::fs::read(image("httpd", Arch::X86_64)).expect("reads")).expect("image").0;
    assert!(inspect.contains(&original.to_string()), "{inspect}");
    // The image assembled from the chunks for a launch is verified in full again: it runs.
    b.ok(&["deploy", "httpd"]);
    b.wait_for("httpd on b", Duration::from_secs(30), |all| {
        all.len() == 1 && all[0].state == rack_api::InstanceState::Running
    });
}

#[test]
fn a_peer_boots_an_image_it_knows_only_by_its_meta_after_fetching_the_chunks_it_needs() {
    // b's background trickle is capped at 1 byte/s: after its first burst (one chunk at most),
    // only the launch fetches chunks.
    let a = start("a", SIM);
    let b = start("b", &["--launcher", "sim", "--memory-mib", "4096", "--replicate-rate", "1"]);
    mesh(&[&a, &b]);
    let hello = image("hello", Arch::X86_64);
    let httpd = image("httpd", Arch::X86_64);
    a.ok(&["image", "push", hello.to_str().expect("utf-8")]);
    a.ok(&["image", "push", httpd.to_str().expect("utf-8")]);
    until("b to learn a's images", Duration::from_secs(30), || (image_ids(&b) == image_ids(&a)).then_some(()));
    let httpd_id = artifact::read_unverified(&std::fs::read(&httpd).expect("reads")).expect("an image").0.to_string();
    let status: serde_json::Value = serde_json::from_str(&b.api_get("/v1/replication")).expect("JSON");
    let state = status["images"].as_array().and_then(|all| all.iter().find(|i| i["id"] == httpd_id.as_str()).cloned());
    let state = state.expect("b's image store knows httpd");
    let (local, total) = (state["local_bytes"].as_u64().expect("bytes"), state["total_bytes"].as_u64().expect("bytes"));
    assert!(local < total, "b holds only part of httpd before it launches it: {state}");
    let before = peer(&b, "a")["bytes_fetched"].as_u64().expect("a count");

    b.ok(&["deploy", "httpd"]);
    b.wait_for("httpd on b", Duration::from_secs(30), |all| {
        all.len() == 1 && all[0].state == rack_api::InstanceState::Running
    });
    assert!(complete_image_ids(&b).contains(&httpd_id), "the launch fetched every chunk httpd lacked");
    // Exactly the chunk bytes httpd lacked were fetched since, each once: nothing of hello, nothing twice.
    let seen = peer(&b, "a");
    let fetched = seen["bytes_fetched"].as_u64().expect("a count");
    assert_eq!(seen["corrupt_chunks"], 0, "{seen}");
    assert_eq!(fetched - before, total - local, "b fetched only what httpd lacked: {seen}");
    println!(
        "lazy replication: b held {local} of httpd's {total} chunk bytes when it launched it; the launch fetched {} \
         bytes (b fetched {fetched} bytes from a in all, hello's trickle included)",
        fetched - before
    );
}

#[test]
fn a_partition_heals_and_the_racks_converge() {
    let a = start("a", SIM);
    let b = start("b", SIM);
    mesh(&[&a, &b]);
    until("a and b to see each other", Duration::from_secs(10), || {
        (peer(&a, "b")["up"] == true && peer(&b, "a")["up"] == true).then_some(())
    });
    // Cut a off: its peer listener drops every connection and it sends nothing.
    let cut = a.data_dir().join("peer/partitioned");
    std::fs::write(&cut, b"").expect("the hook file");
    a.ok(&["image", "push", image("httpd", Arch::X86_64).to_str().expect("utf-8")]);
    a.ok(&["image", "push", image("hello", Arch::Aarch64).to_str().expect("utf-8")]);
    until("b to see a down", Duration::from_secs(10), || (peer(&b, "a")["up"] == false).then_some(()));
    assert!(image_ids(&b).is_empty(), "nothing crossed the partition");
    assert_eq!(peer(&a, "b")["reachable"], false);
    std::fs::remove_file(&cut).expect("heals");
    until("the racks to converge", Duration::from_secs(30), || (image_ids(&b) == image_ids(&a)).then_some(()));
    until("a and b to see each other again", Duration::from_secs(10), || {
        (peer(&a, "b")["up"] == true && peer(&b, "a")["up"] == true).then_some(())
    });
    assert_eq!(image_ids(&b).len(), 2);
}

#[test]
fn after_a_partition_the_rack_that_was_cut_off_stops_its_copy_of_a_taken_over_deployment() {
    let a = start("a", SIM);
    let b = start("b", SIM);
    mesh(&[&a, &b]);
    a.ok(&["image", "push", image("hello", Arch::X86_64).to_str().expect("utf-8")]);
    a.ok(&["deploy", "hello", "--failover-to", "b"]);
    until("b to hold the image and the plan", Duration::from_secs(30), || {
        let plan: serde_json::Value = serde_json::from_str(&b.ok(&["failover", "plan", "-o", "json"])).ok()?;
        let incoming = plan["incoming"].as_array()?.first()?.clone();
        (incoming["image_complete"] == true && incoming["would_take_over"] == true).then_some(())
    });
    // Cut a off: to b it looks down, so b takes the deployment over while a still runs it.
    let cut = a.data_dir().join("peer/partitioned");
    std::fs::write(&cut, b"").expect("the hook file");
    until("b to take over", Duration::from_secs(20), || (b.ps().len() == 1).then_some(()));
    assert_eq!(a.ps()[0].state, rack_api::InstanceState::Running, "a cannot know yet");
    // The partition heals: a's next heartbeat is answered with the takeover, and a stops.
    std::fs::remove_file(&cut).expect("heals");
    let stopped = a.wait_for("a to stop its copy", Duration::from_secs(20), |all| {
        all.len() == 1 && all[0].state == rack_api::InstanceState::Stopped
    });
    assert!(
        stopped[0].message.as_deref().is_some_and(|m| m.contains("rack b took this deployment over")),
        "{stopped:?}"
    );
    assert_eq!(b.ps()[0].state, rack_api::InstanceState::Running, "b keeps serving");
}
