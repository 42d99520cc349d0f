//! The W3C Trace Context a message may carry (`traceparent`, `tracestate`), so one
//! trace follows an order across the link.
//!
//! Both fields are optional on every message and sit next to `type` at the top level of
//! the JSON object; [`crate::decode_traced`] reads them and [`crate::encode_traced`]
//! writes them. A peer that leaves them out, or sends a malformed one, still works: the
//! receiver drops what it cannot parse and never answers an error for it. This module
//! only checks the text format of W3C Trace Context level 1; turning it into a span's
//! parent is the services' business, so this crate needs no OpenTelemetry.

/// The longest `tracestate` kept (W3C Trace Context: 512 characters).
pub const MAX_TRACESTATE_LEN: usize = 512;

/// The length of a version-00 `traceparent`: `2-32-16-2` hex digits and three dashes.
const TRACEPARENT_LEN: usize = 55;

/// A valid W3C `traceparent`, and the `tracestate` that came with it if that was valid too.
///
/// Only [`TraceContext::parse`] makes one, so holding one means the text is well-formed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceContext {
    traceparent: String,
    tracestate: Option<String>,
}

impl TraceContext {
    /// Parses a `traceparent` (and its `tracestate`) as a receiver must.
    ///
    /// `traceparent` is `version-traceid-parentid-flags` in lower-case hex, 2-32-16-2
    /// digits. Version `ff` is invalid, and so is an all-zero trace id or parent id.
    /// Version `00` is exactly 55 characters; a later version may carry more after a
    /// further `-`, of which only the first 55 characters are kept. Anything else is
    /// `None`.
    ///
    /// `tracestate` is kept when it is at most [`MAX_TRACESTATE_LEN`] characters of
    /// printable ASCII and not empty; otherwise it is dropped and the `traceparent`
    /// still stands.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let traceparent = valid_traceparent(traceparent)?;
        let tracestate = tracestate.filter(|s| valid_tracestate(s));
        Some(TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate.map(str::to_owned),
        })
    }

    /// The `traceparent`: `version-traceid-parentid-flags`, 55 characters.
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// The vendors' `tracestate`, if one came with the `traceparent` and was valid.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// Whether the sender sampled its trace: the `sampled` bit of the flags.
    pub fn sampled(&self) -> bool {
        // `parse` checked that the flags are two lower-case hex digits.
        u8::from_str_radix(&self.traceparent[53..55], 16).is_ok_and(|flags| flags & 1 == 1)
    }
}

/// The 55 characters of a valid `traceparent`, or `None`.
fn valid_traceparent(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    if bytes.len() < TRACEPARENT_LEN {
        return None;
    }
    let (head, tail) = bytes.split_at(TRACEPARENT_LEN);
    let version = &head[0..2];
    let trace_id = &head[3..35];
    let parent_id = &head[36..52];
    let flags = &head[53..55];
    let dashes = head[2] == b'-' && head[35] == b'-' && head[52] == b'-';
    let hex = [version, trace_id, parent_id, flags]
        .iter()
        .all(|field| field.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    if !dashes || !hex || version == b"ff" {
        return None;
    }
    if trace_id.iter().all(|&b| b == b'0') || parent_id.iter().all(|&b| b == b'0') {
        return None;
    }
    // Version 00 is exactly 55 characters; a later one may go on, after a dash.
    let rest_ok = match (version, tail.first()) {
        (_, None) => true,
        (b"00", Some(_)) => false,
        (_, Some(&b)) => b == b'-',
    };
    // `head` is ASCII (checked above), so 55 bytes end on a character boundary.
    rest_ok.then(|| &text[..TRACEPARENT_LEN])
}

fn valid_tracestate(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_TRACESTATE_LEN
        && text.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_is_valid() {
        let trace = TraceContext::parse(VALID, Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"))
            .expect("valid");
        assert_eq!(trace.traceparent(), VALID);
        assert_eq!(
            trace.tracestate(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        assert!(trace.sampled());
        let unsampled = VALID.replace("-01", "-00");
        let unsampled = TraceContext::parse(&unsampled, None).expect("valid");
        assert!(!unsampled.sampled());
        // Only the lowest bit says "sampled"; the others are for later versions.
        let other_flags = VALID.replace("-01", "-fe");
        assert!(!TraceContext::parse(&other_flags, None).unwrap().sampled());
        let both = VALID.replace("-01", "-03");
        assert!(TraceContext::parse(&both, None).unwrap().sampled());
    }

    #[test]
    fn a_malformed_traceparent_is_none() {
        let cases = [
            "",
            "00",
            // One character short, one too many.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
            // Version 00 with anything after it, even a dash.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // Upper-case hex anywhere.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            // Not hex.
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            // Wrong separators, wrong field widths.
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e47360-0f067aa0ba902b7-01",
            "000-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff, even when otherwise well-formed.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
            // A future version must continue with a dash.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // Surrounding whitespace is not trimmed.
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
            // Multi-byte characters where hex should be (and across byte 55).
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
        ];
        for case in cases {
            assert_eq!(TraceContext::parse(case, Some("a=b")), None, "{case:?}");
        }
    }

    #[test]
    fn a_future_version_keeps_its_first_55_characters() {
        let future =
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        let trace = TraceContext::parse(future, None).expect("a later version parses");
        assert_eq!(trace.traceparent(), &future[..55]);
        let exact = "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09";
        assert_eq!(
            TraceContext::parse(exact, None).unwrap().traceparent(),
            exact
        );
    }

    #[test]
    fn a_bad_tracestate_is_dropped_and_the_traceparent_kept() {
        let too_long = "k=".to_owned() + &"v".repeat(MAX_TRACESTATE_LEN - 1);
        let longest = "k=".to_owned() + &"v".repeat(MAX_TRACESTATE_LEN - 2);
        for (state, kept) in [
            (too_long.as_str(), false),
            (longest.as_str(), true),
            ("", false),
            ("k=v\n", false),
            ("k=\u{7f}", false),
            ("k=é", false),
            ("k=v, other=w", true),
        ] {
            let trace = TraceContext::parse(VALID, Some(state)).expect("traceparent kept");
            assert_eq!(trace.traceparent(), VALID);
            assert_eq!(trace.tracestate().is_some(), kept, "{state:?}");
        }
        assert_eq!(TraceContext::parse(VALID, None).unwrap().tracestate(), None);
    }
}
