//! The routes of one connection: list them, wait for the next, read a transcript,
//! wait for a message, expect one, send, close, abort, stall and resume.

use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fake_ws_server::{
    Closed, Connection, Direction, FrameKind, TranscriptEntry, render_transcript,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Admin, ApiError, Done, ErrorBody, Message, Timeout, deadline, millis};
use crate::scenario::{Json, MatcherSpec, RuleSpec, check_close_code};

/// The routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections", web::get().to(list))
        .route("/connections/next", web::post().to(next))
        .route("/connections/{id}", web::get().to(get))
        .route("/connections/{id}/transcript", web::get().to(transcript))
        .route(
            "/connections/{id}/messages/next",
            web::post().to(next_message),
        )
        .route("/connections/{id}/expect", web::post().to(expect))
        .route("/connections/{id}/send", web::post().to(send))
        .route("/connections/{id}/close", web::post().to(close))
        .route("/connections/{id}/abort", web::post().to(abort))
        .route("/connections/{id}/stall", web::post().to(stall))
        .route("/connections/{id}/resume", web::post().to(resume))
        .route(
            "/connections/{id}/stop-answering-pings",
            web::post().to(stop_answering_pings),
        )
        .route("/connections/{id}/wait-closed", web::post().to(wait_closed))
        .route("/connections/{id}/wait-frames", web::post().to(wait_frames))
        .route("/connections/{id}/rules", web::post().to(mount_rule));
}

/// One connection: its upgrade request and whether it is still open.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionInfo {
    /// 0, 1, 2, ... in the order the fake accepted them.
    pub id: usize,
    /// The upgrade request's path.
    pub path: String,
    /// Its query string, without `?`.
    pub query: Option<String>,
    /// Its headers, `[name, value]`, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The subprotocols it offered.
    pub subprotocols: Vec<String>,
    /// Whether the connection is still open.
    pub open: bool,
    /// How it ended, once it has.
    pub closed: Option<ClosedInfo>,
}

/// How a connection ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClosedInfo {
    /// `frame` (the client's close frame, with a code), `frame_without_code`,
    /// `dropped` (the client's TCP connection ended without a close frame) or
    /// `aborted` (the fake's doing; `other` for a way a later version adds).
    pub how: String,
    /// The close code, when the close frame had one.
    pub code: Option<u16>,
    /// The close reason, when the close frame had one.
    pub reason: Option<String>,
}

impl From<&Closed> for ClosedInfo {
    fn from(closed: &Closed) -> Self {
        let (how, reason) = match closed {
            Closed::Frame { reason, .. } => ("frame", Some(reason.clone())),
            Closed::FrameWithoutCode => ("frame_without_code", None),
            Closed::Dropped => ("dropped", None),
            Closed::Aborted => ("aborted", None),
            // A way of ending added later: its code, if any, still says something.
            _ => ("other", None),
        };
        ClosedInfo {
            how: how.into(),
            code: closed.code(),
            reason,
        }
    }
}

fn info(conn: &Connection<Json, Json>) -> ConnectionInfo {
    let request = conn.request();
    let closed = conn.closed();
    ConnectionInfo {
        id: conn.index(),
        path: request.path().to_owned(),
        query: request.query().map(str::to_owned),
        headers: request.headers().to_vec(),
        subprotocols: request.subprotocols(),
        open: closed.is_none(),
        closed: closed.as_ref().map(ClosedInfo::from),
    }
}

/// Every connection accepted so far, oldest first.
#[utoipa::path(get, path = "/connections", tag = "connections", responses(
    (status = 200, body = Vec<ConnectionInfo>),
))]
pub async fn list(admin: web::Data<Admin>) -> Result<HttpResponse, ApiError> {
    let count = admin.fake.connection_count();
    let all = (0..count)
        .map(|id| admin.connection(id).map(|c| info(&c)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(all))
}

/// One connection.
#[utoipa::path(get, path = "/connections/{id}", tag = "connections",
    params(("id" = usize, Path, description = "The connection's id")),
    responses(
        (status = 200, body = ConnectionInfo),
        (status = 404, body = ErrorBody, description = "No such connection"),
    ))]
pub async fn get(admin: web::Data<Admin>, id: web::Path<usize>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(info(&admin.connection(*id)?)))
}

/// The next connection not yet handed out (by this route), waiting for it up to
/// `timeout_ms`.
#[utoipa::path(post, path = "/connections/next", tag = "connections", params(Timeout),
    responses(
        (status = 200, body = ConnectionInfo),
        (status = 408, body = ErrorBody, description = "None came in time; the error has the attempts' log"),
    ))]
pub async fn next(
    admin: web::Data<Admin>,
    timeout: web::Query<Timeout>,
) -> Result<HttpResponse, ApiError> {
    let deadline = deadline(timeout.timeout_ms)?;
    let conn = admin
        .fake
        .try_next_connection_within(deadline)
        .await
        .map_err(ApiError::timeout)?;
    let body = info(&conn);
    admin.keep(conn);
    Ok(HttpResponse::Ok().json(body))
}

/// A connection's frames, both ways, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct Transcript {
    /// One entry a frame.
    pub entries: Vec<Entry>,
    /// The transcript as the fake's failure messages show it, one frame a line.
    pub rendered: String,
}

/// One frame of a transcript.
#[derive(Debug, Serialize, ToSchema)]
pub struct Entry {
    /// Milliseconds since the connection was accepted.
    pub at_ms: f64,
    /// `from_client` or `to_client`.
    pub direction: String,
    /// The frame.
    #[serde(flatten)]
    pub frame: FrameInfo,
    /// What the fake made of it: the rule that answered, why it is invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl From<&TranscriptEntry> for Entry {
    fn from(entry: &TranscriptEntry) -> Self {
        Entry {
            at_ms: millis(entry.at),
            direction: match entry.direction {
                Direction::FromClient => "from_client",
                Direction::ToClient => "to_client",
            }
            .into(),
            frame: FrameInfo::from(&entry.frame),
            note: entry.note.clone(),
        }
    }
}

/// One frame, as the transcript holds it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FrameInfo {
    /// `text`, `binary`, `ping`, `pong`, `close`, `oversize` or `raw`.
    pub kind: String,
    /// A text frame's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The payload of a binary, ping, pong or raw frame, base64 (standard, padded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// A close frame's code (absent when it had none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// A close frame's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<&FrameKind> for FrameInfo {
    fn from(frame: &FrameKind) -> Self {
        let mut out = FrameInfo {
            kind: String::new(),
            text: None,
            base64: None,
            code: None,
            reason: None,
        };
        let (kind, bytes) = match frame {
            FrameKind::Text(text) => {
                out.text = Some(text.clone());
                ("text", None)
            }
            FrameKind::Binary(bytes) => ("binary", Some(bytes)),
            FrameKind::Ping(bytes) => ("ping", Some(bytes)),
            FrameKind::Pong(bytes) => ("pong", Some(bytes)),
            FrameKind::Raw(bytes) => ("raw", Some(bytes)),
            FrameKind::Close { code, reason } => {
                out.code = *code;
                out.reason = Some(reason.clone());
                ("close", None)
            }
            FrameKind::Oversize { size, max } => {
                out.text = Some(format!("{size} bytes, over the maximum of {max}"));
                ("oversize", None)
            }
        };
        out.kind = kind.into();
        out.base64 = bytes.map(|b| STANDARD.encode(b));
        out
    }
}

/// Every frame of the connection so far.
#[utoipa::path(get, path = "/connections/{id}/transcript", tag = "connections",
    params(("id" = usize, Path, description = "The connection's id")),
    responses(
        (status = 200, body = Transcript),
        (status = 404, body = ErrorBody, description = "No such connection"),
    ))]
pub async fn transcript(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
) -> Result<HttpResponse, ApiError> {
    let entries = admin.connection(*id)?.transcript();
    Ok(HttpResponse::Ok().json(Transcript {
        entries: entries.iter().map(Entry::from).collect(),
        rendered: render_transcript(&entries),
    }))
}

/// Takes the next message not yet taken, whatever it is (those a rule answered are
/// the rule's), waiting up to `timeout_ms`; `{"message": null}` once the connection
/// ended and nothing is left.
#[utoipa::path(post, path = "/connections/{id}/messages/next", tag = "connections",
    params(("id" = usize, Path, description = "The connection's id"), Timeout),
    responses(
        (status = 200, body = Message),
        (status = 408, body = ErrorBody, description = "Nothing came in time (or no connection `id`); the error has the transcript"),
    ))]
pub async fn next_message(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
    timeout: web::Query<Timeout>,
) -> Result<HttpResponse, ApiError> {
    let deadline = deadline(timeout.timeout_ms)?;
    let conn = admin.connection_within(*id, deadline).await?;
    let message = conn
        .try_recv_within(deadline)
        .await
        .map_err(ApiError::timeout)?;
    Ok(HttpResponse::Ok().json(Message { message }))
}

/// What to expect.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Which message.
    #[serde(rename = "match")]
    pub matcher: MatcherSpec,
    /// `false` (the default): the first matching message not yet taken, wherever it
    /// is. `true`: the next message not yet taken must match.
    #[serde(default)]
    pub next: bool,
    /// How long to wait, in milliseconds; default 5000, at most 60000.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Waits for a message matching `match` and takes it.
#[utoipa::path(post, path = "/connections/{id}/expect", tag = "connections",
    params(("id" = usize, Path, description = "The connection's id")),
    request_body = Expectation,
    responses(
        (status = 200, body = Message),
        (status = 408, body = ErrorBody, description = "None came in time (or no connection `id`); the error is the fake's failure message: what it waited for, a diff against the closest message, the transcript"),
        (status = 409, body = ErrorBody, description = "With `next`: another message came first; the error says which, with the transcript"),
    ))]
pub async fn expect(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
    body: web::Json<Expectation>,
) -> Result<HttpResponse, ApiError> {
    let deadline = deadline(body.timeout_ms)?;
    let conn = admin.connection_within(*id, deadline).await?;
    let matcher = body.matcher.matcher();
    let message = if body.next {
        conn.try_expect_next_within(matcher, deadline)
            .await
            .map_err(|failure| {
                // The library says "but it was:" when another message came first.
                if failure
                    .lines()
                    .next()
                    .is_some_and(|l| l.contains("but it was:"))
                {
                    ApiError::conflict(failure)
                } else {
                    ApiError::timeout(failure)
                }
            })?
    } else {
        conn.try_expect_within(matcher, deadline)
            .await
            .map_err(ApiError::timeout)?
    };
    Ok(HttpResponse::Ok().json(Message {
        message: Some(message),
    }))
}

/// What to send: exactly one of the fields.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Outgoing {
    /// A JSON message, in a text frame.
    Json(serde_json::Value),
    /// A raw text frame.
    Text(String),
    /// A binary frame, base64 (standard, padded).
    BinaryBase64(String),
}

/// Sends a frame, and answers once it is written.
#[utoipa::path(post, path = "/connections/{id}/send", tag = "connections",
    params(("id" = usize, Path, description = "The connection's id")),
    request_body = Outgoing,
    responses(
        (status = 200, body = Done),
        (status = 400, body = ErrorBody, description = "Not base64"),
        (status = 404, body = ErrorBody, description = "No such connection"),
        (status = 409, body = ErrorBody, description = "The connection has ended, or the fake sent a close frame"),
    ))]
pub async fn send(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
    body: web::Json<Outgoing>,
) -> Result<HttpResponse, ApiError> {
    let conn = admin.connection(*id)?;
    let sent = match body.into_inner() {
        Outgoing::Json(message) => conn.send(message).await,
        Outgoing::Text(text) => conn.send_text(text).await,
        Outgoing::BinaryBase64(encoded) => {
            let bytes = STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| ApiError::bad_request(format!("binary_base64: {e}")))?;
            conn.send_binary(bytes).await
        }
    };
    sent.map_err(|e| ApiError::conflict(format!("not sent on connection {id}: {e}")))?;
    Ok(HttpResponse::Ok().json(Done {}))
}

/// A close frame to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// The close code: 1000 to 4999; default 1000.
    #[serde(default = "normal")]
    pub code: u16,
    /// The close reason; default empty.
    #[serde(default)]
    pub reason: String,
}

fn normal() -> u16 {
    1000
}

/// Sends a close frame; the connection ends when the client answers it
/// (`wait-closed`).
#[utoipa::path(post, path = "/connections/{id}/close", tag = "connections",
    params(("id" = usize, Path, description = "The connection's id")),
    request_body = CloseRequest,
    responses(
        (status = 200, body = Done),
        (status = 400, body = ErrorBody, description = "Not a close code"),
        (status = 404, body = ErrorBody, description = "No such connection"),
        (status = 409, body = ErrorBody, description = "The connection has ended, or the fake already sent a close frame"),
    ))]
pub async fn close(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
    body: web::Json<CloseRequest>,
) -> Result<HttpResponse, ApiError> {
    check_close_code(body.code).map_err(|e| ApiError::bad_request(format!("code: {e}")))?;
    let conn = admin.connection(*id)?;
    conn.close(body.code, body.reason.clone())
        .await
        .map_err(|e| ApiError::conflict(format!("not closed: connection {id}: {e}")))?;
    Ok(HttpResponse::Ok().json(Done {}))
}

/// Drops the TCP connection at once: no close frame, a reset.
#[utoipa::path(post, path = "/connections/{id}/abort", tag = "connections",
    params(("id" = usize, Path, description = "The connection's id")),
    responses(
        (status = 200, body = Done),
        (status = 404, body = ErrorBody, description = "No such connection"),
    ))]
pub async fn abort(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
) -> Result<HttpResponse, ApiError> {
    admin.connection(*id)?.abort().await;
    Ok(HttpResponse::Ok().json(Done {}))
}

/// Stops reading the socket: what the client sends stays unread, unanswered, pings
/// too, as with a server that hangs.
#[utoipa::path(post, path = "/connections/{id}/stall", tag = "connections",
    params(("id" = usize, Path, description = "The connection's id")),
    responses(
        (status = 200, body = Done),
        (status = 404, body = ErrorBody, description = "No such connection"),
    ))]
pub async fn stall(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
) -> Result<HttpResponse, ApiError> {
    admin.connection(*id)?.stop_reading().await;
    Ok(HttpResponse::Ok().json(Done {}))
}

/// Stops answering the client's pings, as a server that hangs would not, while it
/// still reads and records what the client sends (rules still answer): for a client's
/// heartbeat. `resume` undoes it.
#[utoipa::path(post, path = "/connections/{id}/stop-answering-pings", tag = "connections",
    params(("id" = usize, Path, description = "The connection's id")),
    responses(
        (status = 200, body = Done),
        (status = 404, body = ErrorBody, description = "No such connection"),
    ))]
pub async fn stop_answering_pings(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
) -> Result<HttpResponse, ApiError> {
    admin.connection(*id)?.stop_answering_pings();
    Ok(HttpResponse::Ok().json(Done {}))
}

/// Reads (and answers pings) again after `stall` or `stop-answering-pings`.
#[utoipa::path(post, path = "/connections/{id}/resume", tag = "connections",
    params(("id" = usize, Path, description = "The connection's id")),
    responses(
        (status = 200, body = Done),
        (status = 404, body = ErrorBody, description = "No such connection"),
    ))]
pub async fn resume(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
) -> Result<HttpResponse, ApiError> {
    admin.connection(*id)?.resume_reading().await;
    Ok(HttpResponse::Ok().json(Done {}))
}

/// Waits until the connection ends, and says how.
#[utoipa::path(post, path = "/connections/{id}/wait-closed", tag = "connections",
    params(("id" = usize, Path, description = "The connection's id"), Timeout),
    responses(
        (status = 200, body = ClosedInfo),
        (status = 408, body = ErrorBody, description = "Still open (or no connection `id`); the error has the transcript"),
    ))]
pub async fn wait_closed(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
    timeout: web::Query<Timeout>,
) -> Result<HttpResponse, ApiError> {
    let deadline = deadline(timeout.timeout_ms)?;
    let conn = admin.connection_within(*id, deadline).await?;
    let closed = conn
        .try_wait_closed_within(deadline)
        .await
        .map_err(ApiError::timeout)?;
    Ok(HttpResponse::Ok().json(ClosedInfo::from(&closed)))
}

/// Mounts a rule on this connection only.
#[utoipa::path(post, path = "/connections/{id}/rules", tag = "connections",
    params(("id" = usize, Path, description = "The connection's id")),
    request_body = RuleSpec,
    responses(
        (status = 201, body = super::server::Mounted),
        (status = 400, body = ErrorBody, description = "Not a rule the fake can take"),
        (status = 404, body = ErrorBody, description = "No such connection"),
    ))]
pub async fn mount_rule(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
    body: web::Json<RuleSpec>,
) -> Result<HttpResponse, ApiError> {
    body.check().map_err(ApiError::bad_request)?;
    let conn = admin.connection(*id)?;
    conn.mount(body.rule());
    Ok(HttpResponse::Created().json(super::server::Mounted {
        id: admin.rule_id(),
    }))
}

/// How many frames to wait for: `?count=&timeout_ms=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FramesQuery {
    /// Frames in the transcript, both ways, whatever they are.
    pub count: usize,
    /// Milliseconds; default 5000, at most 60000.
    pub timeout_ms: Option<u64>,
}

/// Waits until the transcript holds at least `count` frames, without taking any
/// message: to know the fake got what the client sent before `verify`.
#[utoipa::path(post, path = "/connections/{id}/wait-frames", tag = "connections",
    params(("id" = usize, Path, description = "The connection's id"), FramesQuery),
    responses(
        (status = 200, body = Transcript),
        (status = 408, body = ErrorBody, description = "Fewer came in time (or no connection `id`); the error has the transcript"),
    ))]
pub async fn wait_frames(
    admin: web::Data<Admin>,
    id: web::Path<usize>,
    query: web::Query<FramesQuery>,
) -> Result<HttpResponse, ApiError> {
    let deadline = deadline(query.timeout_ms)?;
    let conn = admin.connection_within(*id, deadline).await?;
    conn.try_wait_for_frames_within(query.count, deadline)
        .await
        .map_err(ApiError::timeout)?;
    transcript(admin, id).await
}
