//! `TestBrowser`: headless Chromium through chromedriver (Debian's packages), for the
//! dashboard's tests. chromedriver runs in a process group of its own, killed with its browsers
//! when the test ends, however it ends. Screenshots go to `target/screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

pub struct TestBrowser {
    pub client: Client,
    driver: Child,
}

/// Where a test run's screenshots go: `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

impl TestBrowser {
    pub async fn start() -> Self {
        let port = crate::free_port();
        // `setsid`: chromedriver leads a process group, so its browsers go with it.
        let driver = Command::new("setsid")
            .args(["chromedriver", &format!("--port={port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/test installs chromium-driver)");
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--no-first-run", "--window-size=1360,1000"],
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("an object")
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no browser session: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Self { client, driver }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("goto");
    }

    /// Waits up to 20 s for `css` to be on the page.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
    }

    /// Waits up to 20 s for the text of `css` to contain `text`; answers the whole text.
    pub async fn text_of(&self, css: &str, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = match self.client.find(Locator::Css(css)).await {
                Ok(el) => el.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if found.contains(text) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never said '{text}'; it says '{found}'"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks `css`, finding it again if the page re-rendered it between finding and clicking
    /// (the dashboard redraws what it polls every 2 s).
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.find(css).await.click().await {
                Err(e) if e.is_stale_element_reference() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                clicked => {
                    clicked.unwrap_or_else(|e| panic!("click {css}: {e:?}"));
                    return;
                }
            }
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("type");
    }

    /// Saves the page as `target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("save");
    }

    /// Errors since the last call: what Chrome's console logged at SEVERE (failed loads, CSP
    /// refusals, uncaught errors, `console.error`), and what the page's own hook caught.
    pub async fn errors(&self) -> Vec<String> {
        let v = self
            .client
            .execute("return window.__ferryErrors || [];", vec![])
            .await
            .expect("script");
        let mut errors: Vec<String> = serde_json::from_value(v).unwrap_or_default();
        let log = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("the console log");
        for entry in log.as_array().into_iter().flatten() {
            if entry["level"] == "SEVERE" {
                errors.push(entry["message"].as_str().unwrap_or("").to_string());
            }
        }
        errors
    }
}

/// chromedriver's console log of the session (`POST /session/{id}/se/log`), which it drains.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type": "browser"}"#.into()))
    }
}

impl Drop for TestBrowser {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}
