//! The admin HTTP API: what a test in any language does with the fake, in JSON over
//! HTTP. `connections` drives one connection (waits, sends, closes), `network` its
//! faults (a slow link, a blackhole, forbidden frames), `protocol` its pings and
//! invalid frames, `server` the
//! fake as a whole (rules, outages, attempts, verify); this file holds what both
//! share: the state, the error answer, the deadlines, and the routes' wiring.

pub mod connections;
pub mod network;
pub mod protocol;
pub mod server;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use fake_ws_server::{Connection, FakeServer};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::scenario::Json;

/// How long a wait waits when the request does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a request may wait.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest delay or interval a request may set, in milliseconds: a day (the
/// library caps a link's delays there too).
pub const A_DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// What every route shares: the fake, and the handles of its connections.
pub struct Admin {
    /// The fake itself.
    pub fake: FakeServer<Json, Json>,
    /// A handle per connection looked at so far, by index; never dropped (a handle
    /// handed out by `next_connection` checks its connection when dropped).
    handles: Mutex<BTreeMap<usize, Connection<Json, Json>>>,
    /// The ids `POST /rules` and `POST /handshake-rules` hand out.
    next_rule: AtomicUsize,
}

impl Admin {
    /// The admin state of `fake`.
    pub fn new(fake: FakeServer<Json, Json>) -> Self {
        Admin {
            fake,
            handles: Mutex::default(),
            next_rule: AtomicUsize::new(0),
        }
    }

    /// The handle of connection `id`, or 404.
    pub fn connection(&self, id: usize) -> Result<Connection<Json, Json>, ApiError> {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(conn) = handles.get(&id) {
            return Ok(conn.clone());
        }
        let conn = self
            .fake
            .connection(id)
            .ok_or_else(|| ApiError::not_found(format!("no connection {id}")))?;
        handles.insert(id, conn.clone());
        Ok(conn)
    }

    /// The handle of connection `id`, waiting up to `deadline` for the fake to accept
    /// it: a wait route's, so that a client's connect (which returns on the 101, a
    /// moment before the fake records the connection) and the wait cannot race.
    /// 408 when it does not come.
    pub async fn connection_within(
        &self,
        id: usize,
        deadline: Duration,
    ) -> Result<Connection<Json, Json>, ApiError> {
        self.fake
            .try_wait_for_connections_within(id + 1, deadline)
            .await
            .map_err(|e| ApiError::timeout(format!("no connection {id}: {e}")))?;
        self.connection(id)
    }

    /// Keeps the handle `next_connection` handed out (in place of any looked up by
    /// index, whose drop checks nothing).
    pub fn keep(&self, conn: Connection<Json, Json>) {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        handles.insert(conn.index(), conn);
    }

    /// A new rule id.
    pub fn rule_id(&self) -> usize {
        self.next_rule.fetch_add(1, Ordering::Relaxed)
    }
}

/// An error answer: `{"error": "..."}` with a 4xx status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in words: for a failed wait, the fake's failure message, with
    /// the transcript or the attempts' log.
    pub error: String,
}

/// A route's failure: a status and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// 400: the request is not one the fake can take.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 404: no such connection.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 408: what the request waited for did not come in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: message.into(),
        }
    }

    /// 409: the connection's state does not allow it (closed, or another message came).
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(ErrorBody {
            error: self.message.clone(),
        })
    }
}

/// How long a request waits: `?timeout_ms=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Timeout {
    /// Milliseconds; default 5000, at most 60000.
    pub timeout_ms: Option<u64>,
}

/// `timeout_ms` as a deadline: the default when absent, 400 over the maximum.
pub fn deadline(timeout_ms: Option<u64>) -> Result<Duration, ApiError> {
    match timeout_ms.map(Duration::from_millis) {
        None => Ok(DEFAULT_TIMEOUT),
        Some(d) if d > MAX_TIMEOUT => Err(ApiError::bad_request(format!(
            "timeout_ms: at most {} ms",
            MAX_TIMEOUT.as_millis()
        ))),
        Some(d) => Ok(d),
    }
}

/// Milliseconds, with microseconds, for JSON.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Every route, with JSON errors for malformed bodies, paths and queries.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .error_handler(|e, _| ApiError::bad_request(format!("invalid JSON body: {e}")).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|e, _| ApiError::not_found(format!("invalid path: {e}")).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::bad_request(format!("invalid query: {e}")).into()),
    )
    .configure(connections::configure)
    .configure(network::configure)
    .configure(protocol::configure)
    .configure(server::configure)
    .route("/openapi.json", web::get().to(openapi_json))
    .default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::not_found(
            "no such route; GET /openapi.json lists them",
        ))
    }));
}

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses(
    (status = 200, description = "The OpenAPI 3.1 document of the admin API", content_type = "application/json"),
))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::openapi::document())
}

/// `{}`: done.
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {}

/// A JSON value, for the schemas.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    /// The message, as JSON; `null` from `messages/next` when the connection ended and
    /// nothing is left.
    #[schema(value_type = Object)]
    pub message: Option<Json>,
}
