//! `livecast-proxy`: parse flags, start logging, bind, run until SIGTERM/SIGINT.

use anyhow::Context;
use livecast_proxy::{Config, Listeners};

// Every proxied request allocates headers and bodies on two connections; mimalloc's per-thread
// heaps suit the thread-per-core workers (measured: see bench/balancer.py).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = livecast_telemetry::parse_flags();
    livecast_telemetry::init_logging(config.log.log_format);
    config.validate()?;
    let listeners = Listeners::bind(&config).await.context("cannot bind")?;
    let shutdown = livecast_telemetry::shutdown_on_signals();
    livecast_proxy::run(config, listeners, shutdown).await?;
    Ok(())
}
