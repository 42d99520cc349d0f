//! Route helpers both services mount their resources with.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, Route, guard, web};

/// A route for GET that answers HEAD too, as RFC 9110 §9.3.2 asks: the same status and
/// headers, without the body (actix-http drops the body of a response to HEAD and keeps
/// its `Content-Length`).
pub fn get_and_head() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// The answer to any other method on a resource: 405 with the JSON error shape of both
/// services and the `Allow` header RFC 9110 §15.5.6 requires, listing `allow` (for
/// example `"GET, HEAD"`).
pub fn method_not_allowed(allow: &'static str) -> Route {
    web::to(move || async move {
        let mut response = error_body(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("method not allowed; this resource allows {allow}"),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        response
    })
}

/// The error shape of both services: `{"error": {"code": …, "message": …}}` with
/// `status`.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .json(serde_json::json!({"error": {"code": code, "message": message}}))
}
