//! The balancer's clients: how it talks to the front-ends.
//!
//! - [`inline`]: the HTTP/1.1 client for viewers' GET and HEAD, driven by the viewer's own task.
//! - [`hyper`]: hyper's HTTP/1.1 client for every other method (bodies streamed through).
//! - [`control`]: the control plane's client (health checks, the status page, the viewer count).
//!
//! [`Upstreams`] holds a viewer connection's own upstream connections for the first two.

pub(crate) mod control;
pub(crate) mod hyper;
pub(crate) mod inline;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::combinators::BoxBody;
use tokio::net::TcpStream;

/// Error type of bodies on both sides of the proxy.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type on both sides of the proxy.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// The upstream connections of one client connection, one per backend it has used.
///
/// Keeping them with the client connection (on its worker thread) spares every request a trip
/// through a shared pool: HTTP/1.1 sends one request at a time per connection, so a viewer's
/// requests simply reuse its own keep-alive connection to the front-end. GET and HEAD use the
/// inline client's connections (`raw`), other methods hyper's (`other`). While the viewer idles,
/// its inline connections wait in its worker thread's list (`worker`) for any viewer there.
#[derive(Debug, Default)]
pub(crate) struct Upstreams {
    /// The inline client's idle connections.
    pub raw: inline::IdleConns,
    /// The worker thread's idle inline connections, shared by its viewer connections.
    pub worker: inline::IdleConns,
    /// hyper's idle connections.
    pub other: hyper::IdleSenders,
    /// The client's address as an `X-Forwarded-For` value, formatted once per connection.
    peer: std::sync::OnceLock<HeaderValue>,
}

impl Upstreams {
    /// The upstream connections of a new viewer connection on the worker whose shared idle
    /// list is `worker`.
    pub fn on_worker(worker: inline::IdleConns) -> Self {
        Self {
            worker,
            ..Self::default()
        }
    }

    /// The inline client's idle connections, the viewer's own and its worker's.
    pub fn inline(&self) -> (&inline::IdleConns, &inline::IdleConns) {
        (&self.raw, &self.worker)
    }

    /// The viewer idles: its inline connections go to the worker's list.
    pub fn park_idle(&self) {
        inline::park(&self.raw, &self.worker);
    }

    pub fn peer_header(&self, ip: IpAddr) -> &HeaderValue {
        self.peer.get_or_init(|| {
            HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
        })
    }
}

/// Opens a TCP connection to a front-end within `timeout`, without Nagle's delay.
pub(crate) async fn tcp(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(result) => result?,
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_header_is_the_address() {
        let upstreams = Upstreams::default();
        assert_eq!(
            upstreams.peer_header("10.1.2.3".parse().unwrap()),
            "10.1.2.3"
        );
    }
}
