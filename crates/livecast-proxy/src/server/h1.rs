//! The viewer side of an HTTP/1.1 connection, plain or over TLS ([`Viewer`]), served without
//! hyper.
//!
//! Nearly every request a balancer of live HLS sees is a keep-alive GET for a playlist, a part
//! or a segment. For those, this loop reads the request head, checks it with httparse, writes
//! the front-end's request straight from the viewer's header lines, and writes the front-end's
//! answer head back from its lines: no header maps, no boxed bodies, no dispatcher between the
//! two sockets. The balancer's cost per request is then mostly the kernel's.
//!
//! Whatever it does not serve itself (another method, a request body, HTTP/1.0, an absolute
//! target, `Expect`, `Upgrade`) hands the connection, with the bytes already read, to hyper
//! for the rest of its life ([`Outcome::Handoff`]).
//!
//! Limits: a request head must arrive within the header timeout,
//! counted from the connection's start or the end of the previous answer (so an idle
//! keep-alive connection is closed after it too); a head larger than the limit, or of more
//! than [`MAX_HEADERS`] lines, gets 431 and an unparsable one 400, and the connection is then
//! closed the lingering way (`livecast_telemetry::lingering_close`). On shutdown, idle
//! connections close and an answer being sent is finished with `Connection: close`.
//!
//! Memory: a connection holds its buffers only while a request is read and answered; while it
//! waits for the next one they wait in its worker's spares ([`Buffers`]), as HAProxy's and
//! nginx's do. A plain connection idle for [`IDLE_RELEASE`] between requests drops its busy
//! state and leaves its task for its worker's idle table (`server::idle`; a TLS session keeps
//! its task, and its buffers go to the spares all the same), and its front-end
//! connections are its worker's, shared with every viewer there, so a large idle audience
//! costs a socket and a small record per viewer, also just after it arrived all at once
//! (`bench/memory.py`).

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use http::{Method, StatusCode};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use std::ops::Range;

use super::hyper::{JSON, TEXT};
use crate::client::inline::{Answer, RawBody};
use crate::client::Upstreams;
use crate::forward::{Decision, Forwarder, TOKEN_PATH};
use crate::headers::HOP_BY_HOP;
use crate::playback::{Pass, Refused, VIEWER_HEADER};

/// How long a kept-alive connection waits for its next request before it leaves its task for
/// its worker's idle table: thousands of viewers idle between reloads then cost a small record
/// each instead of a task. Longer than the gap between a busy player's requests, so a
/// connection in use keeps its task.
const IDLE_RELEASE: Duration = Duration::from_millis(500);
/// Spare [`Buffers`] a worker keeps for its connections' next requests.
const SPARE_BUFFERS: usize = 32;
/// Largest buffer kept as a spare; a larger one (a long head, a coalesced answer) is freed.
const SPARE_CAPACITY: usize = 2 * COALESCE;
/// Most header lines in a request head (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Body bytes copied behind a response head to go out in one write; a larger piece goes out
/// from where it was read, in a vectored write with what is gathered.
const COALESCE: usize = 16 * 1024;

/// A viewer's connection as this loop reads and writes it: plain TCP, or TLS over it.
pub(crate) trait Viewer: AsyncRead + AsyncWrite + Unpin + Send {
    /// Whether the viewer's requests came over TLS (`X-Forwarded-Proto: https`).
    const TLS: bool;
    /// Whether the connection can leave its task for its worker's idle table
    /// ([`Outcome::Idle`]); a TLS session cannot.
    const PARKS: bool;
    /// Waits until the viewer has sent something, without reading it. Called only after a
    /// read found nothing, so nothing read is waiting in a TLS session's buffer.
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send;
}

impl Viewer for TcpStream {
    const TLS: bool = false;
    const PARKS: bool = true;
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        TcpStream::readable(self)
    }
}

impl Viewer for tokio_rustls::server::TlsStream<TcpStream> {
    const TLS: bool = true;
    const PARKS: bool = false;
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        self.get_ref().0.readable()
    }
}

/// How a connection's time with this loop ended.
pub(crate) enum Outcome<S> {
    /// The connection is finished (closed by either side, a limit, or shutdown).
    Done,
    /// A request this loop does not serve: hyper takes the connection, starting with the
    /// bytes already read.
    Handoff(S, BytesMut),
    /// No request came for [`IDLE_RELEASE`] since the instant given, and nothing of one has
    /// been read: the connection idles (plain connections only, [`Viewer::PARKS`]).
    Idle(S, tokio::time::Instant),
}

/// What a connection needs while it reads and answers a request: the bytes read from the
/// viewer, the request head for the front-end and the answer going out. Taken from the
/// worker's spares when a request begins to arrive and given back when the connection waits
/// for its next one with nothing read, so a worker holds about as many as it has requests in
/// hand, not one set per connection.
struct Buffers {
    read: BytesMut,
    head: Vec<u8>,
    out: Vec<u8>,
}

thread_local! {
    /// The worker's spare buffers. Connections stay on the worker that accepted them, so a
    /// set is taken and given back on the same thread.
    static SPARES: std::cell::RefCell<Vec<Buffers>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Buffers {
    fn take() -> Self {
        SPARES.with_borrow_mut(Vec::pop).unwrap_or_else(|| Buffers {
            read: BytesMut::with_capacity(4096),
            head: Vec::with_capacity(1024),
            out: Vec::with_capacity(1024),
        })
    }

    /// Back to the spares, empty, unless they are full or a buffer grew too large to keep.
    fn give_back(mut self) {
        if self.read.capacity() > SPARE_CAPACITY
            || self.head.capacity() > SPARE_CAPACITY
            || self.out.capacity() > SPARE_CAPACITY
        {
            return;
        }
        self.read.clear();
        self.head.clear();
        self.out.clear();
        SPARES.with_borrow_mut(|spares| {
            if spares.len() < SPARE_BUFFERS {
                spares.push(self);
            }
        });
    }
}

/// The limits on viewers' request heads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
}

/// What the balancer makes of one request head.
struct Plan {
    /// Length of the head in the read buffer.
    len: usize,
    method: Method,
    close: bool,
    client: IpAddr,
    /// Where the target's path lies in the read buffer.
    path: Range<usize>,
    /// The playback guard's verdict (`Ok(None)`: not guarded).
    playback: Result<Option<Pass>, Refused>,
    request_id: RequestId,
}

/// Why a request head was refused before it was understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unparsable {
    /// More header lines than [`MAX_HEADERS`]: 431, like a head over the byte limit.
    TooManyHeaders,
    Malformed,
}

/// The request id sent to the front-end and echoed to the viewer.
enum RequestId {
    New([u8; 24]),
    /// A trusted proxy's.
    Given(Vec<u8>),
}

impl RequestId {
    fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::New(id) => id,
            RequestId::Given(id) => id,
        }
    }
}

/// Serves `stream` until it is done, idles, or a request needs hyper. `waiting_since`: when
/// the wait for the next request head began, if it began earlier (a connection back from
/// its worker's idle table).
///
/// Requests are read and answered by [`serve_busy`], boxed, with its buffers. Once no request
/// has come for [`IDLE_RELEASE`], the busy state is dropped (buffers and all) and the
/// connection is given back as [`Outcome::Idle`]: the caller parks it in its worker's idle
/// table, where it costs a slot instead of a task until its next request.
pub(crate) async fn serve<S: Viewer>(
    stream: S,
    peer: SocketAddr,
    forwarder: &Forwarder,
    upstreams: &Upstreams,
    limits: Limits,
    shutdown: &CancellationToken,
    waiting_since: Option<tokio::time::Instant>,
) -> Outcome<S> {
    let busy = Box::pin(serve_busy(
        stream,
        peer,
        forwarder,
        upstreams,
        limits,
        shutdown,
        waiting_since,
    ));
    match busy.await {
        Busy::Idle(idle, since) => Outcome::Idle(idle, since),
        Busy::Over(outcome) => outcome,
    }
}

/// How a busy spell of a connection ended.
enum Busy<S> {
    /// No request came for [`IDLE_RELEASE`] since the instant given: the connection idles.
    Idle(S, tokio::time::Instant),
    Over(Outcome<S>),
}

/// Serves requests on `stream` until it idles, is done, or a request needs hyper.
/// `waiting_since`: when the wait for the next request head began, if it began earlier.
async fn serve_busy<S: Viewer>(
    mut stream: S,
    peer: SocketAddr,
    forwarder: &Forwarder,
    upstreams: &Upstreams,
    limits: Limits,
    shutdown: &CancellationToken,
    mut waiting_since: Option<tokio::time::Instant>,
) -> Busy<S> {
    let trusted = forwarder.trusts(peer.ip());
    // Held while a request is read and answered, in the worker's spares in between.
    let mut buffers: Option<Buffers> = None;
    // One wait for shutdown for the whole spell, not one per request.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        // Read until the read buffer starts with a complete request head.
        let plan = loop {
            let Buffers { read, head, out } = buffers.get_or_insert_with(Buffers::take);
            if !read.is_empty() {
                head.clear();
                let parsed = plan(read, peer.ip(), trusted, S::TLS, forwarder, upstreams, head);
                let too_large = match &parsed {
                    Ok(Some(Some(plan))) => plan.len > limits.max_header_bytes,
                    Ok(None) => read.len() >= limits.max_header_bytes,
                    _ => false,
                };
                let refusal = match parsed {
                    _ if too_large => Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
                    Ok(Some(Some(plan))) => break plan,
                    Ok(Some(None)) => {
                        let read = std::mem::take(read);
                        return Busy::Over(Outcome::Handoff(stream, read));
                    }
                    Ok(None) => None,
                    Err(Unparsable::TooManyHeaders) => {
                        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                    }
                    Err(Unparsable::Malformed) => Some(StatusCode::BAD_REQUEST),
                };
                if let Some(refusal) = refusal {
                    if answer_locally(&mut stream, out, refusal, "", false, true)
                        .await
                        .is_ok()
                    {
                        // The viewer may still be sending: a plain close would reset the
                        // connection and could destroy the refusal before it is read.
                        livecast_telemetry::lingering_close(&mut stream).await;
                    }
                    return Busy::Over(Outcome::Done);
                }
            }
            if read.capacity() - read.len() < 1024 {
                read.reserve(4096);
            }
            // Polled once without a timer: a request already there costs no timer, and a short
            // read leaves the socket marked not ready, so no read is tried in vain afterwards.
            let polled = poll_fn(|cx| {
                Poll::Ready(tokio_util::io::poll_read_buf(
                    Pin::new(&mut stream),
                    cx,
                    read,
                ))
            })
            .await;
            let read = match polled {
                Poll::Ready(read) => read,
                Poll::Pending => {
                    let between_requests = read.is_empty();
                    if between_requests && shutdown.is_cancelled() {
                        return Busy::Over(Outcome::Done);
                    }
                    let since = *waiting_since.get_or_insert_with(tokio::time::Instant::now);
                    let deadline = since + limits.header_timeout;
                    if !between_requests {
                        // A head has begun: it must be complete by the deadline.
                        tokio::select! {
                            read = stream.read_buf(read) => read,
                            () = tokio::time::sleep_until(deadline) => {
                                return Busy::Over(Outcome::Done);
                            }
                        }
                    } else {
                        // Between requests the buffers wait in the worker's spares, and the
                        // task waits for IDLE_RELEASE at most.
                        if let Some(spare) = buffers.take() {
                            spare.give_back();
                        }
                        let idle_until = if S::PARKS {
                            deadline.min(since + IDLE_RELEASE)
                        } else {
                            deadline
                        };
                        tokio::select! {
                            ready = stream.readable() => match ready {
                                Ok(()) => continue,
                                Err(_) => return Busy::Over(Outcome::Done),
                            },
                            () = tokio::time::sleep_until(idle_until) => {
                                return if idle_until == deadline {
                                    Busy::Over(Outcome::Done)
                                } else {
                                    Busy::Idle(stream, since)
                                };
                            }
                            () = cancelled.as_mut() => return Busy::Over(Outcome::Done),
                        }
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return Busy::Over(Outcome::Done),
                Ok(_) => {}
            }
        };
        let Some(Buffers { read, head, out }) = buffers.as_mut() else {
            return Busy::Over(Outcome::Done);
        };

        let path = std::str::from_utf8(&read[plan.path.clone()]).unwrap_or_default();
        let decision = forwarder.decide(plan.client, path, plan.playback);
        let close = plan.close || shutdown.is_cancelled();
        let head_only = plan.method == Method::HEAD;
        let sent = match decision {
            Decision::Text(status, text) => {
                answer_locally(&mut stream, out, status, text, head_only, close).await
            }
            Decision::Json(json) => {
                let answer = Local {
                    status: StatusCode::OK,
                    content_type: JSON,
                    body: &json,
                    head_only,
                };
                write_local(&mut stream, out, answer, close).await
            }
            // `plan` hands `/api/token` to hyper before deciding; were one to come here, hyper
            // would serve it all the same.
            Decision::Issue(_) => {
                let read = std::mem::take(read);
                return Busy::Over(Outcome::Handoff(stream, read));
            }
            Decision::Forward(pass) => match forwarder.fetch(upstreams, &plan.method, head).await {
                Ok((answer, lease)) => {
                    out.clear();
                    let set_cookie = pass.as_ref().and_then(|p| p.set_cookie.as_deref());
                    let chunked =
                        answer_head(out, &answer, plan.request_id.as_bytes(), set_cookie, close);
                    let body = answer.into_body(upstreams.worker.clone(), lease.backend.addr);
                    let sent = pass_on(&mut stream, out, body, chunked).await;
                    // A draining backend stays until its answer is sent.
                    drop(lease);
                    sent
                }
                Err((status, text)) => {
                    answer_locally(&mut stream, out, status, text, head_only, close).await
                }
            },
        };
        // Whatever a TLS session still holds of the answer goes out before the next wait (a
        // plain socket has nothing to flush).
        let sent = match sent {
            Ok(()) => stream.flush().await,
            failed => failed,
        };
        read.advance(plan.len);
        waiting_since = None;
        if sent.is_err() || close {
            if let Some(spare) = buffers.take() {
                spare.give_back();
            }
            let _ = stream.shutdown().await;
            return Busy::Over(Outcome::Done);
        }
    }
}

/// Parses the request head at the start of `buf` and, for a request this loop serves, writes
/// the front-end's request head into `head`. `Ok(None)`: the head is incomplete;
/// `Ok(Some(None))`: hyper serves it; `Err`: unparsable.
fn plan(
    buf: &[u8],
    peer: IpAddr,
    trusted: bool,
    tls: bool,
    forwarder: &Forwarder,
    upstreams: &Upstreams,
    head: &mut Vec<u8>,
) -> Result<Option<Option<Plan>>, Unparsable> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Unparsable::TooManyHeaders),
        Err(_) => return Err(Unparsable::Malformed),
    };
    let method = match request.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Ok(Some(None)),
    };
    let target = request.path.unwrap_or_default();
    if request.version != Some(1) || !target.starts_with('/') {
        return Ok(Some(None));
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    // `/api/token` waits for the authentication service: hyper's side serves it.
    if path == TOKEN_PATH && forwarder.issues_tokens() {
        return Ok(Some(None));
    }
    let mut close = false;
    let mut named: Vec<&str> = Vec::new();
    let mut forwarded: Option<&str> = None;
    let mut forwarded_count = 0;
    for h in request.headers.iter() {
        let is = |known: &str| h.name.eq_ignore_ascii_case(known);
        if is("transfer-encoding") || is("expect") || is("upgrade") {
            return Ok(Some(None));
        }
        if is("content-length") && h.value.trim_ascii() != b"0" {
            return Ok(Some(None));
        }
        if is("connection") {
            for token in std::str::from_utf8(h.value).unwrap_or_default().split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if !token.is_empty() && !token.eq_ignore_ascii_case("keep-alive") {
                    named.push(token);
                }
            }
        } else if trusted && is("x-forwarded-for") {
            forwarded = std::str::from_utf8(h.value).ok().or(forwarded);
            forwarded_count += 1;
        }
    }
    let client = if trusted {
        forwarded
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse().ok())
            .unwrap_or(peer)
    } else {
        peer
    };

    let playback = forwarder.check_playback(
        path,
        query,
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .map(|h| h.value),
        client,
    );
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    // The token has done its work here; the front-ends never see it.
    head.extend_from_slice(crate::playback::without_token(target).as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let mut request_id: Option<&[u8]> = None;
    for h in request.headers.iter() {
        let is = |known: &str| h.name.eq_ignore_ascii_case(known);
        // Hop-by-hop headers, the length of a body that is not sent on, and the forwarding
        // headers the balancer sets itself.
        if HOP_BY_HOP.iter().any(|n| is(n))
            || is("content-length")
            || is("x-forwarded-proto")
            || is("x-forwarded-for")
            || is(VIEWER_HEADER)
            || named.iter().any(|n| is(n))
        {
            continue;
        }
        if is("x-request-id") {
            // Only a trusted proxy's request id is kept, and only its first.
            if trusted && request_id.is_none() {
                request_id = Some(h.value);
            }
            continue;
        }
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"x-forwarded-for: ");
    if forwarded_count > 0 {
        for h in request.headers.iter() {
            if h.name.eq_ignore_ascii_case("x-forwarded-for") {
                head.extend_from_slice(h.value);
                head.extend_from_slice(b", ");
            }
        }
    }
    head.extend_from_slice(upstreams.peer_header(peer).as_bytes());
    head.extend_from_slice(if tls {
        b"\r\nx-forwarded-proto: https\r\nx-request-id: ".as_slice()
    } else {
        b"\r\nx-forwarded-proto: http\r\nx-request-id: "
    });
    let request_id = match request_id {
        Some(id) => RequestId::Given(id.to_vec()),
        None => RequestId::New(forwarder.request_id()),
    };
    head.extend_from_slice(request_id.as_bytes());
    head.extend_from_slice(b"\r\n");
    // Only the balancer names the viewer (its token said who).
    if let Ok(Some(pass)) = &playback {
        if !pass.viewer.is_empty() {
            head.extend_from_slice(VIEWER_HEADER.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(pass.viewer.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(b"\r\n");
    Ok(Some(Some(Plan {
        len,
        method,
        close,
        client,
        path: {
            let start = path.as_ptr() as usize - buf.as_ptr() as usize;
            start..start + path.len()
        },
        playback,
        request_id,
    })))
}

/// Writes the head of the front-end's answer into `out`: its status, its header lines, the
/// request id, a `Date` if it had none (RFC 9110 §6.6.1) and the viewer's framing. Says
/// whether the body goes out chunked (the front-end's was chunked or ran until close).
fn answer_head(
    out: &mut Vec<u8>,
    answer: &Answer,
    request_id: &[u8],
    set_cookie: Option<&str>,
    close: bool,
) -> bool {
    status_line(out, answer.status());
    answer.write_fields(out);
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(request_id);
    out.extend_from_slice(b"\r\n");
    if let Some(cookie) = set_cookie {
        out.extend_from_slice(b"set-cookie: ");
        out.extend_from_slice(cookie.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !answer.has_date() {
        date_line(out);
    }
    let chunked = !answer.length_framed();
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    chunked
}

/// Streams `body` after the head in `out`. Bytes that are already there go out with the head
/// in one write; the loop waits for the front-end only after writing what it has.
async fn pass_on<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    mut body: RawBody,
    chunked: bool,
) -> io::Result<()> {
    loop {
        let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    stream.write_all(out).await?;
                    out.clear();
                }
                stream.flush().await?;
                poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => {
                if chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                stream.write_all(out).await?;
                out.clear();
                return Ok(());
            }
            Some(Ok(frame)) => match frame.into_data() {
                // An empty piece would read as the last chunk.
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
            Some(Err(error)) => {
                // The front-end broke off: the viewer sees the body end short (a missing last
                // chunk, or fewer bytes than announced) when the connection closes.
                stream.write_all(out).await?;
                out.clear();
                return Err(io::Error::other(error));
            }
        };
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if out.len() + data.len() <= COALESCE {
            out.extend_from_slice(&data);
        } else {
            write_both(stream, out, &data).await?;
            out.clear();
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Writes `first` then `second` with as few system calls as the socket allows.
async fn write_both<S: AsyncWrite + Unpin>(
    stream: &mut S,
    first: &[u8],
    second: &[u8],
) -> io::Result<()> {
    let (mut first, mut second) = (first, second);
    while !first.is_empty() {
        let n = stream
            .write_vectored(&[IoSlice::new(first), IoSlice::new(second)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_first = n.min(first.len());
        first = &first[from_first..];
        second = &second[n - from_first..];
    }
    stream.write_all(second).await
}

/// An answer of the balancer's own.
struct Local<'a> {
    status: StatusCode,
    content_type: &'static str,
    body: &'a [u8],
    /// An answer to HEAD: the body's length, not the body.
    head_only: bool,
}

/// A text answer of the balancer's own.
async fn answer_locally<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    status: StatusCode,
    text: &str,
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let answer = Local {
        status,
        content_type: TEXT,
        body: text.as_bytes(),
        head_only,
    };
    write_local(stream, out, answer, close).await
}

async fn write_local<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    answer: Local<'_>,
    close: bool,
) -> io::Result<()> {
    out.clear();
    status_line(out, answer.status);
    out.extend_from_slice(b"content-type: ");
    out.extend_from_slice(answer.content_type.as_bytes());
    out.extend_from_slice(b"\r\ncache-control: no-cache\r\ncontent-length: ");
    out.extend_from_slice(answer.body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    date_line(out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !answer.head_only {
        out.extend_from_slice(answer.body);
    }
    stream.write_all(out).await
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `Date` line of the current second, made once a second per worker.
    static DATE: std::cell::RefCell<(u64, Vec<u8>)> = const { std::cell::RefCell::new((0, Vec::new())) };
}

fn date_line(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, line)| {
        if *at != second || line.is_empty() {
            *at = second;
            *line = format!("date: {}\r\n", httpdate::fmt_http_date(now)).into_bytes();
        }
        out.extend_from_slice(line);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain loop's future sizes every plain connection's task, and its busy state is
    /// boxed apart from it: it must stay well under a kilobyte (it was 17.5 KB while the
    /// lingering close kept its discard buffer inline, 3.3 KB while the busy state was held
    /// through the idle wait).
    #[tokio::test]
    async fn a_plain_connection_task_is_small() {
        let balancer = super::fuzzing::RequestHeads::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let limits = Limits {
            header_timeout: Duration::from_secs(1),
            max_header_bytes: 16 * 1024,
        };
        let peer = stream.peer_addr().unwrap();
        let future = serve(
            stream,
            peer,
            &balancer.forwarder,
            &balancer.upstreams,
            limits,
            &shutdown,
            None,
        );
        let size = std::mem::size_of_val(&future);
        assert!(size <= 560, "the plain loop's future is {size} bytes");
    }

    /// Twenty viewers served one after another on one worker, each keeping its connection
    /// open: between requests none holds buffers, so one set, back in the worker's spares,
    /// served them all.
    #[tokio::test]
    async fn connections_between_requests_leave_their_buffers_to_the_worker() {
        use tokio::io::AsyncReadExt;
        let balancer = std::sync::Arc::new(super::fuzzing::RequestHeads::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let limits = Limits {
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
        };
        let shutdown = CancellationToken::new();
        SPARES.with_borrow_mut(Vec::clear);
        let mut viewers = Vec::new();
        for _ in 0..20 {
            let mut viewer = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (stream, peer) = listener.accept().await.unwrap();
            let (balancer, shutdown) = (balancer.clone(), shutdown.clone());
            tokio::spawn(async move {
                let b = &balancer;
                serve(
                    stream,
                    peer,
                    &b.forwarder,
                    &b.upstreams,
                    limits,
                    &shutdown,
                    None,
                )
                .await
            });
            viewer
                .write_all(b"GET /hls/x/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            // Nobody is allowed in this balancer: its own 403, which ends with its text.
            let mut answer = Vec::new();
            while !answer.ends_with(b"inside the company network\n") {
                let mut chunk = [0u8; 1024];
                let n = viewer.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&answer));
                answer.extend_from_slice(&chunk[..n]);
            }
            assert!(answer.starts_with(b"HTTP/1.1 403"));
            viewers.push(viewer);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            SPARES.with_borrow(Vec::len),
            1,
            "spare buffer sets on the worker"
        );
        shutdown.cancel();
    }
}

/// Entry point for the `cargo fuzz` target in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::Arc;

    use super::*;
    use crate::forward::Admission;
    use crate::pool::{Policy, Pool, Thresholds};

    /// The request-head step of the plain HTTP/1.1 loop, with a balancer of its own.
    pub struct RequestHeads {
        pub(super) forwarder: Forwarder,
        pub(super) upstreams: Upstreams,
    }

    impl std::fmt::Debug for RequestHeads {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("RequestHeads")
        }
    }

    /// A balancer's shared parts with no front-ends and no admission rules.
    pub(crate) fn parts() -> (Arc<Pool>, crate::metrics::Metrics, Arc<Admission>) {
        let metrics = crate::metrics::Metrics::register(&prometheus::Registry::new())
            .expect("metrics register in a fresh registry");
        let thresholds = Thresholds {
            healthy_after: 2,
            unhealthy_after: 2,
            eject_after_errors: 3,
        };
        let pool = Arc::new(Pool::new(Policy::P2c, thresholds, metrics.clone()));
        let admission = Arc::new(Admission {
            allow: Vec::new(),
            trusted_proxies: Vec::new(),
            rate: None,
            playback: None,
            issuer: None,
        });
        (pool, metrics, admission)
    }

    impl Default for RequestHeads {
        fn default() -> Self {
            let (pool, metrics, admission) = parts();
            Self {
                forwarder: Forwarder::new(pool, metrics, admission, Duration::from_secs(1)),
                upstreams: Upstreams::default(),
            }
        }
    }

    impl RequestHeads {
        /// Plans `buf` as a viewer's request head, from a trusted proxy and from anyone. A
        /// head the loop serves itself lies within `buf`, and the head it would send the
        /// front-end is one whole, valid request (nothing a viewer sends can split it).
        pub fn plan(&self, buf: &[u8]) {
            let peer = IpAddr::from([10, 0, 0, 1]);
            for (trusted, tls) in [(false, false), (true, false), (false, true)] {
                let mut head = Vec::new();
                let planned = plan(
                    buf,
                    peer,
                    trusted,
                    tls,
                    &self.forwarder,
                    &self.upstreams,
                    &mut head,
                );
                if let Ok(Some(Some(planned))) = planned {
                    assert!(planned.len <= buf.len());
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
                    let mut request = httparse::Request::new(&mut headers);
                    let parsed = request.parse(&head).expect("the forwarded head parses");
                    assert_eq!(parsed, httparse::Status::Complete(head.len()));
                }
            }
        }
    }
}
