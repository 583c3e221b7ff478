//! `livecast-proxy`: parse flags, start logging, bind, run until SIGTERM/SIGINT.

use anyhow::Context;
use livecast_proxy::{Config, Listeners};

// Every proxied request allocates headers and bodies on two connections; mimalloc's per-thread
// heaps suit the thread-per-core workers (measured: see bench/balancer.py).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tokio::spawn(let_the_allocator_purge());
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

/// mimalloc gives freed memory back to the kernel (purges it) a delay after it was freed, but it
/// looks for memory to purge only when it frees a whole page: a process that has gone quiet
/// after a burst (thousands of viewers arrived, then idle) frees nothing more and keeps what
/// the burst used. Every two seconds this frees one block larger than mimalloc's largest size
/// class, which has a page of its own, so whatever is due is purged (with it, 9,500 viewers
/// arriving back to back cost about 0.7 kB each instead of 1.3 kB: bench/memory.py). The block
/// is never written, so it costs address space, not memory.
async fn let_the_allocator_purge() {
    const HUGE: usize = 1 << 20;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        drop(std::hint::black_box(Vec::<u8>::with_capacity(HUGE)));
    }
}
