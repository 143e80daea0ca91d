//! A real browser for the web journeys: Debian's chromium, headless,
//! driven over the W3C WebDriver protocol through chromedriver (plain HTTP
//! and JSON, so no driver crate is needed).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use base64::{engine::general_purpose::STANDARD, Engine};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// The WebDriver element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether this machine can run the browser journeys.
pub fn available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    /// Where screenshots go.
    pub shots: PathBuf,
}

pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// Starts chromedriver and a headless chromium window of the given
    /// size; screenshots are saved under `shots`.
    pub async fn start(width: u32, height: u32, shots: impl Into<PathBuf>) -> anyhow::Result<Browser> {
        let port = crate::free_port();
        // Its own process group, so that a test that fails before closing
        // the browser still takes chromium down with the driver (Drop).
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("chromedriver")?;
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("chromedriver never became ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--hide-scrollbars", format!("--window-size={width},{height}")
            ]}
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let id = answer["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no browser session: {answer}"))?;
        let shots = shots.into();
        std::fs::create_dir_all(&shots)?;
        Ok(Browser {
            http,
            session: format!("{base}/session/{id}"),
            driver,
            shots,
        })
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let answer: Value = req.send().await?.json().await?;
        if let Some(err) = answer["value"]["error"].as_str() {
            bail!("{path}: {err}: {}", answer["value"]["message"]);
        }
        Ok(answer["value"].clone())
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .map(drop)
    }

    pub async fn url(&self) -> anyhow::Result<String> {
        let v = self.command(reqwest::Method::GET, "/url", None).await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    pub async fn find(&self, css: &str) -> anyhow::Result<Element<'_>> {
        let v = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .with_context(|| format!("find {css}"))?;
        let id = v[ELEMENT].as_str().ok_or_else(|| anyhow!("{css}: no element"))?;
        Ok(Element {
            browser: self,
            id: id.to_string(),
        })
    }

    /// The text of the first element matching `css` once it contains
    /// `want`, waiting up to `patience`; the last text seen otherwise.
    pub async fn wait_for_text(&self, css: &str, want: &str, patience: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + patience;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(e) = self.find(css).await {
                if let Ok(t) = e.text().await {
                    if t.contains(want) {
                        return Ok(t);
                    }
                    last = t;
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        bail!("{css} never showed {want:?}; last: {last:?}")
    }

    /// The whole page's visible text.
    pub async fn text(&self) -> anyhow::Result<String> {
        self.find("body").await?.text().await
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> anyhow::Result<usize> {
        let v = self
            .command(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(v.as_array().map_or(0, Vec::len))
    }

    /// Fills the form fields named in `fields` (by CSS selector) and clicks `submit`.
    pub async fn fill_and_submit(&self, fields: &[(&str, &str)], submit: &str) -> anyhow::Result<()> {
        for (css, value) in fields {
            let e = self.find(css).await?;
            e.clear().await?;
            e.type_text(value).await?;
        }
        self.click(submit).await
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css).await?.click().await
    }

    /// Sets a field's value as a picker would (dates and times, whose
    /// typed form depends on the browser's locale).
    pub async fn set_value(&self, css: &str, value: &str) -> anyhow::Result<()> {
        let e = self.find(css).await?;
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({
                "script": "arguments[0].value = arguments[1];",
                "args": [{ELEMENT: e.id}, value]
            })),
        )
        .await
        .map(drop)
    }

    /// Saves a PNG of the window as `<shots>/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let v = self.command(reqwest::Method::GET, "/screenshot", None).await?;
        let png = STANDARD.decode(v.as_str().unwrap_or_default())?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    pub async fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await
        .map(drop)
    }

    pub async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            // chromedriver and every chromium process it started.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Element<'_> {
    fn path(&self, tail: &str) -> String {
        format!("/element/{}{tail}", self.id)
    }

    pub async fn click(&self) -> anyhow::Result<()> {
        self.browser
            .command(reqwest::Method::POST, &self.path("/click"), Some(json!({})))
            .await
            .map(drop)
    }

    pub async fn clear(&self) -> anyhow::Result<()> {
        self.browser
            .command(reqwest::Method::POST, &self.path("/clear"), Some(json!({})))
            .await
            .map(drop)
    }

    pub async fn type_text(&self, text: &str) -> anyhow::Result<()> {
        self.browser
            .command(
                reqwest::Method::POST,
                &self.path("/value"),
                Some(json!({"text": text})),
            )
            .await
            .map(drop)
    }

    pub async fn text(&self) -> anyhow::Result<String> {
        let v = self
            .browser
            .command(reqwest::Method::GET, &self.path("/text"), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    pub async fn attribute(&self, name: &str) -> anyhow::Result<Option<String>> {
        let v = self
            .browser
            .command(
                reqwest::Method::GET,
                &self.path(&format!("/attribute/{name}")),
                None,
            )
            .await?;
        Ok(v.as_str().map(str::to_string))
    }
}
