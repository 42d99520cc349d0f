//! The `payments` binary's `main`, built in this package so that its tests can run
//! the real Payments as a process of its own (`CARGO_BIN_EXE_e2e-payments`).

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    service_kit::startup::run::<payments::Application>().await
}
