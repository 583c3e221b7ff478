//! The inline HTTP/1.1 client: the upstream side of a viewer's GET or HEAD, driven by the
//! viewer's own task.
//!
//! Almost every request a balancer of live HLS sees is a GET for a playlist, a part or a
//! segment. A general client (hyper's) runs each upstream connection as a task of its own and
//! hands the request, the response head and every body chunk across channels; here the viewer's
//! task writes the request head, reads and parses the response head (httparse) and then
//! streams the body straight from the socket as the client side asks for it. The connection
//! goes back to its worker thread's idle list once the body is read to its end, where the next
//! request of any viewer on that worker takes it.
//!
//! Bodies are framed per RFC 9112 §6: none for HEAD, 1xx, 204 and 304; `Transfer-Encoding:
//! chunked` decoded (the client side frames the result again); `Content-Length`; otherwise
//! until the front-end closes (and the connection is not reused).

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted from a front-end.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in a response head.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4096;
/// Bytes asked of the socket per read while streaming a body. Chosen by measurement: 700 KB
/// segments through the balancer, 16 viewers, HAProxy in alternating rounds: 64 KB gave 0.85x
/// HAProxy's req/s, 32 KB 1.30x, 16 KB 1.08x, 8 KB 0.95x.
const READ_CHUNK: usize = 32 * 1024;

/// Idle keep-alive connections to the front-ends of one worker thread, by front-end address,
/// the most recently used last.
pub(crate) type IdleConns = Arc<Mutex<Vec<(SocketAddr, Conn)>>>;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RawError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("bad response from the front-end: {0}")]
    Protocol(&'static str),
    #[error("the front-end was ejected while the request waited for its answer")]
    Ejected,
}

/// One keep-alive connection to a front-end.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, RawError> {
    Ok(Conn {
        stream: super::tcp(addr, timeout).await.map_err(RawError::Connect)?,
        buf: BytesMut::with_capacity(8192),
    })
}

/// The request head of a GET or HEAD for a front-end, from header lines (the hyper side).
pub(crate) fn request_head<'a>(
    method: &Method,
    target: &str,
    headers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Most idle connections to one front-end a worker thread keeps once its viewers idle.
const WORKER_IDLE_PER_BACKEND: usize = 64;

/// Closes the worker's idle connections past [`WORKER_IDLE_PER_BACKEND`] per front-end, the
/// least recently used first. Called when a viewer connection idles or ends: while viewers are
/// busy the list holds as many connections as were in use at once, so that none is closed only
/// to be opened again; once they idle, an idle audience does not hold one front-end connection
/// per viewer.
pub(crate) fn trim(idle: &IdleConns) {
    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
    if idle.len() <= WORKER_IDLE_PER_BACKEND {
        return;
    }
    let mut kept: Vec<(SocketAddr, usize)> = Vec::new();
    let mut keep = vec![false; idle.len()];
    for (i, (addr, _)) in idle.iter().enumerate().rev() {
        let count = match kept.iter_mut().find(|(a, _)| a == addr) {
            Some((_, count)) => count,
            None => {
                kept.push((*addr, 0));
                &mut kept.last_mut().expect("just pushed").1
            }
        };
        *count += 1;
        keep[i] = *count <= WORKER_IDLE_PER_BACKEND;
    }
    let mut keep = keep.into_iter();
    idle.retain(|_| keep.next().unwrap_or(false));
}

/// Takes an idle connection to `addr`, the most recently used first.
fn take(idle: &IdleConns, addr: SocketAddr) -> Option<Conn> {
    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
    idle.iter()
        .rposition(|(a, _)| *a == addr)
        .map(|i| idle.remove(i).1)
}

/// Sends a GET or HEAD request `head` on an idle connection of the worker's (`idle`) if there
/// is one, falling back to a new connection when a reused one turns out closed before any
/// byte of an answer; else on a new connection. Reads the answer's head.
pub(crate) async fn send(
    idle: &IdleConns,
    addr: SocketAddr,
    connect_timeout: Duration,
    head: &[u8],
    method: &Method,
) -> Result<Answer, RawError> {
    if let Some(conn) = take(idle, addr) {
        match exchange(conn, head, method).await {
            Ok(answer) => return Ok(answer),
            // The front-end closed this idle connection meanwhile; nothing was answered.
            Err((RawError::Io(_), false)) => {}
            Err((error, _)) => return Err(error),
        }
    }
    let conn = connect(addr, connect_timeout).await?;
    exchange(conn, head, method)
        .await
        .map_err(|(error, _)| error)
}

/// A final response head: its status, how its body is read, and the header lines the
/// viewer gets, as ranges of the connection's buffer (hop-by-hop and `X-Request-Id` lines
/// left out).
#[derive(Debug)]
struct Head {
    status: StatusCode,
    version: Version,
    /// Length of the head in the connection's buffer.
    len: usize,
    fields: Vec<(Range<usize>, Range<usize>)>,
    has_date: bool,
    framing: Framing,
    reusable: bool,
}

/// A front-end's answer: its parsed head, still in its connection's buffer, and the
/// connection its body is read from.
#[derive(Debug)]
pub(crate) struct Answer {
    conn: Conn,
    head: Head,
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        self.head.status
    }

    /// Whether the front-end sent a `Date`.
    pub fn has_date(&self) -> bool {
        self.head.has_date
    }

    /// Whether the body is framed by the front-end's own `Content-Length` (or absent), so
    /// the viewer's copy needs no framing of its own.
    pub fn length_framed(&self) -> bool {
        matches!(self.head.framing, Framing::Length(_))
    }

    /// Appends the header lines the viewer gets, each ending in CRLF.
    pub fn write_fields(&self, out: &mut Vec<u8>) {
        let buf = &self.conn.buf;
        for (name, value) in &self.head.fields {
            out.extend_from_slice(&buf[name.clone()]);
            out.extend_from_slice(b": ");
            out.extend_from_slice(&buf[value.clone()]);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The body, read from the connection, which goes back to `idle` once the body is read
    /// to its end.
    pub fn into_body(mut self, idle: IdleConns, addr: SocketAddr) -> RawBody {
        self.conn.buf.advance(self.head.len);
        let mut body = RawBody {
            conn: Some(self.conn),
            framing: self.head.framing,
            reusable: self.head.reusable,
            idle,
            addr,
        };
        if body.done() {
            // No body (HEAD, 204, 304, Content-Length: 0): nobody will poll it, so the
            // connection goes back now.
            body.finish();
        }
        body
    }

    /// The answer as a response for hyper.
    pub fn into_response(mut self, idle: IdleConns, addr: SocketAddr) -> Response<RawBody> {
        // The values stay where they were read: each is a view of the head, which shares
        // the connection's buffer as the body's chunks do.
        let head = self.conn.buf.split_to(self.head.len).freeze();
        self.head.len = 0;
        let mut headers = HeaderMap::with_capacity(self.head.fields.len());
        for (name, value) in &self.head.fields {
            // httparse has checked both against the grammar already.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&head[name.clone()]),
                HeaderValue::from_maybe_shared(head.slice(value.clone())),
            ) {
                headers.append(name, value);
            }
        }
        let (status, version) = (self.head.status, self.head.version);
        let mut response = Response::new(self.into_body(idle, addr));
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        response
    }
}

/// Writes the request and reads the response head. On failure, also says whether any byte of
/// an answer had arrived.
async fn exchange(
    mut conn: Conn,
    head: &[u8],
    method: &Method,
) -> Result<Answer, (RawError, bool)> {
    if let Err(error) = conn.stream.write_all(head).await {
        return Err((error.into(), false));
    }
    conn.buf.clear();
    let mut answered = false;
    loop {
        if !conn.buf.is_empty() {
            answered = true;
            match parse_head(&conn.buf, method) {
                // Informational answers (103 Early Hints) precede the real one.
                Ok(Some((used, Parsed::Informational))) => {
                    conn.buf.advance(used);
                    continue;
                }
                // The final head stays in the buffer until it has been passed on.
                Ok(Some((_, Parsed::Final(head)))) => return Ok(Answer { conn, head }),
                Ok(None) => {}
                Err(error) => return Err((error, true)),
            }
            if conn.buf.len() >= MAX_HEAD {
                return Err((RawError::Protocol("response head too large"), true));
            }
        }
        // Keep reading into what is left of the buffer: the body of the last answer may
        // still share its allocation, and growing it would mean a new one per request.
        if conn.buf.capacity() - conn.buf.len() < 2048 {
            conn.buf.reserve(8192);
        }
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) => {
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "closed before answering");
                return Err((eof.into(), answered));
            }
            Ok(_) => {}
            Err(error) => return Err((error.into(), answered)),
        }
    }
}

enum Parsed {
    Informational,
    Final(Head),
}

/// Parses a complete response head at the start of `buf`: `Ok(None)` while it is incomplete.
fn parse_head(buf: &[u8], method: &Method) -> Result<Option<(usize, Parsed)>, RawError> {
    // Uninitialised slots: nothing to clear for every response.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    );
    let used = match parsed {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(RawError::Protocol("unparsable response head")),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| RawError::Protocol("bad status code"))?;
    if status.is_informational() {
        if code == 101 {
            return Err(RawError::Protocol("unexpected protocol switch"));
        }
        return Ok(Some((used, Parsed::Informational)));
    }
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let offset = |part: &[u8]| {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + part.len()
    };
    let mut fields = Vec::with_capacity(response.headers.len());
    let mut chunked = false;
    let mut encoded = false;
    let mut has_date = false;
    let mut length: Option<u64> = None;
    let mut close = version == Version::HTTP_10;
    // Header names a `Connection` header lists: hop-by-hop as well, dropped below.
    let mut named: Vec<&str> = Vec::new();
    for h in response.headers.iter() {
        let name = h.name;
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        // Only the values the proxy reads itself are looked at as text.
        let value = || std::str::from_utf8(h.value).ok();
        if is("transfer-encoding") {
            encoded = true;
            // Chunked must be the last coding (RFC 9112 §6.1).
            chunked = value()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            continue;
        } else if is("content-length") {
            let n = value()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(RawError::Protocol("bad content-length"))?;
            if length.is_some_and(|m| m != n) {
                return Err(RawError::Protocol("conflicting content-length"));
            }
            length = Some(n);
        } else if is("connection") {
            for token in value().unwrap_or_default().split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    if version == Version::HTTP_10 {
                        close = false;
                    }
                } else if !token.is_empty() {
                    named.push(token);
                }
            }
            continue;
        } else if crate::headers::HOP_BY_HOP.iter().any(|n| is(n)) || is("x-request-id") {
            // Hop-by-hop, or the request id the proxy sets itself.
            continue;
        } else if is("date") {
            has_date = true;
        }
        fields.push((offset(name.as_bytes()), offset(h.value)));
    }
    if !named.is_empty() {
        fields.retain(|(name, _)| {
            let name = &buf[name.clone()];
            !named
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
        });
    }
    if encoded {
        // A transfer coding overrides any length (RFC 9112 §6.3); the length is not passed on.
        fields.retain(|(name, _)| !buf[name.clone()].eq_ignore_ascii_case(b"content-length"));
    }
    let framing = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(Chunk::Size)
    } else if encoded {
        Framing::UntilClose
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let reusable = !close && !matches!(framing, Framing::UntilClose);
    Ok(Some((
        used,
        Parsed::Final(Head {
            status,
            version,
            len: used,
            fields,
            has_date,
            framing,
            reusable,
        }),
    )))
}

/// How the rest of a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    Done,
}

/// A response body read straight from the front-end's connection.
#[derive(Debug)]
pub(crate) struct RawBody {
    conn: Option<Conn>,
    framing: Framing,
    reusable: bool,
    idle: IdleConns,
    addr: SocketAddr,
}

impl RawBody {
    fn done(&self) -> bool {
        matches!(
            self.framing,
            Framing::Length(0) | Framing::Chunked(Chunk::Done)
        )
    }

    /// The body is read to its end: the connection goes back to the idle list if it can.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.reusable && conn.buf.is_empty() {
                self.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((self.addr, conn));
            }
        }
    }

    /// Takes the next piece of body out of the buffer, moving the chunked decoder along.
    /// `Ok(None)`: more bytes are needed (or the body is done).
    fn take(&mut self) -> Result<Option<Bytes>, RawError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let buf = &mut conn.buf;
        loop {
            match &mut self.framing {
                Framing::Length(0) => return Ok(None),
                Framing::Length(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = (*n).min(buf.len() as u64) as usize;
                    *n -= take as u64;
                    return Ok(Some(buf.split_to(take).freeze()));
                }
                Framing::UntilClose => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(buf.split().freeze()));
                }
                Framing::Chunked(state) => match *state {
                    Chunk::Done => return Ok(None),
                    Chunk::Data(n) => {
                        if buf.is_empty() {
                            return Ok(None);
                        }
                        let take = n.min(buf.len() as u64) as usize;
                        *state = if take as u64 == n {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(n - take as u64)
                        };
                        return Ok(Some(buf.split_to(take).freeze()));
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(None);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(RawError::Protocol("chunk without its CRLF"));
                        }
                        buf.advance(2);
                        *state = Chunk::Size;
                    }
                    Chunk::Size | Chunk::Trailers => {
                        let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                            if buf.len() > MAX_LINE {
                                return Err(RawError::Protocol("chunk line too long"));
                            }
                            return Ok(None);
                        };
                        let line = buf.split_to(end + 2);
                        let line = &line[..end];
                        *state = if *state == Chunk::Trailers {
                            if line.is_empty() {
                                Chunk::Done
                            } else {
                                Chunk::Trailers
                            }
                        } else {
                            // chunk-size [; extensions]
                            let size = line.split(|b| *b == b';').next().unwrap_or_default();
                            let size = std::str::from_utf8(size)
                                .ok()
                                .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                                .ok_or(RawError::Protocol("bad chunk size"))?;
                            if size == 0 {
                                Chunk::Trailers
                            } else {
                                Chunk::Data(size)
                            }
                        };
                    }
                },
            }
        }
    }
}

impl http_body::Body for RawBody {
    type Data = Bytes;
    type Error = RawError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RawError>>> {
        let this = self.get_mut();
        loop {
            match this.take() {
                Ok(Some(data)) => {
                    // The client side may stop polling after the last byte it was promised:
                    // hand the connection back now, not when the body is dropped.
                    if this.done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) if this.done() => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let want = match this.framing {
                Framing::Length(n) => n.min(READ_CHUNK as u64) as usize,
                _ => READ_CHUNK,
            };
            conn.buf.reserve(want.max(64));
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    this.conn = None;
                    if this.framing == Framing::UntilClose {
                        return Poll::Ready(None);
                    }
                    let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "body cut short");
                    return Poll::Ready(Some(Err(eof.into())));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::net::TcpListener;

    /// A front-end that answers each request on a connection with the next canned answer.
    async fn front_end(
        answers: Vec<&'static [u8]>,
    ) -> (SocketAddr, tokio::task::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut connections = 0;
            let mut answers = answers.into_iter();
            'accept: while let Ok((mut s, _)) = listener.accept().await {
                connections += 1;
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        continue 'accept;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let Some(answer) = answers.next() else {
                            break 'accept;
                        };
                        s.write_all(answer).await.unwrap();
                        if answers.len() == 0 {
                            break 'accept;
                        }
                        if answer.starts_with(b"HTTP/1.0") {
                            continue 'accept;
                        }
                    }
                }
            }
            connections
        });
        (addr, task)
    }

    async fn fetch(idle: &IdleConns, addr: SocketAddr, method: &Method) -> Response<RawBody> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_static("x"));
        let head = request_head(method, "/a", &headers);
        send(idle, addr, Duration::from_secs(1), &head, method)
            .await
            .unwrap()
            .into_response(idle.clone(), addr)
    }

    async fn get(idle: &IdleConns, addr: SocketAddr, method: Method) -> (StatusCode, Vec<u8>) {
        let response = fetch(idle, addr, &method).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body.to_vec())
    }

    #[tokio::test]
    async fn framings_and_connection_reuse() {
        let (addr, task) = front_end(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\nuntil close",
        ])
        .await;
        let idle = IdleConns::default();
        assert_eq!(
            get(&idle, addr, Method::GET).await,
            (StatusCode::OK, b"hello".to_vec())
        );
        assert_eq!(idle.lock().unwrap().len(), 1, "kept for the next request");
        assert_eq!(
            get(&idle, addr, Method::GET).await,
            (StatusCode::OK, b"abcde".to_vec())
        );
        assert_eq!(
            get(&idle, addr, Method::GET).await,
            (StatusCode::NO_CONTENT, vec![])
        );
        let head = fetch(&idle, addr, &Method::HEAD).await;
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(
            idle.lock().unwrap().len(),
            1,
            "a bodiless answer hands its connection back before its body is polled"
        );
        drop(head);
        assert_eq!(
            get(&idle, addr, Method::GET).await,
            (StatusCode::OK, b"until close".to_vec())
        );
        assert!(
            idle.lock().unwrap().is_empty(),
            "a close-delimited body ends the connection"
        );
        drop(idle);
        assert_eq!(task.await.unwrap(), 1, "one connection carried them all");
    }

    /// A front-end connection is back in the worker's list as soon as an answer's body is
    /// read (not before), and the next requests reuse it.
    #[tokio::test]
    async fn a_finished_answer_leaves_its_connection_to_the_next_request() {
        let (addr, task) = front_end(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc",
        ])
        .await;
        let worker = IdleConns::default();
        let one = fetch(&worker, addr, &Method::GET).await.into_body();
        assert!(
            worker.lock().unwrap().is_empty(),
            "in use until its body is read"
        );
        assert_eq!(&one.collect().await.unwrap().to_bytes()[..], b"a");
        assert_eq!(worker.lock().unwrap().len(), 1, "back at once");
        assert_eq!(
            get(&worker, addr, Method::GET).await,
            (StatusCode::OK, b"b".to_vec())
        );
        assert_eq!(
            get(&worker, addr, Method::GET).await,
            (StatusCode::OK, b"c".to_vec())
        );
        drop(worker);
        assert_eq!(
            task.await.unwrap(),
            1,
            "one front-end connection for all three"
        );
    }

    /// Trimming keeps the most recently used idle connections, a bounded number per front-end.
    #[tokio::test]
    async fn a_worker_keeps_a_bounded_number_of_idle_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, other_addr) = (listener.local_addr().unwrap(), other.local_addr().unwrap());
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    Ok((s, _)) = listener.accept() => held.push(s),
                    Ok((s, _)) = other.accept() => held.push(s),
                }
            }
        });
        let worker = IdleConns::default();
        let mut ports = Vec::new();
        for _ in 0..WORKER_IDLE_PER_BACKEND + 5 {
            let conn = connect(addr, Duration::from_secs(1)).await.unwrap();
            ports.push(conn.stream.local_addr().unwrap().port());
            worker.lock().unwrap().push((addr, conn));
        }
        let conn = connect(other_addr, Duration::from_secs(1)).await.unwrap();
        worker.lock().unwrap().push((other_addr, conn));
        trim(&worker);
        let kept: Vec<_> = worker
            .lock()
            .unwrap()
            .iter()
            .map(|(a, c)| (*a, c.stream.local_addr().unwrap().port()))
            .collect();
        assert_eq!(kept.len(), WORKER_IDLE_PER_BACKEND + 1, "{kept:?}");
        assert_eq!(
            kept.last(),
            Some(&(other_addr, kept.last().unwrap().1)),
            "the other front-end's stays"
        );
        let newest: Vec<_> = ports[5..].iter().map(|p| (addr, *p)).collect();
        assert_eq!(
            &kept[..WORKER_IDLE_PER_BACKEND],
            &newest[..],
            "the most recently used are kept, in order"
        );
        accept.abort();
    }

    #[test]
    fn bad_heads_are_refused() {
        for head in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ] {
            assert!(parse_head(head, &Method::GET).is_err(), "{head:?}");
        }
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-", &Method::GET),
            Ok(None)
        ));
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let names = |text: &[u8]| -> Vec<String> {
            let Ok(Some((_, Parsed::Final(head)))) = parse_head(text, &Method::GET) else {
                panic!("no final head");
            };
            let names = head.fields.iter().map(|(name, _)| &text[name.clone()]);
            names
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect()
        };
        let plain = names(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
              Transfer-Encoding: chunked\r\nETag: \"1\"\r\nX-Request-Id: theirs\r\n\
              Trailer: X-Sum\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\n\r\n",
        );
        assert_eq!(plain, ["ETag"], "the proxy sets its own request id");
        // A Connection header goes, and so do the headers it names.
        let naming = names(
            b"HTTP/1.1 200 OK\r\nConnection: X-Secret, close\r\nx-secret: 1\r\nDate: x\r\n\r\n",
        );
        assert_eq!(naming, ["Date"]);
        // A transfer coding overrides a length, which is not passed on (RFC 9112 §6.3).
        let coded =
            names(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(coded.is_empty(), "{coded:?}");
    }
}

/// Entry point for the `cargo fuzz` target in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Parses `buf` as a front-end's answer head to a GET and to a HEAD; whatever it holds,
    /// a parsed head's length lies within it.
    pub fn answer_head(buf: &[u8]) {
        for method in [Method::GET, Method::HEAD] {
            if let Ok(Some((len, _))) = parse_head(buf, &method) {
                assert!(len <= buf.len());
            }
        }
    }
}
