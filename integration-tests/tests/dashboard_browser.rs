//! The admin dashboard in a real headless Chromium, driven over the W3C WebDriver HTTP API
//! (Debian packages `chromium` and `chromium-driver`; nothing is downloaded): with
//! `admin.token` set, `/` without it is a login form and `/?token=` opens the page (which
//! then drops the token from the address bar); the page lists the upstreams' endpoints with
//! their source, health and staleness, the registries and the routes with a live request
//! rate; an instance removed from its registry (a file registry) disappears from the page
//! without a reload; the history charts (requests/s, p99 and 5xx ratio per route, healthy
//! endpoints per upstream, updates per registry) and the registry/upstream timeline are
//! drawn as inline SVG; the page fits a phone's width. Screenshots are saved as test artifacts:
//! `target/test-artifacts/dashboard.png`, `dashboard-history.png` (the history charts) and
//! `dashboard-phone.png`.
//!
//! Needs `apt-get install chromium chromium-driver fonts-dejavu-core` and `cargo build -p switchyard`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use switchyard_integration_tests::{eventually, free_port, Backend, Gateway};

const TOKEN: &str = "dashboard-s3cret";

/// A program from the Debian packages, or a failure that says how to install them.
fn program(name: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: install Chromium, its WebDriver and a font with `apt-get install -y chromium chromium-driver fonts-dejavu-core`",
        path.display()
    );
    path
}

/// Where test artifacts go: `<target>/test-artifacts/`.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A chromedriver process and one headless Chromium session on it.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = program("chromium");
        let chromedriver = program("chromedriver");
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let start = Instant::now();
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver not ready within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--window-size=1280,1000", "--hide-scrollbars",
                         format!("--user-data-dir={}", profile.path().display())],
            },
        }}});
        let reply: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("create a WebDriver session")
            .json()
            .await
            .unwrap();
        let session = reply["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {reply}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method.clone(), &url);
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let reply: Value = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .json()
            .await
            .unwrap();
        assert!(reply["value"]["error"].is_null(), "{path}: {reply}");
        reply["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({"url": url}))
            .await;
    }

    async fn run(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    async fn resize(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            json!({"width": width, "height": height}),
        )
        .await;
    }

    /// A PNG of the viewport, saved under `name` in the artifacts directory.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let data = self
            .command(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64 PNG"))
            .unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let path = artifacts().join(name);
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        path
    }

    /// The addresses of the endpoint rows on the page.
    async fn endpoints(&self) -> Vec<String> {
        let value = self
            .run("return Array.from(document.querySelectorAll('#upstreams tr[data-endpoint]')).map(r => r.dataset.endpoint)")
            .await;
        serde_json::from_value(value).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session ends Chromium; then chromedriver.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                reqwest::blocking::Client::new()
                    .delete(&url)
                    .send()
                    .map(drop)
            })
            .join()
        });
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn services_json(instances: &[(&str, &Backend)]) -> String {
    let entries: Vec<Value> = instances
        .iter()
        .map(|(service, b)| json!({"targets": [b.address().to_string()], "labels": {"__service__": service, "zone": "a"}}))
        .collect();
    serde_json::to_string_pretty(&entries).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let (a, b, api) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("api"),
    );
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("services.json");
    std::fs::write(&services, services_json(&[("echo", &a), ("echo", &b)])).unwrap();
    let gateway = Gateway::start(&format!(
        r#"[admin]
listen = "{{admin}}"
token = "{TOKEN}"

[log]
access = false

[registries.files]
type = "file"
path = "{}"

[registries.local]
type = "static"
services.api = ["{}"]

[upstreams.echo]
[[upstreams.echo.sources]]
registry = "files"
service = "echo"

[upstreams.api]
balancer = "least_request"
[[upstreams.api.sources]]
registry = "local"
service = "api"
[[upstreams.api.sources]]
registry = "files"
service = "echo"
priority = 1

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "api"

[[routes]]
name = "echo"
path_prefix = "/"
upstream = "echo"
"#,
        services.display(),
        api.address()
    ))
    .await;
    gateway.wait_ready().await;
    let browser = Browser::start().await;

    // Without the token: a login form, not the data.
    browser.open(&gateway.admin_url("/")).await;
    let text = browser.run("return document.body.innerText").await;
    assert!(
        text.as_str().unwrap().contains("needs the admin token"),
        "{text}"
    );
    assert!(browser.endpoints().await.is_empty());

    // With it: the page, and the token leaves the address bar.
    browser
        .open(&gateway.admin_url(&format!("/?token={TOKEN}")))
        .await;
    let (a_addr, b_addr) = (a.address().to_string(), b.address().to_string());
    eventually(
        "the page lists both instances of echo",
        Duration::from_secs(10),
        || async {
            let listed = browser.endpoints().await;
            listed.contains(&a_addr) && listed.contains(&b_addr)
        },
    )
    .await;
    let href = browser.run("return location.href").await;
    assert!(!href.as_str().unwrap().contains("token"), "{href}");
    let page = browser
        .run("return document.body.innerText")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    for needle in [
        "files / echo",
        "local / api",
        "healthy",
        "fresh",
        "registry / active / passive",
    ] {
        assert!(page.contains(needle), "{needle:?} not on the page:\n{page}");
    }

    // Traffic, so the routes show a live rate.
    let traffic = {
        let client = gateway.client().clone();
        let (echo, api_url) = (gateway.url("/hello"), gateway.url("/api/x"));
        tokio::spawn(async move {
            for i in 0..400 {
                let url = if i % 3 == 0 { &api_url } else { &echo };
                let _ = client.get(url).send().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    eventually("the echo route shows a request rate", Duration::from_secs(10), || async {
        let rate = browser
            .run("const c = document.querySelector('#routes tr[data-route=echo] td:nth-child(6)'); return c ? c.textContent : ''")
            .await;
        rate.as_str().and_then(|r| r.parse::<f64>().ok()).is_some_and(|r| r > 0.0)
    })
    .await;

    // An instance removed from the registry disappears without a reload.
    browser
        .run("window.__sameDocument = 'yes'; return null")
        .await;
    let refreshes_before = browser
        .run("return Number(document.body.dataset.refreshes)")
        .await;
    std::fs::write(&services, services_json(&[("echo", &a)])).unwrap();
    eventually(
        "instance b disappears from the page",
        Duration::from_secs(10),
        || async {
            let listed = browser.endpoints().await;
            !listed.contains(&b_addr) && listed.contains(&a_addr)
        },
    )
    .await;
    assert_eq!(
        browser.run("return window.__sameDocument").await,
        "yes",
        "the page was reloaded"
    );
    let refreshes_after = browser
        .run("return Number(document.body.dataset.refreshes)")
        .await;
    println!("refreshes: {refreshes_before} before the removal, {refreshes_after} after");
    assert!(refreshes_after.as_f64() > refreshes_before.as_f64());
    traffic.await.unwrap();

    // The history charts: inline SVG drawn from /api/history, offline, under the CSP.
    eventually("the echo route's requests/s chart shows the traffic", Duration::from_secs(15), || async {
        let max = browser
            .run("const s = document.querySelector('#history tr[data-history-route=echo] svg.rps'); return s ? Number(s.dataset.max) : 0")
            .await;
        max.as_f64().is_some_and(|m| m > 0.01)
    })
    .await;
    let charts = browser
        .run("return [document.querySelectorAll('#history svg.rps').length, document.querySelectorAll('#history svg.lat').length, document.querySelectorAll('#history svg.err').length, document.querySelectorAll('#history tr[data-history-upstream] svg.ok').length, document.querySelectorAll('#history svg polyline').length, document.querySelector('#events table') ? 1 : 0, document.querySelectorAll('#history tr[data-history-registry] svg.upd').length, document.querySelector('#timeline table') ? 1 : 0]")
        .await;
    println!("charts (rps, p99, 5xx, healthy upstreams, lines, events table, registry updates, timeline table): {charts}");
    let counts: Vec<u64> = charts
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(
        counts[0] >= 2 && counts[0] == counts[1] && counts[1] == counts[2],
        "{counts:?}"
    );
    assert!(counts[3] >= 1, "no healthy-endpoints chart: {counts:?}");
    assert_eq!(counts[6], 2, "one updates chart per registry: {counts:?}");
    assert_eq!(
        counts[4],
        3 * counts[0] + counts[3] + counts[6],
        "one line per chart: {counts:?}"
    );
    assert_eq!(counts[5], 1, "no events table");
    assert_eq!(counts[7], 1, "no timeline table");
    // The instance removed from the file registry was an update: its chart shows it.
    let updates = browser
        .run("const s = document.querySelector('#history tr[data-history-registry=files] svg.upd'); return s ? Number(s.dataset.max) : 0")
        .await;
    assert!(
        updates.as_f64().unwrap() >= 1.0,
        "the file registry's updates chart: {updates}"
    );
    let healthy = browser
        .run("const s = document.querySelector('#history tr[data-history-upstream=echo] svg.ok'); return s ? Number(s.dataset.max) : 0")
        .await;
    assert!(
        healthy.as_f64().unwrap() >= 1.0,
        "echo's healthy endpoints chart: {healthy}"
    );
    browser
        .run("document.getElementById('history').scrollIntoView(); return null")
        .await;
    browser.screenshot("dashboard-history.png").await;
    browser.run("window.scrollTo(0, 0); return null").await;

    browser.screenshot("dashboard.png").await;

    // A phone: no sideways scrolling, rows become labelled cards.
    browser.resize(390, 844).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let overflow = browser
        .run("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        .await;
    assert!(
        overflow.as_f64().unwrap() <= 1.0,
        "wider than the phone by {overflow}px"
    );
    browser.screenshot("dashboard-phone.png").await;
}
