#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    service_kit::startup::run::<orders::Application>().await
}
