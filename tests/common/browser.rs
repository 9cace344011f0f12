//! A real browser for the tests: Debian's chromium, headless, driven through
//! chromedriver (WebDriver, `fantoccini`). Without them the browser tests
//! skip (saying so), unless `MDMD_TEST_REQUIRE_BROWSER` is set.

use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::{free_port, KillOnDrop};

pub struct Driver {
    _child: KillOnDrop,
    pub port: u16,
}

pub fn browser_available() -> bool {
    let have = std::path::Path::new("/usr/bin/chromium").exists() && std::path::Path::new("/usr/bin/chromedriver").exists();
    if !have {
        assert!(
            std::env::var("MDMD_TEST_REQUIRE_BROWSER").is_err(),
            "MDMD_TEST_REQUIRE_BROWSER is set but chromium / chromedriver are missing"
        );
        eprintln!("chromium or chromedriver missing (apt-get install chromium chromium-driver): browser test skipped");
    }
    have
}

pub async fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver");
    let d = Driver {
        _child: KillOnDrop(child),
        port,
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

pub async fn browser(d: &Driver, width: u32) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("acceptInsecureCerts".into(), json!(true));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={width},1100"), "--lang=en-US"],
        }),
    );
    ClientBuilder::native()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("WebDriver session")
}

/// Click, then wait for an element of the page the click leads to.
pub async fn click_then(c: &Client, click: &str, then: &str) {
    c.find(Locator::Css(click)).await.unwrap().click().await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(then))
        .await
        .unwrap_or_else(|e| panic!("after clicking {click}: no {then}: {e}"));
}
