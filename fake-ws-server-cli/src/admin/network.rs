//! The faults of one connection that no other mock injects over a real socket: a
//! slow link (latency, jitter, a bandwidth limit), a blackhole (the cable unplugged)
//! and its heal, and frames RFC 6455 forbids (`fault`). What the library's
//! `Connection::impair`, `blackhole`, `heal` and `send_fault` do, over HTTP.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fake_ws_server::{Fault, Impairment};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{A_DAY_MS, Admin, ApiError, Done, ErrorBody};

/// The routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections/{id}/impair", web::post().to(impair))
        .route(
            "/connections/{id}/clear-impairment",
            web::post().to(clear_impairment),
        )
        .route("/connections/{id}/blackhole", web::post().to(blackhole))
        .route("/connections/{id}/heal", web::post().to(heal))
        .route("/connections/{id}/fault", web::post().to(fault));
}

/// A slow link, each way: every byte waits until the link carried it at
/// `bytes_per_sec`, then `latency_ms` plus a random extra of up to `jitter_ms`. Order
/// is kept, as on TCP.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImpairRequest {
    /// The one-way delay of every byte, in milliseconds (default 0, at most a day).
    #[serde(default)]
    pub latency_ms: u64,
    /// A random extra on each delay, from 0 to this many milliseconds (default 0, at
    /// most a day).
    #[serde(default)]
    pub jitter_ms: u64,
    /// Bytes a second, each way; absent, no limit. Not 0: `blackhole` is the link
    /// that carries nothing.
    pub bytes_per_sec: Option<u64>,
}

impl ImpairRequest {
    /// The impairment, or why the request cannot be one.
    fn impairment(&self) -> Result<Impairment, ApiError> {
        for (name, value) in [
            ("latency_ms", self.latency_ms),
            ("jitter_ms", self.jitter_ms),
        ] {
            if value > A_DAY_MS {
                return Err(ApiError::bad_request(format!(
                    "{name}: at most {A_DAY_MS} (a day), not {value}"
                )));
            }
        }
        let impairment = Impairment::latency(Duration::from_millis(self.latency_ms))
            .jitter(Duration::from_millis(self.jitter_ms));
        match self.bytes_per_sec {
            None => Ok(impairment),
            Some(0) => Err(ApiError::bad_request(
                "bytes_per_sec: 0 carries nothing; POST .../blackhole for a dead link",
            )),
            Some(rate) => Ok(impairment.bandwidth(rate)),
        }
    }
}

/// Slows the connection's traffic down, both ways, from now on (replacing any
/// impairment set before).
#[utoipa::path(post, path = "/connections/{id}/impair", tag = "network",
    params(("id" = usize, Path, description = "The connection's id")),
    request_body = ImpairRequest,
    responses(
        (status = 200, body = Done),
        (status = 400, body = ErrorBody, description = "A setting out of range"),
        (status = 404, body = ErrorBody, description = "No such connection"),
    ))]
pub async fn impair(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
    body: web::Json<ImpairRequest>,
) -> Result<HttpResponse, ApiError> {
    let impairment = body.impairment()?;
    admin.connection(*id)?.impair(impairment);
    Ok(HttpResponse::Ok().json(Done {}))
}

/// Back to a clean link: what the slow link holds goes on at once, in order.
#[utoipa::path(post, path = "/connections/{id}/clear-impairment", tag = "network",
    params(("id" = usize, Path, description = "The connection's id")),
    responses(
        (status = 200, body = Done),
        (status = 404, body = ErrorBody, description = "No such connection"),
    ))]
pub async fn clear_impairment(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
) -> Result<HttpResponse, ApiError> {
    admin.connection(*id)?.clear_impairment();
    Ok(HttpResponse::Ok().json(Done {}))
}

/// Unplugs the cable: nothing passes either way and nothing says so (no FIN, no
/// RST, no close frame, no pong). What is sent meanwhile is held until `heal`.
#[utoipa::path(post, path = "/connections/{id}/blackhole", tag = "network",
    params(("id" = usize, Path, description = "The connection's id")),
    responses(
        (status = 200, body = Done),
        (status = 404, body = ErrorBody, description = "No such connection"),
    ))]
pub async fn blackhole(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
) -> Result<HttpResponse, ApiError> {
    admin.connection(*id)?.blackhole();
    Ok(HttpResponse::Ok().json(Done {}))
}

/// Plugs the cable back in: what was held both ways goes on, in order.
#[utoipa::path(post, path = "/connections/{id}/heal", tag = "network",
    params(("id" = usize, Path, description = "The connection's id")),
    responses(
        (status = 200, body = Done),
        (status = 404, body = ErrorBody, description = "No such connection"),
    ))]
pub async fn heal(admin: web::Data<Admin>, id: web::Path<usize>) -> Result<HttpResponse, ApiError> {
    admin.connection(*id)?.heal();
    Ok(HttpResponse::Ok().json(Done {}))
}

/// A frame RFC 6455 forbids a server to send, for `POST /connections/{id}/fault`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultRequest {
    /// A text frame whose payload is not UTF-8 (the client should close with 1007).
    InvalidUtf8,
    /// A text frame with the reserved bits set.
    ReservedBits,
    /// A masked frame: a server must not mask.
    MaskedFrame,
    /// A ping of 126 bytes: a control frame carries at most 125.
    OversizedControl,
    /// A ping without the FIN bit: control frames are never fragmented.
    FragmentedControl,
    /// A close frame with this code, whatever it is (1005, 1006, 1015 and 1016–2999
    /// must never be sent).
    CloseCode {
        /// The code, sent as it is.
        code: u16,
    },
    /// 10 bytes of a 100-byte text frame, then a reset.
    TruncatedThenReset,
    /// These bytes, as they are.
    Raw {
        /// The bytes, in standard base64; at least one.
        base64: String,
    },
}

impl FaultRequest {
    /// The library's fault, or why the request cannot be one.
    fn fault(&self) -> Result<Fault, ApiError> {
        Ok(match self {
            FaultRequest::InvalidUtf8 => Fault::InvalidUtf8,
            FaultRequest::ReservedBits => Fault::ReservedBits,
            FaultRequest::MaskedFrame => Fault::MaskedFrame,
            FaultRequest::OversizedControl => Fault::OversizedControl,
            FaultRequest::FragmentedControl => Fault::FragmentedControl,
            FaultRequest::CloseCode { code } => Fault::CloseCode(*code),
            FaultRequest::TruncatedThenReset => Fault::TruncatedThenReset,
            FaultRequest::Raw { base64 } => {
                let bytes = STANDARD
                    .decode(base64)
                    .map_err(|e| ApiError::bad_request(format!("base64: {e}")))?;
                if bytes.is_empty() {
                    return Err(ApiError::bad_request("base64: no bytes to send"));
                }
                Fault::Raw(bytes)
            }
        })
    }
}

/// Sends the client a frame that breaks RFC 6455, after every frame sent before it,
/// and answers once it is written; the transcript records it as raw bytes, with what
/// they are. Then `wait-closed` says how the client failed the connection.
#[utoipa::path(post, path = "/connections/{id}/fault", tag = "network",
    params(("id" = usize, Path, description = "The connection's id")),
    request_body = FaultRequest,
    responses(
        (status = 200, body = Done),
        (status = 400, body = ErrorBody, description = "Not a fault the fake knows"),
        (status = 404, body = ErrorBody, description = "No such connection"),
        (status = 409, body = ErrorBody, description = "The connection has ended"),
    ))]
pub async fn fault(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
    body: web::Json<FaultRequest>,
) -> Result<HttpResponse, ApiError> {
    let fault = body.fault()?;
    admin
        .connection(*id)?
        .send_fault(fault)
        .await
        .map_err(|e| ApiError::conflict(format!("not sent: connection {id}: {e}")))?;
    Ok(HttpResponse::Ok().json(Done {}))
}
