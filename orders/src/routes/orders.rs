//! `/orders`: create, read, list, cancel, and the invoice.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use shared_protocol::{ClientMessage, OrderId};

use crate::domain::{NewOrder, OrderStatus};
use crate::error::ApiError;
use crate::flow;
use crate::routes::body;
use crate::startup::AppState;
use crate::store::{CancelRequest, Inserted};

/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

/// `POST /orders`: create an order; its payment starts in the background.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let body = body::json_object(&req, payload).await?;
    let new = NewOrder::parse(&body).map_err(|e| ApiError::Validation(e.message))?;
    match state.store.insert_order(&new, key.as_deref()).await? {
        Inserted::Created(order) => {
            tracing::info!(order_id = %order.id, amount = order.amount, currency = %order.currency, "order created");
            state
                .metrics
                .transition(OrderStatus::PendingPayment.as_str());
            state
                .link
                .send(flow::initiate(order.id, new.amount, new.currency));
            Ok(HttpResponse::Created()
                .insert_header((header::LOCATION, format!("/orders/{}", order.id)))
                .json(order))
        }
        Inserted::Replayed(order) => {
            tracing::info!(order_id = %order.id, "idempotent replay of an order");
            Ok(HttpResponse::Ok()
                .insert_header((header::LOCATION, format!("/orders/{}", order.id)))
                .json(order))
        }
        Inserted::KeyReused => Err(ApiError::Conflict(
            "this Idempotency-Key was already used with a different request".into(),
        )),
    }
}

/// `GET /orders/{id}`.
pub async fn get(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    match state.store.order(id).await? {
        Some(order) => Ok(HttpResponse::Ok().json(order)),
        None => Err(no_order(id)),
    }
}

/// `GET /orders?status=&limit=&after=`: newest first, keyset-paginated.
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let params = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| ApiError::Validation(format!("query string: {e}")))?
        .into_inner();
    let mut status = None;
    let mut limit = DEFAULT_PAGE_SIZE;
    let mut after = None;
    for (name, value) in params {
        match name.as_str() {
            "status" => {
                status = Some(OrderStatus::parse(&value).ok_or_else(|| {
                    ApiError::Validation(format!(
                        "status must be one of pending_payment, awaiting_payment, fulfilled, cancelled; got {value:?}"
                    ))
                })?)
            }
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE_SIZE).contains(l))
                    .ok_or_else(|| {
                        ApiError::Validation(format!(
                            "limit must be an integer from 1 to {MAX_PAGE_SIZE}; got {value:?}"
                        ))
                    })?
            }
            "after" => {
                after = Some(OrderId::parse(&value).map_err(|_| {
                    ApiError::Validation(format!(
                        "after must be the `next` cursor of a previous page; got {value:?}"
                    ))
                })?)
            }
            _ => {} // unknown parameters are ignored, like unknown JSON fields
        }
    }
    let page = state
        .store
        .list(status, limit, after)
        .await?
        .ok_or_else(|| {
            ApiError::Validation(
                "after names no order: use the `next` cursor of a previous page".into(),
            )
        })?;
    Ok(HttpResponse::Ok().json(json!({"orders": page.orders, "next": page.next})))
}

/// `POST /orders/{id}/cancel`: ask Payments to cancel; the order becomes `cancelled`
/// when Payments confirms.
pub async fn cancel(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    match state.store.request_cancel(id).await? {
        CancelRequest::Requested(order) => {
            tracing::info!(order_id = %id, "cancel requested; asking Payments");
            state
                .link
                .send(ClientMessage::CancelPayment { order_id: id });
            Ok(HttpResponse::Accepted().json(order))
        }
        CancelRequest::Final(order) => Err(ApiError::Conflict(format!(
            "order {id} is already {}",
            order.status.as_str()
        ))),
        CancelRequest::NotFound => Err(no_order(id)),
    }
}

/// `GET /orders/{id}/invoice`: 404 until the order is fulfilled.
pub async fn invoice(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    if let Some(invoice) = state.store.invoice(id).await? {
        return Ok(HttpResponse::Ok().json(invoice));
    }
    match state.store.order(id).await? {
        Some(order) => Err(ApiError::NotFound(format!(
            "order {id} has no invoice: it is {}",
            order.status.as_str()
        ))),
        None => Err(no_order(id)),
    }
}

fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(raw)
        .map_err(|_| ApiError::NotFound(format!("no order {raw:?}: order ids are UUIDs")))
}

fn no_order(id: OrderId) -> ApiError {
    ApiError::NotFound(format!("no order {id}"))
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::Validation("Idempotency-Key must be visible ASCII".into()))?;
    if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(ApiError::Validation(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
        )));
    }
    Ok(Some(key.to_owned()))
}
