//! `kvlog` on both architectures with a real virtio-blk volume (a file on the host), checked over
//! real HTTP: appends read back by sequence number and by key, everything acknowledged (also by
//! concurrent clients) survives `kill -9` of the VM and a reboot on the same file, a volume cut or damaged mid-record (a torn
//! snapshot) recovers its valid prefix and keeps serving, a full volume answers 507, and
//! malformed requests get 4xx without harming the appliance. The volume file is also read back on
//! the host with the appliance's own log library, so the guest and the format agree.
//! x86_64 needs KVM; without it those tests say why they skip.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    net::TcpStream,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::Duration,
};

use images::Arch;
use kvlog::{Disk, DiskError, SECTOR_SIZE, Store};
use qemu::{Exit, Instance, free_local_port, kvm};

const GUEST_PORT: u16 = 8080;
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A running kvlog, the host port that reaches it and its volume file.
struct Kvlog {
    instance: Instance,
    port: u16,
}

/// Creates a sparse volume of `mib` MiB in `dir`.
fn volume(dir: &Path, mib: u64) -> PathBuf {
    let path = dir.join("volume.img");
    File::create(&path).and_then(|file| file.set_len(mib << 20)).expect("creating the volume file");
    path
}

impl Kvlog {
    /// Boots kvlog on `volume`; `None` (with the reason printed) when `arch` cannot run here.
    fn boot(arch: Arch, test: &str, volume: &Path) -> Option<Kvlog> {
        Kvlog::boot_with_args(arch, test, volume, &[])
    }

    /// Boots kvlog on `volume` with the appliance arguments `args`.
    fn boot_with_args(arch: Arch, test: &str, volume: &Path, args: &[&str]) -> Option<Kvlog> {
        if arch == Arch::X86_64 && !kvm::available_for(test) {
            return None;
        }
        let machine = qemu::appliance_machine("kvlog", arch).unwrap_or_else(|e| panic!("building kvlog: {e}"));
        let machine = machine.volume(volume);
        let machine = if args.is_empty() { machine } else { machine.args(args) };
        // Another process may take the free port before QEMU binds it; QEMU then exits at once.
        for _ in 0..3 {
            let port = free_local_port().expect("a free port on 127.0.0.1");
            let mut instance = machine.clone().forward_tcp(port, GUEST_PORT).spawn().expect("starting QEMU");
            match instance.wait_for("kvlog: listening on", BOOT_TIMEOUT) {
                Ok(_) => return Some(Kvlog { instance, port }),
                Err(qemu::WaitError::Exited { .. })
                    if !instance.console().iter().any(|line| line.text.contains("kvlog: volume")) =>
                {
                    continue;
                }
                Err(e) => panic!("{test}: {e}; console: {:?}", instance.console()),
            }
        }
        panic!("{test}: QEMU could not forward a free port three times");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn append(&self, key: &str, value: &[u8]) -> (u16, String) {
        let response = agent().post(&self.url(&format!("/append?key={key}"))).send(value).expect("POST /append");
        let status = response.status().as_u16();
        (status, response.into_body().read_to_string().expect("a text body"))
    }

    /// GET `path`: status, `X-Kvlog-Seq`, `X-Kvlog-Key` and body.
    fn get(&self, path: &str) -> (u16, Option<String>, Option<String>, Vec<u8>) {
        let response = agent().get(&self.url(path)).call().expect("GET");
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (seq, key) = (header("x-kvlog-seq"), header("x-kvlog-key"));
        let body = response.into_body().read_to_vec().expect("a body");
        (status, seq, key, body)
    }

    fn stats(&self) -> String {
        let (status, _, _, body) = self.get("/stats");
        assert_eq!(status, 200);
        String::from_utf8(body).expect("UTF-8 stats")
    }

    fn console(&self) -> String {
        self.instance.console().iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n")
    }

    fn assert_alive(&self) {
        let console = self.console();
        assert!(
            !["panicked", "CPU exception", "exit status"].iter().any(|bad| console.contains(bad)),
            "kvlog failed:\n{console}"
        );
    }

    /// `kill -9` of the VM: no shutdown, no last flush.
    fn kill(mut self) {
        self.instance.kill();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(IO_TIMEOUT)).build().into()
}

/// The value of record `seq` in these tests: sizes from 0 bytes to several sectors.
fn value(seq: u64) -> Vec<u8> {
    let len = match seq % 4 {
        0 => 0,
        1 => 10,
        2 => 511,
        _ => 1500 + seq as usize * 7,
    };
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seq as u8).collect()
}

fn key(seq: u64) -> String {
    format!("key-{}", seq % 3)
}

/// Appends records `from..to` and checks their numbers.
fn append_range(kvlog: &Kvlog, from: u64, to: u64) {
    for seq in from..to {
        assert_eq!(kvlog.append(&key(seq), &value(seq)), (201, format!("{{\"seq\":{seq}}}\n")), "append {seq}");
    }
}

/// Checks that records `0..count` are served, by number and by key, and that the log holds
/// `total` records (the ones after `count` are not this pattern's).
fn check_records(kvlog: &Kvlog, count: u64, total: u64) {
    for seq in 0..count {
        let (status, got_seq, got_key, body) = kvlog.get(&format!("/log/{seq}"));
        assert_eq!((status, got_seq, got_key.as_deref()), (200, Some(seq.to_string()), Some(key(seq).as_str())));
        assert_eq!(body, value(seq), "record {seq}");
    }
    assert_eq!(kvlog.get(&format!("/log/{total}")).0, 404);
    for k in 0..3.min(count) {
        let latest = (0..count).filter(|seq| seq % 3 == k).max().expect("a record for the key");
        let (status, seq, _, body) = kvlog.get(&format!("/latest/{}", key(k)));
        assert_eq!((status, seq, body), (200, Some(latest.to_string()), value(latest)), "latest of {}", key(k));
    }
    assert!(kvlog.stats().contains(&format!("\"records\":{total},")), "{}", kvlog.stats());
}

/// The volume file as the log library's disk, read-only, remembering which sectors were read.
struct HostDisk {
    file: File,
    reads: Vec<u64>,
}

impl Disk for HostDisk {
    fn capacity_sectors(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.len() / SECTOR_SIZE as u64)
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.reads.push(sector);
        self.file.read_exact_at(buf, sector * SECTOR_SIZE as u64).map_err(|_| DiskError)
    }
    fn write(&mut self, _: u64, _: &[u8]) -> Result<(), DiskError> {
        Err(DiskError)
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        Ok(())
    }
}

/// Opens the volume file on the host with the appliance's library: how many records it recovers,
/// and the byte offset of record `seq`'s header, if it has one.
fn host_view(volume: &Path, seq: u64) -> (u64, Option<u64>) {
    let file = File::open(volume).expect("the volume file");
    let mut store = Store::open(HostDisk { file, reads: Vec::new() }, 0).expect("the volume holds a log");
    let records = store.stats().records;
    let before = store.disk().reads.len();
    let found = store.read(seq).expect("a readable record").is_some();
    let offset = found.then(|| store.disk().reads[before] * SECTOR_SIZE as u64);
    (records, offset)
}

fn scratch(test: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(test).tempdir().expect("a temporary directory")
}

fn appends_survive_kill_and_reboot(arch: Arch, test: &str) {
    let dir = scratch(test);
    let volume = volume(dir.path(), 16);
    let Some(kvlog) = Kvlog::boot(arch, test, &volume) else { return };
    assert!(kvlog.console().contains("recovered 0 records"), "{}", kvlog.console());
    append_range(&kvlog, 0, 40);
    // The largest value, 64 KiB, and the record after it.
    let big: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(kvlog.append("big", &big), (201, "{\"seq\":40}\n".to_owned()));
    check_records(&kvlog, 40, 41);
    assert_eq!(kvlog.get("/latest/big").3, big);
    kvlog.assert_alive();
    // Every append was acknowledged after its flush: the file holds them now, before any
    // shutdown, and the host reads them back with the same library.
    assert_eq!(host_view(&volume, 0).0, 41);
    kvlog.kill();

    let kvlog = Kvlog::boot(arch, test, &volume).expect("it booted before");
    assert!(kvlog.console().contains("recovered 41 records"), "{}", kvlog.console());
    check_records(&kvlog, 40, 41);
    assert_eq!(kvlog.get("/log/40").3, big);
    append_range_after(&kvlog, 41);

    // Concurrent clients: every append gets its own number, and all of them are durable.
    let port = kvlog.port;
    let workers: Vec<_> = (0..4)
        .map(|client| {
            std::thread::spawn(move || {
                (0..8)
                    .map(|i| {
                        let url = format!("http://127.0.0.1:{port}/append?key=c{client}");
                        let response = agent().post(&url).send(format!("c{client}-{i}")).expect("POST /append");
                        assert_eq!(response.status().as_u16(), 201);
                        let body = response.into_body().read_to_string().expect("a body");
                        let seq: u64 = body
                            .trim()
                            .strip_prefix("{\"seq\":")
                            .and_then(|rest| rest.strip_suffix('}'))
                            .and_then(|n| n.parse().ok())
                            .unwrap_or_else(|| panic!("not a seq: {body:?}"));
                        (seq, format!("c{client}-{i}"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut appended: Vec<(u64, String)> =
        workers.into_iter().flat_map(|worker| worker.join().expect("a client thread")).collect();
    appended.sort();
    assert_eq!(appended.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), (42..74).collect::<Vec<_>>());
    kvlog.assert_alive();
    kvlog.kill();

    let kvlog = Kvlog::boot(arch, test, &volume).expect("it booted before");
    assert!(kvlog.console().contains("recovered 74 records"), "{}", kvlog.console());
    for (seq, value) in &appended {
        let (status, _, key, body) = kvlog.get(&format!("/log/{seq}"));
        assert_eq!((status, body), (200, value.clone().into_bytes()), "record {seq}");
        assert_eq!(key.as_deref(), value.split('-').next());
    }
    for client in 0..4 {
        assert_eq!(kvlog.get(&format!("/latest/c{client}")).3, format!("c{client}-7").into_bytes());
    }
}

/// One more append after a reboot continues the numbering.
fn append_range_after(kvlog: &Kvlog, next: u64) {
    assert_eq!(kvlog.append("after", b"reboot"), (201, format!("{{\"seq\":{next}}}\n")));
    assert_eq!(kvlog.get("/latest/after").3, b"reboot");
}

#[test]
fn kvlog_aarch64_appends_survive_kill_and_reboot() {
    appends_survive_kill_and_reboot(Arch::Aarch64, "kvlog_aarch64_appends_survive_kill_and_reboot");
}

#[test]
fn kvlog_x86_64_appends_survive_kill_and_reboot() {
    appends_survive_kill_and_reboot(Arch::X86_64, "kvlog_x86_64_appends_survive_kill_and_reboot");
}

/// Damages a copy of a 20-record volume in the ways a torn snapshot or a crash can, and boots each.
fn torn_volumes_recover_their_valid_prefix(arch: Arch, test: &str) {
    let dir = scratch(test);
    let original = volume(dir.path(), 4);
    let Some(kvlog) = Kvlog::boot(arch, test, &original) else { return };
    append_range(&kvlog, 0, 20);
    kvlog.kill();
    let len = fs::metadata(&original).expect("the volume").len();
    let (records, Some(offset_12)) = host_view(&original, 12) else { panic!("record 12 is on the volume") };
    assert_eq!(records, 20);
    let (_, Some(offset_15)) = host_view(&original, 15) else { panic!("record 15 is on the volume") };

    // (how the copy is damaged, records expected back)
    type Damage = Box<dyn Fn(&File)>;
    let cases: Vec<(&str, Damage, u64)> = vec![
        // A snapshot that stopped in the middle of record 12's header, the rest never copied.
        ("cut inside a header", Box::new(move |f: &File| cut(f, offset_12 + 20, len)), 12),
        // ... in the middle of record 15's value (record 15 is 1500+ bytes: several sectors).
        ("cut inside a value", Box::new(move |f: &File| cut(f, offset_15 + 700, len)), 15),
        // A file shorter than the volume was (a partial copy).
        ("truncated file", Box::new(move |f: &File| f.set_len(offset_15 + 1024).expect("truncate")), 15),
    ];
    for (what, damage, expected) in cases {
        let copy = dir.path().join("copy.img");
        fs::copy(&original, &copy).expect("copying the volume");
        damage(&OpenOptions::new().read(true).write(true).open(&copy).expect("opening the copy"));
        let kvlog = Kvlog::boot(arch, test, &copy).expect("it booted before");
        assert!(kvlog.console().contains(&format!("recovered {expected} records")), "{what}: {}", kvlog.console());
        check_records(&kvlog, expected, expected);
        // The log goes on where the valid prefix ends, and that append is durable too.
        assert_eq!(kvlog.append("after", b"x"), (201, format!("{{\"seq\":{expected}}}\n")), "{what}");
        kvlog.kill();
        assert_eq!(host_view(&copy, 0).0, expected + 1, "{what}: after one more append");
    }
    damage_in_the_middle_loses_no_valid_record(arch, test, &original, offset_12, offset_15);
}

/// Damage inside the log never costs the valid records behind it: a flipped byte in record 15's
/// value is bounded by its header and successor, so only record 15 is lost; a flipped byte in
/// record 12's sequence number cannot be bounded, so appends wait for the operator, who restarts
/// kvlog with `recover=resync`.
fn damage_in_the_middle_loses_no_valid_record(arch: Arch, test: &str, original: &Path, offset_12: u64, offset_15: u64) {
    let copy = original.with_file_name("middle.img");
    fs::copy(original, &copy).expect("copying the volume");
    flip(&OpenOptions::new().read(true).write(true).open(&copy).expect("opening the copy"), offset_15 + 600);
    let kvlog = Kvlog::boot(arch, test, &copy).expect("it booted before");
    let console = kvlog.console();
    assert!(console.contains("recovered 20 records") && console.contains("record 15 did not read back"), "{console}");
    assert_eq!(kvlog.get("/log/15").0, 500, "a lost record says so");
    for seq in [14, 16, 19] {
        assert_eq!(kvlog.get(&format!("/log/{seq}")).3, value(seq), "record {seq} behind the damage");
    }
    assert_eq!(kvlog.append("after", b"x"), (201, "{\"seq\":20}\n".to_owned()));
    kvlog.kill();

    fs::copy(original, &copy).expect("copying the volume");
    flip(&OpenOptions::new().read(true).write(true).open(&copy).expect("opening the copy"), offset_12 + 5);
    let kvlog = Kvlog::boot(arch, test, &copy).expect("it booted before");
    let console = kvlog.console();
    assert!(console.contains("valid records resume at 13") && console.contains("recover=resync"), "{console}");
    assert_eq!(kvlog.get("/log/11").3, value(11));
    assert_eq!(kvlog.append("after", b"x").0, 507, "appends would bury records 13 to 19");
    kvlog.kill();
    assert_eq!(host_view(&copy, 0).0, 12, "nothing was written over the damage");

    let kvlog = Kvlog::boot_with_args(arch, test, &copy, &["recover=resync"]).expect("it booted before");
    assert!(kvlog.console().contains("record 12 did not read back and was skipped"), "{}", kvlog.console());
    assert_eq!(kvlog.get("/log/13").3, value(13));
    assert_eq!(kvlog.append("after", b"x"), (201, "{\"seq\":20}\n".to_owned()));
    kvlog.kill();
}

/// Zeroes the file from `at` to `len`, as a copy that never got those bytes.
fn cut(file: &File, at: u64, len: u64) {
    file.set_len(at).and_then(|()| file.set_len(len)).expect("cutting the copy");
}

fn flip(file: &File, at: u64) {
    let mut byte = [0];
    file.read_exact_at(&mut byte, at).expect("reading a byte");
    file.write_all_at(&[byte[0] ^ 0x5a], at).expect("writing a byte");
}

#[test]
fn kvlog_aarch64_torn_volumes_recover_their_valid_prefix() {
    torn_volumes_recover_their_valid_prefix(Arch::Aarch64, "kvlog_aarch64_torn_volumes_recover_their_valid_prefix");
}

#[test]
fn kvlog_x86_64_torn_volumes_recover_their_valid_prefix() {
    torn_volumes_recover_their_valid_prefix(Arch::X86_64, "kvlog_x86_64_torn_volumes_recover_their_valid_prefix");
}

/// Sends raw bytes on a new connection and returns the status of the first response.
fn raw_status(kvlog: &Kvlog, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", kvlog.port)).expect("connecting");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    stream.write_all(request).expect("sending");
    let mut response = Vec::new();
    let mut buf = [0; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&response);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?} for {:?}", String::from_utf8_lossy(request)))
}

/// A client that sends `Expect: 100-continue` (curl does, for large values) gets `100 Continue`
/// before it sends the value, then the `201`.
fn expect_continue_is_answered(kvlog: &Kvlog) {
    let mut stream = TcpStream::connect(("127.0.0.1", kvlog.port)).expect("connecting");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    stream
        .write_all(b"POST /append?key=big HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .expect("sending the head");
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut got = vec![0; interim.len()];
    stream.read_exact(&mut got).expect("the interim response");
    assert_eq!(got, interim);
    stream.write_all(b"12345").expect("sending the value");
    let mut response = [0; 12];
    stream.read_exact(&mut response).expect("the final response");
    assert_eq!(&response, b"HTTP/1.1 201");
}

fn bad_input_gets_4xx_and_a_full_volume_507(arch: Arch, test: &str) {
    let dir = scratch(test);
    // 16 KiB: 24 sectors of records after the superblock and the reserved sectors.
    let path = dir.path().join("small.img");
    File::create(&path).and_then(|f| f.set_len(16 * 1024)).expect("a small volume");
    let Some(kvlog) = Kvlog::boot(arch, test, &path) else { return };
    let too_big = vec![b'x'; 64 * 1024 + 1];
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"POST /append HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx".to_vec(), 400),
        (b"POST /append?key=a%20b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx".to_vec(), 400),
        (b"POST /append?key= HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx".to_vec(), 400),
        ([&b"POST /append?key=k HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n"[..], &too_big].concat(), 413),
        (
            b"POST /append?key=k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n".to_vec(),
            501,
        ),
        (b"POST /append?key=k HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n".to_vec(), 400),
        (b"GET /append?key=k HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 405),
        (b"DELETE /log/0 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 405),
        (b"GET /log/-1 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        (b"GET /log/99999999999999999999999 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        (b"GET /log/18446744073709551615 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 404),
        (b"GET /latest/no%2Fsuch HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        (b"GET /latest/missing HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 404),
        (b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 404),
        (b"\x00\x01garbage\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\nHost: x\n\n".to_vec(), 400),
    ];
    for (request, expected) in &cases {
        assert_eq!(
            raw_status(&kvlog, request),
            *expected,
            "{:?}",
            String::from_utf8_lossy(&request[..request.len().min(80)])
        );
    }
    assert!(kvlog.stats().contains("\"records\":0,"), "nothing was stored by bad requests");
    expect_continue_is_answered(&kvlog);
    assert_eq!(kvlog.get("/latest/big").3, b"12345");
    // Fill the volume: one-sector records until 507 (record 0 is the one above).
    let mut stored = 1;
    loop {
        let (status, body) = kvlog.append("fill", b"v");
        if status == 507 {
            break;
        }
        assert_eq!((status, body), (201, format!("{{\"seq\":{stored}}}\n")));
        stored += 1;
        assert!(stored <= 24, "a 16 KiB volume holds 24 one-sector records");
    }
    assert_eq!(stored, 24);
    // A full volume still serves what it has.
    assert_eq!(kvlog.get("/latest/fill").1, Some("23".to_owned()));
    assert_eq!(kvlog.get("/healthz").3, b"ok\n");
    kvlog.assert_alive();
}

#[test]
fn kvlog_aarch64_bad_input_gets_4xx_and_a_full_volume_507() {
    bad_input_gets_4xx_and_a_full_volume_507(Arch::Aarch64, "kvlog_aarch64_bad_input_gets_4xx_and_a_full_volume_507");
}

#[test]
fn kvlog_x86_64_bad_input_gets_4xx_and_a_full_volume_507() {
    bad_input_gets_4xx_and_a_full_volume_507(Arch::X86_64, "kvlog_x86_64_bad_input_gets_4xx_and_a_full_volume_507");
}

/// A disk that holds something else is never formatted over: kvlog exits with status 5.
#[test]
fn kvlog_refuses_a_foreign_volume_and_leaves_it_alone() {
    let dir = scratch("kvlog_foreign");
    let path = dir.path().join("foreign.img");
    let mut contents = vec![0u8; 1 << 20];
    contents[..8].copy_from_slice(b"NOTKVLOG");
    fs::write(&path, &contents).expect("a foreign volume");
    let machine = qemu::appliance_machine("kvlog", Arch::Aarch64).unwrap_or_else(|e| panic!("building kvlog: {e}"));
    let result = machine.user_network().volume(&path).run(BOOT_TIMEOUT).expect("starting QEMU");
    assert_eq!(result.exit, Exit::Status(5), "{}", result.console_text());
    assert!(result.console_text().contains("refusing to format over it"), "{}", result.console_text());
    assert_eq!(fs::read(&path).expect("the volume"), contents, "the foreign volume is untouched");
}

/// Without a disk kvlog says so and exits with status 4.
#[test]
fn kvlog_without_a_volume_exits_4() {
    let machine = qemu::appliance_machine("kvlog", Arch::Aarch64).unwrap_or_else(|e| panic!("building kvlog: {e}"));
    let result = machine.user_network().run(BOOT_TIMEOUT).expect("starting QEMU");
    assert_eq!(result.exit, Exit::Status(4), "{}", result.console_text());
    assert!(result.console_text().contains("virtio-blk"), "{}", result.console_text());
}
