//! hyper's HTTP/1.1 client, for the requests the inline client does not send: methods other
//! than GET and HEAD, whose body is streamed through. Its connections live with the viewer
//! connection, like the inline client's.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::Body;

/// Why a call through hyper's client failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("http: {0}")]
    Http(#[from] ::hyper::Error),
}

/// Idle hyper connections of one viewer connection, by front-end address.
#[derive(Debug, Default)]
pub(crate) struct IdleSenders(Mutex<Vec<(SocketAddr, SendRequest<Body>)>>);

impl IdleSenders {
    /// Sends `request` to `addr` on an idle connection if one is still open, else on a new one.
    pub async fn send(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let reused = {
            let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
            idle.iter()
                .position(|(a, s)| *a == addr && !s.is_closed())
                .map(|i| idle.swap_remove(i).1)
        };
        let mut sender = match reused {
            Some(mut sender) => match sender.ready().await {
                Ok(()) => sender,
                // A keep-alive connection the front-end closed meanwhile: open a fresh one.
                Err(_) => connect(addr, connect_timeout).await?,
            },
            None => connect(addr, connect_timeout).await?,
        };
        let response = sender.send_request(request).await?;
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((addr, sender));
        Ok(response)
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<SendRequest<Body>, UpstreamError> {
    let stream = super::tcp(addr, timeout)
        .await
        .map_err(UpstreamError::Connect)?;
    let (sender, connection) =
        ::hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream connection ended");
        }
    });
    Ok(sender)
}
