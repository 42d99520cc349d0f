//! `/orders`: create, read, list, cancel, and the invoice.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde_json::json;
use shared_protocol::{ClientMessage, OrderId};
use tracing::Instrument;
use utoipa::ToSchema;

use crate::domain::{Incident, Invoice, Order};
use crate::domain::{NewOrder, OrderStatus};
use crate::error::{ApiError, ErrorBody};
use crate::flow;
use crate::routes::body;
use crate::state::AppState;
use crate::store::{CancelRequest, Inserted, Retried};

/// The body of `POST /orders`.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the request; the handler validates the JSON by hand
pub struct NewOrderRequest {
    /// Minor units (cents), 1 to 100000000.
    #[schema(minimum = 1, maximum = 100_000_000, example = 1999)]
    amount: i64,
    /// The ISO 4217 code of a current currency with minor units, in any case; stored
    /// upper case. (The pattern lists every code: `CurrencyCodes` fills it in.)
    #[schema(pattern = "^[A-Za-z]{3}$", example = "EUR")]
    currency: String,
    #[schema(max_length = 500, example = "2 × coffee")]
    description: Option<String>,
}

/// One page of orders, newest first.
#[derive(Serialize, ToSchema)]
pub struct OrderList {
    pub orders: Vec<Order>,
    /// Pass as `after` to get the next page; null on the last page.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub next: Option<shared_protocol::OrderId>,
}

/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

/// `POST /orders`: create an order; its payment starts in the background.
#[utoipa::path(post, path = "/orders", tag = "orders",
    request_body(content = NewOrderRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
        pattern = r"^[\x21-\x7E]([\x20-\x7E]*[\x21-\x7E])?$",
        description = "The same key with the same body returns the first order (200); with another body, 409")),
    responses(
        (status = 201, description = "Created; the payment starts in the background", body = Order,
            headers(("Location" = String, description = "/orders/{id}"))),
        (status = 200, description = "Replay of an Idempotency-Key: the first order", body = Order),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 408, description = "The body did not arrive within HTTP_BODY_TIMEOUT; nothing was written", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 422, description = "A field is missing, of the wrong type or out of range", body = ErrorBody),
        (status = 503, description = "Overloaded (the order writer's queue is full or it did not answer in time): retry after `Retry-After` seconds, with the same Idempotency-Key", body = ErrorBody,
            headers(("Retry-After" = String, description = "seconds"))),
    ))]
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let body = body::json_object(&req, payload, state.body_timeout).await?;
    let new = NewOrder::parse(&body).map_err(|e| ApiError::Validation(e.message))?;
    let span = service_kit::trace_context::traced(|| tracing::info_span!("insert_order"));
    let inserted = state
        .store
        .insert_order(&new, key.as_deref())
        .instrument(span)
        .await?;
    match inserted {
        Inserted::Created(order) => {
            tracing::info!(order_id = %order.id, amount = order.amount.minor(), currency = %order.currency.as_str(), "order created");
            state
                .metrics
                .transition(OrderStatus::PendingPayment.as_str());
            state.link.send(
                flow::initiate(order.id, new.amount, new.currency),
                order.created_at,
            );
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
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = Order), (status = 404, description = "No such order (or the id is not a UUID)", body = ErrorBody)))]
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
#[utoipa::path(get, path = "/orders", tag = "orders",
    params(
        ("status" = Option<OrderStatus>, Query),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "default 20"),
        ("after" = Option<String>, Query, format = Uuid,
            pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$",
            description = "the `next` cursor of the previous page (an order's id); any other UUIDv7 stands for its time: the orders created before it come next"),
    ),
    responses(
        (status = 200, body = OrderList),
        (status = 422, description = "A bad parameter", body = ErrorBody),
    ))]
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
                        "after must be the `next` cursor of a previous page (a UUID); got {value:?}"
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
                "after names no order and is not a UUIDv7 (which would stand for its time): \
                 use the `next` cursor of a previous page"
                    .into(),
            )
        })?;
    Ok(HttpResponse::Ok().json(json!({"orders": page.orders, "next": page.next})))
}

/// `POST /orders/{id}/cancel`: ask Payments to cancel; the order becomes `cancelled`
/// when Payments confirms.
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 202, description = "Payments was asked to cancel", body = Order),
        (status = 409, description = "The order is already final", body = ErrorBody),
        (status = 404, description = "No such order (or the id is not a UUID)", body = ErrorBody),
    ))]
pub async fn cancel(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    match state.store.request_cancel(id).await? {
        CancelRequest::Requested(order) => {
            tracing::info!(order_id = %id, "cancel requested; asking Payments");
            state.link.send(
                ClientMessage::CancelPayment { order_id: id },
                order.created_at,
            );
            Ok(HttpResponse::Accepted().json(order))
        }
        CancelRequest::Final(order) => Err(ApiError::Conflict(format!(
            "order {id} is already {}",
            order.status.as_str()
        ))),
        CancelRequest::NotFound => Err(no_order(id)),
    }
}

/// `POST /orders/{id}/retry`: an operator sends a parked order's request to Payments
/// again (after fixing what made Payments refuse it), with its attempts reset.
#[utoipa::path(post, path = "/orders/{id}/retry", tag = "operations",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 202, description = "Unparked; its request was sent to Payments again", body = Order),
        (status = 409, description = "The order is not parked", body = ErrorBody),
        (status = 404, description = "No such order (or the id is not a UUID)", body = ErrorBody),
    ))]
pub async fn retry(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    match state.store.retry(id).await? {
        Retried::Unparked(order, open) => {
            tracing::info!(order_id = %id, "parked order retried by an operator; asking Payments again");
            for message in flow::requests_for(std::slice::from_ref(&open)) {
                state.link.send(message, open.key.created_at);
            }
            Ok(HttpResponse::Accepted().json(order))
        }
        Retried::NotParked(order) => Err(ApiError::Conflict(format!(
            "order {id} is not parked: it is {}{}",
            order.status.as_str(),
            if order.status.is_final() {
                ""
            } else {
                " and its request is being handled"
            }
        ))),
        Retried::NotFound => Err(no_order(id)),
    }
}

/// `GET /orders/{id}/incidents`: what Payments reported that the order could not take,
/// oldest first (at most 100).
#[utoipa::path(get, path = "/orders/{id}/incidents", tag = "operations",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = Vec<Incident>),
        (status = 404, description = "No such order (or the id is not a UUID)", body = ErrorBody),
    ))]
pub async fn incidents(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&id)?;
    match state.store.incidents(id).await? {
        Some(incidents) => Ok(HttpResponse::Ok().json(incidents)),
        None => Err(no_order(id)),
    }
}

/// `GET /orders/{id}/invoice`: the invoice of a fulfilled order.
///
/// An invoice is not created with its order: it exists once the order is `fulfilled`,
/// and never for a cancelled one. Until then this answers 404 `not_found`, whose
/// message names the order's status. A client waits for `GET /orders/{id}` to say
/// `fulfilled`, then reads the invoice.
#[utoipa::path(get, path = "/orders/{id}/invoice", tag = "orders",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, description = "The order is fulfilled: its invoice", body = Invoice),
        (status = 404, description = "No such order, or the order is not fulfilled: \
            pending_payment and awaiting_payment orders have no invoice yet, cancelled ones \
            never will (the message says which)", body = ErrorBody),
    ))]
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
