//! Route helpers both services mount their resources with.

use actix_web::body::MessageBody;
use actix_web::dev::{AppService, HttpServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{
    FromRequest, Handler, HttpMessage, HttpRequest, HttpResponse, Resource, Responder, Route,
    guard, web,
};

/// The pattern of the route `request` matched (`/orders/{id}`), or `None`: kept in the
/// request's extensions once known, for the metrics and the logs that want it too.
///
/// Call it once the request is routed (from a resource's middleware, a handler, or on
/// the response): actix then reads the pattern off the matched resource. Before
/// routing, or for a path no resource matched, it walks the whole resource map with
/// actix-router's regexes, about 39 k instructions.
pub fn matched_pattern(request: &HttpRequest) -> Option<String> {
    if let Some(MatchedPattern(pattern)) = request.extensions().get::<MatchedPattern>() {
        return pattern.clone();
    }
    let pattern = request.match_pattern();
    request
        .extensions_mut()
        .insert(MatchedPattern(pattern.clone()));
    pattern
}

/// What [`matched_pattern`] keeps. The path a request matches on is never rewritten
/// here (no middleware changes the URI), so the first answer holds for the request.
#[derive(Clone)]
struct MatchedPattern(Option<String>);

/// A resource whose methods are listed once: `resource("/orders").get(list).post(create)`
/// mounts GET (answering HEAD too) and POST, and answers every other method with a 405
/// whose `Allow` header lists them, so no route repeats its methods by hand.
pub fn resource(path: &str) -> Methods {
    Methods {
        resource: web::resource(path),
        allow: Vec::new(),
    }
}

/// A resource being given its methods; see [`resource`]. Mount it with `cfg.service`.
pub struct Methods {
    resource: Resource,
    allow: Vec<&'static str>,
}

impl Methods {
    /// GET, and HEAD with it ([`get_and_head`]).
    pub fn get<F, Args>(mut self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self.resource.route(get_and_head().to(handler));
        self.allow.extend(["GET", "HEAD"]);
        self
    }

    /// POST.
    pub fn post<F, Args>(mut self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self.resource.route(web::post().to(handler));
        self.allow.push("POST");
        self
    }
}

impl HttpServiceFactory for Methods {
    fn register(self, config: &mut AppService) {
        let mut allow = self.allow;
        allow.sort_unstable();
        self.resource
            .default_service(method_not_allowed(allow.join(", ")))
            // Innermost, so the request is routed: the route is read off the resource.
            .wrap(actix_web::middleware::from_fn(route_on_span))
            .register(config)
    }
}

/// Middleware on every resource: puts the route on the request's span before the
/// handler runs, so that its log lines carry it (see [`crate::http_span`]).
async fn route_on_span(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    crate::http_span::record_route(request.request());
    next.call(request).await
}

/// A route for GET that answers HEAD too, as RFC 9110 §9.3.2 asks: the same status and
/// headers, without the body (actix-http drops the body of a response to HEAD and keeps
/// its `Content-Length`).
pub fn get_and_head() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// The answer to any other method on a resource: 405 with the JSON error shape of both
/// services and the `Allow` header RFC 9110 §15.5.6 requires, listing `allow` (for
/// example `"GET, HEAD"`).
pub fn method_not_allowed(allow: impl Into<String>) -> Route {
    let allow: String = allow.into();
    web::to(move || {
        let allow = allow.clone();
        async move {
            let mut response = error_body(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("method not allowed; this resource allows {allow}"),
            );
            if let Ok(value) = header::HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            response
        }
    })
}

/// The error shape of both services: `{"error": {"code": …, "message": …}}` with
/// `status`.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .json(serde_json::json!({"error": {"code": code, "message": message}}))
}
