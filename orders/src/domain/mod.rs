//! The order's types and rules: what a valid new order is, the states an order moves
//! through, and the JSON shapes of HTTP-API.md.
//!
//! Values are parsed once, at the edge ([`NewOrder::parse`]), into newtypes; the rest
//! of the service never re-validates them. The order's life, its states and what moves
//! it between them, is `order_status`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared_protocol::{Amount, CancelReason, Currency, OrderId};

mod order_status;

pub use order_status::{OrderEvent, OrderStatus};

/// The largest amount an order may have, in minor units.
pub const MAX_AMOUNT: i64 = 100_000_000;
/// The longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// The longest payment method name Orders stores (`orders.payment_method`'s CHECK).
pub const MAX_METHOD_CHARS: usize = 200;
/// The longest payment page URL Orders stores and hands to the customer.
pub const MAX_PAYMENT_URL_CHARS: usize = 2048;

/// Why Orders will not store what Payments offered as methods: the first one, which
/// Orders selects, must be 1 to [`MAX_METHOD_CHARS`] characters long.
pub fn check_offered_methods(methods: &[String]) -> Result<(), String> {
    let len = methods.first().map_or(0, |m| m.chars().count());
    if (1..=MAX_METHOD_CHARS).contains(&len) {
        Ok(())
    } else {
        Err(format!(
            "the first payment method is {len} characters long; Orders takes 1 to {MAX_METHOD_CHARS}"
        ))
    }
}

/// Why Orders will not store `url` as an order's payment page and give it to the
/// customer: it must be an `http` or `https` URL with a host, of at most
/// [`MAX_PAYMENT_URL_CHARS`] characters, without spaces or control characters.
pub fn check_payment_url(url: &str) -> Result<(), String> {
    let len = url.chars().count();
    if len > MAX_PAYMENT_URL_CHARS {
        return Err(format!(
            "the payment page URL is {len} characters long; Orders takes up to {MAX_PAYMENT_URL_CHARS}"
        ));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("the payment page URL is not an http or https URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Err("the payment page URL has no host".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the payment page URL holds spaces or control characters".into());
    }
    Ok(())
}

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Order {
    #[schema(value_type = String, format = Uuid)]
    pub id: OrderId,
    /// In minor units (cents).
    #[schema(value_type = i64)]
    pub amount: Amount,
    /// ISO 4217, upper case.
    #[schema(value_type = String)]
    pub currency: Currency,
    pub description: Option<String>,
    pub status: OrderStatus,
    /// Null until a method is selected.
    pub payment_method: Option<String>,
    /// Null until Payments sent the page.
    pub payment_url: Option<String>,
    /// `customer`, `expired` or `orders_cancelled` once cancelled.
    #[schema(value_type = Option<String>)]
    pub cancel_reason: Option<CancelReason>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Null while nothing went wrong. Set when Payments refused a request about the
    /// order, or reported something the order could not take: a person should look.
    pub attention: Option<Attention>,
}

/// What went wrong with an order that a person should know about (beyond HTTP-API.md's
/// shape, which it extends with this one field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Attention {
    /// How many times Payments refused this order's request (an `error` other than
    /// `internal`), since it was created or last retried.
    pub payment_attempts: i32,
    /// The last refusal, `code: message`.
    pub last_payment_error: Option<String>,
    /// When Orders stopped re-sending the order's request after too many refusals
    /// (`MAX_PAYMENT_ATTEMPTS`); `POST /orders/{id}/retry` sends it again. The status
    /// stays open: nothing was paid or cancelled.
    pub parked_at: Option<DateTime<Utc>>,
    /// How many incidents were recorded (`GET /orders/{id}/incidents`): outcomes from
    /// Payments the order could not take, acked and left for a person.
    pub incidents: i32,
}

impl Attention {
    /// `None` when nothing needs a person.
    pub fn of(
        payment_attempts: i32,
        last_payment_error: Option<String>,
        parked_at: Option<DateTime<Utc>>,
        incidents: i32,
    ) -> Option<Attention> {
        (payment_attempts > 0 || parked_at.is_some() || incidents > 0).then_some(Attention {
            payment_attempts,
            last_payment_error,
            parked_at,
            incidents,
        })
    }
}

/// An outcome from Payments that the order could not take; the order was left as it
/// was, and the event acked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Incident {
    /// `contradicting_outcome` (the order is final the other way) or
    /// `payment_id_mismatch` (the outcome is for another payment than the order's).
    pub kind: String,
    /// The `event_id` of the `payment_state`.
    pub event_id: i64,
    pub detail: String,
    pub created_at: DateTime<Utc>,
}

/// An invoice as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Invoice {
    /// `INV-000001`, unique and increasing.
    pub number: String,
    #[schema(value_type = String, format = Uuid)]
    pub order_id: OrderId,
    #[schema(value_type = i64)]
    pub amount: Amount,
    #[schema(value_type = String)]
    pub currency: Currency,
    pub issued_at: DateTime<Utc>,
}

/// `INV-000001`: the invoice number as people read it.
pub fn invoice_number(n: i64) -> String {
    format!("INV-{n:06}")
}

/// A validated request to create an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub amount: Amount,
    pub currency: Currency,
    pub description: Option<String>,
}

/// A field that failed validation, and why (the message names the field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

impl NewOrder {
    /// Validates the JSON object of `POST /orders`. Unknown fields are ignored.
    pub fn parse(body: &serde_json::Map<String, Value>) -> Result<NewOrder, FieldError> {
        Ok(NewOrder {
            amount: parse_amount(body.get("amount"))?,
            currency: parse_currency(body.get("currency"))?,
            description: parse_description(body.get("description"))?,
        })
    }
}

/// `amount`: required, an integer number of minor units from 1 to [`MAX_AMOUNT`].
fn parse_amount(value: Option<&Value>) -> Result<Amount, FieldError> {
    match value {
        None | Some(Value::Null) => Err(FieldError::new("amount", "amount is required")),
        // `1999.0` is the integer 1999 too (as in JSON Schema, which the OpenAPI
        // document states the field in); `19.99` is not.
        Some(Value::Number(n)) => match n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_AMOUNT as f64)
                .map(|f| f as i64)
        }) {
            Some(a) if (1..=MAX_AMOUNT).contains(&a) => {
                Amount::new(a).map_err(|e| FieldError::new("amount", e.to_string()))
            }
            _ => Err(FieldError::new(
                "amount",
                format!(
                    "amount must be an integer number of minor units from 1 to {MAX_AMOUNT}, got {n}"
                ),
            )),
        },
        Some(other) => Err(FieldError::new(
            "amount",
            format!("amount must be an integer, got {}", kind(other)),
        )),
    }
}

/// `currency`: required, the ISO 4217 code of a current currency with minor units.
fn parse_currency(value: Option<&Value>) -> Result<Currency, FieldError> {
    match value {
        None | Some(Value::Null) => Err(FieldError::new("currency", "currency is required")),
        Some(Value::String(s)) => Currency::parse_lenient(s).map_err(|_| {
            FieldError::new(
                "currency",
                format!(
                    "currency must be the ISO 4217 code of a current currency with minor \
                     units, such as \"EUR\", got {s:?}"
                ),
            )
        }),
        Some(other) => Err(FieldError::new(
            "currency",
            format!("currency must be a string, got {}", kind(other)),
        )),
    }
}

/// `description`: optional, at most [`MAX_DESCRIPTION_CHARS`] characters.
fn parse_description(value: Option<&Value>) -> Result<Option<String>, FieldError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_DESCRIPTION_CHARS => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(FieldError::new(
            "description",
            format!("description must be at most {MAX_DESCRIPTION_CHARS} characters"),
        )),
        Some(other) => Err(FieldError::new(
            "description",
            format!("description must be a string, got {}", kind(other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NewOrder, FieldError> {
        NewOrder::parse(v.as_object().unwrap())
    }

    #[test]
    fn a_payment_page_is_an_http_url_of_bounded_length() {
        for good in [
            "https://pay.example/pay/d712",
            "http://127.0.0.1:8081/pay/d712?x=1",
            &format!(
                "https://p.example/{}",
                "a".repeat(MAX_PAYMENT_URL_CHARS - 18)
            ),
        ] {
            assert_eq!(check_payment_url(good), Ok(()), "{good}");
        }
        for bad in [
            "javascript:alert(1)",
            "ftp://pay.example/x",
            "https:///nohost",
            "https://",
            "//pay.example/x",
            "https://pay.example/a b",
            "https://pay.example/\u{7}",
            "",
            &format!("https://p.example/{}", "a".repeat(MAX_PAYMENT_URL_CHARS)),
        ] {
            assert!(check_payment_url(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_first_offered_method_must_fit_the_column() {
        let offer = |first: &str| check_offered_methods(&[first.to_owned(), "paypal".into()]);
        assert_eq!(offer("credit_card"), Ok(()));
        assert_eq!(offer(&"é".repeat(MAX_METHOD_CHARS)), Ok(()));
        assert!(offer(&"x".repeat(MAX_METHOD_CHARS + 1)).is_err());
        assert!(offer("").is_err());
        assert!(check_offered_methods(&[]).is_err());
    }

    #[test]
    fn a_valid_order_is_parsed_and_currency_upper_cased() {
        let o =
            parse(json!({"amount": 1999, "currency": "eur", "description": "2 × coffee", "x": 1}))
                .unwrap();
        assert_eq!(o.amount.minor(), 1999);
        assert_eq!(o.currency.as_str(), "EUR");
        assert_eq!(o.description.as_deref(), Some("2 × coffee"));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (json!({"currency": "EUR"}), "amount"),
            (json!({"amount": 0, "currency": "EUR"}), "amount"),
            (json!({"amount": -1, "currency": "EUR"}), "amount"),
            (json!({"amount": 100_000_001, "currency": "EUR"}), "amount"),
            (json!({"amount": 19.99, "currency": "EUR"}), "amount"),
            (json!({"amount": 1e300, "currency": "EUR"}), "amount"),
            (json!({"amount": 0.0, "currency": "EUR"}), "amount"),
            (json!({"amount": -5.0, "currency": "EUR"}), "amount"),
            (json!({"amount": "1999", "currency": "EUR"}), "amount"),
            (json!({"amount": 1999}), "currency"),
            (json!({"amount": 1999, "currency": "EURO"}), "currency"),
            (json!({"amount": 1999, "currency": 978}), "currency"),
            (
                json!({"amount": 1999, "currency": "EUR", "description": 5}),
                "description",
            ),
            (
                json!({"amount": 1999, "currency": "EUR", "description": "x".repeat(501)}),
                "description",
            ),
        ];
        for (body, field) in cases {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(err.field, field, "{body}");
            assert!(err.message.contains(field), "{}", err.message);
        }
    }

    #[test]
    fn an_integral_number_written_with_a_fraction_is_that_integer() {
        // JSON Schema's `integer` (the OpenAPI document's type) includes 1999.0.
        let o = parse(json!({"amount": 1999.0, "currency": "EUR"})).unwrap();
        assert_eq!(o.amount.minor(), 1999);
        assert!(parse(json!({"amount": 1e8, "currency": "EUR"})).is_ok());
    }

    #[test]
    fn limits_are_inclusive() {
        assert!(parse(json!({"amount": MAX_AMOUNT, "currency": "EUR"})).is_ok());
        assert!(
            parse(json!({"amount": 1, "currency": "EUR", "description": "é".repeat(500)})).is_ok()
        );
    }

    #[test]
    fn invoice_numbers_are_padded() {
        assert_eq!(invoice_number(1), "INV-000001");
        assert_eq!(invoice_number(1234567), "INV-1234567");
    }
}
