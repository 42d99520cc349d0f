//! The OpenAPI 3.1 document of the Orders API, assembled from the handlers' annotations
//! and the schema types next to them (utoipa), served at `GET /openapi.json`. A test
//! keeps the snapshot under `docs/` in step with it. Imports point one way: this
//! module lists the routes; the routes know nothing of it (the document reaches
//! `/openapi.json` through [`crate::state::AppState`]).

use utoipa::OpenApi;

use crate::domain::{Attention, Incident, Invoice, Order, OrderStatus};
use crate::error::{ErrorBody, ErrorDetail};
use crate::routes;
use crate::routes::health::Readiness;
use crate::routes::orders::{NewOrderRequest, OrderList};

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
        routes::health::openapi_json,
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
