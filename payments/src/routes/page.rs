//! The hosted payment page: `GET /pay/{payment_id}` and its two forms, Pay and Cancel.
//! Both POSTs answer `303 See Other` back to the page, which then shows the outcome
//! (post/redirect/get, so a reload never pays twice). HTML comes from maud, which
//! escapes every interpolated value.
//!
//! The page's URL is a bearer capability: whoever has it can pay or cancel. So every
//! answer under `/pay/` is kept out of caches and referrers, cannot be framed, and runs
//! no script (`SECURITY_HEADERS`); and the two POSTs refuse a request a browser marks
//! as coming from another site ([`cross_site`]): CSRF protection without cookies.

use std::sync::LazyLock;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use base64::Engine;
use maud::{Markup, html};
use service_kit::{error_chain, trace_context};
use sha2::Digest;
use shared_protocol::PaymentId;
use tracing::Instrument;

use crate::state::AppState;
use crate::store::{Finished, PageFinished, StoreError, off_arbiter};

mod view;

pub use view::format_amount;
use view::{STYLE, checkout, layout};

/// `GET /pay/{payment_id}`
pub async fn show(path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let Ok(payment_id) = PaymentId::parse(&path) else {
        return not_found();
    };
    let store = state.store.clone();
    match off_arbiter(async move { store.session_by_payment(payment_id).await }).await {
        Ok(Some(session)) => html_response(StatusCode::OK, checkout(&session)),
        Ok(None) => not_found(),
        Err(e) => failed(&e, false),
    }
}

/// `POST /pay/{payment_id}/complete`: the customer pays.
pub async fn complete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    act(&req, &path, &state, Action::Complete).await
}

/// `POST /pay/{payment_id}/cancel`: the customer gives up.
pub async fn cancel(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    act(&req, &path, &state, Action::Cancel).await
}

#[derive(Clone, Copy)]
enum Action {
    Complete,
    Cancel,
}

impl Action {
    /// The name of the action's span in traces.
    fn span_name(self) -> &'static str {
        match self {
            Action::Complete => "customer pays",
            Action::Cancel => "customer cancels",
        }
    }
}

async fn act(req: &HttpRequest, raw: &str, state: &AppState, action: Action) -> HttpResponse {
    if let Some(why) = cross_site(req, &state.public_url) {
        tracing::warn!(why, "refused a payment form posted from another site");
        return forbidden();
    }
    let Ok(payment_id) = PaymentId::parse(raw) else {
        return not_found();
    };
    match finish(state, payment_id, action).await {
        Ok(Finished::Unknown) => not_found(),
        Ok(Finished::Now(event)) => {
            // Not the payment id: it is the page's bearer capability.
            tracing::info!(order_id = %event.order_id, event_id = %event.event_id, state = ?event.state, "customer finished the payment");
            see_other(payment_id)
        }
        Ok(Finished::Already(_) | Finished::NotApplicable(_)) => see_other(payment_id),
        Err(e) => failed(&e, true),
    }
}

/// Pays or cancels through the store. With traces on, the request (tracing-actix-web's
/// span, a trace of its own) is linked to the trace of the order's `initiate_payment`
/// that the session kept, and its context is stored on the event, whose delivery
/// continues it ([`crate::store::Event::frame`]). The store call has a span that names
/// the order, never the payment id nor the page URL: the payment id is the page's
/// capability (whoever has it can pay or cancel), and the order id finds the session
/// as well (one per order). Without traces, no span is made and nothing is formatted.
async fn finish(
    state: &AppState,
    payment_id: PaymentId,
    action: Action,
) -> Result<Finished, StoreError> {
    let request = tracing::Span::current();
    let traceparent = trace_context::of(&request).map(|remote| remote.traceparent);
    let span = trace_context::traced(|| {
        tracing::info_span!(
            "page action",
            otel.name = action.span_name(),
            order_id = tracing::field::Empty,
        )
    });
    let store = state.store.clone();
    let work = async move {
        match action {
            Action::Complete => store.complete(payment_id, traceparent).await,
            Action::Cancel => store.cancel_by_customer(payment_id, traceparent).await,
        }
    };
    let PageFinished {
        finished,
        session_traceparent,
    } = off_arbiter(work.instrument(span.clone())).await?;
    if let Some(traceparent) = &session_traceparent {
        trace_context::add_link(&request, traceparent, None);
    }
    if let Finished::Now(event) | Finished::Already(event) = &finished {
        span.record("order_id", tracing::field::display(event.order_id));
    }
    Ok(finished)
}

/// Why a POST to the page must be refused as cross-site, if it must: CSRF protection
/// without cookies. Browsers say where a form was posted from in `Sec-Fetch-Site` (every
/// current one): only `same-origin` (the page's own forms) and `none` (the user's own
/// doing) pass. Without it (an older browser), `Origin` must be the host the request was
/// sent to or the configured public URL's; `Origin: null` is let through there, because
/// the page's `Referrer-Policy: no-referrer` makes browsers send exactly that for the
/// page's own forms. A request with neither header is not a browser's form (curl, a
/// test, a server): there is no ambient credential to abuse, the URL is the secret.
pub fn cross_site(req: &HttpRequest, public_url: &str) -> Option<&'static str> {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => None,
            b"same-site" => Some("Sec-Fetch-Site: same-site (another origin)"),
            b"cross-site" => Some("Sec-Fetch-Site: cross-site"),
            _ => Some("Sec-Fetch-Site has an unknown value"),
        };
    }
    let origin = headers.get(header::ORIGIN)?;
    let Ok(origin) = origin.to_str() else {
        return Some("the Origin header is not text");
    };
    if origin == "null" {
        return None;
    }
    let authority = |url: &str| -> Option<String> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))?;
        Some(
            rest.split('/')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase(),
        )
    };
    let Some(from) = authority(origin) else {
        return Some("the Origin is not http(s)");
    };
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .map(str::to_ascii_lowercase);
    if host.as_deref() == Some(from.as_str()) || authority(public_url).as_deref() == Some(&from) {
        None
    } else {
        Some("the Origin is another site")
    }
}

/// The headers of every answer under `/pay/`: never stored (the URL is a capability, and
/// the page shows the payment's state), never sent on as a referrer, never framed
/// (clickjacking of the Pay button), no script, styles only the page's own, forms only to
/// this origin.
static SECURITY_HEADERS: LazyLock<[(header::HeaderName, String); 6]> = LazyLock::new(|| {
    let style = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
    [
        (header::CACHE_CONTROL, "no-store".into()),
        (header::REFERRER_POLICY, "no-referrer".into()),
        (
            header::CONTENT_SECURITY_POLICY,
            format!(
                "default-src 'none'; style-src 'sha256-{style}'; form-action 'self'; \
                 frame-ancestors 'none'; base-uri 'none'"
            ),
        ),
        (header::X_FRAME_OPTIONS, "DENY".into()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin".into(),
        ),
    ]
});

fn page_response(status: StatusCode) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    for (name, value) in SECURITY_HEADERS.iter() {
        builder.insert_header((name.clone(), value.as_str()));
    }
    builder
}

fn see_other(payment_id: PaymentId) -> HttpResponse {
    page_response(StatusCode::SEE_OTHER)
        .insert_header((header::LOCATION, format!("/pay/{payment_id}")))
        .finish()
}

fn html_response(status: StatusCode, markup: Markup) -> HttpResponse {
    page_response(status)
        .content_type("text/html; charset=utf-8")
        .body(markup.into_string())
}

fn forbidden() -> HttpResponse {
    html_response(
        StatusCode::FORBIDDEN,
        layout(
            "Request refused",
            html! {
                h1 { "Request refused" }
                p.muted { "This form was not sent from the payment page. Nothing was charged. Please open the payment link again." }
            },
        ),
    )
}

fn not_found() -> HttpResponse {
    html_response(
        StatusCode::NOT_FOUND,
        layout(
            "Payment not found",
            html! {
                h1 { "Payment not found" }
                p.muted { "This payment link is not valid. Please return to the shop and try again." }
            },
        ),
    )
}

/// The page when the store failed. After a Pay or Cancel (`acting`) it cannot say
/// "nothing was charged": a write whose answer was lost may have been applied. It says
/// what is true: reload to see the outcome, and paying again never charges twice (the
/// second Pay of a session gets the first one's outcome). A writer refusing for load
/// (its queue full, or stopping) is a 503 with `Retry-After`; anything else a 500.
fn failed(e: &StoreError, acting: bool) -> HttpResponse {
    let overloaded = e.is_overload();
    let status = if overloaded {
        tracing::warn!(error = %error_chain(e), "payment page refused: overloaded or stopping");
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        tracing::error!(error = %error_chain(e), "payment page failed");
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let mut response = html_response(
        status,
        layout(
            "Something went wrong",
            html! {
                h1 { "Something went wrong" }
                @if acting {
                    p.muted { "We could not confirm this step. Reload this page in a moment to see whether it went through; paying again never charges twice." }
                } @else {
                    p.muted { "Please reload this page in a moment." }
                }
            },
        ),
    );
    if overloaded {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::cross_site;

    #[test]
    fn a_failed_pay_never_claims_nothing_was_charged() {
        use actix_web::body::MessageBody;
        use service_kit::group_commit;

        let body = |response: actix_web::HttpResponse| {
            String::from_utf8(response.into_body().try_into_bytes().unwrap().to_vec()).unwrap()
        };
        let timeout = crate::store::StoreError::Writer(group_commit::Error::Timeout {
            writer: "page finish",
            waited: std::time::Duration::from_secs(30),
        });
        let response = super::failed(&timeout, true);
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers().get("retry-after").unwrap(), "1");
        let html = body(response);
        assert!(!html.contains("Nothing was charged"), "{html}");
        assert!(html.contains("never charges twice"), "{html}");

        let broken = crate::store::StoreError::Corrupt("x".into());
        let response = super::failed(&broken, true);
        assert_eq!(response.status(), 500);
        assert!(!body(response).contains("Nothing was charged"));
    }

    #[test]
    fn only_forms_from_the_page_itself_pass_the_cross_site_check() {
        let public = "https://pay.example.com";
        let check = |headers: &[(&str, &str)]| {
            let mut req = actix_web::test::TestRequest::post()
                .uri("/pay/x/complete")
                .insert_header(("host", "127.0.0.1:8081"));
            for &(name, value) in headers {
                req = req.insert_header((name, value));
            }
            cross_site(&req.to_http_request(), public)
        };
        // Let through: not a browser; the page's own forms, current and older browsers.
        for ok in [
            &[][..],
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
            &[("sec-fetch-site", "same-origin"), ("origin", "null")],
            &[("origin", "null")],
            &[("origin", "http://127.0.0.1:8081")],
            &[("origin", "https://PAY.example.com")],
        ] {
            assert_eq!(check(ok), None, "{ok:?}");
        }
        // Refused: another site, whatever else the request says.
        for refused in [
            &[("sec-fetch-site", "cross-site")][..],
            &[("sec-fetch-site", "same-site")],
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "http://127.0.0.1:8081"),
            ],
            &[("origin", "https://evil.example")],
            &[("origin", "http://127.0.0.1:8082")],
            &[("origin", "http://127.0.0.1:8081.evil.example")],
            &[("origin", "file://")],
        ] {
            assert!(check(refused).is_some(), "{refused:?}");
        }
    }
}
