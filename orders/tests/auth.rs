//! The API token is checked on what the router matched, not on how the path was
//! spelled, and every route needs it unless it is on the short list of open ones
//! (issue 18). The requests are written byte for byte on a TCP socket, as an attacker
//! would send them: an HTTP client library would normalise some of these paths.

mod helpers;

use helpers::TestApp;
use proptest::prelude::*;

const NOWHERE: &str = "ws://127.0.0.1:9/ws";
const TOKEN: &str = "an-api-token-of-more-than-32-bytes";

/// One request as raw bytes (with a JSON body, for the POSTs); the status of the answer.
async fn raw_status(address: &str, method: &str, path: &str, auth: Option<&str>) -> u16 {
    let auth = auth.map(|token| format!("Authorization: Bearer {token}"));
    let mut headers = vec!["Content-Type: application/json"];
    headers.extend(auth.as_deref());
    let body = r#"{"amount": 1999, "currency": "EUR"}"#;
    test_harness::http::request(address, method, path, &headers, body)
        .await
        .status
}

/// Every route of the API but the open ones, with `{id}` to fill in.
const PROTECTED: [(&str, &str); 7] = [
    ("POST", "/orders"),
    ("GET", "/orders"),
    ("GET", "/orders/{id}"),
    ("POST", "/orders/{id}/cancel"),
    ("POST", "/orders/{id}/retry"),
    ("GET", "/orders/{id}/incidents"),
    ("GET", "/orders/{id}/invoice"),
];

/// What stays open: probes, the scraper and the document.
const OPEN: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

#[tokio::test]
async fn no_spelling_of_a_protected_path_gets_past_the_token() {
    let app = TestApp::spawn_with(NOWHERE, |config| {
        config.orders_api_token = Some(TOKEN.into());
    })
    .await;
    // A real order, so that a request that got through would find something.
    let created = app
        .client
        .post(app.url("/orders"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"amount": 1999, "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let order: serde_json::Value = created.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();

    let mut tried = 0;
    for (method, template) in PROTECTED {
        let path = template.replace("{id}", &id);
        for spelling in test_harness::http::spellings(&path) {
            let status = raw_status(&app.address, method, &spelling, None).await;
            assert_eq!(status, 401, "{method} {spelling} without the token");
            let wrong = raw_status(&app.address, method, &spelling, Some("wrong")).await;
            assert_eq!(wrong, 401, "{method} {spelling} with a wrong token");
            tried += 1;
        }
    }
    assert!(tried > 200, "only {tried} spellings tried");
    assert_eq!(
        app.count("SELECT count(*) FROM orders").await,
        1,
        "a refused POST wrote an order"
    );

    // The plain spelling with the token reaches the route (the token is the only thing
    // the refusals above lacked).
    for (method, template) in PROTECTED {
        let path = template.replace("{id}", &id);
        let status = raw_status(&app.address, method, &path, Some(TOKEN)).await;
        assert_ne!(status, 401, "{method} {path} with the token");
    }
}

#[tokio::test]
async fn only_the_probes_the_scraper_and_the_document_are_open() {
    let app = TestApp::spawn_with(NOWHERE, |config| {
        config.orders_api_token = Some(TOKEN.into());
    })
    .await;
    for path in OPEN {
        let status = raw_status(&app.address, "GET", path, None).await;
        assert!(status == 200 || status == 503, "GET {path}: {status}");
    }
    // Deny by default: a path no route knows is refused before it is found missing, so
    // the token's absence tells nothing about which routes exist.
    for path in [
        "/",
        "/admin",
        "/orders2",
        "/healthz/x",
        "/%00",
        "/..",
        "/metrics/../orders",
    ] {
        let status = raw_status(&app.address, "GET", path, None).await;
        assert_eq!(status, 401, "GET {path}");
        let with_token = raw_status(&app.address, "GET", path, Some(TOKEN)).await;
        assert!(
            with_token == 404 || with_token == 401 || with_token == 400,
            "GET {path} with the token: {with_token}"
        );
    }
}

/// Shared by every generated case: one service, one order (dropped with the test, so
/// its database goes too).
struct World {
    runtime: tokio::runtime::Runtime,
    app: TestApp,
    id: String,
}

fn world() -> World {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (app, id) = runtime.block_on(async {
        let app = TestApp::spawn_with(NOWHERE, |config| {
            config.orders_api_token = Some(TOKEN.into());
        })
        .await;
        let order: serde_json::Value = app
            .client
            .post(app.url("/orders"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"amount": 1999, "currency": "EUR"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (app, order["id"].as_str().unwrap().to_owned())
    });
    World { runtime, app, id }
}

/// A path with each byte after the leading slash either kept or percent-encoded (in
/// either case of hex), and some slashes doubled.
fn encoded(path: String) -> impl Strategy<Value = String> {
    let path = path[1..].to_owned();
    let n = path.len();
    (
        proptest::collection::vec(0u8..4, n),
        proptest::collection::vec(any::<bool>(), n),
    )
        .prop_map(move |(encode, double)| {
            let mut out = String::from("/");
            for ((b, how), twice) in path.bytes().zip(&encode).zip(&double) {
                match (b, how) {
                    (b'/', _) if *twice => out.push_str("//"),
                    (_, 0) => out.push_str(&format!("%{b:02X}")),
                    (_, 1) => out.push_str(&format!("%{b:02x}")),
                    _ => out.push(b as char),
                }
            }
            out
        })
}

#[test]
fn a_generated_encoding_of_a_protected_route_is_refused_without_the_token() {
    let world = world();
    let id = world.id.clone();
    let requests = (0..PROTECTED.len()).prop_flat_map(move |i| {
        let (method, template) = PROTECTED[i];
        encoded(template.replace("{id}", &id)).prop_map(move |p| (method, p))
    });
    let config = ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    };
    proptest!(config, |((method, path) in requests)| {
        let status = world.runtime.block_on(raw_status(&world.app.address, method, &path, None));
        prop_assert_eq!(status, 401, "{} {}", method, path);
    });
}
