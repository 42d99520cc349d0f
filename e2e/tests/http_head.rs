//! HEAD on every GET route of both services answers as GET does, without the body
//! (RFC 9110 §9.3.2): `curl -I` on a payment page or a health check tells the truth.

use e2e::Stack;
use reqwest::Method;

/// What a response says about itself, body aside.
#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    content_type: Option<String>,
    content_length: Option<u64>,
}

async fn head_of(stack: &Stack, method: Method, url: &str) -> (Head, usize) {
    let response = stack.http.request(method.clone(), url).send().await;
    let response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("a text header").to_owned())
    };
    let head = Head {
        status: response.status().as_u16(),
        content_type: header("content-type"),
        content_length: header("content-length").map(|v| v.parse().expect("a length")),
    };
    let body = response.bytes().await.expect("the body").len();
    (head, body)
}

#[tokio::test]
async fn every_get_route_of_both_services_answers_head_without_the_body() {
    let stack = Stack::spawn().await;
    let order = stack.create_order(1999, "EUR").await;
    let page = stack.payment_url(order).await;
    stack.press(&page, "complete").await;
    stack.wait_status(order, "fulfilled").await;
    let payments = |path: &str| format!("http://127.0.0.1:{}{path}", stack.payments_port);

    let urls = [
        stack.orders_url("/orders"),
        stack.orders_url(&format!("/orders/{order}")),
        stack.orders_url(&format!("/orders/{order}/invoice")),
        stack.orders_url("/orders/00000000-0000-4000-8000-000000000000"),
        stack.orders_url("/healthz"),
        stack.orders_url("/readyz"),
        stack.orders_url("/openapi.json"),
        page.clone(),
        payments("/pay/00000000-0000-4000-8000-000000000000"),
        payments("/ws"), // without an upgrade: the same refusal as GET
        payments("/healthz"),
        payments("/readyz"),
    ];
    for url in &urls {
        let (get, get_body) = head_of(&stack, Method::GET, url).await;
        let (head, head_body) = head_of(&stack, Method::HEAD, url).await;
        assert_ne!(get.status, 405, "GET {url}");
        assert_eq!(head, get, "HEAD {url} answers as GET does");
        assert_eq!(head_body, 0, "HEAD {url} has no body");
        if let Some(length) = get.content_length {
            assert_eq!(length as usize, get_body, "GET {url}: Content-Length");
        }
    }

    // /metrics changes with every request, so only its status and type can match.
    for url in [stack.orders_url("/metrics"), payments("/metrics")] {
        let (get, _) = head_of(&stack, Method::GET, &url).await;
        let (head, head_body) = head_of(&stack, Method::HEAD, &url).await;
        assert_eq!(
            (head.status, &head.content_type),
            (get.status, &get.content_type),
            "HEAD {url}"
        );
        assert_eq!(head_body, 0, "HEAD {url} has no body");
    }

    // Other methods still get the JSON 405 of HTTP-API.md.
    let (put, _) = head_of(&stack, Method::PUT, &stack.orders_url("/healthz")).await;
    assert_eq!(put.status, 405);
}
