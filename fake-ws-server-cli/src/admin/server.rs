//! The routes of the fake as a whole: mount rules, take it down and up, read the
//! attempts, broadcast, verify.

use actix_web::{HttpResponse, web};
use fake_ws_server::{Attempt, AttemptOutcome};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Admin, ApiError, Done, ErrorBody, millis};
use crate::scenario::{HandshakeRuleSpec, Json, MatcherSpec, RuleSpec};

/// The routes of this file.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/rules", web::post().to(mount_rule))
        .route("/handshake-rules", web::post().to(mount_handshake_rule))
        .route("/allow", web::post().to(allow))
        .route("/broadcast", web::post().to(broadcast))
        .route("/server/refuse", web::post().to(refuse))
        .route("/server/hang", web::post().to(hang))
        .route("/server/accept", web::post().to(accept))
        .route("/server/reset", web::post().to(reset))
        .route("/server/stop", web::post().to(stop))
        .route("/server/restart", web::post().to(restart))
        .route("/attempts", web::get().to(attempts))
        .route("/attempts/wait", web::post().to(wait_attempts))
        .route("/verify", web::post().to(verify))
        .route("/tls/root-certificate", web::get().to(root_certificate));
}

/// A rule was mounted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Mounted {
    /// Its id, for the test's own reference (failure messages name rules by `name`).
    pub id: usize,
}

/// Mounts a rule for every connection, open now or to come.
#[utoipa::path(post, path = "/rules", tag = "server", request_body = RuleSpec,
    responses(
        (status = 201, body = Mounted),
        (status = 400, body = ErrorBody, description = "Not a rule the fake can take"),
    ))]
pub async fn mount_rule(
    admin: web::Data<Admin>,
    body: web::Json<RuleSpec>,
) -> Result<HttpResponse, ApiError> {
    body.check().map_err(ApiError::bad_request)?;
    admin.fake.mount(body.rule());
    Ok(HttpResponse::Created().json(Mounted {
        id: admin.rule_id(),
    }))
}

/// Mounts a rule that answers some upgrade requests with a status instead of 101,
/// after those mounted before it.
#[utoipa::path(post, path = "/handshake-rules", tag = "server", request_body = HandshakeRuleSpec,
    responses(
        (status = 201, body = Mounted),
        (status = 400, body = ErrorBody, description = "Not a rule the fake can take"),
    ))]
pub async fn mount_handshake_rule(
    admin: web::Data<Admin>,
    body: web::Json<HandshakeRuleSpec>,
) -> Result<HttpResponse, ApiError> {
    body.check().map_err(ApiError::bad_request)?;
    admin.fake.mount_handshake_rule(body.rule());
    Ok(HttpResponse::Created().json(Mounted {
        id: admin.rule_id(),
    }))
}

/// Messages that need no expectation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// Which messages.
    #[serde(rename = "match")]
    pub matcher: MatcherSpec,
}

/// Messages matching `match`, on any connection, never count as unlooked-at.
#[utoipa::path(post, path = "/allow", tag = "server", request_body = Allow,
    responses((status = 200, body = Done)))]
pub async fn allow(admin: web::Data<Admin>, body: web::Json<Allow>) -> HttpResponse {
    admin.fake.allow(body.matcher.matcher());
    HttpResponse::Ok().json(Done {})
}

/// A message for every open connection.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Broadcast {
    /// The message, as JSON in a text frame.
    #[schema(value_type = Object)]
    pub json: Json,
}

/// How many connections a broadcast reached.
#[derive(Debug, Serialize, ToSchema)]
pub struct Broadcasted {
    /// To how many open connections it was written.
    pub written: usize,
}

/// Sends one message to every open connection.
#[utoipa::path(post, path = "/broadcast", tag = "server", request_body = Broadcast,
    responses((status = 200, body = Broadcasted)))]
pub async fn broadcast(admin: web::Data<Admin>, body: web::Json<Broadcast>) -> HttpResponse {
    let written = admin.fake.broadcast(body.into_inner().json).await;
    HttpResponse::Ok().json(Broadcasted { written })
}

/// From now on every new TCP connection is accepted and reset before its handshake
/// (each try recorded as a `refused` attempt). Live connections go on.
#[utoipa::path(post, path = "/server/refuse", tag = "server", responses((status = 200, body = Done)))]
pub async fn refuse(admin: web::Data<Admin>) -> HttpResponse {
    admin.fake.refuse_connections();
    HttpResponse::Ok().json(Done {})
}

/// From now on every new TCP connection is accepted and never answered (a `hung`
/// attempt): the client's handshake hangs until its own timeout.
#[utoipa::path(post, path = "/server/hang", tag = "server", responses((status = 200, body = Done)))]
pub async fn hang(admin: web::Data<Admin>) -> HttpResponse {
    admin.fake.hang_connections();
    HttpResponse::Ok().json(Done {})
}

/// Answers handshakes again after `refuse` or `hang`.
#[utoipa::path(post, path = "/server/accept", tag = "server", responses((status = 200, body = Done)))]
pub async fn accept(admin: web::Data<Admin>) -> HttpResponse {
    admin.fake.accept_connections();
    HttpResponse::Ok().json(Done {})
}

/// Drops every live connection without a close frame (a reset); new ones are still
/// accepted.
#[utoipa::path(post, path = "/server/reset", tag = "server", responses((status = 200, body = Done)))]
pub async fn reset(admin: web::Data<Admin>) -> HttpResponse {
    admin.fake.reset_connections().await;
    HttpResponse::Ok().json(Done {})
}

/// The fake goes down: `refuse` and `reset`. The port stays bound, so the client's
/// tries are recorded.
#[utoipa::path(post, path = "/server/stop", tag = "server", responses((status = 200, body = Done)))]
pub async fn stop(admin: web::Data<Admin>) -> HttpResponse {
    admin.fake.stop().await;
    HttpResponse::Ok().json(Done {})
}

/// The fake comes back up after `stop`, `refuse` or `hang`.
#[utoipa::path(post, path = "/server/restart", tag = "server", responses((status = 200, body = Done)))]
pub async fn restart(admin: web::Data<Admin>) -> HttpResponse {
    admin.fake.restart().await;
    HttpResponse::Ok().json(Done {})
}

/// Every handshake attempt so far.
#[derive(Debug, Serialize, ToSchema)]
pub struct Attempts {
    /// Oldest first, accepted ones included.
    pub attempts: Vec<AttemptInfo>,
    /// The attempts as the fake's failure messages show them, one a line, with the
    /// gaps between them.
    pub log: String,
}

/// One handshake attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptInfo {
    /// Milliseconds since the fake started.
    pub at_ms: f64,
    /// `accepted`, `rejected` (with `status`), `failed` (with `why`), `refused` or
    /// `hung`.
    pub outcome: String,
    /// The status a rejected handshake was answered with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why a handshake failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The upgrade request's path, when the fake read one.
    pub path: Option<String>,
    /// Its query string.
    pub query: Option<String>,
    /// Its headers, `[name, value]`.
    pub headers: Vec<(String, String)>,
}

impl From<&Attempt> for AttemptInfo {
    fn from(attempt: &Attempt) -> Self {
        let (outcome, status, why) = match attempt.outcome() {
            AttemptOutcome::Accepted => ("accepted", None, None),
            AttemptOutcome::Rejected(status) => ("rejected", Some(*status), None),
            AttemptOutcome::Failed(why) => ("failed", None, Some(why.clone())),
            AttemptOutcome::Refused => ("refused", None, None),
            AttemptOutcome::Hung => ("hung", None, None),
        };
        let request = attempt.request();
        AttemptInfo {
            at_ms: millis(attempt.since_start()),
            outcome: outcome.into(),
            status,
            why,
            path: request.map(|r| r.path().to_owned()),
            query: request.and_then(|r| r.query().map(str::to_owned)),
            headers: request.map(|r| r.headers().to_vec()).unwrap_or_default(),
        }
    }
}

/// Every handshake attempt so far, whatever its outcome.
#[utoipa::path(get, path = "/attempts", tag = "server", responses((status = 200, body = Attempts)))]
pub async fn attempts(admin: web::Data<Admin>) -> HttpResponse {
    let attempts = admin.fake.attempts();
    HttpResponse::Ok().json(Attempts {
        attempts: attempts.iter().map(AttemptInfo::from).collect(),
        log: admin.fake.attempt_log(),
    })
}

/// How many attempts to wait for: `?count=&timeout_ms=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptsQuery {
    /// Attempts since the fake started, whatever their outcome (accepted ones count).
    pub count: usize,
    /// Milliseconds; default 5000, at most 60000.
    pub timeout_ms: Option<u64>,
}

/// Waits until at least `count` attempts were recorded since the fake started: a
/// client's reconnects across an outage, to measure its backoff (`at_ms`).
#[utoipa::path(post, path = "/attempts/wait", tag = "server", params(AttemptsQuery),
    responses(
        (status = 200, body = Attempts),
        (status = 408, body = ErrorBody, description = "Fewer came in time; the error has the attempts' log"),
    ))]
pub async fn wait_attempts(
    admin: web::Data<Admin>,
    query: web::Query<AttemptsQuery>,
) -> Result<HttpResponse, ApiError> {
    let deadline = super::deadline(query.timeout_ms)?;
    admin
        .fake
        .try_wait_for_attempts_within(query.count, deadline)
        .await
        .map_err(ApiError::timeout)?;
    Ok(attempts(admin).await)
}

/// What the fake would fail the test for.
#[derive(Debug, Serialize, ToSchema)]
pub struct Verification {
    /// Empty when all is well: otherwise messages nobody looked at, frames that are
    /// not valid messages, rules that did not fire as often as their `times` said.
    pub problems: Vec<String>,
}

/// Checks what the Rust API checks when the fake is dropped, without stopping it.
#[utoipa::path(post, path = "/verify", tag = "server", responses((status = 200, body = Verification)))]
pub async fn verify(admin: web::Data<Admin>) -> HttpResponse {
    HttpResponse::Ok().json(Verification {
        problems: admin.fake.problems(),
    })
}

/// The root certificate the fake's `wss://` certificate is signed by, in PEM, for a
/// client's trust store (with `--tls`).
#[utoipa::path(get, path = "/tls/root-certificate", tag = "server", responses(
    (status = 200, description = "The root certificate, PEM", content_type = "application/x-pem-file"),
    (status = 404, body = ErrorBody, description = "The fake serves plain ws:// (no --tls)"),
))]
pub async fn root_certificate(admin: web::Data<Admin>) -> Result<HttpResponse, ApiError> {
    if !admin.fake.url().starts_with("wss://") {
        return Err(ApiError::not_found(
            "this fake serves plain ws://: start it with --tls for wss://",
        ));
    }
    Ok(HttpResponse::Ok()
        .content_type("application/x-pem-file")
        .body(admin.fake.root_certificate_pem()))
}
