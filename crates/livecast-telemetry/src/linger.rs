//! Closing a connection whose peer may still be sending, without destroying the last answer.
//!
//! A socket closed with unread bytes in its receive queue makes the kernel send a reset, and a
//! reset can destroy an answer the peer has not read yet (an HTTP server's 431 to an
//! oversized head, say). nginx's `lingering_close` is the usual cure, and this is it: shut the
//! write side (the answer is followed by a FIN), then read and discard until the peer closes
//! or a short time is up.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// How long a closing connection is read and discarded, at most.
pub const LINGER: Duration = Duration::from_secs(2);

/// Shuts the write side of `stream`, then discards what arrives for up to [`LINGER`].
pub async fn lingering_close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    if stream.shutdown().await.is_err() {
        return;
    }
    // On the heap, allocated only when a connection lingers: an array here would be part of
    // every future that may await this one (each viewer connection's task, whether it ever
    // lingers or not).
    let mut sink = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    /// Every viewer connection's task holds room for this future whether it lingers or not,
    /// so its discard buffer must not live in it.
    #[tokio::test]
    async fn the_lingering_future_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let future = lingering_close(&mut stream);
        let size = std::mem::size_of_val(&future);
        assert!(size < 1024, "lingering_close's future is {size} bytes");
    }
}
