use clap::Parser;
use orders::{Application, Config};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    service_kit::telemetry::init(&config.common.rust_log, config.common.log_format)?;
    Application::build(config)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
