//! Payments' doors (issue 18): the operators' endpoints take their own token, on what
//! the router matched, however the path is spelled, and never the link's; the
//! WebSocket takes the link's token whatever the spelling; and no request can add a
//! metric series. Requests are written byte for byte ([`test_harness::http`]).

mod helpers;

use helpers::{ADMIN_TOKEN, TOKEN, TestApp};
use test_harness::http::{made_up_request, request, spellings};
use test_harness::postgres::TestDatabase;

const ADMIN_ROUTES: [(&str, &str); 2] = [
    ("GET", "/admin/dead-letters"),
    ("POST", "/admin/events/1/retry"),
];

async fn status(app: &TestApp, method: &str, path: &str, token: Option<&str>) -> u16 {
    let auth = token.map(|token| format!("Authorization: Bearer {token}"));
    let headers: Vec<&str> = auth.iter().map(String::as_str).collect();
    let answer = request(&app.address, method, path, &headers, "").await;
    // A spelling the router does not take for an admin route is an unknown path (the
    // payment page is public, so Payments is not deny by default outside /admin); the
    // handler's own 404 names an event instead.
    if answer.status == 404 && answer.body.contains("no route for") {
        return 401;
    }
    answer.status
}

#[tokio::test]
async fn the_admin_endpoints_need_the_admin_token_however_the_path_is_spelled() {
    let db = TestDatabase::unborn("payments");
    let app = TestApp::spawn(&db).await;
    let mut tried = 0;
    for (method, path) in ADMIN_ROUTES {
        for spelling in spellings(path) {
            for token in [None, Some("wrong"), Some(TOKEN)] {
                let got = status(&app, method, &spelling, token).await;
                assert_eq!(got, 401, "{method} {spelling} with {token:?}");
            }
            tried += 1;
        }
        // The plain spelling with the admin token gets to the handler.
        let got = status(&app, method, path, Some(ADMIN_TOKEN)).await;
        assert!(got == 200 || got == 404, "{method} {path}: {got}");
        let answer = request(
            &app.address,
            method,
            path,
            &[&format!("Authorization: Bearer {ADMIN_TOKEN}")],
            "",
        )
        .await;
        assert!(!answer.body.contains("no route for"), "{}", answer.body);
    }
    assert!(tried > 60, "only {tried} spellings");
    // Unknown paths under /admin are refused before they are found missing.
    for path in ["/admin", "/admin/", "/admin/x", "/%61dmin/x"] {
        assert_eq!(status(&app, "GET", path, None).await, 401, "{path}");
        let known = request(
            &app.address,
            "GET",
            path,
            &[&format!("Authorization: Bearer {ADMIN_TOKEN}")],
            "",
        )
        .await;
        assert_eq!(known.status, 404, "{path}");
    }
}

#[tokio::test]
async fn without_an_admin_token_the_admin_endpoints_refuse_everyone() {
    let db = TestDatabase::unborn("payments");
    let app = TestApp::spawn_with(&db, |config| config.admin_token = None).await;
    for (method, path) in ADMIN_ROUTES {
        for token in [None, Some(TOKEN), Some(ADMIN_TOKEN)] {
            let answer = request(
                &app.address,
                method,
                path,
                &token
                    .map(|t| format!("Authorization: Bearer {t}"))
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
                "",
            )
            .await;
            assert_eq!(answer.status, 401, "{method} {path} with {token:?}");
            assert!(
                answer.body.contains("PAYMENTS_ADMIN_TOKEN is not set"),
                "{}",
                answer.body
            );
        }
    }
}

#[tokio::test]
async fn the_websocket_needs_the_link_token_however_the_path_is_spelled() {
    let db = TestDatabase::unborn("payments");
    let app = TestApp::spawn(&db).await;
    for spelling in spellings("/ws") {
        let handshake = |token: Option<&str>| {
            let mut headers = vec![
                "Upgrade: websocket".to_owned(),
                "Connection: Upgrade, close".to_owned(),
                "Sec-WebSocket-Version: 13".to_owned(),
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_owned(),
                format!("Sec-WebSocket-Protocol: {}", shared_protocol::SUBPROTOCOL),
            ];
            headers.extend(token.map(|t| format!("Authorization: Bearer {t}")));
            headers
        };
        for token in [None, Some("wrong"), Some(ADMIN_TOKEN)] {
            let headers = handshake(token);
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            let got = request(&app.address, "GET", &spelling, &headers, "").await;
            assert_ne!(got.status, 101, "GET {spelling} with {token:?} upgraded");
            assert!(
                got.status == 401 || got.status == 404,
                "GET {spelling} with {token:?}: {}",
                got.status
            );
        }
    }
}

#[tokio::test]
async fn no_method_or_path_a_client_makes_up_adds_a_metric_series() {
    let db = TestDatabase::unborn("payments");
    let app = TestApp::spawn(&db).await;
    for _ in 0..1000 {
        let (method, path) = made_up_request();
        request(&app.address, &method, &path, &[], "").await;
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("payments_http_requests_total{"))
        .collect();
    for line in &series {
        let method = line
            .split("method=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        assert!(
            ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "_OTHER"].contains(&method),
            "{line}"
        );
        assert!(
            line.contains("route=\"unmatched\"") || line.contains("route=\"/"),
            "{line}"
        );
    }
    // A label per method or path would make hundreds; a fixed set makes a handful per
    // status (seven method labels, one route).
    assert!(
        series.len() <= 7 * 3 + 1,
        "{} series: {series:#?}",
        series.len()
    );
}
