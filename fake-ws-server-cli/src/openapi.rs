//! The OpenAPI 3.1 document of the admin API, assembled from the routes' annotations
//! (utoipa), served at `GET /openapi.json`; a test keeps `openapi.json` in step with it.

use utoipa::OpenApi;

use crate::admin::{self, connections, network, protocol, server};
use crate::scenario;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "fake-ws-server admin API",
        description = "Drive a standalone fake WebSocket server from a test in any language: mount rules, wait for connections and messages, send, close, slow a link down or unplug it, send forbidden frames, take the server down and up, read the attempts, verify.",
        version = env!("CARGO_PKG_VERSION"),
    ),
    paths(
        connections::list,
        connections::next,
        connections::get,
        connections::transcript,
        connections::next_message,
        connections::expect,
        connections::send,
        connections::close,
        connections::abort,
        connections::stall,
        connections::resume,
        connections::stop_answering_pings,
        connections::wait_closed,
        connections::wait_frames,
        connections::mount_rule,
        network::impair,
        network::clear_impairment,
        network::blackhole,
        network::heal,
        network::fault,
        protocol::ping,
        protocol::ping_every,
        protocol::expect_invalid,
        server::mount_rule,
        server::mount_handshake_rule,
        server::allow,
        server::broadcast,
        server::refuse,
        server::hang,
        server::accept,
        server::reset,
        server::stop,
        server::restart,
        server::attempts,
        server::wait_attempts,
        server::verify,
        server::root_certificate,
        admin::openapi_json,
    ),
    components(schemas(
        scenario::Scenario,
        scenario::RuleSpec,
        scenario::MatcherSpec,
        scenario::CloseSpec,
        scenario::TimesSpec,
        scenario::Bounds,
        scenario::HandshakeRuleSpec,
        scenario::HandshakeMatch,
        admin::ErrorBody,
        admin::Done,
        admin::Message,
    )),
)]
pub struct ApiDoc;

/// The document, pretty-printed.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}
