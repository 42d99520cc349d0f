//! The OpenAPI 3.1 document of the Orders API, generated from the handlers' annotations
//! and the response types (utoipa), served at `GET /openapi.json`. A test keeps the
//! snapshot under `docs/` in step with it.

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::domain::{Attention, Incident, Invoice, Order, OrderStatus};
use crate::routes;

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

/// Every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// malformed_json, payload_too_large, unsupported_media_type, validation_failed,
    /// not_found, method_not_allowed, unauthorized, conflict, unavailable or internal.
    #[schema(example = "validation_failed")]
    pub code: String,
    #[schema(example = "amount is required")]
    pub message: String,
}

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `not_ready`, or `draining` (after a SIGTERM, before the instance stops
    /// accepting).
    pub status: String,
    /// `up` or `down`.
    pub database: String,
    /// `connected`, `disconnected`, or `died` (its thread ended: restart the process).
    /// Not part of readiness: orders wait in the database while Payments is away.
    pub payments_link: String,
    /// `running` or `stopped`: the task that writes `POST /orders`.
    pub order_writer: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orders",
        description = "Create and read orders; payments happen through the Payments service.",
        version = env!("CARGO_PKG_VERSION"),
    ),
    paths(
        routes::orders::create,
        routes::orders::list,
        routes::orders::get,
        routes::orders::cancel,
        routes::orders::invoice,
        routes::orders::retry,
        routes::orders::incidents,
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
        openapi_json,
    ),
    components(schemas(Order, OrderStatus, Attention, Incident, Invoice, NewOrderRequest, OrderList, ErrorBody, ErrorDetail, Readiness)),
    modifiers(&ApiToken, &CurrencyCodes),
)]
pub struct ApiDoc;

/// The currencies `POST /orders` takes, in the request's schema: a pattern that
/// matches each code of `shared_protocol::Currency::all` in any case (`[Ee][Uu][Rr]|…`),
/// so that a client generated from the document (or schemathesis) knows which three
/// letters are a currency, and JSON Schema has no case-insensitive enum.
struct CurrencyCodes;

impl utoipa::Modify for CurrencyCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, Schema};
        let codes: Vec<String> = shared_protocol::Currency::all()
            .iter()
            .map(|c| {
                c.as_str()
                    .chars()
                    .map(|l| format!("[{l}{}]", l.to_ascii_lowercase()))
                    .collect()
            })
            .collect();
        let pattern = format!("^({})$", codes.join("|"));
        let request = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("NewOrderRequest"));
        if let Some(RefOr::T(Schema::Object(request))) = request
            && let Some(RefOr::T(Schema::Object(currency))) = request.properties.get_mut("currency")
        {
            currency.pattern = Some(pattern);
        }
    }
}

/// `ORDERS_API_TOKEN` in the document: the `api_token` bearer scheme, and on every
/// operation of the protected routes (all but [`routes::OPEN_PATHS`]) an optional
/// requirement of it (optional: the token is off unless configured) and the 401 answer.
struct ApiToken;

impl utoipa::Modify for ApiToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        use utoipa::openapi::{Ref, ResponseBuilder};

        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "api_token",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "ORDERS_API_TOKEN, when the service is configured with one",
                        ))
                        .build(),
                ),
            );
        let unauthorized = ResponseBuilder::new()
            .description("ORDERS_API_TOKEN is set and the request has no valid `Authorization: Bearer` token")
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if routes::OPEN_PATHS.contains(&path.as_str()) {
                continue;
            }
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                operation.security = Some(vec![
                    SecurityRequirement::new("api_token", Vec::<String>::new()),
                    SecurityRequirement::default(),
                ]);
                operation
                    .responses
                    .responses
                    .insert("401".into(), unauthorized.clone().into());
            }
        }
    }
}

/// The document as pretty JSON (what `/openapi.json` serves and `docs/` keeps).
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1 of this API", content_type = "application/json")))]
pub async fn openapi_json() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}
