//! A customer pays on the real payment page in headless Chromium: the page of a real
//! order shows the amount, the Pay button is clicked, and the order becomes
//! fulfilled. Screenshots land in `target/screenshots/` for a person to look at.
//!
//! Needs Chromium and ChromeDriver (Debian's `chromium` and `chromium-driver`, or the
//! paths in `CHROMIUM` and `CHROMEDRIVER`); `scripts/test` installs them where it may and
//! runs ignored tests too.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::Stack;
use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start {binary} ({e}): scripts/test installs it or says how")
            });
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        let http = reqwest::Client::new();
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        while !http
            .get(&status)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                tokio::time::Instant::now() < end,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshot_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test]
#[ignore = "needs chromium"]
async fn a_customer_pays_on_the_page_in_a_real_browser() {
    let stack = Stack::spawn().await;
    let order = stack.create_order(1999, "EUR").await;
    let url = stack.payment_url(order).await;

    let driver = Driver::start().await;
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=800,900",
            ],
        }
    });
    let capabilities = capabilities.as_object().unwrap().clone();
    let browser = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a browser session");

    // A form on another site (here a data: URL, whose Origin is `null`) that posts to the
    // page's Cancel is refused, and nothing changes.
    let forged = format!(
        "data:text/html,<form id=f method=post action=\"{url}/cancel\"><button id=go>go</button></form>"
    );
    browser.goto(&forged).await.unwrap();
    browser
        .wait()
        .for_element(Locator::Id("go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let refused = browser
        .wait()
        .for_element(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(refused, "Request refused");
    assert_eq!(stack.order(order).await["status"], "awaiting_payment");

    browser.goto(&url).await.unwrap();
    let amount = browser
        .wait()
        .for_element(Locator::Id("amount"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(amount, "€19.99");
    let order_shown = browser
        .find(Locator::Id("order"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(order_shown, order.to_string());
    std::fs::write(
        screenshot_path("payment-page.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();

    // The Content-Security-Policy lets the page's own stylesheet in (by its hash): the
    // Pay button has its colour.
    let colour = browser
        .execute(
            "return getComputedStyle(document.getElementById('pay')).backgroundColor",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(colour, "rgb(79, 70, 229)", "the stylesheet was blocked");

    browser
        .find(Locator::Id("pay"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The POST answers 303 back to the page, which now shows the outcome.
    let status = browser
        .wait()
        .for_element(Locator::Id("status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status.contains("Paid"), "{status}");
    std::fs::write(
        screenshot_path("payment-page-paid.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();
    browser.close().await.unwrap();

    let fulfilled = stack.wait_status(order, "fulfilled").await;
    assert_eq!(fulfilled["payment_url"], url.as_str());
    assert_eq!(stack.invoices().await, 1);
}
