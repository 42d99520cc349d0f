//! The closest candidate of a failed expectation, as jest-websocket-mock shows it: of
//! the client's messages no expectation took yet, the one whose JSON is most like what
//! the matcher expected ([`Matcher::expected_json`]), with a line diff of the two.

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use super::state::ConnState;
use crate::matcher::Matcher;
use crate::transcript::FrameKind;

/// The diff against the closest message not yet taken, or `None` when the matcher says
/// nothing of the JSON it expects or no message is a candidate.
pub(super) fn closest_diff<In>(conn: &ConnState<In>, matcher: &Matcher<In>) -> Option<String> {
    let expected = matcher.expected_json()?;
    let expected = pretty(expected);
    let (entry, actual) = conn
        .inbound
        .iter()
        .filter(|i| !i.consumed)
        .filter_map(|i| match &conn.transcript[i.entry].frame {
            FrameKind::Text(text) => serde_json::from_str::<Value>(text)
                .ok()
                .map(|json| (i.entry, pretty(&json))),
            _ => None,
        })
        .max_by(|(_, a), (_, b)| {
            let (a, b) = (similarity(&expected, a), similarity(&expected, b));
            a.total_cmp(&b)
        })?;
    Some(format!(
        "the closest message not yet taken (at {:.3}s), against what was expected (- expected, + received):\n{}",
        conn.transcript[entry].at.as_secs_f64(),
        diff(&expected, &actual)
    ))
}

/// Pretty JSON: one line a key, so the diff points at the key that differs.
pub(super) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn similarity(a: &str, b: &str) -> f32 {
    TextDiff::from_lines(a, b).ratio()
}

/// A line diff, one line a line of pretty JSON: `-` only expected, `+` only received.
pub(super) fn diff(expected: &str, actual: &str) -> String {
    TextDiff::from_lines(expected, actual)
        .iter_all_changes()
        .map(|change| {
            let sign = match change.tag() {
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
                ChangeTag::Equal => ' ',
            };
            format!("    {sign} {}", change.value().trim_end_matches('\n'))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
