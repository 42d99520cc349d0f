//! The span of each HTTP request, for [`tracing_actix_web::TracingLogger`]: its method,
//! its route and its outcome, and never its path. A path can hold a bearer capability
//! (a payment page's id on Payments), and logging the route (`/pay/{payment_id}`) says
//! which endpoint it was just as well.
//!
//! The route is recorded once the request is routed, by a middleware on each resource
//! ([`crate::routing::resource`]) before its handler runs, or else when the response is
//! known: matching the path before routing would walk every route's regex for each
//! request. Log lines of the middlewares outside the router have no route.
//!
//! Few fields on purpose: with traces exported, every field of every request's span
//! becomes an OpenTelemetry attribute, sampled or not (see `bench/results/` on the cost
//! of tracing). [`ContinueTrace`] continues a caller's `traceparent` header;
//! [`OwnTrace`] starts a trace of its own, for requests from outside (a customer's
//! browser), whose trace context is not ours to continue.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{HttpMessage, HttpRequest};
use tracing_actix_web::{RootSpan, RootSpanBuilder};

/// A request span that continues the request's `traceparent` (and `tracestate`).
pub struct ContinueTrace;

/// A request span that starts a trace of its own, whatever the request's headers say.
pub struct OwnTrace;

impl RootSpanBuilder for ContinueTrace {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        let span = route_span(request);
        if let Some(traceparent) = header(request, "traceparent") {
            let tracestate = header(request, "tracestate");
            crate::trace_context::set_parent(&span, traceparent, tracestate);
        }
        span
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        on_request_end(span, outcome);
    }
}

impl RootSpanBuilder for OwnTrace {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        route_span(request)
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        on_request_end(span, outcome);
    }
}

/// The span: the method now, the route once routed ([`record_route`]), the status
/// when the response is known.
fn route_span(request: &ServiceRequest) -> tracing::Span {
    let method = request.method();
    tracing::info_span!(
        "HTTP request",
        http.method = %method,
        http.route = tracing::field::Empty,
        http.status_code = tracing::field::Empty,
        otel.name = %method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        exception.message = tracing::field::Empty,
    )
}

/// The outcome, in one record: `http.status_code`, `otel.status_code` (`ERROR` for an
/// error that is not the client's), `exception.message` on an error, and the route if
/// no resource recorded it (an unknown path, a route mounted without
/// [`crate::routing::resource`]). The fields `DefaultRootSpanBuilder::on_request_end`
/// records, but not one by one.
fn on_request_end<B: MessageBody>(
    span: tracing::Span,
    outcome: &Result<ServiceResponse<B>, actix_web::Error>,
) {
    let (request, status, error) = match outcome {
        Ok(response) => (
            Some(response.request()),
            response.status(),
            response.response().error().map(ToString::to_string),
        ),
        Err(error) => (
            None,
            error.as_response_error().status_code(),
            Some(error.to_string()),
        ),
    };
    let otel_status = match &error {
        Some(_) if !status.is_client_error() => "ERROR",
        _ => "OK",
    };
    let route = request.and_then(route_to_record);
    let name = route
        .as_ref()
        .zip(request)
        .map(|(route, request)| otel_name(request, route));
    let code = i64::from(status.as_u16());
    record_at_once(
        &span,
        [
            ("http.status_code", Some(&code as &dyn tracing::Value)),
            ("otel.status_code", Some(&otel_status)),
            ("exception.message", error.as_ref().map(as_value)),
            ("http.route", route.as_ref().map(as_value)),
            ("otel.name", name.as_ref().map(as_value)),
        ],
    );
}

/// Records the request's route on its root span, if no one has: `http.route`, and
/// `otel.name` as `{method} {route}` (`(no route)` when none matched).
pub(crate) fn record_route(request: &HttpRequest) {
    let Some(span) = request
        .extensions()
        .get::<RootSpan>()
        .map(|root| tracing::Span::clone(root))
    else {
        return;
    };
    let Some(route) = route_to_record(request) else {
        return;
    };
    let name = otel_name(request, &route);
    record_at_once(
        &span,
        [
            ("http.route", Some(&route as &dyn tracing::Value)),
            ("otel.name", Some(&name)),
        ],
    );
}

/// The route, the first time it is asked for (then `None`: it is on the span).
fn route_to_record(request: &HttpRequest) -> Option<String> {
    if request.extensions().get::<RouteRecorded>().is_some() {
        return None;
    }
    request.extensions_mut().insert(RouteRecorded);
    let pattern = crate::routing::matched_pattern(request);
    Some(pattern.unwrap_or_else(|| "(no route)".to_owned()))
}

/// The span's name once routed: `GET /orders/{id}`.
fn otel_name(request: &HttpRequest, route: &str) -> String {
    format!("{} {route}", request.method())
}

fn as_value(text: &String) -> &dyn tracing::Value {
    text
}

/// Records `values` on `span` in one go, or nothing if it lacks one of the fields (all
/// are declared in [`route_span`]). The JSON log layer re-parses a span's fields on
/// every record, about 14 k instructions each, so one record per field would cost as
/// many times over.
fn record_at_once<const N: usize>(
    span: &tracing::Span,
    values: [(&str, Option<&dyn tracing::Value>); N],
) {
    let Some(fields) = span.metadata().map(|metadata| metadata.fields()) else {
        return; // a disabled span
    };
    let found: Vec<tracing::field::Field> = values
        .iter()
        .filter_map(|(name, _)| fields.field(name))
        .collect();
    let Ok(found) = <[tracing::field::Field; N]>::try_from(found) else {
        debug_assert!(false, "a field the request span does not declare");
        return;
    };
    let pairs: [_; N] = std::array::from_fn(|i| (&found[i], values[i].1));
    span.record_all(&fields.value_set(&pairs));
}

/// Marks a request whose route is on its span.
struct RouteRecorded;

/// A header's value, when it is there and is text.
fn header<'r>(request: &'r ServiceRequest, name: &str) -> Option<&'r str> {
    request.headers().get(name)?.to_str().ok()
}

#[cfg(test)]
mod tests {
    use actix_web::{App, HttpResponse, test};
    use serde_json::Value;
    use test_harness::logs::CapturedLogs;
    use tracing_actix_web::TracingLogger;
    use tracing_subscriber::fmt::format::FmtSpan;

    use super::OwnTrace;

    async fn logging_handler() -> HttpResponse {
        tracing::info!("in the handler");
        HttpResponse::NoContent().finish()
    }

    async fn failing_handler() -> actix_web::Result<HttpResponse> {
        Err(actix_web::error::ErrorInternalServerError(
            "the disk is on fire",
        ))
    }

    /// The JSON log lines of GETs of `paths` to an app with two resources,
    /// `/items/{id}` and `/fails`: the events, and a `close` line for each request's
    /// span.
    async fn log_lines_of_requests_to(paths: &[&str]) -> Vec<Value> {
        let captured = CapturedLogs::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_events(FmtSpan::CLOSE)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(
            App::new()
                .wrap(TracingLogger::<OwnTrace>::new())
                .service(crate::routing::resource("/items/{id}").get(logging_handler))
                .service(crate::routing::resource("/fails").get(failing_handler)),
        )
        .await;
        for path in paths {
            let request = test::TestRequest::get().uri(path).to_request();
            test::call_service(&app, request).await;
        }
        captured
            .text()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON log line"))
            .collect()
    }

    #[actix_web::test]
    async fn the_route_is_on_the_handlers_log_lines_and_the_outcome_on_every_span() {
        let lines = log_lines_of_requests_to(&["/items/7", "/nowhere", "/fails"]).await;
        let inside = lines
            .iter()
            .find(|line| line["message"] == "in the handler")
            .expect("the handler logged");
        assert_eq!(inside["span"]["http.route"], "/items/{id}", "{inside}");
        assert_eq!(inside["span"]["otel.name"], "GET /items/{id}", "{inside}");

        let field = |span: &Value, name: &str| span[name].to_string();
        let closed: Vec<[String; 5]> = lines
            .iter()
            .filter(|line| line["message"] == "close")
            .map(|line| {
                [
                    "http.route",
                    "otel.name",
                    "http.status_code",
                    "otel.status_code",
                    "exception.message",
                ]
                .map(|name| field(&line["span"], name))
            })
            .collect();
        let expected = [
            [
                r#""/items/{id}""#,
                r#""GET /items/{id}""#,
                "204",
                r#""OK""#,
                "null",
            ],
            [
                r#""(no route)""#,
                r#""GET (no route)""#,
                "404",
                r#""OK""#,
                "null",
            ],
            [
                r#""/fails""#,
                r#""GET /fails""#,
                "500",
                r#""ERROR""#,
                r#""the disk is on fire""#,
            ],
        ];
        assert_eq!(
            closed,
            expected.map(|span| span.map(String::from)),
            "{lines:#?}"
        );
    }
}
