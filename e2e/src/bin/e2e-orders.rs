//! The `orders` binary's `main`, built in this package so that its tests can run the
//! real Orders as a process of its own (`CARGO_BIN_EXE_e2e-orders`): the trace test
//! needs each service in its own process, with its own `service.name`.

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    service_kit::startup::run::<orders::Application>().await
}
