//! Operator endpoints for dead letters (outcome events that used up
//! `MAX_DELIVERY_ATTEMPTS` without an ack): list them, and put one back into delivery.
//!
//! Everything under `/admin` needs `Authorization: Bearer <PAYMENTS_ADMIN_TOKEN>`
//! (compared in constant time), checked by [`require_admin_token`] on the scope, so on
//! what the router matched, and for unknown `/admin` paths too; without it the answer
//! is a 401 JSON error and nothing is read or written. The link's `PAYMENTS_TOKEN` is
//! not that token: whoever holds the link's secret is an Orders instance, not an
//! operator. Without `PAYMENTS_ADMIN_TOKEN` every admin request is refused.

use std::collections::HashMap;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Retry, off_arbiter};

/// Dead letters listed when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 50;
/// The most dead letters one listing returns.
pub const MAX_LIMIT: i64 = 500;

/// `POST /admin/events/{event_id}/retry`: a dead letter's attempts start again from zero
/// and it is sent again promptly. 200 with the event; 404 when there is no such event;
/// 409 when it is not dead-lettered (acked, or still being delivered).
pub async fn retry(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let raw = req.match_info().get("event_id").unwrap_or_default();
    let Some(event_id) = raw.parse::<i64>().ok().filter(|id| *id > 0) else {
        return Err(no_such_event(raw));
    };
    let store = state.store.clone();
    match off_arbiter(async move { store.retry(event_id).await }).await? {
        Retry::Retried(event) => {
            tracing::warn!(event_id, order_id = %event.order_id, "an operator retried a dead-lettered event");
            // The statement NOTIFYs every instance; this wakes this one's dispatcher even
            // if its listener is reconnecting.
            state.delivery.wake.notify_one();
            Ok(HttpResponse::Ok().json(event))
        }
        Retry::NotDead(event) => {
            let why = if event.acked_at.is_some() {
                "it is acked"
            } else {
                "it is still being delivered"
            };
            Err(ApiError::Conflict(format!(
                "event {event_id} is not dead-lettered: {why}"
            )))
        }
        Retry::Unknown => Err(no_such_event(raw)),
    }
}

/// `GET /admin/dead-letters?limit=N`: dead letters not acked, oldest first (`limit`
/// 1 to 500, default 50).
pub async fn dead_letters(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(req.query_string()).map_err(ApiError::InvalidLimit)?;
    let store = state.store.clone();
    let events = off_arbiter(async move { store.dead_letters(limit).await }).await?;
    Ok(HttpResponse::Ok().json(json!({"events": events, "limit": limit})))
}

/// The `limit` of the query string: absent means [`DEFAULT_LIMIT`].
fn limit(query: &str) -> Result<i64, String> {
    let params = web::Query::<HashMap<String, String>>::from_query(query)
        .map_err(|_| "the query string is not valid".to_owned())?;
    let Some(raw) = params.get("limit") else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<i64>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!(
            "limit must be a whole number from 1 to {MAX_LIMIT}, not {raw:?}"
        )),
    }
}

/// The middleware of the `/admin` scope: lets the request through only with the admin
/// token, or answers 401.
pub async fn require_admin_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let token = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.config.admin_token.as_ref());
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let refusal = match token {
        None => Some(ApiError::Unauthorized(
            "the admin endpoints are off: PAYMENTS_ADMIN_TOKEN is not set",
        )),
        Some(token) if !service_kit::token::bearer_matches(presented, token) => {
            Some(ApiError::Unauthorized(
                "a valid `Authorization: Bearer` token (PAYMENTS_ADMIN_TOKEN) is required",
            ))
        }
        Some(_) => None,
    };
    if let Some(refusal) = refusal {
        tracing::warn!(
            peer = ?req.peer_addr(),
            route = service_kit::routing::matched_pattern(req.request())
                .as_deref()
                .unwrap_or("unmatched"),
            with_header = presented.is_some(),
            "refused an admin request without a valid admin token"
        );
        let response = refusal.error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

fn no_such_event(raw: &str) -> ApiError {
    ApiError::NotFound(format!("no event {raw:?}"))
}

#[cfg(test)]
mod tests {
    use super::{DEFAULT_LIMIT, limit};

    #[test]
    fn the_limit_is_1_to_500_and_50_by_default() {
        assert_eq!(limit(""), Ok(DEFAULT_LIMIT));
        assert_eq!(limit("other=1"), Ok(DEFAULT_LIMIT));
        assert_eq!(limit("limit=1"), Ok(1));
        assert_eq!(limit("limit=500"), Ok(500));
        for bad in [
            "limit=0",
            "limit=501",
            "limit=-1",
            "limit=x",
            "limit=",
            "limit=1.5",
            "limit=99999999999999999999999",
        ] {
            assert!(limit(bad).is_err(), "{bad}");
        }
    }
}
