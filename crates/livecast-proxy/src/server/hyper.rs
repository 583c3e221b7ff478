//! hyper's side of the viewer connections: HTTPS (HTTP/2 or HTTP/1.1) and whatever the plain
//! HTTP/1.1 loop hands over. One serving function for both protocols; each request goes
//! through the same policy as the plain loop's ([`Forwarder::decide`], then
//! [`Forwarder::fetch`] or [`Forwarder::forward_once`]), with header maps for its wire form.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use livecast_telemetry::CancellationToken;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::Connections;
use crate::client::{inline, Body, BoxError, Upstreams};
use crate::forward::{Decision, Forwarder};
use crate::headers::{last_forwarded, strip_hop_by_hop, ForFrontEnd, Forwarding, X_REQUEST_ID};
use crate::pool::Lease;

/// Which protocol hyper speaks on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// HTTP/1.1, over TLS or not.
    Http1 { tls: bool },
    /// HTTP/2 (always over TLS here).
    Http2,
}

/// Serves one viewer connection with hyper until it ends; on shutdown, lets the requests in
/// flight finish (HTTP/2 sends GOAWAY, HTTP/1.1 closes after the current answer). `drain`
/// runs after every poll of hyper's connection: it writes out what hyper wrote meanwhile when
/// `io` gathers writes ([`super::coalesce`]), and is `Ready` at once when it does not.
pub(super) async fn serve<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    connections: &Connections,
    upstreams: &Arc<Upstreams>,
    protocol: Protocol,
    drain: impl FnMut(&mut Context<'_>) -> Poll<std::io::Result<()>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = &connections.shared.shutdown;
    let upstreams = upstreams.clone();
    let forwarder = connections.forwarder.clone();
    let tls = protocol != Protocol::Http1 { tls: false };
    let service = service_fn(move |request| {
        let forwarder = forwarder.clone();
        let upstreams = upstreams.clone();
        async move { Ok::<_, Infallible>(handle(&forwarder, request, peer, tls, &upstreams).await) }
    });
    let limits = &connections.shared;
    let result = match protocol {
        Protocol::Http1 { .. } => {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes)
                .serve_connection(io, service);
            until_shutdown(connection, |c| c.graceful_shutdown(), shutdown, None, drain).await
        }
        Protocol::Http2 => {
            let streams = InTask::default();
            let connection =
                http2_builder(&streams, limits.max_header_bytes).serve_connection(io, service);
            until_shutdown(
                connection,
                |c| c.graceful_shutdown(),
                shutdown,
                Some(&streams),
                drain,
            )
            .await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}

/// A stream's work as hyper hands it over: its handler, then its answer's body.
type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// hyper's executor for the streams of an HTTP/2 connection: instead of a task of its own,
/// each stream waits here to be polled by its connection's task ([`until_shutdown`]). A
/// stream then costs no task to start, its answer needs no wake-up of another task to reach
/// the connection, and the answers of a turn go out together.
#[derive(Clone, Default)]
struct InTask(Arc<Mutex<Vec<StreamFuture>>>);

impl InTask {
    fn take(&self) -> Vec<StreamFuture> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl<F> hyper::rt::Executor<F> for InTask
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::pin(future));
    }
}

/// hyper's HTTP/2 server as the balancer sets it up, its streams running on `streams`.
fn http2_builder(streams: &InTask, max_header_bytes: usize) -> http2::Builder<InTask> {
    let mut builder = http2::Builder::new(streams.clone());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .max_send_buf_size(SEND_BUFFER_PER_STREAM);
    builder
}

/// How much of one HTTP/2 stream's answer may wait in user space for the connection to send it
/// (hyper's default is 400 KB). A connection with ten segments in flight reads each that far
/// ahead from its front-end: with this, 1.6 MB in all instead of 4 MB. In `bench/tls.py`'s
/// HTTP/2 segment case the slowest answers also came closer to the median (p99/p50 about 1.9
/// against 2.2) at the same throughput.
const SEND_BUFFER_PER_STREAM: usize = 160 * 1024;

/// How many times one turn goes back to the connection after its streams finished answers.
const TURN_ROUNDS: usize = 4;

/// Drives `connection` and the streams it started in `streams` (HTTP/2) to its end, asking it
/// to wind down gracefully once `shutdown` fires, and runs `drain` after each of its polls (the
/// end waits for `drain` too). A connection whose writes cannot go out any more is over; the
/// streams still running then end with it.
async fn until_shutdown<C>(
    connection: C,
    graceful: impl FnOnce(Pin<&mut C>),
    shutdown: &CancellationToken,
    streams: Option<&InTask>,
    mut drain: impl FnMut(&mut Context<'_>) -> Poll<std::io::Result<()>>,
) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>>,
{
    tokio::pin!(connection);
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut graceful = Some(graceful);
    let mut done = None;
    let mut running = FuturesUnordered::new();
    std::future::poll_fn(|cx| {
        if done.is_none() {
            if graceful.is_some() && cancelled.as_mut().poll(cx).is_ready() {
                if let Some(graceful) = graceful.take() {
                    graceful(connection.as_mut());
                }
            }
            for _ in 0..TURN_ROUNDS {
                if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                    done = Some(result);
                    running.clear();
                    break;
                }
                running.extend(streams.map(InTask::take).unwrap_or_default());
                let mut finished = false;
                while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {
                    finished = true;
                }
                if !finished {
                    break;
                }
            }
        }
        match drain(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(drained) => match done.take() {
                Some(result) => Poll::Ready(result),
                None if drained.is_err() => Poll::Ready(Ok(())),
                None => Poll::Pending,
            },
        }
    })
    .await
}

/// One request: the policy's decision, then the balancer's own answer or the front-end's.
async fn handle(
    forwarder: &Forwarder,
    request: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
    upstreams: &Upstreams,
) -> Response<Body> {
    let trusted_peer = forwarder.trusts(peer.ip());
    let client_ip = if trusted_peer {
        last_forwarded(request.headers()).unwrap_or(peer.ip())
    } else {
        peer.ip()
    };
    let playback = forwarder.check_playback(
        request.uri().path(),
        request.uri().query(),
        request
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes),
        client_ip,
    );
    let pass = match forwarder.decide(client_ip, request.uri().path(), playback) {
        Decision::Text(status, text) => return plain(status, text),
        Decision::Json(json) => return local(StatusCode::OK, JSON, json),
        Decision::Issue(issuer) => {
            // Boxed, as is `forward_once` below: the rare paths' futures stay out of the
            // one every stream carries (and moves around) for its GETs.
            let issued =
                Box::pin(issuer.issue(request.uri().query(), request.headers(), client_ip)).await;
            let content_type = if issued.json { JSON } else { TEXT };
            let mut r = local(issued.status, content_type, issued.body);
            // A token is for this viewer alone: no cache keeps it.
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Some(cookie) = issued.set_cookie {
                r.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            return r;
        }
        Decision::Forward(pass) => pass,
    };
    let (parts, body) = request.into_parts();
    let request_id = match parts.headers.get(X_REQUEST_ID) {
        // An untrusted client's own forwarding headers are not believed.
        Some(id) if trusted_peer => id.clone(),
        _ => HeaderValue::from_bytes(&forwarder.request_id())
            .unwrap_or(HeaderValue::from_static("0")),
    };
    let is_get = parts.method == Method::GET || parts.method == Method::HEAD;
    let forwarding = ForFrontEnd::new(
        &parts.headers,
        Forwarding {
            viewer: pass
                .as_ref()
                .filter(|p| !p.viewer.is_empty())
                .and_then(|p| HeaderValue::from_str(&p.viewer).ok()),
            trusted: trusted_peer,
            peer: upstreams.peer_header(peer.ip()),
            tls,
            request_id: request_id.clone(),
            authority: parts.uri.authority().map(|a| a.as_str()),
            // Whatever body a GET announced is not sent on.
            drop_length: is_get,
        },
    );
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // The token has done its work here; the front-ends never see it.
    let target = &*crate::playback::without_token(target);
    // A GET or HEAD carries no body worth keeping and is safe to send twice (`fetch`);
    // anything else gets exactly one attempt with its body streamed through.
    let (mut response, lease) = if is_get {
        let head = inline::request_head(&parts.method, target, forwarding.fields(&parts.headers));
        match forwarder.fetch(upstreams, &parts.method, &head).await {
            Ok((answer, lease)) => {
                let addr = lease.backend.addr;
                let response = answer.into_response(upstreams.worker.clone(), addr);
                (response.map(|b| b.map_err(BoxError::from).boxed()), lease)
            }
            Err((status, text)) => return plain(status, text),
        }
    } else {
        let mut upstream = Request::new(body.map_err(BoxError::from).boxed());
        *upstream.method_mut() = parts.method.clone();
        *upstream.version_mut() = Version::HTTP_11;
        let headers = upstream.headers_mut();
        for (name, value) in forwarding.fields(&parts.headers) {
            headers.append(name.clone(), value.clone());
        }
        *upstream.uri_mut() =
            http::Uri::try_from(target).unwrap_or_else(|_| http::Uri::from_static("/"));
        match Box::pin(forwarder.forward_once(upstreams, upstream)).await {
            Ok((mut response, lease)) => {
                // The inline client leaves hop-by-hop lines behind while parsing; hyper's
                // keeps them.
                strip_hop_by_hop(response.headers_mut());
                (response.map(|b| b.map_err(BoxError::from).boxed()), lease)
            }
            Err((status, text)) => return plain(status, text),
        }
    };
    // Each answer's id is new: HTTP/2 sends it as a literal that no HPACK table keeps, where
    // it would otherwise evict what repeats and lengthen every lookup of the name.
    let mut request_id = request_id;
    request_id.set_sensitive(true);
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    if let Some(cookie) = pass
        .and_then(|p| p.set_cookie)
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    // The lease travels with the body: a draining backend stays until it is sent.
    response.map(|inner| {
        LeasedBody {
            inner,
            _lease: lease,
        }
        .boxed()
    })
}

/// An upstream body that keeps its backend's in-flight slot until it is done.
struct LeasedBody {
    inner: Body,
    _lease: Lease,
}

impl http_body::Body for LeasedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Content types of the balancer's own answers.
pub(super) const TEXT: &str = "text/plain; charset=utf-8";
pub(super) const JSON: &str = "application/json";

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    local(status, TEXT, Bytes::from_static(text.as_bytes()))
}

/// An answer of the balancer's own, not to be cached.
fn local(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A viewer connection handed to hyper: the bytes the plain loop already read come first.
pub(super) struct Prefixed {
    pub read: bytes::BytesMut,
    pub stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An HTTP/2 connection's streams are polled by the connection's own task, not spawned:
    /// ten requests held open at once all run in that task, and all are answered once let go,
    /// even after shutdown began meanwhile.
    #[tokio::test]
    async fn http2_streams_run_inside_their_connections_task() {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let (release, released) = tokio::sync::watch::channel(false);
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(AtomicUsize::new(0));
        let (seen, count) = (tasks.clone(), arrived.clone());
        let service = service_fn(move |_request: Request<Incoming>| {
            let (seen, count, mut released) = (seen.clone(), count.clone(), released.clone());
            async move {
                seen.lock().unwrap().push(tokio::task::try_id());
                count.fetch_add(1, Ordering::SeqCst);
                let _ = released.wait_for(|go| *go).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        });
        let streams = InTask::default();
        let connection =
            http2_builder(&streams, 16 * 1024).serve_connection(TokioIo::new(server_io), service);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            let drain = |_: &mut Context<'_>| Poll::Ready(Ok(()));
            until_shutdown(
                connection,
                |c| c.graceful_shutdown(),
                &stop,
                Some(&streams),
                drain,
            )
            .await
        });
        let (sender, client) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(client_io),
        )
        .await
        .unwrap();
        tokio::spawn(client);
        let requests = (0..10).map(|_| {
            let mut sender = sender.clone();
            async move {
                let request = Request::get("https://x/hls/x/index.m3u8")
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                let status = response.status();
                (
                    status,
                    response.into_body().collect().await.unwrap().to_bytes(),
                )
            }
        });
        let answers = tokio::spawn(futures_util::future::join_all(requests));
        while arrived.load(Ordering::SeqCst) < 10 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let ids = tasks.lock().unwrap().clone();
        assert!(
            ids.iter().all(|id| *id == Some(server.id())),
            "streams ran in tasks {ids:?}, the connection in {:?}",
            server.id()
        );
        // Shutdown lets the streams in flight finish.
        shutdown.cancel();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        release.send(true).unwrap();
        for (status, body) in answers.await.unwrap() {
            assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
        }
        drop(sender);
        server.await.unwrap().unwrap();
    }
}
