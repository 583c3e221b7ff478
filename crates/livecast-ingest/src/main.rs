//! `livecast-ingest`: parse flags, start logging, bind, run until SIGTERM/SIGINT.

use anyhow::Context;
use livecast_ingest::{Config, Listeners};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = livecast_telemetry::parse_flags();
    livecast_telemetry::init_logging(config.log.log_format);
    config.validate()?;
    let listeners = Listeners::bind(&config).await.context("cannot bind")?;
    let shutdown = livecast_telemetry::shutdown_on_signals();
    livecast_ingest::run(config, listeners, shutdown).await?;
    Ok(())
}
