//! Writes to a viewer's TLS connection gathered over one turn of its connection's task.
//!
//! hyper flushes after each piece it writes, so an answer's head and each chunk of its body
//! could each become a TLS record and a system call of their own. Here hyper's writes and
//! flushes only fill a buffer; the connection's task writes it out, as one record where it
//! fits, after each time it has polled hyper ([`Drain::poll_drain`]). Nothing waits longer
//! than that turn. (The balancer's own HTTP/2 gathers its frames itself.)

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Past this many buffered bytes a write goes out before more is taken.
const LIMIT: usize = 64 * 1024;

/// The most plaintext one TLS record carries.
const RECORD: usize = 16 * 1024;

struct Shared<T> {
    io: T,
    out: BytesMut,
}

/// The side hyper reads from and writes to.
pub(super) struct Coalescing<T>(Arc<Mutex<Shared<T>>>);

/// The side the connection's task writes the gathered bytes out with.
pub(super) struct Drain<T>(Arc<Mutex<Shared<T>>>);

/// Splits `io` into the side hyper uses and the side that writes out what it wrote.
pub(super) fn split<T>(io: T) -> (Coalescing<T>, Drain<T>) {
    let shared = Arc::new(Mutex::new(Shared {
        io,
        out: BytesMut::new(),
    }));
    (Coalescing(shared.clone()), Drain(shared))
}

fn lock<T>(shared: &Mutex<Shared<T>>) -> MutexGuard<'_, Shared<T>> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: AsyncWrite + Unpin> Shared<T> {
    /// Writes out everything buffered, then flushes `io`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx, 0))?;
        if self.out.capacity() > LIMIT {
            // A large answer grew the buffer: it goes back to nothing between bursts.
            self.out = BytesMut::new();
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Writes out what is buffered but its last `leave` bytes.
    fn poll_write_out(&mut self, cx: &mut Context<'_>, leave: usize) -> Poll<io::Result<()>> {
        while self.out.len() > leave {
            let upto = self.out.len() - leave;
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[..upto]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room in a full buffer: writes out whole TLS records' worth and keeps the rest,
    /// which goes out with what follows. Writing it all would end each 64 KB of a segment
    /// with a record (and a system call) of its own for the few bytes past the last whole
    /// record.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.len() >= LIMIT {
            ready!(self.poll_write_out(cx, self.out.len() % RECORD))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> Drain<T> {
    /// Writes out what hyper wrote since the last call.
    pub fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.0).poll_drain(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut lock(&self.0).io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut shared = lock(&self.0);
        ready!(shared.poll_room(cx))?;
        shared.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut shared = lock(&self.0);
        ready!(shared.poll_room(cx))?;
        let mut n = 0;
        for buf in bufs {
            shared.out.extend_from_slice(buf);
            n += buf.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Deferred to the end of the task's turn ([`Drain::poll_drain`]).
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.0);
        ready!(shared.poll_drain(cx))?;
        Pin::new(&mut shared.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn writes_go_out_together_when_drained_and_none_is_lost() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let (mut io, drain) = split(ours);
        io.write_all(b"one ").await.unwrap();
        io.write_all(b"two ").await.unwrap();
        io.flush().await.unwrap();
        let mut byte = [0u8; 1];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), theirs.read(&mut byte))
                .await;
        assert!(early.is_err(), "nothing goes out before the drain");
        std::future::poll_fn(|cx| drain.poll_drain(cx))
            .await
            .unwrap();
        let mut got = [0u8; 8];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two ");
        // Past the limit, a write makes room by writing out first: whole records only, the
        // few bytes past them wait to go with what follows.
        let big = vec![7u8; LIMIT + 10];
        io.write_all(&big).await.unwrap();
        io.write_all(b"end").await.unwrap();
        let mut got = vec![0u8; LIMIT];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(got, big[..LIMIT]);
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), theirs.read(&mut byte))
                .await;
        assert!(early.is_err(), "the bytes past the last whole record wait");
        io.shutdown().await.unwrap();
        let mut rest = Vec::new();
        theirs.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, [&big[LIMIT..], b"end"].concat());
    }
}
