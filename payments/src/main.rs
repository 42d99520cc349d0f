#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    service_kit::startup::run::<payments::Application>().await
}
