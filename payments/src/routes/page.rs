//! The hosted payment page: `GET /pay/{payment_id}` and its two forms, Pay and Cancel.
//! Both POSTs answer `303 See Other` back to the page, which then shows the outcome
//! (post/redirect/get, so a reload never pays twice). HTML comes from maud, which
//! escapes every interpolated value.
//!
//! The page's URL is a bearer capability: whoever has it can pay or cancel. So every
//! answer under `/pay/` is kept out of caches and referrers, cannot be framed, and runs
//! no script ([`SECURITY_HEADERS`]); and the two POSTs refuse a request a browser marks
//! as coming from another site ([`cross_site`]): CSRF protection without cookies.

use std::sync::LazyLock;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use base64::Engine;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use service_kit::error_chain;
use sha2::Digest;
use shared_protocol::{Amount, CancelReason, Currency, PaymentId};

use crate::state::AppState;
use crate::store::{Finished, Session, SessionState, StoreError, off_arbiter};

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

enum Action {
    Complete,
    Cancel,
}

async fn act(req: &HttpRequest, raw: &str, state: &AppState, action: Action) -> HttpResponse {
    if let Some(why) = cross_site(req, &state.public_url) {
        tracing::warn!(why, "refused a payment form posted from another site");
        return forbidden();
    }
    let Ok(payment_id) = PaymentId::parse(raw) else {
        return not_found();
    };
    let store = state.store.clone();
    let result = off_arbiter(async move {
        match action {
            Action::Complete => store.complete(payment_id).await,
            Action::Cancel => store.cancel_by_customer(payment_id).await,
        }
    })
    .await;
    match result {
        Ok(Finished::Unknown) => not_found(),
        Ok(Finished::Now(event)) => {
            tracing::info!(%payment_id, order_id = %event.order_id, event_id = %event.event_id, state = ?event.state, "customer finished the payment");
            see_other(payment_id)
        }
        Ok(Finished::Already(_) | Finished::NotApplicable(_)) => see_other(payment_id),
        Err(e) => failed(&e, true),
    }
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

fn checkout(session: &Session) -> Markup {
    let amount = format_amount(session.amount, session.currency);
    let expired = session.expires_at <= chrono::Utc::now();
    layout(
        &format!("Pay {amount}"),
        html! {
            p.brand { "Secure checkout" }
            p.label { "Amount due" }
            p #amount .amount { (amount) }
            dl {
                dt { "Currency" } dd #currency { (session.currency) }
                dt { "Payment method" } dd #method { (method_name(session.method.as_deref())) }
                dt { "Order" } dd #order .mono { (session.order_id) }
            }
            @match session.state {
                SessionState::MethodSelected if !expired => {
                    div.actions {
                        form method="post" action={ "/pay/" (session.payment_id) "/complete" } {
                            button #pay .primary type="submit" { "Pay " (amount) }
                        }
                        form method="post" action={ "/pay/" (session.payment_id) "/cancel" } {
                            button #cancel .secondary type="submit" { "Cancel" }
                        }
                    }
                    p.muted { "This page expires at " (session.expires_at.format("%H:%M UTC on %d %b %Y")) "." }
                }
                SessionState::MethodSelected | SessionState::Initiated if expired => {
                    p #status .status.cancelled { "This payment has expired." }
                }
                SessionState::Initiated => {
                    p #status .status { "Choose a payment method in the shop first." }
                }
                SessionState::Fulfilled => {
                    p #status .status.paid { "✓ Paid. Thank you!" }
                }
                SessionState::Cancelled => {
                    p #status .status.cancelled { (cancelled_text(session.cancel_reason)) }
                }
                _ => {}
            }
        },
    )
}

fn cancelled_text(reason: Option<CancelReason>) -> &'static str {
    match reason {
        Some(CancelReason::Customer) => "Payment cancelled. You have not been charged.",
        Some(CancelReason::Expired) => "This payment has expired. You have not been charged.",
        Some(CancelReason::OrdersCancelled) => {
            "The shop cancelled this payment. You have not been charged."
        }
        None => "Payment cancelled. You have not been charged.",
    }
}

fn method_name(method: Option<&str>) -> String {
    match method {
        Some("credit_card") => "Credit card".into(),
        Some("paypal") => "PayPal".into(),
        Some("bank_transfer") => "Bank transfer".into(),
        Some(other) => other.replace('_', " "),
        None => "Not chosen yet".into(),
    }
}

/// The number of minor-unit digits of a currency (ISO 4217); 2 unless listed.
fn exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// An amount as people read it: `€19.99`, `$5.00`, `¥500`, `12.345 KWD`.
pub fn format_amount(amount: Amount, currency: Currency) -> String {
    let currency = currency.as_str();
    let digits = exponent(currency);
    // An amount is positive (shared_protocol::Amount).
    let minor = amount.minor().unsigned_abs();
    let scale = 10u64.pow(digits);
    let whole = group_thousands(minor / scale);
    let number = if digits == 0 {
        whole
    } else {
        format!("{whole}.{:0width$}", minor % scale, width = digits as usize)
    };
    match currency {
        "EUR" => format!("€{number}"),
        "USD" => format!("${number}"),
        "GBP" => format!("£{number}"),
        "JPY" => format!("¥{number}"),
        _ => format!("{number} {currency}"),
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;
  font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
  background:linear-gradient(135deg,#eef2ff 0%,#f8fafc 60%);color:#0f172a}
main{width:100%;max-width:420px;margin:24px;background:#fff;border-radius:16px;
  box-shadow:0 10px 30px rgba(15,23,42,.10);padding:32px}
.brand{margin:0 0 24px;font-weight:600;color:#4f46e5;letter-spacing:.02em}
.label{margin:0;color:#64748b;font-size:14px}
.amount{margin:4px 0 24px;font-size:40px;font-weight:700;letter-spacing:-.02em}
dl{display:grid;grid-template-columns:auto 1fr;gap:8px 16px;margin:0 0 28px;font-size:14px}
dt{color:#64748b}dd{margin:0;text-align:right}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;word-break:break-all}
.actions{display:flex;flex-direction:column;gap:10px}
.actions form{margin:0}
button{width:100%;padding:14px;border-radius:10px;font-size:16px;font-weight:600;cursor:pointer;border:1px solid transparent}
.primary{background:#4f46e5;color:#fff}.primary:hover{background:#4338ca}
.secondary{background:#fff;color:#334155;border-color:#cbd5e1}.secondary:hover{background:#f1f5f9}
.muted{color:#64748b;font-size:13px;margin:16px 0 0}
.status{padding:14px;border-radius:10px;background:#f1f5f9;font-weight:600;margin:0}
.paid{background:#dcfce7;color:#166534}.cancelled{background:#fee2e2;color:#991b1b}
h1{font-size:22px;margin:0 0 8px}
"#;

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { main { (body) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{checkout, cross_site, format_amount};

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
    use crate::store::{Session, SessionState};
    use shared_protocol::{Amount, Currency, OrderId, PaymentId};

    #[test]
    fn amounts_are_formatted_for_people() {
        let format = |minor, currency| {
            format_amount(
                Amount::new(minor).unwrap(),
                Currency::parse(currency).unwrap(),
            )
        };
        assert_eq!(format(1999, "EUR"), "€19.99");
        assert_eq!(format(5, "USD"), "$0.05");
        assert_eq!(format(123_456_789, "GBP"), "£1,234,567.89");
        assert_eq!(format(500, "JPY"), "¥500");
        assert_eq!(format(12_345, "KWD"), "12.345 KWD");
        assert_eq!(format(1000, "CHF"), "10.00 CHF");
    }

    #[test]
    fn every_value_on_the_page_is_escaped() {
        // The store only holds validated values, but the page must not rely on it. (The
        // amount and currency are types that cannot hold markup; the method is text.)
        let session = Session {
            payment_id: PaymentId::new(),
            order_id: OrderId::new(),
            amount: Amount::new(1999).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            state: SessionState::MethodSelected,
            method: Some(r#"<script>alert("x")</script>"#.into()),
            cancel_reason: None,
            expires_at: chrono::Utc::now() + chrono::Duration::minutes(15),
        };
        let html = checkout(&session).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
}
