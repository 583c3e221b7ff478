//! One proxied request: admission (allow list, rate limit), header rewriting, the upstream
//! call, passive health feedback and the single retry on another backend.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use livecast_telemetry::Cidr;

use crate::headers::{
    append_forwarded_for, last_forwarded, strip_hop_by_hop, X_FORWARDED_FOR, X_FORWARDED_PROTO,
    X_REQUEST_ID,
};
use crate::issue::Issuer;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::playback::{Pass, Playback, Refused};
use crate::pool::{Backend, Lease, Pool};

/// Error type of bodies on both sides of the proxy.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type on both sides of the proxy.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// Who may watch and how often.
#[derive(Debug)]
pub(crate) struct Admission {
    pub allow: Vec<Cidr>,
    pub trusted_proxies: Vec<Cidr>,
    pub rate: Option<RateLimiter>,
    /// Signed playback URLs, when a secret is configured.
    pub playback: Option<Arc<Playback>>,
    /// `/api/token`, when a secret is configured.
    pub issuer: Option<Arc<Issuer>>,
}

/// The path where the player page gets its playback token.
pub(crate) const TOKEN_PATH: &str = "/api/token";
const X_LIVECAST_VIEWER: HeaderName = HeaderName::from_static(crate::playback::VIEWER_HEADER);

/// Forwards requests to the backends.
#[derive(Debug)]
pub(crate) struct Forwarder {
    connect_timeout: Duration,
    pool: Arc<Pool>,
    metrics: Metrics,
    admission: Arc<Admission>,
    /// Request ids: a random prefix per worker and a counter.
    id_prefix: u64,
    id_counter: std::sync::atomic::AtomicU64,
    viewers: Option<Arc<crate::viewers::ViewerFeed>>,
}

impl Forwarder {
    pub fn new(
        pool: Arc<Pool>,
        metrics: Metrics,
        admission: Arc<Admission>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            connect_timeout,
            pool,
            metrics,
            admission,
            id_prefix: livecast_telemetry::RandomIds::new().next_u64(),
            id_counter: std::sync::atomic::AtomicU64::new(0),
            viewers: None,
        }
    }

    /// Serves `/api/viewers` from this feed.
    pub fn with_viewers(mut self, feed: Option<Arc<crate::viewers::ViewerFeed>>) -> Self {
        self.viewers = feed;
        self
    }

    /// A new request id: 16 hex digits of the worker's prefix and 8 of a counter, without a
    /// formatter on the hot path.
    pub fn request_id(&self) -> [u8; 24] {
        let n = self
            .id_counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [0u8; 24];
        for (i, digit) in id.iter_mut().enumerate() {
            let nibble = if i < 16 {
                self.id_prefix >> (60 - 4 * i)
            } else {
                n >> (28 - 4 * (i - 16))
            };
            *digit = HEX[(nibble & 0xf) as usize];
        }
        id
    }

    /// Whether `peer` is a proxy whose forwarding headers are believed.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        livecast_telemetry::any_contains(&self.admission.trusted_proxies, peer)
    }

    /// Admission of a viewer at `client`: the allow list, then the rate limit. A refusal is
    /// counted and comes with the answer to give.
    pub fn admit(&self, client: IpAddr) -> Result<(), (StatusCode, &'static str)> {
        if !livecast_telemetry::any_contains(&self.admission.allow, client) {
            self.metrics
                .denied
                .with_label_values(&["not_allowed"])
                .inc();
            return Err((
                StatusCode::FORBIDDEN,
                "this stream is only available inside the company network\n",
            ));
        }
        if let Some(limiter) = &self.admission.rate {
            if !limiter.allow(client) {
                self.metrics
                    .denied
                    .with_label_values(&["rate_limited"])
                    .inc();
                return Err((StatusCode::TOO_MANY_REQUESTS, "too many requests\n"));
            }
        }
        Ok(())
    }

    /// The playback guard's verdict on a request (`Ok(None)`: no guard, or a path it does
    /// not guard). Call after [`Forwarder::admit`].
    pub fn check_playback<'a>(
        &self,
        path: &str,
        query: Option<&str>,
        cookies: impl Iterator<Item = &'a [u8]>,
        client: IpAddr,
    ) -> Result<Option<Pass>, Refused> {
        match &self.admission.playback {
            Some(guard) => guard.admit(path, query, cookies, client),
            None => Ok(None),
        }
    }

    /// Counts a playback refusal and gives the answer for it.
    pub fn refuse_playback(&self, refused: Refused) -> (StatusCode, &'static str) {
        self.metrics
            .denied
            .with_label_values(&[refused.reason()])
            .inc();
        let text = match refused {
            Refused::Missing => "this stream needs a playback token\n",
            Refused::Invalid => "this playback token is not valid for this stream\n",
            Refused::Expired => "this playback token has expired\n",
        };
        (StatusCode::FORBIDDEN, text)
    }

    /// Whether `/api/token` is the balancer's to answer.
    pub fn issues_tokens(&self) -> bool {
        self.admission.issuer.is_some()
    }

    /// The balancer's own answer for `path`, if it has one: `Some(Ok(json))` for the viewer
    /// count, `Some(Err(..))` while the count is unavailable.
    pub fn own_answer(&self, path: &str) -> Option<Result<Bytes, (StatusCode, &'static str)>> {
        let feed = self.viewers.as_ref().filter(|_| path == "/api/viewers")?;
        Some(feed.latest().ok_or((
            StatusCode::SERVICE_UNAVAILABLE,
            "viewer count unavailable\n",
        )))
    }

    /// Sends a GET or HEAD request `head` to a healthy backend and reads its answer's head,
    /// retrying once on another backend when the first cannot be reached or answers 502/503.
    /// Without an answer to pass on, says what to answer instead.
    pub async fn fetch(
        &self,
        upstreams: &Upstreams,
        method: &Method,
        head: &[u8],
    ) -> Result<(crate::upstream::Answer, Lease), (StatusCode, &'static str)> {
        let held = is_held(head.split(|b| *b == b'\n').next().unwrap_or_default());
        let mut exclude = None;
        for attempt in 0..2 {
            let Some(lease) = self.pool.pick(exclude) else {
                break;
            };
            let backend = lease.backend.clone();
            exclude = Some(backend.addr);
            let sent = Instant::now();
            let last_try = attempt == 1;
            match crate::upstream::send(
                &upstreams.raw,
                backend.addr,
                self.connect_timeout,
                head,
                method,
            )
            .await
            {
                Ok(answer) => {
                    if self.answered(&backend, sent, held, answer.status(), !last_try) {
                        continue;
                    }
                    return Ok((answer, lease));
                }
                Err(error) => {
                    let connect = matches!(error, crate::upstream::RawError::Connect(_));
                    self.failed(&backend, sent, connect, &error);
                    // No byte has reached the viewer yet. A GET or HEAD may go to another
                    // front-end whatever failed (a front-end dying resets the connections it
                    // had queued).
                    if last_try {
                        break;
                    }
                    self.metrics.retries.inc();
                }
            }
        }
        Err(self.unanswered(exclude.is_some()))
    }

    /// Records an answer from `backend`; says whether to try another backend instead (a
    /// 502/503 when `may_retry`: nothing of it has reached the viewer yet).
    fn answered(
        &self,
        backend: &Backend,
        sent: Instant,
        held: bool,
        status: StatusCode,
        may_retry: bool,
    ) -> bool {
        let latency = sent.elapsed();
        let handles = backend.metrics(&self.metrics);
        handles.duration.observe(latency.as_secs_f64());
        let sample = (!held).then_some(latency);
        self.pool
            .observe(backend, sample, !status.is_server_error());
        if may_retry
            && (status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE)
        {
            self.metrics
                .upstream_errors
                .with_label_values(&[backend.label(), "unavailable"])
                .inc();
            self.metrics.retries.inc();
            return true;
        }
        let class = usize::from((status.as_u16() / 100).clamp(1, 5)) - 1;
        handles.by_class[class].inc();
        false
    }

    /// Records a request to `backend` that got no answer.
    fn failed(
        &self,
        backend: &Backend,
        sent: Instant,
        connect: bool,
        error: &dyn std::fmt::Display,
    ) {
        let kind = if connect { "connect" } else { "request" };
        self.metrics
            .upstream_errors
            .with_label_values(&[backend.label(), kind])
            .inc();
        self.pool.observe(backend, Some(sent.elapsed()), false);
        tracing::warn!(backend = %backend.addr, %error, "upstream request failed");
    }

    /// What to answer when no backend answered: 503 when none was in service, else 502.
    fn unanswered(&self, tried: bool) -> (StatusCode, &'static str) {
        if !tried {
            self.metrics.no_backend.inc();
            return (StatusCode::SERVICE_UNAVAILABLE, "no front-end available\n");
        }
        self.metrics
            .requests
            .with_label_values(&["none", "5xx"])
            .inc();
        (StatusCode::BAD_GATEWAY, "front-end unavailable\n")
    }

    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        tls: bool,
        upstreams: &Upstreams,
    ) -> Response<Body> {
        let trusted_peer = self.trusts(peer.ip());
        let client_ip = if trusted_peer {
            last_forwarded(request.headers()).unwrap_or(peer.ip())
        } else {
            peer.ip()
        };
        if let Err((status, text)) = self.admit(client_ip) {
            return plain(status, text);
        }
        if let (Some(issuer), TOKEN_PATH) = (&self.admission.issuer, request.uri().path()) {
            let issued = issuer
                .issue(request.uri().query(), request.headers(), client_ip)
                .await;
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
        let pass = match self.check_playback(
            request.uri().path(),
            request.uri().query(),
            request
                .headers()
                .get_all(header::COOKIE)
                .iter()
                .map(HeaderValue::as_bytes),
            client_ip,
        ) {
            Ok(pass) => pass,
            Err(refused) => {
                let (status, text) = self.refuse_playback(refused);
                return plain(status, text);
            }
        };
        match self.own_answer(request.uri().path()) {
            Some(Ok(report)) => return local(StatusCode::OK, JSON, report),
            Some(Err((status, text))) => return plain(status, text),
            None => {}
        }
        let (parts, body) = request.into_parts();
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        // Only the balancer names the viewer.
        headers.remove(X_LIVECAST_VIEWER);
        if let Some(viewer) = pass
            .as_ref()
            .filter(|p| !p.viewer.is_empty())
            .and_then(|p| HeaderValue::from_str(&p.viewer).ok())
        {
            headers.insert(X_LIVECAST_VIEWER, viewer);
        }
        if !trusted_peer {
            // An untrusted client's own forwarding headers are not believed.
            headers.remove(X_FORWARDED_FOR);
            headers.remove(X_REQUEST_ID);
        }
        append_forwarded_for(&mut headers, upstreams.peer_header(peer.ip()));
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        );
        let request_id = match headers.get(X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = HeaderValue::from_bytes(&self.request_id())
                    .unwrap_or(HeaderValue::from_static("0"));
                headers.insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        if !headers.contains_key(header::HOST) {
            // HTTP/2 carries the host as :authority; HTTP/1.1 backends want a Host header.
            if let Some(v) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                headers.insert(header::HOST, v);
            }
        }
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        // The token has done its work here; the front-ends never see it.
        let target = &*crate::playback::without_token(target);
        // A GET or HEAD carries no body worth keeping and is safe to send twice (`fetch`);
        // anything else gets exactly one attempt with its body streamed through.
        let (mut response, lease) = if parts.method == Method::GET || parts.method == Method::HEAD {
            // Whatever body a GET announced is not sent on.
            headers.remove(header::CONTENT_LENGTH);
            let head = crate::upstream::request_head(&parts.method, target, &headers);
            match self.fetch(upstreams, &parts.method, &head).await {
                Ok((answer, lease)) => {
                    let addr = lease.backend.addr;
                    let response = answer.into_response(upstreams.raw.clone(), addr);
                    (response.map(|b| b.map_err(BoxError::from).boxed()), lease)
                }
                Err((status, text)) => return plain(status, text),
            }
        } else {
            let Some(lease) = self.pool.pick(None) else {
                let (status, text) = self.unanswered(false);
                return plain(status, text);
            };
            let backend = lease.backend.clone();
            let mut upstream = Request::new(body.map_err(BoxError::from).boxed());
            *upstream.method_mut() = parts.method.clone();
            *upstream.version_mut() = Version::HTTP_11;
            *upstream.headers_mut() = headers;
            *upstream.uri_mut() =
                http::Uri::try_from(target).unwrap_or_else(|_| http::Uri::from_static("/"));
            let sent = Instant::now();
            match upstreams
                .send(backend.addr, self.connect_timeout, upstream)
                .await
            {
                Ok(mut response) => {
                    self.answered(
                        &backend,
                        sent,
                        is_held(target.as_bytes()),
                        response.status(),
                        false,
                    );
                    // The inline client leaves hop-by-hop lines behind while parsing; hyper's
                    // keeps them.
                    strip_hop_by_hop(response.headers_mut());
                    (response.map(|b| b.map_err(BoxError::from).boxed()), lease)
                }
                Err(error) => {
                    self.failed(
                        &backend,
                        sent,
                        matches!(error, UpstreamError::Connect(_)),
                        &error,
                    );
                    let (status, text) = self.unanswered(true);
                    return plain(status, text);
                }
            }
        };
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
}

/// Why a call through hyper's client failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
}

/// The upstream connections of one client connection, one per backend it has used.
///
/// Keeping them with the client connection (on its worker thread) spares every request a trip
/// through a shared pool: HTTP/1.1 sends one request at a time per connection, so a viewer's
/// requests simply reuse its own keep-alive connection to the front-end. GET and HEAD use the
/// inline client's connections (`raw`), other methods hyper's.
#[derive(Debug, Default)]
pub(crate) struct Upstreams {
    pub raw: crate::upstream::IdleConns,
    idle: Mutex<Vec<(SocketAddr, SendRequest<Body>)>>,
    /// The client's address as an `X-Forwarded-For` value, formatted once per connection.
    peer: std::sync::OnceLock<HeaderValue>,
}

impl Upstreams {
    pub fn peer_header(&self, ip: IpAddr) -> &HeaderValue {
        self.peer.get_or_init(|| {
            HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
        })
    }

    async fn send(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
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
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((addr, sender));
        Ok(response)
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<SendRequest<Body>, UpstreamError> {
    let stream = crate::upstream::tcp(addr, timeout)
        .await
        .map_err(UpstreamError::Connect)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream connection ended");
        }
    });
    Ok(sender)
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

pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    local(status, TEXT, Bytes::from_static(text.as_bytes()))
}

/// Content types of the balancer's own answers.
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

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

/// Whether a request (its request line or target) is one a front-end holds on purpose: an
/// LL-HLS blocking playlist reload (`_HLS_msn=`), answered when the next part exists.
pub(crate) fn is_held(target: &[u8]) -> bool {
    target.windows(9).any(|w| w == b"_HLS_msn=")
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
