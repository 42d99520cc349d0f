//! Route helpers both services mount their resources with.

use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, Handler, HttpResponse, Resource, Responder, Route, guard, web};

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
            .register(config)
    }
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
