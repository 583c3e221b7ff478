//! The balancer's clients: how it talks to the front-ends.
//!
//! - [`inline`]: the HTTP/1.1 client for viewers' GET and HEAD, driven by the viewer's own task.
//! - [`hyper`]: hyper's HTTP/1.1 client for every other method (bodies streamed through).
//! - [`control`]: the control plane's client (health checks, the status page, the viewer count).
//!
//! [`Upstreams`] is a viewer connection's way to both.

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

/// The upstream side of one client connection.
///
/// GET and HEAD go through the inline client, whose idle connections live in the worker
/// thread's list (`worker`): an answer's connection goes back there as soon as its body is read,
/// so viewers arriving together on a worker share a few front-end connections instead of
/// holding one each while they think. Other methods use hyper's connections (`other`), kept
/// with the client connection.
#[derive(Debug, Default)]
pub(crate) struct Upstreams {
    /// The worker thread's idle inline connections, shared by its viewer connections.
    pub worker: inline::IdleConns,
    /// hyper's idle connections.
    pub other: hyper::IdleSenders,
    /// The client's address as an `X-Forwarded-For` value, formatted once per connection.
    peer: std::sync::OnceLock<HeaderValue>,
}

impl Upstreams {
    /// The upstream side of a new viewer connection on the worker whose shared idle list is
    /// `worker`.
    pub fn on_worker(worker: inline::IdleConns) -> Self {
        Self {
            worker,
            ..Self::default()
        }
    }

    /// The viewer idles or leaves: the worker keeps a bounded number of idle connections.
    pub fn trim_idle(&self) {
        inline::trim(&self.worker);
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
