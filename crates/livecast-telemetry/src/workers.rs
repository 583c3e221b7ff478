//! Thread-per-core serving: one single-threaded runtime per worker thread, fed by one acceptor
//! that hands each new connection to the worker with the fewest open connections.
//!
//! A request then lives on one thread from accept to the last byte: no cross-thread wake-ups,
//! no work stealing, the way nginx and HAProxy workers run. Shared state (pools, caches,
//! metrics) is ordinary thread-safe state behind `Arc`.
//!
//! Workers do not accept for themselves: when every worker waits on the same listening socket,
//! whichever wakes first takes the connection, and a client that opens its keep-alive
//! connections at once (a load balancer, a benchmark) often lands all of them on one worker
//! while the other idles. Connections are long-lived, so the hand-off costs next to nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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

/// Counts a connection against its worker's load while it is held.
#[derive(Debug)]
pub struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A new connection for a worker: the stream, the peer, and its [`Load`], which the worker
/// keeps until the connection is done.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub load: Load,
}

/// A connection on its way from the acceptor to a worker.
type Handoff = (std::net::TcpStream, SocketAddr, Load);

/// The acceptor's side of one worker: where its connections go, and how many it has open.
type Worker = (mpsc::UnboundedSender<Handoff>, Arc<AtomicUsize>);

/// The connections handed to one worker.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::UnboundedReceiver<Handoff>,
}

impl Incoming {
    /// The next connection; `None` once the acceptor has stopped (shutdown).
    pub async fn accept(&mut self) -> Option<Accepted> {
        loop {
            let (stream, peer, load) = self.rx.recv().await?;
            match TcpStream::from_std(stream) {
                Ok(stream) => return Some(Accepted { stream, peer, load }),
                Err(error) => tracing::warn!(%error, "cannot register a connection on a worker"),
            }
        }
    }
}

/// Runs `serve` on `threads` threads, each with its own single-threaded runtime and its own
/// [`Incoming`] connections, and returns once every thread's `serve` has returned. The caller's
/// runtime accepts from `listener` until `shutdown` and gives each connection to the worker
/// with the fewest open ones.
pub async fn serve_per_core<F, Fut>(
    threads: usize,
    listener: TcpListener,
    shutdown: CancellationToken,
    serve: F,
) -> std::io::Result<()>
where
    F: Fn(Incoming, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let serve = Arc::new(serve);
    let mut finished = Vec::with_capacity(threads);
    let mut workers = Vec::with_capacity(threads);
    for index in 0..threads.max(1) {
        let (tx, rx) = mpsc::unbounded_channel();
        let load = Arc::new(AtomicUsize::new(0));
        workers.push((tx, load));
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
                    tokio::select! {
                        () = serve(Incoming { rx }, index) => {}
                        () = keep_timer_wheel_busy() => {}
                    }
                });
                drop(runtime);
                let _ = done.send(());
            })?;
        finished.push(finished_rx);
    }
    let acceptor = tokio::spawn(accept_loop(listener, workers, shutdown));
    for rx in finished {
        let _ = rx.await;
    }
    acceptor.abort();
    Ok(())
}

/// Accepts until shutdown; each connection goes to the least loaded worker still running.
async fn accept_loop(listener: TcpListener, workers: Vec<Worker>, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let open = workers.iter().filter(|(tx, _)| !tx.is_closed());
        let Some((tx, load)) = open.min_by_key(|(_, load)| load.load(Ordering::Relaxed)) else {
            return;
        };
        load.fetch_add(1, Ordering::Relaxed);
        // A worker that stopped between the check and the send drops the connection with it.
        let _ = tx.send((stream, peer, Load(load.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections opened at once are spread evenly over the workers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_go_to_the_least_loaded_worker() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let per_worker: Arc<Vec<AtomicUsize>> =
            Arc::new((0..2).map(|_| AtomicUsize::new(0)).collect());
        let counts = per_worker.clone();
        let served = tokio::spawn(serve_per_core(
            2,
            listener,
            shutdown.clone(),
            move |mut incoming, index| {
                let counts = counts.clone();
                async move {
                    let mut held = Vec::new();
                    while let Some(accepted) = incoming.accept().await {
                        counts[index].fetch_add(1, Ordering::SeqCst);
                        held.push(accepted);
                    }
                }
            },
        ));
        let mut clients = Vec::new();
        for _ in 0..20 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while per_worker
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .sum::<usize>()
            < 20
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "connections not handed out"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let split: Vec<usize> = per_worker
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect();
        assert_eq!(split, [10, 10]);
        shutdown.cancel();
        served.await.unwrap().unwrap();
    }
}
