//! An in-process OTLP/HTTP receiver for tests that assert the shape of the traces the
//! services export.
//!
//! [`OtlpReceiver::start`] listens on `127.0.0.1:0` and takes what an OpenTelemetry
//! exporter sends over OTLP/HTTP with protobuf: `POST /v1/traces`, an
//! `ExportTraceServiceRequest`, `Content-Type: application/x-protobuf`. Point a service
//! at it with `OTEL_EXPORTER_OTLP_ENDPOINT=<receiver.endpoint()>` (the exporter adds
//! `/v1/traces`), or an exporter built in the test with
//! `.with_endpoint(receiver.traces_url())` (a programmatic endpoint is used as is).
//!
//! ```no_run
//! # async fn example() {
//! use std::time::Duration;
//! use test_harness::otlp::OtlpReceiver;
//!
//! let receiver = OtlpReceiver::start().await;
//! // ... run the services with OTEL_EXPORTER_OTLP_ENDPOINT = receiver.endpoint() ...
//! let spans = receiver
//!     .wait_for(
//!         |spans| spans.iter().any(|s| s.service == "payments" && s.name == "ws.message"),
//!         Duration::from_secs(10),
//!     )
//!     .await
//!     .unwrap(); // on timeout: every trace received, as trees
//! let order = spans.iter().find(|s| s.name == "POST /orders").unwrap();
//! println!("{}", receiver.render_tree(&order.trace_id));
//! # }
//! ```
//!
//! Answers: 200 with an empty `ExportTraceServiceResponse` (a partial success naming
//! the spans dropped beyond the bound); 400 for a body that does not decode; 415 for
//! another content type (OTLP/JSON) or a `Content-Encoding` (gzip is not supported: the
//! services' exporter does not compress); 413 for a body over [`MAX_BODY_BYTES`]; 404
//! and 405 for other paths and methods. Refused requests are counted and the last one
//! is named in [`WaitError`]'s message.
//!
//! Bounded: it keeps the first [`MAX_SPANS`] spans (or the bound given to
//! [`OtlpReceiver::with_max_spans`]) and counts the rest as dropped, which renders and
//! failure messages say.
//!
//! The server runs on a thread of its own (actix-web in its own actix system), so it
//! answers under `#[tokio::test]` (either flavour), `#[actix_web::test]`, and while the
//! test's thread is blocked in an exporter's flush. [`OtlpReceiver::wait_for`] needs a
//! tokio runtime (for its deadline); it wakes on each export, it does not poll.

mod render;
mod server;
mod span;

use std::fmt;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::sync::watch;

pub use server::MAX_BODY_BYTES;
pub use span::{Span, SpanEvent, SpanKind, Status};

/// How many spans a receiver keeps by default; later ones are dropped and counted.
pub const MAX_SPANS: usize = 100_000;

/// How many lines of traces a [`WaitError`] lists at most.
const LISTED_LINES: usize = 200;

/// A receiver of OTLP/HTTP traces; stops when dropped. See the [module docs](self).
pub struct OtlpReceiver {
    shared: Arc<Shared>,
    port: u16,
    server: ServerHandle,
}

/// What the server thread and the test share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Bumped after each accepted export; [`OtlpReceiver::wait_for`] wakes on it.
    exports: watch::Sender<u64>,
    max_spans: usize,
}

#[derive(Default)]
struct State {
    spans: Vec<Span>,
    dropped: u64,
    exports: u64,
    refused: u64,
    last_refusal: Option<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A predicate that panicked under the lock poisons it; the spans are still fine.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the request's spans up to the bound; returns how many were dropped.
    fn record(&self, request: ExportTraceServiceRequest) -> u64 {
        let spans = span::flatten(request);
        let mut state = self.lock();
        let room = self.max_spans.saturating_sub(state.spans.len());
        let dropped = spans.len().saturating_sub(room) as u64;
        state.spans.extend(spans.into_iter().take(room));
        state.dropped += dropped;
        state.exports += 1;
        drop(state);
        self.exports.send_modify(|count| *count += 1);
        dropped
    }

    fn refuse(&self, why: String) {
        let mut state = self.lock();
        state.refused += 1;
        state.last_refusal = Some(why);
    }
}

impl OtlpReceiver {
    /// Listens on `127.0.0.1:0`, keeping at most [`MAX_SPANS`] spans.
    pub async fn start() -> Self {
        Self::with_max_spans(MAX_SPANS).await
    }

    /// Listens on `127.0.0.1:0`, keeping at most `max_spans` spans.
    pub async fn with_max_spans(max_spans: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            exports: watch::Sender::new(0),
            max_spans,
        });
        let server = server::spawn(shared.clone(), listener).await;
        OtlpReceiver {
            shared,
            port,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`: the value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT/v1/traces`: for an exporter's `with_endpoint` (or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), which are used as they are.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint())
    }

    /// Every span kept so far, in the order received.
    pub fn spans(&self) -> Vec<Span> {
        self.shared.lock().spans.clone()
    }

    /// The spans of trace `trace_id` (32 hex digits), in the order received.
    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        let state = self.shared.lock();
        let spans = state.spans.iter().filter(|s| s.trace_id == trace_id);
        spans.cloned().collect()
    }

    /// How many spans were dropped because the receiver held its bound already.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }

    /// Waits until `condition` holds for the spans kept so far, checking now and after
    /// each export, for at most `within`; returns the spans it held for. On timeout the
    /// error lists every trace received (as [`render_tree`](Self::render_tree) does),
    /// what was dropped or refused; `.unwrap()` prints that readably. `condition` runs
    /// while the receiver is locked: keep it quick.
    pub async fn wait_for(
        &self,
        condition: impl Fn(&[Span]) -> bool,
        within: Duration,
    ) -> Result<Vec<Span>, WaitError> {
        let deadline = tokio::time::Instant::now() + within;
        let mut exports = self.shared.exports.subscribe();
        loop {
            // Marked seen before the check: an export after it wakes the wait below.
            exports.mark_unchanged();
            {
                let state = self.shared.lock();
                if condition(&state.spans) {
                    return Ok(state.spans.clone());
                }
            }
            match tokio::time::timeout_at(deadline, exports.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(self.timed_out(within)),
            }
        }
    }

    /// The trace `trace_id` as an indented tree: a header, then one line per span,
    /// `name  [service]  12.3 ms` (plus `ERROR: message` for an error status, or a
    /// note when its parent was not received), children under their parent ordered by
    /// start, and under each span one line per link, `↪ linked from span <id> (name
    /// [service]) of trace <id>`. Ends with a note if spans were dropped.
    pub fn render_tree(&self, trace_id: &str) -> String {
        let state = self.shared.lock();
        let mut out = render::tree(&state.spans, trace_id);
        out.push_str(&self.dropped_note(&state));
        out
    }

    /// Every trace received, as [`render_tree`](Self::render_tree) shows one, in the
    /// order their first span started.
    pub fn render(&self) -> String {
        let state = self.shared.lock();
        let mut out = render::all(&state.spans, usize::MAX);
        out.push_str(&self.dropped_note(&state));
        out
    }

    fn dropped_note(&self, state: &State) -> String {
        if state.dropped == 0 {
            return String::new();
        }
        format!(
            "({} spans dropped: the receiver keeps at most {})\n",
            state.dropped, self.shared.max_spans
        )
    }

    fn timed_out(&self, within: Duration) -> WaitError {
        let state = self.shared.lock();
        let mut message = format!(
            "the spans did not satisfy the condition within {within:?}: the OTLP receiver at \
             {} kept {} spans from {} exports",
            self.endpoint(),
            state.spans.len(),
            state.exports
        );
        if state.dropped > 0 {
            message.push_str(&format!(
                ", dropped {} beyond its bound of {}",
                state.dropped, self.shared.max_spans
            ));
        }
        if let Some(last) = &state.last_refusal {
            message.push_str(&format!(
                ", refused {} requests (the last: {last})",
                state.refused
            ));
        }
        if state.spans.is_empty() {
            message.push_str(
                ". None came: is OTEL_EXPORTER_OTLP_ENDPOINT set to the receiver's \
                 endpoint(), and were the spans flushed (a batch exporter sends every \
                 5 s, or at shutdown)?",
            );
        } else {
            message.push_str(":\n");
            message.push_str(&render::all(&state.spans, LISTED_LINES));
        }
        WaitError {
            message,
            spans: state.spans.clone(),
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        // The stop command is sent by the call; no waiting for it in a drop.
        drop(self.server.stop(false));
    }
}

impl fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("OtlpReceiver")
            .field("endpoint", &self.endpoint())
            .field("spans", &state.spans.len())
            .field("dropped", &state.dropped)
            .field("refused", &state.refused)
            .finish()
    }
}

/// [`OtlpReceiver::wait_for`] ran out of time. Its `Debug` is its message, so that
/// `.unwrap()` shows the traces as trees.
pub struct WaitError {
    message: String,
    /// The spans received by then.
    pub spans: Vec<Span>,
}

impl fmt::Debug for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WaitError {}
