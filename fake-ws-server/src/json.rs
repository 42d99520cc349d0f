//! The partial-JSON matcher: [`json_includes!`](macro@crate::json_includes) and
//! [`Matcher::json_includes`], matching a message whose JSON contains an expected
//! value, as jest's `toMatchObject` and wiremock's `body_partial_json` do.

use serde::Serialize;
use serde_json::Value;

use crate::matcher::Matcher;

/// Whether `actual` includes `expected`, as [`json_includes!`](macro@crate::json_includes)
/// matches: an object includes every key of the expected object with a value that
/// includes the expected one (recursively, other keys are ignored); arrays and scalars
/// must be equal. Unlike jest's `toMatchObject`, an array is compared whole: `[1, 2]`
/// does not include `[1]`, and objects inside an array must be equal, not partial.
///
/// # Examples
///
/// ```
/// use fake_ws_server::json_includes;
/// use serde_json::json;
///
/// let message = json!({"type": "subscribe", "topics": ["btc"], "id": 7});
/// assert!(json_includes(&message, &json!({"type": "subscribe"})));
/// assert!(!json_includes(&message, &json!({"type": "unsubscribe"})));
/// assert!(json_includes(&message, &json!({"topics": ["btc"]})));
/// assert!(!json_includes(&message, &json!({"topics": []})));
/// ```
pub fn json_includes(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected
            .iter()
            .all(|(key, wanted)| actual.get(key).is_some_and(|v| json_includes(v, wanted))),
        _ => actual == expected,
    }
}

/// The old name of [`json_includes()`], kept for one release: one name for one thing,
/// the same as the [`json_includes!`](macro@crate::json_includes) matcher's.
#[deprecated(note = "use `json_includes`, the name the matcher has too")]
pub fn json_contains(actual: &Value, expected: &Value) -> bool {
    json_includes(actual, expected)
}

/// The JSON a message is compared as: the message serialised; a string that holds
/// JSON (a raw text frame, for `In = String`) is compared as that JSON.
pub(crate) fn as_json<In: Serialize>(message: &In) -> Option<Value> {
    match serde_json::to_value(message).ok()? {
        Value::String(text) => Some(serde_json::from_str(&text).unwrap_or(Value::String(text))),
        value => Some(value),
    }
}

impl<In: Serialize> Matcher<In> {
    /// Matches a message whose JSON includes `expected` (see [`json_includes()`]): for
    /// any `In` that serialises (typed messages, `serde_json::Value`, or `String` for
    /// raw text frames, whose text is parsed). A failed expectation with it shows a
    /// diff against the closest message. [`json_includes!`](macro@crate::json_includes)
    /// writes it with `json!` syntax.
    pub fn json_includes(expected: Value) -> Self {
        let description = format!("a message including {expected}");
        let wanted = expected.clone();
        Matcher::new(description, move |message: &In| {
            as_json(message).is_some_and(|actual| json_includes(&actual, &wanted))
        })
        .with_expected_json(expected)
    }
}

/// A [`Matcher`] for any serialisable message whose JSON contains the given value,
/// written as in `serde_json::json!`: objects match a subset of keys, recursively;
/// arrays and scalars must be equal. The message type comes from where it is used.
///
/// # Examples
///
/// ```no_run
/// # async fn example(conn: fake_ws_server::Connection<serde_json::Value, serde_json::Value>) {
/// use fake_ws_server::json_includes;
///
/// let subscribe = conn.expect(json_includes!({"type": "subscribe"})).await;
/// # }
/// ```
#[macro_export]
macro_rules! json_includes {
    ($($json:tt)+) => {
        $crate::Matcher::json_includes($crate::__private::serde_json::json!($($json)+))
    };
}
