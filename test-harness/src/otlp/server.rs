//! The HTTP side: actix-web on a thread of its own (its own actix system), so the
//! receiver answers while the test's runtime is blocked, for example in a span
//! processor's `force_flush` or a blocking exporter's send.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tokio::sync::oneshot;

use super::Shared;

/// The largest request body taken, in bytes; a larger one is answered 413.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

const PROTOBUF: &str = "application/x-protobuf";

/// Serves `POST /v1/traces` on `listener` from a new thread; returns once it listens.
pub(super) async fn spawn(shared: Arc<Shared>, listener: TcpListener) -> ServerHandle {
    let (ready, listening) = oneshot::channel();
    std::thread::Builder::new()
        .name("otlp-receiver".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::from(shared);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                        .service(web::resource("/v1/traces").route(web::post().to(export)))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listener);
                let server = match server {
                    Ok(server) => server.run(),
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(server.handle()));
                let _ = server.await;
            });
        })
        .expect("spawn the OTLP receiver's thread");
    listening
        .await
        .expect("the OTLP receiver's thread ended before it listened")
        .expect("the OTLP receiver could not listen on its socket")
}

/// `POST /v1/traces`: 415 unless protobuf without a content encoding, 400 unless an
/// `ExportTraceServiceRequest`, else 200 with an `ExportTraceServiceResponse` (a
/// partial success when spans beyond the receiver's bound were dropped).
async fn export(request: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    if let Err(why) = check_headers(&request) {
        shared.refuse(format!("415: {why}"));
        return HttpResponse::UnsupportedMediaType()
            .content_type("text/plain; charset=utf-8")
            .body(why);
    }
    let decoded = match ExportTraceServiceRequest::decode(body) {
        Ok(decoded) => decoded,
        Err(e) => {
            let why = format!("not an ExportTraceServiceRequest: {e}");
            shared.refuse(format!("400: {why}"));
            return HttpResponse::BadRequest()
                .content_type("text/plain; charset=utf-8")
                .body(why);
        }
    };
    let dropped = shared.record(decoded);
    let partial_success = (dropped > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(dropped).unwrap_or(i64::MAX),
        error_message: format!(
            "the test's OTLP receiver keeps at most {} spans",
            shared.max_spans
        ),
    });
    HttpResponse::Ok()
        .content_type(PROTOBUF)
        .body(ExportTraceServiceResponse { partial_success }.encode_to_vec())
}

/// Protobuf (`application/x-protobuf`, parameters allowed), not compressed.
fn check_headers(request: &HttpRequest) -> Result<(), String> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let content_type = header(CONTENT_TYPE).unwrap_or_default();
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case(PROTOBUF) {
        return Err(format!(
            "Content-Type {content_type:?}: this receiver takes OTLP/HTTP with protobuf \
             ({PROTOBUF}) only"
        ));
    }
    match header(CONTENT_ENCODING) {
        Some(encoding) if !encoding.trim().eq_ignore_ascii_case("identity") => Err(format!(
            "Content-Encoding {encoding:?}: this receiver takes uncompressed bodies only"
        )),
        _ => Ok(()),
    }
}
