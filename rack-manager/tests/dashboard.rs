//! The dashboard in a real browser: headless Chromium driven through chromedriver (Debian's
//! `chromium` and `chromium-driver`, which `cargo xtask test` installs) with the `fantoccini`
//! WebDriver client, against the real daemon: a live QEMU `httpd` on the manager's own host and
//! a simulated agent for numbers. Checked: sign-in, the overview against `ps -o json`, paging
//! and filtering, a deploy and a stop from the page, a console line appearing live (and the
//! console of the stopped instance), no request to any other origin, and a read-only session
//! without action buttons whose forged POSTs are refused. Screenshots of the main pages go to
//! `<target>/tmp/dashboard/` (printed at the end).

mod common;

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Rack, image};
use fantoccini::{Client, ClientBuilder, Locator};
use images::Arch;
use rack_api::{Instance, InstanceState};
use serde_json::{Value, json};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

fn start_chromedriver() -> (Driver, u16) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "chromedriver does not start ({e}): `cargo xtask test` installs it (as root on Debian), or \
                 `sudo apt-get install -y chromium chromium-driver`"
            )
        });
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Driver(child), port)
}

async fn browser(driver_port: u16, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", format!("--user-data-dir={}", profile.display()),
                // Nothing but loopback resolves: a request elsewhere would fail, and is also checked.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a Chromium session")
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the element `css` finds, read in one script (no element handle to go stale
/// while the page redraws or navigates); empty while there is none.
async fn text(client: &Client, css: &str) -> String {
    let value = client
        .execute("const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", vec![json!(css)])
        .await
        .unwrap_or(Value::Null);
    value.as_str().unwrap_or_default().trim().to_owned()
}

async fn count(client: &Client, css: &str) -> usize {
    client.find_all(Locator::Css(css)).await.map(|v| v.len()).unwrap_or(0)
}

async fn screenshot(client: &Client, dir: &std::path::Path, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(name), png).expect("screenshot written");
}

async fn sign_in(client: &Client, origin: &str, token: &str) {
    client.goto(&format!("{origin}/")).await.expect("the sign-in page loads");
    let field = client.find(Locator::Id("token")).await.expect("a token field");
    field.send_keys(token).await.expect("typed");
    client.find(Locator::Css("#login button")).await.expect("a button").click().await.expect("submitted");
    wait_until("the page's first refresh", Duration::from_secs(20), || async {
        count(client, "body[data-loaded=yes]").await == 1
    })
    .await;
}

async fn set_field(client: &Client, id: &str, value: &str) {
    let field = client.find(Locator::Id(id)).await.expect("the field");
    field.clear().await.expect("cleared");
    field.send_keys(value).await.expect("typed");
}

/// Clicks the element `css` finds, scrolled to the middle of the window first (clear of the
/// sticky header), in one script: the tables are redrawn every few seconds, so a handle found
/// before a redraw would be gone by the click.
async fn click(client: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clicked = client
            .execute(
                "const e = document.querySelector(arguments[0]);
                 if (!e) return false;
                 e.scrollIntoView({block: 'center'});
                 e.click();
                 return true;",
                vec![json!(css)],
            )
            .await
            .ok()
            .and_then(|v| v.as_bool());
        if clicked == Some(true) {
            return;
        }
        assert!(Instant::now() < deadline, "nothing to click at {css}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn confirm(client: &Client) {
    let yes = client.find(Locator::Id("confirm-yes")).await.expect("the confirmation dialog");
    yes.click().await.expect("confirmed");
}

fn count_state(all: &[Instance], state: InstanceState) -> usize {
    all.iter().filter(|i| i.state == state).count()
}

#[test]
fn the_dashboard_in_a_real_browser() {
    // The manager's own host runs QEMU with room for one 16 MiB VM: httpd, the live console.
    let mut rack = Rack::start(&["--memory-mib", "16"]);
    for app in ["httpd", "hello"] {
        rack.ok(&["image", "push", image(app, Arch::Aarch64).to_str().expect("utf-8 path")]);
    }
    rack.ok(&["deploy", "httpd"]);
    let httpd = rack.wait_for("httpd running", Duration::from_secs(60), |all| {
        all.len() == 1 && all[0].state == InstanceState::Running
    })[0]
        .id
        .clone();
    // A simulated host takes everything else: numbers enough to page through.
    rack.add_agent("sim-a", &["--launcher", "sim", "--memory-mib", "4096"]);
    rack.wait_for_hosts(2);
    rack.ok(&["deploy", "hello", "--replicas", "60", "--restart", "always"]);
    rack.wait_for("61 running", Duration::from_secs(30), |all| {
        all.len() == 61 && count_state(all, InstanceState::Running) == 61
    });
    let operator = rack.ok(&["token", "create", "--deploy", "--name", "ops"]).trim().to_owned();
    let reader = rack.ok(&["token", "create", "--read-only", "--name", "wall"]).trim().to_owned();
    let origin = rack.url();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).expect("the screenshot directory");
    let profile = tempfile::tempdir().expect("a browser profile dir");

    let (_driver, driver_port) = start_chromedriver();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    runtime.block_on(async {
        let client = browser(driver_port, profile.path()).await;
        client.goto(&format!("{origin}/")).await.expect("loads");
        screenshot(&client, &shots, "sign-in.png").await;
        // A wrong token is refused on the page.
        set_field(&client, "token", "mast-00000000-wrong").await;
        client.find(Locator::Css("#login button")).await.expect("button").click().await.expect("submitted");
        wait_until("the refusal", Duration::from_secs(10), || async {
            text(&client, "#login-error").await.contains("unknown")
        })
        .await;

        // Sign-in with the deploy token; the overview matches `ps -o json`.
        sign_in(&client, &origin, &operator).await;
        let paint: Value = client
            .execute("return performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)", vec![])
            .await
            .expect("paint timing");
        let ps = rack.ps();
        assert_eq!(text(&client, "#ov-instances").await, ps.len().to_string());
        assert_eq!(text(&client, "#ov-running").await, count_state(&ps, InstanceState::Running).to_string());
        assert_eq!(text(&client, "#ov-hosts").await, "2");
        assert_eq!(text(&client, "#inst-page").await, "1–50 of 61", "paged");
        assert_eq!(count(&client, "#instance-rows tr").await, 50);
        screenshot(&client, &shots, "overview.png").await;
        set_field(&client, "f-host", "local").await;
        assert_eq!(count(&client, "#instance-rows tr").await, 1, "filtered by host");
        set_field(&client, "f-host", "").await;

        // Deploy from the page: three more hello replicas, confirmed, and they run.
        client.find(Locator::Id("d-image")).await.expect("image list").select_by_value("hello").await.expect("hello");
        set_field(&client, "d-replicas", "3").await;
        client.find(Locator::Css("#deploy-form button")).await.expect("deploy").click().await.expect("clicked");
        assert!(text(&client, "#confirm-text").await.contains("Deploy 3 replica(s) of hello"));
        confirm(&client).await;
        rack.wait_for("64 running", Duration::from_secs(30), |all| {
            all.len() == 64 && count_state(all, InstanceState::Running) == 64
        });

        // The live console: httpd's log, then a restart from the CLI adds lines while it is open.
        set_field(&client, "f-text", &httpd).await;
        click(&client, &format!("a[data-console='{httpd}']")).await;
        wait_until("httpd's console", Duration::from_secs(20), || async {
            !text(&client, "#console-log").await.trim().is_empty()
        })
        .await;
        let before = text(&client, "#console-log").await.len();
        rack.ok(&["restart", &httpd]);
        wait_until("a new console line, live", Duration::from_secs(60), || async {
            text(&client, "#console-log").await.len() > before
        })
        .await;
        assert_eq!(text(&client, "#console-state").await, "live");
        screenshot(&client, &shots, "console.png").await;

        // Stop from the page; its console still reads, ended.
        click(&client, &format!("button[data-act=stop][data-id='{httpd}']")).await;
        assert!(text(&client, "#confirm-text").await.contains(&format!("Stop instance {httpd}")));
        confirm(&client).await;
        rack.wait_for("httpd stopped", Duration::from_secs(30), |all| {
            all.iter().any(|i| i.id == httpd && i.state == InstanceState::Stopped)
        });
        click(&client, &format!("a[data-console='{httpd}']")).await;
        wait_until("the stopped instance's console", Duration::from_secs(20), || async {
            text(&client, "#console-state").await == "ended" && !text(&client, "#console-log").await.is_empty()
        })
        .await;

        // Nothing was fetched from anywhere but the manager.
        let fetched: Value = client
            .execute("return [location.origin, performance.getEntriesByType('resource').map(e => e.name)]", vec![])
            .await
            .expect("resource timing");
        let own = fetched[0].as_str().expect("origin").to_owned();
        let names = fetched[1].as_array().expect("a list");
        assert!(!names.is_empty(), "the page fetched its script and data");
        for name in names {
            let name = name.as_str().unwrap_or_default();
            assert!(name.starts_with(&own) || name.starts_with("data:"), "a request to another origin: {name}");
        }

        // A phone-sized window.
        client.set_window_size(390, 844).await.expect("resized");
        screenshot(&client, &shots, "phone.png").await;
        client.set_window_size(1280, 900).await.expect("resized");

        // Signed out, then in as read-only: no action buttons, and forged changes are refused.
        client.find(Locator::Id("logout")).await.expect("sign out").click().await.expect("clicked");
        wait_until("the sign-in page", Duration::from_secs(10), || async { count(&client, "#login").await == 1 }).await;
        sign_in(&client, &origin, &reader).await;
        assert_eq!(count(&client, "button[data-act]").await, 0, "read-only: no action buttons");
        assert_eq!(count(&client, "#deploy").await, 0, "read-only: no deploy form");
        screenshot(&client, &shots, "read-only.png").await;
        let victim = rack.ps().into_iter().find(|i| i.state == InstanceState::Running).expect("a running one").id;
        let forged: Value = client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 const csrf = document.querySelector('meta[name=mast-csrf]').content;
                 const path = '/v1/instances/' + arguments[0] + '/stop';
                 Promise.all([
                   fetch(path, {method: 'POST', headers: {'X-Mast-Csrf': csrf}}).then(r => r.status),
                   fetch(path, {method: 'POST'}).then(r => r.status),
                   fetch('/v1/deployments', {method: 'POST', headers: {'X-Mast-Csrf': csrf, 'Content-Type': 'application/json'},
                     body: JSON.stringify({image: 'hello', replicas: 1})}).then(r => r.status),
                 ]).then(done);",
                vec![json!(victim)],
            )
            .await
            .expect("forged requests ran");
        assert_eq!(forged, json!([403, 403, 403]), "a read-only session's changes are refused");
        let after = rack.ps();
        assert!(after.iter().any(|i| i.id == victim && i.state == InstanceState::Running), "nothing was stopped");
        assert_eq!(after.len(), 64, "nothing was deployed");
        client.close().await.expect("closed");
        eprintln!("first contentful paint (ms): {paint}; screenshots in {}", shots.display());
    });
}
