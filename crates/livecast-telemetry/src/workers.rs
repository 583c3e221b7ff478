//! Thread-per-core serving: one single-threaded runtime per worker thread, all accepting from
//! the same listening socket.
//!
//! A request then lives on one thread from accept to the last byte: no cross-thread wake-ups,
//! no work stealing, the way nginx and HAProxy workers run. Shared state (pools, caches,
//! metrics) is ordinary thread-safe state behind `Arc`.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

/// The number of worker threads to use when the operator asked for `requested` (0: one per CPU).
pub fn worker_count(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

/// How often the worker's idle timer fires; see [`keep_timer_wheel_busy`].
const TIMER_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Keeps one timer pending on the worker at all times.
///
/// hyper arms a header-read timer for every request head it waits for. When a new timer is due
/// earlier than anything the runtime's timer wheel knew when it last parked (and with every
/// connection busy it often knew of nothing), tokio wakes its own driver through an eventfd:
/// one extra `write` and `epoll_wait` per request. A timer that is always due within
/// [`TIMER_TICK`] (shorter than any header timeout) keeps new timers later than the next wake,
/// at the cost of four wake-ups a second per worker.
async fn keep_timer_wheel_busy() {
    loop {
        tokio::time::sleep(TIMER_TICK).await;
    }
}

/// Runs `serve` on `threads` threads, each with its own single-threaded runtime and its own
/// handle on `listener`, and returns once every thread's `serve` has returned.
pub async fn serve_per_core<F, Fut>(
    threads: usize,
    listener: TcpListener,
    serve: F,
) -> std::io::Result<()>
where
    F: Fn(TcpListener, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let listener = listener.into_std()?;
    let serve = Arc::new(serve);
    let mut finished = Vec::with_capacity(threads);
    for index in 0..threads.max(1) {
        let own = listener.try_clone()?;
        let serve = serve.clone();
        let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("livecast-io-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(error) => {
                        tracing::error!(%error, "cannot start a worker runtime");
                        return;
                    }
                };
                runtime.block_on(async move {
                    match TcpListener::from_std(own) {
                        Ok(listener) => {
                            tokio::select! {
                                () = serve(listener, index) => {}
                                () = keep_timer_wheel_busy() => {}
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot register the listener on a worker")
                        }
                    }
                });
                drop(runtime);
                let _ = done.send(());
            })?;
        finished.push(finished_rx);
    }
    for rx in finished {
        let _ = rx.await;
    }
    Ok(())
}
