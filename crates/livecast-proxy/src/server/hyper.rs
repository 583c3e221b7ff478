//! hyper's side of the viewer connections: whatever the HTTP/1.1 loop hands over (plain or
//! over TLS); and [`handle`], the policy for requests in header maps, which the balancer's own
//! HTTP/2 ([`super::h2`]) shares. Each request goes through the same policy as
//! the plain loop's ([`Forwarder::decide`], then [`Forwarder::fetch`] or
//! [`Forwarder::forward_once`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use livecast_telemetry::CancellationToken;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Connections;
use crate::client::{inline, Body, BoxError, Upstreams};
use crate::forward::{Decision, Forwarder};
use crate::headers::{last_forwarded, strip_hop_by_hop, ForFrontEnd, Forwarding, X_REQUEST_ID};
use crate::pool::Lease;

/// Serves one HTTP/1.1 viewer connection with hyper until it ends; on shutdown, lets the
/// request in flight finish and closes after its answer. `drain` runs after every poll of
/// hyper's connection: it writes out what hyper wrote meanwhile when `io` gathers writes
/// ([`super::coalesce`]), and is `Ready` at once when it does not.
pub(super) async fn serve<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    connections: &Connections,
    upstreams: &Arc<Upstreams>,
    tls: bool,
    drain: impl FnMut(&mut Context<'_>) -> Poll<std::io::Result<()>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = &connections.shared.shutdown;
    let upstreams = upstreams.clone();
    let forwarder = connections.forwarder.clone();
    let service = service_fn(move |request| {
        let forwarder = forwarder.clone();
        let upstreams = upstreams.clone();
        async move { Ok::<_, Infallible>(handle(&forwarder, request, peer, tls, &upstreams).await) }
    });
    let limits = &connections.shared;
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes)
        .serve_connection(io, service);
    let result = until_shutdown(connection, |c| c.graceful_shutdown(), shutdown, drain).await;
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}

/// Drives `connection` to its end, asking it to wind down gracefully once `shutdown` fires,
/// and runs `drain` after each of its polls (the end waits for `drain` too). A connection
/// whose writes cannot go out any more is over.
async fn until_shutdown<C>(
    connection: C,
    graceful: impl FnOnce(Pin<&mut C>),
    shutdown: &CancellationToken,
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
    std::future::poll_fn(|cx| {
        if done.is_none() {
            if graceful.is_some() && cancelled.as_mut().poll(cx).is_ready() {
                if let Some(graceful) = graceful.take() {
                    graceful(connection.as_mut());
                }
            }
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                done = Some(result);
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
/// Both hyper's connections and the balancer's own HTTP/2 ([`super::h2`]) bring theirs here.
pub(super) async fn handle<B>(
    forwarder: &Forwarder,
    request: Request<B>,
    peer: SocketAddr,
    tls: bool,
    upstreams: &Upstreams,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
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
        let mut upstream = Request::new(body.map_err(Into::into).boxed());
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

pub(super) fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
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
pub(super) struct Prefixed<S> {
    pub read: bytes::BytesMut,
    pub stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
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

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
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
