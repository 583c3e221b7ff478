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
    // mimalloc asks the kernel for transparent huge pages for its arenas, so a burst of viewers
    // leaves 2 MiB pages behind where a few kilobytes each were touched: 9,500 viewers arriving
    // back to back cost 2.1 kB each with them, 1.3 kB without (bench/memory.py). A proxy's
    // working set is small; the TLB gains nothing from them.
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(%error, "cannot turn transparent huge pages off for this process");
    }
    config.validate()?;
    let listeners = Listeners::bind(&config).await.context("cannot bind")?;
    let shutdown = livecast_telemetry::shutdown_on_signals();
    livecast_proxy::run(config, listeners, shutdown).await?;
    Ok(())
}
