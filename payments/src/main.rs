use clap::Parser;
use payments::{Application, Config};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    service_kit::telemetry::init(&config.rust_log, config.log_format)?;
    Application::build(config)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
