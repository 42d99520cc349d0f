//! The writer task: frames to Payments, one at a time.

use std::time::Duration;

use awc::ws::Message;
use futures_util::SinkExt;
use shared_protocol::{ClientMessage, Message as _, TraceContext};
use tokio::sync::mpsc;

use super::Lost;
use super::connect::Framed;
use crate::metrics::Metrics;

/// The frame of a request, with the trace context it continues (if any), counted and
/// logged.
pub(super) fn text(
    metrics: &Metrics,
    message: &ClientMessage,
    trace: Option<&TraceContext>,
) -> Message {
    tracing::debug!(r#type = message.type_name(), order_id = ?message.order_id(), "sending to Payments");
    metrics.message("out", message.type_name());
    Message::Text(shared_protocol::encode_traced(message, trace).into())
}

/// Writes queued frames to the socket, flushing when the queue runs dry, until the
/// queue closes (then closes the socket) or a write fails or takes longer than
/// `timeout`. Returns why it stopped.
pub(super) async fn write(
    mut sink: futures_util::stream::SplitSink<Framed, Message>,
    mut queue: mpsc::Receiver<Message>,
    timeout: Duration,
) -> Lost {
    loop {
        let Some(first) = queue.recv().await else {
            let _ = tokio::time::timeout(timeout, sink.close()).await;
            return Lost::ClosedByUs;
        };
        let mut next = Some(first);
        let mut closing = false;
        while let Some(message) = next.take() {
            closing = matches!(message, Message::Close(_));
            match tokio::time::timeout(timeout, sink.feed(message)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Lost::Write(e.to_string()),
                Err(_) => return Lost::NotReading(timeout),
            }
            if closing {
                break;
            }
            next = queue.try_recv().ok();
        }
        match tokio::time::timeout(timeout, sink.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Lost::Write(e.to_string()),
            Err(_) => return Lost::NotReading(timeout),
        }
        if closing {
            let _ = tokio::time::timeout(timeout, sink.close()).await;
            return Lost::ClosedByUs;
        }
    }
}

/// Why the writer stopped, once it has.
pub(super) async fn writer_end(writer: &mut tokio::task::JoinHandle<Lost>) -> Lost {
    match writer.await {
        Ok(why) => why,
        Err(e) => Lost::WriterFailed(e.to_string()),
    }
}
