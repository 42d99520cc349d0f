//! What the payment page shows: the checkout markup for each session state, the money
//! as people read it, and the page's one stylesheet (its hash is in the page's CSP).

use maud::{DOCTYPE, Markup, PreEscaped, html};
use shared_protocol::{Amount, CancelReason, Currency};

use crate::store::{Session, SessionState};

pub(super) fn checkout(session: &Session) -> Markup {
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

pub(super) const STYLE: &str = r#"
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

pub(super) fn layout(title: &str, body: Markup) -> Markup {
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
    use super::{checkout, format_amount};
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
