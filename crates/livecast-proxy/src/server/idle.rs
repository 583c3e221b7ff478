//! Idle plain viewer connections of one worker, kept out of tasks.
//!
//! A kept-alive viewer between two playlist reloads, or one that stopped watching but keeps
//! its connection, needs nothing but its socket, its deadline and its connection slot. A task
//! per such viewer costs a kilobyte and more (its future, as large as its busiest state, and
//! the task's own header), so once the plain loop has dropped a connection's busy state the
//! connection comes here: a slot in one table per worker, one small waker per connection for
//! its socket's readiness, and one timer for the whole table (the nearest deadline). When a
//! request arrives, or the socket closes, the connection gets a task again ([`Parked::run`]);
//! when its header timeout passes, or on shutdown, it is closed here. This is how HAProxy and
//! nginx keep idle connections: a small record each, not a stack.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Wake, Waker};

use prometheus::IntGauge;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What an idle connection holds until it is closed (its connection slot, its worker's load
/// count), type-erased.
pub(super) type Held = Box<dyn Send>;

/// An idle plain connection: nothing has been read of its next request.
pub(super) struct Idle {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub held: Held,
    /// When the wait for the next request began: the header timeout counts from here.
    pub since: Instant,
}

/// One worker's idle connections.
pub(super) struct Parked {
    table: Mutex<Table>,
    /// Told when a parked socket became ready.
    woken: Notify,
    /// `livecast_proxy_idle_connections`, which every worker's table counts in.
    gauge: IntGauge,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    /// Indices of empty slots.
    free: Vec<usize>,
    /// (deadline, slot, generation), nearest first; entries of slots since emptied are
    /// skipped when they come up, and dropped when the heap is rebuilt.
    deadlines: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Slots whose socket became ready, with the generation that was parked there.
    ready: Vec<(usize, u32)>,
    /// Occupied slots.
    parked: usize,
    /// Shutdown came: nothing is parked any more.
    closed: bool,
}

#[derive(Default)]
struct Slot {
    /// Counts the connections parked in this slot, so that a late wake-up or deadline of an
    /// earlier one finds nothing.
    generation: u32,
    idle: Option<(Idle, Instant)>,
}

/// Wakes the table for one slot's socket.
struct SlotWaker {
    parked: Weak<Parked>,
    slot: usize,
    generation: u32,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(parked) = self.parked.upgrade() {
            parked.lock().ready.push((self.slot, self.generation));
            parked.woken.notify_one();
        }
    }
}

impl Parked {
    pub fn new(gauge: IntGauge) -> Self {
        Self {
            table: Mutex::default(),
            woken: Notify::new(),
            gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many connections are parked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().parked
    }

    /// Parks `idle` until its socket is ready or `deadline`. Gives it back when it is ready
    /// already (its task carries on); after shutdown, closes it.
    pub fn park(self: &Arc<Self>, idle: Idle, deadline: Instant) -> Option<Idle> {
        let mut table = self.lock();
        if table.closed {
            return None;
        }
        let slot = match table.free.pop() {
            Some(slot) => slot,
            None => {
                table.slots.push(Slot::default());
                table.slots.len() - 1
            }
        };
        let generation = table.slots[slot].generation;
        let waker = Waker::from(Arc::new(SlotWaker {
            parked: Arc::downgrade(self),
            slot,
            generation,
        }));
        // Registers the waker with the socket (it runs on this worker's driver, never while
        // the table is locked here).
        let ready = idle
            .stream
            .poll_read_ready(&mut Context::from_waker(&waker));
        if ready.is_ready() {
            table.free.push(slot);
            return Some(idle);
        }
        table.slots[slot].idle = Some((idle, deadline));
        // The table's timer needs resetting only for a deadline nearer than all others.
        let nearest = table
            .deadlines
            .peek()
            .is_none_or(|Reverse((d, _, _))| deadline < *d);
        table.deadlines.push(Reverse((deadline, slot, generation)));
        table.parked += 1;
        self.gauge.inc();
        // Wake-ups and deadlines of connections that left early pile up; a rebuild from
        // the parked ones bounds the heap.
        if table.deadlines.len() > 2 * table.parked + 64 {
            let live: Vec<_> = table
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.idle.as_ref().map(|(_, d)| Reverse((*d, i, s.generation))))
                .collect();
            table.deadlines = live.into();
        }
        if nearest {
            self.woken.notify_one();
        }
        None
    }

    /// Empties `slot` if it still holds `generation`'s connection.
    fn take(&self, table: &mut Table, slot: usize, generation: u32) -> Option<(Idle, Instant)> {
        let entry = table.slots.get_mut(slot)?;
        if entry.generation != generation || entry.idle.is_none() {
            return None;
        }
        entry.generation = entry.generation.wrapping_add(1);
        let taken = entry.idle.take();
        table.free.push(slot);
        table.parked -= 1;
        self.gauge.dec();
        taken
    }

    /// Serves the table until shutdown: each connection whose socket became ready goes to
    /// `resume` (which gives it a task), each one past its deadline is closed. On shutdown,
    /// every parked connection is closed.
    pub async fn run(self: Arc<Self>, resume: impl Fn(Idle), shutdown: CancellationToken) {
        loop {
            let next = self.lock().deadlines.peek().map(|Reverse((d, _, _))| *d);
            tokio::select! {
                () = self.woken.notified() => {}
                () = async {
                    match next {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                } => {}
                () = shutdown.cancelled() => break,
            }
            let (ready, expired) = {
                let mut table = self.lock();
                let woken = std::mem::take(&mut table.ready);
                let ready: Vec<Idle> = woken
                    .into_iter()
                    .filter_map(|(slot, generation)| self.take(&mut table, slot, generation))
                    .map(|(idle, _)| idle)
                    .collect();
                let now = Instant::now();
                let mut expired = Vec::new();
                while let Some(Reverse((deadline, slot, generation))) =
                    table.deadlines.peek().copied()
                {
                    if deadline > now {
                        break;
                    }
                    table.deadlines.pop();
                    expired.extend(self.take(&mut table, slot, generation));
                }
                (ready, expired)
            };
            // Closed outside the lock: each drop deregisters a socket.
            drop(expired);
            for idle in ready {
                resume(idle);
            }
        }
        let parked = {
            let mut table = self.lock();
            table.closed = true;
            table.deadlines.clear();
            table.ready.clear();
            self.gauge.sub(table.parked as i64);
            table.parked = 0;
            std::mem::take(&mut table.slots)
        };
        drop(parked);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// `stream` as the plain loop leaves it: its last read found nothing.
    fn idle(stream: TcpStream, held: Arc<()>) -> Idle {
        let mut byte = [0u8; 1];
        let _ = stream.try_read(&mut byte);
        Idle {
            peer: stream.peer_addr().unwrap(),
            stream,
            held: Box::new(held),
            since: Instant::now(),
        }
    }

    #[tokio::test]
    async fn parked_connections_resume_when_a_request_comes_and_close_at_their_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gauge = IntGauge::new("idle", "idle").unwrap();
        let parked = Arc::new(Parked::new(gauge.clone()));
        let (resumed_tx, mut resumed) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(parked.clone().run(
            move |idle: Idle| resumed_tx.send(idle).unwrap(),
            shutdown.clone(),
        ));
        let held = Arc::new(());
        let mut clients = Vec::new();
        let soon = Instant::now() + Duration::from_millis(300);
        let later = Instant::now() + Duration::from_secs(30);
        for i in 0..20 {
            let (client, server) = pair(&listener).await;
            let deadline = if i < 10 { soon } else { later };
            assert!(parked.park(idle(server, held.clone()), deadline).is_none());
            clients.push(client);
        }
        assert_eq!(parked.len(), 20);
        assert_eq!(gauge.get(), 20);
        assert_eq!(
            Arc::strong_count(&held),
            21,
            "each holds its slot while parked"
        );

        // A request on one of the long-lived ones gives it back, with its bytes unread.
        clients[15]
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let back = tokio::time::timeout(Duration::from_secs(2), resumed.recv())
            .await
            .expect("resumed")
            .unwrap();
        assert_eq!(back.peer, clients[15].local_addr().unwrap());
        let mut buf = [0u8; 64];
        let n = back.stream.try_read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n\r\n");
        drop(back);

        // The first ten reach their deadline and are closed, slots released.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(parked.len(), 9);
        assert_eq!(gauge.get(), 9);
        assert_eq!(Arc::strong_count(&held), 10);
        for client in &mut clients[..10] {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(1), client.peek(&mut byte))
                .await
                .expect("closed by the table");
            assert!(matches!(read, Ok(0)), "{read:?}");
        }

        // A connection that is readable already is handed straight back.
        let (mut client, server) = pair(&listener).await;
        let waiting = idle(server, held.clone());
        client.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(parked.park(waiting, later).is_some());

        // Shutdown closes the rest, and nothing is parked after it.
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(Arc::strong_count(&held), 1);
        assert_eq!(gauge.get(), 0);
        let (_client, server) = pair(&listener).await;
        assert!(parked.park(idle(server, held.clone()), later).is_none());
        assert_eq!(Arc::strong_count(&held), 1, "closed at once");
    }

    /// The point of the table: a parked connection costs a slot and a waker, not a task.
    #[test]
    fn a_parked_connection_is_small() {
        let slot = std::mem::size_of::<Slot>();
        let waker = std::mem::size_of::<SlotWaker>() + 2 * std::mem::size_of::<usize>();
        assert!(slot + waker <= 200, "slot {slot} + waker {waker} bytes");
    }
}
