//! The protocol controls of one connection: a ping from the fake and the client's
//! pong, pings every so often, and taking a frame that is not a valid message. What
//! the library's `Connection::ping`, `expect_pong`, `ping_every` and `expect_invalid`
//! do, over HTTP.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::connections::FrameInfo;
use super::{A_DAY_MS, Admin, ApiError, Done, ErrorBody, Timeout, deadline, millis};

/// The most a ping may carry (RFC 6455, 5.5).
const MAX_PING_PAYLOAD: usize = 125;

/// The routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections/{id}/ping", web::post().to(ping))
        .route("/connections/{id}/ping-every", web::post().to(ping_every))
        .route(
            "/connections/{id}/expect-invalid",
            web::post().to(expect_invalid),
        );
}

/// A ping's payload.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PingRequest {
    /// The payload, standard base64, at most 125 bytes; absent, an empty ping.
    #[serde(default)]
    pub base64: Option<String>,
}

/// The client's pong.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pong {
    /// From the ping's entry in the transcript to the pong's, in milliseconds.
    pub round_trip_ms: f64,
}

/// Pings the client and waits for its pong: a client that reads answers at once, one
/// that hangs does not.
#[utoipa::path(post, path = "/connections/{id}/ping", tag = "protocol",
    params(("id" = usize, Path, description = "The connection's id"), Timeout),
    request_body = PingRequest,
    responses(
        (status = 200, body = Pong),
        (status = 400, body = ErrorBody, description = "Not base64, or over 125 bytes"),
        (status = 404, body = ErrorBody, description = "No such connection"),
        (status = 408, body = ErrorBody, description = "No pong in time: the failure, with the transcript"),
        (status = 409, body = ErrorBody, description = "The connection has ended"),
    ))]
pub async fn ping(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
    timeout: web::Query<Timeout>,
    body: web::Json<PingRequest>,
) -> Result<HttpResponse, ApiError> {
    let deadline = deadline(timeout.timeout_ms)?;
    let payload = ping_payload(&body)?;
    let conn = admin.connection(*id)?;
    if conn.closed().is_some() {
        return Err(ApiError::conflict(format!("connection {id} has ended")));
    }
    conn.ping(payload).await;
    match conn.try_expect_pong_within(deadline).await {
        Ok(round_trip) => Ok(HttpResponse::Ok().json(Pong {
            round_trip_ms: millis(round_trip),
        })),
        // It ended before the ping went out: no ping waits for a pong.
        Err(_) if conn.closed().is_some() => {
            Err(ApiError::conflict(format!("connection {id} has ended")))
        }
        Err(failure) => Err(ApiError::timeout(failure)),
    }
}

/// The payload `body` names, or why it cannot be a ping's.
fn ping_payload(body: &PingRequest) -> Result<Vec<u8>, ApiError> {
    let Some(base64) = &body.base64 else {
        return Ok(Vec::new());
    };
    let payload = STANDARD
        .decode(base64)
        .map_err(|e| ApiError::bad_request(format!("base64: {e}")))?;
    if payload.len() > MAX_PING_PAYLOAD {
        return Err(ApiError::bad_request(format!(
            "base64: a ping carries at most {MAX_PING_PAYLOAD} bytes, not {}",
            payload.len()
        )));
    }
    Ok(payload)
}

/// How often to ping.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PingEveryRequest {
    /// Milliseconds between pings (1 to a day); `null` (or no field) stops them.
    #[serde(default)]
    pub every_ms: Option<u64>,
}

/// From now on pings the client every `every_ms` (empty pings, in the transcript),
/// reading or not: a peer that is alive, so a client's silence deadline never fires.
/// `{"every_ms": null}` stops them.
#[utoipa::path(post, path = "/connections/{id}/ping-every", tag = "protocol",
    params(("id" = usize, Path, description = "The connection's id")),
    request_body = PingEveryRequest,
    responses(
        (status = 200, body = Done),
        (status = 400, body = ErrorBody, description = "0, or over a day"),
        (status = 404, body = ErrorBody, description = "No such connection"),
    ))]
pub async fn ping_every(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
    body: web::Json<PingEveryRequest>,
) -> Result<HttpResponse, ApiError> {
    let every = match body.every_ms {
        Some(ms @ 1..=A_DAY_MS) => Some(Duration::from_millis(ms)),
        Some(ms) => {
            return Err(ApiError::bad_request(format!(
                "every_ms: from 1 to {A_DAY_MS} (a day), not {ms}"
            )));
        }
        None => None,
    };
    let conn = admin.connection(*id)?;
    match every {
        Some(every) => conn.ping_every(every).await,
        None => conn.stop_pinging().await,
    }
    Ok(HttpResponse::Ok().json(Done {}))
}

/// A frame from the client that is not a valid message.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invalid {
    /// The frame as it came.
    pub frame: FrameInfo,
    /// Why it is not a message: not JSON, a binary frame, a contract violation, or a
    /// close code RFC 6455 forbids.
    pub error: String,
}

/// Waits for a frame from the client that is not a valid message (not JSON in a text
/// frame, against the AsyncAPI contract, or a forbidden close code) and takes it, so
/// `verify` no longer reports it: for a test of a client that misbehaves on purpose.
#[utoipa::path(post, path = "/connections/{id}/expect-invalid", tag = "protocol",
    params(("id" = usize, Path, description = "The connection's id"), Timeout),
    responses(
        (status = 200, body = Invalid),
        (status = 404, body = ErrorBody, description = "No such connection"),
        (status = 408, body = ErrorBody, description = "None came in time: the failure, with the transcript"),
    ))]
pub async fn expect_invalid(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
    timeout: web::Query<Timeout>,
) -> Result<HttpResponse, ApiError> {
    let deadline = deadline(timeout.timeout_ms)?;
    let conn = admin.connection(*id)?;
    let invalid = conn
        .try_expect_invalid_within(deadline)
        .await
        .map_err(ApiError::timeout)?;
    Ok(HttpResponse::Ok().json(Invalid {
        frame: FrameInfo::from(&invalid.frame),
        error: invalid.error,
    }))
}
