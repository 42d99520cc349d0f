//! The `/ws` endpoint: the handshake checks (token, subprotocol) and one `select!` loop
//! per connection over frames from Orders, events to deliver, a heartbeat, the
//! peer's silence deadline and shutdown.
//!
//! Only the frame reader (actix-ws' stream is `!Send`) runs on the actix arbiter; the
//! loop, and with it every database call, is a tokio task, so a stopping server never
//! drops a checked-out pool connection outside the runtime. On shutdown the loop closes
//! with 1001 before its last database write, and lets go of the frames so that the
//! HTTP connection ends whatever the database does.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use shared_protocol::{
    ClientMessage, DecodeError, MAX_MESSAGE_BYTES, Message, SUBPROTOCOL, ServerMessage,
};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};
use uuid::Uuid;

use crate::protocol::{self, Context, error_chain};
use crate::startup::AppState;

/// `GET /ws`: 401 without the token, 400 without the subprotocol, else 101.
pub async fn endpoint(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let expected = format!("Bearer {}", state.config.payments_token);
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| constant_time_eq(v.trim().as_bytes(), expected.as_bytes()));
    if !authorized {
        tracing::warn!(peer = ?req.peer_addr(), "WebSocket handshake without a valid bearer token");
        return json_error(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer` token is required",
        );
    }
    let offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        return json_error(
            actix_web::http::StatusCode::BAD_REQUEST,
            "unsupported_subprotocol",
            &format!("offer the subprotocol {SUBPROTOCOL} in Sec-WebSocket-Protocol"),
        );
    }
    let (response, session, stream) =
        match actix_ws::handle_with_protocols(&req, body, &[SUBPROTOCOL]) {
            Ok(parts) => parts,
            Err(e) => return e.error_response(),
        };
    let stream = stream
        .max_frame_size(MAX_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_BYTES);
    let state = state.into_inner();
    let connection = Uuid::new_v4();
    tracing::info!(%connection, "Orders connected");
    // The frame stream is `!Send` and stays on this arbiter; it holds nothing but the
    // socket. Everything that touches the database runs as a tokio task instead: an
    // arbiter that stops drops its local tasks outside any runtime, and a pool
    // connection dropped there panics ("this functionality requires a Tokio context"),
    // whereas tokio drops its own tasks inside the runtime.
    let (frames_tx, frames) = mpsc::channel(INBOUND_FRAMES);
    actix_web::rt::spawn(read_frames(stream, frames_tx));
    tokio::spawn(run(state, connection, session, frames));
    response
}

/// How long a closed connection tries to remove its row; a row left behind goes stale
/// and is ignored after a few delivery scans anyway.
pub const CLEANUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Frames read ahead of the connection loop (its group-commit batch is at most this).
pub const INBOUND_FRAMES: usize = 256;

type Frame = Result<AggregatedMessage, ProtocolError>;

/// Forwards frames to the connection loop until the peer's stream ends, a close or
/// an error is read, or the loop is gone (which drops the stream, ending the HTTP
/// connection).
async fn read_frames(mut stream: actix_ws::AggregatedMessageStream, frames: mpsc::Sender<Frame>) {
    loop {
        tokio::select! {
            frame = stream.recv() => {
                let Some(frame) = frame else { break };
                let last = matches!(frame, Err(_) | Ok(AggregatedMessage::Close(_)));
                if frames.send(frame).await.is_err() || last {
                    break;
                }
            }
            _ = frames.closed() => break,
        }
    }
}

fn json_error(status: actix_web::http::StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .json(serde_json::json!({"error": {"code": code, "message": message}}))
}

/// Compares without an early exit, so the token cannot be guessed byte by byte from timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn run(
    state: std::sync::Arc<AppState>,
    connection: Uuid,
    mut session: actix_ws::Session,
    mut frames: mpsc::Receiver<Frame>,
) {
    let (events_tx, mut events) = mpsc::unbounded_channel::<ServerMessage>();
    let delivery = &state.delivery;
    if let Err(e) = delivery
        .store
        .register_connection(connection, delivery.instance)
        .await
    {
        tracing::error!(error = %error_chain(&e), "could not register the connection");
    }
    delivery.registry.add(connection, events_tx);
    let mut shutdown = state.shutdown.clone();

    // Every unacked event goes to every connection that opens.
    match delivery.store.unacked().await {
        Ok(unacked) => {
            for event in unacked {
                // Restarts its redelivery clock: it was just sent.
                let _ = delivery.store.mark_sent(event.event_id).await;
                tracing::info!(event_id = %event.event_id, order_id = %event.order_id, %connection, "redelivering unacked event");
                if send(&mut session, &event.message()).await.is_err() {
                    break;
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "could not read unacked events for a new connection")
        }
    }

    let config = &state.config;
    let ctx = Context {
        store: &delivery.store,
        ttl: config.payment_ttl,
        public_url: &state.public_url,
        connection,
    };
    let now = Instant::now();
    let mut heartbeat = interval_at(now + config.heartbeat_interval, config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = now;

    let close: Option<CloseReason> = loop {
        tokio::select! {
            frame = frames.recv() => {
                last_heard = Instant::now();
                match frame {
                    None => break None,
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        if let Some(close) = on_text(&ctx, &mut session, &text).await {
                            break Some(close);
                        }
                    }
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        tracing::warn!(%connection, "binary frame refused");
                        break Some(reason(CloseCode::Unsupported, "binary frames are not part of payments.v1"));
                    }
                    Some(Ok(AggregatedMessage::Ping(payload))) => {
                        if session.pong(&payload).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Close(why))) => {
                        tracing::info!(%connection, reason = ?why, "Orders closed the connection");
                        break why;
                    }
                    Some(Err(e)) => {
                        let too_large = matches!(e, ProtocolError::Overflow)
                            || matches!(&e, ProtocolError::Io(io) if io.to_string().contains("maximum continuation size"));
                        tracing::warn!(%connection, error = %e, "WebSocket protocol error");
                        break Some(if too_large {
                            reason(CloseCode::Size, "messages are limited to 64 KiB")
                        } else {
                            reason(CloseCode::Protocol, "protocol error")
                        });
                    }
                }
            }
            Some(message) = events.recv() => {
                if send(&mut session, &message).await.is_err() {
                    break None;
                }
            }
            _ = heartbeat.tick() => {
                if session.ping(b"").await.is_err() {
                    break None;
                }
            }
            _ = sleep_until(last_heard + config.peer_timeout) => {
                tracing::warn!(%connection, timeout = ?config.peer_timeout, "Orders went silent; dropping the connection");
                break Some(reason(CloseCode::Policy, "no frame within the peer timeout"));
            }
            _ = shutdown.changed() => {
                break Some(reason(CloseCode::Away, "Payments is shutting down"));
            }
        }
    };
    delivery.registry.remove(connection);
    // Close first, so the peer hears 1001 at once, and let go of the frames, so the
    // HTTP connection ends (a stopping server waits for it) whatever the database does.
    drop(frames);
    let _ = tokio::time::timeout(config.peer_timeout, session.close(close)).await;
    tracing::info!(%connection, "connection closed");
    match tokio::time::timeout(
        CLEANUP_TIMEOUT,
        delivery.store.unregister_connection(connection),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %error_chain(&e), "could not unregister the connection")
        }
        Err(_) => tracing::warn!(%connection, "unregistering the connection timed out"),
    }
}

/// Handles one text message; returns a close reason when the connection must end.
async fn on_text(
    ctx: &Context<'_>,
    session: &mut actix_ws::Session,
    text: &str,
) -> Option<CloseReason> {
    let replies = match shared_protocol::decode::<ClientMessage>(text) {
        Ok(message) => {
            let span = tracing::info_span!("message", r#type = message.type_name(), order_id = ?message.order_id());
            let _enter = span.enter();
            tracing::debug!("received");
            drop(_enter);
            protocol::answer(ctx, message).await
        }
        Err(DecodeError::TooLarge { .. }) => {
            return Some(reason(CloseCode::Size, "messages are limited to 64 KiB"));
        }
        Err(e) => {
            tracing::warn!(connection = %ctx.connection, error = %e, "refused a message");
            vec![ServerMessage::error(e.order_id(), e.code(), e.to_string())]
        }
    };
    for reply in replies {
        if send(session, &reply).await.is_err() {
            return None;
        }
    }
    None
}

async fn send(
    session: &mut actix_ws::Session,
    message: &ServerMessage,
) -> Result<(), actix_ws::Closed> {
    tracing::debug!(r#type = message.type_name(), order_id = ?message.order_id(), "sending");
    session.text(shared_protocol::encode(message)).await
}

fn reason(code: CloseCode, description: &str) -> CloseReason {
    CloseReason {
        code,
        description: Some(description.to_owned()),
    }
}
