//! Traces as indented text: what a failed wait prints, and what a test can print to
//! see the shape of a trace.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use super::span::{Span, Status};

/// The trace `trace_id` of `spans` as a tree (see [`super::OtlpReceiver::render_tree`]);
/// `all` is every span received, to name the spans that links point at.
pub(crate) fn tree(all: &[Span], trace_id: &str) -> String {
    let mut members: Vec<&Span> = all.iter().filter(|s| s.trace_id == trace_id).collect();
    if members.is_empty() {
        return format!("trace {trace_id}: no spans received\n");
    }
    members.sort_by(|a, b| (a.start, &a.name).cmp(&(b.start, &b.name)));
    let ids: HashSet<&str> = members.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, span) in members.iter().enumerate() {
        match span.parent_span_id.as_deref() {
            Some(parent) if ids.contains(parent) => children.entry(parent).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let mut out = format!("trace {trace_id}  ({} spans)\n", members.len());
    let mut seen = vec![false; members.len()];
    // Spans in a parent cycle are nobody's descendants: shown as roots after the rest.
    let cyclic: Vec<usize> = (0..members.len()).collect();
    for start in roots.into_iter().chain(cyclic) {
        // An explicit stack: a chain of 100,000 spans must not overflow the thread's.
        let mut stack = vec![(start, 1)];
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            line(&mut out, members[i], depth, &ids, all);
            let kids = children.get(members[i].span_id.as_str());
            for &child in kids.into_iter().flatten().rev() {
                stack.push((child, depth + 1));
            }
        }
    }
    out
}

/// One span's line, then one line per link.
fn line(out: &mut String, span: &Span, depth: usize, ids: &HashSet<&str>, all: &[Span]) {
    let indent = "  ".repeat(depth);
    let _ = write!(
        out,
        "{indent}{}  [{}]  {}",
        span.name,
        span.service,
        duration(span.duration())
    );
    if let Status::Error(message) = &span.status {
        let _ = write!(out, "  ERROR: {message}");
    }
    if let Some(parent) = &span.parent_span_id
        && !ids.contains(parent.as_str())
    {
        let _ = write!(out, "  (parent {parent} not received)");
    }
    out.push('\n');
    for (trace_id, span_id) in &span.links {
        let _ = write!(out, "{indent}  ↪ linked from span {span_id}");
        match all
            .iter()
            .find(|s| &s.span_id == span_id && &s.trace_id == trace_id)
        {
            Some(linked) => {
                let _ = write!(out, " ({} [{}])", linked.name, linked.service);
            }
            None => out.push_str(" (not received)"),
        }
        let _ = writeln!(out, " of trace {trace_id}");
    }
}

/// Every trace in `spans`, in the order their first span started, at most `max_lines`
/// lines (saying how many more there were).
pub(crate) fn all(spans: &[Span], max_lines: usize) -> String {
    let mut first_start: HashMap<&str, u64> = HashMap::new();
    for span in spans {
        let start = first_start.entry(&span.trace_id).or_insert(span.start);
        *start = (*start).min(span.start);
    }
    let mut traces: Vec<(&str, u64)> = first_start.into_iter().collect();
    traces.sort_by_key(|&(id, start)| (start, id));
    let text = traces
        .iter()
        .map(|(id, _)| tree(spans, id))
        .collect::<Vec<_>>()
        .join("\n");
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= max_lines {
        return text;
    }
    let mut out = lines[..max_lines].join("\n");
    let _ = writeln!(out, "\n… and {} more lines", lines.len() - max_lines);
    out
}

/// `850 µs`, `12.3 ms`, `1.204 s`.
pub(crate) fn duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.3} s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{} µs", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::otlp::SpanKind;

    fn span(id: &str, parent: Option<&str>, name: &str, start: u64, end: u64) -> Span {
        Span {
            trace_id: "t1".into(),
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            name: name.into(),
            service: "svc".into(),
            scope: String::new(),
            kind: SpanKind::Internal,
            start,
            end,
            attributes: BTreeMap::new(),
            events: Vec::new(),
            links: Vec::new(),
            status: Status::Unset,
        }
    }

    #[test]
    fn children_are_ordered_by_start_under_their_parent() {
        let mut late = span("c2", Some("r"), "late", 30, 40);
        late.status = Status::Error("boom".into());
        late.links.push(("t0".into(), "x".into()));
        let spans = vec![
            late,
            span("r", None, "root", 0, 12_300_000),
            span("c1", Some("r"), "early", 10, 20),
            span("g", Some("c1"), "grandchild", 11, 12),
            span("o", Some("gone"), "orphan", 50, 60),
        ];
        assert_eq!(
            tree(&spans, "t1"),
            "trace t1  (5 spans)\n\
             \x20 root  [svc]  12.3 ms\n\
             \x20   early  [svc]  0 µs\n\
             \x20     grandchild  [svc]  0 µs\n\
             \x20   late  [svc]  0 µs  ERROR: boom\n\
             \x20     ↪ linked from span x (not received) of trace t0\n\
             \x20 orphan  [svc]  0 µs  (parent gone not received)\n"
        );
    }

    #[test]
    fn a_parent_cycle_is_still_shown() {
        let spans = vec![
            span("a", Some("b"), "a", 0, 1),
            span("b", Some("a"), "b", 1, 2),
        ];
        let text = tree(&spans, "t1");
        assert!(text.contains("  a  [svc]"), "{text}");
        assert!(text.contains("    b  [svc]"), "{text}");
    }

    #[test]
    fn long_listings_are_cut() {
        let spans: Vec<Span> = (0..10)
            .map(|i| span(&i.to_string(), None, "s", i, i))
            .collect();
        let text = all(&spans, 4);
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.ends_with("… and 7 more lines\n"), "{text}");
    }

    #[test]
    fn durations_have_a_readable_unit() {
        assert_eq!(duration(Duration::from_micros(850)), "850 µs");
        assert_eq!(duration(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(duration(Duration::from_millis(1204)), "1.204 s");
    }
}
